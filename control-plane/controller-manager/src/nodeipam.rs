//! Node IPAM: each Node without one gets a distinct `spec.podCIDR` / `spec.podCIDRs`, a
//! `/node_cidr_mask` out of the cluster CIDR (kube-controller-manager's range allocator).
//! The CIDRs existing Nodes have are marked used first; an exhausted cluster CIDR leaves the
//! Node without one and says so in a `CIDRNotAvailable` Event, never an overlap. A deleted
//! Node's CIDR is free again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt as _, channel::mpsc, stream::BoxStream};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, Resource as _, ResourceExt as _,
    api::Patch,
    runtime::{
        WatchStreamExt as _, applier,
        controller::{Action, Config as ApplierConfig},
        reflector::{self, ObjectRef, Store},
        watcher::{self, Event},
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    Config, SyncError as Error, api_err,
    events::{Recorder, Type},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0} is not inside the cluster CIDR {1}")]
    Outside(Ipv4Net, Ipv4Net),
    #[error("{0} overlaps the CIDR of node {1}")]
    Taken(Ipv4Net, String),
    #[error("no /{1} left in the cluster CIDR {0}")]
    Exhausted(Ipv4Net, u8),
}

// === impl CidrAllocator ===

/// Which `/mask` of the cluster CIDR belongs to which node.
#[derive(Debug)]
pub struct CidrAllocator {
    cluster: Ipv4Net,
    mask: u8,
    used: HashMap<Ipv4Net, String>,
    by_node: HashMap<String, Vec<Ipv4Net>>,
}

impl CidrAllocator {
    #[must_use]
    pub fn new(cluster: Ipv4Net, mask: u8) -> Self {
        Self {
            cluster: cluster.trunc(),
            mask,
            used: HashMap::new(),
            by_node: HashMap::new(),
        }
    }

    /// The `/mask` blocks a CIDR touches (one that is larger or smaller than the node
    /// mask still occupies every block it overlaps).
    fn blocks(&self, cidr: Ipv4Net) -> Vec<Ipv4Net> {
        if cidr.prefix_len() >= self.mask {
            Ipv4Net::new(cidr.network(), self.mask)
                .map(|n| vec![n.trunc()])
                .unwrap_or_default()
        } else {
            cidr.subnets(self.mask)
                .map(Iterator::collect)
                .unwrap_or_default()
        }
    }

    /// Records `cidr` as `node`'s (a Node that has one already).
    pub fn occupy(&mut self, node: &str, cidr: Ipv4Net) -> Result<(), CidrError> {
        let cidr = cidr.trunc();
        if !self.cluster.contains(&cidr) {
            return Err(CidrError::Outside(cidr, self.cluster));
        }
        let blocks = self.blocks(cidr);
        if let Some(other) = blocks
            .iter()
            .find_map(|b| self.used.get(b).filter(|o| o.as_str() != node))
        {
            return Err(CidrError::Taken(cidr, other.clone()));
        }
        for b in blocks {
            if self.used.insert(b, node.to_string()).is_none() {
                self.by_node.entry(node.to_string()).or_default().push(b);
            }
        }
        Ok(())
    }

    /// The lowest free `/mask` for `node` (or the one it has).
    pub fn allocate(&mut self, node: &str) -> Result<Ipv4Net, CidrError> {
        if let Some(have) = self.by_node.get(node).and_then(|v| v.first()) {
            return Ok(*have);
        }
        let free = self
            .cluster
            .subnets(self.mask)
            .map_err(|_| CidrError::Exhausted(self.cluster, self.mask))?
            .find(|b| !self.used.contains_key(b))
            .ok_or(CidrError::Exhausted(self.cluster, self.mask))?;
        self.occupy(node, free)?;
        Ok(free)
    }

    pub fn release(&mut self, node: &str) -> Vec<Ipv4Net> {
        let blocks = self.by_node.remove(node).unwrap_or_default();
        for b in &blocks {
            self.used.remove(b);
        }
        blocks
    }

