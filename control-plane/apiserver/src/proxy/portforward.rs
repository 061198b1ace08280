//! `pods/portforward` (GET or POST, an upgrade), forwarded to the kubelet of the pod's node
//! (`/portForward/{namespace}/{pod}`), in whichever form the client speaks:
//!
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, kubectl's fallback): the upgrade is relayed and the
//!   connection copied byte for byte.
//! - a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io` (kubectl 1.33's first try):
//!   as kube-apiserver's tunneling handler does, we upgrade to SPDY at the kubelet, then
//!   accept the WebSocket and carry the SPDY byte stream in binary messages both ways.
//! - any other WebSocket (`v4.channel.k8s.io`, kube-rs): relayed to the kubelet's WebSocket
//!   endpoint with the `ports` turned into the kubelet's `port` parameters, like exec.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use bytes::BytesMut;
use futures::{SinkExt as _, StreamExt as _};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::pod::{kubelet_error, pod_kubelet, upgrade_answer};
use super::{forward, read};
use crate::context::{Api, Target, query_pairs};
use crate::status::{ApiError, ApiResult};

/// The prefix of a WebSocket subprotocol that tunnels SPDY (client-go's
/// `WebsocketsSPDYTunnelingPrefix`).
pub const TUNNEL_PREFIX: &str = "SPDY/3.1+";
const X_STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// Copy buffers per direction: bulk transfers go in few, large reads and writes.
const CHUNK: usize = 256 * 1024;
/// How much of a kubelet's error body becomes the Status message.
const MAX_ERROR_BODY: usize = 64 * 1024;

static UPGRADE: HeaderValue = HeaderValue::from_static("Upgrade");
static SPDY: HeaderValue = HeaderValue::from_static("SPDY/3.1");

/// How the client asked to upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// SPDY/3.1 with these `X-Stream-Protocol-Version`s.
    Spdy,
    /// SPDY inside a WebSocket: the SPDY protocols named by the tunneling subprotocols.
    Tunnel(Vec<String>),
    /// Kubernetes' WebSocket channel protocol.
    Channels,
}

fn tokens<'a>(parts: &'a Parts, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn mode(parts: &Parts) -> ApiResult<Mode> {
    let upgrade: Vec<&str> = tokens(parts, &header::UPGRADE).collect();
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let tunneled: Vec<String> = tokens(parts, &header::SEC_WEBSOCKET_PROTOCOL)
            .filter_map(|p| p.strip_prefix(TUNNEL_PREFIX))
            .filter(|p| p.ends_with(".k8s.io"))
            .map(str::to_string)
            .collect();
        return Ok(if tunneled.is_empty() {
            Mode::Channels
        } else {
            Mode::Tunnel(tunneled)
        });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return Ok(Mode::Spdy);
    }
    Err(ApiError::bad_request(
        "Upgrade request required: port-forward needs an upgrade to SPDY/3.1 or a WebSocket",
    ))
}

/// PodPortForwardOptions' `ports` (repeated or comma-separated) as the kubelet's `port`
/// parameters.
fn kubelet_query(pairs: &[(String, String)]) -> ApiResult<String> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (_, v) in pairs.iter().filter(|(k, _)| k == "ports") {
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => {
                    s.append_pair("port", p);
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid port {p:?}: must be a number between 1 and 65535"
                    )));
                }
            }
        }
    }
    Ok(s.finish())
}

