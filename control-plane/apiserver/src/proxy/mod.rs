//! `pods/log` and `pods/exec`: the API server checks the pod and container, finds the kubelet
//! of the pod's node and forwards the request there over mutual TLS (our client certificate,
//! the kubelet's `/containerLogs/..` and `/exec/..` endpoints). A log streams back unchanged;
//! an exec's WebSocket upgrade is relayed and the connection then copied byte for byte both
//! ways, so the remotecommand frames pass through untouched.
//!
//! `nodes/{name}[:{port}]/proxy/{path}`: a GET forwarded the same way to the node's
//! InternalIP and the given port (default: the kubelet's), e.g. kproxy's node endpoint for
//! `kctl lb`; the answer comes back with its status and content type.

mod node;
mod pod;
mod portforward;
mod relay;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::Value;

pub use self::node::{NodeProxyTarget, node_proxy_target};
use crate::auth::Identity;
use crate::context::{Api, Target};
use crate::kubelet::Endpoint;
use crate::object;
use crate::status::{ApiError, ApiResult};

/// `pods/log` or `pods/exec` (`sub`) of `t`, for `id`: forwarded to the kubelet of the pod's
/// node.
pub async fn serve_pod(
    api: &Api,
    id: &Identity,
    sub: &str,
    t: &Target,
    parts: &mut Parts,
) -> ApiResult<axum::response::Response> {
    pod::authorize(id, sub, t.ns.as_deref())?;
    pod::serve(api, t, parts).await
}

/// `pods/portforward` of `t` for `id` (the admin only, `create` as Kubernetes asks
/// whatever the method): forwarded to the kubelet of the pod's node.
pub async fn serve_portforward(
    api: &Api,
    id: &Identity,
    t: &Target,
    parts: &mut Parts,
) -> ApiResult<axum::response::Response> {
    admin_only(id, "create", "pods/portforward", t.ns.as_deref())?;
    portforward::serve(api, t, parts).await
}

/// `nodes/{name}[:{port}]/proxy/{path}` for `id`: forwarded to the node.
pub async fn serve_node(
    api: &Api,
    id: &Identity,
    t: &NodeProxyTarget,
    parts: &Parts,
) -> ApiResult<axum::response::Response> {
    node::authorize(id, &parts.method)?;
    node::serve(api, t, parts).await
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

/// The address a Node is reached at: its InternalIP, else its Hostname address.
pub fn node_host(node: &Value) -> ApiResult<String> {
    let name = object::name(node).unwrap_or_default();
    let addresses = node["status"]["addresses"].as_array();
    let address_of = |kind: &str| {
        addresses?
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    address_of("InternalIP")
        .or_else(|| address_of("Hostname"))
        .map(str::to_string)
        .ok_or_else(|| {
            unavailable(format!(
                "node {name:?} reports no InternalIP or Hostname address: cannot reach it"
            ))
        })
}

/// The kubelet endpoint a Node reports: [`node_host`] and
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub fn kubelet_endpoint(node: &Value) -> ApiResult<Endpoint> {
    let name = object::name(node).unwrap_or_default().to_string();
    let host = node_host(node)?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            unavailable(format!(
                "node {name:?} reports no kubelet port (status.daemonEndpoints.kubeletEndpoint.Port): cannot reach its kubelet"
            ))
        })?;
    Ok(Endpoint {
        node: name,
        host,
        port,
        what: "the kubelet",
    })
}

/// Only the admin reaches kubelets and node endpoints through the API server: a node (which
/// may read pods and Nodes) must not read other nodes' logs, run commands there or reach
/// their endpoints.
fn admin_only(id: &Identity, verb: &str, resource: &str, ns: Option<&str>) -> ApiResult<()> {
    if *id == Identity::Admin {
        return Ok(());
    }
    Err(ApiError::forbidden(&id.user(), verb, resource, ns))
}

async fn read(api: &Api, kind: &str, ns: Option<&str>, name: &str) -> ApiResult<Option<Value>> {
    let res = crate::registry::by_kind(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    match api.store.get(&res.key(ns, name)).await? {
        Some(kv) => Ok(Some(object::from_kv(&kv)?)),
        None => Ok(None),
    }
}

/// Sends `method target` with `headers` (never the client's credentials) to `ep` over
/// mutual TLS, and returns the answer, whatever its status.
async fn forward(
    api: &Api,
    ep: &Endpoint,
    method: Method,
    target: &str,
    headers: &[(HeaderName, &HeaderValue)],
) -> ApiResult<Response<hyper::body::Incoming>> {
    let mut sender = api.kubelet.connect(ep).await?;
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, ep.authority());
    for (h, v) in headers {
        req = req.header(h, *v);
    }
    let req = req.body(Body::empty()).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid path {target:?} for {} of node {:?}: {e}",
            ep.what, ep.node
        ))
    })?;
    let resp = sender.send_request(req).await.map_err(|e| {
        unavailable(format!(
            "error talking to {} of node {:?} at {}: {e}",
            ep.what,
            ep.node,
            ep.authority()
        ))
    })?;
    tracing::debug!(
        node = ep.node,
        port = ep.port,
        target,
        status = resp.status().as_u16(),
        "forwarded to the node"
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_the_kubelet_endpoint() {
        let node = |status: Value| json!({"metadata": {"name": "n1"}, "status": status});
        let ep = kubelet_endpoint(&node(json!({
            "addresses": [
                {"type": "Hostname", "address": "n1.example"},
                {"type": "InternalIP", "address": "10.0.0.7"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })))
        .unwrap();
        assert_eq!(ep.authority(), "10.0.0.7:10250");
        assert_eq!(ep.node, "n1");
        let by_name = kubelet_endpoint(&node(json!({
            "addresses": [{"type": "Hostname", "address": "n1.example"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}},
        })))
        .unwrap();
        assert_eq!(by_name.authority(), "n1.example:1");
        let v6 = kubelet_endpoint(&node(json!({
            "addresses": [{"type": "InternalIP", "address": "fd00::7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })))
        .unwrap();
        assert_eq!(v6.authority(), "[fd00::7]:10250");

        let no_address = kubelet_endpoint(&node(json!({
            "addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })))
        .unwrap_err();
        assert_eq!(no_address.code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            no_address.message.contains("\"n1\""),
            "{}",
            no_address.message
        );
        for bad_port in [
            json!({}),
            json!({"kubeletEndpoint": {"Port": 0}}),
            json!({"kubeletEndpoint": {"Port": 70000}}),
        ] {
            let e = kubelet_endpoint(&node(json!({
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                "daemonEndpoints": bad_port,
            })))
            .unwrap_err();
            assert!(e.message.contains("kubelet port"), "{}", e.message);
        }
    }
}
