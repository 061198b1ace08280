//! The keep-local device's egress: where the node routes the service CIDR and the
//! LoadBalancer pools (kproxy's dummy device, in place of an `unreachable` route). Only
//! traffic nothing translated gets here: socket-LB rewrote the host's service connections
//! before routing, the uplink and pod programs translated theirs before the routing table.
//! Nothing leaves the device: an echo request to a service address is answered (ping to a
//! ClusterIP or LoadBalancer IP from the node itself, as with kube-proxy's IPVS mode), a
//! service address on a port it does not serve is refused (TCP RST, ICMP port unreachable),
//! anything else gets ICMP host unreachable, as the `unreachable` route answered. Answers are
//! built in place and handed to the same device's receive path (`BPF_F_INGRESS`): for the
//! node's own sockets that is local delivery, for forwarded packets the way back to their
//! sender. A reply comes from the address it answers for, routed through this device, so
//! reverse-path filtering accepts it.

use aya_ebpf::programs::TcContext;
use kproxy_common::{
    DropReason, ETH_HLEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PacketClass, config,
};

use crate::{
    drops, icmp,
    maps::CONFIG,
    packet::{self, Flow, IpHdr},
    reject::{self, Refusal},
    tc,
    verdict::{TC_ACT_SHOT, redirect_ingress},
};

/// Version 4, 5 words of header: only such packets are answered.
const IPV4_NO_OPTIONS: u8 = 0x45;
/// Fragment offset bits (host order).
const IP_OFFSET: u16 = 0x1fff;

/// Whether the packet was forwarded from the uplink (another host): those get echo replies
/// for external service addresses only, as on the uplink itself (a ClusterIP does not
/// answer other hosts).
#[inline(always)]
fn from_uplink(ctx: &TcContext) -> bool {
    // SAFETY: the context pointer is valid for the program's duration.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    iif != 0 && CONFIG.get(config::UPLINK_IFINDEX).copied() == Some(iif)
}

/// A refusable packet without a TCP/UDP flow: an echo request or another protocol than
/// ICMP, with a plain header, not a later fragment. ICMP errors and other ICMP messages
/// are never answered with an error.
#[inline(always)]
fn other_flow(ctx: &TcContext) -> Option<Flow> {
    let ip: IpHdr = ctx.load(ETH_HLEN).ok()?;
    if ip.version_ihl != IPV4_NO_OPTIONS || u16::from_be(ip.frag_off) & IP_OFFSET != 0 {
        return None;
    }
    if ip.protocol == IPPROTO_ICMP && ctx.load::<u8>(ETH_HLEN + 20).ok()? != icmp::ICMP_ECHO {
        return None;
    }
    Some(Flow {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: 0,
        dport: 0,
        proto: ip.protocol,
        l4_off: ETH_HLEN + 20,
        tcp_flags: 0,
        l4_hdr: true,
    })
}

/// tc egress on the keep-local device. Returns the tc verdict; nothing passes.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    let (summary, flow) = packet::inspect(&tc::tc_pkt(ctx));
    if summary.class == PacketClass::NonIpv4
        || ctx.load::<u16>(12).ok().map(u16::from_be) != Some(ETH_P_IP)
    {
        return TC_ACT_SHOT;
    }
    if summary.class == PacketClass::Icmp
        && icmp::echo_reply_in_place(ctx, from_uplink(ctx)).is_some()
    {
        return redirect_ingress(ctx);
    }
    drops::count(DropReason::NotAService, u64::from(ctx.len()));
    let Some(f) = flow.or_else(|| other_flow(ctx)) else {
        return TC_ACT_SHOT;
    };
    let serves =
        matches!(f.proto, IPPROTO_TCP | IPPROTO_UDP) && icmp::vip_lookup(f.daddr).is_some();
    let how = if serves { Refusal::Port } else { Refusal::Host };
    reject::refuse_to_sender(ctx, &f, how)
}
