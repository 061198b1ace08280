//! `nodes/{name}[:{port}]/proxy/{path}`: a GET forwarded to the node.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, Response, header};

use super::{admin_only, forward, kubelet_endpoint, node_host, read};
use crate::auth::Identity;
use crate::context::Api;
use crate::kubelet::Endpoint;
use crate::status::{ApiError, ApiResult};

/// A `nodes/{name}[:{port}]/proxy[/{path}]` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProxyTarget {
    pub node: String,
    /// `None`: the kubelet's port (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub port: Option<u16>,
    /// The path on the node, from '/', as the client encoded it.
    pub path: String,
}

/// Recognises `/api/v1/nodes/{name}/proxy[/{path}]` (the raw, still percent-encoded
/// path); `None` for any other path, an error for a malformed `{name}`.
pub fn node_proxy_target(path: &str) -> Option<ApiResult<NodeProxyTarget>> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (name, rest) = rest.split_once('/')?;
    let tail = if rest == "proxy" {
        ""
    } else {
        rest.strip_prefix("proxy/")?
    };
    Some(
        parse_node_proxy_name(name).map(|(node, port)| NodeProxyTarget {
            node,
            port,
            path: format!("/{tail}"),
        }),
    )
}

/// Kubernetes' `[scheme:]name[:port]` (only https: node endpoints are TLS).
pub fn parse_node_proxy_name(raw: &str) -> ApiResult<(String, Option<u16>)> {
    // Some clients encode the separator.
    let s = raw.replace("%3A", ":").replace("%3a", ":");
    let parts: Vec<&str> = s.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid node proxy target {s:?}: expected NAME, NAME:PORT or https:NAME:PORT"
            )));
        }
    };
    if !matches!(scheme, "" | "https") {
        return Err(ApiError::bad_request(format!(
            "invalid node proxy target {s:?}: node endpoints are reached over https only"
        )));
    }
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid node proxy target {s:?}: no node name"
        )));
    }
    let port = match port {
        "" => None,
        p => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid node proxy target {s:?}: port {p:?} is not a number from 1 to 65535"
            ))
        })?),
    };
    Ok((name.to_string(), port))
}

/// Only the admin reaches node endpoints: a node (which may read Nodes) must not reach
/// other nodes through the API server.
pub fn authorize(id: &Identity, method: &Method) -> ApiResult<()> {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    admin_only(id, verb, "nodes/proxy", None)
}

/// Serves `nodes/{name}[:{port}]/proxy/{path}`: a GET forwarded to the node over mutual TLS
/// (our kubelet-client certificate), its answer streamed back with its status.
pub async fn serve(
    api: &Api,
    t: &NodeProxyTarget,
    parts: &Parts,
) -> ApiResult<axum::response::Response> {
    if parts.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let node = read(api, "Node", None, &t.node)
        .await?
        .ok_or_else(|| ApiError::not_found("nodes", &t.node))?;
    let ep = match t.port {
        Some(port) => Endpoint {
            node: t.node.clone(),
            host: node_host(&node)?,
            port,
            what: "the endpoint",
        },
        None => kubelet_endpoint(&node)?,
    };
    let target = match parts.uri.query() {
        Some(q) => format!("{}?{q}", t.path),
        None => t.path.clone(),
    };
    // What the client accepts.
    let accept: Vec<_> = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .map(|v| (header::ACCEPT, v))
        .collect();
    let resp = forward(api, &ep, Method::GET, &target, &accept).await?;
    let mut answer = Response::builder().status(resp.status());
    for h in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        for v in resp.headers().get_all(&h) {
            answer = answer.header(&h, v);
        }
    }
    answer
        .body(Body::new(resp.into_body()))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn node_proxy_paths_and_names() {
        let t = node_proxy_target("/api/v1/nodes/n1:10262/proxy/lb")
            .unwrap()
            .unwrap();
        assert_eq!(
            t,
            NodeProxyTarget {
                node: "n1".into(),
                port: Some(10262),
                path: "/lb".into()
            }
        );
        let t = node_proxy_target("/api/v1/nodes/n1/proxy")
            .unwrap()
            .unwrap();
        assert_eq!((t.port, t.path.as_str()), (None, "/"));
        let t = node_proxy_target("/api/v1/nodes/https:n.example:1/proxy/a/b%20c/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.node.as_str(), t.port, t.path.as_str()),
            ("n.example", Some(1), "/a/b%20c/")
        );
        let t = node_proxy_target("/api/v1/nodes/n1%3A99/proxy/x")
            .unwrap()
            .unwrap();
        assert_eq!((t.node.as_str(), t.port), ("n1", Some(99)));
        // Other node paths are not the proxy.
        for other in [
            "/api/v1/nodes/n1",
            "/api/v1/nodes/n1/status",
            "/api/v1/nodes/n1/proxyx",
            "/api/v1/nodes",
            "/api/v1/namespaces/d/nodes/n1/proxy",
        ] {
            assert!(node_proxy_target(other).is_none(), "{other}");
        }
        for bad in [
            "n1:0",
            "n1:http",
            "n1:70000",
            "http:n1:80",
            ":80",
            "a:b:c:d",
        ] {
            let e = parse_node_proxy_name(bad).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn only_the_admin_may_proxy_to_nodes() {
        assert!(authorize(&Identity::Admin, &Method::GET).is_ok());
        let e = authorize(&Identity::Node("n1".into()), &Method::GET).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("cannot get resource \"nodes/proxy\""),
            "{}",
            e.message
        );
    }
}
