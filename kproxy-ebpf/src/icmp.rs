//! ICMP for services, as kube-proxy gets it from netfilter and IPVS:
//!
//! - An ICMP error (destination unreachable incl. fragmentation needed, time exceeded,
//!   parameter problem) about a translated flow is related traffic and is translated too.
//!   It quotes the offending packet's IP header and first 8 bytes of TCP/UDP. Quoted
//!   client → backend (a backend, or a router on the way to it, refusing a forwarded
//!   packet): reversed, that is the flow's REPLY key; the quote is made to read client →
//!   frontend and an error sent by the backend itself comes from the frontend. Quoted
//!   frontend → client (a router on the client's side refusing a reply, e.g. PMTU): reversed,
//!   the FORWARD key; the quote is made to read backend → client and the error goes to the
//!   backend. So PMTU discovery works through a VIP and a connected UDP client of a backend
//!   without listener gets ECONNREFUSED. Either translation leaves a quote no key matches,
//!   so a packet passing several hooks is translated once.
//! - An echo request to a service address ([`VIPS`]) is answered in tc, in place, and sent
//!   back out of the interface it came in on (ping to a ClusterIP or LoadBalancer IP works, as
//!   with kube-proxy's IPVS mode, where VIPs are local addresses).
//!
//! Only plain 20-byte IP headers (outer and quoted) are handled; anything else passes as is.

use aya_ebpf::{maps::Array, programs::TcContext};
use kproxy_common::{
    CtKey, ETH_HLEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PacketClass, VIP_BUCKETS,
    VipBucket, ct_dir, map_name, vip_buckets, vip_flags,
};

use crate::{
    maps::{CT, named_map},
    nat::{csum_replace2, csum_replace4},
    packet::{IpHdr, Pkt},
    verdict::redirect_back,
};

map_name!(MAP_VIPS => named_map! {
    pub static VIPS: Array<VipBucket> = Array::pinned(VIP_BUCKETS, 0);
});

/// The [`vip_flags`] of a service address (network byte order): it is in one of its two
/// buckets.
#[inline(always)]
pub fn vip_lookup(addr: u32) -> Option<u32> {
    let (a, b) = vip_buckets(addr);
    if let Some(flags) = VIPS.get(a)?.flags_of(addr) {
        return Some(u32::from(flags));
    }
    VIPS.get(b)?.flags_of(addr).map(u32::from)
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROB: u8 = 12;
/// Version 4, 5 words of header.
const IPV4_NO_OPTIONS: u8 = 0x45;
/// Fragment offset bits (host order): a quote of a later fragment has no ports.
const IP_OFFSET: u16 = 0x1fff;
/// More-fragments flag and fragment offset: the error itself must be one whole packet.
const IP_MF_OFFSET: u16 = 0x3fff;

/// An IPv4 ICMP error from its IP header to the end of the quoted ports (the minimum RFC 792
/// quote), as laid out after the Ethernet header.
#[repr(C)]
pub struct IcmpErr {
    pub ip: IpHdr,
    pub icmp_type: u8,
    pub code: u8,
    pub check: u16,
    pub rest: u32,
    /// The quoted packet's IP header.
    pub inner: IpHdr,
    pub sport: u16,
    pub dport: u16,
    /// UDP: length; TCP: the high half of the sequence number.
    pub l4_word2: u16,
    /// UDP: checksum; TCP: the low half of the sequence number.
    pub l4_word3: u16,
}

/// Which end of the quoted packet a translation rewrites.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Quoted {
    /// The quote went to a backend: its destination becomes the frontend.
    Dst,
    /// The quote came from a frontend: its source becomes the backend.
    Src,
}

