//! Filters: whether a pod may run on a node, in kube-scheduler's plugin order (readiness,
//! NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit). A node
//! fails on its first failing filter; the resource filter names every resource that is short.

use std::fmt;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
pub use kproxy_controller_manager::placement::untolerated_taint;
use kproxy_controller_manager::{
    nodelifecycle::{TAINT_NOT_READY, TAINT_UNREACHABLE},
    placement::{NodeConstraints, tolerates},
};

use crate::cache::{NodeFacts, NodeInfo, PodFacts};

pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take a pod; displayed as kube-scheduler words it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    NotReady,
    Unschedulable,
    UntoleratedTaint { key: String, value: String },
    NodeAffinity,
    HostPorts,
    TooManyPods,
    Insufficient(&'static str),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::HostPorts => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Insufficient(what) => write!(f, "Insufficient {what}"),
        }
    }
}

/// The pod being scheduled: the object (selectors, tolerations), what it occupies, and its
/// node selector and required node affinity parsed once for all the nodes it is checked
/// against.
#[derive(Debug, Clone)]
pub struct PodInfo<'a> {
    pub pod: &'a Pod,
    pub facts: &'a PodFacts,
    constraints: NodeConstraints<'a>,
}

impl<'a> PodInfo<'a> {
    #[must_use]
    pub fn new(pod: &'a Pod, facts: &'a PodFacts) -> Self {
        PodInfo {
            pod,
            facts,
            constraints: pod
                .spec
                .as_ref()
                .map(NodeConstraints::of)
                .unwrap_or_default(),
        }
    }
}

/// Every reason `node` cannot take the pod; empty when it fits.
#[must_use]
pub fn failures(pod: &PodInfo<'_>, node: &NodeFacts, info: &NodeInfo) -> Vec<Reason> {
    let tolerations = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    if let Some(r) = readiness(node, tolerations) {
        return vec![r];
    }
    if node.unschedulable && !tolerates_no_schedule(tolerations, TAINT_UNSCHEDULABLE) {
        return vec![Reason::Unschedulable];
    }
    if let Some(t) = untolerated_taint(&node.taints, tolerations) {
        return vec![Reason::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        }];
    }
    if !matches_node_affinity(pod, node) {
        return vec![Reason::NodeAffinity];
    }
    if pod
        .facts
        .ports
        .iter()
        .any(|p| info.ports.iter().any(|u| p.conflicts(u)))
    {
        return vec![Reason::HostPorts];
    }
    resource_fit(pod.facts, node, info)
}

/// A node whose Ready condition is not `True` takes only pods that tolerate the taint the
/// node lifecycle controller puts on it (`not-ready`, or `unreachable` when Unknown).
fn readiness(node: &NodeFacts, tolerations: &[Toleration]) -> Option<Reason> {
    let key = match node.ready.as_deref() {
        Some("True") => return None,
        Some("Unknown") => TAINT_UNREACHABLE,
        _ => TAINT_NOT_READY,
    };
    (!tolerates_no_schedule(tolerations, key)).then_some(Reason::NotReady)
}

/// Whether the pod tolerates the `NoSchedule` taint `key` that the node's state (not ready,
/// cordoned) implies, whether or not the taint is on the node yet.
fn tolerates_no_schedule(tolerations: &[Toleration], key: &str) -> bool {
    let taint = Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    tolerations.iter().any(|t| tolerates(t, &taint))
}

/// `spec.nodeSelector` (every pair) and the required node affinity (any term).
#[must_use]
pub fn matches_node_affinity(pod: &PodInfo<'_>, node: &NodeFacts) -> bool {
    pod.constraints.matches(&node.name, &node.labels)
}

