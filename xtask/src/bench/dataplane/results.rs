//! The figures of a dataplane run, keyed by mode and service count.

use std::{collections::BTreeMap, time::Duration};

#[derive(Clone, Copy, Default)]
pub struct Conns {
    pub per_s: f64,
    pub errors: u64,
    /// Half the min–max range of the runs, relative to the median.
    pub spread: f64,
}

#[derive(Clone, Copy)]
pub struct Rr {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Default)]
pub struct ProgramTime {
    /// kproxy: the sync's `took=`; rules: the restore tool's wall time.
    pub took: Duration,
    /// kproxy: map operations of the initial sync.
    pub map_ops: Option<u64>,
    /// kproxy: `took=` of a reload of the unchanged file (parse + plan, no map writes).
    pub noop_took: Option<Duration>,
    /// kproxy: from process start to "kproxy ready" (load + attach + initial sync).
    pub start_wall: Option<Duration>,
    /// kproxy: `apply=` of the initial sync (the map writes alone).
    pub apply: Option<Duration>,
}

#[derive(Default)]
pub struct Memory {
    /// (map pin name, bytes_memlock)
    pub maps: Vec<(String, u64)>,
    pub slab_kb: i64,
    pub avail_kb: i64,
    pub rss_kb: Option<u64>,
}

pub struct Change {
    /// From the change (rename / tool start) until a new connection reaches the new backend.
    pub effective: Duration,
    /// kproxy's `took=` for the reload, or the tool's wall time.
    pub tool: Duration,
    pub map_ops: Option<u64>,
    /// kproxy: `apply=` (the map writes of the change alone).
    pub apply: Option<Duration>,
}

#[derive(Default)]
pub struct Results {
    pub conns: BTreeMap<(&'static str, usize), Conns>,
    pub rr: BTreeMap<(&'static str, usize), Rr>,
    pub bulk: BTreeMap<&'static str, f64>,
    pub program: BTreeMap<(&'static str, usize), ProgramTime>,
    pub memory: BTreeMap<(&'static str, usize), Memory>,
    pub changes: BTreeMap<&'static str, Vec<Change>>,
    /// Flows moved by a backend change, per load-balancing algorithm.
    pub disruption: BTreeMap<&'static str, Vec<super::disruption::Disruption>>,
    pub notes: Vec<String>,
}
