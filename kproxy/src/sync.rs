//! Plans the map writes that turn what the load-balancer maps hold into a [`DesiredState`].
//!
//! [`Syncer`] mirrors the three maps (services, backends, revnat), owns the id allocators and
//! remembers which service owns which frontend and how many frontends list each backend.
//! [`Syncer::plan`] diffs a whole desired state against the mirror, [`Syncer::plan_service`]
//! only the frontends of one service (the cluster mode re-plans the one Service an event is
//! about); both are the same planner and emit only the writes that change something,
//! ordered so the datapath never follows a slot, backend or revnat id that is not there
//! (yet, or any more):
//!
//! 1. backends that are new or whose state changed;
//! 2. revnat entries of new frontends;
//! 3. per new or changed frontend: backend slots, then slot 0 (which publishes the count),
//!    then the slots beyond the new count;
//! 4. removed frontends: slot 0 first (which unpublishes it), its slots, its revnat entry;
//! 5. backends nothing references any more.
//!
//! Ids are freed only after the plan that deletes them, so a plan never reuses an id that an
//! entry written earlier in the same plan could still reference.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    ops::Bound,
};

use kproxy_common::{
    Backend, MAX_BACKENDS, MAX_L2_ENTRIES, MAX_SERVICE_SLOTS, MAX_SERVICES, RevNat, ServiceKey,
    ServiceValue, backend_state, svc_flags,
};

use crate::model::{
    BackendAddr, BackendState, DesiredState, Frontend, FrontendKey, FrontendKind, Proto,
};

// Revnat ids are u16 in the maps' values: every id below MAX_SERVICES must fit.
const _: () = assert!(MAX_SERVICES <= u16::MAX as u32 + 1);

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend {
        id: u32,
        backend: Backend,
    },
    PutRevNat {
        id: u16,
        revnat: RevNat,
    },
    PutService {
        key: ServiceKey,
        value: ServiceValue,
    },
    DeleteService {
        key: ServiceKey,
    },
    DeleteRevNat {
        id: u16,
    },
    DeleteBackend {
        id: u32,
    },
    /// Announce a LoadBalancer IP on the uplink's segment (network byte order).
    PutL2 {
        addr: u32,
    },
    DeleteL2 {
        addr: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("too many backends: {needed} backend ids needed, the datapath has {max}")]
    TooManyBackends { needed: usize, max: u32 },
    #[error("too many frontends: {needed} revnat ids needed, the datapath has {max}")]
    TooManyFrontends { needed: usize, max: u32 },
    #[error("frontend {frontend} has {count} active backends, a frontend holds at most {max}")]
    TooManyActiveBackends {
        frontend: FrontendKey,
        count: usize,
        max: u16,
    },
    #[error("the service map would need {needed} entries during this update, it holds {max}")]
    TooManySlots { needed: usize, max: u32 },
    #[error("{needed} LoadBalancer IPs to announce, the datapath announces at most {max}")]
    TooManyAnnounced { needed: usize, max: u32 },
}

/// The service map key of `slot` of a frontend (network byte order).
#[must_use]
pub fn service_key(frontend: &FrontendKey, slot: u16) -> ServiceKey {
    ServiceKey::new(
        u32::from_ne_bytes(frontend.addr.octets()),
        frontend.port.to_be(),
        frontend.proto.ip_proto(),
        slot,
    )
}

/// The frontend and slot a service map key describes; `None` for keys kproxy never writes.
#[must_use]
pub fn decode_service_key(key: &ServiceKey) -> Option<(FrontendKey, u16)> {
    if key._pad != [0; 3] {
        return None;
    }
    let proto = Proto::from_ip_proto(key.proto)?;
    let frontend = FrontendKey {
        addr: Ipv4Addr::from(key.addr.to_ne_bytes()),
        port: u16::from_be(key.port),
        proto,
    };
    Some((frontend, key.slot))
}

/// The backend map value for a backend (network byte order).
#[must_use]
pub fn backend_value(addr: &BackendAddr, state: BackendState) -> Backend {
    Backend {
        addr: u32::from_ne_bytes(addr.addr.octets()),
        port: addr.port.to_be(),
        proto: addr.proto.ip_proto(),
        state: match state {
            BackendState::Active => backend_state::ACTIVE,
            BackendState::Terminating => backend_state::TERMINATING,
        },
    }
}

/// The address a backend map value points to; `None` for a protocol kproxy never writes.
#[must_use]
pub fn decode_backend(backend: &Backend) -> Option<BackendAddr> {
    Some(BackendAddr {
        addr: Ipv4Addr::from(backend.addr.to_ne_bytes()),
        port: u16::from_be(backend.port),
        proto: Proto::from_ip_proto(backend.proto)?,
    })
}

/// The revnat map value of a frontend (network byte order).
#[must_use]
pub fn revnat_value(frontend: &FrontendKey) -> RevNat {
    RevNat {
        addr: u32::from_ne_bytes(frontend.addr.octets()),
        port: frontend.port.to_be(),
        _pad: 0,
    }
}

/// Hands out ids in `1..limit`, lowest freed id first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IdAlloc {
    limit: u32,
    /// Every id at or above this has never been handed out.
    next: u32,
    /// Ids below `next` that are free again.
    free: BTreeSet<u32>,
}

impl IdAlloc {
    const fn new(limit: u32) -> Self {
        Self {
            limit,
            next: 1,
            free: BTreeSet::new(),
        }
    }

    /// An allocator for which `used` (and nothing else) is taken.
    fn with_used(limit: u32, used: impl IntoIterator<Item = u32>) -> Self {
        let used: BTreeSet<u32> = used
            .into_iter()
            .filter(|id| (1..limit).contains(id))
            .collect();
        let next = used.last().map_or(1, |max| max + 1);
        let free = (1..next).filter(|id| !used.contains(id)).collect();
        Self { limit, next, free }
    }

    fn available(&self) -> usize {
        self.free.len() + (self.limit - self.next) as usize
    }

    fn in_use(&self) -> usize {
        (self.next - 1) as usize - self.free.len()
    }

    fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        if self.next < self.limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        None
    }

    fn release(&mut self, id: u32) {
        // Ids outside the range were never handed out (leftovers found in the maps).
        if id >= 1 && id < self.next {
            self.free.insert(id);
        }
    }
}

