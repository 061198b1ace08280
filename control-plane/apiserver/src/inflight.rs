//! Bounds on concurrent requests, as kube-apiserver's `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`, and on concurrent watches per user: beyond them a
//! request gets 429 with `Retry-After` at once rather than queueing. Long-running requests
//! (watch, log, exec, node proxy) are not counted as in flight; health probes and the admin
//! (Kubernetes' system:masters) are never limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::auth::Identity;
use crate::context::{Shared, query_pairs};
use crate::status::ApiError;

/// Seconds a limited client is told to wait (kube-apiserver's figure).
const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Non-mutating requests (get, list, discovery) in flight at once; more get 429.
    /// Watches, logs, exec and node proxy are not counted. 0: no limit.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Mutating requests (create, update, patch, delete) in flight at once; more get 429.
    /// 0: no limit.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Watches open at once per user (the admin is exempt); more get 429. 0: no limit.
    #[arg(long, default_value_t = 100)]
    pub max_watches_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_watches_per_user: 100,
        }
    }
}

/// The counters behind [`Limits`], shared by every connection.
pub struct Inflight {
    api: Shared,
    readonly: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    max_watches: usize,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Inflight {
    pub fn new(api: Shared, limits: &Limits) -> Arc<Self> {
        let pool = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Arc::new(Self {
            api,
            readonly: pool(limits.max_requests_inflight),
            mutating: pool(limits.max_mutating_requests_inflight),
            max_watches: limits.max_watches_per_user,
            watches: Arc::default(),
        })
    }

    fn watch(&self, user: String) -> Option<WatchSlot> {
        let mut w = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let n = w.entry(user.clone()).or_default();
        if self.max_watches > 0 && *n >= self.max_watches {
            return None;
        }
        *n += 1;
        Some(WatchSlot {
            watches: Arc::clone(&self.watches),
            user,
        })
    }
}

/// One open watch of `user`, given back when the watch's response ends.
struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = w.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.user);
            }
        }
    }
}

/// What a request counts against.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Exempt,
    Watch,
    ReadOnly,
    Mutating,
}

/// Kubernetes' long-running requests are watches and the streaming subresources.
fn class(method: &Method, path: &str, query: Option<&str>) -> Class {
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return Class::Exempt;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let streaming = match segs.as_slice() {
        ["api", "v1", "nodes", _, "proxy", ..] => true,
        [.., "pods", _, sub] => matches!(*sub, "log" | "exec" | "attach" | "portforward"),
        _ => false,
    };
    if streaming {
        return Class::Exempt;
    }
    if *method == Method::GET
        && query_pairs(query)
            .iter()
            .any(|(k, v)| k == "watch" && matches!(v.as_str(), "true" | "1"))
    {
        return Class::Watch;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Class::ReadOnly
    } else {
        Class::Mutating
    }
}

/// The middleware: counts the request from here until its response body is done.
pub async fn limit(State(inflight): State<Arc<Inflight>>, req: Request, next: Next) -> Response {
    let class = class(req.method(), req.uri().path(), req.uri().query());
    if class == Class::Exempt {
        return next.run(req).await;
    }
    // Authenticated again by the handler; here only to exempt the admin and count per user.
    // Without a valid token the handler answers 401 at once, which needs no bound.
    let id = inflight.api.tokens.authenticate(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let user = match id {
        None | Some(Identity::Admin) => return next.run(req).await,
        Some(id) => id.user(),
    };
    let pool = match class {
        Class::Watch => {
            return match inflight.watch(user.clone()) {
                Some(slot) => kproxy_node_tls::hold(next.run(req).await, slot),
                None => too_many(&format!(
                    "Too many watches by {user}, please try again later."
                )),
            };
        }
        Class::ReadOnly => &inflight.readonly,
        Class::Mutating | Class::Exempt => &inflight.mutating,
    };
    let Some(pool) = pool else {
        return next.run(req).await;
    };
    if let Ok(permit) = Arc::clone(pool).try_acquire_owned() {
        kproxy_node_tls::hold(next.run(req).await, permit)
    } else {
        tracing::debug!(%user, method = %req.method(), path = req.uri().path(), "too many requests in flight");
        too_many("Too many requests, please try again later.")
    }
}

fn too_many(message: &str) -> Response {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    e.details = Some(json!({"retryAfterSeconds": RETRY_AFTER_SECONDS}));
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let c = |m: Method, p: &str, q: Option<&str>| class(&m, p, q);
        assert_eq!(c(Method::GET, "/healthz", None), Class::Exempt);
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/d/pods", Some("watch=true")),
            Class::Watch
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/namespaces/d/pods",
                Some("watch=false")
            ),
            Class::ReadOnly
        );
        assert_eq!(c(Method::GET, "/api/v1/nodes/n1", None), Class::ReadOnly);
        assert_eq!(c(Method::GET, "/apis", None), Class::ReadOnly);
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/d/pods/web/log", None),
            Class::Exempt
        );
        assert_eq!(
            c(
                Method::POST,
                "/api/v1/namespaces/d/pods/web/exec",
                Some("command=ls")
            ),
            Class::Exempt
        );
        assert_eq!(
            c(Method::GET, "/api/v1/nodes/n1:10262/proxy/lb", None),
            Class::Exempt
        );
        assert_eq!(
            c(Method::PATCH, "/api/v1/namespaces/d/pods/web", None),
            Class::Mutating
        );
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces/d/pods", None),
            Class::Mutating
        );
        // A pod named "log" is not a log request.
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/d/pods/log", None),
            Class::Mutating
        );
    }
}
