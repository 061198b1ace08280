//! What the in-process tests share: the API over a fresh memory store, with tokens for the
//! admin and for the nodes a test names, and an answer's status and JSON body.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::alloc::Ranges;
use crate::auth::TokenStore;
use crate::context::{Api, Shared};
use crate::handler::router;
use crate::kubelet::KubeletClient;

/// The temporary directory of one test's PKI and tokens, removed with it.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct TestApi {
    pub api: Shared,
    pub admin: String,
    /// The tokens of the nodes asked for, in order.
    pub nodes: Vec<String>,
    pub dir: TempDir,
}

/// A bootstrapped API over a memory store keeping `history` events; `name` makes the
/// temporary directory unique per test.
pub async fn test_api(name: &str, history: usize, nodes: &[&str]) -> TestApi {
    let store = kproxy_store::memory(kproxy_store::StoreOptions { history });
    test_api_on(name, store, nodes).await
}

/// [`test_api`] over `store` (e.g. a watch cache around a memory store).
pub async fn test_api_on(
    name: &str,
    store: std::sync::Arc<dyn kproxy_store::Store>,
    nodes: &[&str],
) -> TestApi {
    let dir = std::env::temp_dir().join(format!("kproxy-apiserver-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = crate::pki::load_or_create(&dir.join("pki"), &[]).unwrap();
    let kubelet = KubeletClient::new(&pki.kubelet_client).unwrap();
    let tokens = TokenStore::open(&dir).unwrap();
    let admin = tokens.admin_token();
    let nodes = nodes
        .iter()
        .map(|n| tokens.node_token(n).unwrap())
        .collect();
    crate::storage::bootstrap(store.as_ref()).await.unwrap();
    let api = Api::new(
        store,
        tokens,
        Ranges::default(),
        kubelet,
        "127.0.0.1:6443".into(),
    );
    TestApi {
        api,
        admin,
        nodes,
        dir: TempDir(dir),
    }
}

/// An answer: its status and its body as JSON (`Null` when the body is not JSON).
pub struct Answer {
    pub code: StatusCode,
    pub body: Value,
}

/// A request as `token` (anonymous when empty) with `body` of content type `ct`.
pub fn request(token: &str, method: Method, uri: &str, ct: &str, body: Vec<u8>) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, ct);
    if !token.is_empty() {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    req.body(Body::from(body)).unwrap()
}

/// A JSON request body; none for `Null`.
pub fn json_body(body: &Value) -> Vec<u8> {
    if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    }
}

/// `req` through `app`, to the end of the answer.
pub async fn answer(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let code = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        code,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// The router over a [`test_api`] with one node, `n1`: the admin's token and n1's.
pub struct OneNode {
    pub app: Router,
    pub admin: String,
    pub n1: String,
    _dir: TempDir,
}

impl OneNode {
    pub async fn new(name: &str) -> Self {
        let t = test_api(name, 1000, &["n1"]).await;
        Self {
            app: router(t.api),
            admin: t.admin,
            n1: t.nodes[0].clone(),
            _dir: t.dir,
        }
    }

    /// A request with a raw body.
    pub async fn raw(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        ct: &str,
        body: Vec<u8>,
    ) -> Answer {
        answer(&self.app, request(token, method, uri, ct, body)).await
    }

    /// A request with a JSON value's body (none for `Null`) of content type `ct`.
    pub async fn send(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        ct: &str,
        body: &Value,
    ) -> Answer {
        self.raw(token, method, uri, ct, json_body(body)).await
    }
}

/// Pod `name` of one container, on `node`.
pub fn pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    })
}
