//! ARP answers for the LoadBalancer IPs the node serves (the L2 announcement MetalLB and
//! Cilium do): a client on the uplink's segment asks who has the EXTERNAL-IP, the uplink's
//! tc ingress turns the request into the reply in place and sends it back out, so the
//! client's traffic then arrives on the uplink and takes the XDP path. Done in tc rather
//! than XDP because XDP_TX on a veth uplink needs an XDP program on the peer.

use aya_ebpf::programs::TcContext;

use crate::{config::uplink_mac, maps::L2, verdict::redirect_back};

const ETH_P_ARP: u16 = 0x0806;
/// Hardware type Ethernet, protocol IPv4, address lengths 6 and 4, operation request.
const IPV4_OVER_ETHERNET_REQUEST: [u8; 8] = [0, 1, 0x08, 0x00, 6, 4, 0, 1];
const ARP_REPLY: [u8; 2] = [0, 2];
// Offsets in an Ethernet frame carrying an IPv4-over-Ethernet ARP packet.
const OFF_PROTO: usize = 12;
const OFF_ARP: usize = 14;
const OFF_OPER: usize = 20;
const OFF_SHA: usize = 22;
const OFF_SPA: usize = 28;
const OFF_THA: usize = 32;
const OFF_TPA: usize = 38;

/// Answers an ARP request for an announced address: returns the verdict (the reply is
/// redirected out of the interface it came in on), or `None` when the packet is not one.
#[inline(always)]
pub fn answer(ctx: &TcContext) -> Option<i32> {
    let proto: u16 = ctx.load(OFF_PROTO).ok()?;
    if u16::from_be(proto) != ETH_P_ARP {
        return None;
    }
    let head: [u8; 8] = ctx.load(OFF_ARP).ok()?;
    if head != IPV4_OVER_ETHERNET_REQUEST {
        return None;
    }
    let target: u32 = ctx.load(OFF_TPA).ok()?;
    // SAFETY: read-only presence check.
    unsafe { L2.get(target) }?;
    let mac = uplink_mac()?;
    let asker_mac: [u8; 6] = ctx.load(OFF_SHA).ok()?;
    let asker_ip: u32 = ctx.load(OFF_SPA).ok()?;
    // Ethernet to the asker from us; the ARP reply says `target` is at our address.
    ctx.store(0, &asker_mac, 0).ok()?;
    ctx.store(6, &mac, 0).ok()?;
    ctx.store(OFF_OPER, &ARP_REPLY, 0).ok()?;
    ctx.store(OFF_SHA, &mac, 0).ok()?;
    ctx.store(OFF_SPA, &target, 0).ok()?;
    ctx.store(OFF_THA, &asker_mac, 0).ok()?;
    ctx.store(OFF_TPA, &asker_ip, 0).ok()?;
    Some(redirect_back(ctx))
}
