//! Access to a running datapath's pinned maps from another process (`kproxy dump`,
//! `kproxy debug`), without loading any program.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use kproxy_common::{
    Backend, Counter, Hook, LbCounter, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_CONFIG, MAP_DROPS,
    MAP_IFSTATS, MAP_REVNAT, MAP_SERVICES, MAP_SVC_STATS, PacketClass, RevNat, ServiceKey,
    ServiceValue, config, ifstats_index,
};

use crate::drops::{DropStat, sum_drops};

#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error("cannot open pinned map {path} (is kproxy running with this --bpffs dir?)")]
    Open {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// One (hook, class) packet counter summed over all CPUs.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct IfStat {
    pub hook: &'static str,
    pub class: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Opens the map `name` pinned under `dir`.
pub(crate) fn open_pinned(dir: &Path, name: &'static str) -> Result<MapData, PinnedError> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|source| PinnedError::Open { path, source })
}

fn open_ifstats(dir: &Path) -> Result<PerCpuArray<MapData, Counter>, PinnedError> {
    let map = Map::PerCpuArray(open_pinned(dir, MAP_IFSTATS)?);
    PerCpuArray::try_from(map).map_err(|source| PinnedError::Map {
        name: MAP_IFSTATS,
        source,
    })
}

fn open_drops(dir: &Path) -> Result<PerCpuArray<MapData, Counter>, PinnedError> {
    let map = Map::PerCpuArray(open_pinned(dir, MAP_DROPS)?);
    PerCpuArray::try_from(map).map_err(|source| PinnedError::Map {
        name: MAP_DROPS,
        source,
    })
}

/// The drop counters, one row per reason, summed over CPUs.
fn sum_drop_map(map: &PerCpuArray<MapData, Counter>) -> Result<Vec<DropStat>, PinnedError> {
    sum_drops(|slot| map.get(&slot, 0).map(|v| v.to_vec())).map_err(|source| PinnedError::Map {
        name: MAP_DROPS,
        source,
    })
}

/// Reads the drop and error counters summed over CPUs (`kproxy dump --drops`).
pub fn read_drops(dir: &Path) -> Result<Vec<DropStat>, PinnedError> {
    sum_drop_map(&open_drops(dir)?)
}

/// Reads the per-interface packet counters summed over CPUs.
pub fn read_ifstats(dir: &Path) -> Result<Vec<IfStat>, PinnedError> {
    sum_ifstats(&open_ifstats(dir)?).map_err(|source| PinnedError::Map {
        name: MAP_IFSTATS,
        source,
    })
}

/// Sums a per-CPU counter array into one row per (hook, class).
fn sum_ifstats(stats: &PerCpuArray<MapData, Counter>) -> Result<Vec<IfStat>, aya::maps::MapError> {
    let mut rows = Vec::new();
    for hook in Hook::ALL {
        for class in PacketClass::ALL {
            let per_cpu = stats.get(&ifstats_index(hook, class), 0)?;
            let total = per_cpu.iter().fold(Counter::default(), |a, c| a.plus(*c));
            rows.push(IfStat {
                hook: hook.name(),
                class: class.name(),
                packets: total.packets,
                bytes: total.bytes,
            });
        }
    }
    Ok(rows)
}

/// Switches the aya-log debug events of a running datapath on or off.
pub fn set_debug_events(dir: &Path, on: bool) -> Result<(), PinnedError> {
    let mut map = Map::Array(open_pinned(dir, MAP_CONFIG)?);
    write_config(&mut map, config::DEBUG_EVENTS, u32::from(on)).map_err(|source| PinnedError::Map {
        name: MAP_CONFIG,
        source,
    })
}

/// Writes one slot of the runtime configuration map (in-process or pinned).
pub(crate) fn write_config(map: &mut Map, slot: u32, value: u32) -> Result<(), MapError> {
    Array::<_, u32>::try_from(map)?.set(slot, value, 0)
}

/// Entries of the service, backend and reverse-NAT maps.
pub type LbEntries = (
    Vec<(ServiceKey, ServiceValue)>,
    Vec<(u32, Backend)>,
    Vec<(u32, RevNat)>,
);

/// Reads the three LB tables; on error, names the map that failed.
pub(crate) fn read_lb_maps_from(
    services: &Map,
    backends: &Map,
    revnat: &Map,
) -> Result<LbEntries, (&'static str, MapError)> {
    let s = HashMap::<_, ServiceKey, ServiceValue>::try_from(services)
        .map_err(|e| (MAP_SERVICES, e))?;
    let b = HashMap::<_, u32, Backend>::try_from(backends).map_err(|e| (MAP_BACKENDS, e))?;
    let r = HashMap::<_, u32, RevNat>::try_from(revnat).map_err(|e| (MAP_REVNAT, e))?;
    Ok((
        s.iter()
            .collect::<Result<_, _>>()
            .map_err(|e| (MAP_SERVICES, e))?,
        b.iter()
            .collect::<Result<_, _>>()
            .map_err(|e| (MAP_BACKENDS, e))?,
        r.iter()
            .collect::<Result<_, _>>()
            .map_err(|e| (MAP_REVNAT, e))?,
    ))
}

/// One LB counter summed over CPUs.
pub(crate) fn sum_lb_counter(map: &Map, id: u32) -> Result<LbCounter, MapError> {
    let arr = PerCpuArray::<_, LbCounter>::try_from(map)?;
    let per_cpu = arr.get(&id, 0)?;
    Ok(per_cpu.iter().fold(LbCounter::default(), |a, c| a.plus(*c)))
}

/// The pinned maps of a running (or stopped) kproxy, opened once: `kproxy dump`, the
/// `/metrics` endpoint and the node endpoint's `/lb` read them (`/lb` adds the connection
/// tracking counts of `ct::CtTable`).
pub struct PinnedLb {
    services: Map,
    backends: Map,
    revnat: Map,
    svc_stats: Map,
    be_stats: Map,
    ifstats: PerCpuArray<MapData, Counter>,
    drops: PerCpuArray<MapData, Counter>,
}

impl PinnedLb {
    pub fn open(dir: &Path) -> Result<Self, PinnedError> {
        Ok(Self {
            services: Map::HashMap(open_pinned(dir, MAP_SERVICES)?),
            backends: Map::HashMap(open_pinned(dir, MAP_BACKENDS)?),
            revnat: Map::HashMap(open_pinned(dir, MAP_REVNAT)?),
            svc_stats: Map::PerCpuArray(open_pinned(dir, MAP_SVC_STATS)?),
            be_stats: Map::PerCpuArray(open_pinned(dir, MAP_BACKEND_STATS)?),
            ifstats: open_ifstats(dir)?,
            drops: open_drops(dir)?,
        })
    }

    /// The drop and error counters, one row per reason, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<DropStat>, PinnedError> {
        sum_drop_map(&self.drops)
    }

    /// The uplink packet counters summed over CPUs.
    pub fn ifstats(&self) -> Result<Vec<IfStat>, PinnedError> {
        sum_ifstats(&self.ifstats).map_err(|source| PinnedError::Map {
            name: MAP_IFSTATS,
            source,
        })
    }

    pub fn entries(&self) -> Result<LbEntries, PinnedError> {
        read_lb_maps_from(&self.services, &self.backends, &self.revnat)
            .map_err(|(name, source)| PinnedError::Map { name, source })
    }

    pub fn counter(&self, backend: bool, id: u32) -> Result<LbCounter, PinnedError> {
        let (name, map) = if backend {
            (MAP_BACKEND_STATS, &self.be_stats)
        } else {
            (MAP_SVC_STATS, &self.svc_stats)
        };
        sum_lb_counter(map, id).map_err(|source| PinnedError::Map { name, source })
    }
}
