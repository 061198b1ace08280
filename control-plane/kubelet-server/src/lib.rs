//! The kubelet's HTTPS endpoint, reached only through the API server (mutual TLS): container
//! logs and exec sessions for `pods/log` and `pods/exec`. It finds containers through the
//! Docker label scheme of `kproxy-pod-labels`.
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}` (follow, previous, tailLines,
//!   timestamps, sinceSeconds, sinceTime, limitBytes): the Docker log, streamed.
//! - `GET|POST /exec/{namespace}/{pod}/{container}?command=..`: a WebSocket speaking
//!   Kubernetes' remotecommand protocol (v5/v4 channel.k8s.io).
//! - `GET|POST /portForward/{namespace}/{pod}`: connections to the pod's ports inside its
//!   network namespace, over SPDY/3.1 (kubectl) or the v4 WebSocket channel protocol.
//! - `GET /stats/summary`: CPU and memory of the node and its pods' containers (the Summary
//!   API the API server's Metrics API reads), from a background sampler (`stats`).
//! - `GET|POST /attach/{namespace}/{pod}/{container}?stdin=..`: the same WebSocket, joined
//!   to the running container's own stdio.
//! - anything else: 404.

#![forbid(unsafe_code)]

mod attach;
mod channel;
mod error;
mod exec;
mod logs;
mod lookup;
mod netns;
mod pfspdy;
mod pfws;
mod portforward;
mod query;
mod session;
mod spdy;
mod stats;
mod upgrade;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bollard::Docker;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::{HttpError, ServeError};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This kubelet's node: only containers labelled with it are served.
    pub node_name: String,
    /// Where the serving certificate and key are kept (`kubelet.crt`, `kubelet.key`).
    pub data_dir: PathBuf,
    /// The API server's CA (PEM): client certificates must chain to it.
    pub client_ca_pem: Vec<u8>,
}

/// What the handlers share.
struct Shared {
    node: String,
    docker: Docker,
    /// Never sent on; closes (and wakes every exec session) when `serve` is dropped.
    stop: watch::Receiver<()>,
    /// The node's and its containers' last CPU and memory readings.
    stats: Arc<stats::Sampler>,
}

type AppState = Arc<Shared>;

/// Binds nothing: serves on `listener` until the future is dropped (which also ends every
/// open connection and exec session).
pub async fn serve(
    listener: TcpListener,
    cfg: ServerConfig,
    docker: Docker,
) -> Result<(), ServeError> {
    let tls = kproxy_node_tls::server_config(
        &kproxy_node_tls::Serving {
            dir: &cfg.data_dir,
            component: "kubelet",
            node_name: &cfg.node_name,
        },
        &cfg.client_ca_pem,
    )
    .map_err(ServeError::Tls)?;
    let (_stop, stop_rx) = watch::channel(());
    let sampler = Arc::new(stats::Sampler::new(cfg.node_name.clone(), docker.clone()));
    // Ends with `serve` (when `_stop` is dropped).
    tokio::spawn(sampler.clone().run(stop_rx.clone()));
    let app = router(Arc::new(Shared {
        node: cfg.node_name.clone(),
        docker,
        stop: stop_rx,
        stats: sampler,
    }));
    kproxy_node_tls::serve(
        listener,
        tls,
        app,
        &kproxy_node_tls::Endpoint::node("kubelet server"),
    )
    .await;
    Ok(())
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::handle).fallback(not_found),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec::handle).post(exec::handle).fallback(not_found),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(portforward::handle)
                .post(portforward::handle)
                .fallback(not_found),
        )
        .route("/stats/summary", get(stats::handle).fallback(not_found))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach::handle).post(attach::handle).fallback(not_found),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found() -> Response {
    HttpError::not_found("404 page not found").into_response()
}

async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let target = req.uri().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    let elapsed_ms = started.elapsed().as_millis();
    if status.is_server_error() {
        tracing::warn!(%method, target, status = status.as_u16(), elapsed_ms, "kubelet request");
    } else {
        tracing::info!(%method, target, status = status.as_u16(), elapsed_ms, "kubelet request");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tower::ServiceExt as _;

    /// A Docker client that is never reached (routing and parameter errors come first).
    fn state() -> AppState {
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("client for an unused address");
        let (tx, rx) = watch::channel(());
        std::mem::forget(tx);
        Arc::new(Shared {
            node: "n".into(),
            stats: Arc::new(stats::Sampler::new("n".into(), docker.clone())),
            docker,
            stop: rx,
        })
    }

    async fn call(method: &str, uri: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router(state()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_404() {
        for (method, uri) in [
            ("GET", "/"),
            ("GET", "/healthz"),
            ("GET", "/containerLogs/ns/pod"),
            ("GET", "/exec/ns/pod/c/extra"),
            ("DELETE", "/containerLogs/ns/pod/c"),
            ("PUT", "/exec/ns/pod/c?command=ls"),
        ] {
            assert_eq!(
                call(method, uri).await.0,
                StatusCode::NOT_FOUND,
                "{method} {uri}"
            );
        }
    }

    #[tokio::test]
    async fn bad_parameters_are_400_before_docker_is_asked() {
        let (code, body) = call("GET", "/containerLogs/ns/p/c?tailLines=-3").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("tailLines"), "{body}");
        let (code, body) = call("GET", "/containerLogs/ns/p/c?follow=maybe").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("follow"), "{body}");
        let (code, body) = call("GET", "/exec/ns/p/c?stdout=true").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("missing command"), "{body}");
        // port-forward: an upgrade (SPDY or WebSocket) or nothing.
        let (code, body) = call("POST", "/portForward/ns/p?port=80").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("missing upgrade headers"), "{body}");
        assert_eq!(
            call("DELETE", "/portForward/ns/p").await.0,
            StatusCode::NOT_FOUND
        );
    }
}
