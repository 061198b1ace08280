//! The OpenAPI v3 documents through `handler::router` in-process: every served kind has an
//! object schema tagged with its group/version/kind, every reference resolves, the patch and
//! list extensions are there, the caching headers follow kube-apiserver, and the objects the
//! server returns validate against the schemas it publishes (no unknown field, no wrong type).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::registry::RESOURCES;
use crate::test_api::{OneNode as Server, pod};

struct Reply {
    code: StatusCode,
    headers: axum::http::HeaderMap,
    bytes: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("a JSON body")
    }
}

async fn get(s: &Server, uri: &str, if_none_match: Option<&str>) -> Reply {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", s.admin));
    if let Some(t) = if_none_match {
        req = req.header(header::IF_NONE_MATCH, t);
    }
    let resp = s
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        code,
        headers,
        bytes,
    }
}

/// Every group-version's document, through the root's URLs: (path, document).
async fn documents(s: &Server) -> Vec<(String, Value)> {
    let root = get(s, "/openapi/v3", None).await;
    assert_eq!(root.code, StatusCode::OK);
    let mut out = Vec::new();
    for (path, entry) in root.json()["paths"].as_object().unwrap() {
        let url = entry["serverRelativeURL"].as_str().unwrap();
        let doc = get(s, url, None).await;
        assert_eq!(doc.code, StatusCode::OK, "{url}");
        out.push((path.clone(), doc.json()));
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The schema tagged with this group/version/kind, with its name.
fn schema_of<'a>(
    doc: &'a Value,
    group: &str,
    version: &str,
    kind: &str,
) -> Vec<(&'a String, &'a Value)> {
    let want = json!({"group": group, "version": version, "kind": kind});
    doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|a| a.contains(&want))
        })
        .collect()
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_served_kind_has_a_schema() {
    let s = Server::new("openapi-kinds").await;
    let docs = documents(&s).await;
    for r in RESOURCES {
        let path = gv_path(r.group, r.version);
        let (_, doc) = docs
            .iter()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("no document for {path}"));
        let found = schema_of(doc, r.group, r.version, r.kind);
        assert_eq!(
            found.len(),
            1,
            "{} in {path}: {:?}",
            r.kind,
            found.iter().map(|f| f.0).collect::<Vec<_>>()
        );
        let (name, schema) = found[0];
        let prefix = if r.group.is_empty() {
            "core"
        } else {
            r.group.split('.').next().unwrap()
        };
        assert!(
            name.starts_with("io.k8s.api.")
                && name.ends_with(&format!(".{}.{}", r.version, r.kind))
                && name.contains(prefix),
            "{name} for {}",
            r.kind
        );
        assert!(
            !schema["description"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{name}"
        );
        assert_eq!(
            schema["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "{name}"
        );
        assert!(
            schema["properties"]["metadata"]["description"].is_string(),
            "{name}"
        );
        // Kubernetes requires metadata of Events only (k8s-openapi marks it everywhere).
        let metadata_required = schema["required"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("metadata")));
        assert_eq!(metadata_required, r.kind == "Event", "{name}");
        // The item path answers with the kind's schema.
        let item = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(p, _)| p.ends_with(&format!("/{}/{{name}}", r.plural)))
            .unwrap()
            .1;
        assert_eq!(
            item["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{name}")
        );
    }
}

