//! kproxy's eBPF programs. Entry points are thin: each calls a `try_` function and maps its
//! result to the program's verdict, so errors never escape as an abort.
//!
//! The crate only makes sense for bpfel-unknown-none; on the host (`cargo clippy --workspace`)
//! it compiles as an ordinary program that says so, which keeps the whole workspace lintable.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    clippy::inline_always,
    reason = "helpers are inlined into each program on purpose: one verifier pass per program, no BPF-to-BPF calls with packet pointers"
)]

mod arp;
mod lb;
mod maps;
mod nat;
mod packet;
mod sock;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use kproxy_common::{Hook, config, ifstats_index};
use maps::{CONFIG, IFSTATS};
use packet::Summary;

/// tc verdicts (linux/pkt_cls.h), typed as the classifier's return type.
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

#[inline(always)]
fn debug_events_enabled() -> bool {
    matches!(CONFIG.get(config::DEBUG_EVENTS), Some(v) if *v != 0)
}

#[inline(always)]
fn lb_in_tc() -> bool {
    matches!(CONFIG.get(config::LB_IN_TC), Some(v) if *v != 0)
}

#[inline(always)]
fn count(hook: Hook, summary: &Summary, len: u64) {
    if let Some(counter) = IFSTATS.get_ptr_mut(ifstats_index(hook, summary.class)) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

#[xdp]
pub fn kproxy_xdp(ctx: XdpContext) -> u32 {
    try_kproxy_xdp(&ctx).unwrap_or(XDP_PASS)
}

#[inline(always)]
fn try_kproxy_xdp(ctx: &XdpContext) -> Result<u32, ()> {
    let pkt = nat::Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let (summary, flow) = packet::inspect(&pkt);
    let len = (pkt.end - pkt.data) as u64;
    count(Hook::XdpIngress, &summary, len);
    if debug_events_enabled() {
        debug!(
            ctx,
            "xdp-ingress {} {:i} -> {:i} len {}",
            summary.class.name(),
            u32::from_be(summary.saddr),
            u32::from_be(summary.daddr),
            len
        );
    }
    if lb_in_tc() {
        return Ok(XDP_PASS);
    }
    let Some(flow) = flow else {
        return Ok(XDP_PASS);
    };
    Ok(match nat::ingress_decision(&flow, len, true) {
        nat::Ingress::Pass => XDP_PASS,
        // Uplink clients are never backends of the node, so no hairpin (snat) here.
        nat::Ingress::Dnat { addr, port, .. } => {
            nat::dnat_direct(&pkt, &flow, addr, port).ok_or(())?;
            XDP_PASS
        }
        nat::Ingress::Reject => {
            // tc ingress answers it (see nat.rs); without the mark, drop rather than let
            // the packet wander off to the un-NATed address.
            if nat::xdp_mark_reject(ctx) {
                XDP_PASS
            } else {
                XDP_DROP
            }
        }
    })
}

#[classifier]
pub fn kproxy_tc_ingress(ctx: TcContext) -> i32 {
    try_kproxy_tc_ingress(&ctx).unwrap_or(TC_ACT_OK)
}

#[classifier]
pub fn kproxy_tc_egress(ctx: TcContext) -> i32 {
    try_kproxy_tc_egress(&ctx).unwrap_or(TC_ACT_OK)
}

/// Headers we may need linear: Ethernet, IPv4 with options, TCP.
const MAX_HDR: u32 = 14 + 60 + 20;

/// Makes the headers directly readable and returns the packet bounds.
#[inline(always)]
fn tc_pkt(ctx: &TcContext) -> nat::Pkt {
    let want = if ctx.len() < MAX_HDR {
        ctx.len()
    } else {
        MAX_HDR
    };
    // Usually the headers are linear already; pull only when they are not.
    if ctx.data_end() - ctx.data() < want as usize {
        let _ = ctx.pull_data(want);
    }
    nat::Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    }
}

/// Per-packet load balancing of a parsed flow in tc (uplink ingress in tc mode, pod veths).
#[inline(always)]
fn tc_lb(ctx: &TcContext, flow: &nat::Flow, external_only: bool) -> Result<i32, ()> {
    match nat::ingress_decision(flow, u64::from(ctx.len()), external_only) {
        nat::Ingress::Pass => Ok(TC_ACT_OK),
        nat::Ingress::Dnat { addr, port, snat } => {
            nat::nat_skb(ctx, flow, true, addr, port).map_err(|_| ())?;
            if snat != 0 {
                nat::nat_skb_addr(ctx, flow, false, flow.saddr, snat).map_err(|_| ())?;
            }
            Ok(TC_ACT_OK)
        }
        nat::Ingress::Reject => nat::reject_skb(ctx, flow).map_err(|_| ()),
    }
}

/// tc egress on the uplink: replies of load-balanced flows leave with the frontend as source.
#[inline(always)]
fn tc_egress_revnat(ctx: &TcContext, flow: &nat::Flow) -> Result<i32, ()> {
    // Uplink flows never hairpin (clients there are not backends of this node).
    if let Some(ct) = nat::reply_lookup(flow, u64::from(ctx.len())) {
        nat::nat_skb(ctx, flow, false, ct.nat_addr, ct.nat_port).map_err(|_| ())?;
    }
    Ok(TC_ACT_OK)
}

