//! `kctl lb` end to end: kproxy node's mutual-TLS endpoint (`GET /lb`) reached through the
//! API server's `nodes/NODE:PORT/proxy` subresource.
//!
//! - Without root: the node proxy refuses node identities, anonymous clients and unknown
//!   nodes, answers 503 for a node nobody listens on, and `kctl lb` says so clearly.
//! - Privileged: a real API server, controller manager and `kproxy node` (socket-LB on the
//!   lab's cgroup, maps in the lab's bpffs directory); N connections to a Service from a
//!   process in that cgroup show up in `kctl lb` as N new flows, split over the backends as
//!   the backends saw them; `-o json`, `-o wide`, `-w` and `kubectl get --raw` work; a direct
//!   HTTPS GET to kproxy's endpoint without the API server's client certificate is refused.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kproxy_tests::{
    Daemon,
    apiserver::{ApiServer, TempDir},
    bin,
    cluster::free_port,
    control::{client, controller_manager},
    eventually,
    kubectl::{self, Kubectl},
    lab::{Lab, backend_ip, kpt},
    mono_ns, privileged, sh, unique,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// Runs kctl with the admin kubeconfig: (success, stdout, stderr).
fn kctl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("kctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kctl");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("$ kctl {}\n{o}{e}", args.join(" "));
    (out.status.success(), o, e)
}

/// A Node object whose InternalIP is loopback (where this test's kproxy listens) and whose
/// kubelet port is `kubelet_port`.
async fn create_node(nodes: &Api<Node>, name: &str, kubelet_port: u16) {
    kproxy_tests::control::create_node(nodes, name, "127.0.0.1", Some(kubelet_port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_node_proxy_refuses_non_admin_and_unknown_nodes() {
    let dir = TempDir::new("kpt-nodeproxy");
    let api = ApiServer::start(dir.path(), &[]);
    let c = client(&api).await;
    let node = unique("kpt-np");
    let closed = free_port();
    create_node(&Api::all(c.clone()), &node, closed).await;
    let http = api.http();

    // Discovery lists the subresource, as Kubernetes does.
    let core = http.get("/api/v1").json();
    assert!(
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "nodes/proxy"),
        "{core}"
    );

    let path = format!("/api/v1/nodes/{node}:{closed}/proxy/lb");
    // Anonymous: 401. Another node's identity (nodes may read Nodes): 403.
    let r = http.with_token(None).get(&path);
    assert_eq!(r.code, 401, "{}", r.body);
    let other = http.with_token(Some(&api.node_token("kpt-other-node")));
    let r = other.get(&path);
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(r.json()["kind"], "Status");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("cannot get resource \"nodes/proxy\""),
        "{}",
        r.body
    );
    // Even to its own node.
    let own = http.with_token(Some(&api.node_token(&node)));
    assert_eq!(own.get(&path).code, 403);

    // Unknown node: 404 as a Status.
    let r = http.get("/api/v1/nodes/kpt-no-such-node:10262/proxy/lb");
    assert_eq!(r.code, 404, "{}", r.body);
    assert_eq!(r.json()["reason"], "NotFound");
    assert_eq!(r.json()["message"], "nodes \"kpt-no-such-node\" not found");
    // Nobody listening: 503. Default port = the kubelet's (closed too).
    for p in [path.clone(), format!("/api/v1/nodes/{node}/proxy/lb")] {
        let r = http.get(&p);
        assert_eq!(r.code, 503, "{p}: {}", r.body);
        assert_eq!(r.json()["reason"], "ServiceUnavailable");
    }
    // A malformed target: 400; another method: 405.
    assert_eq!(
        http.get(&format!("/api/v1/nodes/{node}:0/proxy/lb")).code,
        400
    );
    assert_eq!(http.delete(&path).code, 405);

    // kctl's words for the same failures.
    let (ok, _, err) = kctl(&api.kubeconfig, &["lb", "kpt-no-such-node"]);
    assert!(!ok);
    assert!(
        err.contains("NotFound") && err.contains("kpt-no-such-node"),
        "{err}"
    );
    let (ok, _, err) = kctl(
        &api.kubeconfig,
        &["lb", &node, "--port", &closed.to_string()],
    );
    assert!(!ok);
    assert!(err.contains("cannot reach kproxy on node"), "{err}");
    // The only node is the default.
    let (ok, _, err) = kctl(&api.kubeconfig, &["lb", "--port", &closed.to_string()]);
    assert!(!ok);
    assert!(err.contains(&format!("node \"{node}\"")), "{err}");
}

/// Backend name → answers for `count` new TCP connections to `target` from a process in
/// the socket-LB cgroup; panics if any failed.
fn connect(lab: &Lab, target: &str, count: usize) -> BTreeMap<String, u64> {
    let res = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["tcp", target, "--count", &count.to_string()],
    );
    assert_eq!(res.len(), count, "{res:?}");
    let mut names = BTreeMap::new();
    for r in &res {
        assert_eq!(r["ok"], true, "{r}");
        *names
            .entry(r["name"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    names
}

/// `kctl lb NODE --port P -o json`, parsed.
fn lb_json(kubeconfig: &Path, node: &str, port: u16) -> Value {
    let (ok, out, err) = kctl(
        kubeconfig,
        &["lb", node, "--port", &port.to_string(), "-o", "json"],
    );
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kctl lb -o json ({e}): {out}"))
}

fn frontend<'a>(table: &'a Value, address: &str, port: u16) -> Option<&'a Value> {
    table["frontends"]
        .as_array()?
        .iter()
        .find(|f| f["address"] == address && f["port"] == port)
}

/// New flows of the frontend and of each of its backends (by address).
fn flows(table: &Value, address: &str, port: u16) -> (u64, BTreeMap<String, u64>) {
    let fe = frontend(table, address, port).expect("the frontend in kctl lb");
    let backends = fe["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["newFlows"].as_u64().unwrap(),
            )
        })
        .collect();
    (fe["newFlows"].as_u64().unwrap(), backends)
}

