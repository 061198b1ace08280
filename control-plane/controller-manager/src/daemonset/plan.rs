//! The DaemonSet controller's pure decisions (pkg/controller/daemon): which nodes should run
//! the daemon pod, what one sync creates and deletes (`manage`, then `rollingUpdate` once
//! nothing else is pending), and the status the pods add up to.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{
            Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
            PodSpec, Toleration,
        },
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{
    placement::{NodeConstraints, untolerated},
    podcache::{CachedPod, Phase},
    replicaset::pods::available_since,
};

/// The pod label holding the template hash (what a ControllerRevision's name ends with).
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label holding the DaemonSet's generation when the pod was made.
pub const GENERATION_LABEL: &str = "pod-template-generation";

/// `AddOrUpdateDaemonPodTolerations`: daemon pods stay through node problems and cordons.
const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// Only for `hostNetwork` pods, which do not need the pod network.
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The template's pod spec with the daemon tolerations added (an equal toleration the
/// template has is replaced, as `AddOrUpdateTolerationInPodSpec` does).
#[must_use]
pub fn with_daemon_tolerations(spec: &PodSpec) -> PodSpec {
    let mut spec = spec.clone();
    let host_network = spec.host_network == Some(true);
    let extra = host_network.then_some((NETWORK_UNAVAILABLE, "NoSchedule"));
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in DEFAULT_TOLERATIONS.iter().copied().chain(extra) {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        let same = |o: &Toleration| {
            o.key == t.key
                && o.operator.as_deref().unwrap_or("Equal") == "Exists"
                && o.value.as_deref().unwrap_or_default().is_empty()
                && o.effect == t.effect
        };
        match tolerations.iter_mut().find(|o| same(o)) {
            Some(o) => *o = t,
            None => tolerations.push(t),
        }
    }
    spec
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node affinity becomes the one term
/// `metadata.name In [node]`, so the default scheduler can only bind the pod there.
#[must_use]
pub fn pinned_to(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut a = affinity.unwrap_or_default();
    a.node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(selector);
    a
}

/// `NodeShouldRunDaemonPod` for one node: (should run, should continue running). A node
/// whose taints the pod does not tolerate takes no new pod but keeps one that tolerates its
/// `NoExecute` taints. `spec.unschedulable` does not matter (the pods tolerate it).
#[must_use]
pub fn should_run(spec: &PodSpec, constraints: &NodeConstraints<'_>, node: &Node) -> (bool, bool) {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    let labels = node.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    if !constraints.matches(name, labels) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]).is_some() {
        let keeps = untolerated(taints, tolerations, &["NoExecute"]).is_none();
        return (false, keeps);
    }
    (true, true)
}

/// A DaemonSet's update strategy, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OnDelete,
    RollingUpdate {
        max_unavailable: i32,
        max_surge: i32,
    },
}

impl Strategy {
    /// `util.AllowsSurge`: a node may briefly run an old and a new pod.
    fn surges(self) -> bool {
        matches!(self, Strategy::RollingUpdate { max_surge, .. } if max_surge > 0)
    }
}

/// `util.UnavailableCount` / `util.SurgeCount` (percentages of the desired count rounded
/// up), with the controller's rule that a rollout must be able to move: one unavailable when
/// neither is set.
#[must_use]
pub fn strategy(ds: &DaemonSet, desired: i32) -> Strategy {
    let s = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if s.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return Strategy::OnDelete;
    }
    let ru = s.and_then(|s| s.rolling_update.as_ref());
    let scaled = |v: Option<&IntOrString>, default: i32| match v {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(p)) => p
            .strip_suffix('%')
            .and_then(|d| d.parse::<i64>().ok())
            .map_or(0, |pct| {
                i32::try_from((pct * i64::from(desired) + 99) / 100).unwrap_or(i32::MAX)
            }),
    };
    let mut max_unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), 1).max(0);
    let max_surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), 0).max(0);
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }
    Strategy::RollingUpdate {
        max_unavailable,
        max_surge,
    }
}

