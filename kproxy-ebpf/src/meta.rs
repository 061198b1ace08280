//! Marks XDP leaves for the uplink's tc ingress: 4 bytes of packet metadata in front of the
//! frame, which survive into the skb that tc sees. XDP decides, tc acts where only an skb
//! can (answer a refusal, rewrite an unfinished checksum, redirect into a pod).

use aya_ebpf::{
    helpers::bpf_xdp_adjust_meta,
    programs::{TcContext, XdpContext},
};

/// What XDP asks tc ingress to do with a packet.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Refuse it (see `reject`): its service has no ready backend.
    Reject = 0x6b70_7272,
    /// Balance it in tc (see `partial`): its checksum is unfinished.
    LbInTc = 0x6b70_6370,
    /// XDP translated it; it may be host-routed to a local pod (see `host_route`).
    Translated = 0x6b70_6872,
    /// XDP translated a packet of an SNAT flow; tc sends it out (see `snat`, `fwd`).
    Forward = 0x6b70_6677,
}

/// Leaves `mark` in front of the packet (XDP side); false when there is no room.
#[inline(always)]
pub fn xdp_set(ctx: &XdpContext, mark: Mark) -> bool {
    // SAFETY: grows the metadata area in front of the packet; checked below.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -4) } != 0 {
        return false;
    }
    let meta = ctx.metadata();
    if meta + 4 > ctx.data() {
        return false;
    }
    // SAFETY: bounds checked against data (the end of the metadata area).
    unsafe { *(meta as *mut u32) = mark as u32 };
    true
}

/// The mark XDP left on this skb, if any (tc side): one read of the metadata word.
#[inline(always)]
pub fn tc_mark(ctx: &TcContext) -> Option<Mark> {
    // SAFETY: the context pointer is valid; data_meta/data are packet pointers.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + 4 > data {
        return None;
    }
    // SAFETY: bounds checked.
    let word = unsafe { *(meta as *const u32) };
    [Mark::Reject, Mark::LbInTc, Mark::Translated, Mark::Forward]
        .into_iter()
        .find(|m| *m as u32 == word)
}
