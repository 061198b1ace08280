//! Privileged: the README's tutorial, end to end, on a whole cluster (`Cluster`: API server,
//! controller manager, scheduler, kubelet with Docker, `kproxy node` on a test uplink with a
//! client namespace behind it, socket-LB on a test cgroup), driven through a CLI exactly as
//! a user types it: once with `kctl`, once with the real `/usr/bin/kubectl` (same body).
//!
//! 1. `create deployment httpd --image=httpd`, `expose deployment httpd --type=LoadBalancer
//!    --port=80`; `get svc` shows a CLUSTER-IP and an EXTERNAL-IP (the CLI's table, parsed).
//! 2. curl answers on the EXTERNAL-IP and the CLUSTER-IP from a host process (in the
//!    socket-LB cgroup), and on the EXTERNAL-IP from the client namespace; `logs POD` shows
//!    the client namespace's own address (no SNAT).
//! 3. `scale --replicas=3`: 300 requests spread over the three pods (each page names its
//!    pod), and the per-backend new-flow counters of the node's service table (`kctl lb -o
//!    json`; `kubectl get --raw` of the same node proxy path) agree with the per-pod counts.
//! 4. `delete pod`: the replacement receives traffic, no request fails once the endpoints
//!    settle.
//! 5. `set image` and `rollout restart`, each under two steady request loops (host → ClusterIP,
//!    client → EXTERNAL-IP): no request fails until `rollout status` is done and the new pods
//!    serve.
//! 6. A ClusterIP Service between two deployments: a kecho client pod calls the kecho Service
//!    by IP (`exec POD -- /kecho get http://CLUSTER-IP:8080/`), answered by the server pod,
//!    which sees the client pod's own address.
//! 7. The NodePort (uplink address) answers from the client namespace, and the pods log the
//!    client's own address.
//! 8. `delete svc`: both addresses stop answering at once (refused or unreachable; the routes
//!    are checked first so nothing can be forwarded out) and nothing of the Service is left
//!    in `kproxy dump` or the service table.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kproxy_tests::{
    apiserver::TempDir,
    bin,
    cluster::{Cluster, assert_route, assert_unreachable_here},
    eventually,
    kubectl::{self, KUBECTL},
    kubelet::{is_ready, pod_ip},
    privileged,
    requests::{RequestLoop, curl_line, page_pod},
};
use kube::api::{Api, ListParams};
use serde_json::Value;

/// The command line tool the tutorial is typed into.
struct Cli {
    name: &'static str,
    program: PathBuf,
    kubeconfig: PathBuf,
    /// kubectl caches discovery under $HOME/.kube; one home per test.
    home: TempDir,
    node: String,
    lb_port: u16,
}

impl Cli {
    fn kctl(cluster: &Cluster) -> Self {
        Self::new("kctl", bin("kctl"), cluster)
    }

    fn kubectl(cluster: &Cluster) -> Self {
        Self::new("kubectl", PathBuf::from(KUBECTL), cluster)
    }

    fn new(name: &'static str, program: PathBuf, cluster: &Cluster) -> Self {
        Self {
            name,
            program,
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            home: TempDir::new("kpt-tut-home"),
            node: cluster.node().to_string(),
            lb_port: cluster.serve_port,
        }
    }

    /// Runs the CLI: (success, stdout, stderr), echoed to the test log.
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let started = Instant::now();
        let out = Command::new(&self.program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()));
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!(
            "$ {} {}   ({:?})\n{o}{e}",
            self.name,
            args.join(" "),
            started.elapsed()
        );
        (out.status.success(), o, e)
    }

    /// Runs the CLI and panics unless it succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, o, e) = self.run(args);
        assert!(
            ok,
            "{} {args:?} failed:\nstdout: {o}\nstderr: {e}",
            self.name
        );
        o
    }

    /// The node's service table (kproxy's `/lb` through the API server's node proxy):
    /// `kctl lb -o json`, or kubectl's `get --raw` of the same path.
    fn lb(&self) -> Value {
        let port = self.lb_port.to_string();
        let path = format!("/api/v1/nodes/{}:{port}/proxy/lb", self.node);
        let args: Vec<&str> = if self.name == "kctl" {
            vec!["lb", &self.node, "--port", &port, "-o", "json"]
        } else {
            vec!["get", "--raw", &path]
        };
        let out = Command::new(&self.program)
            .args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .output()
            .expect("run the service table command");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{} {args:?} is not JSON ({e}): {stdout}", self.name))
    }
}