/// What one sync decides from: the set, its pods, the nodes, the template's hash and the time.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub ds: &'a DaemonSet,
    /// The template spec with the daemon tolerations ([`with_daemon_tolerations`]).
    pub spec: &'a PodSpec,
    pub nodes: &'a [&'a Node],
    /// The set's own pods (its controller reference), any state.
    pub pods: &'a [&'a CachedPod],
    pub hash: &'a str,
    pub now: Timestamp,
}

/// One sync's writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// Nodes that get a new daemon pod.
    pub create_on: Vec<String>,
    /// Pods to delete, with why (for the event).
    pub delete: Vec<(String, Doom)>,
}

impl Actions {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.create_on.is_empty() && self.delete.is_empty()
    }
}

/// Why a pod goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doom {
    /// Its node should not run it (or is gone).
    Misscheduled,
    /// A second daemon pod on one node.
    Duplicate,
    Failed,
    /// An old pod replaced by the rolling update.
    Outdated,
}

/// Whether a pod runs the current template.
#[must_use]
pub fn is_updated(pod: &CachedPod, hash: &str) -> bool {
    !hash.is_empty() && pod.labels.get(REVISION_LABEL).map(String::as_str) == Some(hash)
}

/// `podByCreationTimestampAndPhase`: bound pods first, then oldest, then by name.
fn oldest_first(a: &CachedPod, b: &CachedPod) -> std::cmp::Ordering {
    b.node_name
        .is_some()
        .cmp(&a.node_name.is_some())
        .then(a.created.cmp(&b.created))
        .then(a.name.cmp(&b.name))
}

/// The pods by the node they are bound or pinned to (pods pinned nowhere are left alone).
fn by_node<'a>(pods: &[&'a CachedPod]) -> HashMap<&'a str, Vec<&'a CachedPod>> {
    let mut m: HashMap<&str, Vec<&CachedPod>> = HashMap::new();
    for &p in pods {
        if let Some(n) = p.target_node.as_deref() {
            m.entry(n).or_default().push(p);
        }
    }
    m
}

fn min_ready(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn is_available(pod: &CachedPod, min_ready: i32, now: Timestamp) -> bool {
    available_since(pod, min_ready).is_some_and(|t| t <= now)
}

/// `manage`, then (when it has nothing to do and the strategy is RollingUpdate)
/// `rollingUpdate`: a sync acts on one of them only, since the second would read pods the
/// first is about to change.
#[must_use]
pub fn plan(i: &Inputs<'_>) -> Actions {
    let desired = status(i).desired_number_scheduled;
    let chosen = strategy(i.ds, desired);
    let managed = manage(i, chosen.surges());
    if !managed.is_empty() {
        return managed;
    }
    match chosen {
        Strategy::OnDelete => managed,
        Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable,
        } => rolling_update(i, max_unavailable),
        Strategy::RollingUpdate { max_surge, .. } => surge_update(i, max_surge, desired),
    }
}

/// `podsShouldBeOnNode` over every node, plus the pods of nodes that are gone.
#[must_use]
pub fn manage(i: &Inputs<'_>, surge: bool) -> Actions {
    let constraints = NodeConstraints::of(i.spec);
    let mut on_node = by_node(i.pods);
    let mut out = Actions::default();
    for node in i.nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (run, keep) = should_run(i.spec, &constraints, node);
        let pods = on_node.remove(name).unwrap_or_default();
        if run && pods.is_empty() {
            out.create_on.push(name.to_string());
        } else if keep {
            let mut running = Vec::new();
            for p in pods.into_iter().filter(|p| p.deletion.is_none()) {
                if p.phase == Phase::Failed || p.phase == Phase::Succeeded {
                    out.delete.push((p.name.to_string(), Doom::Failed));
                } else {
                    running.push(p);
                }
            }
            running.sort_by(|a, b| oldest_first(a, b));
            if surge {
                prune_surged(i, &running, &mut out);
            } else {
                for p in running.iter().skip(1) {
                    out.delete.push((p.name.to_string(), Doom::Duplicate));
                }
            }
        } else {
            for p in pods.into_iter().filter(|p| p.deletion.is_none()) {
                out.delete.push((p.name.to_string(), Doom::Misscheduled));
            }
        }
    }
    // What is left is on nodes that no longer exist.
    let mut gone: Vec<&CachedPod> = on_node.into_values().flatten().collect();
    gone.sort_by(|a, b| a.name.cmp(&b.name));
    for p in gone.into_iter().filter(|p| p.deletion.is_none()) {
        out.delete.push((p.name.to_string(), Doom::Misscheduled));
    }
    out
}

