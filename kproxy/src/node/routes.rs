//! Host-gw routes: the pod network across nodes without encapsulation (flannel host-gw,
//! kube-router). Every other Node's `spec.podCIDR` is routed via its InternalIP, so pod →
//! pod traffic between nodes keeps both addresses; the nodes must share an L2 segment.
//!
//! The routes carry kproxy's route protocol number ([`ROUTE_PROTOCOL`]), which is how they
//! are told apart from anyone else's. They outlive kproxy (pod traffic must not break
//! during a restart); a start reconciles them once the first Node list is complete:
//! kproxy's routes no Node wants any more go, the rest are added or replaced. Nothing is
//! touched before that list, so an unreachable API server leaves the routes as they are.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kproxy::metrics::{NODE_ROUTE_CHANGES as ROUTE_CHANGES, NODE_ROUTES as ROUTES};
use kproxy_podnet::{Added, GatewayRoutes, Ipv4Net};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};

/// The `protocol` of kproxy's routes (`ip route show proto 203`); unused by the well-known
/// routing daemons (iproute2's rt_protos).
pub const ROUTE_PROTOCOL: u8 = 203;
/// Routes are checked against the Nodes this often even without a change (a route removed
/// by hand comes back).
const RESYNC: Duration = Duration::from_secs(30);

/// What one Node contributes: its pod CIDR and InternalIP, when it has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRoute {
    pub pod_cidr: Ipv4Net,
    pub via: Ipv4Addr,
}

/// The route a Node asks for (IPv4 only).
pub fn node_route(node: &Node) -> Option<NodeRoute> {
    let pod_cidr = node
        .spec
        .as_ref()?
        .pod_cidr
        .as_deref()?
        .parse::<Ipv4Net>()
        .ok()?
        .trunc();
    let via = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())?;
    Some(NodeRoute { pod_cidr, via })
}

/// The routes this node wants: every other node's pod CIDR via its address. A CIDR that
/// overlaps this node's own (its bridge route) is skipped, and of two nodes with the same
/// CIDR the first by name wins; both are logged by the caller from `skipped`.
pub fn wanted(
    nodes: &BTreeMap<String, NodeRoute>,
    own: &str,
) -> (BTreeMap<Ipv4Net, Ipv4Addr>, Vec<String>) {
    let own_cidr = nodes.get(own).map(|r| r.pod_cidr);
    let mut want = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, r) in nodes.iter().filter(|(n, _)| *n != own) {
        let overlaps_own =
            own_cidr.is_some_and(|o| o.contains(&r.pod_cidr) || r.pod_cidr.contains(&o));
        if overlaps_own || want.contains_key(&r.pod_cidr) {
            skipped.push(name.clone());
            continue;
        }
        want.insert(r.pod_cidr, r.via);
    }
    (want, skipped)
}

/// What to change so that `have` (kproxy's routes now) becomes `want`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// New prefixes.
    pub add: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Prefixes kproxy routes already, via another address.
    pub replace: Vec<(Ipv4Net, Ipv4Addr)>,
    /// kproxy's routes no node wants (with their current gateway).
    pub remove: Vec<(Ipv4Net, Ipv4Addr)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.remove.is_empty()
    }
}

pub fn diff(have: &BTreeMap<Ipv4Net, Ipv4Addr>, want: &BTreeMap<Ipv4Net, Ipv4Addr>) -> Changes {
    let mut c = Changes::default();
    for (dst, via) in want {
        match have.get(dst) {
            None => c.add.push((*dst, *via)),
            Some(old) if old != via => c.replace.push((*dst, *via)),
            Some(_) => {}
        }
    }
    c.remove = have
        .iter()
        .filter(|(dst, _)| !want.contains_key(dst))
        .map(|(d, v)| (*d, *v))
        .collect();
    c
}

