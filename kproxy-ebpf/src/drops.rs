//! Drop and error accounting: every packet the datapath drops, or passes on untranslated
//! when it should have translated it, is counted under its [`DropReason`], per CPU. Each
//! packet is counted once, at the first hook that sees the reason: malformed packets from
//! outside at the uplink's XDP (which runs before tc ingress in both LB modes), those from
//! pods at the pod veth's tc ingress.

use kproxy_common::{DropReason, PacketClass};

use crate::{maps::DROPS, packet::Summary};

/// Counts a packet of `len` bytes dropped (or passed untranslated) for `reason`.
#[inline(always)]
pub fn count(reason: DropReason, len: u64) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

/// Counts the packet as malformed if the parser classified it so (it passes untouched).
#[inline(always)]
pub fn count_malformed(summary: &Summary, len: u64) {
    if summary.class == PacketClass::Malformed {
        count(DropReason::Malformed, len);
    }
}
