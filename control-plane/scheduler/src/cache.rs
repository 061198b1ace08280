//! The scheduler's view of the cluster: per node, what the scheduler needs of the Node
//! object and the sums of the pods bound or assumed to it. Only small facts are kept (not
//! whole objects), so 10,000 pods cost little memory, and a pod decision is accounted for
//! the moment it is made (assumed), before the bind is confirmed by the watch.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::resources::{self, Allocatable, HostPort, PodRequests, Resources};

/// What scheduling needs of a Node. Equality tells whether a node update can change a
/// decision (heartbeats and addresses do not), which is when unschedulable pods are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    /// The Ready condition's status (`True`, `False`, `Unknown`), `None` when not reported.
    pub ready: Option<String>,
    pub allocatable: Allocatable,
}

impl NodeFacts {
    #[must_use]
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        NodeFacts {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready: node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status.clone()),
            allocatable: resources::allocatable(node),
        }
    }
}

/// What a pod occupies on its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub requests: PodRequests,
    pub ports: Vec<HostPort>,
    /// The controller owner's uid: pods of one owner are spread across nodes.
    pub owner: Option<String>,
}

impl PodFacts {
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Self {
        PodFacts {
            requests: resources::pod_requests(pod),
            ports: resources::host_ports(pod),
            owner: controller_uid(pod),
        }
    }
}

#[must_use]
pub fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// One node and the pods bound or assumed to it. `node` is `None` while pods still name a
/// node whose object is gone (or not seen yet); such a node is never chosen.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub node: Option<NodeFacts>,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: i64,
    pub ports: Vec<HostPort>,
    pub owners: HashMap<String, u32>,
}

impl NodeInfo {
    fn add(&mut self, p: &PodFacts) {
        self.requested = self.requested.plus(p.requests.actual);
        self.non_zero_requested = self.non_zero_requested.plus(p.requests.non_zero);
        self.pods += 1;
        self.ports.extend(p.ports.iter().cloned());
        if let Some(o) = &p.owner {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, p: &PodFacts) {
        self.requested = self.requested.minus(p.requests.actual);
        self.non_zero_requested = self.non_zero_requested.minus(p.requests.non_zero);
        self.pods -= 1;
        for hp in &p.ports {
            if let Some(i) = self.ports.iter().position(|x| x == hp) {
                self.ports.swap_remove(i);
            }
        }
        if let Some(o) = &p.owner
            && let Some(n) = self.owners.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(o);
            }
        }
    }

    /// How many pods of `owner` the node runs.
    #[must_use]
    pub fn owned_by(&self, owner: &str) -> u32 {
        self.owners.get(owner).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
struct PodEntry {
    node: String,
    facts: PodFacts,
    assumed: bool,
}

/// Nodes and the placement of every pod that occupies one, keyed by pod uid.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: HashMap<String, NodeInfo>,
    pods: HashMap<String, PodEntry>,
}

/// What a change did to the cluster's capacity, so the caller knows whether pods waiting as
/// unschedulable could fit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing that could make an unschedulable pod fit.
    None,
    /// Room was freed or a node changed.
    MayFit,
}