/// Starts the task that keeps the routes (see the module comment).
pub fn spawn(client: Client, own: String) {
    tokio::spawn(async move {
        let routes = match GatewayRoutes::open(ROUTE_PROTOCOL) {
            Ok(r) => r,
            Err(err) => {
                return tracing::error!(%err, "no netlink socket: node routes are not kept");
            }
        };
        let mut stream = watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut nodes: BTreeMap<String, NodeRoute> = BTreeMap::new();
        let mut relist: Option<BTreeMap<String, NodeRoute>> = None;
        let mut listed = false;
        let mut warned = BTreeSet::new();
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                item = stream.next() => {
                    let Some(item) = item else { return };
                    match item {
                        Ok(ev) => apply(ev, &mut nodes, &mut relist, &mut listed),
                        Err(err) => {
                            tracing::warn!(%err, "Node watch failed, retrying; node routes are left as they are");
                            continue;
                        }
                    }
                }
                _ = resync.tick() => {}
            }
            if listed {
                reconcile(&routes, &nodes, &own, &mut warned).await;
            }
        }
    });
}

fn apply(
    ev: watcher::Event<Node>,
    nodes: &mut BTreeMap<String, NodeRoute>,
    relist: &mut Option<BTreeMap<String, NodeRoute>>,
    listed: &mut bool,
) {
    let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
    match ev {
        watcher::Event::Apply(n) => match node_route(&n) {
            Some(r) => {
                nodes.insert(name(&n), r);
            }
            None => {
                nodes.remove(&name(&n));
            }
        },
        watcher::Event::Delete(n) => {
            nodes.remove(&name(&n));
        }
        watcher::Event::Init => *relist = Some(BTreeMap::new()),
        watcher::Event::InitApply(n) => {
            if let (Some(buf), Some(r)) = (relist.as_mut(), node_route(&n)) {
                buf.insert(name(&n), r);
            }
        }
        watcher::Event::InitDone => {
            *nodes = relist.take().unwrap_or_default();
            *listed = true;
        }
    }
}

