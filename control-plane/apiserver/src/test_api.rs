//! What the in-process tests share: the API over a fresh memory store, with tokens for the
//! admin and for the nodes a test names, and an answer's status and JSON body.

use std::path::PathBuf;

use axum::http::StatusCode;
use serde_json::Value;

use crate::alloc::Ranges;
use crate::auth::TokenStore;
use crate::context::{Api, Shared};
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
    let store = kproxy_store::memory(kproxy_store::StoreOptions { history });
    crate::server::bootstrap(store.as_ref()).await.unwrap();
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
