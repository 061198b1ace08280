//! The map ABI between `kproxy-ebpf` and `kproxy`: map and program names, key/value layouts and
//! index constants both sides agree on. Everything here is `#[repr(C)]`, `Copy`, has explicit
//! padding and no `bool`s, so the byte layout is the same in the kernel and in userspace.
//!
//! When a layout changes, bump the `_vN` suffix of the map name so a kproxy upgrade never
//! reuses a pinned map of the old shape.
#![no_std]
// The only unsafe code is the `aya::Pod` impls of the `user` feature (see `mod user`).
#![deny(unsafe_code)]

mod frag;
pub use frag::{FragKey, FragPorts, MAP_FRAGS, MAX_FRAG_ENTRIES};
mod vips;
pub use vips::{MAP_VIPS, MAX_VIP_ENTRIES, VIP_BUCKETS, VIP_SLOTS};
mod ct;
pub use ct::{CtKey, CtValue, HAIRPIN_ADDR, SNAT_PORT_MAX, SNAT_PORT_MIN};
pub use ct::{ct_dir, ct_flags, ct_lifetime};
pub use vips::{VipBucket, vip_buckets, vip_flags};

// === Map and program names ===
//
// kproxy-ebpf can only name a map or a program with a literal token: `#[map(name = "..")]`
// takes a string literal, and a program is called like its entry-point function. So each
// name is written once, in `map_name!` or `program_name!`, which hand the token to the
// caller's macro; the `MAP_*` and `PROG_*` constants are made from the same tokens.

