//! `GET|POST /portForward/{namespace}/{pod}`: connections to the pod's ports, made inside
//! its network namespace (see `netns`), over either upgrade a client asks for:
//!
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: portforward.k8s.io`): what
//!   kubectl speaks, directly or through the API server's WebSocket tunnel (`pfspdy`);
//! - a WebSocket with the `v4.channel.k8s.io` channel protocol and `port=` parameters:
//!   what kube-rs speaks (`pfws`).
//!
//! Finding the pod and checking the handshake happen before the upgrade, so the client gets
//! those failures as HTTP errors.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::InspectContainerOptions;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use kproxy_pod_labels as labels;

use crate::AppState;
use crate::error::HttpError;
use crate::netns::PodNetns;
use crate::upgrade::{self, has_token};
use crate::{lookup, pfspdy, pfws, query};

/// The SPDY subprotocol of port-forward.
pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";
const X_STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

pub async fn handle(
    State(st): State<AppState>,
    Path((namespace, pod)): Path<(String, String)>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let websocket = has_token(req.headers(), header::UPGRADE, "websocket");
    let spdy = has_token(req.headers(), header::UPGRADE, "spdy/3.1");
    if !(websocket || spdy) || !has_token(req.headers(), header::CONNECTION, "upgrade") {
        return Err(HttpError::bad_request(
            "unable to upgrade: missing upgrade headers in request \
             (port-forward needs Upgrade: SPDY/3.1 or a WebSocket)",
        ));
    }
    // Parameters and handshake first: they fail the same way whatever the pod.
    let ws = if websocket {
        let ports = ports(&query::pairs(req.uri().query()))?;
        Some((ports, ws_accept(req.headers())?))
    } else {
        spdy_protocol(req.headers())?;
        None
    };
    let target = sandbox(&st.docker, &st.node, &namespace, &pod).await?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| HttpError::bad_request("this connection cannot be upgraded"))?;
    let stop = st.stop.clone();
    tracing::info!(
        namespace,
        pod,
        sandbox = target.sandbox_id,
        websocket,
        "port-forward"
    );
    if let Some((ports, (accept, protocol))) = ws {
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return tracing::info!(error = %e, "port-forward upgrade failed"),
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            pfws::serve(ws, target, ports, stop).await;
        });
        let mut resp = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, "Upgrade"),
                (header::UPGRADE, "websocket"),
                (header::SEC_WEBSOCKET_ACCEPT, accept.as_str()),
            ],
        )
            .into_response();
        if let Some(p) = protocol {
            resp.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        return Ok(resp);
    }
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(u) => pfspdy::serve(TokioIo::new(u), target, stop).await,
            Err(e) => tracing::info!(error = %e, "port-forward upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "SPDY/3.1"),
            (
                header::HeaderName::from_static(X_STREAM_PROTOCOL_VERSION),
                SPDY_PROTOCOL,
            ),
        ],
    )
        .into_response())
}

/// The SPDY handshake's protocol negotiation (Kubernetes' `httpstream.Handshake`).
fn spdy_protocol(headers: &HeaderMap) -> Result<(), HttpError> {
    let offered = upgrade::list(headers, X_STREAM_PROTOCOL_VERSION);
    if offered.is_empty() {
        return Err(HttpError::bad_request(
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    if offered.contains(&SPDY_PROTOCOL) {
        return Ok(());
    }
    Err(HttpError::new(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{SPDY_PROTOCOL}]",
            offered.join(" ")
        ),
    ))
}

/// The WebSocket handshake: the accept key and the subprotocol to answer with (none when
/// the client offered none, as the kubelet allows).
fn ws_accept(headers: &HeaderMap) -> Result<(String, Option<&'static str>), HttpError> {
    let (accept, offered) = upgrade::ws_key(headers)?;
    let protocol = if offered.is_empty() {
        None
    } else if offered.contains(&pfws::PROTOCOL) {
        Some(pfws::PROTOCOL)
    } else {
        return Err(HttpError::bad_request(format!(
            "none of the requested subprotocols [{}] is supported; use {}",
            offered.join(", "),
            pfws::PROTOCOL
        )));
    };
    Ok((accept, protocol))
}

/// The `port` parameters (each may list several, comma-separated), as the kubelet reads
/// them.
pub fn ports(pairs: &[(String, String)]) -> Result<Vec<u16>, HttpError> {
    let mut ports = Vec::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "port") {
        if value.is_empty() {
            return Err(HttpError::bad_request(
                "query parameter \"port\" cannot be empty",
            ));
        }
        for p in value.split(',') {
            let port: u16 = p.parse().map_err(|_| {
                HttpError::bad_request(format!("unable to parse {value:?} as a port"))
            })?;
            if port == 0 {
                return Err(HttpError::bad_request(format!(
                    "port {value:?} must be > 0"
                )));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(HttpError::bad_request(
            "query parameter \"port\" is required",
        ));
    }
    Ok(ports)
}

/// The pod's running sandbox on this node and the pid that holds its network namespace.
async fn sandbox(
    docker: &Docker,
    node: &str,
    namespace: &str,
    pod: &str,
) -> Result<PodNetns, HttpError> {
    let list =
        lookup::pod_containers(docker, node, namespace, pod, labels::KIND_SANDBOX, &[]).await?;
    if list.is_empty() {
        // The kubelet's words when it has no such pod.
        return Err(HttpError::not_found("pod does not exist"));
    }
    // A recreated pod may leave an older sandbox behind: the newest running one is the pod.
    let id = list
        .iter()
        .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
        .max_by_key(|c| c.created)
        .and_then(|c| c.id.clone())
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "pod {pod:?} has no running sandbox: is it running?"
            ))
        })?;
    let info = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| HttpError::docker("inspecting the pod sandbox", &e))?;
    let pid = info
        .state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .ok_or_else(|| HttpError::bad_request(format!("pod sandbox {id} is not running")))?;
    Ok(PodNetns {
        sandbox_id: id,
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query::pairs(Some(q))
    }

    #[test]
    fn reads_ports_like_the_kubelet() {
        assert_eq!(
            ports(&pairs("port=80&port=8080,9090")).unwrap(),
            [80, 8080, 9090]
        );
        assert_eq!(
            ports(&pairs("x=1")).unwrap_err().message,
            "query parameter \"port\" is required"
        );
        assert!(ports(&pairs("port=")).is_err());
        assert!(ports(&pairs("port=0")).unwrap_err().message.contains("> 0"));
        assert!(ports(&pairs("port=70000")).is_err());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn negotiates_the_spdy_protocol() {
        assert!(spdy_protocol(&headers(&[(X_STREAM_PROTOCOL_VERSION, SPDY_PROTOCOL)])).is_ok());
        let e = spdy_protocol(&headers(&[(
            X_STREAM_PROTOCOL_VERSION,
            "v4.channel.k8s.io",
        )]))
        .unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("unable to negotiate protocol"),
            "{}",
            e.message
        );
        assert_eq!(
            spdy_protocol(&HeaderMap::new()).unwrap_err().code,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn websocket_subprotocols() {
        let base = [
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let (accept, p) = ws_accept(&headers(&base)).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(p, None);
        let mut h = headers(&base);
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert_eq!(ws_accept(&h).unwrap().1, Some("v4.channel.k8s.io"));
        let mut h = headers(&base);
        h.append("sec-websocket-protocol", HeaderValue::from_static("v9"));
        assert!(ws_accept(&h).is_err());
    }
}