/// What the maps hold, and which ids belong to which frontend and backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syncer {
    /// Service map entries, grouped by frontend: slot → value.
    services: BTreeMap<FrontendKey, BTreeMap<u16, ServiceValue>>,
    /// Service map entries no frontend key describes (found by `from_maps`); the next plan
    /// deletes them.
    foreign_services: Vec<ServiceKey>,
    /// Number of service map entries, for the capacity check.
    service_entries: usize,
    backends: BTreeMap<u32, Backend>,
    revnats: BTreeMap<u16, RevNat>,
    backend_ids: BTreeMap<BackendAddr, u32>,
    revnat_ids: BTreeMap<FrontendKey, u16>,
    backend_alloc: IdAlloc,
    revnat_alloc: IdAlloc,
    /// What each frontend was last planned to be and which service owns it; the
    /// per-service planner diffs against it and the reference counts come from it.
    programmed: BTreeMap<FrontendKey, Programmed>,
    /// Service (`namespace/name`) → the frontends it owns.
    owned: BTreeMap<String, BTreeSet<FrontendKey>>,
    /// Backend → how many programmed frontends list it, [active, terminating]: a backend
    /// shared by several frontends (of one or several services) is one map entry, deleted
    /// when the last one drops it.
    backend_refs: BTreeMap<BackendAddr, [u32; 2]>,
    /// Addresses in the L2 announcement map (network byte order): an address is there
    /// while a programmed LoadBalancer-IP frontend uses it.
    l2: BTreeSet<u32>,
}

/// A programmed frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Programmed {
    /// `None`: restored from the maps by `from_maps` and not claimed by a service since.
    owner: Option<String>,
    frontend: Frontend,
}

/// The frontends one plan may touch and what each becomes: (owning service, frontend), or
/// `None` when it is deleted.
type Changes<'a> = BTreeMap<FrontendKey, Option<(&'a str, &'a Frontend)>>;

const fn ref_index(state: BackendState) -> usize {
    match state {
        BackendState::Active => 0,
        BackendState::Terminating => 1,
    }
}

/// The result of [`Syncer::plan_service`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub ops: Vec<MapOp>,
    /// Frontends of the service that another service owns; they were left out.
    pub conflicts: Vec<Conflict>,
    /// How many frontends the service gave up (another service may now claim them).
    pub released: usize,
}

/// A frontend two services claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub frontend: FrontendKey,
    /// The service (`namespace/name`) that has it.
    pub owner: String,
}

impl Default for Syncer {
    fn default() -> Self {
        Self::new()
    }
}

impl Syncer {
    /// A syncer for empty maps.
    #[must_use]
    pub fn new() -> Self {
        Self {
            services: BTreeMap::new(),
            foreign_services: Vec::new(),
            service_entries: 0,
            backends: BTreeMap::new(),
            revnats: BTreeMap::new(),
            backend_ids: BTreeMap::new(),
            revnat_ids: BTreeMap::new(),
            backend_alloc: IdAlloc::new(MAX_BACKENDS),
            revnat_alloc: IdAlloc::new(MAX_SERVICES),
            programmed: BTreeMap::new(),
            owned: BTreeMap::new(),
            backend_refs: BTreeMap::new(),
            l2: BTreeSet::new(),
        }
    }

    /// What the L2 announcement map holds (restored next to [`Syncer::from_maps`]), so a
    /// restart rewrites nothing there either.
    #[must_use]
    pub fn with_l2(mut self, addrs: impl IntoIterator<Item = u32>) -> Self {
        self.l2 = addrs.into_iter().collect();
        self
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
                flags: slot0.flags,
                affinity_timeout_s: slot0.affinity_timeout_s,
                backends,
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
        s
    }

    /// Number of service map entries (frontends and their backend slots).
    #[must_use]
    pub fn service_entries(&self) -> usize {
        self.service_entries
    }

