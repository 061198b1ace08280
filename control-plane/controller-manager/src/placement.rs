//! Where a pod may run, as far as the node's labels, name and taints decide it: the pod's
//! `nodeSelector`, its required node affinity and its tolerations against the node's taints.
//! One place for these rules: the scheduler's NodeAffinity and TaintToleration filters and
//! the DaemonSet controller's "should this node run the daemon pod" both call them
//! (kube-scheduler's plugins and the DaemonSet controller share `nodeaffinity` and
//! `v1helper.FindMatchingUntoleratedTaint` the same way).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};
use kproxy_apimachinery::selector::{LabelSelector, Operator, Requirement};

/// A pod's node constraints, parsed once for all the nodes it is checked against:
/// `spec.nodeSelector` (every pair must hold) and the terms of
/// `requiredDuringSchedulingIgnoredDuringExecution` (any term must hold).
#[derive(Debug, Clone, Default)]
pub struct NodeConstraints<'a> {
    selector: Option<&'a BTreeMap<String, String>>,
    /// The valid terms of the required node affinity; `None` when there is none.
    terms: Option<Vec<Term<'a>>>,
}

impl<'a> NodeConstraints<'a> {
    #[must_use]
    pub fn of(spec: &'a PodSpec) -> Self {
        let terms = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| {
                r.node_selector_terms
                    .iter()
                    .filter_map(Term::parse)
                    .collect()
            });
        Self {
            selector: spec.node_selector.as_ref(),
            terms,
        }
    }

    /// Whether the node named `name` with these labels satisfies both.
    #[must_use]
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        if let Some(sel) = self.selector
            && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
        self.terms
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| t.matches(name, labels)))
    }
}

/// One node selector term: its label expressions (kproxy-apimachinery's selector) and its
/// field expressions, all of which must hold.
#[derive(Debug, Clone)]
struct Term<'a> {
    labels: LabelSelector,
    fields: &'a [NodeSelectorRequirement],
}

impl<'a> Term<'a> {
    /// `None` for a term that matches nothing: without expressions or fields, or with an
    /// expression Kubernetes would not parse (kube-scheduler skips such terms).
    fn parse(t: &'a NodeSelectorTerm) -> Option<Self> {
        let exprs = t.match_expressions.as_deref().unwrap_or_default();
        let fields = t.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return None;
        }
        let requirements = exprs
            .iter()
            .map(|r| {
                let op = match r.operator.as_str() {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    "Gt" => Operator::GreaterThan,
                    "Lt" => Operator::LessThan,
                    _ => return None,
                };
                Requirement::new(&r.key, op, r.values.clone().unwrap_or_default()).ok()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Term {
            labels: LabelSelector::from_requirements(requirements),
            fields,
        })
    }

    fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.labels.matches(labels)
            && self.fields.iter().all(|r| {
                // metadata.name is the only field Kubernetes allows here.
                let named = r.values.iter().flatten().any(|v| v == name);
                r.key == "metadata.name"
                    && match r.operator.as_str() {
                        "In" => named,
                        "NotIn" => !named,
                        _ => false,
                    }
            })
    }
}

/// Whether a toleration tolerates a taint (Kubernetes' `ToleratesTaint`).
#[must_use]
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration covers.
#[must_use]
pub fn untolerated<'t>(
    taints: &'t [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'t Taint> {
    taints.iter().find(|t| {
        effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

/// The first `NoSchedule`/`NoExecute` taint no toleration covers (`PreferNoSchedule` only
/// affects preference, not feasibility).
#[must_use]
pub fn untolerated_taint<'t>(taints: &'t [Taint], tolerations: &[Toleration]) -> Option<&'t Taint> {
    untolerated(taints, tolerations, &["NoSchedule", "NoExecute"])
}

/// The node a pod is pinned to: `spec.nodeName`, else the single node a required node
/// affinity term names with `matchFields metadata.name In [node]` (what the DaemonSet
/// controller writes; Kubernetes' `GetTargetNodeName`).
#[must_use]
pub fn target_node(spec: &PodSpec) -> Option<&str> {
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].as_str())
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([]);
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn selector_and_terms() {
        let s = spec(
            json!({"nodeSelector": {"zone": "a"}, "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}
            ]}}}}),
        );
        let c = NodeConstraints::of(&s);
        assert!(c.matches("n1", &labels(&[("zone", "a"), ("disk", "ssd")])));
        assert!(c.matches("n9", &labels(&[("zone", "a")])), "terms are ORed");
        assert!(
            !c.matches("n9", &labels(&[("zone", "b")])),
            "nodeSelector too"
        );
        assert!(!c.matches("n1", &labels(&[("zone", "a")])));
        assert!(NodeConstraints::of(&spec(json!({}))).matches("x", &labels(&[])));
    }

    #[test]
    fn taints_by_effect() {
        let taints: Vec<Taint> = serde_json::from_value(json!([
            {"key": "a", "effect": "PreferNoSchedule"},
            {"key": "b", "value": "1", "effect": "NoSchedule"},
            {"key": "c", "effect": "NoExecute"}
        ]))
        .unwrap();
        assert_eq!(untolerated_taint(&taints, &[]).unwrap().key, "b");
        let tol: Vec<Toleration> =
            serde_json::from_value(json!([{"key": "b", "operator": "Exists"}])).unwrap();
        assert_eq!(untolerated_taint(&taints, &tol).unwrap().key, "c");
        assert_eq!(untolerated(&taints, &tol, &["NoSchedule"]), None);
    }

    #[test]
    fn target_node_from_name_or_affinity() {
        assert_eq!(target_node(&spec(json!({"nodeName": "n1"}))), Some("n1"));
        let pinned = spec(json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
        ]}}}}));
        assert_eq!(target_node(&pinned), Some("n2"));
        assert_eq!(target_node(&spec(json!({}))), None);
    }
}
