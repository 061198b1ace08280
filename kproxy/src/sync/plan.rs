//! The planner: which map writes, in which order, turn the mirrored maps into what a
//! desired state, one service, or a sweep asks for (the order is in the module docs of
//! [`super`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    ops::Bound,
};

use kproxy_common::{
    AffinityMatchKey, MAGLEV_CLASS_SHIFT, MAGLEV_IDS_PER_BUCKET, MAX_AFFINITY_MATCH_ENTRIES,
    MAX_BACKENDS, MAX_L2_ENTRIES, MAX_SERVICE_SLOTS, MAX_SERVICES, MaglevBucket, ServiceValue,
    svc_flags,
};

use super::{
    Changes, Conflict, MapOp, Programmed, ServicePlan, SyncError, Syncer, Table,
    codec::{backend_value, revnat_value, service_key},
    ref_index, table_fingerprint,
};
use crate::{
    maglev::{self, BlockAlloc},
    model::{BackendAddr, BackendState, DesiredState, Frontend, FrontendKey, Proto},
};

/// The ops that write a Maglev table for `active` (backend, id) at entry `offset`.
fn table_ops(seed: u64, class: u8, offset: u32, active: &[(BackendAddr, u32)]) -> Vec<MapOp> {
    let addrs: Vec<BackendAddr> = active.iter().map(|(addr, _)| *addr).collect();
    let entries = maglev::table(seed, &addrs, maglev::size_of_class(class));
    entries
        .chunks(MAGLEV_IDS_PER_BUCKET as usize)
        .zip(offset / MAGLEV_IDS_PER_BUCKET..)
        .map(|(chunk, bucket)| {
            let mut value = MaglevBucket::default();
            for (slot, entry) in value.ids.iter_mut().zip(chunk) {
                // Ids are below MAX_BACKENDS, which fits a u16 (checked in kproxy-common).
                *slot = u16::try_from(active[*entry as usize].1).unwrap_or(0);
            }
            MapOp::PutMaglev { bucket, value }
        })
        .collect()
}

impl Syncer {
    /// Ops that turn the current maps into `desired` (every frontend of every service), in
    /// a safe order; updates self as if they were applied. Whatever is in the maps and not
    /// in `desired` is deleted, leftovers of an interrupted run included. On error (a
    /// capacity exceeded) nothing changes.
    pub fn plan(&mut self, desired: &DesiredState) -> Result<Vec<MapOp>, SyncError> {
        let mut changes: Changes<'_> = desired
            .frontends
            .iter()
            .map(|(key, fe)| (*key, Some((fe.service_name(), fe))))
            .collect();
        let known = self
            .programmed
            .keys()
            .chain(self.services.keys())
            .chain(self.revnat_ids.keys());
        for key in known {
            changes.entry(*key).or_insert(None);
        }
        self.plan_changes(&changes, true)
    }

    /// Ops that make the frontends of one service (`namespace/name`) exactly `frontends`:
    /// new ones are added, changed ones rewritten, the ones it no longer has deleted; no
    /// other service's frontend is looked at, so the cost does not grow with the number of
    /// services. A frontend another service owns is not taken: it is reported as a
    /// conflict and the rest of the service is planned. On error (a capacity exceeded)
    /// nothing changes. `frontends` empty removes the service.
    pub fn plan_service(
        &mut self,
        service: &str,
        frontends: &BTreeMap<FrontendKey, Frontend>,
    ) -> Result<ServicePlan, SyncError> {
        let mut changes = Changes::new();
        let mut conflicts = Vec::new();
        for (key, fe) in frontends {
            match self.programmed.get(key).and_then(|p| p.owner.as_deref()) {
                Some(owner) if owner != service => conflicts.push(Conflict {
                    frontend: *key,
                    owner: owner.to_string(),
                }),
                _ => {
                    changes.insert(*key, Some((service, fe)));
                }
            }
        }
        let mut released = 0;
        for key in self.owned.get(service).into_iter().flatten() {
            if !frontends.contains_key(key) {
                changes.insert(*key, None);
                released += 1;
            }
        }
        let free_before = self.maglev_alloc.clone();
        let ops = self.plan_changes(&changes, false)?;
        let maglev_fallbacks = changes
            .keys()
            .filter(|key| self.maglev_fallbacks.contains(key))
            .copied()
            .collect();
        Ok(ServicePlan {
            ops,
            conflicts,
            released,
            maglev_fallbacks,
            maglev_freed: self.maglev_alloc.frees_of(&free_before),
        })
    }

