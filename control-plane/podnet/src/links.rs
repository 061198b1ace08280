//! Link notifications (the `RTNLGRP_LINK` multicast group): what a node agent needs to follow
//! interfaces as they appear, change controller (bridge) and disappear, without polling.

use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::NetlinkPayload,
    packet_route::{AddressFamily, RouteNetlinkMessage, link::InfoKind},
};

use crate::{
    Error, Result,
    nl::{Link, Netlink, Notifications},
};

/// One interface as a link message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// `true` for a veth (IFLA_INFO_KIND "veth").
    pub veth: bool,
    /// `true` for a Linux bridge.
    pub bridge: bool,
    /// IFLA_MASTER: the ifindex of the bridge (or bond, VRF) the link is a port of.
    pub controller: Option<u32>,
}

impl From<Link> for LinkState {
    fn from(l: Link) -> Self {
        Self {
            index: l.index,
            name: l.name,
            veth: l.kind == Some(InfoKind::Veth),
            bridge: l.kind == Some(InfoKind::Bridge),
            controller: l.controller,
        }
    }
}

/// What happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// RTM_NEWLINK: the link was created or changed (name, controller, flags).
    Changed(LinkState),
    /// RTM_DELLINK: the link is gone.
    Removed(LinkState),
    /// Notifications were lost (the socket's receive buffer overran); this is a fresh dump
    /// of every link, to be taken as the whole truth.
    Resync(Vec<LinkState>),
}

/// A subscription to the link notifications of the calling thread's network namespace.
pub struct LinkWatch {
    nl: Netlink,
    notifications: Notifications,
}

impl LinkWatch {
    /// Subscribes, then dumps the current links. Subscribing first means no change between
    /// the dump and the first notification is missed (a change may be seen twice, so the
    /// consumer must treat events as idempotent). Needs a tokio runtime.
    pub async fn subscribe() -> Result<(Self, Vec<LinkState>)> {
        let (nl, notifications) = Netlink::open_subscribed(RTMGRP_LINK)?;
        let watch = Self { nl, notifications };
        let links = watch.dump().await?;
        Ok((watch, links))
    }

    async fn dump(&self) -> Result<Vec<LinkState>> {
        self.nl
            .handle
            .link()
            .get()
            .execute()
            .map_ok(|msg| LinkState::from(Link::from_message(&msg)))
            .try_collect()
            .await
            .map_err(Error::netlink("listing links"))
    }

    /// The next link event; `None` once the netlink connection has ended.
    pub async fn next(&mut self) -> Option<Result<LinkEvent>> {
        loop {
            let (msg, _) = self.notifications.next().await?;
            match msg.payload {
                // The bridge driver also reports its ports in AF_BRIDGE link messages (port
                // state, VLANs). They lack IFLA_LINKINFO, so they would read as "not a veth
                // any more"; the AF_UNSPEC messages already carry every change that matters.
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m),
                ) if m.header.interface_family == AddressFamily::Bridge => {}
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    return Some(Ok(LinkEvent::Changed(Link::from_message(&m).into())));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    return Some(Ok(LinkEvent::Removed(Link::from_message(&m).into())));
                }
                NetlinkPayload::Overrun(_) => {
                    return Some(self.dump().await.map(LinkEvent::Resync));
                }
                // Other groups are not subscribed; acks and errors belong to requests.
                _ => {}
            }
        }
    }
}
