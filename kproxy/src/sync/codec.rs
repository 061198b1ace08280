//! The map keys and values kproxy writes, and their decoding: network byte order, one
//! place for the layout the eBPF programs read.

use std::net::Ipv4Addr;

use kproxy_common::{Backend, RevNat, ServiceKey, backend_state};

use crate::model::{BackendAddr, BackendState, FrontendKey, Proto};

/// The service map key of `slot` of a frontend (network byte order).
#[must_use]
pub fn service_key(frontend: &FrontendKey, slot: u16) -> ServiceKey {
    ServiceKey::new(
        u32::from_ne_bytes(frontend.addr.octets()),
        frontend.port.to_be(),
        frontend.proto.ip_proto(),
        slot,
    )
}

/// The frontend and slot a service map key describes; `None` for keys kproxy never writes.
#[must_use]
pub fn decode_service_key(key: &ServiceKey) -> Option<(FrontendKey, u16)> {
    if key._pad != [0; 3] {
        return None;
    }
    let proto = Proto::from_ip_proto(key.proto)?;
    let frontend = FrontendKey {
        addr: Ipv4Addr::from(key.addr.to_ne_bytes()),
        port: u16::from_be(key.port),
        proto,
    };
    Some((frontend, key.slot))
}

/// The backend map value for a backend (network byte order).
#[must_use]
pub fn backend_value(addr: &BackendAddr, state: BackendState) -> Backend {
    Backend {
        addr: u32::from_ne_bytes(addr.addr.octets()),
        port: addr.port.to_be(),
        proto: addr.proto.ip_proto(),
        state: match state {
            BackendState::Active => backend_state::ACTIVE,
            BackendState::Terminating => backend_state::TERMINATING,
        },
    }
}

/// The address a backend map value points to; `None` for a protocol kproxy never writes.
#[must_use]
pub fn decode_backend(backend: &Backend) -> Option<BackendAddr> {
    Some(BackendAddr {
        addr: Ipv4Addr::from(backend.addr.to_ne_bytes()),
        port: u16::from_be(backend.port),
        proto: Proto::from_ip_proto(backend.proto)?,
    })
}

/// The revnat map value of a frontend (network byte order).
#[must_use]
pub fn revnat_value(frontend: &FrontendKey) -> RevNat {
    RevNat {
        addr: u32::from_ne_bytes(frontend.addr.octets()),
        port: frontend.port.to_be(),
        _pad: 0,
    }
}
