//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table of a frontend,
//! generated in userspace and read by the datapath as `table[flow_hash % size]`, and the
//! allocator of table blocks in the flat `kproxy_lb4_maglev_v1` array.
//!
//! Each backend gets a permutation of the table's positions from two seeded hashes of its
//! address (`offset`, `skip`); backends take turns claiming their next free position until
//! the table is full. Every backend ends up with `size / N` entries (±1), and when one
//! backend goes, only the positions it held are claimed by others, so only its flows move;
//! when one is added, it takes about `1 / (N + 1)` of the positions, mostly from every other
//! backend alike. The seed is per cluster (`--lb-hash-seed`): every node builds the same
//! table, so a flow that ECMP moves to another node keeps its backend, and a client cannot
//! compute which backend its flows reach.

use kproxy_common::{MAGLEV_BLOCK_MIN, MAGLEV_ENTRIES, MAGLEV_SIZES};

use crate::model::BackendAddr;

/// Table entries per backend at least. Maglev needs `size ≥ 100 × N` for ~1 % imbalance,
/// but the flows that move besides a removed backend's own shrink with the size (10
/// backends, mean over seeds: 2.5 % of all flows at 1,021 entries, 1.2 % at 4,093, 0.8 % at
/// 8,191, 0.5 % at 16,381): 1,600 × N keeps removing 1 of 10 backends at ~10.5 % of flows
/// moved (target ≤ 11 %); 64 such tables fit the 2 MiB array.
const ENTRIES_PER_BACKEND: u32 = 1600;

/// The size class (index into [`MAGLEV_SIZES`]) of a table for `backends` active backends:
/// the smallest prime ≥ 1,600 × backends, the largest beyond that (40 backends).
#[must_use]
pub fn size_class(backends: usize) -> u8 {
    let want = u32::try_from(backends)
        .unwrap_or(u32::MAX)
        .saturating_mul(ENTRIES_PER_BACKEND);
    let class = MAGLEV_SIZES
        .iter()
        .position(|size| *size >= want)
        .unwrap_or(MAGLEV_SIZES.len() - 1);
    u8::try_from(class).unwrap_or(u8::MAX)
}

/// The number of entries of size class `class`.
#[must_use]
pub fn size_of_class(class: u8) -> u32 {
    MAGLEV_SIZES[usize::from(class).min(MAGLEV_SIZES.len() - 1)]
}

/// A stable 64-bit hash of `bytes` under `seed` (FNV-1a, then a SplitMix64 finaliser for
/// avalanche): the same on every node and every kproxy version, unlike std's hasher.
#[must_use]
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix(h)
}

/// SplitMix64's finaliser.
#[must_use]
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The name a backend's permutation is derived from: its address, port and protocol (not
/// its id, which differs between nodes).
fn backend_name(b: BackendAddr) -> [u8; 7] {
    let [a, b2, c, d] = b.addr.octets();
    let [p0, p1] = b.port.to_be_bytes();
    [a, b2, c, d, p0, p1, b.proto.ip_proto()]
}

/// The Maglev table of `size` entries (a prime) for `backends` under `seed`: each entry is
/// an index into `backends`. Empty when there is no backend. The result depends only on the
/// set of backends (they are sorted first), not on their order.
#[must_use]
pub fn table(seed: u64, backends: &[BackendAddr], size: u32) -> Vec<u32> {
    let mut order: Vec<(usize, &BackendAddr)> = backends.iter().enumerate().collect();
    order.sort_by_key(|(_, b)| **b);
    let n = order.len();
    let m = u64::from(size);
    if n == 0 || m < 2 {
        return Vec::new();
    }
    // (offset, skip) of each backend's permutation: position j is (offset + j·skip) % m,
    // a permutation of 0..m because m is prime and 0 < skip < m.
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|(_, b)| {
            let name = backend_name(**b);
            let offset = hash64(seed, &name) % m;
            let skip = hash64(seed.rotate_left(32) ^ 0x6d61_676c_6576_2121, &name) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut entries = vec![u32::MAX; usize::try_from(size).unwrap_or(0)];
    let mut filled = 0u32;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            // The permutation visits every position, so a free one is always found.
            let pos = loop {
                let c = (offset + next[i] * skip) % m;
                next[i] += 1;
                let pos = usize::try_from(c).unwrap_or(0);
                if entries[pos] == u32::MAX {
                    break pos;
                }
            };
            entries[pos] = u32::try_from(order[i].0).unwrap_or(u32::MAX);
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    entries
}

/// Allocates table blocks in the flat Maglev array: a block of class c is
/// `MAGLEV_BLOCK_MIN << c` entries, aligned to its size (buddy-style, so freed blocks are
/// reused by any class without fragmenting into unusable pieces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockAlloc {
    /// One bit per `MAGLEV_BLOCK_MIN`-entry unit: in use.
    used: Vec<u64>,
}

const UNITS: usize = (MAGLEV_ENTRIES / MAGLEV_BLOCK_MIN) as usize;

impl Default for BlockAlloc {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockAlloc {
    #[must_use]
    pub fn new() -> Self {
        Self {
            used: vec![0; UNITS.div_ceil(64)],
        }
    }

    fn units(class: u8) -> usize {
        1usize << class.min(15)
    }

    fn is_used(&self, unit: usize) -> bool {
        self.used[unit / 64] & (1 << (unit % 64)) != 0
    }

    fn set(&mut self, first: usize, units: usize, on: bool) {
        for unit in first..(first + units).min(UNITS) {
            if on {
                self.used[unit / 64] |= 1 << (unit % 64);
            } else {
                self.used[unit / 64] &= !(1 << (unit % 64));
            }
        }
    }

    /// A free block of `class`: its first entry. `None` when the array is full.
    pub fn alloc(&mut self, class: u8) -> Option<u32> {
        let units = Self::units(class);
        let mut first = 0;
        while first + units <= UNITS {
            if units >= 64 {
                let words = &self.used[first / 64..(first + units) / 64];
                if words.iter().all(|w| *w == 0) {
                    self.set(first, units, true);
                    return u32::try_from(first).ok().map(|u| u * MAGLEV_BLOCK_MIN);
                }
            } else if self.used[first / 64] == u64::MAX {
                first = (first / 64 + 1) * 64;
                continue;
            } else if (first..first + units).all(|u| !self.is_used(u)) {
                self.set(first, units, true);
                return u32::try_from(first).ok().map(|u| u * MAGLEV_BLOCK_MIN);
            }
            first += units;
        }
        None
    }

    /// Marks the block of `class` at entry `offset` in use (restoring after a restart);
    /// `false` if it is not a block this allocator could have handed out or overlaps one.
    pub fn reserve(&mut self, offset: u32, class: u8) -> bool {
        let units = Self::units(class);
        let first = (offset / MAGLEV_BLOCK_MIN) as usize;
        if !offset.is_multiple_of(MAGLEV_BLOCK_MIN)
            || !first.is_multiple_of(units)
            || first + units > UNITS
            || (first..first + units).any(|u| self.is_used(u))
        {
            return false;
        }
        self.set(first, units, true);
        true
    }

    /// Whether some block in use in `before` is free here.
    #[must_use]
    pub fn frees_of(&self, before: &Self) -> bool {
        before.used.iter().zip(&self.used).any(|(b, a)| b & !a != 0)
    }

    /// Frees the block of `class` at entry `offset`.
    pub fn release(&mut self, offset: u32, class: u8) {
        self.set(
            (offset / MAGLEV_BLOCK_MIN) as usize,
            Self::units(class),
            false,
        );
    }
}

#[cfg(test)]
mod tests;
