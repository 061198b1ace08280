//! The map ABI between `kproxy-ebpf` and `kproxy`: map names, key/value layouts and the
//! index constants both sides agree on. Everything here is `#[repr(C)]`, `Copy`, has explicit
//! padding and no `bool`s, so the byte layout is the same in the kernel and in userspace.
//!
//! When a layout changes, bump the `_vN` suffix of the map name so a kproxy upgrade never
//! reuses a pinned map of the old shape.
#![no_std]

/// Name of the per-CPU packet counter array (pinned under the kproxy bpffs directory).
pub const MAP_IFSTATS: &str = "kproxy_ifstats_v1";
/// Name of the runtime configuration array (one `u32` per [`config`] index).
pub const MAP_CONFIG: &str = "kproxy_config_v1";

/// Runtime configuration slots in [`MAP_CONFIG`]. Userspace writes them at any time; the
/// programs read them per packet, so changes take effect without a reload.
pub mod config {
    /// Non-zero: emit aya-log debug events for every classified packet.
    pub const DEBUG_EVENTS: u32 = 0;
    /// Number of slots.
    pub const LEN: u32 = 4;
}

/// Packets and bytes, one per CPU in a per-CPU map; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

impl Counter {
    /// Adds another counter (used to sum per-CPU values).
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Where a packet was seen: the attach point of the program that counted it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP on the uplink (ingress, before an skb exists).
    XdpIngress = 0,
    /// tc classifier, ingress.
    TcIngress = 1,
    /// tc classifier, egress.
    TcEgress = 2,
}

impl Hook {
    pub const ALL: [Self; 3] = [Self::XdpIngress, Self::TcIngress, Self::TcEgress];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::XdpIngress => "xdp-ingress",
            Self::TcIngress => "tc-ingress",
            Self::TcEgress => "tc-egress",
        }
    }
}

/// What kind of packet it was, as far as the program parsed it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// Not IPv4 (ARP, IPv6, ...).
    NonIpv4 = 0,
    /// IPv4 but too short for its headers, or a bad IHL.
    Malformed = 1,
    Icmp = 2,
    Tcp = 3,
    Udp = 4,
    /// IPv4 with another protocol number.
    OtherIpv4 = 5,
}

impl PacketClass {
    pub const ALL: [Self; 6] = [
        Self::NonIpv4,
        Self::Malformed,
        Self::Icmp,
        Self::Tcp,
        Self::Udp,
        Self::OtherIpv4,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::NonIpv4 => "non-ipv4",
            Self::Malformed => "malformed",
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::OtherIpv4 => "other-ipv4",
        }
    }

    /// Class of an IPv4 packet from its protocol number.
    #[must_use]
    pub const fn from_ip_proto(proto: u8) -> Self {
        match proto {
            IPPROTO_ICMP => Self::Icmp,
            IPPROTO_TCP => Self::Tcp,
            IPPROTO_UDP => Self::Udp,
            _ => Self::OtherIpv4,
        }
    }
}

/// Index of a (hook, class) counter in [`MAP_IFSTATS`].
#[must_use]
pub const fn ifstats_index(hook: Hook, class: PacketClass) -> u32 {
    hook as u32 * PacketClass::COUNT + class as u32
}

/// Number of slots in [`MAP_IFSTATS`].
pub const IFSTATS_LEN: u32 = Hook::ALL.len() as u32 * PacketClass::COUNT;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_HLEN: usize = 14;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[cfg(feature = "user")]
mod user {
    // SAFETY: Counter is #[repr(C)], Copy, has no padding and every bit pattern is valid.
    unsafe impl aya::Pod for super::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifstats_indices_are_dense_and_unique() {
        let mut seen = [false; IFSTATS_LEN as usize];
        for hook in Hook::ALL {
            for class in PacketClass::ALL {
                let i = ifstats_index(hook, class) as usize;
                assert!(!seen[i], "duplicate index {i}");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn protocol_classes() {
        assert_eq!(PacketClass::from_ip_proto(1), PacketClass::Icmp);
        assert_eq!(PacketClass::from_ip_proto(6), PacketClass::Tcp);
        assert_eq!(PacketClass::from_ip_proto(17), PacketClass::Udp);
        assert_eq!(PacketClass::from_ip_proto(47), PacketClass::OtherIpv4);
    }
}