/// NodeResourcesFit: pod count, then CPU and memory against allocatable minus what the
/// node's pods request. A pod requesting nothing fits any node with a free pod slot.
fn resource_fit(pod: &PodFacts, node: &NodeFacts, info: &NodeInfo) -> Vec<Reason> {
    let mut out = Vec::new();
    if info.pods + 1 > node.allocatable.pods {
        out.push(Reason::TooManyPods);
    }
    let want = pod.requests.actual;
    let free = node.allocatable.resources.minus(info.requested);
    if want.milli_cpu > 0 && want.milli_cpu > free.milli_cpu {
        out.push(Reason::Insufficient("cpu"));
    }
    if want.memory > 0 && want.memory > free.memory {
        out.push(Reason::Insufficient("memory"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::{Allocatable, Resources};

    fn node(v: serde_json::Value) -> NodeFacts {
        let mut base = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        merge(&mut base, v);
        NodeFacts::from_node(&serde_json::from_value(base).unwrap())
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the spec inline as a json! literal"
    )]
    fn pod(spec: serde_json::Value) -> Pod {
        let mut base = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        merge(&mut base, json!({"spec": spec}));
        serde_json::from_value(base).unwrap()
    }

    fn check(p: &Pod, n: &NodeFacts, info: &NodeInfo) -> Vec<String> {
        let facts = PodFacts::from_pod(p);
        failures(&PodInfo::new(p, &facts), n, info)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn empty() -> NodeInfo {
        NodeInfo::default()
    }

    #[test]
    fn ready_and_schedulable_unless_tolerated() {
        let p = pod(json!({}));
        assert!(check(&p, &node(json!({})), &empty()).is_empty());
        let not_ready =
            node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        assert_eq!(check(&p, &not_ready, &empty()), ["node(s) were not ready"]);
        let unknown =
            node(json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        let tolerant = pod(json!({"tolerations": [
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(check(&tolerant, &unknown, &empty()).is_empty());
        assert_eq!(
            check(&tolerant, &not_ready, &empty()),
            ["node(s) were not ready"]
        );

        let cordoned = node(json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            check(&p, &cordoned, &empty()),
            ["node(s) were unschedulable"]
        );
        let ds = pod(json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists"}]}));
        assert!(check(&ds, &cordoned, &empty()).is_empty());
    }

    #[test]
    fn resources_against_allocatable_minus_requested() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]}));
        let n = node(json!({}));
        assert!(check(&p, &n, &empty()).is_empty());
        let busy = NodeInfo {
            requested: Resources {
                milli_cpu: 1000,
                // One byte short of 1Gi free.
                memory: (3 << 30) + 1,
            },
            pods: 3,
            ..Default::default()
        };
        assert_eq!(
            check(&p, &n, &busy),
            ["Too many pods", "Insufficient cpu", "Insufficient memory"]
        );
        // Requesting nothing only needs a pod slot.
        let none = pod(json!({}));
        let full_cpu = NodeInfo {
            requested: Resources {
                milli_cpu: 2000,
                memory: 0,
            },
            pods: 1,
            ..Default::default()
        };
        assert!(check(&none, &n, &full_cpu).is_empty());
        let no_alloc = NodeFacts {
            allocatable: Allocatable::default(),
            ..n
        };
        assert_eq!(check(&none, &no_alloc, &empty()), ["Too many pods"]);
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let n = node(json!({}));
        let sel = |s| pod(json!({"nodeSelector": s}));
        assert!(check(&sel(json!({"zone": "a"})), &n, &empty()).is_empty());
        assert_eq!(
            check(&sel(json!({"zone": "b"})), &n, &empty()),
            ["node(s) didn't match Pod's node affinity/selector"]
        );
        let aff = |terms: serde_json::Value| {
            let p = pod(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}));
            check(&p, &n, &empty()).is_empty()
        };
        let expr = |key: &str, op: &str, values: serde_json::Value| json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
        assert!(aff(expr("zone", "In", json!(["a", "b"]))));
        assert!(!aff(expr("zone", "In", json!(["b"]))));
        assert!(aff(expr("zone", "NotIn", json!(["b"]))));
        assert!(aff(expr("missing", "NotIn", json!(["b"]))));
        assert!(!aff(expr("zone", "NotIn", json!(["a"]))));
        assert!(aff(expr("zone", "Exists", json!(null))));
        assert!(!aff(expr("missing", "Exists", json!(null))));
        assert!(aff(expr("missing", "DoesNotExist", json!(null))));
        assert!(!aff(expr("zone", "DoesNotExist", json!(null))));
        assert!(aff(expr("cores", "Gt", json!(["4"]))));
        assert!(!aff(expr("cores", "Gt", json!(["8"]))));
        assert!(aff(expr("cores", "Lt", json!(["16"]))));
        assert!(!aff(expr("zone", "Lt", json!(["16"]))));
        assert!(!aff(expr("missing", "Gt", json!(["1"]))));
        // Terms are ORed, expressions ANDed, an empty term matches nothing.
        assert!(aff(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "cores", "operator": "Exists"}]},
        ])));
        assert!(!aff(json!([{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": "cores", "operator": "DoesNotExist"}]}])));
        assert!(!aff(json!([{}])));
        // A term Kubernetes would not parse matches nothing; the other terms still count.
        assert!(!aff(expr("zone", "NotIn", json!([]))));
        assert!(aff(json!([
            {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        ])));
        let field = |op: &str, name: &str| json!([{"matchFields": [{"key": "metadata.name", "operator": op, "values": [name]}]}]);
        assert!(aff(field("In", "n1")));
        assert!(!aff(field("In", "n2")));
        assert!(aff(field("NotIn", "n2")));
        // nodeSelector and affinity both apply.
        let both = pod(
            json!({"nodeSelector": {"zone": "b"}, "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": field("In", "n1")}}}}),
        );
        assert!(!check(&both, &n, &empty()).is_empty());
    }

    #[test]
    fn taints_need_tolerations_except_prefer_no_schedule() {
        let n = node(json!({"spec": {"taints": [
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "evict", "effect": "NoExecute"},
        ]}}));
        assert_eq!(
            check(&pod(json!({})), &n, &empty()),
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let t1 = json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"});
        assert_eq!(
            check(&pod(json!({"tolerations": [t1]})), &n, &empty()),
            ["node(s) had untolerated taint {evict: }"]
        );
        let t2 = json!({"key": "evict", "operator": "Exists"});
        assert!(check(&pod(json!({"tolerations": [t1, t2]})), &n, &empty()).is_empty());
        let wrong_value = json!({"key": "dedicated", "value": "cpu", "effect": "NoSchedule"});
        let wrong_effect = json!({"key": "dedicated", "value": "gpu", "effect": "NoExecute"});
        for t in [wrong_value, wrong_effect] {
            assert!(!check(&pod(json!({"tolerations": [t, t2]})), &n, &empty()).is_empty());
        }
        let all = json!({"operator": "Exists"});
        assert!(check(&pod(json!({"tolerations": [all]})), &n, &empty()).is_empty());
    }

    #[test]
    fn host_ports_conflict_with_the_nodes_pods() {
        let n = node(json!({}));
        let p = pod(json!({"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        let mut info = empty();
        assert!(check(&p, &n, &info).is_empty());
        info.ports = PodFacts::from_pod(&p).ports;
        assert_eq!(
            check(&p, &n, &info),
            ["node(s) didn't have free ports for the requested pod ports"]
        );
    }
}
