//! `--pod-bridge`: follows the pod veths on the node's pod bridge(s) through rtnetlink link
//! notifications, so the pod program (`Datapath::attach_pod_iface`) is on every pod's
//! host-side veth from the moment the kubelet enslaves it to the bridge until it goes away,
//! with no polling and no restart.
//!
//! The decisions are a pure state machine ([`PodVeths`]) over link events; [`start`] feeds it
//! from a `RTNLGRP_LINK` subscription and hands the resulting changes to the owner of the
//! [`crate::Datapath`] (the proxy's main loop), which applies them.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_podnet::{LinkEvent, LinkState, LinkWatch};
use tokio::sync::mpsc;

/// What the datapath must do for one pod veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVethChange {
    /// A veth joined a pod bridge: attach the pod program.
    Attach(String),
    /// A pod veth was deleted or left its bridge: drop its attachment and pinned link.
    Detach(String),
}

/// Which links are pod veths, from the link events seen so far.
#[derive(Debug)]
pub struct PodVeths {
    /// The `--pod-bridge` names.
    bridge_names: BTreeSet<String>,
    /// ifindex → name of the pod bridges that exist now (a bridge may be created after
    /// kproxy starts, or re-created with another ifindex).
    bridges: BTreeMap<u32, String>,
    /// ifindex → name of the veths the program was attached to. Keyed by ifindex because a
    /// name can be reused by a new veth right after the old one is gone.
    attached: BTreeMap<u32, String>,
}

impl PodVeths {
    #[must_use]
    pub fn new(bridge_names: impl IntoIterator<Item = String>) -> Self {
        Self {
            bridge_names: bridge_names.into_iter().collect(),
            bridges: BTreeMap::new(),
            attached: BTreeMap::new(),
        }
    }

    fn is_pod_veth(&self, link: &LinkState) -> bool {
        link.veth
            && link
                .controller
                .is_some_and(|c| self.bridges.contains_key(&c))
    }

    fn note_bridge(&mut self, link: &LinkState) {
        if link.bridge && self.bridge_names.contains(&link.name) {
            self.bridges.retain(|_, name| *name != link.name);
            self.bridges.insert(link.index, link.name.clone());
        } else {
            // Renamed away from a pod bridge name, or not a bridge (any more).
            self.bridges.remove(&link.index);
        }
    }

    /// Takes `links` as every link there is (the initial dump, or a re-dump after lost
    /// notifications) and returns what to change so the attachments match.
    pub fn resync(&mut self, links: &[LinkState]) -> Vec<PodVethChange> {
        self.bridges = links
            .iter()
            .filter(|l| l.bridge && self.bridge_names.contains(&l.name))
            .map(|l| (l.index, l.name.clone()))
            .collect();
        let desired: BTreeMap<u32, String> = links
            .iter()
            .filter(|l| self.is_pod_veth(l))
            .map(|l| (l.index, l.name.clone()))
            .collect();
        let mut changes = Vec::new();
        for (index, name) in &self.attached {
            if desired.get(index) != Some(name) {
                changes.push(PodVethChange::Detach(name.clone()));
            }
        }
        for (index, name) in &desired {
            if self.attached.get(index) != Some(name) {
                changes.push(PodVethChange::Attach(name.clone()));
            }
        }
        self.attached = desired;
        changes
    }

    /// One notification. Events may repeat (a flag change is also an RTM_NEWLINK), so only
    /// a change of pod-veth membership or name produces anything.
    pub fn on_event(&mut self, event: LinkEvent) -> Vec<PodVethChange> {
        match event {
            LinkEvent::Resync(links) => self.resync(&links),
            LinkEvent::Changed(link) => {
                self.note_bridge(&link);
                let was = self.attached.get(&link.index).cloned();
                let is = self.is_pod_veth(&link);
                match (was, is) {
                    (None, true) => {
                        self.attached.insert(link.index, link.name.clone());
                        vec![PodVethChange::Attach(link.name)]
                    }
                    // Renamed while on the bridge: the pin is named after the interface,
                    // so move the attachment to the new name.
                    (Some(old), true) if old != link.name => {
                        self.attached.insert(link.index, link.name.clone());
                        vec![PodVethChange::Detach(old), PodVethChange::Attach(link.name)]
                    }
                    (Some(old), false) => {
                        self.attached.remove(&link.index);
                        vec![PodVethChange::Detach(old)]
                    }
                    _ => Vec::new(),
                }
            }
            LinkEvent::Removed(link) => {
                self.bridges.remove(&link.index);
                self.attached
                    .remove(&link.index)
                    .map(PodVethChange::Detach)
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// Lets `bridge` take packets whose source is one of this host's addresses. A pod's reply
/// to a NodePort client leaves the pod program with the node's address as its source (the
/// frontend the client called) and is routed on to the uplink; without this the kernel
/// drops it as a martian on the bridge.
fn accept_local(bridge: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/accept_local");
    match std::fs::write(&path, "1") {
        Ok(()) => tracing::debug!(%bridge, "accept_local set"),
        Err(err) => {
            tracing::warn!(%bridge, %err, "cannot set accept_local; NodePort replies from its pods will be dropped");
        }
    }
}

/// Subscribes to link notifications in the calling thread's network namespace and returns
/// the changes for the links that exist now (apply them before anything else), and a
/// receiver of later changes. A task follows the notifications until the receiver is
/// dropped. Needs a tokio runtime.
pub async fn start(
    bridge_names: Vec<String>,
) -> kproxy_podnet::Result<(Vec<PodVethChange>, mpsc::Receiver<PodVethChange>)> {
    let (mut watch, links) = LinkWatch::subscribe().await?;
    let mut state = PodVeths::new(bridge_names.iter().cloned());
    let initial = state.resync(&links);
    for name in state.bridges.values() {
        accept_local(name);
    }
    for name in &bridge_names {
        if !state.bridges.values().any(|b| b == name) {
            tracing::info!(
                bridge = %name,
                "no bridge of this name exists yet; its veths will be attached once it does"
            );
        }
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            match watch.next().await {
                Some(Ok(event)) => {
                    let known: BTreeSet<u32> = state.bridges.keys().copied().collect();
                    let changes = state.on_event(event);
                    // A pod bridge that appeared (by a notification or a re-dump).
                    for (index, name) in &state.bridges {
                        if !known.contains(index) {
                            accept_local(name);
                        }
                    }
                    for change in changes {
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                }
                // Only a re-dump after an overrun can fail; the next overrun retries it.
                Some(Err(err)) => {
                    tracing::warn!(%err, "re-listing links after lost notifications failed");
                }
                None => {
                    tracing::error!(
                        "the link notification socket closed; pod veths are no longer followed"
                    );
                    return;
                }
            }
        }
    });
    Ok((initial, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, controller: Option<u32>) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            veth: true,
            bridge: false,
            controller,
        }
    }

    fn bridge(index: u32, name: &str) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            veth: false,
            bridge: true,
            controller: None,
        }
    }