/// Rewrites the quoted packet's `end` address and port to `addr`/`port`, keeping the quoted
/// IP checksum, a quoted UDP checksum and the ICMP checksum right, and the outer address that
/// matched the old one: the error's source (an error from the backend comes from the
/// frontend) or its destination (an error for the frontend goes to the backend).
#[inline(always)]
pub fn rewrite(h: &mut IcmpErr, end: Quoted, addr: u32, port: u16) {
    let (old_addr, old_port) = match end {
        Quoted::Dst => (h.inner.daddr, h.dport),
        Quoted::Src => (h.inner.saddr, h.sport),
    };
    let old_ip_check = h.inner.check;
    h.inner.check = csum_replace4(old_ip_check, old_addr, addr);
    let mut icmp_check = csum_replace4(h.check, old_addr, addr);
    icmp_check = csum_replace2(icmp_check, old_ip_check, h.inner.check);
    icmp_check = csum_replace2(icmp_check, old_port, port);
    // The quoted UDP checksum covers the pseudo header; zero means "none" and stays zero.
    // A quoted TCP checksum lies beyond the 8 bytes every error carries: receivers do not
    // check it.
    if h.inner.protocol == IPPROTO_UDP && h.l4_word3 != 0 {
        let old = h.l4_word3;
        let c = csum_replace2(csum_replace4(old, old_addr, addr), old_port, port);
        h.l4_word3 = if c == 0 { 0xffff } else { c };
        icmp_check = csum_replace2(icmp_check, old, h.l4_word3);
    }
    h.check = icmp_check;
    match end {
        Quoted::Dst => {
            h.inner.daddr = addr;
            h.dport = port;
            if h.ip.saddr == old_addr {
                h.ip.check = csum_replace4(h.ip.check, old_addr, addr);
                h.ip.saddr = addr;
            }
        }
        Quoted::Src => {
            h.inner.saddr = addr;
            h.sport = port;
            if h.ip.daddr == old_addr {
                h.ip.check = csum_replace4(h.ip.check, old_addr, addr);
                h.ip.daddr = addr;
            }
        }
    }
}

/// Whether the header is an ICMP error quoting a TCP/UDP packet with its ports.
#[inline(always)]
pub fn is_translatable_error(h: &IcmpErr) -> bool {
    h.ip.version_ihl == IPV4_NO_OPTIONS
        && h.ip.protocol == IPPROTO_ICMP
        && u16::from_be(h.ip.frag_off) & IP_MF_OFFSET == 0
        && matches!(
            h.icmp_type,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB
        )
        && h.inner.version_ihl == IPV4_NO_OPTIONS
        && matches!(h.inner.protocol, IPPROTO_TCP | IPPROTO_UDP)
        && u16::from_be(h.inner.frag_off) & IP_OFFSET == 0
}

/// The quoted packet's tuple reversed, as a connection tracking key of direction `dir`.
#[inline(always)]
fn reversed_quote(h: &IcmpErr, dir: u8) -> CtKey {
    CtKey {
        saddr: h.inner.daddr,
        daddr: h.inner.saddr,
        sport: h.dport,
        dport: h.sport,
        proto: h.inner.protocol,
        dir,
        _pad: 0,
    }
}

/// Translates an ICMP error about a tracked flow in place; whether it did. Hairpin flows
/// (whose client address was rewritten too) are left alone.
#[inline(always)]
fn translate(h: &mut IcmpErr) -> bool {
    if !is_translatable_error(h) {
        return false;
    }
    for (dir, end) in [(ct_dir::REPLY, Quoted::Dst), (ct_dir::FORWARD, Quoted::Src)] {
        // SAFETY: copied out immediately; hash map values stay valid in the RCU section.
        if let Some(ct) = unsafe { CT.get(reversed_quote(h, dir)) }.copied() {
            // Hairpin and SNAT flows (both ends rewritten) are left alone.
            if ct.snat_addr != 0 {
                return false;
            }
            rewrite(h, end, ct.nat_addr, ct.nat_port);
            return true;
        }
    }
    false
}

/// Whether the Ethernet frame carries IPv4.
#[inline(always)]
fn is_ipv4(eth_proto: u16) -> bool {
    u16::from_be(eth_proto) == ETH_P_IP
}

/// XDP: translates an ICMP error about a tracked flow in place.
#[inline(always)]
pub fn xdp_translate_error(pkt: &Pkt) {
    let (Some(proto), Some(h)) = (pkt.ptr::<u16>(12), pkt.ptr::<IcmpErr>(ETH_HLEN)) else {
        return;
    };
    // SAFETY: bounds checked; XDP buffers are writable and only this program touches them.
    unsafe {
        if is_ipv4(*proto) {
            translate(&mut *h);
        }
    }
}

