//! Per-packet load balancing on the node's uplink: DNAT of new and tracked flows to a backend
//! (XDP, or tc ingress as the alternative), reverse NAT of the replies (tc egress), and a TCP
//! RST for services without a ready backend. The client's source address is never changed.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use kproxy_common::{
    CtKey, CtValue, ETH_HLEN, ETH_P_IP, HAIRPIN_ADDR, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    ct_dir, ct_flags, ct_lifetime, svc_flags,
};

use crate::{lb, maps::CT};

/// Ethernet header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

/// IPv4 header without options.
#[repr(C)]
pub struct IpHdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset, reserved bits and flags, as one 16-bit word.
    pub off_flags: u16,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

const TCP_FLAG_FIN: u16 = 0x01;
const TCP_FLAG_RST: u16 = 0x04;
const TCP_FLAG_SYN: u16 = 0x02;
const TCP_FLAG_ACK: u16 = 0x10;

/// A packet's linear bytes: `[data, end)`.
#[derive(Clone, Copy)]
pub struct Pkt {
    pub data: usize,
    pub end: usize,
}

impl Pkt {
    /// Pointer to a `T` at `off`, or `None` if it would cross the end. Every packet access
    /// goes through here so the verifier sees the bound check.
    #[inline(always)]
    pub fn ptr<T>(&self, off: usize) -> Option<*mut T> {
        if self.data + off + core::mem::size_of::<T>() > self.end {
            return None;
        }
        Some((self.data + off) as *mut T)
    }
}

/// The parsed 5-tuple of a TCP or UDP IPv4 packet (network byte order), with offsets.
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub l4_off: usize,
    /// TCP flags word (host order), 0 for UDP.
    pub tcp_flags: u16,
}

/// What to do with a packet arriving from outside.
pub enum Ingress {
    /// Not for an external frontend: leave it alone.
    Pass,
    /// Rewrite the destination to this backend (and, if `snat` is not 0, the source to
    /// `snat`: hairpin).
    Dnat { addr: u32, port: u16, snat: u32 },
    /// An external frontend with no ready backend.
    Reject,
}

#[inline(always)]
fn ct_key(f: &Flow, dir: u8) -> CtKey {
    CtKey {
        saddr: f.saddr,
        daddr: f.daddr,
        sport: f.sport,
        dport: f.dport,
        proto: f.proto,
        dir,
        _pad: 0,
    }
}

