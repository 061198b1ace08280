//! Address translation of a packet: rewriting its destination (DNAT to a backend) or source
//! (reverse NAT, hairpin) and fixing the checksums, in place in XDP or through the kernel's
//! skb helpers in tc.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use kproxy_common::{ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP};

use crate::packet::{Flow, IpHdr, Pkt, TcpHdr, UdpHdr};

// === Checksums (RFC 1624 incremental update of a full checksum) ===
//
// One's-complement sums do not depend on byte order as long as every word is read the same
// way, so the words are used exactly as loaded from the packet.

/// The checksum `check` after a 16-bit word changed from `old` to `new`.
#[inline(always)]
pub fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The checksum of a one's-complement sum of 16-bit words (at most 2^16 of them).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "folded twice: fits 16 bits"
    )]
    !(sum as u16)
}

/// The checksum `check` after a 32-bit value changed from `old` to `new`.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "splits each value into its 16-bit halves"
)]
pub fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let c = csum_replace2(check, old as u16, new as u16);
    csum_replace2(c, (old >> 16) as u16, (new >> 16) as u16)
}

/// Rewrites the destination address and port in place (XDP: full checksums only; packets
/// from a real NIC always carry them, and `partial.rs` sends unfinished ones to tc).
#[inline(always)]
pub fn dnat_direct(pkt: &Pkt, f: &Flow, addr: u32, port: u16) -> Option<()> {
    let ip: *mut IpHdr = pkt.ptr(ETH_HLEN)?;
    // SAFETY: bounds checked; XDP buffers are writable.
    unsafe {
        (*ip).check = csum_replace4((*ip).check, f.daddr, addr);
        (*ip).daddr = addr;
    }
    // A later fragment's "L4" bytes are payload; the first fragment's checksum update
    // covered the whole datagram.
    if !f.l4_hdr {
        return Some(());
    }
    if f.proto == IPPROTO_TCP {
        let tcp: *mut TcpHdr = pkt.ptr(f.l4_off)?;
        // SAFETY: bounds checked.
        unsafe {
            let c = csum_replace4((*tcp).check, f.daddr, addr);
            (*tcp).check = csum_replace2(c, f.dport, port);
            (*tcp).dest = port;
        }
    } else {
        let udp: *mut UdpHdr = pkt.ptr(f.l4_off)?;
        // SAFETY: bounds checked.
        unsafe {
            // A zero UDP checksum means "none" and must stay zero.
            if (*udp).check != 0 {
                let c = csum_replace2(csum_replace4((*udp).check, f.daddr, addr), f.dport, port);
                (*udp).check = if c == 0 { 0xffff } else { c };
            }
            (*udp).dest = port;
        }
    }
    Some(())
}

/// Rewrites only the source (`dst == false`) or destination address of an skb, keeping
/// the port (hairpin translation).
#[inline(always)]
pub fn nat_skb_addr(ctx: &TcContext, f: &Flow, dst: bool, old: u32, new: u32) -> Result<(), i64> {
    let addr_off = if dst { ETH_HLEN + 16 } else { ETH_HLEN + 12 };
    if !f.l4_hdr {
        return nat_skb_ip_only(ctx, addr_off, old, new);
    }
    let csum_off = f.l4_off + l4_csum_off(f);
    ctx.l4_csum_replace(
        csum_off,
        u64::from(old),
        u64::from(new),
        u64::from(BPF_F_PSEUDO_HDR) | mangled(f) | 4,
    )?;
    ctx.l3_csum_replace(ETH_HLEN + 10, u64::from(old), u64::from(new), 4)?;
    ctx.store(addr_off, &new, 0)?;
    Ok(())
}

/// Rewrites one address of a later IP fragment: the IP header only, its payload has no L4
/// header to fix (the first fragment's L4 checksum update covered the whole datagram).
#[inline(always)]
fn nat_skb_ip_only(ctx: &TcContext, addr_off: usize, old: u32, new: u32) -> Result<(), i64> {
    ctx.l3_csum_replace(ETH_HLEN + 10, u64::from(old), u64::from(new), 4)?;
    ctx.store(addr_off, &new, 0)?;
    Ok(())
}

/// `BPF_F_MARK_MANGLED_0` for UDP: a zero checksum means "none" and must stay zero.
#[inline(always)]
fn mangled(f: &Flow) -> u64 {
    if f.proto == IPPROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    }
}

/// L4 checksum offset inside the TCP/UDP header.
#[inline(always)]
fn l4_csum_off(f: &Flow) -> usize {
    if f.proto == IPPROTO_TCP { 16 } else { 6 }
}

/// Rewrites one address and the matching port of an skb through the kernel helpers, which
/// also handle checksums the kernel has not finished (CHECKSUM_PARTIAL) correctly.
/// `dst` selects the destination (DNAT) or the source (reverse NAT).
#[inline(always)]
pub fn nat_skb(ctx: &TcContext, f: &Flow, dst: bool, addr: u32, port: u16) -> Result<(), i64> {
    let (old_addr, old_port, port_off) = if dst {
        (f.daddr, f.dport, f.l4_off + 2)
    } else {
        (f.saddr, f.sport, f.l4_off)
    };
    nat_skb_addr(ctx, f, dst, old_addr, addr)?;
    if !f.l4_hdr {
        return Ok(());
    }
    let csum_off = f.l4_off + l4_csum_off(f);
    ctx.l4_csum_replace(
        csum_off,
        u64::from(old_port),
        u64::from(port),
        mangled(f) | 2,
    )?;
    ctx.store(port_off, &port, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full Internet checksum over big-endian words, as a receiver verifies it.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "folded until it fits 16 bits"
    )]
    fn full(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|w| u32::from(*w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "splits the address into words"
    )]
    fn incremental_update_matches_recomputation() {
        // An IPv4 header as words (checksum word zeroed), then change the destination.
        let mut hdr = [
            0x4500u16, 0x003c, 0x1c46, 0x4000, 0x4006, 0x0000, 0xc000, 0x0201, 0xac1e, 0x000a,
        ];
        let check = full(&hdr);
        let old = (u32::from(hdr[8]) << 16) | u32::from(hdr[9]);
        let new = 0x0af4_0102u32;
        hdr[8] = (new >> 16) as u16;
        hdr[9] = new as u16;
        // The words as loaded from memory on a little-endian CPU are byte-swapped; the
        // one's-complement update must not care.
        let swapped = csum_replace4(check.swap_bytes(), old.swap_bytes(), new.swap_bytes());
        assert_eq!(swapped.swap_bytes(), full(&hdr));
        assert_eq!(csum_replace4(check, old, new), full(&hdr));
    }
}
