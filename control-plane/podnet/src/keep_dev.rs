//! The keep-local device: a dummy (or IFB) link the node routes the ranges it serves only through
//! translation (the service CIDR, LoadBalancer pools) to, in place of `unreachable` routes.
//! Such a link sends nothing anywhere, so untranslated traffic to those ranges still never leaves
//! the machine; unlike an `unreachable` route, a program on the device's egress can answer
//! it (kproxy answers pings to service addresses there and refuses the rest).

use std::net::Ipv4Addr;

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::{
    LinkDummy, LinkIfb, RouteMessageBuilder,
    packet_route::{
        link::InfoKind,
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteProtocol, RouteScope, RouteType},
    },
};

use crate::{
    Error, Result,
    names::validate_ifname,
    nl::{Netlink, errno, link_by_name, set_up},
    route::unreachable,
};

/// Creates the link `name` if it is missing and brings it up; returns its ifindex. A dummy
/// link, or an IFB (intermediate functional block) where the kernel has no dummy driver:
/// both are Ethernet-like without ARP and drop what they transmit (an IFB everything not
/// redirected to it), and tc runs on their egress. Idempotent; a link of that name of
/// another kind is an error.
pub async fn ensure_keep_dev(name: &str) -> Result<u32> {
    validate_ifname(name)?;
    let nl = Netlink::open()?;
    let h = &nl.handle;
    let link = if let Some(link) = link_by_name(h, name).await? {
        link
    } else {
        let added = match h.link().add(LinkDummy::new(name).build()).execute().await {
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                h.link().add(LinkIfb::new(name).build()).execute().await
            }
            r => r,
        };
        match added {
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            r => r.map_err(Error::netlink(format!("creating link {name}")))?,
        }
        link_by_name(h, name)
            .await?
            .ok_or_else(|| Error::LinkMissing(name.to_owned()))?
    };
    if !matches!(link.kind, Some(InfoKind::Dummy | InfoKind::Ifb)) {
        return Err(Error::WrongLinkKind {
            name: name.to_owned(),
            expected: "dummy or ifb",
        });
    }
    // No IPv6 link-local address, so the kernel sends nothing of its own there (best
    // effort: without IPv6 the file is absent).
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    set_up(h, link.index, name).await?;
    Ok(link.index)
}

/// Routes `cidr` to the link `index` in the main table, replacing whatever route of that
/// prefix was there (an `unreachable` one is swapped atomically, so there is no moment in
/// which the range follows the default route). Idempotent.
pub async fn route_to_keep_dev(cidr: Ipv4Net, index: u32) -> Result<()> {
    let nl = Netlink::open()?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .output_interface(index)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::Static)
        .build();
    nl.handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "routing {cidr} to the keep-local link"
        )))
}

/// Undoes [`ensure_keep_dev`] safely: every main-table IPv4 route through link `name`
/// becomes an `unreachable` route (so those ranges still never leave the machine), then the
/// link is deleted. Returns the ranges; nothing to do when the link does not exist.
pub async fn remove_keep_dev(name: &str) -> Result<Vec<Ipv4Net>> {
    let nl = Netlink::open()?;
    let h = &nl.handle;
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(Vec::new());
    };
    let mut routes = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut ranges = Vec::new();
    while let Some(msg) = routes
        .try_next()
        .await
        .map_err(Error::netlink("listing IPv4 routes"))?
    {
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut oif = None;
        let mut table = u32::from(msg.header.table);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        if oif == Some(link.index)
            && table == u32::from(RouteHeader::RT_TABLE_MAIN)
            && msg.header.kind == RouteType::Unicast
            && let Ok(net) = Ipv4Net::new(dst, msg.header.destination_prefix_length)
        {
            ranges.push(net);
        }
    }
    drop(routes);
    for cidr in &ranges {
        h.route()
            .add(unreachable(*cidr))
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "adding the unreachable route {cidr}"
            )))?;
    }
    match h.link().del(link.index).execute().await {
        Err(e) if errno(&e) == Some(libc::ENODEV) => {}
        r => r.map_err(Error::netlink(format!("deleting link {name}")))?,
    }
    Ok(ranges)
}