/// Seconds of the monotonic clock, the unit of [`CtValue::expires_s`].
#[inline(always)]
fn now_s() -> u32 {
    // SAFETY: helper without preconditions.
    (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32
}

/// Whether the packet closes its direction of the connection (TCP FIN or RST).
#[inline(always)]
fn closes(f: &Flow) -> bool {
    f.proto == IPPROTO_TCP && f.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0
}

/// Whether the packet opens a TCP connection (SYN without ACK).
#[inline(always)]
fn is_new_syn(f: &Flow) -> bool {
    f.proto == IPPROTO_TCP && f.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
}

/// How long an entry lives after this packet: per protocol, and for TCP per state.
#[inline(always)]
fn lifetime(f: &Flow, closing: bool) -> u32 {
    if f.proto != IPPROTO_TCP {
        ct_lifetime::NON_TCP
    } else if closing {
        ct_lifetime::TCP_CLOSING
    } else if f.tcp_flags & TCP_FLAG_ACK == 0 {
        ct_lifetime::TCP_SYN
    } else {
        ct_lifetime::TCP_ESTABLISHED
    }
}

/// Pushes out the expiry of a tracked entry for packet `f`, in place (no map update).
#[inline(always)]
fn ct_refresh(entry: *mut CtValue, f: &Flow, now: u32) {
    // SAFETY: `entry` points into a CT map value, valid for the program's RCU section;
    // concurrent writers only store the same kind of plain values.
    unsafe {
        let mut flags = (*entry).flags;
        if closes(f) {
            flags |= ct_flags::CLOSING;
        }
        let expires = now.wrapping_add(lifetime(f, flags & ct_flags::CLOSING != 0));
        if (*entry).expires_s != expires {
            (*entry).expires_s = expires;
        }
        if (*entry).flags != flags {
            (*entry).flags = flags;
        }
    }
}

/// Whether a tracked forward entry may keep carrying the flow: not expired, not a new
/// connection (SYN) over a closing one, and its backend and service still exist (a backend
/// id may have been reused for another address, so the address is compared too).
#[inline(always)]
fn ct_usable(ct: &CtValue, f: &Flow, now: u32) -> bool {
    if (ct.expires_s.wrapping_sub(now) as i32) < 0 {
        return false;
    }
    if is_new_syn(f) && ct.flags & ct_flags::CLOSING != 0 {
        return false;
    }
    match lb::backend(ct.backend_id) {
        Some(b) if b.addr == ct.nat_addr && b.port == ct.nat_port => {}
        _ => return false,
    }
    matches!(lb::lookup_service(f.daddr, f.dport, f.proto), Some(svc) if svc.revnat_id == ct.revnat_id)
}

/// The reply entry of a forward entry for flow `f` (client `f.saddr`, or the hairpin
/// address): where the backend's packets come from and go to.
#[inline(always)]
fn reply_key(f: &Flow, backend_addr: u32, backend_port: u16, hairpin: bool) -> CtKey {
    CtKey {
        saddr: backend_addr,
        daddr: if hairpin { HAIRPIN_ADDR } else { f.saddr },
        sport: backend_port,
        dport: f.sport,
        proto: f.proto,
        dir: ct_dir::REPLY,
        _pad: 0,
    }
}

/// Decides the fate of a packet entering the node (from the uplink, or from a pod): tracked
/// flows keep their backend (also when it is terminating) while the entry is usable; new
/// flows, and flows whose backend or service went away, get a backend by flow hash or
/// ClientIP affinity and a connection tracking entry for both directions. A TCP flow moved
/// off a removed backend lands mid-stream on a new one, which answers with a RST: the
/// client sees a reset, never a black hole.
/// `external_only`: only frontends reachable from outside (the uplink) are served.
#[inline(always)]
pub fn ingress_decision(f: &Flow, bytes: u64, external_only: bool) -> Ingress {
    let fwd = ct_key(f, ct_dir::FORWARD);
    let now = now_s();
    if let Some(entry) = CT.get_ptr_mut(fwd) {
        // SAFETY: copied out of a live map value.
        let ct = unsafe { *entry };
        if ct_usable(&ct, f, now) {
            ct_refresh(entry, f, now);
            lb::count(ct.revnat_id, ct.backend_id, bytes, 1, false);
            return Ingress::Dnat {
                addr: ct.nat_addr,
                port: ct.nat_port,
                snat: ct.hairpin_addr,
            };
        }
        // The old backend's reply entry would only linger until garbage collection.
        let _ = CT.remove(reply_key(f, ct.nat_addr, ct.nat_port, ct.hairpin_addr != 0));
    }
    let Some(svc) = lb::lookup_service(f.daddr, f.dport, f.proto) else {
        // A new connection straight to a non-service address: a reply entry for its tuple can
        // only be left by an earlier service flow from the same source port (closing entries
        // live 10 s), and must not rewrite this connection's SYN-ACK to come from that
        // service.
        if is_new_syn(f) {
            let _ = CT.remove(reply_key(f, f.daddr, f.dport, false));
        }
        return Ingress::Pass;
    };
    if external_only && svc.flags & svc_flags::EXTERNAL == 0 {
        return Ingress::Pass;
    }
    let hash = lb::flow_hash(f.saddr, f.daddr, f.sport, f.dport, f.proto);
    let Some(sel) = lb::select_backend(f.daddr, f.dport, f.proto, &svc, hash, u64::from(f.saddr))
    else {
        lb::count(svc.revnat_id, 0, bytes, 1, false);
        return Ingress::Reject;
    };
    let hairpin = sel.backend.addr == f.saddr;
    let snat = if hairpin { HAIRPIN_ADDR } else { 0 };
    let closing = closes(f);
    let entry = |nat_addr, nat_port, hairpin_addr| CtValue {
        nat_addr,
        nat_port,
        revnat_id: svc.revnat_id,
        backend_id: sel.id,
        hairpin_addr,
        expires_s: now.wrapping_add(lifetime(f, closing)),
        flags: if closing { ct_flags::CLOSING } else { 0 },
    };
    let reply = reply_key(f, sel.backend.addr, sel.backend.port, hairpin);
    // Reply entry first: the backend's answer must never find the forward entry alone.
    let _ = CT.insert(
        reply,
        entry(f.daddr, f.dport, if hairpin { f.saddr } else { 0 }),
        0,
    );
    let _ = CT.insert(fwd, entry(sel.backend.addr, sel.backend.port, snat), 0);
    lb::count(svc.revnat_id, sel.id, bytes, 1, true);
    Ingress::Dnat {
        addr: sel.backend.addr,
        port: sel.backend.port,
        snat,
    }
}

/// The frontend a backend's reply must appear to come from, if the packet belongs to a
/// tracked, unexpired flow; refreshes the entry.
#[inline(always)]
pub fn reply_lookup(f: &Flow, bytes: u64) -> Option<CtValue> {
    let key = ct_key(f, ct_dir::REPLY);
    let entry = CT.get_ptr_mut(key)?;
    // SAFETY: copied out of a live map value.
    let v = unsafe { *entry };
    let now = now_s();
    if (v.expires_s.wrapping_sub(now) as i32) < 0 {
        return None;
    }
    ct_refresh(entry, f, now);
    lb::count(v.revnat_id, v.backend_id, bytes, 1, false);
    Some(v)
}

// === Checksums (RFC 1624 incremental update of a full checksum) ===
//
// One's-complement sums do not depend on byte order as long as every word is read the same
// way, so the words are used exactly as loaded from the packet.

#[inline(always)]
pub fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
pub fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let c = csum_replace2(check, old as u16, new as u16);
    csum_replace2(c, (old >> 16) as u16, (new >> 16) as u16)
}

