//! A real `kproxy-kubelet` for tests: its own node name, bridge, pod CIDR and data directory,
//! joined to a test [`ApiServer`] with a node token, as an operator would set it up. Dropping
//! it (also when a test panics) kills the kubelet and removes everything it made on the host:
//! its Docker containers, veths, bridge and forwarding rules.
//!
//! The tests are synchronous (like [`eventually`]), so the kube-rs client runs on a small tokio
//! runtime owned here and the helpers block. Docker is driven through the `docker` CLI on
//! purpose: the kubelet itself talks to the Engine API.

use std::{
    collections::BTreeSet,
    future::Future,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ContainerStatus, Pod},
};
/// The kubelet's Docker labels (`kproxy_pod_labels`), under the names the tests use.
pub use kproxy_pod_labels::{
    ATTEMPT as ATTEMPT_LABEL, CONTAINER_NAME as CONTAINER_NAME_LABEL, KIND as KIND_LABEL,
    KIND_CONTAINER, KIND_SANDBOX, NODE as NODE_LABEL, POD_UID as POD_UID_LABEL,
};
use kproxy_podnet::Ipv4Net;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    Daemon,
    apiserver::{ApiServer, TempDir},
    bin, patience, sh, unique,
};

pub struct Kubelet {
    pub node: String,
    pub bridge: String,
    pub cidr: Ipv4Net,
    /// The log/exec port the running kubelet reported (it changes on restart: `--port 0`).
    pub port: u16,
    dir: TempDir,
    args: Vec<String>,
    /// The network namespace the kubelet runs in (`None`: this host's).
    netns: Option<String>,
    daemon: Option<Daemon>,
    client: Client,
    // Declared last: dropped after the client that spawned tasks on it.
    rt: tokio::runtime::Runtime,
}

/// A pod CIDR no interface on this host uses yet: `10.251.N.0/24`, N starting at a
/// per-process offset so parallel tests and concurrent test binaries pick different ones.
#[must_use]
pub fn free_cidr() -> Ipv4Net {
    format!("10.251.{}.0/24", crate::free_slash24("10.251", 37))
        .parse()
        .expect("valid CIDR")
}

/// Where and how [`Kubelet::start_placed`] runs a kubelet (a simulated host).
#[derive(Default)]
pub struct Placement<'a> {
    /// The network namespace to run in (a simulated host); `None`: this host's.
    pub netns: Option<&'a str>,
    /// The API server URL as that namespace reaches it (default: `api.url`).
    pub server: Option<&'a str>,
    /// The Node's InternalIP (default 127.0.0.1).
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// Wait for node IPAM instead of `--pod-cidr`.
    pub ipam: bool,
}

/// The node's kubeconfig: the API server, its CA inline, the node's bearer token.
fn node_kubeconfig(api: &ApiServer, server: &str, token: &str) -> Value {
    use base64::Engine as _;
    let ca = std::fs::read(api.data_dir.join("pki/ca.crt")).expect("the API server's CA");
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kproxy", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
        }}],
        "users": [{"name": "node", "user": {"token": token}}],
        "contexts": [{"name": "node", "context": {"cluster": "kproxy", "user": "node"}}],
        "current-context": "node",
    })
}

impl Kubelet {
    /// Registers a new node with `api` and starts its kubelet; returns once it logged
    /// "kubelet ready". `extra` flags are appended (`--restart-backoff 1` unless given).
    pub fn start(api: &ApiServer, extra: &[&str]) -> Self {
        Self::start_placed(api, &Placement::default(), extra)
    }

    /// Like `start`, without `--pod-cidr`: the kubelet waits for the controller manager's
    /// node IPAM (running against `api`) to assign its Node a pod CIDR.
    pub fn start_with_ipam(api: &ApiServer, extra: &[&str]) -> Self {
        let place = Placement {
            ipam: true,
            ..Placement::default()
        };
        Self::start_placed(api, &place, extra)
    }

