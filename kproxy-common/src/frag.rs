//! The IPv4 fragment tracking map's ABI (see kproxy-ebpf's `frag` module).

use crate::map_name;

/// Entries live only between a datagram's first and last fragment (microseconds to
/// milliseconds), and each hook that parses a fragmented datagram writes one: 8,192 covers
/// thousands of fragmented datagrams in flight at once (Cilium's default size too).
pub const MAX_FRAG_ENTRIES: u32 = 8_192;

/// IPv4 fragment tracking (LRU): [`FragKey`] → [`FragPorts`]. The first fragment of a
/// datagram (the only one with the L4 header) records its ports; later fragments look them
/// up, so they find the same connection tracking entry and are translated alike.
pub const MAP_FRAGS: &str = map_name!(MAP_FRAGS);

/// A datagram's identity while it is fragmented, as seen at the hook (before translation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    /// IP identification field, as on the wire.
    pub id: u16,
    pub proto: u8,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 12);

/// The ports of a fragmented datagram's first fragment (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
}
const _: () = assert!(core::mem::size_of::<FragPorts>() == 4);
