//! Privileged: `kproxy node` against a real API server and controller manager. Pods are API
//! objects bound to the test's node whose status (podIP = a lab backend, Ready) the test
//! writes as a kubelet would, so the real EndpointSlice controller makes the slices. kproxy
//! runs with the node's kubeconfig, socket-LB attached to the lab's cgroup, maps pinned in
//! the lab's bpffs directory; traffic comes from a process in that cgroup, inside the lab's
//! node namespace.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use kproxy_tests::{
    Daemon,
    apiserver::{ApiServer, TempDir},
    bin,
    cluster::free_port,
    control::{client, controller_manager},
    eventually,
    kubelet::http_get,
    lab::{Lab, backend_ip, kpt},
    privileged, sh, unique, until,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// Backend name → answers, and the number of failed requests, for `count` new TCP
/// connections to `target` from a host process in the socket-LB cgroup.
fn spread(lab: &Lab, target: &str, count: usize) -> (BTreeMap<String, usize>, usize) {
    let res = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["tcp", target, "--count", &count.to_string()],
    );
    let mut names = BTreeMap::new();
    let mut failed = count.saturating_sub(res.len());
    for r in &res {
        if r["ok"] == true {
            *names
                .entry(r["name"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        } else {
            failed += 1;
        }
    }
    (names, failed)
}

/// Waits until every one of 30 connections to `target` succeeds and exactly `backends`
/// answer.
fn wait_spread(lab: &Lab, target: &str, backends: &[&str]) {
    let mut last = (BTreeMap::new(), 0);
    let want: Vec<String> = backends.iter().map(|b| (*b).to_string()).collect();
    eventually(&format!("{target} answered by {backends:?}"), || {
        last = spread(lab, target, 30);
        let got: Vec<String> = last.0.keys().cloned().collect();
        if last.1 == 0 && got == want {
            return true;
        }
        eprintln!("  {target}: {last:?}");
        false
    });
}

/// Waits until no connection to `target` succeeds.
fn wait_dead(lab: &Lab, target: &str) {
    eventually(&format!("{target} stops answering"), || {
        let (names, failed) = spread(lab, target, 5);
        names.is_empty() && failed == 5
    });
}

/// Entries of a pinned map, read with bpftool (independent of kproxy's own reader).
fn map_len(bpffs: &Path, map: &str) -> usize {
    let out = sh(Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(bpffs.join(map)));
    serde_json::from_str::<Value>(&out)
        .expect("bpftool json")
        .as_array()
        .map_or(0, Vec::len)
}

/// The body of `path` on the metrics listener; `None` for an error status (curl --fail).
fn metrics_get(port: u16, path: &str) -> Option<String> {
    http_get(&format!("http://127.0.0.1:{port}{path}"))
}

/// A histogram's `_count` in a Prometheus text page.
fn histogram_count(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A test-only range (RFC 2544 benchmarking space) that kproxy keeps on the machine with an
/// unreachable route; the guard removes the route even when the test fails.
struct KeepLocal(String);

impl KeepLocal {
    fn new() -> Self {
        Self(format!("198.18.{}.0/24", std::process::id() % 256))
    }
}

impl Drop for KeepLocal {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", &self.0])
            .status();
    }
}

fn start_kproxy(
    lab: &Lab,
    kubeconfig: &Path,
    node: &str,
    metrics_port: u16,
    keep: &KeepLocal,
) -> Daemon {
    let mut cmd = Command::new(bin("kproxy"));
    cmd.arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["node", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--node-name",
            node,
            "--keep-local",
            &keep.0,
            // Unreachable routes, which `KeepLocal` removes (no device on the host).
            "--keep-local-dev",
            "none",
            // No other node to route; the route sweep would touch other tests' routes.
            "--no-node-routes",
            "--socket-lb-scope",
        ])
        .arg(lab.cgroup.path())
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        // The node endpoint (0.0.0.0:10262) is tested in kctl_lb.rs; parallel tests would
        // compete for its port.
        .arg("--no-serve")
        .env("RUST_LOG", "info");
    Daemon::spawn_until_logged(cmd, "initial sync done")
}