/// Serves `pods/portforward` of `t`.
pub async fn serve(
    api: &Api,
    t: &Target,
    parts: &mut Parts,
) -> ApiResult<axum::response::Response> {
    let (Some(ns), Some(name)) = (t.ns.as_deref(), t.name.as_deref()) else {
        return Err(ApiError::no_route());
    };
    if !matches!(parts.method, Method::GET | Method::POST) {
        return Err(ApiError::method_not_allowed());
    }
    let mode = mode(parts)?;
    let query = kubelet_query(&query_pairs(parts.uri.query()))?;
    let pod = read(api, "Pod", Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let ep = pod_kubelet(api, &pod, name).await?;
    let mut target = format!("/portForward/{ns}/{name}");
    if !query.is_empty() {
        target = format!("{target}?{query}");
    }
    let spdy_versions: Vec<HeaderValue>;
    let mut headers: Vec<(HeaderName, &HeaderValue)> = vec![(header::CONNECTION, &UPGRADE)];
    let x_stream = HeaderName::from_static(X_STREAM_PROTOCOL_VERSION);
    match &mode {
        Mode::Tunnel(protocols) => {
            headers.push((header::UPGRADE, &SPDY));
            spdy_versions = protocols
                .iter()
                .filter_map(|p| HeaderValue::from_str(p).ok())
                .collect();
            for v in &spdy_versions {
                headers.push((x_stream.clone(), v));
            }
        }
        Mode::Spdy | Mode::Channels => {
            // The handshake is end to end between client and kubelet: its headers travel
            // unchanged (the client's credentials do not).
            for h in [
                header::UPGRADE,
                x_stream.clone(),
                header::SEC_WEBSOCKET_KEY,
                header::SEC_WEBSOCKET_VERSION,
                header::SEC_WEBSOCKET_PROTOCOL,
            ] {
                for v in parts.headers.get_all(&h) {
                    headers.push((h.clone(), v));
                }
            }
        }
    }
    // The kubelet's SPDY upgrade is a POST, whatever the client's method (as Kubernetes'
    // tunneling handler makes it).
    let method = if matches!(mode, Mode::Tunnel(_)) {
        Method::POST
    } else {
        parts.method.clone()
    };
    let resp = forward(api, &ep, method, &target, &headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status();
        let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        return Err(kubelet_error(code, &String::from_utf8_lossy(&body)));
    }
    let client = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
        ApiError::bad_request("port-forward needs an HTTP/1.1 connection that can be upgraded")
    })?;
    match mode {
        Mode::Tunnel(_) => tunnel(parts, resp, client),
        Mode::Spdy | Mode::Channels => Ok(relay(resp, client)),
    }
}

/// Answers the client with the kubelet's 101 and copies both connections byte for byte.
fn relay(
    mut kubelet_resp: Response<hyper::body::Incoming>,
    client: OnUpgrade,
) -> axum::response::Response {
    let kubelet = hyper::upgrade::on(&mut kubelet_resp);
    let answer = upgrade_answer(&kubelet_resp);
    super::relay::spawn("port-forward", kubelet, client);
    answer.body(Body::empty()).unwrap_or_default()
}

/// Accepts the client's WebSocket (the kubelet has upgraded to SPDY) and carries the SPDY
/// bytes in binary messages.
fn tunnel(
    parts: &Parts,
    mut kubelet_resp: Response<hyper::body::Incoming>,
    client: OnUpgrade,
) -> ApiResult<axum::response::Response> {
    let key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ApiError::bad_request(
            "unsupported WebSocket version (Sec-WebSocket-Version must be 13)",
        ));
    }
    // The kubelet's chosen SPDY protocol, as the tunneled WebSocket subprotocol.
    let chosen = kubelet_resp
        .headers()
        .get(X_STREAM_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("{TUNNEL_PREFIX}{}", v.trim()));
    let kubelet = hyper::upgrade::on(&mut kubelet_resp);
    let mut answer = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(p) = &chosen {
        answer = answer.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    tokio::spawn(async move {
        let (kubelet, client) = match tokio::try_join!(kubelet, client) {
            Ok(both) => both,
            Err(e) => return tracing::info!(error = %e, "port-forward upgrade failed"),
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        pump(ws, TokioIo::new(kubelet)).await;
    });
    answer
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the upgrade answer: {e}")))
}

/// WebSocket binary messages ↔ the kubelet's SPDY byte stream, until both sides are done.
async fn pump(ws: WebSocketStream<TokioIo<Upgraded>>, kubelet: TokioIo<Upgraded>) {
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut from_kubelet, mut to_kubelet) = tokio::io::split(kubelet);
    let up = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if to_kubelet.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = to_kubelet.shutdown().await;
    };
    let down = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match from_kubelet.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if ws_tx
                        .send(Message::binary(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri("/api/v1/namespaces/d/pods/p/portforward");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn tells_the_upgrades_apart() {
        assert_eq!(
            mode(&parts(&[
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
            ]))
            .unwrap(),
            Mode::Tunnel(vec!["portforward.k8s.io".into()])
        );
        assert_eq!(
            mode(&parts(&[
                ("upgrade", "websocket"),
                (
                    "sec-websocket-protocol",
                    "v5.channel.k8s.io, v4.channel.k8s.io"
                ),
            ]))
            .unwrap(),
            Mode::Channels
        );
        assert_eq!(
            mode(&parts(&[("upgrade", "SPDY/3.1")])).unwrap(),
            Mode::Spdy
        );
        assert_eq!(mode(&parts(&[])).unwrap_err().code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ports_become_kubelet_parameters() {
        let q = |s: &str| kubelet_query(&query_pairs(Some(s)));
        assert_eq!(q("ports=80%2C1234").unwrap(), "port=80&port=1234");
        assert_eq!(q("ports=80&ports=81").unwrap(), "port=80&port=81");
        assert_eq!(q("").unwrap(), "");
        assert!(q("ports=0").is_err());
        assert!(q("ports=http").is_err());
    }
}
