//! The OpenAPI v3 documents, one per group-version: the paths, with their operations tagged by
//! group/version/kind, and the object schemas of the served kinds (`components.schemas`, see
//! [`schemas`]), which `kubectl explain` renders and schema-validating clients check against.
//!
//! The PATCH operations offer the `fieldValidation` parameter, so kubectl leaves validation to
//! the server (fieldValidation=Strict, which we honour). They name no request body: kubectl
//! computes client-side apply patches from an OpenAPI v3 schema only for an operation that
//! accepts `application/strategic-merge-patch+json`; without it, kubectl keeps using its
//! compiled-in types for the built-in kinds, which are what our strategic merge follows.
//!
//! The documents are built once, on first request, and kept encoded. As kube-apiserver does,
//! each is named by the SHA-512 of its bytes (`?hash=` in the root's URLs, and the ETag): a
//! request with the current hash may be cached for good, an old hash is redirected to the
//! current one, and `If-None-Match` with the ETag is answered 304.

mod kinds;
mod schemas;

use std::sync::OnceLock;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::registry::{Resource, groups};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// One encoded document and its hash (upper-case hex SHA-512, as kube-apiserver names them).
struct Doc {
    path: String,
    body: Bytes,
    hash: String,
}

fn docs() -> &'static [Doc] {
    static DOCS: OnceLock<Vec<Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        // On a thread of its own: the allocator can give its arena's garbage back when the
        // build is done (a few MB of schema trees for well under 1 MB of documents).
        std::thread::scope(|s| {
            s.spawn(build_all)
                .join()
                .expect("building the OpenAPI documents")
        })
    })
}

fn build_all() -> Vec<Doc> {
    let mut gvs = vec![("", "v1")];
    gvs.extend(groups());
    let built: Vec<(String, Vec<u8>)> = gvs
        .into_iter()
        .filter_map(|(g, v)| {
            let doc = build(g, v)?;
            let body = serde_json::to_vec(&doc).expect("a Value always serialises");
            Some((gv_path(g, v), body))
        })
        .collect();
    // One buffer for all, allocated once the schema trees are freed.
    let mut all = Vec::with_capacity(built.iter().map(|(_, b)| b.len()).sum());
    let mut spans = Vec::new();
    for (path, body) in built {
        let start = all.len();
        all.extend_from_slice(&body);
        spans.push((path, start..all.len()));
    }
    let all = Bytes::from(all);
    spans
        .into_iter()
        .map(|(path, range)| {
            let body = all.slice(range);
            Doc {
                hash: sha512_hex(&body),
                path,
                body,
            }
        })
        .collect()
}

fn sha512_hex(body: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA512, body);
    let mut hex = String::with_capacity(2 * digest.as_ref().len());
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02X}");
    }
    hex
}

/// GET /openapi/v3: where each group-version's document lives.
pub fn root() -> Value {
    let paths: serde_json::Map<String, Value> = docs()
        .iter()
        .map(|d| {
            (
                d.path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.path, d.hash)}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// The document at `path` (`api/v1`, `apis/apps/v1`), decoded.
pub fn group_version(path: &str) -> Option<Value> {
    let d = docs().iter().find(|d| d.path == path)?;
    Some(serde_json::from_slice(&d.body).expect("encoded from a Value"))
}

/// Answers GET /openapi/v3 and /openapi/v3/{group-version}; `None` for other paths and for
/// group-versions not served.
pub fn serve(path: &str, query: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    let rest = path.strip_prefix("/openapi/v3")?;
    if rest.is_empty() || rest == "/" {
        return Some(crate::context::json(StatusCode::OK, &root()));
    }
    let rest = rest.strip_prefix('/')?.trim_end_matches('/');
    let d = docs().iter().find(|d| d.path == rest)?;
    let etag = format!("\"{}\"", d.hash);
    let asked = crate::context::query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "hash")
        .map(|(_, v)| v);
    let mut resp = match asked {
        Some(h) if h != d.hash => {
            let to = format!("/openapi/v3/{}?hash={}", d.path, d.hash);
            return Some((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response());
        }
        _ if if_none_match(headers, &etag) => StatusCode::NOT_MODIFIED.into_response(),
        _ => ([(header::CONTENT_TYPE, "application/json")], d.body.clone()).into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag.parse().expect("hex is a valid header"));
    if asked.is_some() {
        // The URL names this exact content.
        h.insert(
            header::CACHE_CONTROL,
            "public, immutable".parse().expect("ascii"),
        );
        h.insert(header::VARY, "Accept".parse().expect("ascii"));
    }
    Some(resp)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// A body of the kind's schema, as a request body or a 200 answer.
fn content(schema: Option<&str>) -> Value {
    let schema = schema.map_or_else(
        || json!({"type": "object"}),
        |name| json!({"$ref": format!("#/components/schemas/{name}")}),
    );
    json!({"content": {"application/json": {"schema": schema}}})
}

fn operations(r: &Resource, schema: Option<&str>) -> Value {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let write = vec![
        query("dryRun"),
        query("fieldManager"),
        query("fieldValidation"),
    ];
    let mut ok = content(schema);
    ok["description"] = json!("OK");
    json!({
        "get": {"operationId": format!("read{}", r.kind), "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": ok}},
        "put": {"operationId": format!("replace{}", r.kind), "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": write,
                "requestBody": content(schema), "responses": {"200": ok}},
        "patch": {"operationId": format!("patch{}", r.kind), "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                  "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")],
                  "responses": {"200": ok}},
        "delete": {"operationId": format!("delete{}", r.kind), "x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk},
    })
}

/// The document of one group-version (`None` if it is not served).
fn build(group: &str, version: &str) -> Option<Value> {
    let rs = crate::registry::in_group_version(group, version);
    if rs.is_empty() {
        return None;
    }
    let components = schemas::components(&rs);
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
        paths.insert(item, operations(r, components.name_of(r)));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": components.schemas},
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
            d.get("requestBody").is_none(),
            "kubectl apply keeps its compiled-in patch strategies"
        );
        assert!(
            group_version("api/v1").unwrap()["paths"]
                .get("/api/v1/nodes/{name}")
                .is_some()
        );
        assert!(group_version("apis/nope/v1").is_none());
    }
}
