//! The kubelet's server (kproxy-kubelet-server: logs, exec, attach, port-forward, stats)
//! in-process on a loopback port, for end-to-end tests without the kubelet's pod runtime: the
//! Node object that points the API server at it, and Docker containers labelled as the kubelet
//! labels a pod's, removed when the test ends (also on failure).
//!
//! The containers are made with the `docker` CLI on purpose (the product uses the Engine API).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use kproxy_pod_labels as labels;
use serde_json::{Value, json};

use crate::apiserver::{ApiServer, Http, TempDir};
use crate::kubectl::{self, KUBECTL};
use crate::{eventually, privileged};

/// Whether a test of this kind can run: privileged, with kubectl; fails the test when one of
/// the Docker `images` is missing.
#[must_use]
pub fn ready(test: &str, images: &[&str]) -> bool {
    if !privileged(test) || !kubectl::available() {
        return false;
    }
    for image in images {
        let ok = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "Docker with image {image} is needed: run `cargo xtask images`"
        );
    }
    assert!(Path::new(KUBECTL).exists(), "{KUBECTL} is needed");
    true
}

/// The kubelet's server on 127.0.0.1, in-process, until dropped.
pub struct KubeletServer {
    rt: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
    /// Its serving certificate and key are in `pki/` here.
    pub dir: TempDir,
}

impl KubeletServer {
    /// Serves node `node`, trusting the cluster CA of `api` for client certificates.
    ///
    /// # Panics
    /// When the server cannot be set up.
    #[must_use]
    pub fn start(node: &str, api: &ApiServer) -> Self {
        let dir = TempDir::new("kpt-kubelet-server");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let cfg = kproxy_kubelet_server::ServerConfig {
            node_name: node.to_string(),
            data_dir: dir.path().join("pki"),
            client_ca_pem: std::fs::read(api.data_dir.join("pki/ca.crt")).expect("cluster CA"),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let docker = bollard::Docker::connect_with_local_defaults().expect("docker client");
            if let Err(e) = kproxy_kubelet_server::serve(listener, cfg, docker).await {
                eprintln!("kubelet server failed: {e:#}");
            }
        });
        // The serving certificate is written before the first accept.
        eventually("kubelet serving certificate", || {
            dir.path().join("pki/kubelet.key").exists()
        });
        Self {
            rt: Some(rt),
            addr,
            dir,
        }
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for KubeletServer {
    fn drop(&mut self) {
        // Ends the server and its connections (their tasks live on this runtime).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// One test's cluster: an API server on the memory store, one node served by the in-process
/// kubelet server, and the Docker containers the test made for that node's pods.
pub struct NodeCluster {
    pub dir: TempDir,
    pub api: ApiServer,
    pub http: Http,
    pub node: String,
    pub kubelet: KubeletServer,
    pub containers: Containers,
}

impl NodeCluster {
    /// Starts an API server (data under a `dir_prefix` temporary directory) and the kubelet
    /// server of a new node (named uniquely from `node_prefix`: kubelet servers of parallel
    /// tests share the Docker engine), with node labels `labels` (none if null). The node's status gives its
    /// address and kubelet port, with the fields of `status` added (or replaced).
    ///
    /// # Panics
    /// When either cannot be started or the node not registered.
    #[must_use]
    pub fn start(dir_prefix: &str, node_prefix: &str, labels: &Value, status: &Value) -> Self {
        let dir = TempDir::new(dir_prefix);
        let api = ApiServer::start(dir.path(), &["--store", "memory"]);
        let http = api.http();
        let node = crate::unique(node_prefix);
        let kubelet = KubeletServer::start(&node, &api);
        let mut full = json!({
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.addr.port()}},
        });
        if let (Some(full), Some(extra)) = (full.as_object_mut(), status.as_object()) {
            full.extend(extra.clone());
        }
        let mut metadata = json!({"name": node});
        if !labels.is_null() {
            metadata["labels"] = labels.clone();
        }
        register_node(&http, &metadata, &full);
        Self {
            dir,
            api,
            http,
            node,
            kubelet,
            containers: Containers::default(),
        }
    }
}

/// Declares a test file's own cluster type over [`NodeCluster`] (its fields reached through
/// `Deref`), for the file's helpers to be methods of.
#[macro_export]
macro_rules! node_cluster {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        struct $name($crate::kubelet_server::NodeCluster);

        impl ::std::ops::Deref for $name {
            type Target = $crate::kubelet_server::NodeCluster;

            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }
    };
}

/// Creates Node `metadata.name` and sets its `status` (which points at a kubelet server).
///
/// # Panics
/// When the API server refuses either.
pub fn register_node(http: &Http, metadata: &Value, status: &Value) {
    let name = metadata["name"].as_str().expect("node name");
    let r = http.post(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata}),
    );
    assert_eq!(r.code, 201, "{}", r.body);
    let r = http.patch(
        &format!("/api/v1/nodes/{name}/status"),
        "application/merge-patch+json",
        &json!({"status": status}).to_string(),
    );
    assert_eq!(r.code, 200, "{}", r.body);
}

/// Docker containers made by a test, removed (`docker rm -f`) on drop.
#[derive(Default)]
pub struct Containers(Mutex<Vec<String>>);

impl Containers {
    /// Removes container `name` when the test ends.
    pub fn add(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.to_string());
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let names = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !names.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&names)
                .output();
        }
    }
}

/// `docker run` arguments (`--label k=v` ...) for the labels the kubelet on `node` gives
/// attempt `attempt` of container `container` of pod `default/pod` (uid `uid`).
#[must_use]
pub fn container_labels(
    node: &str,
    pod: &str,
    uid: &str,
    container: &str,
    attempt: u32,
) -> Vec<String> {
    label_args(&[
        (labels::NODE, node),
        (labels::POD_UID, uid),
        (labels::POD_NAME, pod),
        (labels::POD_NAMESPACE, "default"),
        (labels::KIND, labels::KIND_CONTAINER),
        (labels::CONTAINER_NAME, container),
        (labels::ATTEMPT, &attempt.to_string()),
    ])
}

/// Like [`container_labels`], for the pod's sandbox.
#[must_use]
pub fn sandbox_labels(node: &str, pod: &str, uid: &str) -> Vec<String> {
    label_args(&[
        (labels::NODE, node),
        (labels::POD_UID, uid),
        (labels::POD_NAME, pod),
        (labels::POD_NAMESPACE, "default"),
        (labels::KIND, labels::KIND_SANDBOX),
    ])
}

fn label_args(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
        .collect()
}