/// Brings kproxy's routes in line with `nodes`. Failures are logged and retried at the next
/// event or resync.
async fn reconcile(
    routes: &GatewayRoutes,
    nodes: &BTreeMap<String, NodeRoute>,
    own: &str,
    warned: &mut BTreeSet<String>,
) {
    let (want, skipped) = wanted(nodes, own);
    for node in skipped {
        if warned.insert(node.clone()) {
            tracing::warn!(%node, "pod CIDR overlaps this node's or another node's: not routed");
        }
    }
    let have = match routes.list().await {
        Ok(h) => h,
        Err(err) => return tracing::warn!(%err, "cannot list the node routes"),
    };
    let changes = diff(&have, &want);
    let mut count = have.len();
    if changes.is_empty() {
        ROUTES.set(i64::try_from(count).unwrap_or(i64::MAX));
        return;
    }
    for (dst, via) in &changes.remove {
        match routes.remove(*dst, *via).await {
            Ok(()) => {
                count -= 1;
                ROUTE_CHANGES.inc();
                tracing::info!(pod_cidr = %dst, %via, "node route removed");
            }
            Err(err) => tracing::warn!(%err, "cannot remove a node route"),
        }
    }
    for (dst, via) in &changes.replace {
        match routes.replace(*dst, *via).await {
            Ok(()) => {
                ROUTE_CHANGES.inc();
                tracing::info!(pod_cidr = %dst, %via, "node route changed");
            }
            Err(err) => tracing::warn!(%err, "cannot change a node route"),
        }
    }
    for (dst, via) in &changes.add {
        match routes.add(*dst, *via).await {
            Ok(Added::Added) => {
                count += 1;
                ROUTE_CHANGES.inc();
                tracing::info!(pod_cidr = %dst, %via, "node route added");
            }
            Ok(Added::Foreign) => {
                tracing::warn!(pod_cidr = %dst, %via, "a route for this pod CIDR exists that kproxy does not own: left alone");
            }
            Err(err) => tracing::warn!(%err, "cannot add a node route"),
        }
    }
    ROUTES.set(i64::try_from(count).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cidr: &str, via: &str) -> NodeRoute {
        NodeRoute {
            pod_cidr: cidr.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<Ipv4Net, Ipv4Addr> {
        pairs
            .iter()
            .map(|(c, v)| (c.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn other_nodes_are_routed_via_their_address() {
        let nodes = BTreeMap::from([
            ("a".to_string(), r("10.244.0.0/24", "172.31.0.1")),
            ("b".to_string(), r("10.244.1.0/24", "172.31.0.12")),
            ("c".to_string(), r("10.244.2.0/24", "172.31.0.13")),
        ]);
        let (want, skipped) = wanted(&nodes, "a");
        assert_eq!(
            want,
            map(&[
                ("10.244.1.0/24", "172.31.0.12"),
                ("10.244.2.0/24", "172.31.0.13")
            ])
        );
        assert!(skipped.is_empty());
        // A single node has nothing to route.
        let alone = BTreeMap::from([("a".to_string(), r("10.244.0.0/24", "172.31.0.1"))]);
        assert!(wanted(&alone, "a").0.is_empty());
    }

    #[test]
    fn overlapping_cidrs_are_skipped() {
        let nodes = BTreeMap::from([
            ("a".to_string(), r("10.244.0.0/24", "172.31.0.1")),
            ("b".to_string(), r("10.244.0.0/16", "172.31.0.12")),
            ("c".to_string(), r("10.245.0.0/24", "172.31.0.13")),
            ("d".to_string(), r("10.245.0.0/24", "172.31.0.14")),
        ]);
        let (want, skipped) = wanted(&nodes, "a");
        assert_eq!(want, map(&[("10.245.0.0/24", "172.31.0.13")]));
        assert_eq!(skipped, ["b", "d"]);
    }

    #[test]
    fn diff_adds_replaces_and_removes() {
        let have = map(&[
            ("10.244.1.0/24", "172.31.0.12"),
            ("10.244.2.0/24", "172.31.0.13"),
            ("10.244.9.0/24", "172.31.0.19"),
        ]);
        let want = map(&[
            ("10.244.1.0/24", "172.31.0.12"),
            ("10.244.2.0/24", "172.31.0.23"),
            ("10.244.3.0/24", "172.31.0.14"),
        ]);
        let c = diff(&have, &want);
        assert_eq!(
            c.add,
            [(
                "10.244.3.0/24".parse().unwrap(),
                "172.31.0.14".parse().unwrap()
            )]
        );
        assert_eq!(
            c.replace,
            [(
                "10.244.2.0/24".parse().unwrap(),
                "172.31.0.23".parse().unwrap()
            )]
        );
        assert_eq!(
            c.remove,
            [(
                "10.244.9.0/24".parse().unwrap(),
                "172.31.0.19".parse().unwrap()
            )]
        );
        assert!(diff(&want, &want).is_empty());
        assert_eq!(diff(&have, &BTreeMap::new()).remove.len(), 3);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        node: super::super::Opts,
    }

    #[test]
    fn node_flags_parse() {
        use clap::Parser as _;
        let base = ["kproxy", "--kubeconfig", "k", "--node-name", "n2"];
        let o = Cli::try_parse_from(base).unwrap().node;
        assert!(!o.no_node_routes, "host-gw routes are on by default");
        assert_eq!(o.datapath.socket_lb_cgroup, None);
        let o = Cli::try_parse_from(base.iter().copied().chain([
            "--no-node-routes",
            "--socket-lb-scope",
            "host",
            "--socket-lb-cgroup",
            "/sys/fs/cgroup/unified/kproxy-n2",
        ]))
        .unwrap()
        .node;
        assert!(o.no_node_routes);
        assert_eq!(
            o.datapath.socket_lb_cgroup.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/unified/kproxy-n2"))
        );
        assert_eq!(
            o.datapath.socket_lb_scope,
            crate::setup::SocketLbScope::Host
        );
    }

    #[test]
    fn a_node_needs_a_pod_cidr_and_an_internal_ip() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"podCIDR": "10.244.1.7/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "b"},
                {"type": "InternalIP", "address": "172.31.0.12"}
            ]}
        }))
        .unwrap();
        assert_eq!(node_route(&node), Some(r("10.244.1.0/24", "172.31.0.12")));
        let no_cidr: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.31.0.12"}]}
        }))
        .unwrap();
        assert_eq!(node_route(&no_cidr), None);
        let v6: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"podCIDR": "fd00::/64"},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.31.0.12"}]}
        }))
        .unwrap();
        assert_eq!(node_route(&v6), None);
    }
}
