//! The node loop's side of the L2 announcement election (`kproxy::l2lease`): the Services
//! this node is a candidate for, and the announcement flag cleared on those it does not hold.

use std::{collections::BTreeSet, net::Ipv4Addr};

use kproxy::{
    l2lease::{Candidacy, Change},
    model::ServiceFrontends,
};
use kproxy_common::svc_flags;
use tokio::sync::watch;

pub(super) struct L2 {
    wants: watch::Sender<Candidacy>,
    held: BTreeSet<String>,
    /// `false`: this node is never a candidate (`--no-l2-announce`).
    candidate: bool,
}

impl L2 {
    pub(super) fn new(
        wants: watch::Sender<Candidacy>,
        held: BTreeSet<String>,
        candidate: bool,
    ) -> Self {
        Self {
            wants,
            held,
            candidate,
        }
    }

    /// Records whether this node would announce `service` (its LoadBalancer IPs, unless a
    /// Local policy drops them here for lack of local endpoints), and keeps the announcement
    /// only if this node holds the Service's lease.
    pub(super) fn filter(&mut self, service: &str, built: &mut ServiceFrontends) {
        // A node that never announces wants nothing, so it never writes a lease.
        let mut addrs: Vec<Ipv4Addr> = if self.candidate {
            built
                .frontends
                .iter()
                .filter(|(_, fe)| {
                    fe.flags & svc_flags::L2_ANNOUNCE != 0
                        && fe.flags & svc_flags::DROP_NO_BACKEND == 0
                })
                .map(|(key, _)| key.addr)
                .collect()
        } else {
            Vec::new()
        };
        addrs.sort_unstable();
        addrs.dedup();
        self.wants.send_if_modified(|wants| {
            if addrs.is_empty() {
                wants.remove(service).is_some()
            } else if wants.get(service) == Some(&addrs) {
                false
            } else {
                wants.insert(service.to_string(), addrs);
                true
            }
        });
        if !self.held.contains(service) {
            for fe in built.frontends.values_mut() {
                fe.flags &= !svc_flags::L2_ANNOUNCE;
            }
        }
    }

    /// Takes a won or lost lease in; returns the Service to re-plan.
    pub(super) fn apply(&mut self, change: Change) -> String {
        if change.held {
            self.held.insert(change.service.clone());
        } else {
            self.held.remove(&change.service);
        }
        change.service
    }
}
