//! kproxy's eBPF programs. Entry points are thin: each calls a `try_` function and maps its
//! result to the program's verdict, so errors never escape as an abort.
//!
//! The crate only makes sense for bpfel-unknown-none; on the host (`cargo clippy --workspace`)
//! it compiles as an ordinary program that says so, which keeps the whole workspace lintable.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod maps;
mod packet;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use kproxy_common::{Hook, config, ifstats_index};
use maps::{CONFIG, IFSTATS};
use packet::Summary;

#[inline(always)]
fn debug_events_enabled() -> bool {
    matches!(CONFIG.get(config::DEBUG_EVENTS), Some(v) if *v != 0)
}

#[inline(always)]
fn count(hook: Hook, summary: &Summary, len: u64) {
    if let Some(counter) = IFSTATS.get_ptr_mut(ifstats_index(hook, summary.class)) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

#[xdp]
pub fn kproxy_xdp(ctx: XdpContext) -> u32 {
    try_kproxy_xdp(&ctx).unwrap_or(XDP_PASS)
}

#[inline(always)]
fn try_kproxy_xdp(ctx: &XdpContext) -> Result<u32, ()> {
    let summary = packet::classify_xdp(ctx);
    let len = (ctx.data_end() - ctx.data()) as u64;
    count(Hook::XdpIngress, &summary, len);
    if debug_events_enabled() {
        debug!(
            ctx,
            "xdp-ingress {} {:i} -> {:i} len {}",
            summary.class.name(),
            u32::from_be(summary.saddr),
            u32::from_be(summary.daddr),
            len
        );
    }
    Ok(XDP_PASS)
}

#[classifier]
pub fn kproxy_tc_ingress(ctx: TcContext) -> i32 {
    try_kproxy_tc(&ctx, Hook::TcIngress).unwrap_or(TC_ACT_OK)
}

#[classifier]
pub fn kproxy_tc_egress(ctx: TcContext) -> i32 {
    try_kproxy_tc(&ctx, Hook::TcEgress).unwrap_or(TC_ACT_OK)
}

#[inline(always)]
fn try_kproxy_tc(ctx: &TcContext, hook: Hook) -> Result<i32, ()> {
    let summary = packet::classify_tc(ctx);
    let len = u64::from(ctx.len());
    count(hook, &summary, len);
    if debug_events_enabled() {
        debug!(
            ctx,
            "{} {} {:i} -> {:i} len {}",
            hook.name(),
            summary.class.name(),
            u32::from_be(summary.saddr),
            u32::from_be(summary.daddr),
            len
        );
    }
    Ok(TC_ACT_OK)
}

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