    fn attach(n: &str) -> PodVethChange {
        PodVethChange::Attach(n.into())
    }

    fn detach(n: &str) -> PodVethChange {
        PodVethChange::Detach(n.into())
    }

    #[test]
    fn initial_dump_attaches_only_veths_on_the_pod_bridge() {
        let mut s = PodVeths::new(["kbr0".to_string()]);
        let changes = s.resync(&[
            bridge(2, "kbr0"),
            bridge(3, "docker0"),
            link(10, "veth-a", Some(2)),
            link(11, "veth-b", Some(3)),
            link(12, "veth-c", None),
            // Not a veth, although on the bridge.
            LinkState {
                veth: false,
                ..link(13, "dummy0", Some(2))
            },
        ]);
        assert_eq!(changes, [attach("veth-a")]);
    }

    #[test]
    fn veths_come_and_go_with_repeated_events_ignored() {
        let mut s = PodVeths::new(["kbr0".to_string()]);
        assert!(s.resync(&[bridge(2, "kbr0")]).is_empty());
        // Created, then enslaved, then set up (three RTM_NEWLINKs).
        assert!(
            s.on_event(LinkEvent::Changed(link(20, "vp0", None)))
                .is_empty()
        );
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(20, "vp0", Some(2)))),
            [attach("vp0")]
        );
        assert!(
            s.on_event(LinkEvent::Changed(link(20, "vp0", Some(2))))
                .is_empty()
        );
        assert_eq!(
            s.on_event(LinkEvent::Removed(link(20, "vp0", Some(2)))),
            [detach("vp0")]
        );
        assert!(s.attached.is_empty(), "no stale entry: {s:?}");
        // The same name again, new ifindex.
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(21, "vp0", Some(2)))),
            [attach("vp0")]
        );
        // Taken off the bridge (nomaster) without being deleted.
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(21, "vp0", None))),
            [detach("vp0")]
        );
        // Deleting a link that is not attached changes nothing.
        assert!(
            s.on_event(LinkEvent::Removed(link(21, "vp0", None)))
                .is_empty()
        );
    }

    #[test]
    fn bridge_created_late_and_recreated() {
        let mut s = PodVeths::new(["kbr0".to_string()]);
        assert!(s.resync(&[]).is_empty());
        assert!(s.on_event(LinkEvent::Changed(bridge(5, "kbr0"))).is_empty());
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(30, "vp1", Some(5)))),
            [attach("vp1")]
        );
        // The bridge goes: the kernel releases its ports (RTM_NEWLINK without master)
        // before deleting it.
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(30, "vp1", None))),
            [detach("vp1")]
        );
        assert!(s.on_event(LinkEvent::Removed(bridge(5, "kbr0"))).is_empty());
        // Re-created under another ifindex; a port of the old index means nothing now.
        assert!(s.on_event(LinkEvent::Changed(bridge(6, "kbr0"))).is_empty());
        assert!(
            s.on_event(LinkEvent::Changed(link(31, "vp2", Some(5))))
                .is_empty()
        );
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(31, "vp2", Some(6)))),
            [attach("vp2")]
        );
    }

    #[test]
    fn rename_moves_the_attachment_and_resync_reconciles() {
        let mut s = PodVeths::new(["kbr0".to_string()]);
        s.resync(&[bridge(2, "kbr0"), link(40, "tmp0", Some(2))]);
        assert_eq!(
            s.on_event(LinkEvent::Changed(link(40, "vp4", Some(2)))),
            [detach("tmp0"), attach("vp4")]
        );
        // Notifications lost: vp4 vanished and vp5 appeared meanwhile.
        assert_eq!(
            s.on_event(LinkEvent::Resync(vec![
                bridge(2, "kbr0"),
                link(41, "vp5", Some(2))
            ])),
            [detach("vp4"), attach("vp5")]
        );
        assert_eq!(s.attached, BTreeMap::from([(41, "vp5".to_string())]));
    }
}