/// With surge a node keeps its oldest new and oldest old pod (others go); the old one goes
/// once the new one is available, or at once when it is not ready itself.
fn prune_surged(i: &Inputs<'_>, running: &[&CachedPod], out: &mut Actions) {
    let (mut new, mut old) = (None, None);
    for &p in running {
        let slot = if is_updated(p, i.hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_none() {
            *slot = Some(p);
        } else {
            out.delete.push((p.name.to_string(), Doom::Duplicate));
        }
    }
    if let (Some(n), Some(o)) = (new, old)
        && (!o.ready || is_available(n, min_ready(i.ds), i.now))
    {
        out.delete.push((o.name.to_string(), Doom::Outdated));
    }
}

/// A node's live pods split into the current template's and older ones; `None` when it has
/// more than one of either (`manage` fixes that first).
fn new_and_old<'a>(
    pods: Vec<&'a CachedPod>,
    hash: &str,
) -> Option<(Option<&'a CachedPod>, Option<&'a CachedPod>)> {
    let (new, old): (Vec<&CachedPod>, Vec<&CachedPod>) = pods
        .into_iter()
        .filter(|p| p.deletion.is_none())
        .partition(|p| is_updated(p, hash));
    (new.len() <= 1 && old.len() <= 1).then(|| (new.first().copied(), old.first().copied()))
}

/// The nodes with pods, in name order (Kubernetes walks a map; a fixed order keeps a sync
/// reproducible).
fn nodes_with_pods<'a>(i: &Inputs<'a>) -> Vec<(&'a str, Vec<&'a CachedPod>)> {
    let mut nodes: Vec<(&str, Vec<&CachedPod>)> = by_node(i.pods).into_iter().collect();
    nodes.sort_by_key(|(n, _)| *n);
    nodes
}

/// `rollingUpdate` without surge: old pods are deleted (and recreated by the next `manage`)
/// while at most `max_unavailable` nodes lack an available daemon pod. Unavailable old pods
/// go regardless: replacing them loses nothing.
#[must_use]
pub fn rolling_update(i: &Inputs<'_>, max_unavailable: i32) -> Actions {
    let min_ready = min_ready(i.ds);
    let mut unavailable = 0;
    let mut replace = Vec::new();
    let mut candidates = Vec::new();
    for (_, pods) in nodes_with_pods(i) {
        match new_and_old(pods, i.hash) {
            Some((Some(n), None)) => {
                if !is_available(n, min_ready, i.now) {
                    unavailable += 1;
                }
            }
            Some((None, Some(o))) => {
                if !is_available(o, min_ready, i.now) {
                    replace.push(o.name.to_string());
                } else if unavailable < max_unavailable {
                    candidates.push(o.name.to_string());
                }
            }
            // None, both, or duplicates: `manage` fixes the node; it counts as unavailable.
            _ => unavailable += 1,
        }
    }
    let room = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
    let delete = replace
        .into_iter()
        .chain(candidates.into_iter().take(room))
        .map(|n| (n, Doom::Outdated))
        .collect();
    Actions {
        create_on: Vec::new(),
        delete,
    }
}

