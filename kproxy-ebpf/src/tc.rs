//! The tc programs: on the uplink (ingress: refusals XDP marked, ARP for LoadBalancer IPs,
//! or the external load balancing in tc mode; egress: reverse NAT of replies) and on pod
//! veths (per-packet load balancing of traffic socket-LB did not translate, reverse NAT,
//! hairpin). Each returns the tc verdict; errors let the packet continue.

use aya_ebpf::programs::TcContext;
use aya_log_ebpf::debug;
use kproxy_common::{DropReason, Hook, PacketClass};

use crate::{
    arp,
    config::{debug_events_enabled, lb_in_tc},
    ct::{self, Ingress},
    drops, fwd, host_route, icmp, ifstats,
    meta::{self, Mark},
    nat,
    packet::{self, Flow, Pkt},
    reject,
    snat::Uplink,
    verdict::{TC_ACT_OK, TC_ACT_SHOT},
};

/// Headers we may need linear: Ethernet, IPv4 with options, TCP.
const MAX_HDR: u32 = 14 + 60 + 20;

/// Makes the headers directly readable and returns the packet bounds.
#[inline(always)]
pub fn tc_pkt(ctx: &TcContext) -> Pkt {
    let want = if ctx.len() < MAX_HDR {
        ctx.len()
    } else {
        MAX_HDR
    };
    // Usually the headers are linear already; pull only when they are not.
    if ctx.data_end() - ctx.data() < want as usize {
        let _ = ctx.pull_data(want);
    }
    Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    }
}

/// Counts a rewrite a kernel helper refused (the packet goes on as it is).
#[inline(always)]
fn nat_failed(ctx: &TcContext) {
    drops::count(DropReason::NatFailed, u64::from(ctx.len()));
}

/// Per-packet load balancing of a parsed flow in tc (uplink ingress in tc mode, pod veths).
#[inline(always)]
fn tc_lb(ctx: &TcContext, flow: &Flow, external_only: bool) -> Result<i32, ()> {
    let uplink = external_only.then(|| Uplink::tc(ctx));
    match ct::ingress_decision(flow, u64::from(ctx.len()), uplink) {
        Ingress::Pass => Ok(TC_ACT_OK),
        Ingress::Dnat {
            addr,
            port,
            snat,
            snat_port,
        } => {
            nat::nat_skb(ctx, flow, true, addr, port).map_err(|_| nat_failed(ctx))?;
            // SNAT to a backend on another node: the source too, then out of the node.
            if snat_port != 0 {
                nat::nat_skb(ctx, flow, false, snat, snat_port).map_err(|_| nat_failed(ctx))?;
                return Ok(fwd::forward(ctx));
            }
            if snat != 0 {
                nat::nat_skb_addr(ctx, flow, false, flow.saddr, snat)
                    .map_err(|_| nat_failed(ctx))?;
            }
            Ok(TC_ACT_OK)
        }
        Ingress::Reject => Ok(reject::reject_skb(ctx, flow)),
        Ingress::Drop => Ok(TC_ACT_SHOT),
    }
}

/// tc egress on the uplink: replies of load-balanced flows leave with the frontend as source.
#[inline(always)]
fn tc_egress_revnat(ctx: &TcContext, flow: &Flow) -> Result<i32, ()> {
    // Uplink flows never hairpin (clients there are not backends of this node).
    if let Some(ct) = ct::reply_lookup(flow, u64::from(ctx.len())) {
        nat::nat_skb(ctx, flow, false, ct.nat_addr, ct.nat_port).map_err(|_| nat_failed(ctx))?;
    }
    Ok(TC_ACT_OK)
}

/// Reverse NAT of a tracked reply (and undoing the hairpin source); whether it was one.
#[inline(always)]
fn pod_revnat(ctx: &TcContext, flow: &Flow) -> Result<bool, ()> {
    let Some(ct) = ct::reply_lookup(flow, u64::from(ctx.len())) else {
        return Ok(false);
    };
    nat::nat_skb(ctx, flow, false, ct.nat_addr, ct.nat_port).map_err(|_| nat_failed(ctx))?;
    if ct.snat_addr != 0 {
        nat::nat_skb_addr(ctx, flow, true, flow.daddr, ct.snat_addr)
            .map_err(|_| nat_failed(ctx))?;
    }
    Ok(true)
}

