//! Map definitions. Names match the constants in kproxy-common (the `#[map]` attribute needs a
//! literal); maps are pinned by name so a restarted kproxy reuses them, with their state
//! (services, connection tracking, counters).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use kproxy_common::{
    AffinityKey, AffinityValue, Backend, Counter, CtKey, CtValue, IFSTATS_LEN, LbCounter,
    MAX_AFFINITY_ENTRIES, MAX_BACKENDS, MAX_CT_ENTRIES, MAX_L2_ENTRIES, MAX_SERVICE_SLOTS,
    MAX_SERVICES, MAX_SOCK_REVNAT_ENTRIES, RevNat, ServiceKey, ServiceValue, SockRevNatKey,
    SockRevNatValue, config,
};

#[map(name = "kproxy_ifstats_v1")]
pub static IFSTATS: PerCpuArray<Counter> = PerCpuArray::pinned(IFSTATS_LEN, 0);

#[map(name = "kproxy_config_v2")]
pub static CONFIG: Array<u32> = Array::pinned(config::LEN, 0);

#[map(name = "kproxy_lb4_services_v1")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICE_SLOTS, 0);

#[map(name = "kproxy_lb4_backends_v1")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(MAX_BACKENDS, 0);

#[map(name = "kproxy_lb4_revnat_v1")]
pub static REVNAT: HashMap<u32, RevNat> = HashMap::pinned(MAX_SERVICES, 0);

#[map(name = "kproxy_lb4_ct_v3")]
pub static CT: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(MAX_CT_ENTRIES, 0);

#[map(name = "kproxy_lb4_l2_v1")]
pub static L2: HashMap<u32, u32> = HashMap::pinned(MAX_L2_ENTRIES, 0);

#[map(name = "kproxy_lb4_affinity_v2")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(MAX_AFFINITY_ENTRIES, 0);

#[map(name = "kproxy_lb4_sock_revnat_v2")]
pub static SOCK_REVNAT: LruHashMap<SockRevNatKey, SockRevNatValue> =
    LruHashMap::pinned(MAX_SOCK_REVNAT_ENTRIES, 0);

#[map(name = "kproxy_lb4_svc_stats_v1")]
pub static SVC_STATS: PerCpuArray<LbCounter> = PerCpuArray::pinned(MAX_SERVICES, 0);

#[map(name = "kproxy_lb4_be_stats_v1")]
pub static BACKEND_STATS: PerCpuArray<LbCounter> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Per-CPU scratch space for building reply packets (see nat::reject_skb).
#[map(name = "kproxy_scratch_v1")]
pub static SCRATCH_BUF: PerCpuArray<[u8; crate::nat::SCRATCH]> =
    PerCpuArray::with_max_entries(1, 0);
