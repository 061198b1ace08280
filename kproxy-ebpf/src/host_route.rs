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
    helpers::bpf_redirect_peer,
    programs::{TcContext, XdpContext},
};
use kproxy_common::{ETH_HLEN, HostRoute};

use crate::{
    config::host_routing_uplink,
    fwd::{self, ip_fields, route_rewrite, tc_action},
    maps::HOST_ROUTES,
    meta::{self, Mark},
    packet::{EthHdr, Flow, Pkt},
};

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
    fwd::route_out(ctx, Some(uplink))
}
