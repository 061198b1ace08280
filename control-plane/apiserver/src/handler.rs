//! The one generic HTTP handler: authenticate, parse the path against the registry, authorize,
//! then hand the request to the verb implementation in `rest`.

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::auth::{Access, Identity};
use crate::context::{Api, Req, Shared, Target, json, query_pairs};
use crate::discovery;
use crate::metrics::{RequestLabels, VerbLabels};
use crate::proxy;
use crate::registry;
use crate::status::{ApiError, ApiResult};

pub fn router(api: Shared) -> Router {
    router_with(api, &crate::inflight::Limits::default())
}

/// The router with the in-flight and per-user watch bounds of `limits` in front.
pub fn router_with(api: Shared, limits: &crate::inflight::Limits) -> Router {
    let inflight = crate::inflight::Inflight::new(api.clone(), limits);
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/version", get(version))
        .fallback(dispatch)
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(
            inflight,
            crate::inflight::limit,
        ))
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(api): State<Shared>) -> Response {
    // Ready when the store takes writes (reads are served from memory even when it does not).
    match api.store.ready().await {
        Ok(()) => "ok".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "[-]etcd failed: {}\nreadyz check failed\n",
                crate::status::causes(&e)
            ),
        )
            .into_response(),
    }
}

async fn version() -> Response {
    json(StatusCode::OK, &discovery::version())
}

/// Splits `/api/v1/...` or `/apis/G/V/...` into (group, version, rest).
fn split_path(path: &str) -> Option<(&str, &str, Vec<&str>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v, rest @ ..] => Some(("", v, rest.to_vec())),
        ["apis", g, v, rest @ ..] => Some((g, v, rest.to_vec())),
        _ => None,
    }
}

fn target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let nf = ApiError::no_route;
    let (ns, rest) = match rest {
        // /namespaces/NAME[/status] is the namespace itself; /namespaces/NS/PLURAL... is inside it.
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && matches!(*plural, "status" | "finalize")
                && tail.is_empty()) =>
        {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(nf()),
    };
    let res = registry::lookup(group, version, plural).ok_or_else(nf)?;
    if ns.is_some() && !res.namespaced {
        return Err(nf());
    }
    if let Some(s) = &sub {
        let ok = match s.as_str() {
            "status" => res.sub.status,
            "scale" => res.sub.scale,
            "binding" | "log" | "exec" | "attach" | "ephemeralcontainers" | "portforward" => {
                res.sub.pod
            }
            _ => false,
        };
        if !ok {
            return Err(nf());
        }
    }
    Ok(Target { res, ns, name, sub })
}

