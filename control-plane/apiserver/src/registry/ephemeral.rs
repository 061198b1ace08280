//! `pods/{name}/ephemeralcontainers` (GET, PUT, PATCH; `kubectl debug` sends a strategic
//! merge patch of `{"spec":{"ephemeralContainers":[...]}}`): a write there changes only
//! `spec.ephemeralContainers`, as Kubernetes' podEphemeralContainersStrategy. What may change
//! (new containers only, each valid, names unique across every container, targets naming a
//! container) is validated with the pod (`kproxy_api::validate`).

use serde_json::Value;

/// The subresource's name in request paths.
pub const SUBRESOURCE: &str = "ephemeralcontainers";

/// The pod after a write of `cand` to its ephemeralcontainers subresource: the stored pod
/// `cur` with `cand`'s ephemeral containers (dropNonEphemeralContainerUpdates).
pub fn merge(cur: &Value, cand: &Value) -> Value {
    let mut new = cur.clone();
    let list = cand
        .pointer("/spec/ephemeralContainers")
        .filter(|l| !l.is_null())
        .cloned();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        match list {
            Some(l) => {
                spec.insert("ephemeralContainers".into(), l);
            }
            None => {
                spec.remove("ephemeralContainers");
            }
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::{Access, Identity, authorize};
    use crate::registry::lookup;

    #[test]
    fn only_the_ephemeral_containers_change() {
        let cur = json!({
            "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        });
        let cand = json!({
            "metadata": {"name": "p", "labels": {"a": "changed"}},
            "spec": {
                "containers": [{"name": "c", "image": "y"}],
                "ephemeralContainers": [{"name": "d", "image": "busybox"}],
            },
            "status": {"phase": "Failed"},
        });
        let new = merge(&cur, &cand);
        assert_eq!(new["spec"]["containers"][0]["image"], "x");
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(new["spec"]["ephemeralContainers"][0]["name"], "d");
        // Sent without any: none (validation then refuses removing existing ones).
        assert!(
            merge(&new, &cur)["spec"]
                .get("ephemeralContainers")
                .is_none()
        );
    }

    #[test]
    fn nodes_may_not_add_ephemeral_containers() {
        let pods = lookup("", "v1", "pods").unwrap();
        let node = Identity::Node("n1".into());
        for verb in ["update", "patch"] {
            assert_eq!(
                authorize(&node, verb, pods, Some("d"), Some("p"), Some(SUBRESOURCE)),
                Access::Denied,
                "{verb}"
            );
        }
        assert_eq!(
            authorize(
                &Identity::Admin,
                "patch",
                pods,
                Some("d"),
                Some("p"),
                Some(SUBRESOURCE)
            ),
            Access::Allowed
        );
    }
}
