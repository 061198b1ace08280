//! `/healthz` and `/readyz` of the controller manager and the scheduler (plain HTTP on
//! loopback by default; Kubernetes serves them on 10257 and 10259): `/healthz` answers while
//! the process serves, `/readyz` once its caches are synced. `cargo xtask run` waits for
//! them before it calls the cluster ready.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};

use crate::error::{Error, Result};

/// Whether the component's caches are synced; set once by the component.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The router, apart from the listener (tested without sockets).
fn router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.is_ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
                    }
                }
            }),
        )
}

/// Binds `addr` (an error names it, e.g. when another process holds the port) and serves in
/// a background task; the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, ready: Readiness) -> Result<SocketAddr> {
    let listen = |source| Error::HealthListen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router(ready)).await {
            tracing::error!(%err, "health endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn status(r: &Router, path: &str) -> StatusCode {
        r.clone()
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn ready_only_once_set() {
        let ready = Readiness::default();
        let r = router(ready.clone());
        assert_eq!(status(&r, "/healthz").await, StatusCode::OK);
        assert_eq!(status(&r, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        ready.set_ready();
        assert_eq!(status(&r, "/readyz").await, StatusCode::OK);
        assert_eq!(status(&r, "/nope").await, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_taken_port_is_named() {
        let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap();
        let err = serve(addr, Readiness::default()).await.unwrap_err();
        assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
    }
}
