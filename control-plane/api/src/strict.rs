//! Unknown-field detection for `fieldValidation=Strict` (what kubectl sends by default): a
//! field the kind's schema lacks would otherwise be dropped silently when the object is decoded.

use k8s_openapi::api::{apps, coordination, core, discovery};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Paths (`spec.replicass`, `spec.template.spec.containers[0].imag`) present in `obj` that the
/// typed object does not keep. Empty for kinds without a schema here or objects that do not
/// decode (validation reports those).
pub fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(round) = typed_roundtrip(kind, obj) {
        diff(obj, &round, "", &mut out);
    }
    out
}

/// Removes the fields `unknown_fields` reports, as decoding into the typed object does in
/// Kubernetes (fieldValidation Ignore/Warn): what is stored is what the schema knows.
pub fn prune_unknown(kind: &str, obj: &mut Value) {
    if let Some(round) = typed_roundtrip(kind, obj) {
        prune(obj, &round);
    }
}

fn prune(given: &mut Value, kept: &Value) {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            g.retain(|key, v| v.is_null() || k.contains_key(key));
            for (key, v) in g.iter_mut() {
                if let Some(kv) = k.get(key) {
                    prune(v, kv);
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (gv, kv) in g.iter_mut().zip(k) {
                prune(gv, kv);
            }
        }
        _ => {}
    }
}

fn typed_roundtrip(kind: &str, obj: &Value) -> Option<Value> {
    match kind {
        "Namespace" => roundtrip::<core::v1::Namespace>(obj),
        "Pod" => roundtrip::<core::v1::Pod>(obj),
        "Service" => roundtrip::<core::v1::Service>(obj),
        "Endpoints" => roundtrip::<core::v1::Endpoints>(obj),
        "Node" => roundtrip::<core::v1::Node>(obj),
        "Event" => roundtrip::<core::v1::Event>(obj),
        "ConfigMap" => roundtrip::<core::v1::ConfigMap>(obj),
        "Secret" => roundtrip::<core::v1::Secret>(obj),
        "ServiceAccount" => roundtrip::<core::v1::ServiceAccount>(obj),
        "Job" => roundtrip::<k8s_openapi::api::batch::v1::Job>(obj),
        "EndpointSlice" => roundtrip::<discovery::v1::EndpointSlice>(obj),
        "Lease" => roundtrip::<coordination::v1::Lease>(obj),
        "Deployment" => roundtrip::<apps::v1::Deployment>(obj),
        "ReplicaSet" => roundtrip::<apps::v1::ReplicaSet>(obj),
        "DaemonSet" => roundtrip::<apps::v1::DaemonSet>(obj),
        _ => None,
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(obj: &Value) -> Option<Value> {
    // From the borrowed Value: no copy of the object before decoding it.
    let typed = T::deserialize(obj).ok()?;
    serde_json::to_value(typed).ok()
}

fn diff(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, v) in g {
                // null is "unset" in JSON; the typed object drops it legitimately.
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    None => out.push(p),
                    Some(kv) => diff(v, kv, &p, out),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                diff(gv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_misspelled_fields_at_any_depth() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"any-key": "ok"}, "nmae": "x"},
            "spec": {"replicass": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "imag": "x", "image": "y", "ports": [{"containerPort": 80, "bogus": 1}]}]}}}
        });
        assert_eq!(
            unknown_fields("Deployment", &d),
            [
                "metadata.nmae",
                "spec.replicass",
                "spec.template.spec.containers[0].imag",
                "spec.template.spec.containers[0].ports[0].bogus"
            ]
        );
    }

    #[test]
    fn pruning_drops_only_unknown_fields() {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "x": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "typo": true}], "nodeName": "n"}});
        prune_unknown("Pod", &mut p);
        assert_eq!(
            p,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n"}})
        );
    }

    #[test]
    fn clean_objects_and_nulls_pass() {
        let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": null},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"a": "b"}, "clusterIP": null},
            "status": {"loadBalancer": {}}});
        assert!(unknown_fields("Service", &s).is_empty());
        assert!(unknown_fields("Widget", &json!({"x": 1})).is_empty());
    }
}
