//! Socket-level load balancing (cgroup/connect4, sendmsg4, recvmsg4, getpeername4). The
//! translation happens once per connect (or per UDP send) instead of per packet, for the
//! processes of the cgroup the programs are attached to (by default the cgroup v2 root: the
//! host and every pod), optionally only those of one network namespace.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
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

/// Translates the destination of connect() / sendmsg() when it is a service frontend.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "bpf_sock_addr's u32 fields hold a protocol number and a 16-bit port; the cookie hash folds its halves"
)]
pub fn xlate_forward(ctx: &SockAddrContext, udp_only: bool) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands us a valid bpf_sock_addr for the duration of the program.
    let (proto, addr, port) = unsafe { ((*sa).protocol, (*sa).user_ip4, (*sa).user_port) };
    let proto = proto as u8;
    if proto != IPPROTO_UDP && (udp_only || proto != IPPROTO_TCP) {
        return SYS_PROCEED;
    }
    // user_port holds the port in network byte order in its low 16 bits.
    let port = port as u16;
    let Some(svc) = lb::lookup_service(addr, port, proto) else {
        return SYS_PROCEED;
    };
    // SAFETY: both helpers are valid for sock_addr programs and take the context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if !socket_lb_in_scope(netns) {
        return SYS_PROCEED;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let hash = mix((cookie as u32) ^ ((cookie >> 32) as u32));
    let Some(sel) = lb::select_backend(addr, port, proto, &svc, hash, netns) else {
        lb::count(svc.revnat_id, 0, 0, 1, false);
        drops::count(DropReason::NoBackend, 0);
        return SYS_REJECT;
    };
    // SAFETY: as above; these fields are writable for connect4/sendmsg4.
    unsafe {
        (*sa).user_ip4 = sel.backend.addr;
        (*sa).user_port = u32::from(sel.backend.port);
    }
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
        let _ = SOCK_REVNAT.insert(key, val, 0);
    }
    lb::count(svc.revnat_id, sel.id, 0, u64::from(udp_only), new_flow);
    SYS_PROCEED
}

/// Makes recvmsg() / getpeername() report the service address the application asked for
/// instead of the backend it was translated to.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "user_port holds the 16-bit port in its low bits"
)]
pub fn xlate_reverse(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: valid for the duration of the program.
    let (addr, port) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    // SAFETY: helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNatKey {
        cookie,
        addr,
        port: port as u16,
        _pad: 0,
    };
    // SAFETY: copied out immediately.
    if let Some(v) = unsafe { SOCK_REVNAT.get(key) }.copied() {
        // SAFETY: these fields are writable for recvmsg4/getpeername4.
        unsafe {
            (*sa).user_ip4 = v.addr;
            (*sa).user_port = u32::from(v.port);
        }
    }
    SYS_PROCEED
}