    /// Starts a kubelet as `place` says (another namespace, address, API server URL).
    pub fn start_placed(api: &ApiServer, place: &Placement<'_>, extra: &[&str]) -> Self {
        let ipam = place.ipam;
        let node = unique("node");
        let bridge = unique("kbl");
        assert!(bridge.len() <= 15, "{bridge} is too long for an interface");
        let cidr = free_cidr();
        let dir = TempDir::new("kpt-kubelet");
        let kubeconfig = dir.path().join("kubeconfig");
        let token = api.node_token(&node);
        let server = place.server.unwrap_or(&api.url);
        std::fs::write(
            &kubeconfig,
            node_kubeconfig(api, server, &token).to_string(),
        )
        .expect("write the node kubeconfig");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = rt.block_on(crate::control::client(api));

        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--node-name".into(),
            node.clone(),
            "--node-ip".into(),
            place
                .node_ip
                .map_or_else(|| "127.0.0.1".into(), |ip| ip.to_string()),
            "--bridge".into(),
            bridge.clone(),
            "--data-dir".into(),
            dir.path().join("state").display().to_string(),
            "--port".into(),
            "0".into(),
        ];
        if !ipam {
            args.extend(["--pod-cidr".into(), cidr.to_string()]);
        }
        if !extra.contains(&"--restart-backoff") {
            args.extend(["--restart-backoff".into(), "1".into()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_string()));

        // Built before the kubelet starts so that a failed start still cleans up on drop.
        let mut k = Self {
            node,
            bridge,
            cidr,
            port: 0,
            dir,
            args,
            netns: place.netns.map(str::to_string),
            daemon: None,
            client,
            rt,
        };
        k.spawn();
        if ipam {
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(k.client.clone());
            let node = k.block_on(nodes.get(&k.node)).expect("the kubelet's Node");
            k.cidr = node
                .spec
                .and_then(|s| s.pod_cidr)
                .expect("node IPAM assigned a pod CIDR")
                .parse()
                .expect("a valid pod CIDR");
        }
        k
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(bin("kproxy-kubelet"));
                c
            }
            None => Command::new(bin("kproxy-kubelet")),
        };
        cmd.args(&self.args).env("RUST_LOG", "info");
        let daemon = self.daemon.insert(Daemon::spawn(cmd));
        let started = Instant::now();
        let port = loop {
            daemon.assert_running();
            let port = daemon.lines().iter().find_map(|l| {
                let rest = l.split("kubelet ready").nth(1)?;
                rest.split("port=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(p) = port {
                break p;
            }
            assert!(
                started.elapsed() < patience(),
                "kubelet {} not ready after {:?}",
                self.node,
                patience()
            );
            thread::sleep(Duration::from_millis(50));
        };
        self.port = port;
    }

    /// SIGKILL: the kubelet gets no chance to clean up; its pods keep running.
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Starts the kubelet again with the same flags and data directory (kills it first if
    /// it still runs).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the kubelet is not running")
    }

    /// Panics (with the log) if the kubelet exited.
    pub fn assert_running(&mut self) {
        self.daemon().assert_running();
    }

    /// Whether the running kubelet logged `needle`.
    pub fn logged(&mut self, needle: &str) -> bool {
        self.daemon().logged(needle)
    }

    /// The kubelet's state directory (`ipam.json`, ...).
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Pod uids holding an address in the kubelet's IPAM file.
    #[must_use]
    pub fn ipam_owners(&self) -> BTreeSet<String> {
        let path = self.state_dir().join("ipam.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return BTreeSet::new();
        };
        let state: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        state["allocations"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// An admin kube-rs client for the API server.
    #[must_use]
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs a future (kube-rs calls) to completion on the harness's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    #[must_use]
    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A pod manifest named `name` bound to this node, with `spec` as given.
    #[must_use]
    pub fn manifest(&self, name: &str, mut spec: Value) -> Value {
        spec["nodeName"] = json!(self.node);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    }

    /// Creates `manifest` in `ns`; the API's answer, errors included.
    pub fn try_create(&self, ns: &str, manifest: &Value) -> Result<Pod, kube::Error> {
        let pod: Pod = serde_json::from_value(manifest.clone())
            .unwrap_or_else(|e| panic!("not a Pod ({e}): {manifest}"));
        self.block_on(self.pods(ns).create(&PostParams::default(), &pod))
    }

    /// Creates pod `name` bound to this node with `spec`; panics if the API refuses.
    pub fn create_pod(&self, ns: &str, name: &str, spec: Value) -> Pod {
        self.try_create(ns, &self.manifest(name, spec))
            .unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"))
    }

    #[must_use]
    pub fn get_pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.block_on(self.pods(ns).get_opt(name))
            .unwrap_or_else(|e| panic!("reading pod {ns}/{name}: {e}"))
    }

    /// Polls pod `ns/name` until `check` holds; panics after [`patience`] with `what` and the
    /// last status seen.
    pub fn wait_pod(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl FnMut(&Pod) -> bool,
    ) -> Pod {
        self.wait_pod_for(ns, name, what, patience(), check)
    }

    /// [`Kubelet::wait_pod`] with an explicit limit.
    pub fn wait_pod_for(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Pod) -> bool,
    ) -> Pod {
        let started = Instant::now();
        loop {
            let pod = self.get_pod(ns, name);
            if let Some(p) = &pod
                && check(p)
            {
                return pod.expect("checked Some");
            }
            if started.elapsed() > limit {
                let status = pod.and_then(|p| p.status).map_or_else(
                    || "(no pod)".into(),
                    |s| serde_json::to_string_pretty(&s).unwrap_or_default(),
                );
                panic!(
                    "timed out after {limit:?} waiting for {ns}/{name}: {what}; status:\n{status}"
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes pod `ns/name` (`grace`: None for the pod's own grace period).
    pub fn delete_pod(&self, ns: &str, name: &str, grace: Option<u32>) {
        let dp = DeleteParams {
            grace_period_seconds: grace,
            ..Default::default()
        };
        self.block_on(self.pods(ns).delete(name, &dp))
            .unwrap_or_else(|e| panic!("deleting pod {ns}/{name}: {e}"));
    }

    /// Waits until pod `ns/name` is gone from the API; returns how long that took.
    pub fn wait_gone(&self, ns: &str, name: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.get_pod(ns, name).is_some() {
            assert!(
                started.elapsed() < limit,
                "pod {ns}/{name} still exists after {limit:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    /// Ids of this node's Docker containers (running or not) carrying all `labels`.
    #[must_use]
    pub fn containers(&self, labels: &[(&str, &str)]) -> Vec<String> {
        let mut cmd = Command::new("docker");
        cmd.args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label={NODE_LABEL}={}", self.node));
        for (k, v) in labels {
            cmd.arg("--filter").arg(format!("label={k}={v}"));
        }
        sh(&mut cmd).lines().map(str::to_string).collect()
    }

    /// Ids of every Docker container of pod `uid` on this node (sandbox included).
    #[must_use]
    pub fn pod_containers(&self, uid: &str) -> Vec<String> {
        self.containers(&[(POD_UID_LABEL, uid)])
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.kill();
        // Links on the bridge and the veth names of every pod that has containers left.
        let mut links: BTreeSet<String> =
            quiet(Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]))
                .lines()
                .filter_map(|l| {
                    let name = l.split(':').nth(1)?.trim();
                    Some(name.split('@').next()?.to_string())
                })
                .collect();
        let filter = format!("label={NODE_LABEL}={}", self.node);
        let format = format!("{{{{.ID}}}} {{{{.Label \"{POD_UID_LABEL}\"}}}}");
        let listed = quiet(
            Command::new("docker").args(["ps", "-a", "--filter", &filter, "--format", &format]),
        );
        let mut ids = Vec::new();
        for line in listed.lines() {
            let mut parts = line.split_whitespace();
            if let Some(id) = parts.next() {
                ids.push(id.to_string());
            }
            if let Some(uid) = parts.next() {
                links.insert(kproxy_podnet::host_ifname(uid));
            }
        }
        if !ids.is_empty() {
            quiet(Command::new("docker").args(["rm", "-f", "-v"]).args(&ids));
        }
        for link in links.iter().filter(|l| l.starts_with("kv")) {
            quiet(Command::new("ip").args(["link", "del", link]));
        }
        quiet(Command::new("ip").args(["link", "del", &self.bridge]));
        if let Err(e) = kproxy_podnet::disable_forwarding(&self.bridge, self.cidr) {
            eprintln!("cleanup: disable_forwarding {}: {e}", self.bridge);
        }
    }
}

/// Runs a cleanup command, ignoring failures (the thing may already be gone); its stdout.
fn quiet(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `docker inspect` of one container, as JSON.
#[must_use]
pub fn inspect(id: &str) -> Value {
    let out = sh(Command::new("docker").args(["inspect", id]));
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("docker inspect {id}: {e}"));
    v[0].clone()
}

/// `docker inspect`, or `None` when the container is gone.
#[must_use]
pub fn try_inspect(id: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", id])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[0].clone())
}

/// The container's stdout and stderr so far.
#[must_use]
pub fn docker_logs(id: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", id])
        .output()
        .unwrap_or_else(|e| panic!("docker logs {id}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` in a container with `docker exec`; panics if it fails.
pub fn docker_exec(id: &str, cmd: &[&str]) -> String {
    sh(Command::new("docker").args(["exec", id]).args(cmd))
}

/// Whether a network interface of this name exists in the host namespace.
#[must_use]
pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An HTTP GET from the host (curl, 3 s limit): the body, or `None` on any failure.
#[must_use]
pub fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The status of container `name` of `pod`.
#[must_use]
pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// The status ("True"/"False") of condition `kind` of `pod`.
#[must_use]
pub fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

#[must_use]
pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

#[must_use]
pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

#[must_use]
pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("a stored pod has a uid")
}

/// A Deployment of `replicas` pods labelled `app: NAME`, one container `container` of a local
/// image serving HTTP on `port`, ready when `GET /` answers (checked every second), stopped
/// within a second.
#[must_use]
pub fn http_deployment(
    name: &str,
    replicas: u32,
    container: &str,
    image: &str,
    port: u16,
) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": container, "image": image, "imagePullPolicy": "Never",
                        "ports": [{"containerPort": port}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }))
    .expect("a Deployment")
}

/// Running, with every container ready and the Ready condition True.
#[must_use]
pub fn is_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running") && condition(pod, "Ready") == Some("True")
}

/// The Docker id in a container status's `containerID` (`docker://<id>`).
#[must_use]
pub fn docker_id(status: &ContainerStatus) -> Option<&str> {
    status.container_id.as_deref()?.strip_prefix("docker://")
}

/// Asserts `check` stays true for `how_long` (polling): for "still not ready" claims.
pub fn consistently(what: &str, how_long: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < how_long {
        assert!(
            check(),
            "no longer true after {:?}: {what}",
            started.elapsed()
        );
        thread::sleep(Duration::from_millis(100));
    }
}
