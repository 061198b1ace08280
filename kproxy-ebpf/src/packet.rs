//! Bounds-checked packet access and classification shared by the XDP and tc programs.

use aya_ebpf::programs::{TcContext, XdpContext};
use kproxy_common::{ETH_HLEN, ETH_P_IP, PacketClass};

/// The parts of an IPv4 packet the counters and debug events need.
#[derive(Clone, Copy)]
pub struct Summary {
    pub class: PacketClass,
    /// Source and destination address in network byte order (as on the wire).
    pub saddr: u32,
    pub daddr: u32,
}

impl Summary {
    const fn of(class: PacketClass) -> Self {
        Self {
            class,
            saddr: 0,
            daddr: 0,
        }
    }
}

/// Returns a pointer to a `T` at `offset` in the XDP buffer, or `None` when the packet is too
/// short. The verifier requires exactly this check before every access.
#[inline(always)]
fn xdp_ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Minimal IPv4 header view: only the fields we read, at their wire offsets.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Head {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

#[inline(always)]
fn summarize(ethertype_be: u16, ip: Option<Ipv4Head>) -> Summary {
    if u16::from_be(ethertype_be) != ETH_P_IP {
        return Summary::of(PacketClass::NonIpv4);
    }
    let Some(ip) = ip else {
        return Summary::of(PacketClass::Malformed);
    };
    if ip.version_ihl >> 4 != 4 || ip.version_ihl & 0x0f < 5 {
        return Summary::of(PacketClass::Malformed);
    }
    Summary {
        class: PacketClass::from_ip_proto(ip.protocol),
        saddr: ip.saddr,
        daddr: ip.daddr,
    }
}

#[inline(always)]
pub fn classify_xdp(ctx: &XdpContext) -> Summary {
    // Ethertype sits at bytes 12..14 of the Ethernet header.
    let Some(ethertype) = xdp_ptr_at::<u16>(ctx, 12) else {
        return Summary::of(PacketClass::Malformed);
    };
    // SAFETY: xdp_ptr_at checked that the u16 lies inside the packet.
    let ethertype = unsafe { core::ptr::read_unaligned(ethertype) };
    // SAFETY: as above, for the IPv4 header.
    let ip = xdp_ptr_at::<Ipv4Head>(ctx, ETH_HLEN).map(|p| unsafe { core::ptr::read_unaligned(p) });
    summarize(ethertype, ip)
}

#[inline(always)]
pub fn classify_tc(ctx: &TcContext) -> Summary {
    // bpf_skb_load_bytes copies and checks bounds, and also works for non-linear skbs.
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return Summary::of(PacketClass::Malformed);
    };
    summarize(ethertype, ctx.load::<Ipv4Head>(ETH_HLEN).ok())
}
