//! `pods/log`, `pods/exec` and `pods/attach`, forwarded to the kubelet of the pod's node.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::response::Builder as ResponseBuilder;
use axum::http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use serde_json::Value;

use super::{admin_only, forward, kubelet_endpoint, read, unavailable};
use crate::auth::Identity;
use crate::context::{Api, Target, query_pairs};
use crate::kubelet::Endpoint;
use crate::object::{self, str_at};
use crate::status::{ApiError, ApiResult};

static UPGRADE: HeaderValue = HeaderValue::from_static("Upgrade");

/// How much of a kubelet's error body becomes the Status message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Query parameters the kubelet understands, per subresource; everything else (container,
/// which is in the path) stays here.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];
const EXEC_PARAMS: &[&str] = &["command", "stdin", "stdout", "stderr", "tty"];
/// PodAttachOptions: the streams, no command.
const ATTACH_PARAMS: &[&str] = &["stdin", "stdout", "stderr", "tty"];

/// The container a request means, in Kubernetes' words when it cannot tell.
pub fn container_for(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let pod_name = object::name(pod).unwrap_or_default();
    let names = |field: &str| -> Vec<&str> {
        pod["spec"][field]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    // Ephemeral containers are valid when named (kubectl debug attaches to them), never the
    // default.
    let ephemeral = names("ephemeralContainers");
    match requested {
        Some(c) if containers.contains(&c) || init.contains(&c) || ephemeral.contains(&c) => {
            Ok(c.to_string())
        }
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => match containers.as_slice() {
            [only] => Ok((*only).to_string()),
            [] => Err(ApiError::bad_request(format!(
                "pod {pod_name} has no containers"
            ))),
            several => {
                let mut msg = format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    several.join(" ")
                );
                if !init.is_empty() {
                    use std::fmt::Write as _;
                    let _ = write!(msg, " or one of the init containers: [{}]", init.join(" "));
                }
                Err(ApiError::bad_request(msg))
            }
        },
    }
}

/// Only the admin reads logs and runs commands; nodes (which may read pods) may not.
pub fn authorize(id: &Identity, sub: &str, ns: Option<&str>) -> ApiResult<()> {
    // Kubernetes asks for `create` on pods/exec and pods/attach whatever the HTTP method.
    let verb = if matches!(sub, "exec" | "attach") {
        "create"
    } else {
        "get"
    };
    admin_only(id, verb, &format!("pods/{sub}"), ns)
}

/// The kubelet endpoint of the node pod `name` (object `pod`) is assigned to.
pub async fn pod_kubelet(api: &Api, pod: &Value, name: &str) -> ApiResult<Endpoint> {
    let node_name = str_at(pod, &["spec", "nodeName"])
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let node = read(api, "Node", None, node_name).await?.ok_or_else(|| {
        unavailable(format!(
            "node {node_name:?} of pod {name} not found: cannot reach its kubelet"
        ))
    })?;
    kubelet_endpoint(&node)
}

/// A kubelet's error answer as a Status with the same code and its text as the message
/// (as Kubernetes' log streamer does).
pub fn kubelet_error(code: StatusCode, body: &str) -> ApiError {
    let message = match body.trim() {
        "" => format!("the kubelet answered {code}"),
        text => text.to_string(),
    };
    match code {
        StatusCode::BAD_REQUEST => ApiError::bad_request(message),
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::internal(message),
        StatusCode::NOT_FOUND => ApiError::new(code, "NotFound", message),
        StatusCode::FORBIDDEN => ApiError::new(code, "Forbidden", message),
        StatusCode::UNAUTHORIZED => ApiError::new(code, "Unauthorized", message),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::new(code, "ServiceUnavailable", message),
        _ => ApiError::new(code, "", message),
    }
}

/// Keeps the parameters in `allowed` (in order, repeats included) as a query string.
fn forward_query(pairs: &[(String, String)], allowed: &[&str]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| allowed.contains(&k.as_str())) {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Serves `pods/log` (GET) and `pods/exec` (GET or POST, an upgrade) for `t`.
pub async fn serve(
    api: &Api,
    t: &Target,
    parts: &mut Parts,
) -> ApiResult<axum::response::Response> {
    let (Some(ns), Some(name), Some(sub)) = (t.ns.as_deref(), t.name.as_deref(), t.sub.as_deref())
    else {
        return Err(ApiError::no_route());
    };
    let allowed = match (sub, &parts.method) {
        ("log", &Method::GET) => LOG_PARAMS,
        ("exec", &Method::GET | &Method::POST) => EXEC_PARAMS,
        ("attach", &Method::GET | &Method::POST) => ATTACH_PARAMS,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let pairs = query_pairs(parts.uri.query());
    let pod = read(api, "Pod", Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let requested = pairs
        .iter()
        .find(|(k, v)| k == "container" && !v.is_empty())
        .map(|(_, v)| v.as_str());
    let container = container_for(&pod, requested)?;
    let ep = pod_kubelet(api, &pod, name).await?;
    let base = match sub {
        "log" => "containerLogs",
        other => other,
    };
    let mut target = format!("/{base}/{ns}/{name}/{container}");
    let query = forward_query(&pairs, allowed);
    if !query.is_empty() {
        target = format!("{target}?{query}");
    }
    let mut headers = Vec::new();
    if sub != "log" {
        // The upgrade handshake is end to end between client and kubelet: its headers
        // travel unchanged (the client's credentials do not).
        if parts.headers.contains_key(header::UPGRADE) {
            headers.push((header::CONNECTION, &UPGRADE));
        }
        for h in [
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            for v in parts.headers.get_all(&h) {
                headers.push((h.clone(), v));
            }
        }
    }
    let resp = forward(api, &ep, parts.method.clone(), &target, &headers).await?;
    match (sub, resp.status()) {
        ("log", StatusCode::OK) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::new(resp.into_body()))
            .map_err(ApiError::internal)?),
        ("exec" | "attach", StatusCode::SWITCHING_PROTOCOLS) => relay_upgrade(parts, resp),
        (_, code) => {
            let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            Err(kubelet_error(code, &String::from_utf8_lossy(&body)))
        }
    }
}

/// The client's 101 answer, with the upgrade headers of the kubelet's.
pub fn upgrade_answer(kubelet_resp: &Response<hyper::body::Incoming>) -> ResponseBuilder {
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderName::from_static("x-stream-protocol-version"),
    ] {
        for v in kubelet_resp.headers().get_all(&h) {
            answer = answer.header(&h, v);
        }
    }
    answer
}

