//! External traffic to a backend on another node (`externalTrafficPolicy: Cluster`), as
//! Cilium's kube-proxy replacement does in SNAT mode. The backend's node would answer the
//! client directly, from the backend's own address, so the client's source is translated to
//! this node's address and a source port of its own: the backend answers this node, which
//! translates the reply back (source: the frontend, destination: the client).
//!
//! Whether a backend is remote is the FIB's answer when the flow is created: the route to
//! it leaves through the interface the packet came in on (the uplink; a host-gw route
//! `podCIDR via nodeIP`, or any backend beyond the uplink). The same lookup gives the
//! source address the node uses on that route. Local pods (behind the bridge) and the
//! node's own addresses never match, and `Local` traffic policies program local endpoints
//! only, so those keep the client's address.
//!
//! Ports come from [`SNAT_PORT_MIN`]..=[`SNAT_PORT_MAX`]; the flow's REPLY entry (backend →
//! node address:port) is the reservation, inserted only where none is live, so the reverse
//! tuple is unique. The first port tried is the flow hash's, then a few random ones (Cilium's
//! `snat_v4_new_mapping` retries the same way).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, BPF_NOEXIST, bpf_fib_lookup,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32},
    programs::{TcContext, XdpContext},
};
use kproxy_common::{
    CtKey, CtValue, DropReason, ETH_HLEN, IPPROTO_TCP, SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use crate::{
    drops,
    maps::CT,
    meta::{self, Mark},
    nat::{csum_replace2, csum_replace4},
    packet::{Flow, IpHdr, Pkt, TcpHdr, UdpHdr},
};

const AF_INET: u8 = 2;
/// `BPF_FIB_LKUP_RET_SUCCESS`.
const FIB_SUCCESS: i64 = 0;
/// Ports tried for a new flow: the hashed one, then random ones. A closed TCP flow holds
/// its port for its 10 s closing lifetime, so bursts of short connections fill the range:
/// at 75 % taken, 32 tries still fail once in ~10,000 new flows (8 tries: once in ~10).
const PORT_TRIES: u32 = 32;

/// The interface a packet came in on from outside (the uplink), with its program context
/// for FIB lookups.
#[derive(Clone, Copy)]
pub struct Uplink {
    ctx: *mut c_void,
    ifindex: u32,
}

impl Uplink {
    #[inline(always)]
    pub fn xdp(ctx: &XdpContext) -> Self {
        Self {
            ctx: ctx.ctx.cast(),
            // SAFETY: the context pointer is valid for the program's duration.
            ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        }
    }

    #[inline(always)]
    pub fn tc(ctx: &TcContext) -> Self {
        Self {
            ctx: ctx.skb.skb.cast(),
            // SAFETY: the context pointer is valid for the program's duration.
            ifindex: unsafe { (*ctx.skb.skb).ifindex },
        }
    }

    /// The node's address to translate the client's source to, when the route to `backend`
    /// leaves through this interface (the backend is on another node); `None` otherwise.
    #[inline(always)]
    pub fn snat_source(&self, f: &Flow, backend: u32) -> Option<u32> {
        // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of them).
        let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
        p.family = AF_INET;
        p.l4_protocol = f.proto;
        p.ifindex = self.ifindex;
        p.__bindgen_anon_3.ipv4_src = f.saddr;
        p.__bindgen_anon_4.ipv4_dst = backend;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "the struct is 64 bytes"
        )]
        let plen = core::mem::size_of::<bpf_fib_lookup>() as i32;
        // SRC: the address the node would send from on that route (Linux 6.8); SKIP_NEIGH:
        // only the route matters here, the packet is sent later.
        let flags = BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH;
        // SAFETY: `p` is a valid, writable bpf_fib_lookup of `plen` bytes; ctx is the
        // program's context.
        let rc = unsafe { fib_lookup(self.ctx, &raw mut p, plen, flags) };
        if rc != FIB_SUCCESS || p.ifindex != self.ifindex {
            return None;
        }
        // SAFETY: the lookup wrote the source address there (an IPv4 address).
        let src = unsafe { p.__bindgen_anon_3.ipv4_src };
        if src == 0 { None } else { Some(src) }
    }
}

/// Whether an entry is still valid at `now` (wrapping compare, as `ct.rs`).
#[inline(always)]
pub fn live(v: &CtValue, now: u32) -> bool {
    v.expires_s.wrapping_sub(now).cast_signed() >= 0
}

/// Whether a packet's destination port (network order) is an SNAT port: only those are
/// looked up as SNAT replies.
#[inline(always)]
pub fn is_snat_port(port: u16) -> bool {
    (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&u16::from_be(port))
}