/// Adds a forward connection tracking entry (10.9.9.9:`sport` → `vip`:80/TCP, to backend 0)
/// for `revnat` expiring at `expires_s` (monotonic seconds) to the pinned CT map with
/// bpftool, byte for byte in kproxy-common's `CtKey`/`CtValue` layout.
fn ct_insert(bpffs: &Path, vip: Ipv4Addr, sport: u16, revnat: u16, expires_s: u32) {
    let map = std::fs::read_dir(bpffs)
        .expect("bpffs dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kproxy_lb4_ct_v"))
        })
        .expect("the pinned CT map");
    let mut key: Vec<u8> = vec![10, 9, 9, 9];
    key.extend(vip.octets());
    key.extend(sport.to_be_bytes());
    key.extend(80u16.to_be_bytes());
    key.extend([6, 0, 0, 0]); // TCP, forward, padding
    let mut value: Vec<u8> = backend_ip(0).octets().to_vec();
    value.extend(8080u16.to_be_bytes());
    value.extend(revnat.to_ne_bytes());
    value.extend(1u32.to_ne_bytes()); // backend id
    value.extend(0u32.to_ne_bytes()); // no hairpin
    value.extend(expires_s.to_ne_bytes());
    value.extend(0u32.to_ne_bytes()); // flags
    let bytes = |b: &[u8]| b.iter().map(u8::to_string).collect::<Vec<_>>();
    sh(Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&map)
        .arg("key")
        .args(bytes(&key))
        .arg("value")
        .args(bytes(&value)));
}