/// The `map_ops` field of the first log line containing `needle`.
fn logged_map_ops(d: &Daemon, needle: &str) -> Option<u64> {
    d.lines().iter().find(|l| l.contains(needle)).and_then(|l| {
        l.split("map_ops=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The FrontendConflict Warning Event on the Service `clash`, if there is one yet.
async fn conflict_warning(events: &Api<Event>) -> Option<Event> {
    let list = events
        .list(&ListParams::default().fields("involvedObject.name=clash"))
        .await
        .expect("list events");
    list.items.into_iter().find(|e| {
        e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("FrontendConflict")
    })
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: Ipv4Addr, ready: bool) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = json!({"status": {
        "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "lastTransitionTime": now}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status");
}

async fn create_service(svcs: &Api<Service>, v: Value) -> Service {
    svcs.create(&PostParams::default(), &kproxy_tests::control::from_json(v))
        .await
        .expect("create service")
}

/// Service `web`: port 80 to port 8080 of the `app: web` pods.
async fn web_service(svcs: &Api<Service>) -> Service {
    create_service(
        svcs,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
               "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await
}

fn cluster_ip(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("clusterIP allocated")
}

/// An API server with the EndpointSlice and LB IPAM controllers, a lab, this test's Node
/// object (InternalIP 192.0.2.2) and a kubeconfig with its identity.
struct Cluster {
    _dir: TempDir,
    _api: ApiServer,
    _cm: Daemon,
    c: kube::Client,
    lab: Lab,
    node_name: String,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn new(backends: usize) -> Self {
        let dir = TempDir::new("kpt-kpnode");
        let api = ApiServer::start(dir.path(), &[]);
        let cm = controller_manager(&api, &["--controllers", "endpointslice,lbipam"]);
        let c = client(&api).await;
        let lab = Lab::new(backends);
        let node_name = unique("kpt-node");
        let nodes: Api<Node> = Api::all(c.clone());
        kproxy_tests::control::create_node(&nodes, &node_name, "192.0.2.2", None).await;
        // kproxy authenticates as the node.
        let kubeconfig: PathBuf = dir.path().join("node-kubeconfig");
        sh(Command::new(bin("kproxy-apiserver"))
            .args(["node-kubeconfig", &node_name, "--out"])
            .arg(&kubeconfig)
            .args(["--server", &api.url, "--data-dir"])
            .arg(&api.data_dir));
        Self {
            _dir: dir,
            _api: api,
            _cm: cm,
            c,
            lab,
            node_name,
            kubeconfig,
        }
    }

    /// Creates pod `name` bound to the node, Ready with the lab's backend `i` address.
    async fn ready_pod(&self, pods: &Api<Pod>, name: &str, i: usize) {
        pods.create(
            &PostParams::default(),
            &kproxy_tests::control::from_json(json!({
                "metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": self.node_name,
                         "containers": [{"name": "c", "image": "kecho"}]}
            })),
        )
        .await
        .expect("create pod");
        set_ready(pods, name, backend_ip(i), true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_kproxy_node_programs_services_from_the_api() {
    if !privileged("privileged_kproxy_node_programs_services_from_the_api") {
        return;
    }
    let cluster = Cluster::new(3).await;
    let (c, lab, node_name, kubeconfig) = (
        cluster.c.clone(),
        &cluster.lab,
        &cluster.node_name,
        &cluster.kubeconfig,
    );
    let metrics_port = free_port();
    let keep = KeepLocal::new();
    let mut kp = start_kproxy(lab, kubeconfig, node_name, metrics_port, &keep);
    // The range is routed nowhere: nothing sent there can leave the machine. (Only the
    // route is inspected; no traffic is sent to it.)
    let routes = sh(Command::new("ip").args(["-4", "route", "show", "type", "unreachable"]));
    assert!(
        routes
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(keep.0.as_str())),
        "unreachable route for {} missing:\n{routes}",
        keep.0
    );
    // 503 until the first full sync: `metrics_get` is `None` for it.
    eventually("/healthz 200", || {
        metrics_get(metrics_port, "/healthz")
            .is_some_and(|body| body.contains("lastUpdated") && body.contains("currentTime"))
    });
    assert_eq!(metrics_get(metrics_port, "/livez").as_deref(), Some("ok"));

    // Three pods on the lab's backends, Ready.
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    for i in 0..3 {
        cluster.ready_pod(&pods, &format!("web-{i}"), i).await;
    }

    // A Service created through the API answers on its ClusterIP, spread over the pods.
    let svcs: Api<Service> = Api::default_namespaced(c.clone());
    let web = web_service(&svcs).await;
    let vip = format!("{}:80", cluster_ip(&web));
    wait_spread(lab, &vip, &["b0", "b1", "b2"]);
    let (names, failed) = spread(lab, &vip, 150);
    assert_eq!(failed, 0);
    for (b, n) in &names {
        assert!((20..=90).contains(n), "backend {b} got {n}/150: {names:?}");
    }

    // A pod turning not ready leaves the rotation.
    set_ready(&pods, "web-2", backend_ip(2), false).await;
    wait_spread(lab, &vip, &["b0", "b1"]);

    // Skipped: a Service for another proxy, an ExternalName and a headless Service.
    let foreign = create_service(
        &svcs,
        json!({"metadata": {"name": "foreign",
                            "labels": {"service.kubernetes.io/service-proxy-name": "other"}},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    create_service(
        &svcs,
        json!({"metadata": {"name": "alias"},
               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    )
    .await;
    create_service(
        &svcs,
        json!({"metadata": {"name": "headless"}, "spec": {"clusterIP": "None",
               "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    for (svc, reason) in [
        ("default/foreign", "service-proxy-name"),
        ("default/alias", "ExternalName"),
        ("default/headless", "headless"),
    ] {
        eventually(&format!("{svc} skipped"), || {
            kp.lines().iter().any(|l| {
                l.contains("service not proxied")
                    && l.contains(&format!("service=\"{svc}\""))
                    && l.contains(reason)
            })
        });
    }
    let foreign_vip = format!("{}:80", cluster_ip(&foreign));
    let (names, _) = spread(lab, &foreign_vip, 5);
    assert!(names.is_empty(), "foreign service answered: {names:?}");
    // The names `kproxy dump` shows are published every 250 ms.
    eventually("only web is programmed", || {
        kproxy_tests::lab::kproxy_dump(lab.bpffs.path())
            .iter()
            .all(|row| {
                row["service"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("default/web"))
            })
    });

    // A conflicting frontend: `clash` claims web's ClusterIP:80 as an externalIP. It gets a
    // Warning Event; web keeps working, and so does clash's own ClusterIP.
    let clash = create_service(
        &svcs,
        json!({"metadata": {"name": "clash"}, "spec": {"selector": {"app": "web"},
               "externalIPs": [cluster_ip(&web)],
               "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let events: Api<Event> = Api::default_namespaced(c.clone());
    until("a FrontendConflict Warning Event on clash", || {
        let events = events.clone();
        async move { conflict_warning(&events).await.is_some() }
    })
    .await;
    let warning = conflict_warning(&events).await.expect("the Warning Event");
    assert!(
        warning
            .message
            .as_deref()
            .is_some_and(|m| m.contains("default/web") && m.contains(&vip)),
        "{warning:?}"
    );
    wait_spread(lab, &format!("{}:80", cluster_ip(&clash)), &["b0", "b1"]);
    wait_spread(lab, &vip, &["b0", "b1"]);
    assert!(kp.logged("FrontendConflict"));

    // kube-proxy's metrics, including the programming latency of the readiness change.
    let page = metrics_get(metrics_port, "/metrics").expect("/metrics");
    assert!(
        histogram_count(&page, "kubeproxy_sync_proxy_rules_duration_seconds") > 0,
        "{page}"
    );
    assert!(
        histogram_count(&page, "kubeproxy_network_programming_duration_seconds") > 0,
        "{page}"
    );
    assert!(page.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"));

    // SIGKILL and restart with an unchanged cluster: zero map writes, still serving.
    kp.kill();
    let kp2 = start_kproxy(lab, kubeconfig, node_name, metrics_port, &keep);
    assert_eq!(
        logged_map_ops(&kp2, "initial sync done"),
        Some(0),
        "restart wrote to the maps"
    );
    wait_spread(lab, &vip, &["b0", "b1"]);
    let mut kp = kp2;

    // Deleting the Services: they stop answering and nothing is left in the maps.
    for name in ["web", "clash"] {
        svcs.delete(name, &DeleteParams::default())
            .await
            .expect("delete service");
    }
    wait_dead(lab, &vip);
    eventually("maps empty", || {
        kp.assert_running();
        kproxy_tests::lab::kproxy_dump(lab.bpffs.path()).is_empty()
            && map_len(lab.bpffs.path(), "kproxy_lb4_services_v1") == 0
            && map_len(lab.bpffs.path(), "kproxy_lb4_backends_v1") == 0
            && map_len(lab.bpffs.path(), "kproxy_lb4_revnat_v1") == 0
    });
}

/// Starts `kpt-net ARGS` from a host process in the socket-LB cgroup, in the background.
fn background(lab: &Lab, args: &[&str]) -> std::process::Child {
    lab.host_cmd(&kpt())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kpt-net")
}

/// The backend index the TCP connection of process `pid` (in the node namespace) is
/// connected to, from `ss -p`.
fn kept_backend(lab: &Lab, pid: u32) -> usize {
    let mut found = None;
    eventually("the kept-alive connection is established", || {
        let out = lab
            .node
            .cmd("ss")
            .args(["-tnpH", "state", "established"])
            .output()
            .expect("run ss");
        let text = String::from_utf8_lossy(&out.stdout);
        found = text
            .lines()
            .filter(|l| l.contains(&format!("pid={pid},")))
            .filter_map(|l| l.split_whitespace().nth(3))
            .find_map(|peer| (0..3).find(|i| peer == format!("{}:8080", backend_ip(*i))));
        found.is_some()
    });
    found.expect("found")
}

/// The JSON lines a background `kpt-net` printed, once it finished.
fn finished(child: std::process::Child) -> (bool, Vec<Value>) {
    let out = child.wait_with_output().expect("kpt-net finished");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.success(), lines)
}

/// Endpoint churn (pods deleted and created again, one after another) and kproxy killed
/// with SIGKILL and restarted, all under load: new connections and a kept-alive one to the
/// ClusterIP never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_endpoint_churn_and_kill9_lose_no_connection() {
    if !privileged("privileged_endpoint_churn_and_kill9_lose_no_connection") {
        return;
    }
    let cluster = Cluster::new(3).await;
    let lab = &cluster.lab;
    let keep = KeepLocal::new();
    let metrics_port = free_port();
    let start = || {
        start_kproxy(
            lab,
            &cluster.kubeconfig,
            &cluster.node_name,
            metrics_port,
            &keep,
        )
    };
    let mut kp = start();
    let pods: Api<Pod> = Api::default_namespaced(cluster.c.clone());
    for i in 0..3 {
        cluster.ready_pod(&pods, &format!("web-{i}"), i).await;
    }
    let svcs: Api<Service> = Api::default_namespaced(cluster.c.clone());
    let web = web_service(&svcs).await;
    let vip = format!("{}:80", cluster_ip(&web));
    wait_spread(lab, &vip, &["b0", "b1", "b2"]);

    let duration_ms = "9000";
    let conns = background(
        lab,
        &[
            "conns",
            &vip,
            "--duration-ms",
            duration_ms,
            "--concurrency",
            "2",
        ],
    );
    let kept = background(lab, &["hold", &vip, "--duration-ms", duration_ms]);
    // The kept-alive connection's pod is left out of the churn: kproxy terminates the TCP
    // sockets connected to a backend still removed 2 s later (socket_lb_completeness.rs),
    // so deleting that pod may end the connection by design.
    let kept_on = kept_backend(lab, kept.id());
    let churned: Vec<usize> = (0..3).filter(|i| *i != kept_on).collect();
    // Churn: every other pod in turn is deleted and created again (a new pod, same
    // address, as a ReplicaSet would make it); the others keep serving.
    let churn_started = std::time::Instant::now();
    let mut rounds = 0;
    while churn_started.elapsed() < std::time::Duration::from_secs(5) {
        let i = churned[rounds % churned.len()];
        let name = format!("web-{i}");
        pods.delete(&name, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
        until("the pod is gone", || {
            let pods = pods.clone();
            let name = name.clone();
            async move { pods.get_opt(&name).await.expect("get pod").is_none() }
        })
        .await;
        cluster.ready_pod(&pods, &name, i).await;
        rounds += 1;
    }
    // SIGKILL and restart while the load goes on.
    kp.kill();
    std::thread::sleep(std::time::Duration::from_millis(300));
    kp = start();
    let (ok, lines) = finished(conns);
    assert!(ok, "{lines:?}");
    let report = lines.last().expect("a conns report");
    assert!(report["conns"].as_u64().unwrap_or(0) > 100, "{report}");
    assert_eq!(report["errors"], 0, "failed new connections: {report}");
    let (ok, lines) = finished(kept);
    assert!(ok, "the kept-alive connection failed: {lines:?}");
    kp.assert_running();
    eprintln!(
        "churn rounds: {rounds}, new connections: {}",
        report["conns"]
    );
    assert!(rounds >= 3, "only {rounds} churn rounds");
    // The maps converged on the three pods.
    wait_spread(lab, &vip, &["b0", "b1", "b2"]);
}
