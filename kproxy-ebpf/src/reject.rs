//! Refusing flows to services without a ready backend.
//!
//! XDP cannot grow a frame into an ICMP error portably, and XDP_TX on veth only works when
//! the peer runs XDP too; so XDP marks the packet (4 bytes of metadata) and passes it, and
//! tc ingress, which sees the same packet as an skb, answers it: a TCP RST, or an ICMP port
//! unreachable for UDP. In tc LB mode, tc ingress decides and answers by itself. The reply
//! is built in the per-CPU scratch buffer and replaces the packet.

use aya_ebpf::{
    helpers::bpf_skb_change_tail,
    programs::{TcContext, XdpContext},
};
use kproxy_common::{DropReason, ETH_HLEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP};

use crate::{
    drops,
    meta::{self, Mark},
    nat::fold,
    packet::{Flow, TCP_FLAG_ACK, TCP_FLAG_RST, TCP_FLAG_SYN, TcpHdr},
    scratch::{SCRATCH, first_bytes, scratch},
    verdict::{TC_ACT_SHOT, redirect_back, redirect_ingress},
};

/// Marks the packet for refusal in tc ingress (XDP side).
#[inline(always)]
pub fn xdp_mark_reject(ctx: &XdpContext) -> bool {
    meta::xdp_set(ctx, Mark::Reject)
}