/// tc: translates an ICMP error about a tracked flow (the checksums stay complete, so
/// whatever the skb's checksum state, nothing else needs fixing).
#[inline(always)]
pub fn tc_translate_error(ctx: &TcContext) {
    let Ok(proto) = ctx.load::<u16>(12) else {
        return;
    };
    if !is_ipv4(proto) {
        return;
    }
    let Ok(mut h) = ctx.load::<IcmpErr>(ETH_HLEN) else {
        return;
    };
    if translate(&mut h) {
        let _ = ctx.store(ETH_HLEN, &h, 0);
    }
}

/// A tc hook's ICMP handling for a packet of `class` without a TCP/UDP flow: answers echo
/// requests to service addresses when `echo` is `Some(external_only)`, and translates
/// errors about tracked flows when `translate`. The verdict when the packet was answered.
#[inline(always)]
pub fn tc_hook(
    ctx: &TcContext,
    class: PacketClass,
    echo: Option<bool>,
    translate: bool,
) -> Option<i32> {
    if class != PacketClass::Icmp {
        return None;
    }
    if let Some(external_only) = echo
        && let Some(verdict) = tc_answer_echo(ctx, external_only)
    {
        return Some(verdict);
    }
    if translate {
        tc_translate_error(ctx);
    }
    None
}

/// tc: answers an echo request to a service address (only external ones when
/// `external_only`) with the echo reply, in place, sent back where it came from. Returns the
/// verdict, or `None` when the packet is no such request.
#[inline(always)]
pub fn tc_answer_echo(ctx: &TcContext, external_only: bool) -> Option<i32> {
    echo_reply_in_place(ctx, external_only)?;
    Some(redirect_back(ctx))
}

/// Turns an echo request to a service address (only external ones when `external_only`)
/// into its echo reply, in place; `None` when the packet is no such request (untouched).
/// The caller sends it.
#[inline(always)]
pub fn echo_reply_in_place(ctx: &TcContext, external_only: bool) -> Option<()> {
    const IP: usize = ETH_HLEN;
    const ICMP: usize = ETH_HLEN + 20;
    if !is_ipv4(ctx.load::<u16>(12).ok()?) {
        return None;
    }
    let ip: IpHdr = ctx.load(IP).ok()?;
    if ip.version_ihl != IPV4_NO_OPTIONS
        || ip.protocol != IPPROTO_ICMP
        || u16::from_be(ip.frag_off) & IP_MF_OFFSET != 0
    {
        return None;
    }
    let type_code: [u8; 2] = ctx.load(ICMP).ok()?;
    if type_code != [ICMP_ECHO, 0] {
        return None;
    }
    let flags = vip_lookup(ip.daddr)?;
    if external_only && flags & vip_flags::EXTERNAL == 0 {
        return None;
    }
    let check: u16 = ctx.load(ICMP + 2).ok()?;
    let reply = [ICMP_ECHO_REPLY, 0];
    let check = csum_replace2(
        check,
        u16::from_ne_bytes(type_code),
        u16::from_ne_bytes(reply),
    );
    // Swapping the addresses keeps the IP checksum; the TTL starts afresh.
    let ttl_proto: [u8; 2] = [ip.ttl, ip.protocol];
    let new_ttl_proto: [u8; 2] = [64, ip.protocol];
    let ip_check = csum_replace2(
        ip.check,
        u16::from_ne_bytes(ttl_proto),
        u16::from_ne_bytes(new_ttl_proto),
    );
    let macs: [u8; 12] = ctx.load(0).ok()?;
    let mut swapped = [0u8; 12];
    let mut i = 0;
    while i < 6 {
        swapped[i] = macs[i + 6];
        swapped[i + 6] = macs[i];
        i += 1;
    }
    ctx.store(0, &swapped, 0).ok()?;
    ctx.store(IP + 8, &new_ttl_proto, 0).ok()?;
    ctx.store(IP + 10, &ip_check, 0).ok()?;
    ctx.store(IP + 12, &ip.daddr, 0).ok()?;
    ctx.store(IP + 16, &ip.saddr, 0).ok()?;
    ctx.store(ICMP, &reply, 0).ok()?;
    ctx.store(ICMP + 2, &check, 0).ok()?;
    Some(())
}

#[cfg(test)]
mod tests;
