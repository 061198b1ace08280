//! The part of Kubernetes' Node authorizer graph this cluster needs: a node may get a
//! ConfigMap or Secret only while a pod bound to it references it (volumes, projected
//! sources, env, envFrom, imagePullSecrets). Kubernetes keeps the graph in memory from
//! informers; here the pods of the object's namespace are read from the store on each check,
//! which costs a list per node read (the kubelet reads each referenced object once per sync
//! period, not per request it serves).

use kproxy_store::Store;
use serde_json::Value;

use crate::object;
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// The resources the graph guards, by plural.
pub const GUARDED: &[&str] = &["configmaps", "secrets"];

/// The (plural, name) pairs `pod` references.
pub fn pod_references(pod: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    let mut add = |plural: &'static str, name: &Value| {
        if let Some(n) = name.as_str().filter(|n| !n.is_empty()) {
            out.push((plural, n.to_string()));
        }
    };
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add("configmaps", &v["configMap"]["name"]);
        add("secrets", &v["secret"]["secretName"]);
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add("configmaps", &s["configMap"]["name"]);
            add("secrets", &s["secret"]["name"]);
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add("secrets", &s["name"]);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add("configmaps", &e["configMapRef"]["name"]);
                add("secrets", &e["secretRef"]["name"]);
            }
            for e in c["env"].as_array().into_iter().flatten() {
                add("configmaps", &e["valueFrom"]["configMapKeyRef"]["name"]);
                add("secrets", &e["valueFrom"]["secretKeyRef"]["name"]);
            }
        }
    }
    out
}

/// Whether a pod bound to `node` in `ns` references `plural`/`name`.
pub async fn node_references(
    store: &dyn Store,
    node: &str,
    ns: &str,
    plural: &str,
    name: &str,
) -> ApiResult<bool> {
    let pods = crate::registry::by_kind("Pod").expect("pods are registered");
    let (kvs, _) = store.list(&pods.ns_prefix(Some(ns))).await?;
    for kv in &kvs {
        let pod = object::from_kv(kv)?;
        if object::field_value(&pod, "spec.nodeName") == node
            && pod_references(&pod)
                .iter()
                .any(|(p, n)| *p == plural && n == name)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Kubernetes' reason for a refused read.
pub fn no_relationship(node: &str) -> String {
    format!("no relationship found between node '{node}' and this object")
}

/// The handler's part of [`super::Access::ReferencedBy`]: a 403 in Kubernetes' words unless
/// a pod bound to `node` references the object.
pub async fn check(
    store: &dyn Store,
    user: &str,
    node: &str,
    verb: &str,
    res: &Resource,
    ns: Option<&str>,
    name: Option<&str>,
) -> ApiResult<()> {
    let (Some(ns), Some(name)) = (ns, name) else {
        return Err(ApiError::forbidden(user, verb, &res.group_resource(), ns));
    };
    if node_references(store, node, ns, res.plural, name).await? {
        return Ok(());
    }
    let mut e = ApiError::forbidden(user, verb, &res.group_resource(), Some(ns));
    e.message = format!(
        "{} \"{name}\" {}: {}",
        res.group_resource(),
        e.message
            .strip_prefix(&format!("{} ", res.group_resource()))
            .unwrap_or(&e.message),
        no_relationship(node)
    );
    Err(e)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_kind_of_reference_is_found() {
        let pod = json!({"spec": {
            "volumes": [{"name": "a", "configMap": {"name": "cm1"}},
                        {"name": "b", "secret": {"secretName": "s1"}},
                        {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm2"}},
                                                                {"secret": {"name": "s2"}}]}}],
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s3"}}]}],
            "containers": [{"name": "c",
                "envFrom": [{"configMapRef": {"name": "cm3"}}],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm4", "key": "k"}}},
                        {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s4", "key": "k"}}},
                        {"name": "Z", "value": "plain"}]}]
        }});
        let mut refs = pod_references(&pod);
        refs.sort();
        let names: Vec<String> = refs.iter().map(|(p, n)| format!("{p}/{n}")).collect();
        assert_eq!(
            names,
            [
                "configmaps/cm1",
                "configmaps/cm2",
                "configmaps/cm3",
                "configmaps/cm4",
                "secrets/pull",
                "secrets/s1",
                "secrets/s2",
                "secrets/s3",
                "secrets/s4"
            ]
        );
    }
}
