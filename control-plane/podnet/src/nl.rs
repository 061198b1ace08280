//! A netlink connection scoped to one operation, and the small queries built on it.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec, RouteMessageBuilder,
    packet_core::NetlinkMessage,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    },
    sys::{AsyncSocket as _, SocketAddr},
};

use crate::{Error, Result};

/// A connection whose background task ends with it (the task would otherwise outlive the
/// operation on the caller's runtime).
pub(crate) struct Netlink {
    pub handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace. Needs a tokio runtime.
    pub fn open() -> Result<Self> {
        let runtime = runtime()?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
        let task = runtime.spawn(connection);
        Ok(Self { handle, task })
    }

    /// Opens a socket that also receives the multicast notifications of `groups` (a
    /// `RTMGRP_*` bit mask); they arrive on the returned receiver. Needs a tokio runtime.
    pub fn open_subscribed(groups: u32) -> Result<(Self, Notifications)> {
        let runtime = runtime()?;
        let (mut connection, handle, messages) =
            rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
        // Binding must happen before the connection's first request autobinds the socket.
        connection
            .socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, groups))
            .map_err(Error::NetlinkSocket)?;
        let task = runtime.spawn(connection);
        Ok((Self { handle, task }, messages))
    }
}

/// The runtime the connection task goes on: a clear error instead of tokio's panic when
/// called outside one.
fn runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .map_err(|e| Error::NetlinkSocket(std::io::Error::other(e)))
}

/// Multicast notifications of a subscribed connection.
pub(crate) type Notifications =
    futures::channel::mpsc::UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The errno of a netlink error reply, if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// What the code needs to know about an existing link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub index: u32,
    /// IFLA_IFNAME (empty if the message had none).
    pub name: String,
    pub kind: Option<InfoKind>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    pub controller: Option<u32>,
}

impl Link {
    pub(crate) fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            peer_index: None,
            controller: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.clone()),
                        _ => None,
                    });
                }
                LinkAttribute::Link(i) => link.peer_index = Some(*i),
                LinkAttribute::Controller(i) => link.controller = Some(*i),
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                _ => {}
            }
        }
        link
    }
}

pub(crate) async fn link_by_name(h: &Handle, name: &str) -> Result<Option<Link>> {
    let mut links = h.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(Link::from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(Error::Netlink {
            what: format!("looking up link {name}"),
            source,
        }),
    }
}

pub(crate) async fn set_up(h: &Handle, index: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(Error::netlink(format!("bringing {name} up")))
}

/// The IPv4 address (with prefix length) an address message carries, if any.
fn v4_of(msg: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, msg.header.prefix_len)),
        _ => None,
    })
}

/// Adds `ip/prefix` unless the link already has it; with `exclusive`, also removes every
/// other IPv4 address (a pod's eth0 must carry exactly its IPAM address).
pub(crate) async fn ensure_v4_addr(
    h: &Handle,
    index: u32,
    name: &str,
    ip: Ipv4Addr,
    prefix: u8,
    exclusive: bool,
) -> Result<()> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(Error::netlink(format!("listing addresses of {name}")))?;
    let mut present = false;
    for msg in msgs.into_iter().filter(|m| m.header.index == index) {
        match v4_of(&msg) {
            Some(have) if have == (ip, prefix) => present = true,
            Some(_) if exclusive => {
                h.address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(Error::netlink(format!(
                        "removing a stale address from {name}"
                    )))?;
            }
            _ => {}
        }
    }
    if present {
        return Ok(());
    }
    h.address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(Error::netlink(format!("adding {ip}/{prefix} to {name}")))
}

/// Sets the default route via `gateway` on `index`; replacing makes it idempotent.
pub(crate) async fn set_default_route(h: &Handle, index: u32, gateway: Ipv4Addr) -> Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gateway)
        .build();
    h.route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "setting the default route via {gateway}"
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(Netlink::open(), Err(Error::NetlinkSocket(_))));
        assert!(matches!(
            Netlink::open_subscribed(0),
            Err(Error::NetlinkSocket(_))
        ));
    }
}