/// `rollingUpdate` with surge: a new pod is created beside an available old one on at most
/// `max_surge` nodes at a time (at once beside an unavailable one); the old pod goes when the
/// new one is available. Old pods on nodes that should no longer run the set go only while
/// more pods are available than desired.
#[must_use]
pub fn surge_update(i: &Inputs<'_>, max_surge: i32, desired: i32) -> Actions {
    let min_ready = min_ready(i.ds);
    let constraints = NodeConstraints::of(i.spec);
    let runs = |name: &str| {
        i.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .is_some_and(|n| should_run(i.spec, &constraints, n).0)
    };
    let mut out = Actions::default();
    let (mut surging, mut available) = (0, 0);
    let (mut allowed, mut candidates, mut leaving) = (Vec::new(), Vec::new(), Vec::new());
    for (node, pods) in nodes_with_pods(i) {
        let Some((new, old)) = new_and_old(pods, i.hash) else {
            surging += 1;
            continue;
        };
        if old
            .or(new)
            .is_some_and(|p| is_available(p, min_ready, i.now))
        {
            available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(o)) if !is_available(o, min_ready, i.now) => {
                if runs(node) {
                    allowed.push(node.to_string());
                } else {
                    out.delete.push((o.name.to_string(), Doom::Outdated));
                }
            }
            (None, Some(o)) => {
                if !runs(node) {
                    leaving.push(o.name.to_string());
                } else if surging < max_surge {
                    candidates.push(node.to_string());
                }
            }
            (Some(n), Some(o)) => {
                if is_available(n, min_ready, i.now) {
                    out.delete.push((o.name.to_string(), Doom::Outdated));
                } else {
                    surging += 1;
                }
            }
        }
    }
    let deletable = usize::try_from(available - desired).unwrap_or(0);
    out.delete.extend(
        leaving
            .into_iter()
            .take(deletable)
            .map(|n| (n, Doom::Misscheduled)),
    );
    let room = usize::try_from(max_surge - surging).unwrap_or(0);
    out.create_on = allowed
        .into_iter()
        .chain(candidates.into_iter().take(room))
        .collect();
    out
}

/// The counts of `updateDaemonSetStatus`, and when a ready pod turns available.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired_number_scheduled: i32,
    pub current_number_scheduled: i32,
    pub number_misscheduled: i32,
    pub number_ready: i32,
    pub number_available: i32,
    pub updated_number_scheduled: i32,
    /// The earliest time a ready pod becomes available, if one is still waiting.
    pub next_available: Option<Timestamp>,
}

impl Counts {
    #[must_use]
    pub fn number_unavailable(&self) -> i32 {
        self.desired_number_scheduled - self.number_available
    }
}

/// Per node that should run the pod: scheduled, ready, available and updated judged on its
/// oldest daemon pod; a pod on a node that should not run it is misscheduled.
#[must_use]
pub fn status(i: &Inputs<'_>) -> Counts {
    let constraints = NodeConstraints::of(i.spec);
    let min_ready = min_ready(i.ds);
    let on_node = by_node(i.pods);
    let mut c = Counts::default();
    for node in i.nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (run, _) = should_run(i.spec, &constraints, node);
        // Terminal pods being deleted are done with (getNodesToDaemonPods).
        let mut pods: Vec<&CachedPod> = on_node
            .get(name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| !(p.phase.is_terminal() && p.deletion.is_some()))
            .collect();
        if !run {
            c.number_misscheduled += i32::from(!pods.is_empty());
            continue;
        }
        c.desired_number_scheduled += 1;
        pods.sort_by(|a, b| oldest_first(a, b));
        let Some(pod) = pods.first() else { continue };
        c.current_number_scheduled += 1;
        if pod.ready {
            c.number_ready += 1;
            match available_since(pod, min_ready) {
                Some(t) if t <= i.now => c.number_available += 1,
                Some(t) => c.next_available = Some(c.next_available.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        if is_updated(pod, i.hash) {
            c.updated_number_scheduled += 1;
        }
    }
    c
}
