//! Node routes that keep traffic on the machine: an `unreachable` route for an address range
//! the node serves only through translation (the service CIDR, LoadBalancer pools). A connect
//! to an address no service uses then fails at once (EHOSTUNREACH) instead of following the
//! default route out of the machine; translated traffic never looks at it (socket-LB rewrites
//! the destination before routing, XDP/tc before the packet reaches the routing table).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::route::{RouteProtocol, RouteType},
};

use crate::{Error, Result, nl::Netlink};

/// Adds (or replaces) `unreachable CIDR` in the main table. Idempotent.
pub async fn ensure_unreachable(cidr: Ipv4Net) -> Result<()> {
    let nl = Netlink::open()?;
    nl.handle
        .route()
        .add(unreachable(cidr))
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "adding the unreachable route {cidr}"
        )))
}

pub(crate) fn unreachable(cidr: Ipv4Net) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .kind(RouteType::Unreachable)
        .protocol(RouteProtocol::Static)
        .build()
}
