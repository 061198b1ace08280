//! Discovery documents (/api, /apis, /api/v1, /apis/GROUP[/VERSION]) and /version, generated
//! from the registry.

use serde_json::{Value, json};

use crate::registry::{Resource, groups};

/// The Kubernetes release whose API we follow; kubectl's dispatcher picks its client from it.
pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-kproxy.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn group_doc(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .chain(crate::review::groups())
        .chain(crate::metrics_api::groups())
        .map(|(g, v)| group_doc(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(name: &str) -> Option<Value> {
    let (g, v) = groups()
        .into_iter()
        .chain(crate::review::groups())
        .chain(crate::metrics_api::groups())
        .find(|(g, _)| *g == name)?;
    let mut doc = group_doc(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

fn entries(r: &Resource) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
        "shortNames": r.short_names,
        "categories": r.categories,
    })];
    let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": format!("{}/{name}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
    if r.sub.status {
        out.push(sub("status", r.kind, SUB_VERBS));
    }
    if r.sub.scale {
        let mut s = sub("scale", "Scale", SUB_VERBS);
        s["group"] = json!("autoscaling");
        s["version"] = json!("v1");
        out.push(s);
    }
    if r.sub.pod {
        out.push(sub("binding", "Binding", &["create"]));
        // Proxied to the pod's kubelet (proxy.rs), as Kubernetes lists them.
        out.push(sub("attach", "PodAttachOptions", &["create", "get"]));
        out.push(sub("ephemeralcontainers", "Pod", SUB_VERBS));
        out.push(sub("exec", "PodExecOptions", &["create", "get"]));
        out.push(sub("log", "Pod", &["get"]));
        out.push(sub(
            "portforward",
            "PodPortForwardOptions",
            &["create", "get"],
        ));
    }
    if r.group.is_empty() && r.kind == "Node" {
        // Forwarded to an endpoint on the node (proxy.rs); GET only.
        out.push(sub("proxy", "NodeProxyOptions", &["get"]));
    }
    out
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs = crate::registry::in_group_version(group, version);
    if rs.is_empty() {
        return crate::review::resource_list(group, version)
            .or_else(|| crate::metrics_api::resource_list(group, version));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = rs.into_iter().flat_map(entries).collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"services")
                && names.contains(&"nodes/proxy")
        );
        let apps = resource_list("apps", "v1").unwrap();
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert!(
            apps["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "deployments/scale")
        );
        assert!(resource_list("apps", "v2").is_none());
        assert!(
            group_list()["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apps")
        );
        assert_eq!(version()["minor"], KUBE_MINOR);
    }
}