    /// Ops that delete everything no service claimed: frontends restored by `from_maps`
    /// that no [`Syncer::plan_service`] took over since, and entries an interrupted run
    /// left behind. Run it once every service has been planned after a restart.
    pub fn sweep(&mut self) -> Result<Vec<MapOp>, SyncError> {
        let mut changes = Changes::new();
        for (key, p) in &self.programmed {
            if p.owner.is_none() {
                changes.insert(*key, None);
            }
        }
        for key in self.services.keys().chain(self.revnat_ids.keys()) {
            if !self.programmed.contains_key(key) {
                changes.insert(*key, None);
            }
        }
        self.plan_changes(&changes, true)
    }

    /// Whether `addr` is to be announced once `changes` are made: a LoadBalancer-IP
    /// frontend on it is programmed and stays, or comes with the changes.
    fn announced_after(&self, addr: Ipv4Addr, changes: &Changes<'_>) -> bool {
        let l2 = |fe: &Frontend| fe.flags & svc_flags::L2_ANNOUNCE != 0;
        let from = FrontendKey {
            addr,
            port: 0,
            proto: Proto::Tcp,
        };
        let staying = self
            .programmed
            .range(from..)
            .take_while(|(key, _)| key.addr == addr)
            .any(|(key, p)| !changes.contains_key(key) && l2(&p.frontend));
        staying
            || changes
                .range(from..)
                .take_while(|(key, _)| key.addr == addr)
                .any(|(_, want)| want.is_some_and(|(_, fe)| l2(fe)))
    }