/// Takes the reply tuple `key` for `value` if no live flow holds it: an expired holder is
/// deleted first; the insert itself fails if another CPU took the tuple meanwhile.
#[inline(always)]
pub fn take(key: &CtKey, value: &CtValue, now: u32) -> bool {
    // SAFETY: copied out at once.
    if let Some(old) = unsafe { CT.get(key) }.copied() {
        if live(&old, now) {
            return false;
        }
        let _ = CT.remove(key);
    }
    CT.insert(key, value, u64::from(BPF_NOEXIST)).is_ok()
}

/// Finds a free source port for a new SNAT flow and reserves it by inserting its REPLY
/// entry: `key` is that entry's key (backend → node address) whose destination port is
/// set to each candidate in turn. Returns the port (network order), or `None` when every
/// try collided.
#[inline(always)]
pub fn alloc_port(key: &mut CtKey, value: &CtValue, hash: u32, now: u32) -> Option<u16> {
    let range = u32::from(SNAT_PORT_MAX - SNAT_PORT_MIN) + 1;
    let mut pick = hash;
    for _ in 0..PORT_TRIES {
        #[expect(clippy::cast_possible_truncation, reason = "below the range, a u16")]
        let port = (u32::from(SNAT_PORT_MIN) + pick % range) as u16;
        key.dport = port.to_be();
        if take(key, value, now) {
            return Some(key.dport);
        }
        // SAFETY: helper without arguments.
        pick = unsafe { bpf_get_prandom_u32() };
    }
    None
}

/// Rewrites both ends of a packet in place (XDP: full checksums only, see `partial.rs`):
/// source to `src`, destination to `dst` (addresses and ports, network order). Every
/// pointer is checked before anything is written, so a packet is never half-rewritten.
#[inline(always)]
fn rewrite_direct(pkt: &Pkt, f: &Flow, src: (u32, u16), dst: (u32, u16)) -> Option<()> {
    let ip: *mut IpHdr = pkt.ptr(ETH_HLEN)?;
    let tcp: Option<*mut TcpHdr> = pkt.ptr(f.l4_off);
    let udp: Option<*mut UdpHdr> = pkt.ptr(f.l4_off);
    let l4_there = if f.proto == IPPROTO_TCP {
        tcp.is_some()
    } else {
        udp.is_some()
    };
    if f.l4_hdr && !l4_there {
        return None;
    }
    // SAFETY: bounds checked; XDP buffers are writable.
    unsafe {
        let c = csum_replace4((*ip).check, f.saddr, src.0);
        (*ip).check = csum_replace4(c, f.daddr, dst.0);
        (*ip).saddr = src.0;
        (*ip).daddr = dst.0;
    }
    // A later fragment's "L4" bytes are payload (see nat::dnat_direct).
    if !f.l4_hdr {
        return Some(());
    }
    let l4 = |check: u16| {
        let c = csum_replace4(csum_replace4(check, f.saddr, src.0), f.daddr, dst.0);
        csum_replace2(csum_replace2(c, f.sport, src.1), f.dport, dst.1)
    };
    if f.proto == IPPROTO_TCP {
        let tcp = tcp?;
        // SAFETY: bounds checked.
        unsafe {
            (*tcp).check = l4((*tcp).check);
            (*tcp).source = src.1;
            (*tcp).dest = dst.1;
        }
    } else {
        let udp = udp?;
        // SAFETY: bounds checked.
        unsafe {
            // A zero UDP checksum means "none" and must stay zero.
            if (*udp).check != 0 {
                let c = l4((*udp).check);
                (*udp).check = if c == 0 { 0xffff } else { c };
            }
            (*udp).source = src.1;
            (*udp).dest = dst.1;
        }
    }
    Some(())
}

/// XDP: translates an SNAT flow's packet (a new or tracked client packet, or a backend's
/// reply) and leaves it to tc ingress to send out (`fwd.rs`): its source is now this
/// node's or a frontend's address, which the kernel's routing would drop as a martian.
#[inline(always)]
pub fn xdp_forward(
    ctx: &XdpContext,
    pkt: &Pkt,
    f: &Flow,
    src: (u32, u16),
    dst: (u32, u16),
    len: u64,
) -> u32 {
    if rewrite_direct(pkt, f, src, dst).is_none() {
        drops::count(DropReason::NatFailed, len);
        return XDP_DROP;
    }
    if meta::xdp_set(ctx, Mark::Forward) {
        XDP_PASS
    } else {
        drops::count(DropReason::ForwardFailed, len);
        XDP_DROP
    }
}
