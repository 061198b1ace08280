//! What every request handler shares: the server's state ([`Api`]), what a request addresses
//! ([`Target`]), the parsed request ([`Req`]), and JSON answers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kproxy_store::Store;
use serde_json::Value;

use crate::alloc::Ranges;
use crate::auth::{Identity, TokenStore};
use crate::kubelet::KubeletClient;
use crate::metrics::Metrics;
use crate::registry::Resource;

/// Largest accepted request body (Kubernetes: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct Api {
    pub store: Arc<dyn Store>,
    pub tokens: TokenStore,
    pub ranges: Ranges,
    pub metrics: Metrics,
    /// Largest accepted request body.
    pub max_body: usize,
    /// host:port clients use to reach us (discovery's serverAddressByClientCIDRs).
    pub advertise: String,
    /// Lets background work (garbage collection) outlive the request that started it.
    pub me: Weak<Api>,
    /// Connections to kubelets for pods/log, pods/exec and nodes/proxy.
    pub kubelet: KubeletClient,
}

pub type Shared = Arc<Api>;

impl Api {
    /// The server's state, with fresh metrics and the default body limit.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenStore,
        ranges: Ranges,
        kubelet: KubeletClient,
        advertise: String,
    ) -> Shared {
        Arc::new_cyclic(|me| Api {
            store,
            tokens,
            ranges,
            metrics: Metrics::default(),
            max_body: MAX_BODY,
            advertise,
            me: me.clone(),
            kubelet,
        })
    }
}

/// What a resource request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// A parsed request, passed to the verb implementations.
pub struct Req {
    pub method: Method,
    /// The query parameters; of a repeated one, the last.
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub id: Identity,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }
    /// kubectl asks for server-side printing with `Accept: application/json;as=Table;...`.
    pub fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"))
    }
    pub fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
}

/// A query string's parameters in order, repeats included
/// (application/x-www-form-urlencoded).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub fn json(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).expect("a Value always serialises"),
    )
        .into_response()
}

/// An already-encoded JSON body.
pub fn raw_json(code: StatusCode, body: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q: HashMap<_, _> =
            query_pairs(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&x"))
                .into_iter()
                .collect();
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(query_pairs(Some("a=%zz%4")), [("a".into(), "%zz%4".into())]);
        assert_eq!(
            query_pairs(Some("command=a&command=b+c")),
            [
                ("command".into(), "a".into()),
                ("command".into(), "b c".into())
            ]
        );
        assert!(query_pairs(None).is_empty());
    }
}