    #[must_use]
    pub fn used(&self) -> usize {
        self.used.len()
    }
}

/// The CIDRs a Node's spec shows.
fn node_cidrs(node: &Node) -> Vec<Ipv4Net> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut v: Vec<Ipv4Net> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .filter_map(|c| c.parse().ok())
        .collect();
    v.sort();
    v.dedup();
    v
}

// === controller ===

struct State {
    alloc: CidrAllocator,
    rebuilt: bool,
    /// Nodes waiting for a CIDR.
    pending: BTreeSet<String>,
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    state: Mutex<State>,
    recorder: Recorder,
    wake: mpsc::UnboundedSender<ObjectRef<Node>>,
}

impl Ctx {
    fn state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("nodeipam lock"))
    }
}

fn rebuild(state: &mut State, nodes: &[Arc<Node>]) {
    let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.metadata.creation_timestamp.clone());
    for node in sorted {
        for c in node_cidrs(node) {
            if let Err(e) = state.alloc.occupy(&node.name_any(), c) {
                warn!(node = %node.name_any(), error = %e, "cannot mark the node's pod CIDR used");
            }
        }
    }
    state.rebuilt = true;
    info!(
        used = state.alloc.used(),
        "node CIDRs rebuilt from the Nodes"
    );
}

enum Decision {
    Keep,
    Assign(Ipv4Net),
    /// No CIDR for it; the reason the first time (told in an Event), `None` after.
    Pending(Option<String>),
}

