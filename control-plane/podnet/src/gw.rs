//! Host-gateway routes (flannel host-gw style): `podCIDR via nodeIP` in the main table for
//! every other node, tagged with the caller's route protocol number so its routes are told
//! apart from everyone else's (and found again after a restart).

use std::{collections::BTreeMap, net::Ipv4Addr};

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
};

use crate::{
    Error, Result,
    nl::{Netlink, errno},
};

/// The kernel's main routing table (`RT_TABLE_MAIN`).
const MAIN_TABLE: u32 = 254;

/// One netlink connection for the gateway routes of one route protocol.
pub struct GatewayRoutes {
    nl: Netlink,
    protocol: u8,
}

/// What [`GatewayRoutes::add`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    /// A route for the prefix exists that is not of this protocol: left alone.
    Foreign,
}

impl GatewayRoutes {
    /// Opens a connection in the calling thread's network namespace. Needs a tokio runtime.
    pub fn open(protocol: u8) -> Result<Self> {
        Ok(Self {
            nl: Netlink::open()?,
            protocol,
        })
    }

    /// The main table's IPv4 routes of this protocol that go via a gateway.
    pub async fn list(&self) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>> {
        let msgs: Vec<RouteMessage> = self
            .nl
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("listing routes"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.protocol == RouteProtocol::Other(self.protocol))
            .filter(|m| table(m) == MAIN_TABLE)
            .filter_map(|m| {
                let dst = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                let via = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some((
                    Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?,
                    via,
                ))
            })
            .collect())
    }

    fn message(&self, dst: Ipv4Net, via: Ipv4Addr) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(via)
            .protocol(RouteProtocol::Other(self.protocol))
            .build()
    }

    /// Adds `dst via via`, unless any route for `dst` exists (then [`Added::Foreign`]).
    pub async fn add(&self, dst: Ipv4Net, via: Ipv4Addr) -> Result<Added> {
        match self
            .nl
            .handle
            .route()
            .add(self.message(dst, via))
            .execute()
            .await
        {
            Ok(()) => Ok(Added::Added),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(Added::Foreign),
            Err(source) => Err(Error::Netlink {
                what: format!("adding the route {dst} via {via}"),
                source,
            }),
        }
    }

    /// Replaces this protocol's route for `dst` by `dst via via`.
    pub async fn replace(&self, dst: Ipv4Net, via: Ipv4Addr) -> Result<()> {
        self.nl
            .handle
            .route()
            .add(self.message(dst, via))
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "replacing the route {dst} via {via}"
            )))
    }

    /// Removes `dst via via`; a route already gone is fine.
    pub async fn remove(&self, dst: Ipv4Net, via: Ipv4Addr) -> Result<()> {
        match self
            .nl
            .handle
            .route()
            .del(self.message(dst, via))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(source) => Err(Error::Netlink {
                what: format!("removing the route {dst} via {via}"),
                source,
            }),
        }
    }
}

/// The route's table: RTA_TABLE when present (ids above 255), else the header's.
fn table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}
