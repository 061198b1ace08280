//! Pods: they start Pending with their QoS class, and a pod on a node is deleted gracefully
//! (marked, then removed by its kubelet once its containers stopped).

use kproxy_api::qos::QosClass;
use serde_json::{Value, json};

use super::{Deletion, Hooks};
use crate::object;
use crate::status::ApiResult;

pub const HOOKS: Hooks = Hooks {
    initial_status: Some(initial_status),
    admit_create: Some(super::serviceaccount::admit_pod),
    delete: Some(delete),
    last_finalizer_deletes: false,
    ..Hooks::NONE
};

/// Kubernetes' default terminationGracePeriodSeconds.
const DEFAULT_GRACE: i64 = 30;

fn initial_status(pod: &Value) -> Value {
    json!({"phase": "Pending", "qosClass": QosClass::compute(pod).as_str()})
}

/// A pod bound to a node gets its grace period (the request's, else its spec's); an unbound
/// one, or a grace of 0, goes at once.
#[expect(
    clippy::unnecessary_wraps,
    reason = "a DeleteHook: other kinds' hooks refuse deletes"
)]
fn delete(pod: &Value, grace: Option<i64>) -> ApiResult<Deletion> {
    let grace = grace.unwrap_or_else(|| {
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_GRACE)
    });
    let bound = !object::field_value(pod, "spec.nodeName").is_empty();
    Ok(if bound && grace > 0 {
        Deletion::Graceful { grace }
    } else {
        Deletion::Remove
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_pods_are_deleted_gracefully() {
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}});
        assert_eq!(
            delete(&bound, None).unwrap(),
            Deletion::Graceful { grace: 5 }
        );
        assert_eq!(delete(&bound, Some(0)).unwrap(), Deletion::Remove);
        let default = json!({"spec": {"nodeName": "n1"}});
        assert_eq!(
            delete(&default, None).unwrap(),
            Deletion::Graceful { grace: 30 }
        );
        assert_eq!(
            delete(&json!({"spec": {}}), Some(10)).unwrap(),
            Deletion::Remove
        );
    }

    #[test]
    fn starts_pending_with_its_qos_class() {
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(
            initial_status(&pod),
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
    }
}