/// tc ingress on a pod's host-side veth (packets leaving the pod): per-packet DNAT of
/// service traffic the socket-LB did not translate (e.g. processes outside the node's
/// cgroup hierarchy, raw sockets), reverse NAT of backends' replies, hairpin.
#[classifier]
pub fn kproxy_tc_pod(ctx: TcContext) -> i32 {
    try_kproxy_tc_pod(&ctx).unwrap_or(TC_ACT_OK)
}

#[inline(always)]
fn try_kproxy_tc_pod(ctx: &TcContext) -> Result<i32, ()> {
    let Some(flow) = packet::inspect(&tc_pkt(ctx)).1 else {
        return Ok(TC_ACT_OK);
    };
    // A backend pod answering a translated flow?
    if pod_revnat(ctx, &flow)? {
        return Ok(TC_ACT_OK);
    }
    tc_lb(ctx, &flow, false)
}

/// tc egress on a pod's host-side veth (packets going to the pod): reverse NAT of replies
/// from backends that are not pods on this bridge — host-network backends (the API
/// server's `kubernetes` endpoint) and backends beyond the uplink. Replies from pod
/// backends were already translated when they left their own pod.
#[classifier]
pub fn kproxy_tc_pod_egress(ctx: TcContext) -> i32 {
    try_kproxy_tc_pod_egress(&ctx).unwrap_or(TC_ACT_OK)
}

#[inline(always)]
fn try_kproxy_tc_pod_egress(ctx: &TcContext) -> Result<i32, ()> {
    if let Some(flow) = packet::inspect(&tc_pkt(ctx)).1 {
        pod_revnat(ctx, &flow)?;
    }
    Ok(TC_ACT_OK)
}

/// Reverse NAT of a tracked reply (and undoing the hairpin source); whether it was one.
#[inline(always)]
fn pod_revnat(ctx: &TcContext, flow: &nat::Flow) -> Result<bool, ()> {
    let Some(ct) = nat::reply_lookup(flow, u64::from(ctx.len())) else {
        return Ok(false);
    };
    nat::nat_skb(ctx, flow, false, ct.nat_addr, ct.nat_port).map_err(|_| ())?;
    if ct.hairpin_addr != 0 {
        nat::nat_skb_addr(ctx, flow, true, flow.daddr, ct.hairpin_addr).map_err(|_| ())?;
    }
    Ok(true)
}

#[cgroup_sock_addr(connect4)]
pub fn kproxy_sock4_connect(ctx: SockAddrContext) -> i32 {
    sock::xlate_forward(&ctx, false)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn kproxy_sock4_sendmsg(ctx: SockAddrContext) -> i32 {
    sock::xlate_forward(&ctx, true)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn kproxy_sock4_recvmsg(ctx: SockAddrContext) -> i32 {
    sock::xlate_reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn kproxy_sock4_getpeername(ctx: SockAddrContext) -> i32 {
    sock::xlate_reverse(&ctx)
}

#[inline(always)]
fn try_kproxy_tc_egress(ctx: &TcContext) -> Result<i32, ()> {
    let (summary, flow) = packet::inspect(&tc_pkt(ctx));
    let len = u64::from(ctx.len());
    count(Hook::TcEgress, &summary, len);
    // Debug events only here: with the LB and reject paths, the ingress program's stack
    // plus aya-log's record buffer would exceed the 512-byte BPF stack.
    if debug_events_enabled() {
        debug!(
            ctx,
            "tc-egress {} {:i} -> {:i} len {}",
            summary.class.name(),
            u32::from_be(summary.saddr),
            u32::from_be(summary.daddr),
            len
        );
    }
    match flow {
        Some(flow) => tc_egress_revnat(ctx, &flow),
        None => Ok(TC_ACT_OK),
    }
}

#[inline(always)]
fn try_kproxy_tc_ingress(ctx: &TcContext) -> Result<i32, ()> {
    let (summary, flow) = packet::inspect(&tc_pkt(ctx));
    count(Hook::TcIngress, &summary, u64::from(ctx.len()));
    let Some(flow) = flow else {
        if let Some(verdict) = arp::answer(ctx) {
            return Ok(verdict);
        }
        // XDP only marks packets it parsed; drop a marked one we cannot answer.
        return Ok(if nat::tc_marked_reject(ctx) {
            TC_ACT_SHOT
        } else {
            TC_ACT_OK
        });
    };
    if lb_in_tc() {
        // The uplink's external load balancing runs here instead of in XDP.
        return tc_lb(ctx, &flow, true);
    }
    if nat::tc_marked_reject(ctx) {
        return nat::reject_skb(ctx, &flow).map_err(|_| ());
    }
    Ok(TC_ACT_OK)
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("kproxy-ebpf targets bpfel-unknown-none; kproxy's build.rs builds and embeds it");
    std::process::exit(2);
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
