//! BPF host routing (`--host-routing`): switching it, and keeping `HOST_ROUTES` free of pod
//! veths that are gone. The pod program learns the entries (kproxy-ebpf's `host_route`);
//! an entry of a deleted veth would send a recreated pod's traffic into the void until the
//! new pod answered, so entries are dropped as soon as their veth stops being a pod veth.

use std::ffi::CString;

use aya::maps::HashMap;
use kproxy_common::{HostRoute, MAP_HOST_ROUTES, config};

use super::{Datapath, DatapathError};

/// Where packets to local pod backends go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostRouting {
    /// `bpf_redirect_peer` into the pod, `bpf_redirect` of replies out of the uplink.
    Bpf,
    /// The kernel's path: routing, netfilter and the bridge.
    Legacy,
}

/// The ifindex of `iface` in the calling thread's namespace, if it exists.
fn ifindex(iface: &str) -> Option<u32> {
    let name = CString::new(iface).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The entries to delete: those whose veth is not one of `live` (the ifindexes of the
/// attached pod veths), or all of them when host routing is off.
fn stale(entries: &[(u32, u32)], live: &[u32], on: bool) -> Vec<u32> {
    entries
        .iter()
        .filter(|(_, index)| !on || !live.contains(index))
        .map(|(ip, _)| *ip)
        .collect()
}

impl Datapath {
    /// Switches BPF host routing on (with the uplink it redirects replies to) or off.
    pub fn set_host_routing(
        &mut self,
        mode: HostRouting,
        uplink: Option<&str>,
    ) -> Result<(), DatapathError> {
        let uplink_index = uplink.and_then(ifindex).unwrap_or(0);
        let on = mode == HostRouting::Bpf && uplink_index != 0;
        if mode == HostRouting::Bpf && !on {
            tracing::warn!("--host-routing bpf needs an --uplink; using the kernel's path");
        }
        self.set_config(config::UPLINK_IFINDEX, uplink_index)?;
        self.set_config(config::HOST_ROUTING, u32::from(on))?;
        self.host_routing = on;
        self.prune_host_routes()
    }

    /// Deletes the learned routes whose pod veth is not attached any more (or all of them
    /// with host routing off). Called after every pod veth change.
    pub fn prune_host_routes(&mut self) -> Result<(), DatapathError> {
        let live: Vec<u32> = self.pod_ifaces.iter().filter_map(|i| ifindex(i)).collect();
        let on = self.host_routing;
        let map = self
            .ebpf
            .map_mut(MAP_HOST_ROUTES)
            .ok_or(DatapathError::MissingMap(MAP_HOST_ROUTES))?;
        let mut routes: HashMap<_, u32, HostRoute> =
            HashMap::try_from(map).map_err(|source| DatapathError::Map {
                name: MAP_HOST_ROUTES,
                source,
            })?;
        let entries: Vec<(u32, u32)> = routes
            .iter()
            .filter_map(Result::ok)
            .map(|(ip, r)| (ip, r.ifindex))
            .collect();
        for ip in stale(&entries, &live, on) {
            // Gone already (the LRU of nothing, a concurrent prune) is fine.
            let _ = routes.remove(&ip);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::stale;

    #[test]
    fn routes_of_detached_veths_go_and_all_go_when_off() {
        let entries = [(1, 10), (2, 11), (3, 12)];
        assert_eq!(stale(&entries, &[10, 12], true), [2]);
        assert_eq!(stale(&entries, &[10, 11, 12], true), Vec::<u32>::new());
        assert_eq!(stale(&entries, &[10, 11, 12], false), [1, 2, 3]);
    }
}
