//! The pinned maps, shared with userspace. Each is named by its kproxy-common constant (the
//! `#[map]` attribute takes the name only as a literal, which `kproxy_common::map_name!`
//! supplies); maps are pinned by name so a restarted kproxy reuses them, with their state
//! (services, connection tracking, counters).

use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use kproxy_common::{
    AffinityKey, AffinityMatchKey, AffinityValue, Backend, Counter, CtKey, CtValue, DROPS_LEN,
    IFSTATS_LEN, LbCounter, MAGLEV_ENTRIES, MAGLEV_IDS_PER_BUCKET, MAX_AFFINITY_ENTRIES,
    MAX_AFFINITY_MATCH_ENTRIES, MAX_BACKENDS, MAX_CT_ENTRIES, MAX_L2_ENTRIES, MAX_SERVICE_SLOTS,
    MAX_SERVICES, MAX_SOCK_REVNAT_ENTRIES, MaglevBucket, RevNat, ServiceKey, ServiceValue,
    SockRevNatKey, SockRevNatValue, config, map_name,
};
use kproxy_common::{FragKey, FragPorts, MAX_FRAG_ENTRIES};

/// A `#[map]` static whose name is the first token: `map_name!(MAP_X => named_map! { .. })`.
macro_rules! named_map {
    ($name:literal, $(#[$attr:meta])* $vis:vis static $id:ident: $ty:ty = $init:expr;) => {
        $(#[$attr])*
        #[::aya_ebpf::macros::map(name = $name)]
        $vis static $id: $ty = $init;
    };
}
pub(crate) use named_map;

map_name!(MAP_IFSTATS => named_map! {
    pub static IFSTATS: PerCpuArray<Counter> = PerCpuArray::pinned(IFSTATS_LEN, 0);
});

map_name!(MAP_DROPS => named_map! {
    pub static DROPS: PerCpuArray<Counter> = PerCpuArray::pinned(DROPS_LEN, 0);
});

map_name!(MAP_HOST_ROUTES => named_map! {
    pub static HOST_ROUTES: HashMap<u32, kproxy_common::HostRoute> =
        HashMap::pinned(kproxy_common::MAX_HOST_ROUTES, 0);
});

map_name!(MAP_CONFIG => named_map! {
    pub static CONFIG: Array<u32> = Array::pinned(config::LEN, 0);
});

map_name!(MAP_SERVICES => named_map! {
    pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICE_SLOTS, 0);
});

map_name!(MAP_BACKENDS => named_map! {
    pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(MAX_BACKENDS, 0);
});

map_name!(MAP_REVNAT => named_map! {
    pub static REVNAT: HashMap<u32, RevNat> = HashMap::pinned(MAX_SERVICES, 0);
});

map_name!(MAP_FRAGS => named_map! {
    pub static FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::pinned(MAX_FRAG_ENTRIES, 0);
});

map_name!(MAP_CT => named_map! {
    pub static CT: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(MAX_CT_ENTRIES, 0);
});

map_name!(MAP_L2 => named_map! {
    pub static L2: HashMap<u32, u32> = HashMap::pinned(MAX_L2_ENTRIES, 0);
});

map_name!(MAP_AFFINITY => named_map! {
    pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
        LruHashMap::pinned(MAX_AFFINITY_ENTRIES, 0);
});

map_name!(MAP_SOCK_REVNAT => named_map! {
    pub static SOCK_REVNAT: LruHashMap<SockRevNatKey, SockRevNatValue> =
        LruHashMap::pinned(MAX_SOCK_REVNAT_ENTRIES, 0);
});

map_name!(MAP_SVC_STATS => named_map! {
    pub static SVC_STATS: PerCpuArray<LbCounter> = PerCpuArray::pinned(MAX_SERVICES, 0);
});

map_name!(MAP_BACKEND_STATS => named_map! {
    pub static BACKEND_STATS: PerCpuArray<LbCounter> = PerCpuArray::pinned(MAX_BACKENDS, 0);
});

map_name!(MAP_MAGLEV => named_map! {
    pub static MAGLEV: Array<MaglevBucket> =
        Array::pinned(MAGLEV_ENTRIES / MAGLEV_IDS_PER_BUCKET, 0);
});

/// `BPF_F_NO_PREALLOC`: only frontends with ClientIP affinity have entries, so the memory
/// follows use instead of the capacity.
const BPF_F_NO_PREALLOC: u32 = 1;

map_name!(MAP_AFFINITY_MATCH => named_map! {
    pub static AFFINITY_MATCH: HashMap<AffinityMatchKey, u32> =
        HashMap::pinned(MAX_AFFINITY_MATCH_ENTRIES, BPF_F_NO_PREALLOC);
});