    /// The frontends service `service` (`namespace/name`) owns.
    pub fn owned(&self, service: &str) -> impl Iterator<Item = &FrontendKey> + '_ {
        self.owned.get(service).into_iter().flatten()
    }

    /// The revnat id of a frontend.
    #[must_use]
    pub fn revnat_id(&self, key: &FrontendKey) -> Option<u16> {
        self.revnat_ids.get(key).copied()
    }

    /// The id of a backend.
    #[must_use]
    pub fn backend_id(&self, addr: &BackendAddr) -> Option<u32> {
        self.backend_ids.get(addr).copied()
    }

    /// revnat id → frontend, for dumps and metrics labels.
    pub fn revnat_ids(&self) -> impl Iterator<Item = (u16, FrontendKey)> + '_ {
        self.revnat_ids.iter().map(|(key, id)| (*id, *key))
    }

    /// backend id → backend address (the tests check id stability with it; the names use
    /// [`Syncer::backend_id`]).
    #[cfg(test)]
    fn backend_ids(&self) -> impl Iterator<Item = (u32, BackendAddr)> + '_ {
        self.backend_ids.iter().map(|(addr, id)| (*id, *addr))
    }

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
        let ops = self.plan_changes(&changes, false)?;
        Ok(ServicePlan {
            ops,
            conflicts,
            released,
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

    /// What `key` was last planned to be.
    #[must_use]
    pub fn frontend(&self, key: &FrontendKey) -> Option<&Frontend> {
        self.programmed.get(key).map(|p| &p.frontend)
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

        // 3. New and changed frontends.
        let no_slots = BTreeMap::new();
        for (key, want) in changes {
            let (Some((_, frontend)), Some(revnat_id)) = (want, revnat_of(key)) else {
                continue;
            };
            let current = self.services.get(key).unwrap_or(&no_slots);
            let ids: Vec<u32> = frontend.active().filter_map(backend_of).collect();
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
            let slot0 = ServiceValue { count, ..base };
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

    fn has_service_key(&self, key: &ServiceKey) -> bool {
        match decode_service_key(key) {
            Some((frontend, slot)) => self
                .services
                .get(&frontend)
                .is_some_and(|slots| slots.contains_key(&slot)),
            None => self.foreign_services.contains(key),
        }
    }

    fn insert_service(&mut self, key: ServiceKey, value: ServiceValue) {
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
    fn apply(&mut self, op: &MapOp) {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn fk(last: u8, port: u16) -> FrontendKey {
        FrontendKey {
            addr: Ipv4Addr::new(10, 96, 0, last),
            port,
            proto: Proto::Tcp,
        }
    }

    fn be(last: u8) -> BackendAddr {
        BackendAddr {
            addr: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
            proto: Proto::Tcp,
        }
    }

    const A: BackendState = BackendState::Active;
    const T: BackendState = BackendState::Terminating;

    fn frontend(backends: &[(BackendAddr, BackendState)]) -> Frontend {
        Frontend {
            service: "default/test".into(),
            kind: FrontendKind::ClusterIp,
            flags: 0,
            affinity_timeout_s: 0,
            backends: backends.iter().copied().collect(),
        }
    }

    fn desired(frontends: Vec<(FrontendKey, Frontend)>) -> DesiredState {
        DesiredState {
            frontends: frontends.into_iter().collect(),
        }
    }

    /// The maps as the datapath sees them. Every op is checked against the readers'
    /// invariants, so each test also proves its plan's ordering safe.
    #[derive(Default)]
    struct FakeMaps {
        services: HashMap<ServiceKey, ServiceValue>,
        backends: BTreeMap<u32, Backend>,
        revnats: BTreeMap<u32, RevNat>,
        l2: BTreeSet<u32>,
    }

    impl FakeMaps {
        fn apply(&mut self, ops: &[MapOp]) {
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    MapOp::PutBackend { id, backend } => {
                        assert!(id != 0 && id < MAX_BACKENDS);
                        self.backends.insert(id, backend);
                    }
                    MapOp::PutRevNat { id, revnat } => {
                        assert!(id != 0);
                        self.revnats.insert(u32::from(id), revnat);
                    }
                    MapOp::PutService { key, value } => {
                        self.services.insert(key, value);
                    }
                    MapOp::DeleteService { key } => {
                        assert!(
                            self.services.remove(&key).is_some(),
                            "op {i}: {op:?} absent"
                        );
                    }
                    MapOp::DeleteRevNat { id } => {
                        assert!(
                            self.revnats.remove(&u32::from(id)).is_some(),
                            "op {i}: {op:?} absent"
                        );
                    }
                    MapOp::DeleteBackend { id } => {
                        assert!(self.backends.remove(&id).is_some(), "op {i}: {op:?} absent");
                    }
                    MapOp::PutL2 { addr } => {
                        assert!(self.l2.insert(addr), "op {i}: {op:?} already there");
                    }
                    MapOp::DeleteL2 { addr } => {
                        assert!(self.l2.remove(&addr), "op {i}: {op:?} absent");
                    }
                }
                self.check_readers(&format!("after op {i} {op:?}"));
            }
        }

        /// A reader of any published frontend finds all its slots, backends and revnat.
        fn check_readers(&self, when: &str) {
            for (key, value) in &self.services {
                if key.slot != 0 {
                    continue;
                }
                assert!(
                    self.revnats.contains_key(&u32::from(value.revnat_id)),
                    "{when}: revnat {} missing",
                    value.revnat_id
                );
                for slot in 1..=value.count {
                    let k = ServiceKey { slot, ..*key };
                    let Some(v) = self.services.get(&k) else {
                        panic!("{when}: slot {slot} of {key:?} missing");
                    };
                    assert!(
                        self.backends.contains_key(&v.backend_id),
                        "{when}: backend {} missing",
                        v.backend_id
                    );
                }
            }
        }

        /// What a reader sees: frontend → (flags, timeout, active backends, revnat value).
        fn describe(&self) -> BTreeMap<FrontendKey, (u32, u32, Vec<BackendAddr>, RevNat)> {
            let mut out = BTreeMap::new();
            for (key, value) in &self.services {
                let Some((frontend, 0)) = decode_service_key(key) else {
                    continue;
                };
                let active = (1..=value.count)
                    .map(|slot| {
                        let v = self.services[&ServiceKey { slot, ..*key }];
                        decode_backend(&self.backends[&v.backend_id]).expect("known proto")
                    })
                    .collect();
                let revnat = self.revnats[&u32::from(value.revnat_id)];
                out.insert(
                    frontend,
                    (value.flags, value.affinity_timeout_s, active, revnat),
                );
            }
            out
        }

        fn expect_exactly(&self, want: &DesiredState) {
            let got = self.describe();
            let expected: BTreeMap<_, _> = want
                .frontends
                .iter()
                .map(|(k, f)| {
                    (
                        *k,
                        (
                            f.flags,
                            f.affinity_timeout_s,
                            f.active().copied().collect(),
                            revnat_value(k),
                        ),
                    )
                })
                .collect();
            assert_eq!(got, expected);
            // Nothing left over: slots = frontends + active backends, one revnat per
            // frontend, exactly the listed backends with their states.
            let slots: usize = want
                .frontends
                .values()
                .map(|f| 1 + f.active().count())
                .sum();
            assert_eq!(self.services.len(), slots);
            assert_eq!(self.revnats.len(), want.frontends.len());
            let l2: BTreeSet<u32> = want
                .frontends
                .iter()
                .filter(|(_, f)| f.flags & svc_flags::L2_ANNOUNCE != 0)
                .map(|(k, _)| u32::from(k.addr).to_be())
                .collect();
            assert_eq!(self.l2, l2, "announced LoadBalancer IPs");
            let mut backends = BTreeMap::new();
            for f in want.frontends.values() {
                for (a, s) in &f.backends {
                    backends
                        .entry(*a)
                        .and_modify(|x: &mut BackendState| *x = (*x).min(*s))
                        .or_insert(*s);
                }
            }
            let got_backends: BTreeMap<_, _> = self
                .backends
                .values()
                .map(|b| {
                    let state = if b.state == backend_state::ACTIVE {
                        A
                    } else {
                        T
                    };
                    (decode_backend(b).expect("known proto"), state)
                })
                .collect();
            assert_eq!(got_backends, backends);
            assert_eq!(self.backends.len(), backends.len(), "one id per backend");
        }

        fn syncer(&self) -> Syncer {
            Syncer::from_maps(
                self.services.iter().map(|(k, v)| (*k, *v)),
                self.backends.iter().map(|(k, v)| (*k, *v)),
                self.revnats.iter().map(|(k, v)| (*k, *v)),
            )
            .with_l2(self.l2.iter().copied())
        }
    }

    /// Plans `want`, applies it to `maps` with the reader checks, and checks the result.
    fn sync(syncer: &mut Syncer, maps: &mut FakeMaps, want: &DesiredState) -> Vec<MapOp> {
        let ops = syncer.plan(want).expect("plan");
        maps.apply(&ops);
        maps.expect_exactly(want);
        ops
    }

    fn skey(f: &FrontendKey, slot: u16) -> ServiceKey {
        service_key(f, slot)
    }

    fn sval(backend_id: u32, count: u16, revnat_id: u16) -> ServiceValue {
        ServiceValue {
            backend_id,
            count,
            revnat_id,
            flags: 0,
            affinity_timeout_s: 0,
        }
    }

    fn lb_ip(port: u16) -> (FrontendKey, Frontend) {
        let key = FrontendKey {
            addr: Ipv4Addr::new(172, 30, 0, 1),
            port,
            proto: Proto::Tcp,
        };
        let fe = Frontend {
            kind: FrontendKind::LoadBalancerIp,
            flags: svc_flags::EXTERNAL | svc_flags::L2_ANNOUNCE,
            ..frontend(&[(be(1), A)])
        };
        (key, fe)
    }

    #[test]
    fn loadbalancer_ips_are_announced_while_a_frontend_uses_them() {
        let addr = u32::from(Ipv4Addr::new(172, 30, 0, 1)).to_be();
        let l2_ops = |ops: &[MapOp]| -> Vec<MapOp> {
            ops.iter()
                .copied()
                .filter(|op| matches!(op, MapOp::PutL2 { .. } | MapOp::DeleteL2 { .. }))
                .collect()
        };
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        // Two ports on one address: one announcement.
        let two = desired(vec![
            lb_ip(80),
            lb_ip(443),
            (fk(1, 80), frontend(&[(be(1), A)])),
        ]);
        let ops = sync(&mut s, &mut maps, &two);
        assert_eq!(l2_ops(&ops), [MapOp::PutL2 { addr }]);
        // The announcement comes after the frontend it belongs to.
        let slot0 = ops
            .iter()
            .position(|op| matches!(op, MapOp::PutService { key, .. } if key.slot == 0))
            .expect("a frontend is published");
        assert!(ops.iter().position(|op| *op == MapOp::PutL2 { addr }) > Some(slot0));
        // One port left: still announced, nothing written for it.
        let one = desired(vec![lb_ip(443), (fk(1, 80), frontend(&[(be(1), A)]))]);
        assert_eq!(l2_ops(&sync(&mut s, &mut maps, &one)), []);
        // A restart rewrites nothing.
        let mut restarted = maps.syncer();
        assert_eq!(restarted.plan(&one).expect("plan"), []);
        // Per-service planning: the last port goes, the address is withdrawn.
        let plan = restarted
            .plan_service("default/test", &BTreeMap::new())
            .expect("plan");
        maps.apply(&plan.ops);
        assert_eq!(l2_ops(&plan.ops), [MapOp::DeleteL2 { addr }]);
        assert!(maps.l2.is_empty());
        // A leftover announcement nobody claims is swept.
        let mut stale = Syncer::new().with_l2([addr]);
        let mut maps = FakeMaps {
            l2: [addr].into(),
            ..FakeMaps::default()
        };
        let ops = sync(&mut stale, &mut maps, &desired(vec![]));
        assert_eq!(ops, [MapOp::DeleteL2 { addr }]);
    }

    #[test]
    fn network_byte_order() {
        let key = service_key(&fk(10, 80), 3);
        assert_eq!(key.addr.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(key.proto, kproxy_common::IPPROTO_TCP);
        assert_eq!(key.slot, 3);
        assert_eq!(decode_service_key(&key), Some((fk(10, 80), 3)));
        let b = backend_value(&be(2), T);
        assert_eq!(b.addr.to_ne_bytes(), [10, 244, 0, 2]);
        assert_eq!(b.port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(b.state, backend_state::TERMINATING);
        assert_eq!(decode_backend(&b), Some(be(2)));
        let r = revnat_value(&fk(10, 443));
        assert_eq!(r.addr.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(r.port.to_ne_bytes(), 443u16.to_be_bytes());
    }

    #[test]
    fn empty_to_state_in_order() {
        let f = fk(1, 80);
        let want = desired(vec![(f, frontend(&[(be(2), A), (be(1), A), (be(3), T)]))]);
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        let ops = sync(&mut s, &mut maps, &want);
        assert_eq!(
            ops,
            [
                MapOp::PutBackend {
                    id: 1,
                    backend: backend_value(&be(1), A)
                },
                MapOp::PutBackend {
                    id: 2,
                    backend: backend_value(&be(2), A)
                },
                MapOp::PutBackend {
                    id: 3,
                    backend: backend_value(&be(3), T)
                },
                MapOp::PutRevNat {
                    id: 1,
                    revnat: revnat_value(&f)
                },
                MapOp::PutService {
                    key: skey(&f, 1),
                    value: sval(1, 0, 1)
                },
                MapOp::PutService {
                    key: skey(&f, 2),
                    value: sval(2, 0, 1)
                },
                MapOp::PutService {
                    key: skey(&f, 0),
                    value: sval(0, 2, 1)
                },
            ]
        );
        assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(1, f)]);
        assert_eq!(
            s.backend_ids().collect::<Vec<_>>(),
            [(1, be(1)), (2, be(2)), (3, be(3))]
        );
    }

    #[test]
    fn flags_and_timeout_in_every_slot() {
        let f = fk(1, 80);
        let mut fe = frontend(&[(be(1), A)]);
        fe.flags = svc_flags::AFFINITY | svc_flags::EXTERNAL;
        fe.affinity_timeout_s = 60;
        let mut s = Syncer::new();
        let ops = s.plan(&desired(vec![(f, fe.clone())])).expect("plan");
        let values: Vec<ServiceValue> = ops
            .iter()
            .filter_map(|op| match op {
                MapOp::PutService { value, .. } => Some(*value),
                _ => None,
            })
            .collect();
        assert_eq!(values.len(), 2);
        for v in values {
            assert_eq!(v.flags, fe.flags);
            assert_eq!(v.affinity_timeout_s, 60);
            assert_eq!(v.revnat_id, 1);
        }
        // Changing the flags rewrites every slot, slot 0 last.
        fe.flags = 0;
        let ops = s.plan(&desired(vec![(f, fe)])).expect("plan");
        let keys: Vec<u16> = ops
            .iter()
            .map(|op| match op {
                MapOp::PutService { key, .. } => key.slot,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(keys, [1, 0]);
    }

    #[test]
    fn planning_twice_is_idempotent() {
        let want = desired(vec![
            (fk(1, 80), frontend(&[(be(1), A), (be(2), T)])),
            (fk(2, 53), frontend(&[])),
        ]);
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        assert!(!sync(&mut s, &mut maps, &want).is_empty());
        assert_eq!(s.plan(&want).expect("plan"), []);
    }

    #[test]
    fn add_and_remove_backend_minimal_ops() {
        let f = fk(1, 80);
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync(
            &mut s,
            &mut maps,
            &desired(vec![(f, frontend(&[(be(1), A), (be(2), A)]))]),
        );

        // A backend sorting last: one backend, one slot, then the count.
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![(f, frontend(&[(be(1), A), (be(2), A), (be(4), A)]))]),
        );
        assert_eq!(
            ops,
            [
                MapOp::PutBackend {
                    id: 3,
                    backend: backend_value(&be(4), A)
                },
                MapOp::PutService {
                    key: skey(&f, 3),
                    value: sval(3, 0, 1)
                },
                MapOp::PutService {
                    key: skey(&f, 0),
                    value: sval(0, 3, 1)
                },
            ]
        );

        // Removing the first one shifts the slots: rewrite them, lower the count, then drop
        // the last slot and finally the backend.
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![(f, frontend(&[(be(2), A), (be(4), A)]))]),
        );
        assert_eq!(
            ops,
            [
                MapOp::PutService {
                    key: skey(&f, 1),
                    value: sval(2, 0, 1)
                },
                MapOp::PutService {
                    key: skey(&f, 2),
                    value: sval(3, 0, 1)
                },
                MapOp::PutService {
                    key: skey(&f, 0),
                    value: sval(0, 2, 1)
                },
                MapOp::DeleteService { key: skey(&f, 3) },
                MapOp::DeleteBackend { id: 1 },
            ]
        );
    }

    #[test]
    fn backend_turning_terminating() {
        let f = fk(1, 80);
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync(
            &mut s,
            &mut maps,
            &desired(vec![(f, frontend(&[(be(1), A), (be(2), A)]))]),
        );
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![(f, frontend(&[(be(1), A), (be(2), T)]))]),
        );
        assert_eq!(
            ops,
            [
                MapOp::PutBackend {
                    id: 2,
                    backend: backend_value(&be(2), T)
                },
                MapOp::PutService {
                    key: skey(&f, 0),
                    value: sval(0, 1, 1)
                },
                MapOp::DeleteService { key: skey(&f, 2) },
            ]
        );
        // Gone for good: only the backend entry goes.
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![(f, frontend(&[(be(1), A)]))]),
        );
        assert_eq!(ops, [MapOp::DeleteBackend { id: 2 }]);
    }

    #[test]
    fn remove_frontend_order() {
        let (f1, f2) = (fk(1, 80), fk(2, 80));
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync(
            &mut s,
            &mut maps,
            &desired(vec![
                (f1, frontend(&[(be(1), A)])),
                (f2, frontend(&[(be(2), A), (be(3), A), (be(4), T)])),
            ]),
        );
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![(f1, frontend(&[(be(1), A)]))]),
        );
        assert_eq!(
            ops,
            [
                MapOp::DeleteService { key: skey(&f2, 0) },
                MapOp::DeleteService { key: skey(&f2, 1) },
                MapOp::DeleteService { key: skey(&f2, 2) },
                MapOp::DeleteRevNat { id: 2 },
                MapOp::DeleteBackend { id: 2 },
                MapOp::DeleteBackend { id: 3 },
                MapOp::DeleteBackend { id: 4 },
            ]
        );
        assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(1, f1)]);
    }

    #[test]
    fn ids_are_stable_and_reused() {
        let fronts = [fk(1, 80), fk(2, 80), fk(3, 80)];
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        let all = |skip: Option<usize>, extra: Option<(FrontendKey, BackendAddr)>| {
            let mut v: Vec<_> = fronts
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != skip)
                .map(|(i, f)| (*f, frontend(&[(be(i as u8 + 1), A)])))
                .collect();
            v.extend(extra.map(|(f, b)| (f, frontend(&[(b, A)]))));
            desired(v)
        };
        sync(&mut s, &mut maps, &all(None, None));
        let ids = |s: &Syncer| s.revnat_ids().collect::<BTreeMap<_, _>>();
        assert_eq!(
            ids(&s),
            [(1, fronts[0]), (2, fronts[1]), (3, fronts[2])].into()
        );

        // Removing the middle one keeps the others' ids...
        sync(&mut s, &mut maps, &all(Some(1), None));
        assert_eq!(ids(&s), [(1, fronts[0]), (3, fronts[2])].into());
        // ... and its ids go to the next new frontend and backend.
        let f9 = fk(9, 80);
        let ops = sync(&mut s, &mut maps, &all(Some(1), Some((f9, be(9)))));
        assert_eq!(ids(&s), [(1, fronts[0]), (2, f9), (3, fronts[2])].into());
        assert!(ops.contains(&MapOp::PutBackend {
            id: 2,
            backend: backend_value(&be(9), A)
        }));
        assert_eq!(
            s.backend_ids().collect::<BTreeMap<_, _>>(),
            [(1, be(1)), (2, be(9)), (3, be(3))].into()
        );
    }

    #[test]
    fn ids_are_not_reused_within_one_plan() {
        let (f1, f2) = (fk(1, 80), fk(2, 80));
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync(
            &mut s,
            &mut maps,
            &desired(vec![(f1, frontend(&[(be(1), A)]))]),
        );
        // f1 and be(1) go while f2 and be(2) come: new ids, since slot entries written
        // before the deletes still carry the old ones.
        sync(
            &mut s,
            &mut maps,
            &desired(vec![(f2, frontend(&[(be(2), A)]))]),
        );
        assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(2, f2)]);
        assert_eq!(s.backend_ids().collect::<Vec<_>>(), [(2, be(2))]);
        // Freed afterwards: the next new ones get id 1.
        let f3 = fk(3, 80);
        sync(
            &mut s,
            &mut maps,
            &desired(vec![
                (f2, frontend(&[(be(2), A)])),
                (f3, frontend(&[(be(3), A)])),
            ]),
        );
        assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(2, f2), (1, f3)]);
    }

    #[test]
    fn shared_backend_lives_while_any_frontend_lists_it() {
        let (f1, f2) = (fk(1, 80), fk(2, 80));
        let shared = be(5);
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![
                (f1, frontend(&[(shared, A)])),
                (f2, frontend(&[(shared, T)])),
            ]),
        );
        // One entry, active because one frontend still sends it new flows.
        assert_eq!(
            ops.iter()
                .filter(|op| matches!(op, MapOp::PutBackend { .. }))
                .count(),
            1
        );
        assert_eq!(s.backend_ids().collect::<Vec<_>>(), [(1, shared)]);

        // f1 goes; f2 still lists it (terminating): it stays, now terminating.
        let ops = sync(
            &mut s,
            &mut maps,
            &desired(vec![(f2, frontend(&[(shared, T)]))]),
        );
        assert!(ops.contains(&MapOp::PutBackend {
            id: 1,
            backend: backend_value(&shared, T)
        }));
        assert!(
            !ops.iter()
                .any(|op| matches!(op, MapOp::DeleteBackend { .. }))
        );
        // f2 drops it: now it goes.
        let ops = sync(&mut s, &mut maps, &desired(vec![(f2, frontend(&[]))]));
        assert_eq!(ops, [MapOp::DeleteBackend { id: 1 }]);
    }

    fn sample() -> DesiredState {
        let mut ext = frontend(&[(be(1), A), (be(3), A)]);
        ext.flags = svc_flags::EXTERNAL | svc_flags::AFFINITY;
        ext.affinity_timeout_s = 600;
        let mut udp = fk(3, 53);
        udp.proto = Proto::Udp;
        let udp_be = BackendAddr {
            proto: Proto::Udp,
            port: 53,
            ..be(7)
        };
        desired(vec![
            (fk(1, 80), frontend(&[(be(1), A), (be(2), A), (be(3), T)])),
            (fk(2, 443), ext),
            (udp, frontend(&[(udp_be, A)])),
            // Same address and port as the UDP one, other protocol: its own revnat id.
            (fk(3, 53), frontend(&[(be(7), A)])),
            (fk(4, 80), frontend(&[])),
        ])
    }

    #[test]
    fn from_maps_round_trip_is_empty_plan() {
        let want = sample();
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync(&mut s, &mut maps, &want);

        let mut restarted = maps.syncer();
        assert_eq!(restarted.plan(&want).expect("plan"), []);
        assert_eq!(restarted, s, "restored mirror, ids, allocators and owners");
        let mut next = want.clone();
        next.frontends.remove(&fk(1, 80));
        next.frontends.insert(fk(5, 80), frontend(&[(be(9), A)]));
        let ops = restarted.plan(&next).expect("plan");
        assert_eq!(ops, s.plan(&next).expect("plan"), "same ids either way");
    }

    #[test]
    fn recovers_from_an_interrupted_plan() {
        let before = sample();
        let mut after = sample();
        after.frontends.remove(&fk(1, 80));
        after
            .frontends
            .insert(fk(5, 80), frontend(&[(be(9), A), (be(1), A)]));
        after.frontends.insert(fk(2, 443), frontend(&[(be(3), A)]));

        let mut s = Syncer::new();
        let mut base = FakeMaps::default();
        sync(&mut s, &mut base, &before);
        let ops = s.plan(&after).expect("plan");
        // Crash after any prefix of the plan, restart from the maps, sync again.
        for cut in 0..=ops.len() {
            let mut maps = FakeMaps {
                services: base.services.clone(),
                backends: base.backends.clone(),
                revnats: base.revnats.clone(),
                l2: base.l2.clone(),
            };
            maps.apply(&ops[..cut]);
            let mut restarted = maps.syncer();
            sync(&mut restarted, &mut maps, &after);
            assert_eq!(restarted.plan(&after).expect("plan"), [], "cut {cut}");
        }
    }

    #[test]
    fn from_maps_cleans_leftovers() {
        let f = fk(1, 80);
        let mut maps = FakeMaps::default();
        let mut s = Syncer::new();
        let want = desired(vec![(f, frontend(&[(be(1), A)]))]);
        sync(&mut s, &mut maps, &want);
        // Junk: a slot beyond the count, an orphan backend, an orphan revnat, a key with an
        // unknown protocol and an unpublished frontend's slot.
        maps.services.insert(skey(&f, 2), sval(1, 0, 1));
        maps.backends.insert(40, backend_value(&be(40), A));
        maps.revnats.insert(30, revnat_value(&fk(30, 80)));
        let mut icmp = skey(&f, 0);
        icmp.proto = 1;
        maps.services.insert(icmp, sval(0, 0, 1));
        maps.services.insert(skey(&fk(7, 80), 1), sval(1, 0, 7));

        let mut restarted = maps.syncer();
        let ops = restarted.plan(&want).expect("plan");
        maps.apply(&ops);
        maps.expect_exactly(&want);
        assert_eq!(restarted.plan(&want).expect("plan"), []);
        // The leftovers' ids are free again.
        assert!(restarted.revnat_alloc.free.contains(&30));
        assert!(restarted.backend_alloc.free.contains(&40));
    }

    #[test]
    fn capacity_errors_leave_state_unchanged() {
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        let small = sample();
        sync(&mut s, &mut maps, &small);
        let before = s.clone();

        let backend_n = |n: u32| BackendAddr {
            addr: Ipv4Addr::from(0x0a00_0000 + n),
            port: 80,
            proto: Proto::Tcp,
        };
        let frontend_n = |n: u32| FrontendKey {
            addr: Ipv4Addr::from(0x6400_0000 + n),
            port: 80,
            proto: Proto::Tcp,
        };

        // More distinct backends than ids.
        let mut big = small.clone();
        for f in 0..2 {
            let list: Vec<_> = (0..40_000)
                .map(|i| (backend_n(f * 40_000 + i), A))
                .collect();
            big.frontends.insert(frontend_n(f), frontend(&list));
        }
        assert!(matches!(
            s.plan(&big),
            Err(SyncError::TooManyBackends { .. })
        ));
        assert_eq!(s, before);

        // More frontends than revnat ids.
        let mut big = small.clone();
        for f in 0..MAX_SERVICES {
            big.frontends.insert(frontend_n(f), frontend(&[]));
        }
        assert!(matches!(
            s.plan(&big),
            Err(SyncError::TooManyFrontends { .. })
        ));
        assert_eq!(s, before);

        // More slots than the service map holds (few backends, shared by many frontends).
        let mut big = small.clone();
        let list: Vec<_> = (0..60_000).map(|i| (backend_n(i), A)).collect();
        let shared = frontend(&list);
        for f in 0..5 {
            big.frontends.insert(frontend_n(f), shared.clone());
        }
        let err = s.plan(&big).expect_err("too many slots");
        assert!(matches!(err, SyncError::TooManySlots { .. }), "{err}");
        assert_eq!(s, before);

        assert_eq!(s.plan(&small).expect("plan"), []);
    }

    #[test]
    fn one_change_among_10000_services_is_a_handful_of_ops() {
        let mut want = DesiredState::default();
        for n in 0..10_000u32 {
            let key = FrontendKey {
                addr: Ipv4Addr::from(0x0a60_0000 + n),
                port: 80,
                proto: Proto::Tcp,
            };
            let backends: Vec<_> = (0..3)
                .map(|b| {
                    (
                        BackendAddr {
                            addr: Ipv4Addr::from(0x0af4_0000 + n * 4 + b),
                            port: 8080,
                            proto: Proto::Tcp,
                        },
                        A,
                    )
                })
                .collect();
            want.frontends.insert(key, frontend(&backends));
        }
        let mut s = Syncer::new();
        let first = s.plan(&want).expect("plan");
        assert_eq!(first.len(), 10_000 * (3 + 1 + 1 + 3));
        assert_eq!(s.plan(&want).expect("plan"), []);

        // One service: one backend replaced by another.
        let key = FrontendKey {
            addr: Ipv4Addr::from(0x0a60_0000 + 1234),
            port: 80,
            proto: Proto::Tcp,
        };
        let fe = want.frontends.get_mut(&key).expect("frontend");
        let old = *fe.backends.keys().nth(1).expect("backend");
        fe.backends.remove(&old);
        fe.backends.insert(
            BackendAddr {
                addr: Ipv4Addr::new(192, 0, 2, 1),
                ..old
            },
            A,
        );
        let ops = s.plan(&want).expect("plan");
        assert!(ops.len() < 10, "{} ops: {ops:?}", ops.len());
        assert!(!ops.is_empty());
    }

    // === per-service plans ===

    fn svc_frontends(list: &[(FrontendKey, Frontend)]) -> BTreeMap<FrontendKey, Frontend> {
        list.iter().cloned().collect()
    }

    /// Plans one service, applies it with the reader checks, returns the plan.
    fn sync_svc(
        s: &mut Syncer,
        maps: &mut FakeMaps,
        service: &str,
        list: &[(FrontendKey, Frontend)],
    ) -> ServicePlan {
        let plan = s.plan_service(service, &svc_frontends(list)).expect("plan");
        maps.apply(&plan.ops);
        plan
    }

    #[test]
    fn service_plans_share_backends_across_services() {
        let (f1, f2) = (fk(1, 80), fk(2, 80));
        let shared = be(5);
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        let a = sync_svc(&mut s, &mut maps, "ns/a", &[(f1, frontend(&[(shared, T)]))]);
        assert!(a.ops.contains(&MapOp::PutBackend {
            id: 1,
            backend: backend_value(&shared, T)
        }));
        // b lists it active: the one entry turns active, no second entry.
        let b = sync_svc(
            &mut s,
            &mut maps,
            "ns/b",
            &[(f2, frontend(&[(shared, A), (be(6), A)]))],
        );
        let puts: Vec<_> = b
            .ops
            .iter()
            .filter_map(|op| match op {
                MapOp::PutBackend { id, backend } => Some((*id, *backend)),
                _ => None,
            })
            .collect();
        assert_eq!(
            puts,
            [
                (1, backend_value(&shared, A)),
                (2, backend_value(&be(6), A))
            ]
        );
        // b goes: the shared backend stays for a (terminating again), be(6) goes.
        let gone = sync_svc(&mut s, &mut maps, "ns/b", &[]);
        assert_eq!(gone.released, 1);
        assert!(gone.ops.contains(&MapOp::PutBackend {
            id: 1,
            backend: backend_value(&shared, T)
        }));
        assert!(gone.ops.contains(&MapOp::DeleteBackend { id: 2 }));
        assert!(!gone.ops.contains(&MapOp::DeleteBackend { id: 1 }));
        maps.expect_exactly(&desired(vec![(f1, frontend(&[(shared, T)]))]));
        // a goes: nothing left.
        sync_svc(&mut s, &mut maps, "ns/a", &[]);
        maps.expect_exactly(&DesiredState::default());
        assert!(s.programmed.is_empty() && s.owned.is_empty() && s.backend_refs.is_empty());
    }

    #[test]
    fn service_removal_deletes_its_frontends_in_order() {
        let (f1, f2, f3) = (fk(1, 80), fk(1, 443), fk(2, 80));
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync_svc(
            &mut s,
            &mut maps,
            "ns/a",
            &[
                (f1, frontend(&[(be(1), A), (be(2), A)])),
                (f2, frontend(&[(be(1), A)])),
            ],
        );
        sync_svc(&mut s, &mut maps, "ns/b", &[(f3, frontend(&[(be(1), A)]))]);
        // a keeps f2 only: f1 is unpublished first, then its slots, then its revnat.
        let plan = sync_svc(&mut s, &mut maps, "ns/a", &[(f2, frontend(&[(be(1), A)]))]);
        assert_eq!(
            plan.ops,
            [
                MapOp::DeleteService { key: skey(&f1, 0) },
                MapOp::DeleteService { key: skey(&f1, 1) },
                MapOp::DeleteService { key: skey(&f1, 2) },
                MapOp::DeleteRevNat { id: 1 },
                MapOp::DeleteBackend { id: 2 },
            ]
        );
        assert_eq!(s.owned["ns/a"].iter().copied().collect::<Vec<_>>(), [f2]);
        // Re-planning an unchanged service writes nothing.
        assert_eq!(
            sync_svc(&mut s, &mut maps, "ns/b", &[(f3, frontend(&[(be(1), A)]))]).ops,
            []
        );
    }

    #[test]
    fn conflicting_frontend_is_reported_and_taken_once_released() {
        let (vip, other) = (fk(1, 80), fk(2, 80));
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync_svc(&mut s, &mut maps, "ns/a", &[(vip, frontend(&[(be(1), A)]))]);
        let b_list = [
            (vip, frontend(&[(be(2), A)])),
            (other, frontend(&[(be(2), A)])),
        ];
        let plan = sync_svc(&mut s, &mut maps, "ns/b", &b_list);
        assert_eq!(
            plan.conflicts,
            [Conflict {
                frontend: vip,
                owner: "ns/a".into()
            }]
        );
        // a's frontend is untouched, b's other frontend is programmed.
        let mut want = desired(vec![(vip, frontend(&[(be(1), A)]))]);
        want.frontends.insert(other, frontend(&[(be(2), A)]));
        maps.expect_exactly(&want);
        // a goes; b planned again takes the address.
        assert_eq!(sync_svc(&mut s, &mut maps, "ns/a", &[]).released, 1);
        let plan = sync_svc(&mut s, &mut maps, "ns/b", &b_list);
        assert!(plan.conflicts.is_empty());
        maps.expect_exactly(&desired(b_list.to_vec()));
    }

    #[test]
    fn service_capacity_error_leaves_state_unchanged() {
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        sync_svc(
            &mut s,
            &mut maps,
            "ns/a",
            &[(fk(1, 80), frontend(&[(be(1), A)]))],
        );
        let before = s.clone();
        let list: Vec<_> = (0..MAX_BACKENDS)
            .map(|n| {
                (
                    BackendAddr {
                        addr: Ipv4Addr::from(0x0a00_0000 + n),
                        port: 80,
                        proto: Proto::Tcp,
                    },
                    A,
                )
            })
            .collect();
        let err = s
            .plan_service("ns/big", &svc_frontends(&[(fk(2, 80), frontend(&list))]))
            .expect_err("too many backends");
        assert!(matches!(err, SyncError::TooManyBackends { .. }), "{err}");
        assert_eq!(s, before);
        // The other service keeps being programmed.
        let plan = sync_svc(
            &mut s,
            &mut maps,
            "ns/c",
            &[(fk(3, 80), frontend(&[(be(3), A)]))],
        );
        assert!(!plan.ops.is_empty());
    }

    #[test]
    fn restart_with_service_plans_and_sweep() {
        let mut s = Syncer::new();
        let mut maps = FakeMaps::default();
        let a = [(fk(1, 80), frontend(&[(be(1), A), (be(2), T)]))];
        let b = [(fk(2, 80), frontend(&[(be(2), A)]))];
        let c = [(fk(3, 80), frontend(&[(be(3), T), (be(4), A)]))];
        for (name, list) in [("ns/a", &a[..]), ("ns/b", &b[..]), ("ns/c", &c[..])] {
            sync_svc(&mut s, &mut maps, name, list);
        }
        // Unchanged cluster: zero writes.
        let mut r = maps.syncer();
        for (name, list) in [("ns/a", &a[..]), ("ns/b", &b[..]), ("ns/c", &c[..])] {
            assert_eq!(sync_svc(&mut r, &mut maps, name, list).ops, [], "{name}");
        }
        assert_eq!(r.sweep().expect("sweep"), []);
        assert_eq!(r, s);
        // c deleted while kproxy was down: the sweep removes it, with its terminating
        // backend that no slot showed.
        let mut r = maps.syncer();
        for (name, list) in [("ns/a", &a[..]), ("ns/b", &b[..])] {
            assert_eq!(sync_svc(&mut r, &mut maps, name, list).ops, [], "{name}");
        }
        let ops = r.sweep().expect("sweep");
        maps.apply(&ops);
        let mut want = desired(a.to_vec());
        want.frontends.extend(b.iter().cloned());
        maps.expect_exactly(&want);
        assert!(ops.contains(&MapOp::DeleteBackend { id: 3 }), "{ops:?}");
    }

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn service_plans_match_the_whole_state_plan_on_random_inputs() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut services: BTreeMap<String, Vec<(FrontendKey, Frontend)>> = BTreeMap::new();
            let (mut inc, mut inc_maps) = (Syncer::new(), FakeMaps::default());
            let (mut whole, mut whole_maps) = (Syncer::new(), FakeMaps::default());
            for step in 0..60 {
                let n = rng.below(8);
                let name = format!("ns/s{n}");
                let list: Vec<_> = if rng.below(4) == 0 {
                    Vec::new()
                } else {
                    // Each service has its own addresses; backends come from a small
                    // shared pool, so services share them.
                    (0..=rng.below(3))
                        .map(|p| {
                            let key =
                                fk(u8::try_from(n).unwrap() + 1, 80 + u16::try_from(p).unwrap());
                            let bes: Vec<_> = (0..rng.below(5))
                                .map(|_| {
                                    let state = if rng.below(3) == 0 { T } else { A };
                                    (be(u8::try_from(rng.below(10)).unwrap() + 1), state)
                                })
                                .collect();
                            let mut fe = frontend(&bes);
                            fe.service = name.clone();
                            (key, fe)
                        })
                        .collect()
                };
                sync_svc(&mut inc, &mut inc_maps, &name, &list);
                if list.is_empty() {
                    services.remove(&name);
                } else {
                    services.insert(name, list);
                }
                let want = desired(services.values().flatten().cloned().collect());
                sync(&mut whole, &mut whole_maps, &want);
                inc_maps.expect_exactly(&want);
                assert_eq!(
                    inc_maps.describe(),
                    whole_maps.describe(),
                    "seed {seed} step {step}"
                );
                // The two planners agree on what they remember.
                assert_eq!(
                    whole.plan(&want).expect("plan"),
                    [],
                    "seed {seed} step {step}"
                );
                assert_eq!(
                    inc.clone().plan(&want).expect("plan"),
                    [],
                    "seed {seed} step {step}"
                );
            }
            // A restart then every service planned and a sweep: zero writes.
            let mut r = inc_maps.syncer();
            for (name, list) in &services {
                assert_eq!(sync_svc(&mut r, &mut inc_maps, name, list).ops, []);
            }
            assert_eq!(r.sweep().expect("sweep"), [], "seed {seed}");
        }
    }
}