#[tracing::instrument(skip_all, fields(node = %node.name_any()))]
async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.nodes.wait_until_ready().await?;
    let name = node.name_any();
    let decision = ctx.state(|s| {
        if !s.rebuilt {
            rebuild(s, &ctx.nodes.state());
        }
        let have = node_cidrs(&node);
        if !have.is_empty() {
            s.pending.remove(&name);
            for c in have {
                if let Err(e) = s.alloc.occupy(&name, c) {
                    warn!(error = %e, "node's pod CIDR conflicts");
                }
            }
            return Decision::Keep;
        }
        match s.alloc.allocate(&name) {
            Ok(c) => {
                s.pending.remove(&name);
                Decision::Assign(c)
            }
            Err(e) => {
                let first = s.pending.insert(name.clone());
                Decision::Pending(first.then(|| e.to_string()))
            }
        }
    });
    let waiting = matches!(decision, Decision::Pending(_));
    match decision {
        // Nothing to write, or a pending node already warned about.
        Decision::Keep | Decision::Pending(None) => {}
        Decision::Assign(c) => {
            let api: Api<Node> = Api::all(ctx.client.clone());
            let pp = crate::patch_params();
            let patch = json!({"spec": {"podCIDR": c.to_string(), "podCIDRs": [c.to_string()]}});
            match api.patch(&name, &pp, &Patch::Merge(patch)).await {
                Ok(_) => info!(pod_cidr = %c, "pod CIDR assigned"),
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    ctx.state(|s| s.alloc.release(&name));
                }
                Err(e) => {
                    // Someone else may have set one (the API refuses changing it): ours is
                    // given back and the next reconcile records theirs.
                    ctx.state(|s| s.alloc.release(&name));
                    return Err(api_err(format!("writing the pod CIDR of Node {name}"))(e));
                }
            }
        }
        Decision::Pending(Some(why)) => {
            warn!(reason = %why, "no pod CIDR for the node");
            ctx.recorder.publish(
                &node.object_ref(&()),
                Type::Warning,
                "CIDRNotAvailable",
                &format!("Node {name} status is now: CIDRNotAvailable ({why})"),
            );
        }
    }
    Ok(if waiting {
        Action::requeue(Duration::from_mins(1))
    } else {
        Action::await_change()
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(node: Arc<Node>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(node = %node.name_any(), error = %err, "node IPAM failed, retrying");
    Action::requeue(Duration::from_millis(500))
}

pub async fn run(client: Client, config: Arc<Config>) -> crate::error::Result<()> {
    let (nodes, writer) = reflector::store::<Node>();
    let (wake, woken) = mpsc::unbounded();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        nodes: nodes.clone(),
        state: Mutex::new(State {
            alloc: CidrAllocator::new(config.cluster_cidr, config.node_cidr_mask),
            rebuilt: false,
            pending: BTreeSet::new(),
        }),
        recorder: Recorder::new(client.clone(), "node-ipam-controller"),
        wake,
    });
    let c = Arc::clone(&ctx);
    let events: BoxStream<'static, Result<ObjectRef<Node>, watcher::Error>> =
        watcher::watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .filter_map(move |ev| {
                let out = match ev {
                    Ok(Event::Apply(n) | Event::InitApply(n)) => Some(Ok(ObjectRef::from_obj(&n))),
                    Ok(Event::Delete(n)) => {
                        let name = n.name_any();
                        let (freed, pending) = c.state(|s| {
                            s.pending.remove(&name);
                            let freed = if s.rebuilt {
                                s.alloc.release(&name)
                            } else {
                                Vec::new()
                            };
                            (freed, s.pending.iter().cloned().collect::<Vec<_>>())
                        });
                        if !freed.is_empty() {
                            info!(node = %name, cidrs = ?freed, "pod CIDR released");
                            for p in pending {
                                let _ = c.wake.unbounded_send(ObjectRef::new(&p));
                            }
                        }
                        None
                    }
                    Ok(Event::Init | Event::InitDone) => None,
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(out)
            })
            .boxed();
    let queue = futures::stream::select(events, woken.map(Ok).boxed());
    info!(cluster_cidr = %config.cluster_cidr, mask = config.node_cidr_mask, "nodeipam controller running");
    crate::drain(
        "nodeipam",
        applier(
            |n, ctx| Box::pin(reconcile(n, ctx)),
            error_policy,
            ctx,
            nodes,
            queue,
            ApplierConfig::default().concurrency(16),
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn distinct_cidrs_until_exhausted_then_freed() {
        let mut a = CidrAllocator::new(net("10.244.0.0/23"), 24);
        assert_eq!(a.allocate("n1"), Ok(net("10.244.0.0/24")));
        assert_eq!(a.allocate("n2"), Ok(net("10.244.1.0/24")));
        assert_eq!(
            a.allocate("n1"),
            Ok(net("10.244.0.0/24")),
            "same node, same CIDR"
        );
        assert_eq!(
            a.allocate("n3"),
            Err(CidrError::Exhausted(net("10.244.0.0/23"), 24))
        );
        assert_eq!(a.release("n1"), vec![net("10.244.0.0/24")]);
        assert_eq!(a.allocate("n3"), Ok(net("10.244.0.0/24")));
    }

    #[test]
    fn existing_cidrs_are_never_handed_out_again() {
        let mut a = CidrAllocator::new(net("10.244.0.0/16"), 24);
        a.occupy("old", net("10.244.0.0/24")).unwrap();
        // A larger existing CIDR takes every block it covers.
        a.occupy("big", net("10.244.2.0/23")).unwrap();
        assert_eq!(a.allocate("n"), Ok(net("10.244.1.0/24")));
        assert_eq!(a.allocate("m"), Ok(net("10.244.4.0/24")));
        assert_eq!(
            a.occupy("x", net("10.244.3.128/25")),
            Err(CidrError::Taken(net("10.244.3.128/25"), "big".into()))
        );
        assert!(matches!(
            a.occupy("y", net("10.99.0.0/24")),
            Err(CidrError::Outside(..))
        ));
        // Occupying again for the same node is fine.
        assert_eq!(a.occupy("old", net("10.244.0.0/24")), Ok(()));
        assert_eq!(a.by_node["big"].len(), 2);
    }
}