/// One's-complement sum of big-endian 16-bit words of `buf[start..start + len]`.
#[inline(always)]
fn sum16<const N: usize>(buf: &[u8; N], start: usize, len: usize, mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < len && start + i + 1 < N {
        sum += u32::from(u16::from_be_bytes([buf[start + i], buf[start + i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn put16<const N: usize>(buf: &mut [u8; N], at: usize, v: u16) {
    if at + 1 < N {
        let b = v.to_be_bytes();
        buf[at] = b[0];
        buf[at + 1] = b[1];
    }
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "writes the value as two 16-bit halves"
)]
fn put32<const N: usize>(buf: &mut [u8; N], at: usize, v: u32) {
    put16(buf, at, (v >> 16) as u16);
    put16(buf, at + 2, v as u16);
}

/// Writes Ethernet (addresses swapped) and a fresh IPv4 header addressed back to the
/// sender into `out`, with total length `ip_len` and protocol `proto`.
#[inline(always)]
fn reply_headers<const N: usize>(
    out: &mut [u8; N],
    eth: &[u8; 14],
    f: &Flow,
    ip_len: u16,
    proto: u8,
) {
    let mut i = 0;
    while i < 6 && i + 6 < 14 && i + 6 < N {
        out[i] = eth[i + 6];
        out[i + 6] = eth[i];
        i += 1;
    }
    put16(out, 12, ETH_P_IP);
    if N < 34 {
        return;
    }
    out[14] = 0x45;
    put16(out, 16, ip_len);
    put16(out, 20, 0x4000); // don't fragment
    out[22] = 64;
    out[23] = proto;
    // Addresses are kept in wire order: copy their bytes.
    let src = f.daddr.to_ne_bytes();
    let dst = f.saddr.to_ne_bytes();
    let mut j = 0;
    while j < 4 {
        out[26 + j] = src[j];
        out[30 + j] = dst[j];
        j += 1;
    }
    let c = fold(sum16(out, 14, 20, 0));
    put16(out, 24, c);
}

/// Pseudo-header sum for a TCP/UDP/ICMP-less checksum: addresses, protocol, length.
#[inline(always)]
fn pseudo_sum<const N: usize>(out: &[u8; N], proto: u8, len: u16) -> u32 {
    sum16(out, 26, 8, u32::from(proto) + u32::from(len))
}

/// How a packet is refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A TCP RST, or ICMP port unreachable for UDP: the address serves, the port does not.
    Port,
    /// ICMP host unreachable whatever the protocol: nothing serves the address (what the
    /// kernel answers from an `unreachable` route).
    Host,
}

/// ICMP destination unreachable codes (RFC 792).
const ICMP_HOST_UNREACH: u8 = 1;
const ICMP_PORT_UNREACH: u8 = 3;

/// Replaces the skb with the refusal of flow `f` (TCP RST or ICMP port unreachable) and
/// sends it back out of the interface it came in on. Returns the tc verdict: a refusal that
/// cannot be answered is dropped (a half-rewritten packet must not go on) and counted.
#[inline(always)]
pub fn reject_skb(ctx: &TcContext, f: &Flow) -> i32 {
    match answer(ctx, f, Refusal::Port) {
        Ok(true) => redirect_back(ctx),
        // A later fragment: not a failure, its first fragment's refusal answered.
        _ if !f.l4_hdr => TC_ACT_SHOT,
        _ => {
            drops::count(DropReason::RejectFailed, u64::from(ctx.len()));
            TC_ACT_SHOT
        }
    }
}

/// Replaces a packet leaving through an egress hook with its refusal and hands that to the
/// same interface's receive path, i.e. to the sender on this host (or, for a forwarded
/// packet, to the routing back to it). What cannot be answered is dropped; the caller
/// counted the packet already.
#[inline(always)]
pub fn refuse_to_sender(ctx: &TcContext, f: &Flow, how: Refusal) -> i32 {
    match answer(ctx, f, how) {
        Ok(true) => redirect_ingress(ctx),
        _ => TC_ACT_SHOT,
    }
}

/// Builds the refusal in place of the packet; whether there is one to send.
#[inline(always)]
fn answer(ctx: &TcContext, f: &Flow, how: Refusal) -> Result<bool, i64> {
    // Only plain 20-byte IPv4 headers are answered; the rest is dropped (rare for SYNs), as
    // are later fragments (the first fragment's refusal answers the datagram).
    if f.l4_off != ETH_HLEN + 20 || !f.l4_hdr {
        return Ok(false);
    }
    let eth: [u8; 14] = ctx.load(0)?;
    if f.proto == IPPROTO_TCP && how == Refusal::Port {
        if f.tcp_flags & TCP_FLAG_RST != 0 {
            return Ok(false);
        }
        let tcp: TcpHdr = ctx.load(f.l4_off)?;
        let ip_tot: u16 = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2)?);
        let doff = u32::from(f.tcp_flags >> 12) * 4;
        let payload = u32::from(ip_tot).saturating_sub(20).saturating_sub(doff);
        let syn = u32::from(f.tcp_flags & TCP_FLAG_SYN != 0);
        let (seq, flags) = if f.tcp_flags & TCP_FLAG_ACK != 0 {
            (u32::from_be(tcp.ack_seq), TCP_FLAG_RST)
        } else {
            (0, TCP_FLAG_RST | TCP_FLAG_ACK)
        };
        let ack = u32::from_be(tcp.seq)
            .wrapping_add(payload)
            .wrapping_add(syn);
        let out = scratch()?;
        *out = [0; SCRATCH];
        reply_headers(out, &eth, f, 40, IPPROTO_TCP);
        put16(out, 34, u16::from_be(f.dport));
        put16(out, 36, u16::from_be(f.sport));
        put32(out, 38, seq);
        put32(out, 42, ack);
        put16(out, 46, (5 << 12) | flags);
        let c = fold(sum16(out, 34, 20, pseudo_sum(out, IPPROTO_TCP, 20)));
        put16(out, 50, c);
        change_tail(ctx, 54)?;
        let bytes: &[u8; 54] = first_bytes(out);
        ctx.store(0, bytes, 0)?;
    } else {
        // ICMP destination unreachable, quoting the IP header and the first 8 bytes of the
        // datagram (RFC 792).
        let quoted: [u8; 28] = ctx.load(ETH_HLEN)?;
        let out = scratch()?;
        *out = [0; SCRATCH];
        reply_headers(out, &eth, f, 56, IPPROTO_ICMP);
        out[34] = 3;
        out[35] = match how {
            Refusal::Port => ICMP_PORT_UNREACH,
            Refusal::Host => ICMP_HOST_UNREACH,
        };
        let mut i = 0;
        while i < 28 && 42 + i < SCRATCH {
            out[42 + i] = quoted[i];
            i += 1;
        }
        let c = fold(sum16(out, 34, 36, 0));
        put16(out, 36, c);
        change_tail(ctx, 70)?;
        let bytes: &[u8; 70] = first_bytes(out);
        ctx.store(0, bytes, 0)?;
    }
    Ok(true)
}

#[inline(always)]
fn change_tail(ctx: &TcContext, len: u32) -> Result<(), i64> {
    // SAFETY: valid skb context; the helper resizes the packet to `len` bytes.
    let r = unsafe { bpf_skb_change_tail(ctx.skb.skb, len, 0) };
    if r == 0 { Ok(()) } else { Err(r) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_checksum_helpers() {
        let mut buf = [0u8; 8];
        put16(&mut buf, 0, 0x1234);
        put32(&mut buf, 2, 0xdead_beef);
        assert_eq!(buf[..6], [0x12, 0x34, 0xde, 0xad, 0xbe, 0xef]);
        // Writes past the end are ignored, never panic.
        put16(&mut buf, 7, 0xffff);
        assert_eq!(buf[7], 0);
        // A buffer that contains its own checksum sums to zero.
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[9] = 6;
        let c = fold(sum16(&h, 0, 20, 0));
        put16(&mut h, 10, c);
        assert_eq!(fold(sum16(&h, 0, 20, 0)), 0);
    }
}
