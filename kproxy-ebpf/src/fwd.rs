//! Sending a translated packet on from tc past the kernel's routing: a FIB lookup, the
//! TTL decremented, Ethernet addresses set and `bpf_redirect` to the interface the FIB
//! chose (`bpf_redirect_neigh` when the next hop has no neighbour entry yet). Used by BPF
//! host routing (pod replies out of the uplink) and by SNAT flows (`snat.rs`), whose
//! packets carry a source the kernel would drop as a martian on the way in.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use kproxy_common::{DropReason, ETH_HLEN};

use crate::{
    drops,
    packet::{IpHdr, Pkt},
    verdict::TC_ACT_SHOT,
};

const AF_INET: u8 = 2;
/// `BPF_FIB_LKUP_RET_SUCCESS`, `BPF_FIB_LKUP_RET_NO_NEIGH`.
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;
/// Offsets in the IPv4 header.
const IP_TTL_OFF: usize = ETH_HLEN + 8;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;

/// The IPv4 header's TTL, protocol, TOS and addresses, when it is there.
#[inline(always)]
pub fn ip_fields(ctx: &TcContext) -> Option<(u8, u8, u8, u32, u32)> {
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let ip = pkt.ptr::<IpHdr>(ETH_HLEN)?;
    // SAFETY: bounds checked by Pkt::ptr.
    Some(unsafe {
        (
            (*ip).ttl,
            (*ip).protocol,
            (*ip).tos,
            (*ip).saddr,
            (*ip).daddr,
        )
    })
}

/// Decrements the TTL (the packet is routed; callers checked it is over 1).
#[inline(always)]
pub fn ttl_decrement(ctx: &TcContext, ttl: u8, proto: u8) -> Option<()> {
    let old = u16::from_ne_bytes([ttl, proto]);
    let new = u16::from_ne_bytes([ttl - 1, proto]);
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 2)
        .ok()?;
    ctx.store(IP_TTL_OFF, &(ttl - 1), 0).ok()
}

/// Decrements the TTL and sets the Ethernet addresses.
#[inline(always)]
pub fn route_rewrite(
    ctx: &TcContext,
    ttl: u8,
    proto: u8,
    dst: [u8; 6],
    src: [u8; 6],
) -> Option<()> {
    ttl_decrement(ctx, ttl, proto)?;
    ctx.store(0, &dst, 0).ok()?;
    ctx.store(6, &src, 0).ok()?;
    Some(())
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the redirect helpers return a tc action (TC_ACT_REDIRECT or TC_ACT_SHOT)"
)]
#[inline(always)]
pub const fn tc_action(ret: i64) -> i32 {
    ret as i32
}

/// Routes the packet with the FIB (from the interface it is on) and redirects it out of the
/// chosen interface — only if that is `only_via`, when given. `None`: not sent (no route,
/// another interface, TTL about to expire, a helper failed).
#[inline(always)]
pub fn route_out(ctx: &TcContext, only_via: Option<u32>) -> Option<i32> {
    let (ttl, proto, tos, saddr, daddr) = ip_fields(ctx)?;
    if ttl <= 1 {
        return None;
    }
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of them).
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    // tot_len 0: the kernel checks the skb against the MTU itself, GSO aware.
    // SAFETY: the context pointer is valid.
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = saddr;
    p.__bindgen_anon_4.ipv4_dst = daddr;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "the struct is 64 bytes"
    )]
    let plen = core::mem::size_of::<bpf_fib_lookup>() as i32;
    // SAFETY: `p` is a valid, writable bpf_fib_lookup of `plen` bytes.
    let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), &raw mut p, plen, 0) };
    let out = p.ifindex;
    if only_via.is_some_and(|via| via != out) {
        return None;
    }
    match rc {
        FIB_SUCCESS => {
            route_rewrite(ctx, ttl, proto, p.dmac, p.smac)?;
            // SAFETY: helper without memory arguments.
            Some(tc_action(unsafe { bpf_redirect(out, 0) }))
        }
        // The next hop's MAC is not known yet (e.g. a new client source address): let
        // the neighbour subsystem resolve it and send the packet, as the kernel's path
        // would, instead of falling back until something else resolved it.
        FIB_NO_NEIGH => {
            ttl_decrement(ctx, ttl, proto)?;
            let mut nh = bpf_redir_neigh {
                nh_family: u32::from(AF_INET),
                __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                    // SAFETY: the lookup wrote the next hop there (an IPv4 address).
                    ipv4_nh: unsafe { p.__bindgen_anon_4.ipv4_dst },
                },
            };
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_possible_wrap,
                reason = "the struct is 20 bytes"
            )]
            let nlen = core::mem::size_of::<bpf_redir_neigh>() as i32;
            // SAFETY: `nh` is a valid bpf_redir_neigh of `nlen` bytes.
            Some(tc_action(unsafe {
                bpf_redirect_neigh(out, &raw mut nh, nlen, 0)
            }))
        }
        _ => None,
    }
}

/// Sends a packet of an SNAT flow (translated here or marked by XDP) where the FIB routes
/// it; one that cannot be sent is dropped and counted: its source is this node's or a
/// frontend's address, which the kernel's own routing drops as a martian anyway.
#[inline(always)]
pub fn forward(ctx: &TcContext) -> i32 {
    route_out(ctx, None).unwrap_or_else(|| {
        drops::count(DropReason::ForwardFailed, u64::from(ctx.len()));
        TC_ACT_SHOT
    })
}
