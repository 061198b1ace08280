//! XDP on the uplink: counts every packet and, unless tc ingress does it (`LB_IN_TC`), load
//! balances external traffic before an skb exists.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use kproxy_common::Hook;

use crate::{
    config::{debug_events_enabled, lb_in_tc},
    ct::{self, Ingress},
    ifstats, nat,
    packet::{self, Pkt},
    reject,
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
    Ok(match ct::ingress_decision(&flow, len, true) {
        Ingress::Pass => XDP_PASS,
        // Uplink clients are never backends of the node, so no hairpin (snat) here.
        Ingress::Dnat { addr, port, .. } => {
            nat::dnat_direct(&pkt, &flow, addr, port).ok_or(())?;
            XDP_PASS
        }
        Ingress::Reject => {
            // tc ingress answers it (see reject.rs); without the mark, drop rather than let
            // the packet wander off to the un-NATed address.
            if reject::xdp_mark_reject(ctx) {
                XDP_PASS
            } else {
                XDP_DROP
            }
        }
    })
}
