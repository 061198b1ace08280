//! Parsing shared by the XDP and tc programs: one pass over the headers yields both the
//! counter class (every packet) and, for TCP/UDP over unfragmented IPv4, the flow the load
//! balancer works on.

use kproxy_common::{ETH_HLEN, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, PacketClass};

use crate::nat::{EthHdr, Flow, IpHdr, Pkt, TcpHdr, UdpHdr};

/// The parts of a packet the counters and debug events need.
#[derive(Clone, Copy)]
pub struct Summary {
    pub class: PacketClass,
    /// Source and destination address in network byte order (as on the wire); 0 unless IPv4.
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

/// More-fragments flag and fragment offset (host order mask).
const IP_MF_OFFSET: u16 = 0x3fff;

/// Classifies the packet and parses its flow. The flow is `None` for anything the load
/// balancer leaves alone: non-IPv4, truncated or bad headers, other protocols, and IP
/// fragments (later fragments carry no ports, so the whole datagram is left alone).
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
    let (vihl, frag, proto, saddr, daddr) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).frag_off,
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
    };
    if u16::from_be(frag) & IP_MF_OFFSET != 0 {
        return (summary, None);
    }
    let l4_off = ETH_HLEN + ihl * 4;
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
    let flow = ports.map(|(sport, dport, tcp_flags)| Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto,
        l4_off,
        tcp_flags,
    });
    (summary, flow)
}