/// Rewrites the destination address and port in place (XDP: full checksums only; packets
/// from a real NIC always carry them).
#[inline(always)]
pub fn dnat_direct(pkt: &Pkt, f: &Flow, addr: u32, port: u16) -> Option<()> {
    let ip: *mut IpHdr = pkt.ptr(ETH_HLEN)?;
    // SAFETY: bounds checked; XDP buffers are writable.
    unsafe {
        (*ip).check = csum_replace4((*ip).check, f.daddr, addr);
        (*ip).daddr = addr;
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

// === Refusing flows to services without a ready backend ===
//
// XDP cannot grow a frame into an ICMP error portably, and XDP_TX on veth only works when
// the peer runs XDP too; so XDP marks the packet (4 bytes of metadata) and passes it, and
// tc ingress, which sees the same packet as an skb, answers it: a TCP RST, or an ICMP port
// unreachable for UDP. In tc LB mode, tc ingress decides and answers by itself.

/// Metadata value XDP leaves for tc ingress: "refuse this packet".
pub const META_REJECT: u32 = 0x6b70_7272;

/// Marks the packet for refusal in tc ingress (XDP side).
#[inline(always)]
pub fn xdp_mark_reject(ctx: &aya_ebpf::programs::XdpContext) -> bool {
    // SAFETY: grows the metadata area in front of the packet; checked below.
    if unsafe { aya_ebpf::helpers::bpf_xdp_adjust_meta(ctx.ctx, -4) } != 0 {
        return false;
    }
    let meta = ctx.metadata();
    if meta + 4 > ctx.data() {
        return false;
    }
    // SAFETY: bounds checked against data (the end of the metadata area).
    unsafe { *(meta as *mut u32) = META_REJECT };
    true
}

/// Whether XDP marked this skb for refusal (tc side).
#[inline(always)]
pub fn tc_marked_reject(ctx: &TcContext) -> bool {
    // SAFETY: the context pointer is valid; data_meta/data are packet pointers.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + 4 > data {
        return false;
    }
    // SAFETY: bounds checked.
    unsafe { *(meta as *const u32) == META_REJECT }
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
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
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

/// Replaces the skb with the refusal of flow `f` (TCP RST or ICMP port unreachable) and
/// sends it back out of the interface it came in on. Returns the tc verdict.
#[inline(always)]
pub fn reject_skb(ctx: &TcContext, f: &Flow) -> Result<i32, i64> {
    const SHOT: i32 = 2;
    // Only plain 20-byte IPv4 headers are answered; the rest is dropped (rare for SYNs).
    if f.l4_off != ETH_HLEN + 20 {
        return Ok(SHOT);
    }
    let eth: [u8; 14] = ctx.load(0)?;
    if f.proto == IPPROTO_TCP {
        if f.tcp_flags & TCP_FLAG_RST != 0 {
            return Ok(SHOT);
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
        // ICMP destination unreachable / port unreachable, quoting the IP header and the
        // first 8 bytes of the datagram (RFC 792).
        let quoted: [u8; 28] = ctx.load(ETH_HLEN)?;
        let out = scratch()?;
        *out = [0; SCRATCH];
        reply_headers(out, &eth, f, 56, IPPROTO_ICMP);
        out[34] = 3;
        out[35] = 3;
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
    // SAFETY: the context pointer is valid for the program's duration.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: helper without memory arguments; sends the skb out of `ifindex`.
    Ok(unsafe { aya_ebpf::helpers::bpf_redirect(ifindex, 0) } as i32)
}

/// Size of the per-CPU buffer replies are built in (the BPF stack is only 512 bytes).
pub const SCRATCH: usize = 72;

#[inline(always)]
fn scratch() -> Result<&'static mut [u8; SCRATCH], i64> {
    let p = crate::maps::SCRATCH_BUF.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU map value; only this program invocation uses it while it runs.
    Ok(unsafe { &mut *p })
}

/// The first `M` bytes of the scratch buffer as an array reference.
#[inline(always)]
fn first_bytes<const M: usize>(buf: &[u8; SCRATCH]) -> &[u8; M] {
    const { assert!(M <= SCRATCH) };
    // SAFETY: M <= SCRATCH (checked at compile time), u8 arrays have alignment 1.
    unsafe { &*buf.as_ptr().cast::<[u8; M]>() }
}

#[inline(always)]
fn change_tail(ctx: &TcContext, len: u32) -> Result<(), i64> {
    // SAFETY: valid skb context; the helper resizes the packet to `len` bytes.
    let r = unsafe { aya_ebpf::helpers::bpf_skb_change_tail(ctx.skb.skb, len, 0) };
    if r == 0 { Ok(()) } else { Err(r) }
}

/// Rewrites only the source (`dst == false`) or destination address of an skb, keeping
/// the port (hairpin translation).
#[inline(always)]
pub fn nat_skb_addr(ctx: &TcContext, f: &Flow, dst: bool, old: u32, new: u32) -> Result<(), i64> {
    let addr_off = if dst { ETH_HLEN + 16 } else { ETH_HLEN + 12 };
    let csum_off = f.l4_off + l4_csum_off(f);
    let mangled = if f.proto == IPPROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    };
    ctx.l4_csum_replace(
        csum_off,
        u64::from(old),
        u64::from(new),
        u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
    )?;
    ctx.l3_csum_replace(ETH_HLEN + 10, u64::from(old), u64::from(new), 4)?;
    ctx.store(addr_off, &new, 0)?;
    Ok(())
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
    let (old_addr, old_port, addr_off, port_off) = if dst {
        (f.daddr, f.dport, ETH_HLEN + 16, f.l4_off + 2)
    } else {
        (f.saddr, f.sport, ETH_HLEN + 12, f.l4_off)
    };
    let csum_off = f.l4_off + l4_csum_off(f);
    let mangled = if f.proto == IPPROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    };
    let pseudo = u64::from(BPF_F_PSEUDO_HDR);
    ctx.l4_csum_replace(
        csum_off,
        u64::from(old_addr),
        u64::from(addr),
        pseudo | mangled | 4,
    )?;
    ctx.l3_csum_replace(ETH_HLEN + 10, u64::from(old_addr), u64::from(addr), 4)?;
    ctx.store(addr_off, &addr, 0)?;
    ctx.l4_csum_replace(csum_off, u64::from(old_port), u64::from(port), mangled | 2)?;
    ctx.store(port_off, &port, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full Internet checksum over big-endian words, as a receiver verifies it.
    fn full(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|w| u32::from(*w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
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

    #[test]
    fn flow_hash_spreads_ports() {
        let mut buckets = [0u32; 3];
        for port in 1000u16..4000 {
            let h = crate::lb::flow_hash(0x0102_0304, 0x0a60_000a, port.to_be(), 80u16.to_be(), 6);
            buckets[(h % 3) as usize] += 1;
        }
        for b in buckets {
            assert!((900..=1100).contains(&b), "uneven spread {buckets:?}");
        }
    }
}
