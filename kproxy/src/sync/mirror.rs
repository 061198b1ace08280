//! The [`Syncer`]'s copy of the service, backend, revnat and L2 maps, kept as if every
//! planned op was written.

use kproxy_common::{AffinityMatchKey, ServiceKey, ServiceValue};

use super::{MapOp, Syncer, codec::decode_service_key};

impl Syncer {
    /// Records one membership entry (written or read back), counting it once.
    pub(super) fn mirror_affinity_match(&mut self, key: AffinityMatchKey) {
        if self
            .affinity_match
            .entry(key.revnat_id)
            .or_default()
            .insert(key.backend_id)
        {
            self.affinity_match_entries += 1;
        }
    }

    pub(super) fn has_service_key(&self, key: &ServiceKey) -> bool {
        match decode_service_key(key) {
            Some((frontend, slot)) => self
                .services
                .get(&frontend)
                .is_some_and(|slots| slots.contains_key(&slot)),
            None => self.foreign_services.contains(key),
        }
    }

    pub(super) fn insert_service(&mut self, key: ServiceKey, value: ServiceValue) {
        match decode_service_key(&key) {
            Some((frontend, slot)) => {
                if self
                    .services
                    .entry(frontend)
                    .or_default()
                    .insert(slot, value)
                    .is_none()
                {
                    self.service_entries += 1;
                }
            }
            None => {
                if !self.foreign_services.contains(&key) {
                    self.foreign_services.push(key);
                    self.service_entries += 1;
                }
            }
        }
    }

    /// Updates the mirror as if `op` was written to the maps.
    pub(super) fn apply(&mut self, op: &MapOp) {
        match *op {
            MapOp::PutBackend { id, backend } => {
                self.backends.insert(id, backend);
            }
            MapOp::PutRevNat { id, revnat } => {
                self.revnats.insert(id, revnat);
            }
            MapOp::PutService { key, value } => self.insert_service(key, value),
            MapOp::DeleteService { key } => match decode_service_key(&key) {
                Some((frontend, slot)) => {
                    if let Some(slots) = self.services.get_mut(&frontend) {
                        if slots.remove(&slot).is_some() {
                            self.service_entries -= 1;
                        }
                        if slots.is_empty() {
                            self.services.remove(&frontend);
                        }
                    }
                }
                None => {
                    if let Some(pos) = self.foreign_services.iter().position(|k| *k == key) {
                        self.foreign_services.swap_remove(pos);
                        self.service_entries -= 1;
                    }
                }
            },
            MapOp::DeleteRevNat { id } => {
                self.revnats.remove(&id);
            }
            MapOp::DeleteBackend { id } => {
                self.backends.remove(&id);
            }
            MapOp::PutL2 { addr } => {
                self.l2.insert(addr);
            }
            MapOp::DeleteL2 { addr } => {
                self.l2.remove(&addr);
            }
            MapOp::PutVip { addr, flags } => {
                self.vips.insert(addr, flags);
            }
            MapOp::DeleteVip { addr } => {
                self.vips.remove(&addr);
            }
            // Tables are tracked per frontend by the planner, not entry by entry.
            MapOp::PutMaglev { .. } => {}
            MapOp::PutAffinityMatch { key } => self.mirror_affinity_match(key),
            MapOp::PutSrcRange { prefix_len, key } => self.mirror_src_range(prefix_len, key, true),
            MapOp::DeleteSrcRange { prefix_len, key } => {
                self.mirror_src_range(prefix_len, key, false);
            }
            MapOp::DeleteAffinityMatch { key } => {
                if let Some(ids) = self.affinity_match.get_mut(&key.revnat_id) {
                    if ids.remove(&key.backend_id) {
                        self.affinity_match_entries -= 1;
                    }
                    if ids.is_empty() {
                        self.affinity_match.remove(&key.revnat_id);
                    }
                }
            }
        }
    }
}
