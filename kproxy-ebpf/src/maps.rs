//! Map definitions. Names come from kproxy-common so both sides agree; maps are pinned by name
//! so a restarted kproxy reuses them (counters and, later, connection tracking survive).

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use kproxy_common::{Counter, IFSTATS_LEN, config};

#[map(name = "kproxy_ifstats_v1")]
pub static IFSTATS: PerCpuArray<Counter> = PerCpuArray::pinned(IFSTATS_LEN, 0);

#[map(name = "kproxy_config_v1")]
pub static CONFIG: Array<u32> = Array::pinned(config::LEN, 0);
