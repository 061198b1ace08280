//! kproxy's eBPF programs. Entry points are thin: each calls the function that does the work
//! and maps its result to the program's verdict, so errors never escape as an abort.
//!
//! Module layout (each imports only modules listed before it):
//! - `verdict`, `maps`, `meta`, `frag`, `packet`: verdict constants, the pinned maps, marks
//!   XDP leaves for tc, fragment tracking, packet types and parsing;
//! - `config`, `ifstats`, `drops`, `scratch`, `lb`: runtime configuration, counters, the reply buffer,
//!   service lookup and backend selection;
//! - `ct`, `nat`, `reject`, `arp`: connection tracking, address rewriting, refusals, ARP;
//! - `icmp`: ICMP errors about translated flows, echo replies for service addresses;
//! - `snat`: external flows to backends on other nodes (source NAT, port allocation);
//! - `fwd`: sending translated packets on past the kernel's routing (FIB + redirect);
//! - `host_route`: BPF host routing to and from local pods;
//! - `xdp`, `tc`, `sock`: the programs' bodies; `keep_local` (after `tc`): the keep-local
//!   device's egress.
//!
//! The crate only makes sense for bpfel-unknown-none; on the host (`cargo clippy --workspace`)
//! it compiles as an ordinary program that says so, which keeps the whole workspace lintable.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![expect(
    clippy::inline_always,
    reason = "helpers are inlined into each program on purpose: one verifier pass per program, no BPF-to-BPF calls with packet pointers"
)]

mod arp;
mod config;
mod ct;
mod drops;
mod frag;
mod fwd;
mod host_route;
mod icmp;
mod ifstats;
mod keep_local;
mod lb;
mod maps;
mod meta;
mod nat;
mod packet;
mod partial;
mod reject;
mod scratch;
mod snat;
mod sock;
mod srcrange;
mod tc;
mod verdict;
mod xdp;

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use kproxy_common::program_name;
use verdict::TC_ACT_OK;

/// An entry point whose function name is the first token: kproxy loads programs by the
/// `PROG_*` constants, so `program_name!(PROG_X => entry_point! { .. })` names the function.
macro_rules! entry_point {
    ($name:ident, $(#[$attr:meta])* fn($ctx:ident: $ctx_ty:ty) -> $ret:ty $body:block) => {
        $(#[$attr])*
        pub fn $name($ctx: $ctx_ty) -> $ret $body
    };
}

program_name!(PROG_XDP => entry_point! {
    #[xdp]
    fn(ctx: XdpContext) -> u32 {
        xdp::uplink(&ctx).unwrap_or(XDP_PASS)
    }
});

program_name!(PROG_TC_INGRESS => entry_point! {
    #[classifier]
    fn(ctx: TcContext) -> i32 {
        tc::uplink_ingress(&ctx).unwrap_or(TC_ACT_OK)
    }
});

program_name!(PROG_TC_EGRESS => entry_point! {
    #[classifier]
    fn(ctx: TcContext) -> i32 {
        tc::uplink_egress(&ctx).unwrap_or(TC_ACT_OK)
    }
});

program_name!(PROG_TC_POD => entry_point! {
    /// tc ingress on a pod's host-side veth (packets leaving the pod): per-packet DNAT of
    /// service traffic the socket-LB did not translate (e.g. processes outside the node's
    /// cgroup hierarchy, raw sockets), reverse NAT of backends' replies, hairpin.
    #[classifier]
    fn(ctx: TcContext) -> i32 {
        tc::pod_ingress(&ctx).unwrap_or(TC_ACT_OK)
    }
});

program_name!(PROG_TC_POD_EGRESS => entry_point! {
    /// tc egress on a pod's host-side veth (packets going to the pod): reverse NAT of replies
    /// from backends that are not pods on this bridge — host-network backends (the API
    /// server's `kubernetes` endpoint) and backends beyond the uplink. Replies from pod
    /// backends were already translated when they left their own pod.
    #[classifier]
    fn(ctx: TcContext) -> i32 {
        tc::pod_egress(&ctx).unwrap_or(TC_ACT_OK)
    }
});

program_name!(PROG_TC_KEEP_LOCAL => entry_point! {
    /// tc egress on the keep-local device, where the service CIDR and LoadBalancer pools are
    /// routed: echo replies for service addresses, refusals for the rest; nothing passes.
    #[classifier]
    fn(ctx: TcContext) -> i32 {
        keep_local::egress(&ctx)
    }
});

program_name!(PROG_SOCK4_CONNECT => entry_point! {
    #[cgroup_sock_addr(connect4)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_forward(&ctx, false, false)
    }
});

program_name!(PROG_SOCK4_SENDMSG => entry_point! {
    #[cgroup_sock_addr(sendmsg4)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_forward(&ctx, true, false)
    }
});

program_name!(PROG_SOCK4_RECVMSG => entry_point! {
    #[cgroup_sock_addr(recvmsg4)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_reverse(&ctx, false)
    }
});

program_name!(PROG_SOCK4_GETPEERNAME => entry_point! {
    #[cgroup_sock_addr(getpeername4)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_reverse(&ctx, false)
    }
});

program_name!(PROG_SOCK6_CONNECT => entry_point! {
    /// IPv6 sockets: only IPv4-mapped destinations (`::ffff:CLUSTER-IP`) are translated.
    #[cgroup_sock_addr(connect6)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_forward(&ctx, false, true)
    }
});

program_name!(PROG_SOCK6_SENDMSG => entry_point! {
    #[cgroup_sock_addr(sendmsg6)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_forward(&ctx, true, true)
    }
});

program_name!(PROG_SOCK6_RECVMSG => entry_point! {
    #[cgroup_sock_addr(recvmsg6)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_reverse(&ctx, true)
    }
});

program_name!(PROG_SOCK6_GETPEERNAME => entry_point! {
    #[cgroup_sock_addr(getpeername6)]
    fn(ctx: SockAddrContext) -> i32 {
        sock::xlate_reverse(&ctx, true)
    }
});

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("kproxy-ebpf targets bpfel-unknown-none; kproxy's build.rs builds and embeds it");
    std::process::exit(2);
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
