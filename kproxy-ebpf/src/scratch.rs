//! Per-CPU scratch space for building reply packets (see `reject::reject_skb`): the BPF
//! stack is only 512 bytes. Not pinned: it holds nothing between packets.

use aya_ebpf::maps::PerCpuArray;
use kproxy_common::map_name;

use crate::maps::named_map;

/// Size of the buffer: the largest reply (an ICMP port unreachable, 70 bytes), rounded up.
pub const SCRATCH: usize = 72;

map_name!(MAP_SCRATCH => named_map! {
    static SCRATCH_BUF: PerCpuArray<[u8; SCRATCH]> = PerCpuArray::with_max_entries(1, 0);
});

/// This CPU's buffer.
#[inline(always)]
pub fn scratch() -> Result<&'static mut [u8; SCRATCH], i64> {
    let p = SCRATCH_BUF.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU map value; only this program invocation uses it while it runs.
    Ok(unsafe { &mut *p })
}

/// The first `M` bytes of the scratch buffer as an array reference.
#[inline(always)]
pub fn first_bytes<const M: usize>(buf: &[u8; SCRATCH]) -> &[u8; M] {
    const { assert!(M <= SCRATCH) };
    // SAFETY: M <= SCRATCH (checked at compile time), u8 arrays have alignment 1.
    unsafe { &*buf.as_ptr().cast::<[u8; M]>() }
}
