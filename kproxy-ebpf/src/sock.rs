//! Socket-level load balancing (cgroup/connect4, sendmsg4, recvmsg4, getpeername4, and their
//! IPv6 twins for IPv4-mapped addresses). The translation happens once per connect (or per
//! UDP send) instead of per packet, for the processes of the cgroup the programs are
//! attached to (by default the cgroup v2 root: the host and every pod), optionally only
//! those of one network namespace.
//!
//! An IPv6 socket reaches an IPv4 service through `::ffff:CLUSTER-IP` (the default of Java
//! and of many dual-stack clients); the `*6` programs translate exactly those addresses, with
//! the same lookup, selection and reverse NAT as the IPv4 ones, and leave real IPv6 alone.
//! (The kernel hands a v4-mapped `sendmsg()` of an IPv6 UDP socket to the IPv4 path, so
//! sendmsg4 sees it; sendmsg6 covers it anyway should that ever change.)

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use kproxy_common::{DropReason, IPPROTO_TCP, IPPROTO_UDP, SockRevNatKey, SockRevNatValue};

use crate::{
    config::socket_lb_in_scope,
    drops,
    lb::{self, mix},
    maps::SOCK_REVNAT,
    verdict::{SYS_PROCEED, SYS_REJECT},
};

/// `ECONNREFUSED` (asm-generic/errno.h): what a refused connect()/sendmsg() returns, as
/// kube-proxy's REJECT rule makes it; a bare `SYS_REJECT` would be `EPERM`.
const ECONNREFUSED: i32 = 111;

/// The third 32-bit word of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`): bytes
/// `00 00 ff ff` in network order, read as a little-endian u32.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// What `forward` decided.
enum Forward {
    /// Not a service (or out of scope): the syscall goes on unchanged.
    Untouched,
    /// Translated to this backend address and port (network byte order).
    To(u32, u16),
    /// A service without a usable backend: refuse.
    Refuse,
}

/// The destination of a sock_addr context as an IPv4 address: `user_ip4` for the IPv4
/// hooks, the last word of `user_ip6` when it is IPv4-mapped for the IPv6 ones.
#[inline(always)]
fn dest_v4(sa: *mut bpf_sock_addr, v6: bool) -> Option<u32> {
    // SAFETY: the kernel hands us a valid bpf_sock_addr for the duration of the program;
    // each field is read with a 4-byte load, which the verifier accepts for user_ip6.
    unsafe {
        if !v6 {
            return Some((*sa).user_ip4);
        }
        let w = &raw const (*sa).user_ip6;
        let (w0, w1, w2) = (
            core::ptr::read_volatile(w.cast::<u32>()),
            core::ptr::read_volatile(w.cast::<u32>().add(1)),
            core::ptr::read_volatile(w.cast::<u32>().add(2)),
        );
        (w0 == 0 && w1 == 0 && w2 == V4_MAPPED_WORD)
            .then(|| core::ptr::read_volatile(w.cast::<u32>().add(3)))
    }
}

/// Writes an IPv4 destination back where `dest_v4` read it, and the port.
#[inline(always)]
fn set_dest_v4(sa: *mut bpf_sock_addr, v6: bool, addr: u32, port: u16) {
    // SAFETY: writable for connect*/sendmsg*/recvmsg*/getpeername*; 4-byte stores.
    unsafe {
        if v6 {
            core::ptr::write_volatile((&raw mut (*sa).user_ip6).cast::<u32>().add(3), addr);
        } else {
            (*sa).user_ip4 = addr;
        }
        (*sa).user_port = u32::from(port);
    }
}

/// Translates the destination of connect() / sendmsg() when it is a service frontend
/// (`v6`: an IPv6 hook, which only translates IPv4-mapped addresses).
#[inline(always)]
pub fn xlate_forward(ctx: &SockAddrContext, udp_only: bool, v6: bool) -> i32 {
    let sa = ctx.sock_addr;
    let Some(addr) = dest_v4(sa, v6) else {
        return SYS_PROCEED;
    };
    match forward(ctx, addr, udp_only) {
        Forward::Untouched => SYS_PROCEED,
        Forward::To(be_addr, be_port) => {
            set_dest_v4(sa, v6, be_addr, be_port);
            SYS_PROCEED
        }
        Forward::Refuse => {
            // SAFETY: helper without memory arguments; sock_addr programs on 5.18+ may set
            // the syscall's error, which the kernel returns because we answer 0.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            SYS_REJECT
        }
    }
}

#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "bpf_sock_addr's u32 fields hold a protocol number and a 16-bit port; the cookie hash folds its halves"
)]
fn forward(ctx: &SockAddrContext, addr: u32, udp_only: bool) -> Forward {
    let sa = ctx.sock_addr;
    // SAFETY: valid for the duration of the program.
    let (proto, port) = unsafe { ((*sa).protocol, (*sa).user_port) };
    let proto = proto as u8;
    if proto != IPPROTO_UDP && (udp_only || proto != IPPROTO_TCP) {
        return Forward::Untouched;
    }
    // user_port holds the port in network byte order in its low 16 bits.
    let port = port as u16;
    let Some(svc) = lb::lookup_service(addr, port, proto) else {
        return Forward::Untouched;
    };
    // SAFETY: both helpers are valid for sock_addr programs and take the context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if !socket_lb_in_scope(netns) {
        return Forward::Untouched;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let hash = mix((cookie as u32) ^ ((cookie >> 32) as u32));
    let Some(sel) = lb::select_backend(addr, port, proto, &svc, hash, netns) else {
        lb::count(svc.revnat_id, 0, 0, 1, false);
        drops::count(DropReason::NoBackend, 0);
        return Forward::Refuse;
    };
    // A TCP socket needs no reverse entry: its replies come from the connected peer and
    // getpeername() reports the backend (as with Cilium). UDP needs one for recvmsg().
    let new_flow = if proto == IPPROTO_TCP {
        true
    } else {
        let key = SockRevNatKey {
            cookie,
            addr: sel.backend.addr,
            port: sel.backend.port,
            _pad: 0,
        };
        // SAFETY: read-only peek to tell a new UDP flow from a repeated send.
        let new_flow = unsafe { SOCK_REVNAT.get(key) }.is_none();
        if new_flow {
            let val = SockRevNatValue {
                addr,
                port,
                revnat_id: svc.revnat_id,
            };
            if SOCK_REVNAT.insert(key, val, 0).is_err() {
                drops::count(DropReason::MapFull, 0);
            }
        }
        new_flow
    };
    lb::count(svc.revnat_id, sel.id, 0, u64::from(udp_only), new_flow);
    Forward::To(sel.backend.addr, sel.backend.port)
}

/// Makes recvmsg() / getpeername() report the service address the application asked for
/// instead of the backend it was translated to (UDP sockets: TCP ones have no entry).
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "user_port holds the 16-bit port in its low bits"
)]
pub fn xlate_reverse(ctx: &SockAddrContext, v6: bool) -> i32 {
    let sa = ctx.sock_addr;
    let Some(addr) = dest_v4(sa, v6) else {
        return SYS_PROCEED;
    };
    // SAFETY: valid for the duration of the program.
    let port = unsafe { (*sa).user_port } as u16;
    // SAFETY: helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNatKey {
        cookie,
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: copied out immediately.
    if let Some(v) = unsafe { SOCK_REVNAT.get(key) }.copied() {
        set_dest_v4(sa, v6, v.addr, v.port);
    }
    SYS_PROCEED
}
