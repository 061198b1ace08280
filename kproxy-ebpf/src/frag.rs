//! IPv4 fragments (after Cilium's `ipv4_handle_fragmentation`): only a datagram's first
//! fragment carries the TCP/UDP header, so its ports are recorded in an LRU map under
//! (addresses, IP id, protocol) and later fragments take them from there. Every fragment of
//! a datagram then has the same 5-tuple, finds the same connection tracking entry and is
//! translated to the same backend (later fragments in their IP header only).
//!
//! A later fragment that arrives before its first fragment (reordering) finds nothing and
//! passes untranslated, as in Cilium; so does one whose first fragment was never seen.

use kproxy_common::{FragKey, FragPorts};

use crate::maps::FRAGS;

/// More-fragments flag and fragment offset mask (host order).
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// Where a packet sits in its datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    /// Not fragmented.
    Whole,
    /// The first fragment: has the L4 header, more fragments follow.
    First,
    /// A later fragment: payload only.
    Later,
}

/// The part of a packet, from its IP `frag_off` field (host order).
#[inline(always)]
pub const fn part(frag_off: u16) -> Part {
    if frag_off & IP_OFFSET != 0 {
        Part::Later
    } else if frag_off & IP_MF != 0 {
        Part::First
    } else {
        Part::Whole
    }
}

#[inline(always)]
const fn key(saddr: u32, daddr: u32, id: u16, proto: u8) -> FragKey {
    FragKey {
        saddr,
        daddr,
        id,
        proto,
        _pad: 0,
    }
}

/// Records the ports of a first fragment for the fragments that follow it.
#[inline(always)]
pub fn record(saddr: u32, daddr: u32, id: u16, proto: u8, sport: u16, dport: u16) {
    // A failed insert leaves the later fragments to be counted as fragment-missing.
    let _ = FRAGS.insert(key(saddr, daddr, id, proto), FragPorts { sport, dport }, 0);
}

/// The ports of a later fragment's datagram, if its first fragment was seen here.
#[inline(always)]
pub fn ports(saddr: u32, daddr: u32, id: u16, proto: u8) -> Option<(u16, u16)> {
    let key = key(saddr, daddr, id, proto);
    // SAFETY: copied out of the map value at once.
    unsafe { FRAGS.get(key) }.map(|p| (p.sport, p.dport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_datagram() {
        assert_eq!(part(0), Part::Whole);
        // DF alone is no fragment.
        assert_eq!(part(0x4000), Part::Whole);
        assert_eq!(part(IP_MF), Part::First);
        // Offset 1480 bytes (185 units of 8), more following; and the last fragment.
        assert_eq!(part(IP_MF | 0xb9), Part::Later);
        assert_eq!(part(0xb9), Part::Later);
    }
}