#[tokio::test]
async fn references_resolve() {
    let s = Server::new("openapi-refs").await;
    for (path, doc) in documents(&s).await {
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(schemas.len() > 5, "{path}");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{path}: {r} is not a component reference"));
            assert!(schemas.contains_key(name), "{path}: {r} does not resolve");
        }
        // OpenAPI 3.0 ignores siblings of a $ref: none may carry meaning.
        let mut stack = vec![&doc];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(m) => {
                    if m.contains_key("$ref") {
                        assert_eq!(m.len(), 1, "{path}: siblings beside $ref: {v}");
                    }
                    stack.extend(m.values());
                }
                Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn patch_and_list_extensions() {
    let s = Server::new("openapi-ext").await;
    let core = get(&s, "/openapi/v3/api/v1", None).await.json();
    let sc = &core["components"]["schemas"];
    let containers = &sc["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        containers["items"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Container"
    );
    assert_eq!(
        sc["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]["x-kubernetes-patch-strategy"],
        "merge,retainKeys"
    );
    assert_eq!(
        sc["io.k8s.api.core.v1.PodSpec"]["properties"]["tolerations"]["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(
        sc["io.k8s.api.core.v1.Container"]["properties"]["ports"]["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(
        sc["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]["x-kubernetes-patch-merge-key"],
        "port"
    );
    let meta = &sc["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
    assert_eq!(meta["finalizers"]["x-kubernetes-list-type"], "set");
    assert_eq!(
        meta["ownerReferences"]["x-kubernetes-patch-merge-key"],
        "uid"
    );
    // A struct-level marker (+structType=atomic).
    assert_eq!(
        sc["io.k8s.api.core.v1.LocalObjectReference"]["x-kubernetes-map-type"],
        "atomic"
    );

    let apps = get(&s, "/openapi/v3/apis/apps/v1", None).await.json();
    let strategy = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
        ["strategy"];
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    // A description beside the reference: wrapped, as kube-apiserver publishes it.
    assert_eq!(
        strategy["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"
    );
}

#[tokio::test]
async fn hashes_etags_and_redirects() {
    let s = Server::new("openapi-cache").await;
    let root = get(&s, "/openapi/v3", None).await.json();
    let url = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let hash = url.split("hash=").nth(1).unwrap().to_string();

    let doc = get(&s, &url, None).await;
    assert_eq!(doc.code, StatusCode::OK);
    let digest = ring::digest::digest(&ring::digest::SHA512, &doc.bytes);
    let hex = digest.as_ref().iter().fold(String::new(), |mut h, b| {
        use std::fmt::Write as _;
        let _ = write!(h, "{b:02X}");
        h
    });
    assert_eq!(hash, hex, "the hash names the content");
    assert_eq!(doc.headers[header::ETAG], format!("\"{hash}\""));
    assert_eq!(doc.headers[header::CACHE_CONTROL], "public, immutable");
    assert_eq!(doc.headers[header::CONTENT_TYPE], "application/json");

    // Without a hash: the same content, not marked immutable.
    let plain = get(&s, "/openapi/v3/api/v1", None).await;
    assert_eq!(plain.bytes, doc.bytes);
    assert!(plain.headers.get(header::CACHE_CONTROL).is_none());

    let again = get(&s, "/openapi/v3/api/v1", Some(&format!("\"{hash}\""))).await;
    assert_eq!(again.code, StatusCode::NOT_MODIFIED);
    assert!(again.bytes.is_empty());
    let changed = get(&s, "/openapi/v3/api/v1", Some("\"stale\"")).await;
    assert_eq!(changed.code, StatusCode::OK);

    let old = get(&s, "/openapi/v3/apis/apps/v1?hash=0123", None).await;
    assert_eq!(old.code, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        old.headers[header::LOCATION],
        root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
    );

    assert_eq!(
        get(&s, "/openapi/v3/apis/nope/v1", None).await.code,
        StatusCode::NOT_FOUND
    );
}

/// Checks `v` against `schema` as a schema-validating client would: types, required fields,
/// and no field the schema does not name. Returns the problems, as JSON paths.
/// `null` is taken as absent, as Kubernetes decodes it (`creationTimestamp: null`).
fn validate(v: &Value, schema: &Value, all: &Map<String, Value>, at: &str, out: &mut Vec<String>) {
    if v.is_null() {
        return;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return validate(v, &all[name], all, at, out);
    }
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(v, s, all, at, out);
    }
    if schema.get("x-kubernetes-int-or-string").is_some() {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.push(format!("{at}: not an int or string"));
        }
        return;
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => panic!("unexpected type {t}"),
    };
    if !ok {
        out.push(format!("{at}: expected {}, got {v}", schema["type"]));
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, x) in m {
                    match props.get(k) {
                        Some(p) => validate(x, p, all, &format!("{at}.{k}"), out),
                        None => out.push(format!("{at}.{k}: unknown field")),
                    }
                }
                for req in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !m.contains_key(req.as_str().unwrap()) {
                        out.push(format!("{at}.{req}: required"));
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, x) in m {
                    validate(x, ap, all, &format!("{at}[{k}]"), out);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter().enumerate() {
                    validate(x, items, all, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn served_objects_validate() {
    let s = Server::new("openapi-validate").await;
    let create = |uri: &'static str, body: Value| {
        let s = &s;
        async move {
            let a = s
                .send(&s.admin, Method::POST, uri, "application/json", &body)
                .await;
            assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
            a.body
        }
    };
    let mut objects = vec![
        create("/api/v1/namespaces/default/pods", pod("web", "n1")).await,
        create(
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
        )
        .await,
        create(
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "c", "image": "httpd",
                                                                  "ports": [{"containerPort": 80}],
                                                                  "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}}}}),
        )
        .await,
    ];
    let ns = get(&s, "/api/v1/namespaces/default", None).await;
    objects.push(ns.json());

    let docs = documents(&s).await;
    for obj in objects {
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                obj["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let kind = obj["kind"].as_str().unwrap();
        let doc = &docs
            .iter()
            .find(|(p, _)| *p == gv_path(&group, &version))
            .unwrap()
            .1;
        let found = schema_of(doc, &group, &version, kind);
        let mut problems = Vec::new();
        validate(
            &obj,
            found[0].1,
            doc["components"]["schemas"].as_object().unwrap(),
            kind,
            &mut problems,
        );
        assert!(problems.is_empty(), "{kind}: {problems:?}\n{obj}");

        // And the validator is not blind: a stray field and a wrong type are caught.
        let mut bad = obj.clone();
        bad["spec"]["bogus"] = json!(1);
        bad["metadata"]["labels"] = json!({"a": 1});
        let mut problems = Vec::new();
        validate(
            &bad,
            found[0].1,
            doc["components"]["schemas"].as_object().unwrap(),
            kind,
            &mut problems,
        );
        assert!(
            problems
                .iter()
                .any(|p| p.ends_with(".spec.bogus: unknown field")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains(".metadata.labels[a]: expected")),
            "{problems:?}"
        );
    }
}
