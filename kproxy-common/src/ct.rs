//! The connection tracking ABI of the per-packet paths ([`super::MAP_CT`]): key, value,
//! directions, flags, lifetimes, and the addresses and ports translated flows use.

/// Connection tracking key: the packet's own 5-tuple as seen at the hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`ct_dir`].
    pub dir: u8,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

/// Direction of a connection tracking entry.
pub mod ct_dir {
    /// Client → frontend; the value says which backend to DNAT to.
    pub const FORWARD: u8 = 0;
    /// Backend → client; the value says which frontend to SNAT the reply back to.
    pub const REPLY: u8 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// FORWARD: backend address/port to rewrite the destination to.
    /// REPLY: frontend address/port to rewrite the source to.
    pub nat_addr: u32,
    pub nat_port: u16,
    pub revnat_id: u16,
    pub backend_id: u32,
    /// Flows whose client source is rewritten, else 0: hairpin flows (a pod reaching itself
    /// through a service) and SNAT flows (external traffic to a backend on another node).
    /// FORWARD: the source address to rewrite to ([`HAIRPIN_ADDR`], because a pod drops
    /// packets that carry its own address as source; or the node's address).
    /// REPLY: the client's real address, to rewrite the destination back to.
    pub snat_addr: u32,
    /// When the entry expires, in seconds of the monotonic clock (`bpf_ktime_get_ns`,
    /// CLOCK_MONOTONIC in userspace). Each packet pushes it out by its state's lifetime
    /// ([`ct_lifetime`]); an expired entry is a new flow, and garbage collection deletes it.
    pub expires_s: u32,
    /// [`ct_flags`].
    pub flags: u16,
    /// SNAT flows only (0 otherwise: hairpin keeps the client's port), network byte order.
    /// FORWARD: the source port allocated on the node's address ([`SNAT_PORT_MIN`]..);
    /// REPLY: the client's port, to rewrite the destination port back to.
    pub snat_port: u16,
}
const _: () = assert!(core::mem::size_of::<CtValue>() == 24);

/// Connection tracking entry flags (in [`CtValue::flags`]).
pub mod ct_flags {
    /// A FIN or RST was seen in this direction: the connection is closing, a new SYN on
    /// the same tuple starts a new flow (and may get another backend).
    pub const CLOSING: u16 = 1 << 0;
}

/// Source ports that external flows to a backend on another node are translated to, on the
/// node's own address (host order, inclusive): above Linux's default ephemeral range
/// (`ip_local_port_range` 32768-60999), so the node's own connections never take one, and
/// above the NodePort range. Only a packet from the uplink whose destination port is in
/// this range is looked up as an SNAT reply.
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;

/// Connection tracking lifetimes in seconds, per protocol and state (Cilium's defaults).
pub mod ct_lifetime {
    /// TCP before the handshake completed (a packet without ACK seen last).
    pub const TCP_SYN: u32 = 60;
    /// Established TCP.
    pub const TCP_ESTABLISHED: u32 = 21_600;
    /// TCP after a FIN or RST.
    pub const TCP_CLOSING: u32 = 10;
    /// UDP and everything else.
    pub const NON_TCP: u32 = 60;
}

/// Source address hairpin flows are translated to (link-local, never on the wire outside
/// the node; Cilium uses the same idea), network byte order.
pub const HAIRPIN_ADDR: u32 = u32::from_ne_bytes([169, 254, 42, 1]);
