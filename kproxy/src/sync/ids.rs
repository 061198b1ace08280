//! Id allocation for the backend and revnat maps.

use std::collections::BTreeSet;

/// Hands out ids in `1..limit`, lowest freed id first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IdAlloc {
    pub(super) limit: u32,
    /// Every id at or above this has never been handed out.
    pub(super) next: u32,
    /// Ids below `next` that are free again.
    pub(super) free: BTreeSet<u32>,
}

impl IdAlloc {
    pub(super) const fn new(limit: u32) -> Self {
        Self {
            limit,
            next: 1,
            free: BTreeSet::new(),
        }
    }

    /// An allocator for which `used` (and nothing else) is taken.
    pub(super) fn with_used(limit: u32, used: impl IntoIterator<Item = u32>) -> Self {
        let used: BTreeSet<u32> = used
            .into_iter()
            .filter(|id| (1..limit).contains(id))
            .collect();
        let next = used.last().map_or(1, |max| max + 1);
        let free = (1..next).filter(|id| !used.contains(id)).collect();
        Self { limit, next, free }
    }

    pub(super) fn available(&self) -> usize {
        self.free.len() + (self.limit - self.next) as usize
    }

    pub(super) fn in_use(&self) -> usize {
        (self.next - 1) as usize - self.free.len()
    }

    pub(super) fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        if self.next < self.limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        None
    }

    pub(super) fn release(&mut self, id: u32) {
        // Ids outside the range were never handed out (leftovers found in the maps).
        if id >= 1 && id < self.next {
            self.free.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_freed_id_first_up_to_the_limit() {
        let mut ids = IdAlloc::new(4);
        assert_eq!(ids.available(), 3);
        assert_eq!(
            [ids.alloc(), ids.alloc(), ids.alloc(), ids.alloc()],
            [Some(1), Some(2), Some(3), None]
        );
        ids.release(2);
        ids.release(1);
        assert_eq!(ids.in_use(), 1);
        assert_eq!(ids.alloc(), Some(1));
        // Ids never handed out (0, beyond the limit) are not taken back.
        ids.release(0);
        ids.release(9);
        assert_eq!(ids.available(), 1);
        assert_eq!(ids.alloc(), Some(2));
        assert_eq!(ids.alloc(), None);
    }

    #[test]
    fn with_used_takes_exactly_those_in_range() {
        let mut ids = IdAlloc::with_used(10, [3, 5, 0, 12]);
        assert_eq!(ids.in_use(), 2);
        assert_eq!(ids.available(), 7);
        let got: Vec<_> = std::iter::from_fn(|| ids.alloc()).take(5).collect();
        assert_eq!(got, [1, 2, 4, 6, 7]);
    }
}
