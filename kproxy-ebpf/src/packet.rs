//! Packet types and the parsing shared by the XDP and tc programs: header layouts, the
//! bounds-checked packet view, and one pass over the headers that yields both the counter
//! class (every packet) and, for TCP/UDP over IPv4 (fragments included, see `frag`), the
//! flow the load balancer works on.

use kproxy_common::{ETH_HLEN, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, PacketClass};

use crate::frag;

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

/// TCP flags, as bits of [`Flow::tcp_flags`].
pub const TCP_FLAG_FIN: u16 = 0x01;
pub const TCP_FLAG_RST: u16 = 0x04;
pub const TCP_FLAG_SYN: u16 = 0x02;
pub const TCP_FLAG_ACK: u16 = 0x10;

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
    /// TCP flags word (host order), 0 for UDP and for later fragments.
    pub tcp_flags: u16,
    /// Whether this packet carries the L4 header: false for an IP fragment after the first,
    /// whose ports come from the fragment map and whose bytes at `l4_off` are payload
    /// (translation then rewrites the IP header only).
    pub l4_hdr: bool,
}

/// The parts of a packet the counters and debug events need.
#[derive(Clone, Copy)]
pub struct Summary {
    pub class: PacketClass,
    /// Source and destination address in network byte order (as on the wire); 0 unless IPv4.
    pub saddr: u32,
    pub daddr: u32,
    /// A TCP/UDP fragment after the first whose first fragment was not seen at this hook:
    /// it has no flow and passes untranslated (the hook that would balance it counts it).
    pub frag_missing: bool,
}

impl Summary {
    const fn of(class: PacketClass) -> Self {
        Self {
            class,
            saddr: 0,
            daddr: 0,
            frag_missing: false,
        }
    }
}

/// Classifies the packet and parses its flow. The flow is `None` for anything the load
/// balancer leaves alone: non-IPv4, truncated or bad headers, other protocols, and later IP
/// fragments whose first fragment this hook has not seen (see `frag`).
#[inline(always)]
pub fn inspect(pkt: &Pkt) -> (Summary, Option<Flow>) {
    let Some(eth) = pkt.ptr::<EthHdr>(0) else {
        return (Summary::of(PacketClass::Malformed), None);
    };
    // SAFETY: bounds checked by Pkt::ptr.
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IP {
        return (Summary::of(PacketClass::NonIpv4), None);
    }
    let Some(ip) = pkt.ptr::<IpHdr>(ETH_HLEN) else {
        return (Summary::of(PacketClass::Malformed), None);
    };
    // SAFETY: bounds checked.
    let (vihl, frag, id, proto, saddr, daddr) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).frag_off,
            (*ip).id,
            (*ip).protocol,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    let ihl = usize::from(vihl & 0x0f);
    if vihl >> 4 != 4 || ihl < 5 {
        return (Summary::of(PacketClass::Malformed), None);
    }
    let summary = Summary {
        class: PacketClass::from_ip_proto(proto),
        saddr,
        daddr,
        frag_missing: false,
    };
    let l4_off = ETH_HLEN + ihl * 4;
    let part = frag::part(u16::from_be(frag));
    if part == frag::Part::Later {
        return later_fragment(summary, id, proto, l4_off);
    }
    let ports = match proto {
        IPPROTO_TCP => pkt.ptr::<TcpHdr>(l4_off).map(|tcp| {
            // SAFETY: bounds checked.
            unsafe { ((*tcp).source, (*tcp).dest, u16::from_be((*tcp).off_flags)) }
        }),
        IPPROTO_UDP => pkt.ptr::<UdpHdr>(l4_off).map(|udp| {
            // SAFETY: bounds checked.
            unsafe { ((*udp).source, (*udp).dest, 0) }
        }),
        _ => None,
    };
    if ports.is_none() && matches!(proto, IPPROTO_TCP | IPPROTO_UDP) {
        // A TCP/UDP header cut short (or pushed past the end by the IHL).
        let class = PacketClass::Malformed;
        return (Summary { class, ..summary }, None);
    }
    let flow = ports.map(|(sport, dport, tcp_flags)| Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto,
        l4_off,
        tcp_flags,
        l4_hdr: true,
    });
    if let (frag::Part::First, Some(f)) = (part, &flow) {
        frag::record(saddr, daddr, id, proto, f.sport, f.dport);
    }
    (summary, flow)
}

/// The flow of a TCP/UDP fragment after the first: its ports as its first fragment recorded
/// them, no L4 header (and no TCP flags) in this packet.
#[inline(always)]
fn later_fragment(summary: Summary, id: u16, proto: u8, l4_off: usize) -> (Summary, Option<Flow>) {
    if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP) {
        return (summary, None);
    }
    let Some((sport, dport)) = frag::ports(summary.saddr, summary.daddr, id, proto) else {
        let frag_missing = true;
        return (
            Summary {
                frag_missing,
                ..summary
            },
            None,
        );
    };
    let flow = Flow {
        saddr: summary.saddr,
        daddr: summary.daddr,
        sport,
        dport,
        proto,
        l4_off,
        tcp_flags: 0,
        l4_hdr: false,
    };
    (summary, Some(flow))
}
