//! The cluster's reconcilers for tests: a real `kproxy-controller-manager` and
//! `kproxy-scheduler` joined to a test [`ApiServer`] with its admin kubeconfig, and a kube-rs
//! client for the test itself.

use std::{path::Path, process::Command};

use crate::{Daemon, apiserver::ApiServer, bin};

/// Starts `kproxy-controller-manager` against `api` with extra flags (for example
/// `--controllers deployment,replicaset`), and waits until it says it is ready.
pub fn controller_manager(api: &ApiServer, extra: &[&str]) -> Daemon {
    daemon(
        "kproxy-controller-manager",
        "controller manager ready",
        api,
        extra,
    )
}

/// Starts `kproxy-scheduler` against `api` and waits until it says it is ready.
pub fn scheduler(api: &ApiServer, extra: &[&str]) -> Daemon {
    daemon("kproxy-scheduler", "scheduler ready", api, extra)
}

fn daemon(name: &str, ready: &str, api: &ApiServer, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(bin(name));
    cmd.arg("--kubeconfig")
        .arg(&api.kubeconfig)
        // Tests run side by side: no fixed health port.
        .args(["--health-addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info");
    Daemon::spawn_until_logged(cmd, ready)
}

/// A kube-rs client with the API server's admin kubeconfig.
pub async fn client(api: &ApiServer) -> kube::Client {
    kube_client(&api.kubeconfig).await
}

/// A kube-rs client from a kubeconfig file.
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig config");
    kube::Client::try_from(cfg).expect("kube client")
}

/// Starts `kpt-fakenodes`: `n` Nodes named `<prefix>-0..` that heartbeat and report the
/// pods bound to them Running and Ready. Kill the daemon to make its nodes stop heartbeating.
pub fn fake_nodes(api: &ApiServer, prefix: &str, n: usize, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(bin("kpt-fakenodes"));
    cmd.arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["--prefix", prefix, "--nodes", &n.to_string()])
        .args(extra);
    Daemon::spawn_until_logged(cmd, "fake nodes ready")
}

/// A typed object from JSON (test fixtures); panics on a malformed one.
pub fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// Creates Node `name` whose status has InternalIP `ip` and, if given, the kubelet port.
pub async fn create_node(
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    name: &str,
    ip: &str,
    kubelet_port: Option<u16>,
) {
    use kube::api::{Patch, PatchParams, PostParams};
    nodes
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({"metadata": {"name": name}})),
        )
        .await
        .expect("create node");
    let mut status = serde_json::json!({"addresses": [{"type": "InternalIP", "address": ip}]});
    if let Some(port) = kubelet_port {
        status["daemonEndpoints"] = serde_json::json!({"kubeletEndpoint": {"Port": port}});
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .expect("node status");
}
