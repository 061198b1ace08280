//! The OpenAPI v3 documents kubectl consults before `create -f` / `apply`: per group-version, the
//! paths with their PATCH operation tagged by group/version/kind and offering the
//! `fieldValidation` parameter. Seeing that parameter, kubectl leaves validation to the server
//! (fieldValidation=Strict, which we honour) instead of downloading full schemas.
//! Object schemas (components) are not published; kubectl's strategic-merge logic for built-in
//! kinds uses its compiled-in types, so apply does not need them.

use serde_json::{Value, json};

use crate::registry::{Resource, groups};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable hash of the document, so clients' caches notice a new server version.
fn hash() -> &'static str {
    concat!("kproxy-", env!("CARGO_PKG_VERSION"))
}

/// GET /openapi/v3: where each group-version's document lives.
pub fn root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash())}),
        );
    }
    json!({"paths": paths})
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operations(r: &Resource) -> Value {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let write = vec![
        query("dryRun"),
        query("fieldManager"),
        query("fieldValidation"),
    ];
    json!({
        "get": {"operationId": format!("read{}", r.kind), "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
        "put": {"operationId": format!("replace{}", r.kind), "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": write},
        "patch": {"operationId": format!("patch{}", r.kind), "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                  "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")]},
        "delete": {"operationId": format!("delete{}", r.kind), "x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk},
    })
}

/// GET /openapi/v3/api/v1, /openapi/v3/apis/G/V.
pub fn group_version(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let rs = crate::registry::in_group_version(group, version);
    if rs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for r in rs {
        let item = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}/{{name}}",
                gv_path(group, version),
                r.plural
            )
        } else {
            format!("/{}/{}/{{name}}", gv_path(group, version), r.plural)
        };
        paths.insert(item, operations(r));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let r = root();
        assert!(
            r["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let apps = group_version("apis/apps/v1").unwrap();
        let d = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(d["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            d["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            group_version("api/v1").unwrap()["paths"]
                .get("/api/v1/nodes/{name}")
                .is_some()
        );
        assert!(group_version("apis/nope/v1").is_none());
    }
}
