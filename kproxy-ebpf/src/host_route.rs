//! BPF host routing (`--host-routing bpf`, Cilium's BPF host routing for local pods): a
//! load-balanced packet whose backend is a pod of this node goes from the uplink's tc
//! ingress straight into the pod's namespace (`bpf_redirect_peer`), and the pod's reply,
//! once reverse-translated by the pod program, straight out of the uplink (`bpf_fib_lookup`
//! + `bpf_redirect`), past the bridge, netfilter and the host's routing.
//!
//! Only packets kproxy translated take it (XDP marks them in metadata; in tc LB mode the
//! changed destination says so), and only to pods in `HOST_ROUTES`, which the pod program
//! learns from the pods' replies to translated flows. Everything else (the first packet of
//! a flow to a pod not yet seen, other destinations, TTL about to expire, replies the FIB
//! does not send out of the uplink, packets over the MTU) keeps the kernel's path. A reply
//! whose next hop has no neighbour entry yet goes through `bpf_redirect_neigh`.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::{TcContext, XdpContext},
};
use kproxy_common::{ETH_HLEN, HostRoute};

use crate::{
    config::host_routing_uplink,
    maps::HOST_ROUTES,
    meta::{self, Mark},
    packet::{EthHdr, Flow, IpHdr, Pkt},
};

const AF_INET: u8 = 2;
/// `BPF_FIB_LKUP_RET_SUCCESS`, `BPF_FIB_LKUP_RET_NO_NEIGH`.
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;
/// Offsets in the IPv4 header.
const IP_TTL_OFF: usize = ETH_HLEN + 8;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;

/// XDP side: marks a packet XDP translated, so tc ingress may hand it to a local pod.
#[inline(always)]
pub fn xdp_mark_translated(ctx: &XdpContext) {
    if host_routing_uplink().is_some() {
        meta::xdp_set(ctx, Mark::Translated);
    }
}

/// Whether tc translated `flow` (its destination in the packet is no longer the parsed one).
#[inline(always)]
pub fn tc_translated(ctx: &TcContext, flow: &Flow) -> bool {
    // Host routing off (the common tc-mode case): no packet load.
    host_routing_uplink().is_some()
        && matches!(ctx.load::<u32>(ETH_HLEN + 16), Ok(d) if d != flow.daddr)
}

/// The IPv4 header's TTL, protocol and addresses, when it is there.
#[inline(always)]
fn ip_fields(ctx: &TcContext) -> Option<(u8, u8, u8, u32, u32)> {
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let ip = pkt.ptr::<IpHdr>(ETH_HLEN)?;
    // SAFETY: bounds checked by Pkt::ptr.
    Some(unsafe {
        (
            (*ip).ttl,
            (*ip).protocol,
            (*ip).tos,
            (*ip).saddr,
            (*ip).daddr,
        )
    })
}

/// Decrements the TTL (the packet is routed; callers checked it is over 1).
#[inline(always)]
fn ttl_decrement(ctx: &TcContext, ttl: u8, proto: u8) -> Option<()> {
    let old = u16::from_ne_bytes([ttl, proto]);
    let new = u16::from_ne_bytes([ttl - 1, proto]);
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 2)
        .ok()?;
    ctx.store(IP_TTL_OFF, &(ttl - 1), 0).ok()
}

/// Decrements the TTL and sets the Ethernet addresses.
#[inline(always)]
fn route_rewrite(ctx: &TcContext, ttl: u8, proto: u8, dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    ttl_decrement(ctx, ttl, proto)?;
    ctx.store(0, &dst, 0).ok()?;
    ctx.store(6, &src, 0).ok()?;
    Some(())
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the redirect helpers return a tc action (TC_ACT_REDIRECT or TC_ACT_SHOT)"
)]
#[inline(always)]
const fn tc_action(ret: i64) -> i32 {
    ret as i32
}

