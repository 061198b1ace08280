//! The service health server: for each LoadBalancer Service with `externalTrafficPolicy:
//! Local`, an HTTP listener on its `healthCheckNodePort` on every node address, answering
//! any request as kube-proxy does: 200 while the node has a ready local endpoint, 503
//! otherwise, so the cloud load balancer sends traffic only to nodes that can serve it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::task::JoinHandle;

use crate::model::HealthCheck;

type Checks = Arc<RwLock<BTreeMap<u16, HealthCheck>>>;

/// The listeners and what they answer. Dropping it stops them.
#[derive(Default)]
pub struct HealthServer {
    checks: Checks,
    listeners: BTreeMap<SocketAddr, JoinHandle<()>>,
}

impl HealthServer {
    /// Answers `checks` from now on, listening on each of their ports on each of
    /// `node_ips`; listeners no longer wanted are closed. An address that cannot be bound
    /// (not on this host, port taken) is logged and retried at the next update. Must run
    /// inside a tokio runtime.
    pub fn update(&mut self, checks: &BTreeMap<u16, HealthCheck>, node_ips: &[Ipv4Addr]) {
        if let Ok(mut c) = self.checks.write() {
            c.clone_from(checks);
        }
        let want: BTreeSet<SocketAddr> = checks
            .keys()
            .flat_map(|port| node_ips.iter().map(|ip| SocketAddr::from((*ip, *port))))
            .collect();
        self.listeners.retain(|addr, task| {
            let keep = want.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in want {
            if self.listeners.contains_key(&addr) {
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    tracing::info!(%addr, "serving a healthCheckNodePort");
                    let app = Router::new()
                        .fallback(answer)
                        .with_state((Arc::clone(&self.checks), addr.port()));
                    let task = tokio::spawn(async move {
                        if let Err(err) = axum::serve(listener, app).await {
                            tracing::warn!(%addr, %err, "health check listener failed");
                        }
                    });
                    self.listeners.insert(addr, task);
                }
                Err(err) => {
                    tracing::warn!(%addr, %err, "cannot listen on a healthCheckNodePort");
                }
            }
        }
    }

    /// The addresses listened on.
    pub fn addresses(&self) -> impl Iterator<Item = &SocketAddr> {
        self.listeners.keys()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

async fn answer(State((checks, port)): State<(Checks, u16)>) -> Response {
    let check = checks.read().ok().and_then(|c| c.get(&port).cloned());
    let Some(check) = check else {
        // The Service went away between the update and this request.
        return StatusCode::NOT_FOUND.into_response();
    };
    let (status, body) = reply(&check);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// kube-proxy's answer: the status and its JSON body.
#[must_use]
pub fn reply(check: &HealthCheck) -> (StatusCode, String) {
    let status = if check.local_endpoints > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "service": {"namespace": check.namespace, "name": check.name},
        "localEndpoints": check.local_endpoints,
        "serviceProxyHealthy": true,
    });
    (status, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n: usize) -> HealthCheck {
        HealthCheck {
            namespace: "shop".into(),
            name: "web".into(),
            local_endpoints: n,
        }
    }

    #[test]
    fn answers_as_kube_proxy() {
        let (status, body) = reply(&check(2));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"localEndpoints":2,"service":{"name":"web","namespace":"shop"},"serviceProxyHealthy":true}"#
        );
        assert_eq!(reply(&check(0)).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Listens on loopback, answers, and stops listening when the check goes away.
    #[tokio::test]
    async fn listens_and_closes() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let port = {
            let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("probe");
            probe.local_addr().expect("addr").port()
        };
        let mut server = HealthServer::default();
        let ips = [Ipv4Addr::LOCALHOST];
        server.update(&BTreeMap::from([(port, check(1))]), &ips);
        assert_eq!(server.addresses().count(), 1);
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("connect");
        s.write_all(b"GET /anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("read");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("x-content-type-options: nosniff")
        );
        assert!(text.contains(r#""localEndpoints":1"#), "{text}");
        server.update(&BTreeMap::new(), &ips);
        assert_eq!(server.addresses().count(), 0);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err()
        );
    }
}
