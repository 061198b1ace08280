//! A pod's quality-of-service class, derived from its containers' requests and limits as
//! Kubernetes' `pkg/apis/core/helper/qos` does: the API server stores it in `status.qosClass`
//! at create time, and `describe pod` shows it.

use std::collections::BTreeMap;
use std::fmt;

use kproxy_apimachinery::quantity::Quantity;
use serde_json::Value;

/// Kubernetes' `PodQOSClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container limits CPU and memory, and requests what it limits.
    Guaranteed,
    /// Something requested or limited, but not Guaranteed.
    Burstable,
    /// No container requests or limits CPU or memory.
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }

    /// The class the pod reports in `status.qosClass`, else the one its spec gives
    /// (Kubernetes' `GetPodQOS`).
    pub fn of_pod(pod: &Value) -> Self {
        pod["status"]["qosClass"]
            .as_str()
            .and_then(Self::parse)
            .unwrap_or_else(|| Self::compute(pod))
    }

    /// The class the pod's spec gives (Kubernetes' `ComputePodQOS`). Only CPU and memory
    /// count, and only positive quantities; per resource, requests and limits are summed over
    /// all containers (init containers included), and a container's unset request defaults to
    /// its limit. Guaranteed needs every container to limit both, and the sums of requests and
    /// limits to be equal; BestEffort is nothing requested or limited; anything else is
    /// Burstable. Unparsable quantities count as unset (validation refuses them).
    pub fn compute(pod: &Value) -> Self {
        let containers = ["containers", "initContainers"]
            .into_iter()
            .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten());
        let mut requests = Sums::default();
        let mut limits = Sums::default();
        let mut every_container_limits_both = true;
        for c in containers {
            let resources = &c["resources"];
            let container_limits = positive(&resources["limits"]);
            let mut container_requests = positive(&resources["requests"]);
            // Kubernetes' defaulting: a request left out is the limit.
            for (name, q) in &container_limits {
                container_requests.entry(name).or_insert(*q);
            }
            if !COMPUTE.iter().all(|r| container_limits.contains_key(r)) {
                every_container_limits_both = false;
            }
            requests.add(container_requests);
            limits.add(container_limits);
        }
        if requests.0.is_empty() && limits.0.is_empty() {
            return QosClass::BestEffort;
        }
        let equal = requests.0.len() == limits.0.len()
            && requests.0.iter().all(|(name, r)| {
                limits
                    .0
                    .get(name)
                    .is_some_and(|l| l.milli_value() == r.milli_value())
            });
        if every_container_limits_both && equal {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resources the QoS class looks at (Kubernetes' supportedQoSComputeResources).
const COMPUTE: [&str; 2] = ["cpu", "memory"];

/// Per-resource sums over containers.
#[derive(Default)]
struct Sums(BTreeMap<&'static str, Quantity>);

impl Sums {
    fn add(&mut self, container: BTreeMap<&'static str, Quantity>) {
        for (name, q) in container {
            self.0
                .entry(name)
                .and_modify(|sum| *sum = sum.add(q))
                .or_insert(q);
        }
    }
}

/// The positive CPU and memory quantities of a requests or limits map.
fn positive(list: &Value) -> BTreeMap<&'static str, Quantity> {
    COMPUTE
        .into_iter()
        .filter_map(|name| {
            let q = match &list[name] {
                Value::String(s) => Quantity::parse(s).ok()?,
                // A bare number is a quantity too (`cpu: 1` in YAML).
                Value::Number(n) => Quantity::parse(&n.to_string()).ok()?,
                _ => return None,
            };
            (q.milli_value() > 0).then_some((name, q))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(containers: &Value, init: &Value) -> Value {
        json!({"spec": {"containers": containers, "initContainers": init}})
    }

    fn class(resources: &[Value]) -> QosClass {
        let containers: Vec<Value> = resources
            .iter()
            .map(|r| json!({"name": "c", "resources": r}))
            .collect();
        QosClass::compute(&pod(&json!(containers), &json!([])))
    }

    #[test]
    fn nothing_set_is_best_effort() {
        assert_eq!(class(&[json!({})]), QosClass::BestEffort);
        assert_eq!(class(&[]), QosClass::BestEffort);
        assert_eq!(QosClass::compute(&json!({})), QosClass::BestEffort);
        // Zero and other resources do not count.
        assert_eq!(
            class(&[json!({"requests": {"cpu": "0", "ephemeral-storage": "1Gi"}})]),
            QosClass::BestEffort
        );
    }

    #[test]
    fn limits_alone_are_guaranteed_as_requests_default_to_them() {
        let both = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(class(std::slice::from_ref(&both)), QosClass::Guaranteed);
        assert_eq!(class(&[both.clone(), both]), QosClass::Guaranteed);
    }

    #[test]
    fn equal_requests_are_compared_as_quantities() {
        let r = json!({
            "limits": {"cpu": "1", "memory": "1Gi"},
            "requests": {"cpu": "1000m", "memory": "1073741824"},
        });
        assert_eq!(class(&[r]), QosClass::Guaranteed);
        let numbers = json!({"limits": {"cpu": 2, "memory": "1Gi"}, "requests": {"cpu": "2"}});
        assert_eq!(class(&[numbers]), QosClass::Guaranteed);
    }

    #[test]
    fn anything_less_is_burstable() {
        for r in [
            json!({"requests": {"cpu": "1"}}),
            json!({"limits": {"cpu": "1"}}),
            json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}),
            json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"memory": "1Mi"}}),
        ] {
            assert_eq!(class(std::slice::from_ref(&r)), QosClass::Burstable, "{r}");
        }
        // One container without limits spoils the pod.
        let both = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(class(&[both, json!({})]), QosClass::Burstable);
    }

    #[test]
    fn init_containers_count() {
        let both = json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]);
        let bare = json!([{"name": "i"}]);
        assert_eq!(QosClass::compute(&pod(&both, &bare)), QosClass::Burstable);
        let init_only = json!([{"name": "i", "resources": {"requests": {"memory": "1Mi"}}}]);
        assert_eq!(
            QosClass::compute(&pod(&json!([{"name": "a"}]), &init_only)),
            QosClass::Burstable
        );
        assert_eq!(QosClass::compute(&pod(&both, &both)), QosClass::Guaranteed);
    }

    #[test]
    fn the_reported_class_wins() {
        let p =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"qosClass": "Burstable"}});
        assert_eq!(QosClass::of_pod(&p), QosClass::Burstable);
        assert_eq!(QosClass::compute(&p), QosClass::BestEffort);
        let odd = json!({"spec": {}, "status": {"qosClass": "Gold"}});
        assert_eq!(QosClass::of_pod(&odd), QosClass::BestEffort);
        assert_eq!(QosClass::Guaranteed.to_string(), "Guaranteed");
    }
}
