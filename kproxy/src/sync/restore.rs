//! Rebuilding a [`Syncer`] from what the pinned maps hold after a restart.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_common::{
    AffinityMatchKey, Backend, MAGLEV_CLASS_SHIFT, MAX_BACKENDS, MAX_SERVICES, RevNat, ServiceKey,
    ServiceValue, svc_flags,
};

use super::{
    IdAlloc, Programmed, Syncer, Table, codec::decode_backend, ref_index, table_fingerprint,
};
use crate::model::{BackendState, Frontend, FrontendKind};

impl Syncer {
    /// What the L2 announcement map holds (restored next to [`Syncer::from_maps`]), so a
    /// restart rewrites nothing there either.
    #[must_use]
    pub fn with_l2(mut self, addrs: impl IntoIterator<Item = u32>) -> Self {
        self.l2 = addrs.into_iter().collect();
        self
    }

    /// What the affinity membership map holds (restored next to [`Syncer::from_maps`]);
    /// entries of revnat ids no frontend has are deleted by the next sweep.
    #[must_use]
    pub fn with_affinity_match(mut self, keys: impl IntoIterator<Item = AffinityMatchKey>) -> Self {
        for key in keys {
            self.mirror_affinity_match(key);
        }
        self
    }

    /// Adopts the Maglev tables the restored slot 0s publish: their blocks are in use, and
    /// with `valid` (same seed) their content is known from the slots, so an unchanged
    /// frontend's table is not written again.
    pub(super) fn restore_tables(&mut self, valid: bool) {
        self.tables.clear();
        self.maglev_alloc = crate::maglev::BlockAlloc::new();
        for (key, slots) in &self.services {
            let Some(slot0) = slots.get(&0) else { continue };
            if slot0.flags & svc_flags::MAGLEV == 0 {
                continue;
            }
            let class = u8::try_from((slot0.flags >> MAGLEV_CLASS_SHIFT) & 0xf).unwrap_or(u8::MAX);
            if !self.maglev_alloc.reserve(slot0.backend_id, class) {
                // Overlapping or invalid: rewritten by the next plan, in a fresh block.
                continue;
            }
            let active: Vec<_> = (1..=slot0.count)
                .filter_map(|slot| slots.get(&slot))
                .filter_map(|v| {
                    let addr = decode_backend(self.backends.get(&v.backend_id)?)?;
                    Some((addr, v.backend_id))
                })
                .collect();
            let fingerprint = if valid && active.len() == usize::from(slot0.count) {
                table_fingerprint(self.seed, class, &active)
            } else {
                0
            };
            self.tables.insert(
                *key,
                Table {
                    offset: slot0.backend_id,
                    class,
                    fingerprint,
                },
            );
        }
    }

    /// Rebuild from the contents of pinned maps after a kproxy restart so nothing is
    /// rewritten needlessly and ids stay stable. Entries a crash may have left half-done
    /// (unreferenced backends or revnats, slots beyond a count) are repaired or deleted by the
    /// next plan.
    pub fn from_maps(
        services: impl IntoIterator<Item = (ServiceKey, ServiceValue)>,
        backends: impl IntoIterator<Item = (u32, Backend)>,
        revnats: impl IntoIterator<Item = (u32, RevNat)>,
    ) -> Self {
        let mut s = Self::new();
        for (key, value) in services {
            s.insert_service(key, value);
        }
        s.backends.extend(backends);
        for (id, revnat) in revnats {
            match u16::try_from(id) {
                Ok(id) if id != 0 => {
                    s.revnats.insert(id, revnat);
                }
                // DeleteRevNat cannot name it, and nothing kproxy writes points to it.
                _ => tracing::warn!(id, "ignoring revnat entry with an id kproxy never uses"),
            }
        }

        // Adopt the backend ids; if an address appears twice the lowest id wins and the other
        // is deleted once the slots that use it are rewritten.
        for (id, backend) in &s.backends {
            if (1..MAX_BACKENDS).contains(id)
                && let Some(addr) = decode_backend(backend)
            {
                s.backend_ids.entry(addr).or_insert(*id);
            }
        }
        // A frontend's revnat id is the one its slot 0 publishes.
        let mut claimed = BTreeSet::new();
        for (frontend, slots) in &s.services {
            if let Some(slot0) = slots.get(&0)
                && slot0.revnat_id != 0
                && claimed.insert(slot0.revnat_id)
            {
                s.revnat_ids.insert(*frontend, slot0.revnat_id);
            }
        }
        // Everything in a map is taken until a plan deletes it.
        s.backend_alloc = IdAlloc::with_used(MAX_BACKENDS, s.backends.keys().copied());
        s.revnat_alloc = IdAlloc::with_used(
            MAX_SERVICES,
            s.revnats
                .keys()
                .chain(s.revnat_ids.values())
                .map(|id| u32::from(*id)),
        );
        // What the published frontends hold, owned by no service until one claims them
        // (terminating backends have no slot, so they are not counted: a service listing
        // them counts them again, `sweep` deletes the others).
        let mut programmed = BTreeMap::new();
        for (key, slots) in &s.services {
            let Some(slot0) = slots.get(&0) else { continue };
            let backends = (1..=slot0.count)
                .filter_map(|slot| slots.get(&slot))
                .filter_map(|v| s.backends.get(&v.backend_id))
                .filter_map(decode_backend)
                .map(|addr| (addr, BackendState::Active))
                .collect();
            let kind = if slot0.flags & svc_flags::NODEPORT != 0 {
                FrontendKind::NodePort
            } else if slot0.flags & svc_flags::L2_ANNOUNCE != 0 {
                FrontendKind::LoadBalancerIp
            } else if slot0.flags & svc_flags::EXTERNAL != 0 {
                FrontendKind::ExternalIp
            } else {
                FrontendKind::ClusterIp
            };
            let frontend = Frontend {
                service: String::new(),
                kind,
                algorithm: None,
                // The table bits are the planner's, tracked in `tables`.
                flags: slot0.flags & !(svc_flags::MAGLEV | svc_flags::MAGLEV_CLASS_MASK),
                affinity_timeout_s: slot0.affinity_timeout_s,
                backends,
                // The ranges are mirrored from their own map (`with_source_ranges`).
                source_ranges: Vec::new(),
            };
            programmed.insert(
                *key,
                Programmed {
                    owner: None,
                    frontend,
                },
            );
        }
        for p in programmed.values() {
            for (addr, state) in &p.frontend.backends {
                s.backend_refs.entry(*addr).or_default()[ref_index(*state)] += 1;
            }
        }
        s.programmed = programmed;
        s.restore_tables(false);
        s
    }
}
