//! Unknown-field detection for `fieldValidation=Strict` (what kubectl sends by default): a
//! field the kind's schema lacks would otherwise be dropped silently when the object is decoded.

use k8s_openapi::api::{apps, coordination, core, discovery};
use serde::de::DeserializeOwned;
use serde_ignored::Path;
use serde_json::Value;

use crate::validate::Path as FieldPath;

/// Paths (`spec.replicass`, `spec.template.spec.containers[0].imag`) present in `obj` that the
/// typed object does not keep. Empty for kinds without a schema here or objects that do not
/// decode (validation reports those).
pub fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
    ignored(kind, obj)
        .into_iter()
        .map(|path| {
            path.iter()
                .fold(FieldPath::root(""), |p, seg| match seg {
                    Seg::Key(k) => p.child(k),
                    Seg::Index(i) => p.index(*i),
                })
                .to_string()
        })
        .collect()
}

/// Removes the fields `unknown_fields` reports, as decoding into the typed object does in
/// Kubernetes (fieldValidation Ignore/Warn): what is stored is what the schema knows.
pub fn prune_unknown(kind: &str, obj: &mut Value) {
    for path in ignored(kind, obj) {
        let Some((Seg::Key(last), parent)) = path.split_last() else {
            continue;
        };
        if let Some(Value::Object(m)) = at_mut(obj, parent) {
            m.remove(last.as_str());
        }
    }
}

/// One step of a field path.
enum Seg {
    Key(String),
    Index(usize),
}

/// The fields of `obj` that decoding into the kind's typed object skips, in the order they
/// appear; null ones are left out (null is "unset" in JSON, so dropping it loses nothing).
/// One decode that reports what it skips: no second value to compare with.
fn ignored(kind: &str, obj: &Value) -> Vec<Vec<Seg>> {
    let found = match kind {
        "Namespace" => skipped::<core::v1::Namespace>(obj),
        "Pod" => skipped::<core::v1::Pod>(obj),
        "Service" => skipped::<core::v1::Service>(obj),
        "Endpoints" => skipped::<core::v1::Endpoints>(obj),
        "Node" => skipped::<core::v1::Node>(obj),
        "Event" => skipped::<core::v1::Event>(obj),
        "ConfigMap" => skipped::<core::v1::ConfigMap>(obj),
        "Secret" => skipped::<core::v1::Secret>(obj),
        "ServiceAccount" => skipped::<core::v1::ServiceAccount>(obj),
        "Job" => skipped::<k8s_openapi::api::batch::v1::Job>(obj),
        "EndpointSlice" => skipped::<discovery::v1::EndpointSlice>(obj),
        "Lease" => skipped::<coordination::v1::Lease>(obj),
        "Deployment" => skipped::<apps::v1::Deployment>(obj),
        "ReplicaSet" => skipped::<apps::v1::ReplicaSet>(obj),
        "DaemonSet" => skipped::<apps::v1::DaemonSet>(obj),
        _ => Vec::new(),
    };
    found
        .into_iter()
        .filter(|path| at(obj, path).is_some_and(|v| !v.is_null()))
        .collect()
}

/// The skipped fields' paths; none when `obj` does not decode.
fn skipped<T: DeserializeOwned>(obj: &Value) -> Vec<Vec<Seg>> {
    let mut found = Vec::new();
    // From the borrowed Value: no copy of the object before decoding it.
    let decoded: Result<T, _> = serde_ignored::deserialize(obj, |path| {
        let mut segs = Vec::new();
        segments(&path, &mut segs);
        found.push(segs);
    });
    match decoded {
        Ok(_) => found,
        Err(_) => Vec::new(),
    }
}

fn segments(path: &Path<'_>, out: &mut Vec<Seg>) {
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => {
            segments(parent, out);
        }
    }
}

fn at<'v>(mut v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    for seg in path {
        v = match seg {
            Seg::Key(k) => v.get(k.as_str())?,
            Seg::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

fn at_mut<'v>(mut v: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    for seg in path {
        v = match seg {
            Seg::Key(k) => v.get_mut(k.as_str())?,
            Seg::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
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
    fn pruning_keeps_nulls_and_everything_known() {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "zzz": null, "labels": {"b": "1", "a": "2"}, "bad": {"x": 1}},
            "spec": {"nodeName": "n", "extra": [1], "containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(
            unknown_fields("Pod", &p),
            ["metadata.bad", "spec.extra"],
            "an unknown null is unset, not unknown"
        );
        prune_unknown("Pod", &mut p);
        assert_eq!(
            p,
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "zzz": null, "labels": {"b": "1", "a": "2"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]}})
        );
        // An object that does not decode is left for validation to report.
        let mut bad = json!({"kind": "Pod", "apiVersion": "v1", "spec": {"containers": 3, "x": 1}});
        let before = bad.clone();
        prune_unknown("Pod", &mut bad);
        assert_eq!(bad, before);
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