/// tc ingress on the uplink, for a packet kproxy translated: if its destination is a known
/// local pod, hands it to the pod's namespace and returns the verdict; `None` keeps the
/// kernel's path.
#[inline(always)]
pub fn to_pod(ctx: &TcContext) -> Option<i32> {
    host_routing_uplink()?;
    let (ttl, proto, _, _, daddr) = ip_fields(ctx)?;
    if ttl <= 1 {
        return None;
    }
    // SAFETY: the value is copied out before anything else touches the map.
    let route: HostRoute = *unsafe { HOST_ROUTES.get(daddr) }?;
    route_rewrite(ctx, ttl, proto, route.pod_mac, route.gw_mac)?;
    // SAFETY: helper without memory arguments. The kernel drops the packet if the veth
    // went away meanwhile (userspace removes the entry when it sees that).
    Some(tc_action(unsafe { bpf_redirect_peer(route.ifindex, 0) }))
}

/// Records where pod `pod_ip` is: the veth the packet came in on, the pod's MAC (source)
/// and its gateway's (destination). Written only when it changed, so the steady state costs
/// a lookup.
#[inline(always)]
fn learn(ctx: &TcContext, pod_ip: u32) {
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let Some(eth) = pkt.ptr::<EthHdr>(0) else {
        return;
    };
    // SAFETY: bounds checked by Pkt::ptr; the context pointer is valid.
    let want = unsafe {
        HostRoute {
            ifindex: (*ctx.skb.skb).ifindex,
            pod_mac: (*eth).src,
            gw_mac: (*eth).dst,
        }
    };
    // A unicast frame to the pod's gateway only.
    if want.gw_mac[0] & 1 != 0 {
        return;
    }
    // SAFETY: read and compared at once.
    if unsafe { HOST_ROUTES.get(pod_ip) } != Some(&want) {
        let _ = HOST_ROUTES.insert(pod_ip, want, 0);
    }
}

/// tc ingress on a pod veth, for a pod's reply the pod program just reverse-translated
/// (`flow` as it left the pod): learns the pod's route and, if the FIB sends the reply out
/// of the uplink with a resolved neighbour, redirects it there and returns the verdict.
#[inline(always)]
pub fn reply(ctx: &TcContext, flow: &Flow) -> Option<i32> {
    let uplink = host_routing_uplink()?;
    learn(ctx, flow.saddr);
    let (ttl, proto, tos, saddr, daddr) = ip_fields(ctx)?;
    if ttl <= 1 {
        return None;
    }
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of them).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    // tot_len 0: the kernel checks the skb against the MTU itself, GSO aware.
    // SAFETY: the context pointer is valid.
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = saddr;
    p.__bindgen_anon_4.ipv4_dst = daddr;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "the struct is 64 bytes"
    )]
    let plen = core::mem::size_of::<bpf_fib_lookup>() as i32;
    // SAFETY: `p` is a valid, writable bpf_fib_lookup of `plen` bytes.
    let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), &raw mut p, plen, 0) };
    if p.ifindex != uplink {
        return None;
    }
    match rc {
        FIB_SUCCESS => {
            route_rewrite(ctx, ttl, proto, p.dmac, p.smac)?;
            // SAFETY: helper without memory arguments.
            Some(tc_action(unsafe { bpf_redirect(uplink, 0) }))
        }
        // The next hop's MAC is not known yet (e.g. a new client source address): let
        // the neighbour subsystem resolve it and send the packet, as the kernel's path
        // would, instead of falling back until something else resolved it.
        FIB_NO_NEIGH => {
            ttl_decrement(ctx, ttl, proto)?;
            let mut nh = bpf_redir_neigh {
                nh_family: u32::from(AF_INET),
                __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                    // SAFETY: the lookup wrote the next hop there (an IPv4 address).
                    ipv4_nh: unsafe { p.__bindgen_anon_4.ipv4_dst },
                },
            };
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_possible_wrap,
                reason = "the struct is 20 bytes"
            )]
            let nlen = core::mem::size_of::<bpf_redir_neigh>() as i32;
            // SAFETY: `nh` is a valid bpf_redir_neigh of `nlen` bytes.
            Some(tc_action(unsafe {
                bpf_redirect_neigh(uplink, &raw mut nh, nlen, 0)
            }))
        }
        _ => None,
    }
}