/// A row of `get svc`.
#[derive(Debug)]
struct SvcRow {
    cluster_ip: Option<Ipv4Addr>,
    external_ip: Option<Ipv4Addr>,
    /// `80:31234/TCP` → 31234.
    node_port: Option<u16>,
}

/// Service `name`'s row in the CLI's `get svc` table (columns found by header).
fn get_svc(cli: &Cli, name: &str) -> Option<SvcRow> {
    let table = cli.ok(&["get", "svc"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |h: &str| {
        header
            .iter()
            .position(|c| *c == h)
            .unwrap_or_else(|| panic!("no {h} column in:\n{table}"))
    };
    let (c_name, c_ip, c_ext, c_ports) = (
        col("NAME"),
        col("CLUSTER-IP"),
        col("EXTERNAL-IP"),
        col("PORT(S)"),
    );
    let row: Vec<&str> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.get(c_name) == Some(&name))?;
    let node_port = row.get(c_ports).and_then(|p| {
        let (_, rest) = p.split_once(':')?;
        rest.split('/').next()?.parse().ok()
    });
    Some(SvcRow {
        cluster_ip: row.get(c_ip).and_then(|s| s.parse().ok()),
        external_ip: row.get(c_ext).and_then(|s| s.parse().ok()),
        node_port,
    })
}

/// Ready, not terminating pods labelled `app=APP`: name → IP.
fn serving_pods(cluster: &Cluster, app: &str) -> BTreeMap<String, Ipv4Addr> {
    let k = &cluster.kubelet;
    let pods: Api<Pod> = Api::namespaced(k.client(), "default");
    k.block_on(pods.list(&ListParams::default().labels(&format!("app={app}"))))
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.metadata.name.clone()?, pod_ip(&p)?)))
        .collect()
}

/// Waits for exactly `n` serving pods of `app` (none terminating).
fn wait_pods(cluster: &mut Cluster, app: &str, n: usize) -> BTreeMap<String, Ipv4Addr> {
    let mut pods = BTreeMap::new();
    eventually(&format!("{n} ready pods of {app}"), || {
        cluster.kproxy.assert_running();
        pods = serving_pods(cluster, app);
        if pods.len() != n {
            return false;
        }
        // ... and none still terminating.
        let k = &cluster.kubelet;
        let all: Api<Pod> = Api::namespaced(k.client(), "default");
        let listed = k
            .block_on(all.list(&ListParams::default().labels(&format!("app={app}"))))
            .expect("list pods");
        listed.items.len() == n
    });
    pods
}

/// The frontend `address:port` in a service table.
fn frontend(table: &Value, address: Ipv4Addr, port: u16) -> Option<&Value> {
    table["frontends"]
        .as_array()?
        .iter()
        .find(|f| f["address"] == address.to_string() && f["port"] == port)
}