/// Kubernetes' verb for an HTTP request on a target.
pub fn verb(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn dispatch(State(api): State<Shared>, req: Request) -> Response {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> = query_pairs(parts.uri.query()).into_iter().collect();

    let Some(id) = api.tokens.authenticate(
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return ApiError::unauthorized().into_response();
    };

    if path == "/metrics" {
        if !crate::auth::allows_path(&id, "get", "/metrics") {
            return ApiError::forbidden(&id.user(), "get", "/metrics", None).into_response();
        }
        // The store's revision is read at scrape time rather than tracked on every write.
        api.metrics
            .revision
            .set(i64::try_from(api.store.revision()).unwrap_or(i64::MAX));
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            api.metrics.encode(),
        )
            .into_response();
    }
    if parts.method == Method::GET
        && let Some(resp) = crate::openapi::serve(&path, parts.uri.query(), &parts.headers)
    {
        return resp;
    }
    if parts.method == Method::GET
        && let Some(doc) = discovery_doc(&api, &path)
    {
        return json(StatusCode::OK, &doc);
    }
    if let Some(target) = proxy::node_proxy_target(&path) {
        // nodes/{name}[:{port}]/proxy/{path}: forwarded to the node, not a stored object.
        let result = match target {
            Ok(np) => proxy::serve_node(&api, &id, &np, &parts).await,
            Err(e) => Err(e),
        };
        let verb = if parts.method == Method::GET {
            "get"
        } else {
            "unknown"
        };
        let resp = result.unwrap_or_else(IntoResponse::into_response);
        record(&api, verb, "nodes/proxy".into(), resp.status(), start);
        return resp;
    }
    if let Some(target) = crate::metrics_api::target(&path) {
        // metrics.k8s.io: figures asked from the kubelets, not stored objects.
        let (verb, resource, resp) = match target {
            Ok(t) => {
                let (verb, resp) = crate::metrics_api::serve(&api, &id, &parts, &t).await;
                (verb, t.resource(), resp)
            }
            Err(e) => ("unknown", "metrics.k8s.io".into(), e.into_response()),
        };
        record(&api, verb, resource, resp.status(), start);
        return resp;
    }
    if let Some(review) = crate::review::route(&path) {
        // Create-only reviews of the caller's own rights and identity: not stored objects.
        let resp = serve_review(&api, &id, review, parts, body).await;
        record(
            &api,
            "create",
            review.resource().into(),
            resp.status(),
            start,
        );
        return resp;
    }
    let Some((group, version, rest)) = split_path(&path) else {
        return ApiError::no_route().into_response();
    };
    let t = match target(group, version, &rest) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = verb(&parts.method, &t, watch);

    let result = if t.sub.as_deref() == Some("portforward") {
        // An upgrade relayed to the node's kubelet (proxy/portforward.rs).
        proxy::serve_portforward(&api, &id, &t, &mut parts).await
    } else if let Some(sub @ ("log" | "exec" | "attach")) = t.sub.as_deref() {
        // Streams from the node's kubelet, not stored objects: no body to read, and an exec
        // upgrade needs the request's own parts.
        proxy::serve_pod(&api, &id, sub, &t, &mut parts).await
    } else {
        let body = match read_body(body, api.max_body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let req = Req {
            method: parts.method,
            query,
            headers: parts.headers,
            body,
            id,
        };
        handle(&api, &req, &t, verb).await
    };
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    let resource = match &t.sub {
        Some(s) => format!("{}/{s}", t.res.plural),
        None => t.res.plural.to_string(),
    };
    record(&api, verb, resource, resp.status(), start);
    resp
}

async fn serve_review(
    api: &Shared,
    id: &Identity,
    review: crate::review::Review,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Response {
    let body = match read_body(body, api.max_body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    crate::review::serve(api, id, review, &parts.method, content_type, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Counts a request and its latency in `/metrics`.
fn record(api: &Api, verb: &'static str, resource: String, code: StatusCode, start: Instant) {
    api.metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.into(),
            resource: resource.clone(),
            code: code.as_u16(),
        })
        .inc();
    api.metrics
        .latency
        .get_or_create(&VerbLabels {
            verb: verb.into(),
            resource,
        })
        .observe(start.elapsed().as_secs_f64());
}

async fn handle(api: &Shared, req: &Req, t: &Target, verb: &'static str) -> ApiResult<Response> {
    // For create the object's name is in the body. Only the node rules need it, so only a
    // node's request pays for this extra decode (in any wire format the body may use).
    let mut name = t.name.clone();
    if verb == "create" && name.is_none() && req.id != Identity::Admin {
        name = crate::object::parse_body(req.content_type(), &req.body)
            .ok()
            .and_then(|v| crate::object::name(&v).map(String::from));
    }
    let access = crate::auth::authorize(
        &req.id,
        verb,
        t.res,
        t.ns.as_deref(),
        name.as_deref(),
        t.sub.as_deref(),
    );
    let bound_to = match access {
        Access::Allowed => None,
        Access::PodBoundTo(node) => Some(node),
        Access::ReferencedBy(node) => {
            crate::auth::graph::check(
                api.store.as_ref(),
                &req.id.user(),
                &node,
                verb,
                t.res,
                t.ns.as_deref(),
                name.as_deref(),
            )
            .await?;
            None
        }
        Access::Denied => {
            return Err(ApiError::forbidden(
                &req.id.user(),
                verb,
                &t.res.group_resource(),
                t.ns.as_deref(),
            ));
        }
    };
    crate::rest::serve(api, req, t, verb, bound_to).await
}

/// Reads a request body up to `limit` bytes. A larger body is read to its end (discarded, up to
/// a hard cap) before the 413, so HTTP/2 clients get the answer instead of a reset stream.
async fn read_body(body: axum::body::Body, limit: usize) -> ApiResult<bytes::Bytes> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        total += chunk.len();
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > limit.saturating_mul(8) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        ));
    }
    Ok(buf.freeze())
}

fn discovery_doc(api: &Api, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(discovery::core_versions(&api.advertise)),
        ["apis"] => Some(discovery::group_list()),
        ["api", v] => discovery::resource_list("", v),
        ["apis", g] => discovery::group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> ApiResult<Target> {
        let (g, v, rest) = split_path(path).unwrap();
        target(g, v, &rest)
    }

    #[test]
    fn paths() {
        let status = t("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (
                status.res.plural,
                status.ns.as_deref(),
                status.name.as_deref(),
                status.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let ns = t("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (ns.res.plural, ns.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let ns_status = t("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(
            (
                ns_status.res.plural,
                ns_status.name.as_deref(),
                ns_status.sub.as_deref()
            ),
            ("namespaces", Some("x"), Some("status"))
        );
        let scale = t("/apis/apps/v1/namespaces/d/deployments/web/scale").unwrap();
        assert_eq!(scale.sub.as_deref(), Some("scale"));
        assert_eq!(t("/api/v1/pods").unwrap().ns, None);
        assert!(t("/api/v1/widgets").is_err());
        assert!(
            t("/api/v1/namespaces/d/nodes/x").is_err(),
            "cluster-scoped under a namespace"
        );
        assert!(t("/api/v1/namespaces/d/services/x/scale").is_err());
        assert!(t("/api/v1/namespaces/d/pods/x/status/y").is_err());
        for sub in ["log", "exec", "attach", "ephemeralcontainers"] {
            let p = t(&format!("/api/v1/namespaces/d/pods/x/{sub}")).unwrap();
            assert_eq!(p.sub.as_deref(), Some(sub));
            assert!(t(&format!("/api/v1/namespaces/d/services/x/{sub}")).is_err());
        }
    }
}
