//! Kubernetes' NodeRestriction admission: what a node may write into the objects the
//! authorizer lets it address. The authorizer sees the names in the request; this sees the
//! object itself (a name in the body, labels, taints, the pod's node).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Identity, L2_LEASE_NAMESPACE, L2_LEASE_PREFIX, NODE_LEASE_NAMESPACE};
use crate::object;
use crate::registry::Resource;

/// Labels under this domain (or a subdomain) are the cluster admin's way to mark nodes for
/// sensitive workloads; a node setting them could attract those workloads.
const RESTRICTED_LABEL_DOMAIN: &str = "node-restriction.kubernetes.io";

/// Checks a node's write of `new` (`old`: the stored object, on update). `Err` holds why it
/// is refused (a 403). Anyone but a node passes.
pub fn admit(
    id: &Identity,
    res: &Resource,
    ns: Option<&str>,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), String> {
    let Identity::Node(node) = id else {
        return Ok(());
    };
    let name = object::name(new).unwrap_or_default();
    match (res.group, res.kind) {
        ("", "Node") => {
            if name != node {
                return Err(format!(
                    "node \"{node}\" is not allowed to modify node \"{name}\""
                ));
            }
            let forbidden = restricted_label_changes(new, old);
            if !forbidden.is_empty() {
                let what = if old.is_some() {
                    "modify labels"
                } else {
                    "set the following labels"
                };
                let list: Vec<&str> = forbidden.iter().map(String::as_str).collect();
                return Err(format!(
                    "node \"{node}\" is not allowed to {what}: {}",
                    list.join(", ")
                ));
            }
            // Taints keep workloads off a node; the node removing its own would let them in.
            if let Some(old) = old
                && taints(new) != taints(old)
            {
                return Err(format!("node \"{node}\" is not allowed to modify taints"));
            }
            Ok(())
        }
        ("coordination.k8s.io", "Lease") => {
            if ns == Some(L2_LEASE_NAMESPACE) && name.starts_with(L2_LEASE_PREFIX) {
                return Ok(());
            }
            if ns != Some(NODE_LEASE_NAMESPACE) {
                return Err(format!(
                    "can only access leases in the {NODE_LEASE_NAMESPACE} namespace"
                ));
            }
            if name != node {
                return Err(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        ("", "Pod") => match old {
            // Kubernetes lets a node create only mirror pods (of its static pods), which this
            // cluster does not have.
            None => Err(format!("node \"{node}\" can only create mirror pods")),
            Some(old) if object::field_value(old, "spec.nodeName") != *node => Err(format!(
                "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
            )),
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.pointer("/metadata/labels").and_then(Value::as_object)
}

/// Restricted labels `new` adds, changes or (from `old`) removes.
fn restricted_label_changes(new: &Value, old: Option<&Value>) -> BTreeSet<String> {
    let empty = Map::new();
    let new = labels(new).unwrap_or(&empty);
    let old = old.and_then(labels).unwrap_or(&empty);
    new.keys()
        .chain(old.keys())
        .filter(|k| new.get(*k) != old.get(*k) && is_restricted(k))
        .cloned()
        .collect()
}

fn is_restricted(label: &str) -> bool {
    let Some((domain, _)) = label.split_once('/') else {
        return false;
    };
    domain == RESTRICTED_LABEL_DOMAIN
        || domain
            .strip_suffix(RESTRICTED_LABEL_DOMAIN)
            .is_some_and(|head| head.ends_with('.'))
}

/// A node's taints; none and an empty list are the same.
fn taints(node: &Value) -> &[Value] {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::lookup;

    #[test]
    fn restricted_labels() {
        assert!(is_restricted("node-restriction.kubernetes.io/x"));
        assert!(is_restricted("a.b.node-restriction.kubernetes.io/x"));
        assert!(!is_restricted("evilnode-restriction.kubernetes.io/x"));
        assert!(!is_restricted("node-restriction.kubernetes.io"));
        assert!(!is_restricted("kubernetes.io/hostname"));
        let old =
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/a": "1", "x": "1"}}});
        let new =
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/b": "1", "x": "2"}}});
        assert_eq!(
            restricted_label_changes(&new, Some(&old)),
            BTreeSet::from([
                "node-restriction.kubernetes.io/a".into(),
                "node-restriction.kubernetes.io/b".into()
            ])
        );
        assert!(restricted_label_changes(&old, Some(&old)).is_empty());
    }

    #[test]
    fn only_nodes_are_restricted() {
        let nodes = lookup("", "v1", "nodes").unwrap();
        let n2 = json!({"metadata": {"name": "n2"}});
        assert!(admit(&Identity::Admin, nodes, None, &n2, None).is_ok());
        let n1 = Identity::Node("n1".into());
        assert!(admit(&n1, nodes, None, &n2, None).is_err());
        let own = json!({"metadata": {"name": "n1"}, "spec": {"taints": []}});
        let untainted = json!({"metadata": {"name": "n1"}});
        assert!(admit(&n1, nodes, None, &own, None).is_ok());
        assert!(
            admit(&n1, nodes, None, &untainted, Some(&own)).is_ok(),
            "[] and none are the same taints"
        );
        let events = lookup("", "v1", "events").unwrap();
        assert!(admit(&n1, events, Some("default"), &n2, None).is_ok());
    }

    #[test]
    fn leases_a_node_may_write() {
        let leases = lookup("coordination.k8s.io", "v1", "leases").unwrap();
        let n1 = Identity::Node("n1".into());
        let named = |name: &str| json!({"metadata": {"name": name}});
        let ok = |ns, name: &str| admit(&n1, leases, Some(ns), &named(name), None).is_ok();
        assert!(ok(NODE_LEASE_NAMESPACE, "n1"));
        assert!(!ok(NODE_LEASE_NAMESPACE, "n2"));
        // Any node may hold an L2 announcement lease, and only those in kube-system.
        assert!(ok(L2_LEASE_NAMESPACE, "kproxy-l2-default.web"));
        assert!(!ok(L2_LEASE_NAMESPACE, "kube-scheduler"));
        assert!(!ok("default", "kproxy-l2-default.web"));
    }
}