/// A child whose stdout is collected; killed on drop.
struct Watch {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Watch {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kctl lb -w");
        let stdout = child.stdout.take().expect("piped stdout");
        let out = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("  w| {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, out }
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_kctl_lb_shows_the_flows_sent_to_a_service() {
    // Connections per measurement.
    const N: usize = 40;
    if !privileged("privileged_kctl_lb_shows_the_flows_sent_to_a_service") {
        return;
    }
    let dir = TempDir::new("kpt-kctl-lb");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = controller_manager(&api, &["--controllers", "endpointslice"]);
    let c = client(&api).await;
    let lab = Lab::new(2);
    let node = unique("kpt-lbnode");
    let port = free_port();
    create_node(&Api::all(c.clone()), &node, free_port()).await;

    let kubeconfig = dir.path().join("node-kubeconfig");
    sh(Command::new(bin("kproxy-apiserver"))
        .args(["node-kubeconfig", &node, "--out"])
        .arg(&kubeconfig)
        .args(["--server", &api.url, "--data-dir"])
        .arg(&api.data_dir));
    let certs = dir.path().join("kproxy-pki");
    let mut cmd = Command::new(bin("kproxy"));
    cmd.arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["node", "--kubeconfig"])
        .arg(&kubeconfig)
        // No routes on the host for this test.
        .args([
            "--node-name",
            &node,
            "--keep-local",
            "none",
            "--no-node-routes",
            "--socket-lb-scope",
        ])
        .arg(lab.cgroup.path())
        .args([
            "--serve-addr",
            &format!("127.0.0.1:{port}"),
            "--serve-cert-dir",
        ])
        .arg(&certs)
        .env("RUST_LOG", "info");
    let mut kp = Daemon::spawn_until_logged(cmd, "initial sync done");
    eventually("the node endpoint listening", || {
        kp.assert_running();
        kp.logged("listening endpoint=\"kproxy node endpoint\"")
    });
    assert!(certs.join("kproxy.crt").exists() && certs.join("kproxy.key").exists());

    // Two ready pods on the lab's backends, and a Service over them.
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    for i in 0..2 {
        pods.create(
            &PostParams::default(),
            &kproxy_tests::control::from_json(json!({
                "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "kecho"}]}
            })),
        )
        .await
        .expect("create pod");
        let ip = backend_ip(i).to_string();
        pods.patch_status(
            &format!("web-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .expect("pod status");
    }
    let svc: Service = Api::default_namespaced(c.clone())
        .create(
            &PostParams::default(),
            &kproxy_tests::control::from_json(
                json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
                   "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
            ),
        )
        .await
        .expect("create service");
    let vip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("clusterIP")
        .parse()
        .unwrap();
    let vip_s = vip.to_string();
    let target = format!("{vip}:80");

    // Both backends in the table, named after the Service (names are published within
    // 250 ms of a sync).
    eventually("web with 2 ready backends in kctl lb", || {
        kp.assert_running();
        let t = lb_json(&api.kubeconfig, &node, port);
        frontend(&t, &vip_s, 80).is_some_and(|f| {
            f["service"] == json!({"namespace": "default", "name": "web", "port": "http"})
                && f["type"] == "ClusterIP"
                && f["protocol"] == "TCP"
                && f["backends"].as_array().is_some_and(|b| {
                    b.len() == 2
                        && b.iter()
                            .all(|b| b["state"] == "active" && b["port"] == 8080)
                })
        })
    });

    // N connections: the frontend's new flows grow by N, each backend's by what it answered.
    let before = lb_json(&api.kubeconfig, &node, port);
    let (fe_before, be_before) = flows(&before, &vip_s, 80);
    let answered = connect(&lab, &target, N);
    let after = lb_json(&api.kubeconfig, &node, port);
    assert_eq!(after["kind"], "ServiceTable");
    assert_eq!(after["node"], node.as_str());
    let (fe_after, be_after) = flows(&after, &vip_s, 80);
    assert_eq!(fe_after - fe_before, N as u64, "{after}");
    let per_backend: BTreeMap<String, u64> = be_after
        .iter()
        .map(|(addr, n)| (addr.clone(), n - be_before.get(addr).copied().unwrap_or(0)))
        .collect();
    let expected: BTreeMap<String, u64> = answered
        .iter()
        .map(|(name, n)| {
            let i: usize = name
                .trim_start_matches('b')
                .parse()
                .expect("backend name b<i>");
            (backend_ip(i).to_string(), *n)
        })
        .collect();
    let expected: BTreeMap<String, u64> = per_backend
        .keys()
        .map(|a| (a.clone(), expected.get(a).copied().unwrap_or(0)))
        .collect();
    assert_eq!(per_backend, expected, "answers {answered:?}");
    // Socket-LB translates at connect(): no per-packet connection tracking for these.
    let fe = frontend(&after, &vip_s, 80).unwrap();
    assert_eq!(fe["ctEntries"], 0, "{fe}");

    // A tracked per-packet flow of this Service (written into the pinned CT map as the
    // datapath would) is counted by its revnat id; an expired one is not.
    let revnat = u16::try_from(fe["revnatId"].as_u64().unwrap()).unwrap();
    let now_s = u32::try_from(mono_ns() / 1_000_000_000).unwrap();
    ct_insert(lab.bpffs.path(), vip, 1111, revnat, now_s + 3600);
    ct_insert(lab.bpffs.path(), vip, 2222, revnat, now_s - 5);
    eventually("one live CT entry counted", || {
        let t = lb_json(&api.kubeconfig, &node, port);
        frontend(&t, &vip_s, 80).is_some_and(|f| f["ctEntries"] == 1)
    });

    // The table, and -o wide with one row per backend.
    let (ok, table, err) = kctl(&api.kubeconfig, &["lb", &node, "--port", &port.to_string()]);
    assert!(ok, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVICE",
            "FRONTEND",
            "PROTO",
            "BACKENDS",
            "NEW-FLOWS",
            "PACKETS",
            "BYTES",
            "CT-ENTRIES"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains(&format!("{vip}:80")))
        .expect("the web row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..4],
        ["default/web:http", &format!("{vip}:80"), "TCP", "2/2"]
    );
    assert_eq!(row[4], fe_after.to_string());
    assert_eq!(row[7], "1", "CT-ENTRIES");
    let (ok, wide, err) = kctl(
        &api.kubeconfig,
        &["lb", &node, "--port", &port.to_string(), "-o", "wide"],
    );
    assert!(ok, "{err}");
    for i in 0..2 {
        assert!(
            wide.lines()
                .any(|l| l.contains(&format!("-> {}:8080", backend_ip(i))) && l.contains("active")),
            "{wide}"
        );
    }
    // The only node is the default; yaml parses too.
    let (ok, yaml, err) = kctl(
        &api.kubeconfig,
        &["lb", "--port", &port.to_string(), "-o", "yaml"],
    );
    assert!(ok, "{err}");
    assert!(yaml.lines().any(|l| l == "kind: ServiceTable"), "{yaml}");
    assert!(yaml.contains(&format!("address: {vip}")), "{yaml}");

    // -w prints the row again once it changes.
    let mut cmd = Command::new(bin("kctl"));
    cmd.arg("--kubeconfig").arg(&api.kubeconfig).args([
        "lb",
        &node,
        "--port",
        &port.to_string(),
        "-w",
    ]);
    let watch = Watch::spawn(cmd);
    eventually("kctl lb -w prints the table", || {
        watch.text().contains("default/web:http")
    });
    let printed = |w: &Watch| {
        w.text()
            .lines()
            .filter(|l| l.contains("default/web:http"))
            .count()
    };
    assert_eq!(printed(&watch), 1);
    connect(&lab, &target, 3);
    eventually("kctl lb -w prints the changed row", || printed(&watch) == 2);
    let last = watch.text();
    let last_row = last
        .lines()
        .rfind(|l| l.contains("default/web:http"))
        .unwrap();
    assert_eq!(
        last_row.split_whitespace().nth(4),
        Some((fe_after + 3).to_string().as_str()),
        "{last}"
    );
    drop(watch);

    // kubectl reaches the same endpoint through the subresource.
    if kubectl::available() {
        let home = TempDir::new("kpt-kctl-lb-home");
        let k = Kubectl::new(&api.kubeconfig, home.path());
        let raw = k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}:{port}/proxy/lb"),
        ]);
        let v: Value = serde_json::from_str(&raw).expect("kubectl get --raw JSON");
        assert!(frontend(&v, &vip_s, 80).is_some(), "{v}");
    }

    // Straight to kproxy's endpoint without the API server's client certificate: refused in
    // the TLS handshake, nothing served.
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10"])
        .arg(format!("https://127.0.0.1:{port}/lb"))
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "unauthenticated GET answered: {body}"
    );
    assert!(!body.contains("ServiceTable"), "{body}");
    // curl may see the refusal before kproxy's log line is written.
    eventually("kproxy logs the refused handshake", || {
        kp.logged("TLS handshake refused")
    });
    kp.assert_running();
}
