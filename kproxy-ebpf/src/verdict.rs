//! Program verdicts, defined once: tc actions (linux/pkt_cls.h) typed as the classifier's
//! return type, the cgroup/sock_addr answers, and the redirect that sends a packet back.

use aya_ebpf::{bindings::BPF_F_INGRESS, helpers::bpf_redirect, programs::TcContext};

/// tc: let the packet continue.
pub const TC_ACT_OK: i32 = 0;
/// tc: drop the packet.
pub const TC_ACT_SHOT: i32 = 2;

/// cgroup/sock_addr: let the syscall proceed.
pub const SYS_PROCEED: i32 = 1;
/// cgroup/sock_addr: fail the syscall (EPERM, unless the program set another error with
/// `bpf_set_retval`: socket-LB sets ECONNREFUSED).
pub const SYS_REJECT: i32 = 0;

/// Sends the skb back out of the interface it came in on (a reply built in place). Returns
/// the tc verdict.
#[inline(always)]
pub fn redirect_back(ctx: &TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's duration.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: helper without memory arguments; sends the skb out of `ifindex`.
    let verdict = unsafe { bpf_redirect(ifindex, 0) };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bpf_redirect returns a tc action (TC_ACT_REDIRECT or TC_ACT_SHOT)"
    )]
    let verdict = verdict as i32;
    verdict
}

/// Hands the skb to the receive path of the interface it is leaving (a reply built in place
/// on an egress hook, for this host's own stack). Returns the tc verdict.
#[inline(always)]
pub fn redirect_ingress(ctx: &TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's duration.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: helper without memory arguments; queues the skb on `ifindex`'s ingress.
    let verdict = unsafe { bpf_redirect(ifindex, u64::from(BPF_F_INGRESS)) };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bpf_redirect returns a tc action (TC_ACT_REDIRECT or TC_ACT_SHOT)"
    )]
    let verdict = verdict as i32;
    verdict
}
