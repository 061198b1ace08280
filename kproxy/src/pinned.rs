//! Access to a running datapath's pinned maps from another process (`kproxy dump`,
//! `kproxy debug`), without loading any program.

use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use kproxy_common::{Counter, Hook, MAP_CONFIG, MAP_IFSTATS, PacketClass, config, ifstats_index};

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

fn open(dir: &Path, name: &'static str) -> Result<MapData, PinnedError> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|source| PinnedError::Open { path, source })
}

/// Reads the per-interface packet counters summed over CPUs.
pub fn read_ifstats(dir: &Path) -> Result<Vec<IfStat>, PinnedError> {
    let map = Map::PerCpuArray(open(dir, MAP_IFSTATS)?);
    let stats = PerCpuArray::<_, Counter>::try_from(map).map_err(|source| PinnedError::Map {
        name: MAP_IFSTATS,
        source,
    })?;
    sum_ifstats(&stats).map_err(|source| PinnedError::Map {
        name: MAP_IFSTATS,
        source,
    })
}

/// Sums a per-CPU counter array into one row per (hook, class).
pub(crate) fn sum_ifstats<T: std::borrow::Borrow<MapData>>(
    stats: &PerCpuArray<T, Counter>,
) -> Result<Vec<IfStat>, aya::maps::MapError> {
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
    let map = Map::Array(open(dir, MAP_CONFIG)?);
    let mut cfg = Array::<_, u32>::try_from(map).map_err(|source| PinnedError::Map {
        name: MAP_CONFIG,
        source,
    })?;
    cfg.set(config::DEBUG_EVENTS, u32::from(on), 0)
        .map_err(|source| PinnedError::Map {
            name: MAP_CONFIG,
            source,
        })
}
