//! The connection tracking table from userspace: garbage collection of expired entries
//! (the datapath only ignores them; an LRU map would otherwise keep them until it is full)
//! and counting the live ones per service.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        LazyLock,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapError};
use kproxy_common::{CtKey, CtValue, MAP_CT, MAX_CT_ENTRIES};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use crate::pinned::{PinnedError, open_pinned};

/// Entries garbage collection deleted since start.
pub static GC_DELETED: LazyLock<Counter<u64, AtomicU64>> = LazyLock::new(Counter::default);
/// Live entries after the last collection.
pub static LIVE: LazyLock<Gauge<i64, AtomicI64>> = LazyLock::new(Gauge::default);

/// Seconds of CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads: the unit of
/// [`CtValue::expires_s`].
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the datapath keeps monotonic seconds in a wrapping u32 too; tv_sec is never negative"
)]
pub fn monotonic_s() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u32
}

/// Whether an entry has expired at `now` (wrapping compare, as the datapath does).
#[must_use]
pub fn expired(value: &CtValue, now: u32) -> bool {
    value.expires_s.wrapping_sub(now).cast_signed() < 0
}

/// The pinned connection tracking map.
pub struct CtTable {
    map: HashMap<MapData, CtKey, CtValue>,
}

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    pub live: usize,
    pub deleted: usize,
}

impl CtTable {
    pub fn open(dir: &Path) -> Result<Self, PinnedError> {
        let map = Map::LruHashMap(open_pinned(dir, MAP_CT)?);
        Ok(Self {
            map: HashMap::try_from(map).map_err(|source| PinnedError::Map {
                name: MAP_CT,
                source,
            })?,
        })
    }

    /// Every entry (a snapshot: the datapath adds and refreshes entries meanwhile).
    pub fn entries(&self) -> Result<Vec<(CtKey, CtValue)>, MapError> {
        // When the key the walk stands on is evicted meanwhile, the kernel restarts it from
        // the first key: bound the walk and count each key once. Entries evicted during the
        // walk are skipped, not an error.
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .map
            .iter()
            .take(2 * MAX_CT_ENTRIES as usize)
            .filter_map(Result::ok)
            .filter(|(key, _)| seen.insert(*key))
            .collect())
    }

    /// Deletes the entries expired at `now`. Keys are gathered first: deleting during a
    /// hash map walk can restart the walk from the beginning.
    pub fn collect(&mut self, now: u32) -> Result<GcStats, MapError> {
        let entries = self.entries()?;
        let mut stats = GcStats::default();
        for (key, value) in &entries {
            if !expired(value, now) {
                stats.live += 1;
                continue;
            }
            // Re-read: a packet may have refreshed it (or a new flow reused the tuple)
            // since the walk.
            match self.map.get(key, 0) {
                Ok(current) if expired(&current, now) => match self.map.remove(key) {
                    Ok(()) | Err(MapError::KeyNotFound) => stats.deleted += 1,
                    Err(e) => return Err(e),
                },
                Ok(_) => stats.live += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stats)
    }

    /// Deletes every entry (`kproxy ct-flush`): each established flow picks its backend
    /// again with its next packet, as a fresh node would. Returns how many went.
    pub fn flush(&mut self) -> Result<usize, MapError> {
        let mut deleted = 0;
        for (key, _) in self.entries()? {
            match self.map.remove(&key) {
                Ok(()) => deleted += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Live (unexpired) entries per revnat id, both directions counted.
    pub fn live_per_revnat(&self, now: u32) -> Result<BTreeMap<u16, u64>, MapError> {
        let mut out = BTreeMap::new();
        for (_, value) in self.entries()? {
            if !expired(&value, now) {
                *out.entry(value.revnat_id).or_default() += 1;
            }
        }
        Ok(out)
    }
}

/// Collects expired entries every `every`, on a thread of its own (a walk of a full table
/// takes a few hundred milliseconds of syscalls; the sync loop must not wait for it).
pub fn spawn_gc(dir: &Path, every: Duration) -> std::io::Result<()> {
    let mut table = CtTable::open(dir).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("ct-gc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                match table.collect(monotonic_s()) {
                    Ok(stats) => {
                        GC_DELETED.inc_by(stats.deleted as u64);
                        LIVE.set(i64::try_from(stats.live).unwrap_or(i64::MAX));
                        if stats.deleted > 0 {
                            tracing::debug!(
                                live = stats.live,
                                deleted = stats.deleted,
                                "connection tracking garbage collected"
                            );
                        }
                    }
                    Err(err) => tracing::warn!(%err, "connection tracking collection failed"),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires_s: u32) -> CtValue {
        CtValue {
            expires_s,
            ..CtValue::default()
        }
    }

    #[test]
    fn expiry_compares_across_the_wrap() {
        assert!(!expired(&entry(100), 100));
        assert!(!expired(&entry(101), 100));
        assert!(expired(&entry(99), 100));
        // An entry set just before the u32 clock wrapped, read just after.
        assert!(!expired(&entry(5), u32::MAX - 5));
        assert!(expired(&entry(u32::MAX - 5), 5));
    }
}
