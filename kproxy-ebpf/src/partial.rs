//! Packets whose L4 checksum the sender left to the device (`CHECKSUM_PARTIAL`): a local
//! sender's packets cross a veth (or reach generic XDP) that way when the sending device
//! has checksum offload on (the default for veths). Their checksum field holds only the
//! folded pseudo-header sum, and the device (or the kernel, in software) adds the L4 bytes
//! later. XDP cannot see `ip_summed`, and the full-checksum update `nat::dnat_direct` does
//! is wrong for such a field (the address change goes in with the wrong sign, the port
//! change must not go in at all): the packet would leave with a bad checksum.
//!
//! So XDP recognises them — the field equals the pseudo-header sum, which a full checksum
//! does only by a 1-in-65,536 coincidence — and leaves them to tc ingress (marked in the
//! metadata), where the kernel's `l4_csum_replace` knows `ip_summed` and updates the field
//! the right way. A full-checksum packet that matches by coincidence is merely balanced in
//! tc too, correctly. Packets from a real NIC always carry full checksums and stay in XDP.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use kproxy_common::{DropReason, ETH_HLEN, IPPROTO_TCP};

use crate::{
    drops,
    meta::{self, Mark},
    packet::{Flow, IpHdr, Pkt, TcpHdr, UdpHdr},
};

/// Whether the flow's L4 checksum field holds just its pseudo-header sum (an unfinished,
/// `CHECKSUM_PARTIAL` checksum).
#[inline(always)]
pub fn looks_partial(pkt: &Pkt, f: &Flow) -> bool {
    let Some(ip) = pkt.ptr::<IpHdr>(ETH_HLEN) else {
        return false;
    };
    // SAFETY: bounds checked by Pkt::ptr.
    let (vihl, tot_len) = unsafe { ((*ip).version_ihl, u16::from_be((*ip).tot_len)) };
    let l4_len = tot_len.wrapping_sub(u16::from(vihl & 0x0f) * 4);
    let check = if f.proto == IPPROTO_TCP {
        let Some(tcp) = pkt.ptr::<TcpHdr>(f.l4_off) else {
            return false;
        };
        // SAFETY: bounds checked.
        unsafe { (*tcp).check }
    } else {
        let Some(udp) = pkt.ptr::<UdpHdr>(f.l4_off) else {
            return false;
        };
        // SAFETY: bounds checked.
        unsafe { (*udp).check }
    };
    check == pseudo_sum(f.saddr, f.daddr, f.proto, l4_len)
}

/// The folded (not complemented) one's-complement sum of the IPv4 pseudo-header, in the
/// byte order words are loaded in (addresses as on the wire; `proto` and `l4_len` as
/// numbers): what the kernel stores in the checksum field of a `CHECKSUM_PARTIAL` packet.
#[inline(always)]
pub fn pseudo_sum(saddr: u32, daddr: u32, proto: u8, l4_len: u16) -> u16 {
    let sum = (saddr & 0xffff)
        + (saddr >> 16)
        + (daddr & 0xffff)
        + (daddr >> 16)
        + u32::from(u16::from(proto).to_be())
        + u32::from(l4_len.to_be());
    !crate::nat::fold(sum)
}

/// Leaves the packet to tc ingress: XDP_PASS with the mark, or (no metadata room, which
/// XDP's guaranteed headroom makes impossible in practice) a counted drop rather than a
/// packet that goes on untranslated.
#[inline(always)]
pub fn xdp_defer(ctx: &XdpContext, len: u64) -> u32 {
    if meta::xdp_set(ctx, Mark::LbInTc) {
        return XDP_PASS;
    }
    drops::count(DropReason::NatFailed, len);
    XDP_DROP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_sum_matches_the_kernels_partial_field() {
        // 192.0.2.1 -> 192.0.2.150, TCP, 40 bytes of L4: the big-endian pseudo-header
        // words c000 0201 c000 0296 0006 0028 sum to 0x184c5, folded 0x84c6.
        let saddr = u32::from_ne_bytes([192, 0, 2, 1]);
        let daddr = u32::from_ne_bytes([192, 0, 2, 150]);
        let want = 0x84c6u16;
        assert_eq!(
            pseudo_sum(saddr, daddr, 6, 40),
            u16::from_ne_bytes(want.to_be_bytes())
        );
    }
}