/// A backend on another node answering an SNAT flow (uplink ingress, tc): translated back
/// (source: the frontend, destination: the client) and sent on; `None` if it is none.
#[inline(always)]
fn snat_reply(ctx: &TcContext, flow: &Flow) -> Result<Option<i32>, ()> {
    let Some(ct) = ct::snat_reply(flow, u64::from(ctx.len())) else {
        return Ok(None);
    };
    nat::nat_skb(ctx, flow, false, ct.nat_addr, ct.nat_port).map_err(|_| nat_failed(ctx))?;
    nat::nat_skb(ctx, flow, true, ct.snat_addr, ct.snat_port).map_err(|_| nat_failed(ctx))?;
    Ok(Some(fwd::forward(ctx)))
}

/// tc ingress on the uplink.
#[inline(always)]
pub fn uplink_ingress(ctx: &TcContext) -> Result<i32, ()> {
    let (summary, flow) = packet::inspect(&tc_pkt(ctx));
    ifstats::count(Hook::TcIngress, &summary, u64::from(ctx.len()));
    let mark = meta::tc_mark(ctx);
    let Some(flow) = flow else {
        // Errors from outside are translated in XDP unless the LB runs here.
        if summary.class == PacketClass::Icmp
            && let Some(verdict) = icmp::tc_hook(ctx, summary.class, Some(true), lb_in_tc())
        {
            return Ok(verdict);
        }
        if let Some(verdict) = arp::answer(ctx) {
            return Ok(verdict);
        }
        // XDP only marks packets it parsed; drop a marked one we cannot answer.
        return Ok(if mark == Some(Mark::Reject) {
            drops::count(DropReason::RejectFailed, u64::from(ctx.len()));
            TC_ACT_SHOT
        } else {
            TC_ACT_OK
        });
    };
    // Also packets XDP left here for their unfinished checksum (see partial.rs).
    if mark == Some(Mark::LbInTc) || lb_in_tc() {
        // The uplink's external load balancing runs here instead of in XDP.
        if let Some(verdict) = snat_reply(ctx, &flow)? {
            return Ok(verdict);
        }
        let verdict = tc_lb(ctx, &flow, true)?;
        if verdict == TC_ACT_OK && host_route::tc_translated(ctx, &flow) {
            return Ok(host_route::to_pod(ctx).unwrap_or(verdict));
        }
        return Ok(verdict);
    }
    if mark == Some(Mark::Reject) {
        return Ok(reject::reject_skb(ctx, &flow));
    }
    if mark == Some(Mark::Forward) {
        return Ok(fwd::forward(ctx));
    }
    if mark == Some(Mark::Translated) {
        return Ok(host_route::to_pod(ctx).unwrap_or(TC_ACT_OK));
    }
    Ok(TC_ACT_OK)
}

/// tc egress on the uplink.
#[inline(always)]
pub fn uplink_egress(ctx: &TcContext) -> Result<i32, ()> {
    let (summary, flow) = packet::inspect(&tc_pkt(ctx));
    let len = u64::from(ctx.len());
    ifstats::count(Hook::TcEgress, &summary, len);
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
        None => Ok(icmp::tc_hook(ctx, summary.class, None, true).unwrap_or(TC_ACT_OK)),
    }
}

/// tc ingress on a pod's host-side veth (packets leaving the pod).
#[inline(always)]
pub fn pod_ingress(ctx: &TcContext) -> Result<i32, ()> {
    let (summary, flow) = packet::inspect(&tc_pkt(ctx));
    drops::count_malformed(&summary, u64::from(ctx.len()));
    if summary.frag_missing {
        drops::count(DropReason::FragMissing, u64::from(ctx.len()));
    }
    let Some(flow) = flow else {
        return Ok(icmp::tc_hook(ctx, summary.class, Some(false), true).unwrap_or(TC_ACT_OK));
    };
    // A backend pod answering a translated flow?
    if pod_revnat(ctx, &flow)? {
        return Ok(host_route::reply(ctx, &flow).unwrap_or(TC_ACT_OK));
    }
    tc_lb(ctx, &flow, false)
}

/// tc egress on a pod's host-side veth (packets going to the pod).
#[inline(always)]
pub fn pod_egress(ctx: &TcContext) -> Result<i32, ()> {
    match packet::inspect(&tc_pkt(ctx)) {
        (_, Some(flow)) => {
            pod_revnat(ctx, &flow)?;
        }
        (summary, None) => {
            icmp::tc_hook(ctx, summary.class, None, true);
        }
    }
    Ok(TC_ACT_OK)
}