impl Cache {
    /// Adds or updates a node. `MayFit` when a node appears or changes in a way that matters.
    pub fn set_node(&mut self, facts: NodeFacts) -> Change {
        let info = self.nodes.entry(facts.name.clone()).or_default();
        if info.node.as_ref() == Some(&facts) {
            return Change::None;
        }
        info.node = Some(facts);
        Change::MayFit
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods == 0 {
                self.nodes.remove(name);
            }
        }
    }

    /// Node names (for relists).
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .filter(|(_, i)| i.node.is_some())
            .map(|(n, _)| n.as_str())
    }

    /// Uids of the pods placed on nodes (for relists).
    pub fn pod_uids(&self) -> impl Iterator<Item = &str> {
        self.pods.keys().map(String::as_str)
    }

    /// Nodes that exist, with their pods.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeFacts, &NodeInfo)> {
        self.nodes
            .values()
            .filter_map(|i| i.node.as_ref().map(|n| (n, i)))
    }

    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    #[must_use]
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Records a decision before the bind is confirmed, so the next decisions account for it.
    pub fn assume(&mut self, uid: &str, node: &str, facts: PodFacts) {
        self.place(uid, node, facts, true);
    }

    /// Undoes an assumption whose bind failed. Bound pods are left alone.
    pub fn forget(&mut self, uid: &str) -> Change {
        match self.pods.get(uid) {
            Some(e) if e.assumed => self.remove_pod(uid),
            _ => Change::None,
        }
    }

    /// A pod the API says is bound to `node` (confirming an assumption, or any other pod).
    /// `MayFit` when it moved off another node.
    pub fn bound(&mut self, uid: &str, node: &str, facts: PodFacts) -> Change {
        if let Some(e) = self.pods.get_mut(uid)
            && e.node == node
        {
            e.assumed = false;
            if e.facts != facts {
                // A resize: re-account with the new requests.
                self.place(uid, node, facts, false);
            }
            return Change::None;
        }
        let moved = self.remove_pod(uid);
        self.place(uid, node, facts, false);
        moved
    }

    /// A pod that no longer occupies its node (deleted, finished, or its assumption undone).
    pub fn remove_pod(&mut self, uid: &str) -> Change {
        let Some(e) = self.pods.remove(uid) else {
            return Change::None;
        };
        if let Some(info) = self.nodes.get_mut(&e.node) {
            info.remove(&e.facts);
            if info.node.is_none() && info.pods == 0 {
                self.nodes.remove(&e.node);
            }
        }
        Change::MayFit
    }

    fn place(&mut self, uid: &str, node: &str, facts: PodFacts, assumed: bool) {
        if let Some(old) = self.pods.remove(uid)
            && let Some(info) = self.nodes.get_mut(&old.node)
        {
            info.remove(&old.facts);
        }
        self.nodes.entry(node.to_string()).or_default().add(&facts);
        self.pods.insert(
            uid.to_string(),
            PodEntry {
                node: node.to_string(),
                facts,
                assumed,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cpu: i64, owner: Option<&str>) -> PodFacts {
        PodFacts {
            requests: PodRequests {
                actual: Resources {
                    milli_cpu: cpu,
                    memory: 0,
                },
                non_zero: Resources {
                    milli_cpu: cpu,
                    memory: 0,
                },
            },
            ports: vec![],
            owner: owner.map(Into::into),
        }
    }

    fn node(name: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: vec![],
            unschedulable: false,
            ready: Some("True".into()),
            allocatable: Allocatable::default(),
        }
    }

    #[test]
    fn assume_confirm_forget_and_delete_keep_sums_right() {
        let mut c = Cache::default();
        assert_eq!(c.set_node(node("a")), Change::MayFit);
        assert_eq!(c.set_node(node("a")), Change::None);
        c.assume("u1", "a", facts(100, Some("rs")));
        c.assume("u2", "a", facts(200, Some("rs")));
        let a = c.node("a").unwrap();
        assert_eq!(
            (a.requested.milli_cpu, a.pods, a.owned_by("rs")),
            (300, 2, 2)
        );
        // Confirmed by the watch: no double counting.
        assert_eq!(c.bound("u1", "a", facts(100, Some("rs"))), Change::None);
        assert_eq!(c.node("a").unwrap().pods, 2);
        // A bound pod is not forgotten; an assumed one is.
        assert_eq!(c.forget("u1"), Change::None);
        assert_eq!(c.forget("u2"), Change::MayFit);
        let a = c.node("a").unwrap();
        assert_eq!(
            (a.requested.milli_cpu, a.pods, a.owned_by("rs")),
            (100, 1, 1)
        );
        assert_eq!(c.remove_pod("u1"), Change::MayFit);
        assert_eq!(c.node("a").unwrap().pods, 0);
    }

    #[test]
    fn pods_on_unknown_nodes_are_kept_until_the_node_arrives() {
        let mut c = Cache::default();
        c.bound("u1", "later", facts(500, None));
        assert_eq!(c.nodes().count(), 0);
        c.set_node(node("later"));
        let (_, info) = c.nodes().next().unwrap();
        assert_eq!(info.requested.milli_cpu, 500);
        c.remove_node("later");
        assert_eq!(c.nodes().count(), 0);
        c.remove_pod("u1");
        assert!(c.node("later").is_none());
    }

    #[test]
    fn a_pod_bound_elsewhere_moves() {
        let mut c = Cache::default();
        c.set_node(node("a"));
        c.set_node(node("b"));
        c.assume("u1", "a", facts(100, None));
        assert_eq!(c.bound("u1", "b", facts(100, None)), Change::MayFit);
        assert_eq!(c.node("a").unwrap().pods, 0);
        assert_eq!(c.node("b").unwrap().pods, 1);
    }
}