/// Answers the client's upgrade with the kubelet's 101 and joins the two connections.
fn relay_upgrade(
    parts: &mut Parts,
    mut kubelet_resp: Response<hyper::body::Incoming>,
) -> ApiResult<axum::response::Response> {
    let client = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
        ApiError::bad_request("exec needs an HTTP/1.1 connection that can be upgraded")
    })?;
    let kubelet = hyper::upgrade::on(&mut kubelet_resp);
    let answer = upgrade_answer(&kubelet_resp);
    super::relay::spawn("exec", kubelet, client);
    answer
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the upgrade answer: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: &Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn picks_the_container() {
        let one = pod(&json!({"containers": [{"name": "a"}]}));
        assert_eq!(container_for(&one, None).unwrap(), "a");
        assert_eq!(container_for(&one, Some("a")).unwrap(), "a");
        let e = container_for(&one, Some("zz")).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "container zz is not valid for pod p");

        let two = pod(&json!({"containers": [{"name": "a"}, {"name": "b"}]}));
        let e = container_for(&two, None).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let with_init = pod(&json!({
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }));
        assert_eq!(
            container_for(&with_init, None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [setup]"
        );
        assert_eq!(container_for(&with_init, Some("setup")).unwrap(), "setup");
        assert!(container_for(&pod(&json!({})), None).is_err());
    }

    #[test]
    fn ephemeral_containers_are_valid_when_named() {
        let p = pod(&json!({
            "containers": [{"name": "a"}],
            "ephemeralContainers": [{"name": "debugger-x"}],
        }));
        assert_eq!(container_for(&p, Some("debugger-x")).unwrap(), "debugger-x");
        assert_eq!(container_for(&p, None).unwrap(), "a", "never the default");
        let node = Identity::Node("n1".into());
        let e = authorize(&node, "attach", Some("d")).unwrap_err();
        assert!(
            e.message.contains("cannot create resource \"pods/attach\""),
            "{}",
            e.message
        );
        let pairs: Vec<(String, String)> =
            [("container", "c"), ("stdin", "true"), ("command", "x")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(forward_query(&pairs, ATTACH_PARAMS), "stdin=true");
    }

    #[test]
    fn only_the_admin_may_read_logs_or_exec() {
        assert!(authorize(&Identity::Admin, "exec", Some("d")).is_ok());
        let node = Identity::Node("n1".into());
        let e = authorize(&node, "log", Some("d")).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("cannot get resource \"pods/log\""),
            "{}",
            e.message
        );
        let e = authorize(&node, "exec", Some("d")).unwrap_err();
        assert!(
            e.message.contains("cannot create resource \"pods/exec\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn kubelet_errors_keep_their_code() {
        let e = kubelet_error(
            StatusCode::BAD_REQUEST,
            "previous terminated container \"c\" in pod \"p\" not found\n",
        );
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "previous terminated container \"c\" in pod \"p\" not found"
            )
        );
        assert_eq!(kubelet_error(StatusCode::NOT_FOUND, "x").reason, "NotFound");
        let e = kubelet_error(StatusCode::INTERNAL_SERVER_ERROR, "boom");
        assert_eq!(e.message, "Internal error occurred: boom");
        let e = kubelet_error(StatusCode::BAD_GATEWAY, "");
        assert_eq!(e.code, StatusCode::BAD_GATEWAY);
        assert_eq!(e.message, "the kubelet answered 502 Bad Gateway");
    }

    #[test]
    fn forwards_only_the_kubelets_parameters() {
        let pairs: Vec<(String, String)> = [
            ("container", "c"),
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a&b"),
            ("stdin", "true"),
            ("pretty", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            forward_query(&pairs, EXEC_PARAMS),
            "command=sh&command=-c&command=echo+a%26b&stdin=true"
        );
        assert_eq!(forward_query(&pairs, LOG_PARAMS), "");
    }
}
