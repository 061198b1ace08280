//! Endpoints (core/v1) and EndpointSlices (discovery.k8s.io/v1).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_apimachinery::names;

use super::meta::{self, NameRule, Scope};
use super::{FieldError, Path, ip, name_errors, port_num, protocol};

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;

pub(crate) fn endpoints(ep: &Endpoints, old: Option<&Endpoints>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&ep.metadata, Scope::Namespaced, NameRule::Subdomain);
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&ep.metadata, &old.metadata));
    }
    let path = Path::root("subsets");
    for (i, ss) in ep.subsets.iter().flatten().enumerate() {
        let sp = path.index(i);
        let ready = ss.addresses.as_deref().unwrap_or_default();
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or_default();
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &sp,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (field, list) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, addr) in list.iter().enumerate() {
                errs.extend(endpoint_address(addr, &sp.child(field).index(j)));
            }
        }
        let ports = ss.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            let name = port.name.as_deref().unwrap_or_default();
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(&pp.child("name"), ""));
            } else if !name.is_empty() {
                errs.extend(name_errors(
                    &pp.child("name"),
                    name,
                    names::dns1123_label(name),
                ));
            }
            errs.extend(port_num(&pp.child("port"), port.port));
            errs.extend(protocol(&pp.child("protocol"), port.protocol.as_deref()));
            if let Some(app) = port.app_protocol.as_deref() {
                errs.extend(name_errors(
                    &pp.child("appProtocol"),
                    app,
                    names::qualified_name(app),
                ));
            }
        }
    }
    errs
}

fn endpoint_address(addr: &EndpointAddress, path: &Path) -> Vec<FieldError> {
    let mut errs = ip::endpoint_ip(&path.child("ip"), &addr.ip);
    if let Some(h) = addr.hostname.as_deref().filter(|h| !h.is_empty()) {
        errs.extend(name_errors(
            &path.child("hostname"),
            h,
            names::dns1123_label(h),
        ));
    }
    if let Some(n) = addr.node_name.as_deref() {
        errs.extend(name_errors(
            &path.child("nodeName"),
            n,
            names::dns1123_subdomain(n),
        ));
    }
    errs
}

pub(crate) fn endpoint_slice(
    slice: &EndpointSlice,
    old: Option<&EndpointSlice>,
) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&slice.metadata, Scope::Namespaced, NameRule::Subdomain);
    let at_path = Path::root("addressType");
    let addr_type = slice.address_type.as_str();
    if addr_type.is_empty() {
        errs.push(FieldError::required(&at_path, ""));
    } else {
        errs.extend(super::one_of(&at_path, Some(addr_type), ADDRESS_TYPES));
    }

    let ep_path = Path::root("endpoints");
    if slice.endpoints.len() > MAX_ENDPOINTS {
        errs.push(too_many(&ep_path, slice.endpoints.len(), MAX_ENDPOINTS));
    } else {
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let p = ep_path.index(i);
            let ap = p.child("addresses");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(&ap, "must contain at least 1 address"));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(too_many(&ap, ep.addresses.len(), MAX_ADDRESSES));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                let p = ap.index(j);
                match addr_type {
                    "IPv4" => match ip::ipv4(&p, a) {
                        Ok(v4) => errs.extend(ip::non_special(&p, a, v4.into())),
                        Err(e) => errs.push(e),
                    },
                    "IPv6" => match ip::ipv6(&p, a) {
                        Ok(v6) => errs.extend(ip::non_special(&p, a, v6.into())),
                        Err(e) => errs.push(e),
                    },
                    "FQDN" => errs.extend(name_errors(&p, a, names::dns1123_subdomain(a))),
                    // Unknown types were reported above.
                    _ => {}
                }
            }
            if let Some(n) = ep.node_name.as_deref() {
                errs.extend(name_errors(
                    &p.child("nodeName"),
                    n,
                    names::dns1123_subdomain(n),
                ));
            }
            if let Some(h) = ep.hostname.as_deref() {
                errs.extend(name_errors(
                    &p.child("hostname"),
                    h,
                    names::dns1123_label(h),
                ));
            }
        }
    }

    let ports = slice.ports.as_deref().unwrap_or_default();
    let pp = Path::root("ports");
    if ports.len() > MAX_PORTS {
        errs.push(too_many(&pp, ports.len(), MAX_PORTS));
    } else {
        let mut seen = HashSet::new();
        for (i, port) in ports.iter().enumerate() {
            let p = pp.index(i);
            let name = port.name.as_deref().unwrap_or_default();
            if !name.is_empty() {
                errs.extend(name_errors(
                    &p.child("name"),
                    name,
                    names::dns1123_label(name),
                ));
            }
            if !seen.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
            // No port means "all ports"; a given one must be a real port.
            if let Some(n) = port.port {
                errs.extend(port_num(&p.child("port"), n));
            }
            errs.extend(protocol(&p.child("protocol"), port.protocol.as_deref()));
            if let Some(app) = port.app_protocol.as_deref() {
                errs.extend(name_errors(
                    &p.child("appProtocol"),
                    app,
                    names::qualified_name(app),
                ));
            }
        }
    }

    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&slice.metadata, &old.metadata));
        if !old.address_type.is_empty() && old.address_type != slice.address_type {
            errs.push(FieldError::invalid(
                &at_path,
                addr_type,
                "field is immutable",
            ));
        }
    }
    errs
}

/// Kubernetes' "Too many" has no ErrorType of its own here; it is an invalid value.
fn too_many(path: &Path, actual: usize, max: usize) -> FieldError {
    FieldError::invalid(
        path,
        i64::try_from(actual).unwrap_or(i64::MAX),
        format!("must have at most {max} items"),
    )
}
