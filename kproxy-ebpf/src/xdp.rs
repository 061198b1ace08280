//! XDP on the uplink: counts every packet and, unless tc ingress does it (`LB_IN_TC`), load
//! balances external traffic before an skb exists.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use kproxy_common::{DropReason, Hook, PacketClass};

use crate::{
    config::{debug_events_enabled, lb_in_tc},
    ct::{self, Ingress},
    drops, host_route, icmp, ifstats, nat,
    packet::{self, Pkt},
    partial, reject,
    snat::{self, Uplink},
};

/// The uplink's XDP program; errors pass the packet.
#[inline(always)]
pub fn uplink(ctx: &XdpContext) -> Result<u32, ()> {
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let (summary, flow) = packet::inspect(&pkt);
    let len = (pkt.end - pkt.data) as u64;
    ifstats::count(Hook::XdpIngress, &summary, len);
    drops::count_malformed(&summary, len);
    // Counted here in both LB modes: tc ingress would miss the same first fragment.
    if summary.frag_missing {
        drops::count(DropReason::FragMissing, len);
    }
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
        if summary.class == PacketClass::Icmp {
            icmp::xdp_translate_error(&pkt);
        }
        return Ok(XDP_PASS);
    };
    // An unfinished (CHECKSUM_PARTIAL) checksum: only tc can rewrite it right. A later
    // fragment has no checksum field (and fragmented datagrams carry full checksums).
    if flow.l4_hdr && partial::looks_partial(&pkt, &flow) {
        return Ok(partial::xdp_defer(ctx, len));
    }
    // A backend on another node answering an SNAT flow.
    if let Some(ct) = ct::snat_reply(&flow, len) {
        let (src, dst) = ((ct.nat_addr, ct.nat_port), (ct.snat_addr, ct.snat_port));
        return Ok(snat::xdp_forward(ctx, &pkt, &flow, src, dst, len));
    }
    Ok(
        match ct::ingress_decision(&flow, len, Some(Uplink::xdp(ctx))) {
            Ingress::Pass => XDP_PASS,
            Ingress::Dnat {
                addr,
                port,
                snat,
                snat_port,
            } if snat_port != 0 => {
                snat::xdp_forward(ctx, &pkt, &flow, (snat, snat_port), (addr, port), len)
            }
            // Uplink clients are never backends of the node, so no hairpin (snat) here.
            Ingress::Dnat { addr, port, .. } => {
                nat::dnat_direct(&pkt, &flow, addr, port)
                    .ok_or_else(|| drops::count(DropReason::NatFailed, len))?;
                host_route::xdp_mark_translated(ctx);
                XDP_PASS
            }
            Ingress::Drop => XDP_DROP,
            Ingress::Reject => {
                // tc ingress answers it (see reject.rs); without the mark, drop rather than let
                // the packet wander off to the un-NATed address.
                if reject::xdp_mark_reject(ctx) {
                    XDP_PASS
                } else {
                    drops::count(DropReason::RejectFailed, len);
                    XDP_DROP
                }
            }
        },
    )
}