/// The active backends' addresses of a frontend.
fn active(fe: &Value) -> BTreeSet<Ipv4Addr> {
    fe["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["state"] == "active")
        .filter_map(|b| b["address"].as_str()?.parse().ok())
        .collect()
}

/// New flows per backend address of a frontend (0 for a missing frontend).
fn backend_flows(table: &Value, address: Ipv4Addr, port: u16) -> BTreeMap<Ipv4Addr, u64> {
    frontend(table, address, port)
        .and_then(|fe| fe["backends"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| {
            Some((
                b["address"].as_str()?.parse().ok()?,
                b["newFlows"].as_u64()?,
            ))
        })
        .collect()
}

/// Waits until the service table has every frontend in `frontends` with exactly `ips` as
/// active backends.
fn wait_backends(
    cli: &Cli,
    cluster: &mut Cluster,
    frontends: &[(Ipv4Addr, u16)],
    ips: &BTreeSet<Ipv4Addr>,
) {
    let mut last = Value::Null;
    eventually(
        &format!("frontends {frontends:?} with active backends {ips:?} in the service table"),
        || {
            cluster.kproxy.assert_running();
            last = cli.lb();
            frontends
                .iter()
                .all(|(a, p)| frontend(&last, *a, *p).is_some_and(|fe| &active(fe) == ips))
        },
    );
}

/// Lines of `logs POD` for answered requests from `client` (httpd's `-v` log:
/// `IP:PORT: response:200`).
fn client_lines(cli: &Cli, pod: &str, client: Ipv4Addr) -> usize {
    let prefix = format!("{client}:");
    cli.ok(&["logs", pod])
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("response:200"))
        .count()
}

/// What a batch of requests got: answers per pod, and each failure as curl reported it.
#[derive(Debug, Default)]
struct Answers {
    pods: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Answers {
    fn parse(text: &str) -> Self {
        let mut a = Self::default();
        for line in text.lines() {
            if let Some(pod) = page_pod(line) {
                *a.pods.entry(pod.to_string()).or_default() += 1;
            } else if line.starts_with("FAILED") {
                a.failures.push(line.to_string());
            }
        }
        a
    }

    fn answered(&self) -> usize {
        self.pods.values().sum()
    }
}

/// `n` requests to `url`, one connection each, run by `sh` as `cmd` starts it (host cgroup
/// or client namespace); every one must be answered by one of `pods`.
fn batch(mut sh: Command, url: &str, n: usize, what: &str, pods: &BTreeSet<String>) -> Answers {
    let script = format!("for i in $(seq {n}); do {}; done", curl_line(url));
    let started = Instant::now();
    let out = sh.args(["-c", &script]).output().expect("run the requests");
    let a = Answers::parse(&String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "{what}: {n} requests in {:?}: {:?}, {} failed",
        started.elapsed(),
        a.pods,
        a.failures.len()
    );
    assert!(
        a.failures.is_empty() && a.answered() == n,
        "{what}: {} of {n} requests failed, {} answered ({:?}): {:?}; stderr: {}",
        a.failures.len(),
        a.answered(),
        a.pods,
        a.failures,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        a.pods.keys().all(|p| pods.contains(p)),
        "{what}: answered by {:?}, not only by the pods {pods:?}",
        a.pods
    );
    a
}

/// A request loop in the background until [`Loop::stop`]; each output line is kept with its
/// arrival time.
struct Loop(RequestLoop);

impl Loop {
    fn start(sh: Command, url: &str, what: &str, dir: &std::path::Path) -> Self {
        Self(RequestLoop::start(
            sh,
            url,
            what,
            dir,
            Duration::from_millis(50),
        ))
    }

    /// Answers (pod names) and failures since `since`.
    fn since(&self, since: Instant) -> (Vec<String>, Vec<String>) {
        let mut pods = Vec::new();
        let mut failures = Vec::new();
        for (t, l) in self.0.lines_since(since) {
            if let Some(p) = page_pod(&l) {
                pods.push(p.to_string());
            } else if l.starts_with("FAILED") {
                failures.push(format!("{l} (at +{:?})", t.duration_since(since)));
            }
        }
        (pods, failures)
    }

    /// The last `n` answers (pod names).
    fn last(&self, n: usize) -> Vec<String> {
        let pods: Vec<String> = self
            .0
            .lines()
            .iter()
            .filter_map(|(_, l)| page_pod(l).map(str::to_string))
            .collect();
        pods[pods.len().saturating_sub(n)..].to_vec()
    }

    /// Stops the loop after its current request and waits for it.
    fn stop(&mut self) {
        assert!(
            self.0.stop(),
            "{}: the request loop did not stop",
            self.0.what
        );
    }
}

/// Runs `change` (a CLI command that starts a rollout) under request loops from the host
/// (ClusterIP) and the client namespace (EXTERNAL-IP), waits for `rollout status` and for the
/// new pods to serve both loops; asserts that no request failed. Returns the new pods.
fn rollout_under_load(
    cli: &Cli,
    cluster: &mut Cluster,
    urls: (&str, &str),
    change: &[&str],
    expect: &str,
) -> BTreeMap<String, Ipv4Addr> {
    let old = serving_pods(cluster, "httpd");
    let started = Instant::now();
    let mut loops = [
        Loop::start(
            cluster.host_cmd("sh"),
            urls.0,
            "host → ClusterIP",
            cluster.dir(),
        ),
        Loop::start(
            cluster.client_cmd("sh"),
            urls.1,
            "client → EXTERNAL-IP",
            cluster.dir(),
        ),
    ];
    eventually("both request loops answered", || {
        loops.iter().all(|l| !l.since(started).0.is_empty())
    });
    let out = cli.ok(change);
    assert!(out.contains(expect), "{change:?} printed {out:?}");
    let status = cli.ok(&["rollout", "status", "deployment/httpd", "--timeout=90s"]);
    assert!(
        status.contains("successfully rolled out"),
        "rollout status: {status}"
    );
    let new = wait_pods(cluster, "httpd", 3);
    assert!(
        new.keys().all(|p| !old.contains_key(p)),
        "{change:?}: new pods {new:?} must all replace the old {old:?}"
    );
    let ips: BTreeSet<Ipv4Addr> = new.values().copied().collect();
    eventually(
        &format!("the last 10 answers of both loops from the new pods {new:?}"),
        || {
            loops.iter().all(|l| {
                let last = l.last(10);
                last.len() == 10 && last.iter().all(|p| new.contains_key(p))
            })
        },
    );
    for l in &mut loops {
        l.stop();
    }
    for l in &loops {
        let (pods, failures) = l.since(started);
        let mut per_pod: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &pods {
            *per_pod.entry(p.as_str()).or_default() += 1;
        }
        eprintln!(
            "{change:?} under load, {}: {} answers in {:?} {per_pod:?}, {} failed",
            l.0.what,
            pods.len(),
            started.elapsed(),
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{change:?}: {} requests of {} failed during the rollout (old pods {old:?}, new \
             {new:?} at {ips:?}): {failures:#?}",
            failures.len(),
            l.0.what
        );
    }
    new
}

/// A request from `sh` (host cgroup or client namespace) that must fail fast without an
/// answer: curl's exit code and how long it took.
fn refused(mut sh: Command, url: &str) -> (i32, Duration) {
    let started = Instant::now();
    let out = sh
        .args(["-sS", "--max-time", "5", url])
        .output()
        .expect("run curl");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !stdout.contains("<p>pod:"),
        "{url} still answered after the Service was deleted: {stdout}"
    );
    eprintln!(
        "{url}: {} after {elapsed:?}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (out.status.code().unwrap_or(-1), elapsed)
}

fn tutorial(cli: &Cli, cluster: &mut Cluster) {
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("\n=== {what} (at {:?})", t0.elapsed());

    // 1. The deployment and its LoadBalancer Service.
    step("create deployment, expose");
    let out = cli.ok(&["create", "deployment", "httpd", "--image=httpd"]);
    assert_eq!(out.trim(), "deployment.apps/httpd created");
    let out = cli.ok(&[
        "expose",
        "deployment",
        "httpd",
        "--type=LoadBalancer",
        "--port=80",
    ]);
    assert_eq!(out.trim(), "service/httpd exposed");
    let exposed = Instant::now();
    let mut row = None;
    eventually(
        "get svc shows a CLUSTER-IP and an EXTERNAL-IP for httpd",
        || {
            row = get_svc(cli, "httpd");
            row.as_ref()
                .is_some_and(|r| r.cluster_ip.is_some() && r.external_ip.is_some())
        },
    );
    let row = row.expect("checked");
    eprintln!(
        "get svc: both addresses {:?} after expose",
        exposed.elapsed()
    );
    let (cluster_ip, lb_ip) = (
        row.cluster_ip.expect("checked"),
        row.external_ip.expect("checked"),
    );
    let node_port = row
        .node_port
        .unwrap_or_else(|| panic!("no NodePort: {row:?}"));
    let svc_octet = u8::try_from(cluster.svc_net).expect("a byte");
    assert_eq!(
        cluster_ip.octets()[..3],
        [198, 19, svc_octet],
        "CLUSTER-IP {cluster_ip} in the service CIDR {}",
        cluster.svc_cidr()
    );
    assert!(
        lb_ip.octets()[..3] == cluster.uplink.host_ip().octets()[..3]
            && lb_ip.octets()[3] & 0xf0 == 128,
        "EXTERNAL-IP {lb_ip} from the pool {}",
        cluster.pool()
    );
    let pods = wait_pods(cluster, "httpd", 1);
    let names: BTreeSet<String> = pods.keys().cloned().collect();
    let ips: BTreeSet<Ipv4Addr> = pods.values().copied().collect();
    wait_backends(cli, cluster, &[(cluster_ip, 80), (lb_ip, 80)], &ips);

    // Nothing sent below can leave the test's links: both addresses have only the
    // keep-local routes on the host; in the client namespace the EXTERNAL-IP and the uplink
    // address are on-link behind eth0 (the node).
    assert_unreachable_here(cluster_ip, cluster.svc_cidr());
    assert_unreachable_here(lb_ip, cluster.pool());
    let node_ip = cluster.uplink.host_ip();
    assert_route(cluster.client().cmd("ip"), lb_ip, "eth0", None);
    assert_route(cluster.client().cmd("ip"), node_ip, "eth0", None);
    let cluster_url = format!("http://{cluster_ip}/");
    let lb_url = format!("http://{lb_ip}/");
    let node_port_url = format!("http://{node_ip}:{node_port}/");

    // 2. curl from the host and from the client namespace.
    step("curl from the host and from the client namespace");
    batch(
        cluster.host_cmd("sh"),
        &lb_url,
        5,
        "host → EXTERNAL-IP",
        &names,
    );
    batch(
        cluster.host_cmd("sh"),
        &cluster_url,
        5,
        "host → CLUSTER-IP",
        &names,
    );
    batch(
        cluster.client_cmd("sh"),
        &lb_url,
        5,
        "client → EXTERNAL-IP",
        &names,
    );
    let pod = names.first().expect("one pod");
    let client_ip = cluster.uplink.client_ip();
    eventually(
        &format!("logs {pod} show the 5 requests from the client namespace's {client_ip}"),
        || client_lines(cli, pod, client_ip) == 5,
    );

    // 3. Three replicas share 300 requests; the service table counts them per backend.
    step("scale to 3, 300 requests");
    let out = cli.ok(&["scale", "deployment", "httpd", "--replicas=3"]);
    assert_eq!(out.trim(), "deployment.apps/httpd scaled");
    let pods = wait_pods(cluster, "httpd", 3);
    let names: BTreeSet<String> = pods.keys().cloned().collect();
    let ips: BTreeSet<Ipv4Addr> = pods.values().copied().collect();
    wait_backends(cli, cluster, &[(cluster_ip, 80), (lb_ip, 80)], &ips);
    let before = backend_flows(&cli.lb(), cluster_ip, 80);
    let answers = batch(
        cluster.host_cmd("sh"),
        &cluster_url,
        300,
        "host → CLUSTER-IP ×300",
        &names,
    );
    let after = backend_flows(&cli.lb(), cluster_ip, 80);
    for (name, n) in &answers.pods {
        assert!(
            *n >= 50,
            "300 requests over 3 pods: {name} got only {n}: {:?}",
            answers.pods
        );
    }
    assert_eq!(
        answers.pods.len(),
        3,
        "all three pods answer: {:?}",
        answers.pods
    );
    let counted: BTreeMap<String, u64> = pods
        .iter()
        .map(|(name, ip)| {
            let delta = after.get(ip).copied().unwrap_or(0) - before.get(ip).copied().unwrap_or(0);
            (name.clone(), delta)
        })
        .collect();
    let seen: BTreeMap<String, u64> = pods
        .keys()
        .map(|name| {
            let n = answers.pods.get(name).copied().unwrap_or(0);
            (name.clone(), u64::try_from(n).expect("a count"))
        })
        .collect();
    assert_eq!(
        counted, seen,
        "new flows per backend (table before {before:?}, after {after:?}) must match the pages"
    );

    // 3b. `kctl bench`: a load pod on the node measures the pods directly (all 3 ready
    // endpoints, in turn), the ClusterIP and (from the client namespace) the EXTERNAL-IP
    // side by side; every row carries traffic, none fails, the ratios to the pods are there,
    // and the load pod is gone when kctl returns. (kctl only: kubectl has no such command.)
    if cli.name == "kctl" {
        step("kctl bench");
        let out = cli.ok(&[
            "bench",
            "svc/httpd",
            "--duration",
            "2s",
            "--connections",
            "2",
            "--client-netns",
            cluster.client().name(),
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).expect("kctl bench -o json");
        let rows = v["results"].as_array().expect("results");
        let targets: Vec<&str> = rows.iter().filter_map(|r| r["target"].as_str()).collect();
        assert_eq!(targets, ["pod", "clusterip", "external-ip"], "{v}");
        for r in rows {
            for phase in ["connections", "requests"] {
                assert!(r[phase]["ok"].as_u64() > Some(0), "{phase} of {r}");
                assert_eq!(r[phase]["failed"], 0, "{phase} of {r}");
            }
        }
        for t in ["clusterip", "external-ip"] {
            let ratio = v["ratiosToPod"][t]["connectionsPerSecond"].as_f64();
            assert!(ratio.is_some_and(|r| r > 0.0), "{t} ratio in {v}");
        }
        // The direct row covers the same 3 pods the service spreads over.
        let direct: BTreeSet<Ipv4Addr> = rows[0]["addresses"]
            .as_array()
            .expect("addresses of the pod row")
            .iter()
            .map(|a| {
                let a: std::net::SocketAddr =
                    a.as_str().and_then(|a| a.parse().ok()).expect("IP:PORT");
                match a.ip() {
                    std::net::IpAddr::V4(ip) => ip,
                    std::net::IpAddr::V6(ip) => panic!("IPv6 endpoint {ip}"),
                }
            })
            .collect();
        assert_eq!(direct, ips, "the pod row's endpoints in {v}");
        // kctl bench deletes its pod before returning (label from kctl's bench.rs).
        let k = &cluster.kubelet;
        let all: Api<Pod> = Api::namespaced(k.client(), "default");
        let left = k
            .block_on(
                all.list(&ListParams::default().labels("app.kubernetes.io/managed-by=kctl-bench")),
            )
            .expect("list bench pods");
        let names: Vec<String> = left
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert!(names.is_empty(), "bench pods left behind: {names:?}");
    }

    // 4. A deleted pod is replaced; once the endpoints settle nothing fails and the
    // replacement answers.
    step("delete a pod");
    let victim = names.first().expect("three pods").clone();
    let mut host_loop = Loop::start(
        cluster.host_cmd("sh"),
        &cluster_url,
        "host → CLUSTER-IP",
        cluster.dir(),
    );
    let deleting = Instant::now();
    let out = cli.ok(&["delete", "pod", &victim]);
    assert!(out.contains(&format!("pod \"{victim}\" deleted")), "{out}");
    let pods = wait_pods(cluster, "httpd", 3);
    let replacement: Vec<&String> = pods.keys().filter(|p| !names.contains(*p)).collect();
    assert!(
        replacement.len() == 1 && !pods.contains_key(&victim),
        "one replacement for {victim}: {pods:?}"
    );
    let replacement = replacement[0].clone();
    let ips: BTreeSet<Ipv4Addr> = pods.values().copied().collect();
    wait_backends(cli, cluster, &[(cluster_ip, 80), (lb_ip, 80)], &ips);
    let settled = Instant::now();
    eprintln!(
        "endpoints settled {:?} after the delete",
        settled - deleting
    );
    eventually(
        &format!("30 answers after the endpoints settled, one from {replacement}"),
        || {
            let (answered, _) = host_loop.since(settled);
            answered.len() >= 30 && answered.contains(&replacement)
        },
    );
    host_loop.stop();
    let (_, early) = host_loop.since(deleting);
    let (answered, failures) = host_loop.since(settled);
    eprintln!(
        "delete pod: {} failed between the delete and the settled endpoints: {early:?}",
        early.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed after the endpoints settled ({} answered): {failures:#?}",
        answered.len()
    );
    assert!(
        answered.iter().all(|p| pods.contains_key(p)),
        "answers after settling from {answered:?}, pods {pods:?}"
    );
    drop(host_loop);

    // 5. Rollouts under load.
    step("set image under load");
    // A container the pods do not have: refused, and the Deployment is left as it was.
    let deployments: Api<Deployment> = Api::namespaced(cluster.kubelet.client(), "default");
    let generation = |cluster: &Cluster| {
        cluster
            .kubelet
            .block_on(deployments.get("httpd"))
            .expect("get the Deployment")
            .metadata
            .generation
    };
    let before = generation(cluster);
    let (ok, out, err) = cli.run(&["set", "image", "deployment/httpd", "nope=kproxy/httpd:1"]);
    assert!(
        !ok && err.contains("unable to find container named \"nope\""),
        "set image of an unknown container: {out}{err}"
    );
    assert_eq!(generation(cluster), before, "the Deployment changed");
    let urls = (cluster_url.as_str(), lb_url.as_str());
    rollout_under_load(
        cli,
        cluster,
        urls,
        &["set", "image", "deployment/httpd", "httpd=kproxy/httpd:1"],
        "deployment.apps/httpd image updated",
    );
    step("rollout restart under load");
    let pods = rollout_under_load(
        cli,
        cluster,
        urls,
        &["rollout", "restart", "deployment/httpd"],
        "deployment.apps/httpd restarted",
    );
    // 6. A ClusterIP Service between two deployments.
    step("kecho: a client pod calls a ClusterIP service");
    cli.ok(&["create", "deployment", "kecho", "--image=kecho"]);
    cli.ok(&["expose", "deployment", "kecho", "--port=8080"]);
    cli.ok(&["create", "deployment", "kecho-client", "--image=kecho"]);
    let mut row = None;
    eventually("get svc shows kecho's CLUSTER-IP", || {
        row = get_svc(cli, "kecho");
        row.as_ref().is_some_and(|r| r.cluster_ip.is_some())
    });
    let row = row.expect("checked");
    assert!(row.external_ip.is_none(), "a ClusterIP Service: {row:?}");
    let kecho_ip = row.cluster_ip.expect("checked");
    let servers = wait_pods(cluster, "kecho", 1);
    let clients = wait_pods(cluster, "kecho-client", 1);
    let server_ips: BTreeSet<Ipv4Addr> = servers.values().copied().collect();
    wait_backends(cli, cluster, &[(kecho_ip, 8080)], &server_ips);
    let (client_pod, client_pod_ip) = clients.iter().next().expect("one client");
    let url = format!("http://{kecho_ip}:8080/");
    let out = cli.ok(&["exec", client_pod, "--", "/kecho", "get", &url]);
    // `<server pod> <peer as the server saw it>`
    let words: Vec<&str> = out.split_whitespace().collect();
    let peer: Option<Ipv4Addr> = words
        .get(1)
        .and_then(|p| p.rsplit_once(':'))
        .and_then(|(ip, _)| ip.parse().ok());
    assert!(
        words.len() == 2 && servers.contains_key(words[0]) && peer == Some(*client_pod_ip),
        "{client_pod} ({client_pod_ip}) → {url}: expected `<one of {servers:?}> \
         {client_pod_ip}:PORT`, got {out:?}"
    );

    // 7. The NodePort on the node's uplink address, from the client namespace: answered by
    // the pods, which see the client's own address.
    step("client → NodePort");
    let names: BTreeSet<String> = pods.keys().cloned().collect();
    let logged = || -> usize { names.iter().map(|p| client_lines(cli, p, client_ip)).sum() };
    let before = logged();
    batch(
        cluster.client_cmd("sh"),
        &node_port_url,
        5,
        "client → NodePort",
        &names,
    );
    eventually(
        &format!("the pods {names:?} log 5 more requests from {client_ip} (had {before})"),
        || logged() == before + 5,
    );

    // 8. The Service goes: nothing answers, nothing is left.
    step("delete the service");
    let out = cli.ok(&["delete", "svc", "httpd"]);
    assert!(out.contains("service \"httpd\" deleted"), "{out}");
    let addrs = [cluster_ip.to_string(), lb_ip.to_string()];
    let mut rows = Vec::new();
    eventually("kproxy dump without the httpd Service", || {
        cluster.kproxy.assert_running();
        rows = cluster.dump();
        !rows.iter().any(|r| {
            r["service"]
                .as_str()
                .is_some_and(|s| s.starts_with("default/httpd"))
                || addrs.iter().any(|a| {
                    r["frontend"]
                        .as_str()
                        .is_some_and(|f| f.starts_with(&format!("{a}:")))
                })
                || r["frontend"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(&format!(":{node_port}/TCP")))
        })
    });
    let mut table = Value::Null;
    eventually("the service table without the httpd Service", || {
        table = cli.lb();
        !table["frontends"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| {
                f["service"]["name"] == "httpd"
                    || addrs.iter().any(|a| f["address"] == a.as_str())
                    || f["port"] == node_port
            })
    });
    assert_unreachable_here(cluster_ip, cluster.svc_cidr());
    assert_unreachable_here(lb_ip, cluster.pool());
    for (what, sh, url, limit) in [
        (
            "host → CLUSTER-IP",
            cluster.host_cmd("curl"),
            &cluster_url,
            1,
        ),
        ("host → EXTERNAL-IP", cluster.host_cmd("curl"), &lb_url, 1),
        // The client's neighbour entry may have to be resolved again: ARP gives up after
        // about 3 s, unless the host's ICMP unreachable comes first.
        (
            "client → EXTERNAL-IP",
            cluster.client_cmd("curl"),
            &lb_url,
            4,
        ),
        (
            "client → NodePort",
            cluster.client_cmd("curl"),
            &node_port_url,
            1,
        ),
    ] {
        let (code, took) = refused(sh, url);
        assert!(
            code == 7 && took < Duration::from_secs(limit),
            "{what} after the delete: curl must fail to connect (exit 7) within {limit} s; \
             exit {code} after {took:?}"
        );
    }

    cluster.kproxy.assert_running();
    eprintln!(
        "\n=== tutorial with {} done in {:?}",
        cli.name,
        t0.elapsed()
    );
}

#[test]
fn privileged_tutorial_with_kctl() {
    if !privileged("privileged_tutorial_with_kctl") {
        return;
    }
    let mut cluster = Cluster::start("kpt-tut-kctl");
    let cli = Cli::kctl(&cluster);
    tutorial(&cli, &mut cluster);
}

#[test]
fn privileged_tutorial_with_kubectl() {
    if !privileged("privileged_tutorial_with_kubectl") || !kubectl::available() {
        return;
    }
    let mut cluster = Cluster::start("kpt-tut-kubectl");
    let cli = Cli::kubectl(&cluster);
    tutorial(&cli, &mut cluster);
}
