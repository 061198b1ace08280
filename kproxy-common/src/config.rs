/// Non-zero: emit aya-log debug events for every classified packet.
pub const DEBUG_EVENTS: u32 = 0;
/// Non-zero: the uplink's tc ingress program does the external load balancing (when XDP
/// is not used for it); zero: XDP does it.
pub const LB_IN_TC: u32 = 1;
/// Socket-LB scope: the network namespace cookie (low and high 32 bits) whose sockets
/// socket-LB translates; 0 in both means every namespace in the attached cgroup.
pub const SOCK_LB_NETNS_LO: u32 = 2;
pub const SOCK_LB_NETNS_HI: u32 = 3;
/// The uplink's MAC address (bytes 0..4 and 4..6, in wire order as a native `u32`),
/// the sender of ARP replies for LoadBalancer IPs.
pub const UPLINK_MAC_0: u32 = 4;
pub const UPLINK_MAC_4: u32 = 5;
/// The load-balancing hash seed (low and high 32 bits), chosen once per cluster
/// (`--lb-hash-seed`) or at random on the first start and kept with the pinned maps:
/// the flow hash mixes it in and the Maglev tables are generated from it, so clients
/// cannot aim their flows at one backend and a restart keeps every flow's backend.
pub const HASH_SEED_LO: u32 = 6;
pub const HASH_SEED_HI: u32 = 7;
/// Non-zero: BPF host routing (`--host-routing bpf`): load-balanced packets to local pod
/// backends and their replies to the uplink are redirected past the bridge and the
/// host's routing (see `MAP_HOST_ROUTES`).
pub const HOST_ROUTING: u32 = 8;
/// The uplink's ifindex: replies are redirected only when the FIB sends them there.
pub const UPLINK_IFINDEX: u32 = 9;
/// Socket-LB's cgroup scope (`--socket-lb-cgroup`): sockets of processes under this
/// cgroup v2 directory (its id, low and high 32 bits, and its depth below the root) are
/// translated whatever their network namespace; an id of 0 means none.
pub const SOCK_LB_CGROUP_LO: u32 = 10;
pub const SOCK_LB_CGROUP_HI: u32 = 11;
pub const SOCK_LB_CGROUP_LEVEL: u32 = 12;
/// Number of slots.
pub const LEN: u32 = 13;
