//! Pod networking for the kubelet: the node bridge, one veth pair per pod whose peer is the
//! pod's `eth0` inside the sandbox's network namespace, a persistent IPAM, and the forwarding
//! rules that let pod traffic through dockerd's `FORWARD DROP` policy.
//!
//! All link, address and route changes go through rtnetlink. Work inside a pod's namespace
//! runs on a dedicated thread that `setns`es into it with its own netlink connection, so the
//! caller's threads never change namespace. The async functions need a tokio runtime.

mod bridge;
mod error;
mod forward;
mod gw;
mod ipam;
mod keep_dev;
mod links;
mod names;
mod netns;
mod nl;
mod route;
mod veth;

pub use bridge::ensure_bridge;
pub use error::{Error, Result};
pub use forward::{
    ForwardRule, cluster_forwarding_rules, disable_forwarding, enable_cluster_forwarding,
    enable_forwarding, forwarding_rules,
};
pub use gw::{Added, GatewayRoutes};
pub use ipam::Ipam;
/// Re-exported: the pod CIDR type of this API.
pub use ipnet::Ipv4Net;
pub use keep_dev::{ensure_keep_dev, remove_keep_dev, route_to_keep_dev};
pub use links::{LinkEvent, LinkState, LinkWatch};
pub use names::{POD_IFNAME, host_ifname, validate_ifname};
pub use route::ensure_unreachable;
pub use veth::{attach, detach};
