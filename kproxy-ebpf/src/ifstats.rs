//! Per-interface packet counters: one per (hook, packet class), per CPU.

use kproxy_common::{Hook, ifstats_index};

use crate::{maps::IFSTATS, packet::Summary};

/// Counts a packet of `len` bytes seen at `hook`.
#[inline(always)]
pub fn count(hook: Hook, summary: &Summary, len: u64) {
    if let Some(counter) = IFSTATS.get_ptr_mut(ifstats_index(hook, summary.class)) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}