/// The name of a map, by its constant: `map_name!(MAP_CT)` is `"kproxy_lb4_ct_v4"`, and
/// `map_name!(MAP_CT => m! { tokens })` expands to `m! { "kproxy_lb4_ct_v4", tokens }`.
#[macro_export]
macro_rules! map_name {
    (MAP_IFSTATS $($then:tt)*) => { $crate::__with_name! { "kproxy_ifstats_v1" $($then)* } };
    (MAP_CONFIG $($then:tt)*) => { $crate::__with_name! { "kproxy_config_v4" $($then)* } };
    (MAP_SERVICES $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_services_v1" $($then)* } };
    (MAP_BACKENDS $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_backends_v1" $($then)* } };
    (MAP_REVNAT $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_revnat_v1" $($then)* } };
    (MAP_CT $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_ct_v4" $($then)* } };
    (MAP_L2 $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_l2_v1" $($then)* } };
    (MAP_AFFINITY $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_affinity_v2" $($then)* } };
    (MAP_SOCK_REVNAT $($then:tt)*) => {
        $crate::__with_name! { "kproxy_lb4_sock_revnat_v2" $($then)* }
    };
    (MAP_SVC_STATS $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_svc_stats_v1" $($then)* } };
    (MAP_BACKEND_STATS $($then:tt)*) => {
        $crate::__with_name! { "kproxy_lb4_be_stats_v1" $($then)* }
    };
    (MAP_SCRATCH $($then:tt)*) => { $crate::__with_name! { "kproxy_scratch_v1" $($then)* } };
    (MAP_MAGLEV $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_maglev_v1" $($then)* } };
    (MAP_AFFINITY_MATCH $($then:tt)*) => {
        $crate::__with_name! { "kproxy_lb4_affinity_match_v1" $($then)* }
    };
    (MAP_VIPS $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_vips_v2" $($then)* } };
    (MAP_HOST_ROUTES $($then:tt)*) => {
        $crate::__with_name! { "kproxy_host_routes_v1" $($then)* }
    };
    (MAP_SRC_RANGE $($then:tt)*) => {
        $crate::__with_name! { "kproxy_lb4_src_range_v1" $($then)* }
    };
    (MAP_DROPS $($then:tt)*) => { $crate::__with_name! { "kproxy_drops_v2" $($then)* } };
    (MAP_FRAGS $($then:tt)*) => { $crate::__with_name! { "kproxy_lb4_frags_v1" $($then)* } };
}

/// The name of a program (its entry-point function in kproxy-ebpf), by its constant:
/// `program_name!(PROG_XDP)` is `"kproxy_xdp"`, and `program_name!(PROG_XDP => m! { tokens })`
/// expands to `m! { kproxy_xdp, tokens }`.
#[macro_export]
macro_rules! program_name {
    (PROG_XDP $($then:tt)*) => { $crate::__with_name! { kproxy_xdp $($then)* } };
    (PROG_TC_INGRESS $($then:tt)*) => { $crate::__with_name! { kproxy_tc_ingress $($then)* } };
    (PROG_TC_EGRESS $($then:tt)*) => { $crate::__with_name! { kproxy_tc_egress $($then)* } };
    (PROG_TC_POD $($then:tt)*) => { $crate::__with_name! { kproxy_tc_pod $($then)* } };
    (PROG_TC_POD_EGRESS $($then:tt)*) => { $crate::__with_name! { kproxy_tc_pod_egress $($then)* } };
    (PROG_TC_KEEP_LOCAL $($then:tt)*) => { $crate::__with_name! { kproxy_tc_keep_local $($then)* } };
    (PROG_SOCK4_CONNECT $($then:tt)*) => { $crate::__with_name! { kproxy_sock4_connect $($then)* } };
    (PROG_SOCK4_SENDMSG $($then:tt)*) => { $crate::__with_name! { kproxy_sock4_sendmsg $($then)* } };
    (PROG_SOCK4_RECVMSG $($then:tt)*) => { $crate::__with_name! { kproxy_sock4_recvmsg $($then)* } };
    (PROG_SOCK4_GETPEERNAME $($then:tt)*) => {
        $crate::__with_name! { kproxy_sock4_getpeername $($then)* }
    };
    (PROG_SOCK6_CONNECT $($then:tt)*) => { $crate::__with_name! { kproxy_sock6_connect $($then)* } };
    (PROG_SOCK6_SENDMSG $($then:tt)*) => { $crate::__with_name! { kproxy_sock6_sendmsg $($then)* } };
    (PROG_SOCK6_RECVMSG $($then:tt)*) => { $crate::__with_name! { kproxy_sock6_recvmsg $($then)* } };
    (PROG_SOCK6_GETPEERNAME $($then:tt)*) => {
        $crate::__with_name! { kproxy_sock6_getpeername $($then)* }
    };
}

/// The tail of `map_name!` and `program_name!`: the name as a `&str` constant expression,
/// or handed to the caller's macro as its first token.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_name {
    ($name:literal) => { $name };
    ($name:ident) => { ::core::stringify!($name) };
    ($name:tt => $then:ident! { $($tokens:tt)* }) => { $then! { $name, $($tokens)* } };
}

/// Name of the per-CPU packet counter array (pinned under the kproxy bpffs directory).
pub const MAP_IFSTATS: &str = map_name!(MAP_IFSTATS);
/// Name of the runtime configuration array (one `u32` per [`config`] index).
pub const MAP_CONFIG: &str = map_name!(MAP_CONFIG);
/// Per-CPU scratch space the tc programs build reply packets in (the BPF stack is only 512
/// bytes); not pinned, it holds nothing between packets.
pub const MAP_SCRATCH: &str = map_name!(MAP_SCRATCH);

/// XDP on the uplink: per-packet load balancing of external traffic, counters.
pub const PROG_XDP: &str = program_name!(PROG_XDP);
/// tc ingress on the uplink: refusals XDP marked, ARP for LoadBalancer IPs, or the external
/// load balancing in tc mode.
pub const PROG_TC_INGRESS: &str = program_name!(PROG_TC_INGRESS);
/// tc egress on the uplink: reverse NAT of replies.
pub const PROG_TC_EGRESS: &str = program_name!(PROG_TC_EGRESS);
/// tc ingress on a pod's host-side veth (packets from the pod).
pub const PROG_TC_POD: &str = program_name!(PROG_TC_POD);
/// tc egress on a pod's host-side veth (packets to the pod).
pub const PROG_TC_POD_EGRESS: &str = program_name!(PROG_TC_POD_EGRESS);
/// tc egress on the keep-local device (the route of the service CIDR and LoadBalancer
/// pools): echo replies for service addresses, refusals for everything else.
pub const PROG_TC_KEEP_LOCAL: &str = program_name!(PROG_TC_KEEP_LOCAL);
/// Socket-LB, cgroup/connect4.
pub const PROG_SOCK4_CONNECT: &str = program_name!(PROG_SOCK4_CONNECT);
/// Socket-LB, cgroup/sendmsg4.
pub const PROG_SOCK4_SENDMSG: &str = program_name!(PROG_SOCK4_SENDMSG);
/// Socket-LB, cgroup/recvmsg4.
pub const PROG_SOCK4_RECVMSG: &str = program_name!(PROG_SOCK4_RECVMSG);
/// Socket-LB, cgroup/getpeername4.
pub const PROG_SOCK4_GETPEERNAME: &str = program_name!(PROG_SOCK4_GETPEERNAME);
/// Socket-LB, cgroup/connect6 (IPv4-mapped destinations only).
pub const PROG_SOCK6_CONNECT: &str = program_name!(PROG_SOCK6_CONNECT);
/// Socket-LB, cgroup/sendmsg6 (IPv4-mapped destinations only).
pub const PROG_SOCK6_SENDMSG: &str = program_name!(PROG_SOCK6_SENDMSG);
/// Socket-LB, cgroup/recvmsg6 (IPv4-mapped sources only).
pub const PROG_SOCK6_RECVMSG: &str = program_name!(PROG_SOCK6_RECVMSG);
/// Socket-LB, cgroup/getpeername6 (IPv4-mapped peers only).
pub const PROG_SOCK6_GETPEERNAME: &str = program_name!(PROG_SOCK6_GETPEERNAME);

/// Runtime configuration slots in [`MAP_CONFIG`]. Userspace writes them at any time; the
/// programs read them per packet, so changes take effect without a reload.
pub mod config;

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
    pub const COUNT: u32 = 3;
    pub const ALL: [Self; Self::COUNT as usize] =
        [Self::XdpIngress, Self::TcIngress, Self::TcEgress];

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
    pub const COUNT: u32 = 6;
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::NonIpv4,
        Self::Malformed,
        Self::Icmp,
        Self::Tcp,
        Self::Udp,
        Self::OtherIpv4,
    ];

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
pub const IFSTATS_LEN: u32 = Hook::COUNT * PacketClass::COUNT;

/// Name of the per-CPU drop and error counters: one [`Counter`] per [`DropReason`].
pub const MAP_DROPS: &str = map_name!(MAP_DROPS);

/// Why the datapath dropped a packet, or passed it on untranslated when it would have
/// translated it. Each reason is one slot of [`MAP_DROPS`]; new reasons are appended (the
/// slots are part of the map ABI).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A service frontend without a ready backend (the packet was refused).
    NoBackend = 0,
    /// A map insert failed (connection tracking, fragments, affinity): the flow went on
    /// without the entry.
    MapFull = 1,
    /// The client is outside the service's `loadBalancerSourceRanges`.
    SourceRange = 2,
    /// A non-first IP fragment whose first fragment was never seen (or has expired).
    FragMissing = 3,
    /// Headers too short or inconsistent to parse.
    Malformed = 4,
    /// The connection tracking entries for a new flow could not be written (the packet is
    /// dropped: the backend's answer could not be translated back; the client retries).
    CtInsertFailed = 5,
    /// A kernel helper failed while rewriting the packet (NAT or reverse NAT): it went on
    /// untranslated.
    NatFailed = 6,
    /// A refusal (already counted as [`Self::NoBackend`]) that could not be answered with
    /// a RST or ICMP error (IP options, a RST itself, a helper error): dropped silently.
    RejectFailed = 7,
    /// Untranslated traffic to a keep-local range (the service CIDR, LoadBalancer pools)
    /// that reached the keep-local device: an address no Service uses, or a port the
    /// Service does not serve; refused with a RST or ICMP error (or dropped if it cannot
    /// be answered).
    NotAService = 8,
    /// A new flow to a backend on another node found no free SNAT source port (see
    /// [`SNAT_PORT_MIN`]) after a few tries: dropped, the client retries.
    SnatNoPort = 9,
    /// A translated packet to be forwarded out of the node (an SNAT flow to a backend on
    /// another node, or its reply) had no usable route or an expiring TTL: dropped.
    ForwardFailed = 10,
}

/// Slots of [`MAP_DROPS`]: room for reasons appended later without a new map layout.
pub const DROPS_LEN: u32 = 16;
const _: () = assert!(DropReason::COUNT <= DROPS_LEN);

impl DropReason {
    pub const COUNT: u32 = 11;
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::NoBackend,
        Self::MapFull,
        Self::SourceRange,
        Self::FragMissing,
        Self::Malformed,
        Self::CtInsertFailed,
        Self::NatFailed,
        Self::RejectFailed,
        Self::NotAService,
        Self::SnatNoPort,
        Self::ForwardFailed,
    ];

    /// The reason as shown by `kctl lb --drops` and in the `reason` label of /metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::NoBackend => "no-backend",
            Self::MapFull => "map-full",
            Self::SourceRange => "source-range",
            Self::FragMissing => "fragment-missing",
            Self::Malformed => "malformed",
            Self::CtInsertFailed => "ct-insert-failed",
            Self::NatFailed => "nat-failed",
            Self::RejectFailed => "reject-failed",
            Self::NotAService => "not-a-service",
            Self::SnatNoPort => "snat-no-port",
            Self::ForwardFailed => "forward-failed",
        }
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_HLEN: usize = 14;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

// === Load balancer map ABI ===
//
// The layout follows Cilium's lb4 maps:
//
// * `SERVICES` is keyed by (frontend address, port, protocol, slot). Slot 0 is the frontend
//   itself: its value holds `count`, the number of backends that take new flows, the service's
//   `revnat_id` and its flags. Slots 1..=count hold a `backend_id` each. A lookup of slot 0
//   followed by slot `1 + hash % count` picks a backend in two map reads, whatever the number
//   of services.
// * `BACKENDS` maps a backend id to its address and port.
// * `REVNAT` maps a `revnat_id` to the frontend (address, port) replies must appear to come
//   from.
// * Userspace writes new slots before raising `count` and lowers `count` before deleting
//   slots, so a reader never follows a slot that is not there yet (or any more).
//
// All addresses and ports are stored in network byte order, as they are on the wire.

/// Service table: [`ServiceKey`] → [`ServiceValue`].
pub const MAP_SERVICES: &str = map_name!(MAP_SERVICES);
/// Backend table: backend id (`u32`) → [`Backend`].
pub const MAP_BACKENDS: &str = map_name!(MAP_BACKENDS);
/// Reverse NAT table: revnat id (`u32`) → [`RevNat`].
pub const MAP_REVNAT: &str = map_name!(MAP_REVNAT);
/// Connection tracking for the per-packet paths (LRU): [`CtKey`] → [`CtValue`].
pub const MAP_CT: &str = map_name!(MAP_CT);
/// LoadBalancer IPs whose ARP requests the uplink answers (the L2 announcement): address
/// (network byte order, `u32`) → `u32` (unused, 1).
pub const MAP_L2: &str = map_name!(MAP_L2);
/// ClientIP session affinity (LRU): [`AffinityKey`] → [`AffinityValue`].
pub const MAP_AFFINITY: &str = map_name!(MAP_AFFINITY);
/// Socket-LB reverse translation for UDP (LRU): [`SockRevNatKey`] → [`SockRevNatValue`].
pub const MAP_SOCK_REVNAT: &str = map_name!(MAP_SOCK_REVNAT);
/// Per-CPU counters per service, indexed by revnat id: [`LbCounter`].
pub const MAP_SVC_STATS: &str = map_name!(MAP_SVC_STATS);
/// Per-CPU counters per backend, indexed by backend id: [`LbCounter`].
pub const MAP_BACKEND_STATS: &str = map_name!(MAP_BACKEND_STATS);

/// Capacities. Service and backend ids are below these bounds (id 0 is never used).
/// All maps are preallocated (fast, predictable updates); the sizes keep the kernel memory
/// of all maps under 1 KiB per configured service (measured by `cargo xtask bench`: about
/// 62 MB for 65,536 services). Tables sized per flow (CT, affinity, socket rev-NAT) were
/// halved in their `_v2`.
pub const MAX_SERVICES: u32 = 65_536;
pub const MAX_BACKENDS: u32 = 65_536;
/// Frontend slots in total: a frontend takes 1 + number of backends slots.
pub const MAX_SERVICE_SLOTS: u32 = 262_144;
/// Two entries per tracked per-packet flow: 65,536 concurrent flows through the uplink or
/// pod veths (socket-LB flows need none); LRU evicts the oldest beyond that.
pub const MAX_CT_ENTRIES: u32 = 131_072;
pub const MAX_AFFINITY_ENTRIES: u32 = 32_768;
/// (UDP socket, backend) pairs socket-LB translated: only UDP needs them (TCP's
/// getpeername reports the backend, as in Cilium), so half the size it had when TCP
/// connects wrote entries too; LRU evicts the oldest beyond that.
pub const MAX_SOCK_REVNAT_ENTRIES: u32 = 16_384;
pub const MAX_L2_ENTRIES: u32 = 4_096;
/// Local pods that answered load-balanced flows; one per pod of the node.
pub const MAX_HOST_ROUTES: u32 = 4_096;

/// Maglev lookup tables of all frontends that use Maglev, one flat array of
/// [`MaglevBucket`]s (aya-ebpf 0.2 has no map-of-maps): a frontend's table is
/// [`maglev_size`] backend ids from entry `ServiceValue::backend_id` of its slot 0 on.
pub const MAP_MAGLEV: &str = map_name!(MAP_MAGLEV);
/// ClientIP affinity membership: [`AffinityMatchKey`] → `u32` (1) for each active backend
/// of each frontend with affinity, so an affine backend is checked in one lookup whatever
/// the number of backends (Cilium's `cilium_lb_affinity_match`).
pub const MAP_AFFINITY_MATCH: &str = map_name!(MAP_AFFINITY_MATCH);

/// Entries (backend ids) in [`MAP_MAGLEV`]: 1,048,576, 2 MiB of kernel memory (4 MiB took all
/// maps to 1,041 bytes per configured service, over the 1 KiB budget). Tables are allocated in
/// power-of-two blocks of at least [`MAGLEV_BLOCK_MIN`] entries (each prime size sits just
/// below its block), e.g. 64 tables of 10 backends (16,381 entries).
pub const MAGLEV_ENTRIES: u32 = 1 << 20;
/// Backend ids per [`MaglevBucket`] (array values are rounded up to 8 bytes by the kernel,
/// so four `u16` ids share one).
pub const MAGLEV_IDS_PER_BUCKET: u32 = 4;
/// The smallest table block, in entries.
pub const MAGLEV_BLOCK_MIN: u32 = 256;
/// Table sizes (primes, as Maglev needs), by size class: a frontend with N active backends
/// gets the smallest one ≥ 1,600 × N (see `kproxy::maglev`: ≥ 100 × N keeps the imbalance
/// between backends ~1 %, the larger factor keeps a removal's disruption near minimal), the
/// largest beyond 40 backends. Class c fits a block of `MAGLEV_BLOCK_MIN << c` entries.
pub const MAGLEV_SIZES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];
/// Where a Maglev frontend's size class sits in [`ServiceValue::flags`] (4 bits).
pub const MAGLEV_CLASS_SHIFT: u32 = 8;
/// Capacity of [`MAP_AFFINITY_MATCH`] (not preallocated: only frontends with affinity use it).
pub const MAX_AFFINITY_MATCH_ENTRIES: u32 = 65_536;

/// The table size of Maglev size class `class` (0 for an unknown class).
#[must_use]
pub const fn maglev_size(class: u32) -> u32 {
    match class {
        0 => MAGLEV_SIZES[0],
        1 => MAGLEV_SIZES[1],
        2 => MAGLEV_SIZES[2],
        3 => MAGLEV_SIZES[3],
        4 => MAGLEV_SIZES[4],
        5 => MAGLEV_SIZES[5],
        6 => MAGLEV_SIZES[6],
        7 => MAGLEV_SIZES[7],
        8 => MAGLEV_SIZES[8],
        _ => 0,
    }
}

/// Four entries of a Maglev table: backend ids (ids are below [`MAX_BACKENDS`], so they
/// fit a `u16`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaglevBucket {
    pub ids: [u16; 4],
}
const _: () = assert!(core::mem::size_of::<MaglevBucket>() == 8);
const _: () = assert!(MAX_BACKENDS <= u16::MAX as u32 + 1);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityMatchKey {
    pub backend_id: u32,
    pub revnat_id: u16,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<AffinityMatchKey>() == 8);

/// Service flags (in [`ServiceValue::flags`]).
pub mod svc_flags {
    /// ClientIP session affinity: reuse the client's last backend within the timeout.
    pub const AFFINITY: u32 = 1 << 0;
    /// Reachable from outside the node through the uplink (LoadBalancer IP, externalIP,
    /// NodePort). ClusterIP frontends are not.
    pub const EXTERNAL: u32 = 1 << 1;
    /// A NodePort frontend (the address is one of the node's addresses).
    pub const NODEPORT: u32 = 1 << 2;
    /// A LoadBalancer ingress IP: the uplink answers ARP for its address (see `MAP_L2`).
    pub const L2_ANNOUNCE: u32 = 1 << 3;
    /// Slot 0 only: new flows pick their backend from the frontend's Maglev table (the
    /// entry `hash % size` of the table at `backend_id`, size class in bits
    /// [`super::MAGLEV_CLASS_SHIFT`]..+4) instead of slot `1 + hash % count`. Only external
    /// frontends use it: there the same flow must find the same backend on every node
    /// and across backend changes.
    pub const MAGLEV: u32 = 1 << 4;
    /// Slot 0 only: the frontend has `loadBalancerSourceRanges`; packets from a client
    /// outside all of them ([`super::MAP_SRC_RANGE`]) are dropped. Frontends without it
    /// pay no lookup. Above the Maglev class bits, clear of flags added below them.
    pub const SOURCE_RANGE: u32 = 1 << 16;
    /// Slot 0 only: with no backend for a new flow, drop it (counted as no-backend) instead
    /// of refusing it. Set for a `Local` traffic policy whose endpoints are all on other
    /// nodes, kube-proxy's "has no local endpoints" DROP; a service without any endpoint is
    /// still refused.
    pub const DROP_NO_BACKEND: u32 = 1 << 17;
    /// The size class bits of a Maglev slot 0.
    pub const MAGLEV_CLASS_MASK: u32 = 0xf << super::MAGLEV_CLASS_SHIFT;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Frontend IPv4 address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// 0 for the frontend, 1..=count for backend slots.
    pub slot: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 12);

impl ServiceKey {
    #[must_use]
    pub const fn new(addr: u32, port: u16, proto: u8, slot: u16) -> Self {
        Self {
            addr,
            port,
            slot,
            proto,
            _pad: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Slot > 0: the backend id. Slot 0: the first entry of the frontend's Maglev table
    /// with [`svc_flags::MAGLEV`], else 0.
    pub backend_id: u32,
    /// Slot 0: backends taking new flows (slots 1..=count). 0 means "refuse new flows".
    pub count: u16,
    /// The service port's reverse-NAT id (also its index in the service counters).
    pub revnat_id: u16,
    /// [`svc_flags`].
    pub flags: u32,
    /// ClientIP affinity timeout in seconds (with [`svc_flags::AFFINITY`]).
    pub affinity_timeout_s: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);

/// Backend state (in [`Backend::state`]).
pub mod backend_state {
    /// Ready: eligible for new flows.
    pub const ACTIVE: u8 = 0;
    /// Terminating: existing flows continue, no new ones.
    pub const TERMINATING: u8 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Network byte order.
    pub addr: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    /// [`backend_state`].
    pub state: u8,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 8);

/// BPF host routing: pod IPv4 address (network byte order) → [`HostRoute`], how to hand a
/// packet straight to that local pod. The pod program learns entries from the pod's replies
/// to load-balanced flows; userspace removes those of a pod veth that goes away.
pub const MAP_HOST_ROUTES: &str = map_name!(MAP_HOST_ROUTES);

/// Where a local pod is: its host-side veth and the Ethernet addresses a routed packet to
/// it carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostRoute {
    /// The host-side veth's ifindex (`bpf_redirect_peer` target).
    pub ifindex: u32,
    /// The pod's MAC (destination of packets to it).
    pub pod_mac: [u8; 6],
    /// The MAC the pod routes through (its gateway, the bridge): source of packets to it.
    pub gw_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<HostRoute>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNat {
    /// Frontend address and port, network byte order.
    pub addr: u32,
    pub port: u16,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<RevNat>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityKey {
    /// Client identity: its IPv4 address (per-packet paths) or its network namespace cookie
    /// (socket-LB, where the source address is not known yet at connect time).
    pub client: u64,
    pub revnat_id: u16,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: [u16; 3],
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    pub backend_id: u32,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u32,
    /// bpf_ktime_get_ns() of the last use.
    pub last_used_ns: u64,
}
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevNatKey {
    pub cookie: u64,
    /// Backend address and port the socket was translated to, network byte order.
    pub addr: u32,
    pub port: u16,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevNatKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevNatValue {
    /// Frontend address and port the application used, network byte order.
    pub addr: u32,
    pub port: u16,
    pub revnat_id: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevNatValue>() == 8);

/// Per-CPU service/backend counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCounter {
    pub packets: u64,
    pub bytes: u64,
    /// Connections (TCP) or flows (UDP) newly assigned.
    pub new_flows: u64,
}
const _: () = assert!(core::mem::size_of::<LbCounter>() == 24);

impl LbCounter {
    #[must_use]
    pub const fn plus(self, o: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(o.packets),
            bytes: self.bytes.wrapping_add(o.bytes),
            new_flows: self.new_flows.wrapping_add(o.new_flows),
        }
    }
}

/// `loadBalancerSourceRanges` of LoadBalancer-IP frontends (LPM trie, Cilium's
/// `cilium_lb4_source_range`): key `{prefix_len, SrcRangeKey}` → `u32` (1), where
/// `prefix_len` is [`SRC_RANGE_PREFIX_BASE`] + the CIDR's length, so a lookup with the
/// client's address and the full length finds a range of that frontend containing it.
pub const MAP_SRC_RANGE: &str = map_name!(MAP_SRC_RANGE);
/// Capacity of [`MAP_SRC_RANGE`] (not preallocated: only frontends with ranges use it).
pub const MAX_SRC_RANGE_ENTRIES: u32 = 16_384;
/// Key bits before the address: the revnat id and the padding.
pub const SRC_RANGE_PREFIX_BASE: u32 = 32;

/// The data of a [`MAP_SRC_RANGE`] key (after the LPM trie's `prefix_len`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SrcRangeKey {
    /// The frontend's revnat id (always matched whole: every prefix length covers it).
    pub revnat_id: u16,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding, public so literals can zero it"
    )]
    pub _pad: u16,
    /// Range address (client address for lookups), network byte order.
    pub addr: u32,
}
const _: () = assert!(core::mem::size_of::<SrcRangeKey>() == 8);

#[cfg(feature = "user")]
#[expect(
    unsafe_code,
    reason = "aya::Pod is an unsafe trait: each impl vouches for the layout"
)]
mod user {
    // SAFETY: Counter is #[repr(C)], Copy, has no padding and every bit pattern is valid.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY (all below): #[repr(C)], Copy, explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::RevNat {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::SockRevNatKey {}
    unsafe impl aya::Pod for super::SockRevNatValue {}
    unsafe impl aya::Pod for super::LbCounter {}
    unsafe impl aya::Pod for super::HostRoute {}
    unsafe impl aya::Pod for super::MaglevBucket {}
    unsafe impl aya::Pod for super::AffinityMatchKey {}
    unsafe impl aya::Pod for super::SrcRangeKey {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragPorts {}
    unsafe impl aya::Pod for super::VipBucket {}
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
    fn maglev_sizes_fit_their_blocks() {
        let mut block = MAGLEV_BLOCK_MIN;
        for (class, size) in (0u32..).zip(MAGLEV_SIZES) {
            assert_eq!(maglev_size(class), size);
            assert!(size <= block && size > block / 2, "{size} in {block}");
            block *= 2;
        }
        assert_eq!(maglev_size(9), 0);
        const { assert!(svc_flags::MAGLEV_CLASS_MASK & (svc_flags::MAGLEV * 2 - 1) == 0) };
    }

    #[test]
    fn protocol_classes() {
        assert_eq!(PacketClass::from_ip_proto(1), PacketClass::Icmp);
        assert_eq!(PacketClass::from_ip_proto(6), PacketClass::Tcp);
        assert_eq!(PacketClass::from_ip_proto(17), PacketClass::Udp);
        assert_eq!(PacketClass::from_ip_proto(47), PacketClass::OtherIpv4);
    }
}
