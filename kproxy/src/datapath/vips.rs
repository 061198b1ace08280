//! The service-address set (echo replies for VIPs): a fixed-size two-choice hash set in a
//! BPF array of [`VipBucket`]s (see `kproxy_common::vip_buckets`). kproxy keeps a copy of the
//! array ([`VipTable`], read from the pinned map when the datapath is loaded, so a restarted
//! kproxy finds every address where the previous one put it), places addresses in it and
//! writes only the buckets that changed.
//!
//! An address goes to the less-loaded of its two buckets. When both are full, addresses in
//! them move to their other buckets to make room (cuckoo relocation, chains of at most
//! [`MAX_MOVES`]): plain two-choice overflows some 4-slot bucket in about half of random
//! fillings already at 50 % load (simulated); with relocation, random addresses fill well
//! over 90 % of the slots (tests), and the planner admits 75 % (`MAX_VIP_ENTRIES`). A moved
//! address is written to its new bucket before it leaves the old one, so it stays in the
//! map (for a moment twice, which a lookup does not mind; a lookup racing both writes may
//! miss it once: one unanswered ping).

use std::net::Ipv4Addr;

use aya::maps::{Array, Map, MapData, MapError};
use kproxy_common::{MAP_VIPS, VIP_BUCKETS, VIP_SLOTS, VipBucket, vip_buckets};

use super::{Datapath, DatapathError};

fn map_err(source: MapError) -> DatapathError {
    DatapathError::Map {
        name: MAP_VIPS,
        source,
    }
}

/// Neither bucket of the address, nor the other bucket of any address in them, has a free
/// slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BucketPairFull(pub Ipv4Addr);

/// The longest chain of moves an insertion makes (up to 8 + 32 + 128 slots looked at).
const MAX_MOVES: usize = 3;

/// Bucket writes that carry out one change, in order: (index, new contents).
type Writes = Vec<(u32, VipBucket)>;

/// kproxy's copy of the service-address array.
pub(super) struct VipTable {
    buckets: Vec<VipBucket>,
}

impl VipTable {
    /// An empty table of [`VIP_BUCKETS`] buckets.
    #[cfg(test)]
    fn new() -> Self {
        Self {
            buckets: vec![VipBucket::default(); VIP_BUCKETS as usize],
        }
    }

    /// The table as the pinned map holds it (empty when the map was just created).
    pub(super) fn read(map: &Map) -> Result<Self, DatapathError> {
        let arr = Array::<&MapData, VipBucket>::try_from(map).map_err(map_err)?;
        let buckets = (0..VIP_BUCKETS)
            .map(|i| arr.get(&i, 0))
            .collect::<Result<_, _>>()
            .map_err(map_err)?;
        Ok(Self { buckets })
    }

    fn bucket(&self, i: u32) -> &VipBucket {
        &self.buckets[i as usize]
    }

