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
//! 2. revnat entries of new frontends; affinity membership entries that go;
//! 3. per new or changed frontend: backend slots, a new Maglev table (in a free block: the
//!    live one is never rewritten), then slot 0 (which publishes the count and the table),
//!    then the slots beyond the new count; the old table's block is free after the plan;
//!    then new affinity membership entries;
//! 4. removed frontends: slot 0 first (which unpublishes it), its slots, its affinity
//!    membership, its revnat entry;
//! 5. backends nothing references any more.
//!
//! Ids are freed only after the plan that deletes them, so a plan never reuses an id that an
//! entry written earlier in the same plan could still reference.
//!
//! [`DesiredState`]: crate::model::DesiredState

mod codec;
mod ids;
mod mirror;
mod plan;
mod restore;
mod srcrange;
#[cfg(test)]
mod tests;
mod vips;

use std::collections::{BTreeMap, BTreeSet};

use kproxy_common::{
    AffinityMatchKey, Backend, MAX_BACKENDS, MAX_SERVICES, MaglevBucket, RevNat, ServiceKey,
    ServiceValue,
};

pub use self::codec::{
    backend_value, decode_backend, decode_service_key, revnat_value, service_key,
};
use self::ids::IdAlloc;
use crate::{
    maglev::BlockAlloc,
    model::{BackendAddr, BackendState, Frontend, FrontendKey, LbAlgorithm},
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
    /// A service address (network byte order) and its `vip_flags`.
    PutVip {
        addr: u32,
        flags: u32,
    },
    DeleteVip {
        addr: u32,
    },
    /// Four entries of the flat Maglev table array.
    PutMaglev {
        bucket: u32,
        value: MaglevBucket,
    },
    PutAffinityMatch {
        key: AffinityMatchKey,
    },
    DeleteAffinityMatch {
        key: AffinityMatchKey,
    },
    /// A `loadBalancerSourceRanges` entry (LPM trie: prefix length and key data).
    PutSrcRange {
        prefix_len: u32,
        key: kproxy_common::SrcRangeKey,
    },
    DeleteSrcRange {
        prefix_len: u32,
        key: kproxy_common::SrcRangeKey,
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
    #[error("{needed} service addresses, the datapath holds at most {max}")]
    TooManyVips { needed: usize, max: u32 },
    #[error("{needed} affinity membership entries needed, the datapath holds {max}")]
    TooManyAffinityMembers { needed: usize, max: u32 },
    #[error("{needed} loadBalancerSourceRanges entries needed, the datapath holds {max}")]
    TooManySourceRanges { needed: usize, max: u32 },
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
    /// The service-address map (network byte order → `vip_flags`).
    vips: BTreeMap<u32, u32>,
    /// The algorithm of frontends whose Service does not choose one (`--lb-algorithm`).
    lb_default: LbAlgorithm,
    /// The cluster's hash seed the Maglev tables are generated from.
    seed: u64,
    /// The Maglev table each frontend's slot 0 publishes.
    tables: BTreeMap<FrontendKey, Table>,
    maglev_alloc: BlockAlloc,
    /// The affinity membership map: revnat id → backend ids.
    affinity_match: BTreeMap<u16, BTreeSet<u32>>,
    affinity_match_entries: usize,
    /// The source-range map: revnat id → ranges.
    src_ranges: srcrange::SrcRanges,
    src_range_entries: usize,
    /// Frontends that should use Maglev but pick at random: the table array had no room
    /// for their table when they were last planned.
    maglev_fallbacks: BTreeSet<FrontendKey>,
}

/// A Maglev table in the flat array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Table {
    /// First entry.
    offset: u32,
    /// Size class (`kproxy_common::MAGLEV_SIZES`).
    class: u8,
    /// What it was generated from ([`table_fingerprint`]); 0 when unknown (restored under
    /// another seed), which never matches.
    fingerprint: u64,
}

/// A digest of everything a Maglev table's content depends on: the seed, the size and the
/// active backends with their ids.
fn table_fingerprint(seed: u64, class: u8, active: &[(BackendAddr, u32)]) -> u64 {
    let mut bytes = Vec::with_capacity(1 + active.len() * 11);
    bytes.push(class);
    for (addr, id) in active {
        bytes.extend_from_slice(&addr.addr.octets());
        bytes.extend_from_slice(&addr.port.to_be_bytes());
        bytes.push(addr.proto.ip_proto());
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    crate::maglev::hash64(seed, &bytes) | 1
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
    /// Frontends of the service that should use Maglev but got no table (the array is
    /// full): they pick backends at random until a plan finds room.
    pub maglev_fallbacks: Vec<FrontendKey>,
    /// The plan freed Maglev table blocks: a service waiting for room may get it now.
    pub maglev_freed: bool,
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
            vips: BTreeMap::new(),
            lb_default: LbAlgorithm::Random,
            seed: 0,
            tables: BTreeMap::new(),
            maglev_alloc: BlockAlloc::new(),
            affinity_match: BTreeMap::new(),
            affinity_match_entries: 0,
            src_ranges: BTreeMap::new(),
            src_range_entries: 0,
            maglev_fallbacks: BTreeSet::new(),
        }
    }

    /// The default algorithm and the hash seed. Restored Maglev tables are kept only if
    /// `tables_valid` (the maps were written under this seed); otherwise the next plan
    /// writes each one again.
    #[must_use]
    pub fn with_lb(mut self, default: LbAlgorithm, seed: u64, tables_valid: bool) -> Self {
        self.lb_default = default;
        self.seed = seed;
        self.restore_tables(tables_valid);
        self
    }

    /// Frontends that should use Maglev but pick at random for lack of table room.
    pub fn maglev_fallbacks(&self) -> impl Iterator<Item = &FrontendKey> {
        self.maglev_fallbacks.iter()
    }

    /// Whether a frontend balances new flows with Maglev.
    fn uses_maglev(&self, frontend: &Frontend) -> bool {
        frontend.flags & kproxy_common::svc_flags::EXTERNAL != 0
            && frontend.algorithm.unwrap_or(self.lb_default) == LbAlgorithm::Maglev
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

    /// What `key` was last planned to be.
    #[must_use]
    pub fn frontend(&self, key: &FrontendKey) -> Option<&Frontend> {
        self.programmed.get(key).map(|p| &p.frontend)
    }
}
