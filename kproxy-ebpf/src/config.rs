//! The runtime configuration userspace writes into `CONFIG` (slots in
//! `kproxy_common::config`), read per packet so changes take effect without a reload.

use aya_ebpf::helpers::bpf_get_current_ancestor_cgroup_id;
use kproxy_common::config;

use crate::maps::CONFIG;

/// Whether to emit aya-log debug events for every classified packet.
#[inline(always)]
pub fn debug_events_enabled() -> bool {
    matches!(CONFIG.get(config::DEBUG_EVENTS), Some(v) if *v != 0)
}

/// Whether the uplink's external load balancing runs in tc ingress instead of XDP.
#[inline(always)]
pub fn lb_in_tc() -> bool {
    matches!(CONFIG.get(config::LB_IN_TC), Some(v) if *v != 0)
}

/// BPF host routing: the uplink's ifindex when it is on (`config::HOST_ROUTING`), else
/// `None`.
#[inline(always)]
pub fn host_routing_uplink() -> Option<u32> {
    match CONFIG.get(config::HOST_ROUTING) {
        Some(v) if *v != 0 => CONFIG.get(config::UPLINK_IFINDEX).copied(),
        _ => None,
    }
}

/// The uplink's MAC address, once userspace has set it.
#[inline(always)]
pub fn uplink_mac() -> Option<[u8; 6]> {
    let lo = CONFIG.get(config::UPLINK_MAC_0).copied()?.to_ne_bytes();
    let hi = CONFIG.get(config::UPLINK_MAC_4).copied()?.to_ne_bytes();
    let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
    if mac == [0; 6] { None } else { Some(mac) }
}

/// Whether socket-LB applies to sockets of network namespace `netns`: every namespace, or
/// only the one `--socket-lb-scope host` names (namespaces standing for other hosts, and
/// pods, then take the per-packet paths), plus any socket of a process under the
/// `--socket-lb-cgroup` directory (the node's pods, whatever their namespace).
#[inline(always)]
pub fn socket_lb_in_scope(netns: u64) -> bool {
    let part = |i| CONFIG.get(i).copied().unwrap_or(0);
    let want = (u64::from(part(config::SOCK_LB_NETNS_HI)) << 32)
        | u64::from(part(config::SOCK_LB_NETNS_LO));
    want == 0 || want == netns || in_socket_lb_cgroup()
}

/// Whether the calling process is in the cgroup `config::SOCK_LB_CGROUP_*` names (or below
/// it): its ancestor at that cgroup's depth is that cgroup.
#[inline(always)]
fn in_socket_lb_cgroup() -> bool {
    let part = |i| CONFIG.get(i).copied().unwrap_or(0);
    let id = (u64::from(part(config::SOCK_LB_CGROUP_HI)) << 32)
        | u64::from(part(config::SOCK_LB_CGROUP_LO));
    if id == 0 {
        return false;
    }
    #[expect(
        clippy::cast_possible_wrap,
        reason = "a cgroup depth, far below i32::MAX"
    )]
    let level = part(config::SOCK_LB_CGROUP_LEVEL) as i32;
    // SAFETY: helper without memory arguments; 0 when the process is not that deep.
    unsafe { bpf_get_current_ancestor_cgroup_id(level) == id }
}

/// The load-balancing hash seed (`config::HASH_SEED_*`), folded to 32 bits for the flow
/// hash; 0 until userspace set it.
#[inline(always)]
pub fn hash_seed() -> u32 {
    let part = |i| CONFIG.get(i).copied().unwrap_or(0);
    part(config::HASH_SEED_LO) ^ part(config::HASH_SEED_HI)
}