    /// The planner behind [`Syncer::plan`], [`Syncer::plan_service`] and
    /// [`Syncer::sweep`]: `changes` names every frontend the plan may touch and what it
    /// becomes (`None`: deleted); only backends those frontends list (before or after) are
    /// looked at. `sweep` also deletes every map entry nothing references (after a
    /// restart or an interrupted run).
    fn plan_changes(
        &mut self,
        changes: &Changes<'_>,
        sweep: bool,
    ) -> Result<Vec<MapOp>, SyncError> {
        // Reference counts of the backends the changed frontends list, before → after.
        let mut delta: BTreeMap<BackendAddr, [i64; 2]> = BTreeMap::new();
        for (key, want) in changes {
            if let Some(old) = self.programmed.get(key) {
                for (addr, state) in &old.frontend.backends {
                    delta.entry(*addr).or_default()[ref_index(*state)] -= 1;
                }
            }
            if let Some((_, fe)) = want {
                for (addr, state) in &fe.backends {
                    delta.entry(*addr).or_default()[ref_index(*state)] += 1;
                }
            }
        }
        // A backend shared by several frontends is active if any of them uses it for new
        // flows; the map has one state per backend. `None`: nothing lists it any more.
        let touched: BTreeMap<BackendAddr, Option<BackendState>> = delta
            .iter()
            .map(|(addr, d)| {
                let refs = self.backend_refs.get(addr).copied().unwrap_or_default();
                let state = if i64::from(refs[0]) + d[0] > 0 {
                    Some(BackendState::Active)
                } else if i64::from(refs[1]) + d[1] > 0 {
                    Some(BackendState::Terminating)
                } else {
                    None
                };
                (*addr, state)
            })
            .collect();

        // Allocate from copies so that an error leaves self untouched.
        let mut backend_alloc = self.backend_alloc.clone();
        let new_backends: Vec<BackendAddr> = touched
            .iter()
            .filter(|(addr, state)| state.is_some() && !self.backend_ids.contains_key(addr))
            .map(|(addr, _)| *addr)
            .collect();
        let too_many_backends = SyncError::TooManyBackends {
            needed: backend_alloc.in_use() + new_backends.len(),
            max: MAX_BACKENDS - 1,
        };
        if new_backends.len() > backend_alloc.available() {
            return Err(too_many_backends);
        }
        let mut new_backend_ids = BTreeMap::new();
        for addr in new_backends {
            let id = backend_alloc.alloc().ok_or(too_many_backends.clone())?;
            new_backend_ids.insert(addr, id);
        }

        let mut revnat_alloc = self.revnat_alloc.clone();
        let new_frontends: Vec<FrontendKey> = changes
            .iter()
            .filter(|(key, want)| want.is_some() && !self.revnat_ids.contains_key(key))
            .map(|(key, _)| *key)
            .collect();
        let too_many_frontends = SyncError::TooManyFrontends {
            needed: revnat_alloc.in_use() + new_frontends.len(),
            max: MAX_SERVICES - 1,
        };
        if new_frontends.len() > revnat_alloc.available() {
            return Err(too_many_frontends);
        }
        let mut new_revnat_ids = BTreeMap::new();
        for key in new_frontends {
            let id = revnat_alloc
                .alloc()
                .and_then(|id| u16::try_from(id).ok())
                .ok_or(too_many_frontends.clone())?;
            new_revnat_ids.insert(key, id);
        }

        let backend_of = |addr: &BackendAddr| {
            self.backend_ids
                .get(addr)
                .or_else(|| new_backend_ids.get(addr))
                .copied()
        };
        let revnat_of = |key: &FrontendKey| {
            self.revnat_ids
                .get(key)
                .or_else(|| new_revnat_ids.get(key))
                .copied()
        };

        let mut ops = Vec::new();

        // 1. Backends, before any slot can point to them.
        for (addr, state) in &touched {
            let (Some(state), Some(id)) = (state, backend_of(addr)) else {
                continue;
            };
            let backend = backend_value(addr, *state);
            if self.backends.get(&id) != Some(&backend) {
                ops.push(MapOp::PutBackend { id, backend });
            }
        }

        // 2. Revnat entries, before a slot 0 publishes their id.
        for (key, want) in changes {
            let (Some(_), Some(id)) = (want, revnat_of(key)) else {
                continue;
            };
            let revnat = revnat_value(key);
            if self.revnats.get(&id) != Some(&revnat) {
                ops.push(MapOp::PutRevNat { id, revnat });
            }
        }

        // Revnat ids some frontend has once this plan is made: a sweep deletes the per-id
        // entries (source ranges, affinity members) of the others only.
        let live: BTreeSet<u16> = self
            .revnat_ids
            .values()
            .chain(new_revnat_ids.values())
            .copied()
            .collect();

        // 2a. Source ranges a frontend gains, before its slot 0 may flag them.
        let ranges = self.plan_source_ranges(changes, revnat_of, sweep.then_some(&live))?;
        ops.extend(ranges.puts);

        // 2b. Affinity membership: backends that left a frontend go first (an affine client
        // must not be sent back to them); new members follow their slots (after 3).
        let mut members_after = self.affinity_match_entries;
        let mut member_puts = Vec::new();
        for (key, want) in changes {
            let Some(revnat_id) = revnat_of(key) else {
                continue;
            };
            let want_ids: BTreeSet<u32> = match want {
                Some((_, fe)) if fe.flags & svc_flags::AFFINITY != 0 => {
                    fe.active().filter_map(backend_of).collect()
                }
                _ => BTreeSet::new(),
            };
            let have = self.affinity_match.get(&revnat_id);
            for id in have.into_iter().flatten() {
                if !want_ids.contains(id) {
                    ops.push(MapOp::DeleteAffinityMatch {
                        key: member_key(revnat_id, *id),
                    });
                    members_after -= 1;
                }
            }
            for id in want_ids {
                if !have.is_some_and(|h| h.contains(&id)) {
                    member_puts.push(MapOp::PutAffinityMatch {
                        key: member_key(revnat_id, id),
                    });
                    members_after += 1;
                }
            }
        }
        if sweep {
            // Entries of revnat ids no frontend has (a crash between writes).
            for (revnat_id, ids) in &self.affinity_match {
                if !live.contains(revnat_id) {
                    for id in ids {
                        ops.push(MapOp::DeleteAffinityMatch {
                            key: member_key(*revnat_id, *id),
                        });
                        members_after -= 1;
                    }
                }
            }
        }
        if members_after > MAX_AFFINITY_MATCH_ENTRIES as usize {
            return Err(SyncError::TooManyAffinityMembers {
                needed: members_after,
                max: MAX_AFFINITY_MATCH_ENTRIES,
            });
        }

        // 3. New and changed frontends.
        let mut maglev_alloc: BlockAlloc = self.maglev_alloc.clone();
        let mut new_tables: BTreeMap<FrontendKey, Table> = BTreeMap::new();
        // Frontends whose current table is replaced or dropped: freed after the plan.
        let mut dropped_tables: Vec<FrontendKey> = Vec::new();
        // Frontends that want a table the array has no room for: they pick at random.
        let mut fallbacks: BTreeSet<FrontendKey> = BTreeSet::new();
        let no_slots = BTreeMap::new();
        for (key, want) in changes {
            let (Some((_, frontend)), Some(revnat_id)) = (want, revnat_of(key)) else {
                continue;
            };
            let current = self.services.get(key).unwrap_or(&no_slots);
            let active: Vec<(BackendAddr, u32)> = frontend
                .active()
                .filter_map(|addr| Some((*addr, backend_of(addr)?)))
                .collect();
            let ids: Vec<u32> = active.iter().map(|(_, id)| *id).collect();
            let count = u16::try_from(ids.len()).map_err(|_| SyncError::TooManyActiveBackends {
                frontend: *key,
                count: ids.len(),
                max: u16::MAX,
            })?;
            let base = ServiceValue {
                backend_id: 0,
                count: 0,
                revnat_id,
                flags: frontend.flags,
                affinity_timeout_s: frontend.affinity_timeout_s,
            };
            // Backend slots first: readers only follow slots up to the published count.
            for (slot, id) in (1..=count).zip(ids) {
                let value = ServiceValue {
                    backend_id: id,
                    ..base
                };
                if current.get(&slot) != Some(&value) {
                    ops.push(MapOp::PutService {
                        key: service_key(key, slot),
                        value,
                    });
                }
            }
            let mut slot0 = ServiceValue { count, ..base };
            if count > 0 && self.uses_maglev(frontend) {
                let class = maglev::size_class(active.len());
                let fingerprint = table_fingerprint(self.seed, class, &active);
                let table = match self.tables.get(key) {
                    Some(t) if t.class == class && t.fingerprint == fingerprint => Some(*t),
                    old => {
                        if old.is_some() {
                            dropped_tables.push(*key);
                        }
                        // A full array degrades this frontend to the random pick rather
                        // than failing the whole plan; a later plan retries.
                        maglev_alloc.alloc(class).map(|offset| {
                            ops.extend(table_ops(self.seed, class, offset, &active));
                            let t = Table {
                                offset,
                                class,
                                fingerprint,
                            };
                            new_tables.insert(*key, t);
                            t
                        })
                    }
                };
                if let Some(table) = table {
                    slot0.backend_id = table.offset;
                    slot0.flags |=
                        svc_flags::MAGLEV | (u32::from(table.class) << MAGLEV_CLASS_SHIFT);
                } else {
                    fallbacks.insert(*key);
                }
            } else if self.tables.contains_key(key) {
                dropped_tables.push(*key);
            }
            if current.get(&0) != Some(&slot0) {
                ops.push(MapOp::PutService {
                    key: service_key(key, 0),
                    value: slot0,
                });
            }
            // Only once the lower count is published can the slots above it go.
            for slot in current
                .range((Bound::Excluded(count), Bound::Unbounded))
                .map(|(slot, _)| *slot)
            {
                ops.push(MapOp::DeleteService {
                    key: service_key(key, slot),
                });
            }
        }

        // New affinity members once their slots are published.
        ops.extend(member_puts);

        // 4. Removed frontends: unpublish (slot 0), then the slots, then the revnat entry.
        let mut deleted_revnats = BTreeSet::new();
        for (key, want) in changes {
            if want.is_some() {
                continue;
            }
            if let Some(slots) = self.services.get(key) {
                if slots.contains_key(&0) {
                    ops.push(MapOp::DeleteService {
                        key: service_key(key, 0),
                    });
                }
                for slot in slots.keys().filter(|slot| **slot != 0) {
                    ops.push(MapOp::DeleteService {
                        key: service_key(key, *slot),
                    });
                }
            }
            if self.tables.contains_key(key) {
                dropped_tables.push(*key);
            }
            if let Some(id) = self.revnat_ids.get(key)
                && self.revnats.contains_key(id)
            {
                ops.push(MapOp::DeleteRevNat { id: *id });
                deleted_revnats.insert(*id);
            }
        }
        if sweep {
            for key in &self.foreign_services {
                ops.push(MapOp::DeleteService { key: *key });
            }
            // Revnat entries no frontend owns (left over by an interrupted run).
            let live: BTreeSet<u16> = self
                .revnat_ids
                .iter()
                .filter(|(key, _)| !matches!(changes.get(*key), Some(None)))
                .map(|(_, id)| *id)
                .collect();
            for id in self.revnats.keys() {
                if !live.contains(id) && !deleted_revnats.contains(id) {
                    ops.push(MapOp::DeleteRevNat { id: *id });
                }
            }
        }

        // 4b. Source ranges frontends lost, now that no slot 0 relies on them.
        ops.extend(ranges.deletes);

        // 5. Backends nothing lists any more.
        let mut dead_backends: Vec<(BackendAddr, u32)> = touched
            .iter()
            .filter(|(_, state)| state.is_none())
            .filter_map(|(addr, _)| Some((*addr, *self.backend_ids.get(addr)?)))
            .collect();
        if sweep {
            // Also those no programmed frontend lists (terminating backends of frontends
            // restored from the maps, duplicates of one address).
            dead_backends.extend(
                self.backend_ids
                    .iter()
                    .filter(|(addr, _)| {
                        !touched.contains_key(*addr) && !self.backend_refs.contains_key(*addr)
                    })
                    .map(|(addr, id)| (*addr, *id)),
            );
        }
        let mut deleted_backends = BTreeSet::new();
        for (_, id) in &dead_backends {
            if self.backends.contains_key(id) && deleted_backends.insert(*id) {
                ops.push(MapOp::DeleteBackend { id: *id });
            }
        }
        if sweep {
            let live: BTreeSet<u32> = self
                .backend_ids
                .values()
                .copied()
                .filter(|id| !deleted_backends.contains(id))
                .collect();
            for id in self.backends.keys() {
                if !live.contains(id) && !deleted_backends.contains(id) {
                    ops.push(MapOp::DeleteBackend { id: *id });
                }
            }
        }

        // 6. L2 announcements, after the frontends they belong to (and before nothing: an
        // ARP answer for an address without a frontend only leads to a refused flow).
        let mut addrs: BTreeSet<Ipv4Addr> = changes.keys().map(|key| key.addr).collect();
        if sweep {
            addrs.extend(self.l2.iter().map(|a| Ipv4Addr::from(u32::from_be(*a))));
        }
        let mut announced = self.l2.len();
        for addr in addrs {
            let be = u32::from(addr).to_be();
            match (self.announced_after(addr, changes), self.l2.contains(&be)) {
                (true, false) => {
                    ops.push(MapOp::PutL2 { addr: be });
                    announced += 1;
                }
                (false, true) => {
                    ops.push(MapOp::DeleteL2 { addr: be });
                    announced -= 1;
                }
                _ => {}
            }
        }
        if announced > MAX_L2_ENTRIES as usize {
            return Err(SyncError::TooManyAnnounced {
                needed: announced,
                max: MAX_L2_ENTRIES,
            });
        }
        // 6b. Service addresses (echo replies), likewise after their frontends.
        ops.extend(self.plan_vips(changes, sweep)?);

        // Writes come before deletes, so the service map peaks in the middle of the plan.
        let mut entries = self.service_entries;
        let mut peak = entries;
        for op in &ops {
            match op {
                MapOp::PutService { key, .. } if !self.has_service_key(key) => {
                    entries += 1;
                    peak = peak.max(entries);
                }
                MapOp::DeleteService { .. } => entries = entries.saturating_sub(1),
                _ => {}
            }
        }
        if peak > MAX_SERVICE_SLOTS as usize {
            return Err(SyncError::TooManySlots {
                needed: peak,
                max: MAX_SERVICE_SLOTS,
            });
        }

        // Commit.
        for op in &ops {
            self.apply(op);
        }
        // Slot 0s point to the new tables now: the old blocks can be reused by later plans.
        self.maglev_alloc = maglev_alloc;
        for key in dropped_tables {
            if let Some(t) = self.tables.remove(&key) {
                self.maglev_alloc.release(t.offset, t.class);
            }
        }
        self.tables.extend(new_tables);
        for key in changes.keys() {
            self.maglev_fallbacks.remove(key);
        }
        self.maglev_fallbacks.extend(fallbacks);
        let mut dropped_revnats = Vec::new();
        for (key, want) in changes {
            if want.is_none()
                && let Some(id) = self.revnat_ids.remove(key)
            {
                dropped_revnats.push(id);
            }
        }
        self.revnat_ids.extend(new_revnat_ids);
        for (addr, id) in &dead_backends {
            if self.backend_ids.get(addr) == Some(id) {
                self.backend_ids.remove(addr);
            }
        }
        self.backend_ids.extend(new_backend_ids);
        self.backend_alloc = backend_alloc;
        self.revnat_alloc = revnat_alloc;
        // An id is free once no frontend owns it and no map entry carries it.
        for op in &ops {
            match op {
                MapOp::DeleteBackend { id } => self.backend_alloc.release(*id),
                MapOp::DeleteRevNat { id } => self.revnat_alloc.release(u32::from(*id)),
                _ => {}
            }
        }
        for id in dropped_revnats {
            if !self.revnats.contains_key(&id) {
                self.revnat_alloc.release(u32::from(id));
            }
        }
        for (_, id) in dead_backends {
            if !self.backends.contains_key(&id) {
                self.backend_alloc.release(id);
            }
        }
        for (addr, d) in delta {
            let refs = self.backend_refs.get(&addr).copied().unwrap_or_default();
            let after = [
                u32::try_from(i64::from(refs[0]) + d[0]).unwrap_or(0),
                u32::try_from(i64::from(refs[1]) + d[1]).unwrap_or(0),
            ];
            if after == [0, 0] {
                self.backend_refs.remove(&addr);
            } else {
                self.backend_refs.insert(addr, after);
            }
        }
        for (key, want) in changes {
            let old = match want {
                Some((owner, fe)) => self.programmed.insert(
                    *key,
                    Programmed {
                        owner: Some((*owner).to_string()),
                        frontend: (*fe).clone(),
                    },
                ),
                None => self.programmed.remove(key),
            };
            if let Some(old_owner) = old.and_then(|p| p.owner)
                && let Some(keys) = self.owned.get_mut(&old_owner)
            {
                keys.remove(key);
                if keys.is_empty() {
                    self.owned.remove(&old_owner);
                }
            }
            if let Some((owner, _)) = want {
                self.owned
                    .entry((*owner).to_string())
                    .or_default()
                    .insert(*key);
            }
        }
        Ok(ops)
    }
}

fn member_key(revnat_id: u16, backend_id: u32) -> AffinityMatchKey {
    AffinityMatchKey {
        backend_id,
        revnat_id,
        _pad: 0,
    }
}