    /// The service addresses (network byte order) and their flags.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.buckets.iter().flat_map(|b| {
            b.addrs
                .iter()
                .zip(b.flags)
                .filter(|(a, _)| **a != 0)
                .map(|(a, f)| (*a, u32::from(f)))
        })
    }

    /// The writes that put `addr` (network byte order) with `flags`: an update in place
    /// where it is, else a free slot of the less-loaded of its buckets, else a free slot
    /// made by moving another address to its other bucket. Nothing changes until
    /// [`VipTable::commit`]. 0.0.0.0 (the empty-slot mark) is never an echo destination and
    /// is left out.
    fn plan_put(&self, addr: u32, flags: u32) -> Result<Writes, BucketPairFull> {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "vip_flags::ALL fits a byte"
        )]
        let flags = flags as u8;
        if addr == 0 {
            return Ok(Vec::new());
        }
        let (a, b) = vip_buckets(addr);
        // Both buckets are updated if both hold it (a kproxy stopped between the two
        // writes of a relocation).
        let mut writes = Writes::new();
        for i in [a, b] {
            let mut bucket = *self.bucket(i);
            for slot in 0..VIP_SLOTS {
                if bucket.addrs[slot] == addr {
                    bucket.flags[slot] = flags;
                }
            }
            if bucket.flags_of(addr).is_some() && bucket != *self.bucket(i) {
                writes.push((i, bucket));
            }
        }
        if self.bucket(a).flags_of(addr).is_some() || self.bucket(b).flags_of(addr).is_some() {
            return Ok(writes);
        }
        let first = if free(self.bucket(b)) > free(self.bucket(a)) {
            b
        } else {
            a
        };
        if let Some(w) = with_slot(self.bucket(first), addr, flags) {
            return Ok(vec![(first, w)]);
        }
        self.relocate(a, b, addr, flags)
            .ok_or(BucketPairFull(Ipv4Addr::from(u32::from_be(addr))))
    }

    /// Makes room for `addr` in full buckets `a` and `b` (cuckoo relocation): the shortest
    /// chain of at most [`MAX_MOVES`] addresses, each moving to its other bucket, the last
    /// into a free slot. The writes go from that free slot back to `addr`'s bucket, so every
    /// moved address is in its new bucket before it leaves the old one.
    fn relocate(&self, a: u32, b: u32, addr: u32, flags: u8) -> Option<Writes> {
        /// A slot whose address could move; `from`: the step whose bucket this one is.
        struct Step {
            bucket: u32,
            slot: usize,
            from: Option<usize>,
            moves: usize,
        }
        let mut seen = vec![a, b];
        let mut steps: Vec<Step> = [a, b]
            .into_iter()
            .flat_map(|bucket| {
                (0..VIP_SLOTS).map(move |slot| Step {
                    bucket,
                    slot,
                    from: None,
                    moves: 1,
                })
            })
            .collect();
        let mut next = 0;
        while let Some(step) = steps.get(next) {
            let here = self.bucket(step.bucket);
            let moved = here.addrs[step.slot];
            let (first, second) = vip_buckets(moved);
            let other = if first == step.bucket { second } else { first };
            if let Some(there) = with_slot(self.bucket(other), moved, here.flags[step.slot]) {
                // Walk back: each bucket on the chain takes the address of the step before
                // it in the slot its own address left (all buckets on it are distinct).
                let mut writes = vec![(other, there)];
                let mut at = next;
                loop {
                    let s = &steps[at];
                    let mut bucket = *self.bucket(s.bucket);
                    let (into, flag) = match s.from {
                        Some(prev) => {
                            let p = &steps[prev];
                            let b = self.bucket(p.bucket);
                            (b.addrs[p.slot], b.flags[p.slot])
                        }
                        None => (addr, flags),
                    };
                    bucket.addrs[s.slot] = into;
                    bucket.flags[s.slot] = flag;
                    writes.push((s.bucket, bucket));
                    match s.from {
                        Some(prev) => at = prev,
                        None => return Some(writes),
                    }
                }
            }
            if step.moves < MAX_MOVES && !seen.contains(&other) {
                seen.push(other);
                let (from, moves) = (Some(next), step.moves + 1);
                steps.extend((0..VIP_SLOTS).map(|slot| Step {
                    bucket: other,
                    slot,
                    from,
                    moves,
                }));
            }
            next += 1;
        }
        None
    }

    /// The writes that take `addr` out (none if it is not there).
    fn plan_delete(&self, addr: u32) -> Writes {
        if addr == 0 {
            return Vec::new();
        }
        let (a, b) = vip_buckets(addr);
        let mut writes = Writes::new();
        for i in [a, b] {
            let mut bucket = *self.bucket(i);
            for slot in 0..VIP_SLOTS {
                if bucket.addrs[slot] == addr {
                    bucket.addrs[slot] = 0;
                    bucket.flags[slot] = 0;
                }
            }
            if bucket != *self.bucket(i) {
                writes.push((i, bucket));
            }
        }
        writes
    }

    /// Records a write the map took.
    fn commit(&mut self, (i, bucket): (u32, VipBucket)) {
        self.buckets[i as usize] = bucket;
    }
}

fn free(bucket: &VipBucket) -> usize {
    bucket.addrs.iter().filter(|a| **a == 0).count()
}

/// `bucket` with `addr` in its first free slot, if it has one.
fn with_slot(bucket: &VipBucket, addr: u32, flags: u8) -> Option<VipBucket> {
    let slot = bucket.addrs.iter().position(|a| *a == 0)?;
    let mut b = *bucket;
    b.addrs[slot] = addr;
    b.flags[slot] = flags;
    Some(b)
}

/// The map and kproxy's copy of it, for applying planned operations.
pub(super) struct VipWriter<'a> {
    map: Array<&'a mut MapData, VipBucket>,
    table: &'a mut VipTable,
}

/// The map, from `Ebpf::maps_disjoint_mut`'s slot for it, with the datapath's copy.
pub(super) fn open<'a>(
    map: Option<&'a mut Map>,
    table: &'a mut VipTable,
) -> Result<VipWriter<'a>, DatapathError> {
    let map = Array::try_from(map.ok_or(DatapathError::MissingMap(MAP_VIPS))?).map_err(map_err)?;
    Ok(VipWriter { map, table })
}

impl VipWriter<'_> {
    pub(super) fn put(&mut self, addr: u32, flags: u32) -> Result<(), DatapathError> {
        let writes = self
            .table
            .plan_put(addr, flags)
            .map_err(|BucketPairFull(addr)| DatapathError::VipTableFull { addr })?;
        self.write(writes)
    }

    pub(super) fn delete(&mut self, addr: u32) -> Result<(), DatapathError> {
        let writes = self.table.plan_delete(addr);
        self.write(writes)
    }

    /// Writes the buckets in order, the copy following each write the map took.
    fn write(&mut self, writes: Writes) -> Result<(), DatapathError> {
        for (i, bucket) in writes {
            self.map.set(i, bucket, 0).map_err(map_err)?;
            self.table.commit((i, bucket));
        }
        Ok(())
    }
}

impl Datapath {
    /// The service addresses and their flags.
    pub(super) fn read_vips(&self) -> Vec<(u32, u32)> {
        self.vips.entries().collect()
    }
}

#[cfg(test)]
mod tests;
