//! The service-address map: every address a frontend listens on (but the node's own,
//! NodePort addresses), so the datapath answers echo requests to it. An address is there
//! while some programmed frontend uses it, flagged external while one of them is.

use std::{collections::BTreeSet, net::Ipv4Addr};

use kproxy_common::{MAX_VIP_ENTRIES, svc_flags, vip_flags};

use super::{Changes, MapOp, SyncError, Syncer};
use crate::model::{Frontend, FrontendKey, Proto};

/// The [`vip_flags`] an address gets from the frontends on it; `None`: not a service address.
fn flags_of<'a>(frontends: impl Iterator<Item = &'a Frontend>) -> Option<u32> {
    let mut flags = None;
    for fe in frontends.filter(|fe| fe.flags & svc_flags::NODEPORT == 0) {
        let external = if fe.flags & svc_flags::EXTERNAL != 0 {
            vip_flags::EXTERNAL
        } else {
            0
        };
        flags = Some(flags.unwrap_or(0) | external);
    }
    flags
}

impl Syncer {
    /// The service-address writes for `changes`; `sweep` also deletes addresses no
    /// frontend is known to use.
    pub(super) fn plan_vips(
        &self,
        changes: &Changes<'_>,
        sweep: bool,
    ) -> Result<Vec<MapOp>, SyncError> {
        let mut addrs: BTreeSet<Ipv4Addr> = changes.keys().map(|key| key.addr).collect();
        if sweep {
            addrs.extend(self.vips.keys().map(|a| Ipv4Addr::from(u32::from_be(*a))));
        }
        let mut ops = Vec::new();
        let mut entries = self.vips.len();
        for addr in addrs {
            let from = FrontendKey {
                addr,
                port: 0,
                proto: Proto::Tcp,
            };
            let staying = self
                .programmed
                .range(from..)
                .take_while(|(key, _)| key.addr == addr)
                .filter(|(key, _)| !changes.contains_key(*key))
                .map(|(_, p)| &p.frontend);
            let coming = changes
                .range(from..)
                .take_while(|(key, _)| key.addr == addr)
                .filter_map(|(_, want)| want.map(|(_, fe)| fe));
            let be = u32::from(addr).to_be();
            match (flags_of(staying.chain(coming)), self.vips.get(&be)) {
                (Some(flags), have) if have != Some(&flags) => {
                    entries += usize::from(have.is_none());
                    ops.push(MapOp::PutVip { addr: be, flags });
                }
                (None, Some(_)) => {
                    entries -= 1;
                    ops.push(MapOp::DeleteVip { addr: be });
                }
                _ => {}
            }
        }
        // The map is a fixed array of buckets where an address has two to choose from: it
        // can refuse an address while slots are free elsewhere (the datapath's "VIP table
        // full" error). Up to MAX_VIP_ENTRIES (75 % of the slots) that does not happen in
        // practice, so this plan-time check still tells "too many" before any write.
        if entries > MAX_VIP_ENTRIES as usize {
            return Err(SyncError::TooManyVips {
                needed: entries,
                max: MAX_VIP_ENTRIES,
            });
        }
        Ok(ops)
    }

    /// What the service-address map holds (restored next to [`Syncer::from_maps`]), so a
    /// restart rewrites nothing there either.
    #[must_use]
    pub fn with_vips(mut self, entries: impl IntoIterator<Item = (u32, u32)>) -> Self {
        self.vips = entries.into_iter().collect();
        self
    }
}
