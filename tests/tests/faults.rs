//! Privileged: the fault suite (issue 14, item 12). A whole cluster (`Cluster`, the API
//! server's data directory on a small tmpfs) runs the httpd deployment (3 replicas) behind a
//! LoadBalancer Service under three steady request loops, one new connection per request:
//! host → CLUSTER-IP and host → EXTERNAL-IP (socket-LB), client namespace → EXTERNAL-IP
//! (uplink). Then, one after another, with what must hold after each:
//!
//! - `apiserver-kill`: kill -9 the API server while two writers create Leases → restart on
//!   the same data directory: every create answered 201 is stored, and a kube-rs watcher
//!   started before the kill sees the Leases created after the restart.
//! - `kubelet-kill`: kill -9 the kubelet → the pods keep serving → restart: the pods are
//!   adopted (same containers, no restarts, no new sandbox or container started).
//! - `kproxy-kill`: kill -9 kproxy → no new connection fails, with kproxy down and after its
//!   restart; the Service's frontends are all still in the datapath.
//! - `controller-manager-kill`: kill -9 the controller manager during a rolling update →
//!   restart: the rollout completes, no request fails, and a pod watcher never sees more than
//!   replicas + maxSurge pods that are not terminating.
//! - `disk-full`: fill the API server's tmpfs → writes get 5xx → free it → writes succeed
//!   again, and no acknowledged write is lost.
//! - `dockerd-restart` (last: it stops every container on the machine): SIGTERM dockerd and
//!   start it again as `cargo xtask setup` does → the kubelet brings the pods back, the Node
//!   is Ready again and the Service answers again. Requests fail meanwhile; they are counted.
//!
//! Every fault prints `fault: NAME: requests sent N, failed M, objects lost K` (requests: the
//! three loops during the fault; objects lost: acknowledged writes missing for the API server
//! faults, pods not adopted for the kubelet, frontends missing for kproxy, pods missing at the
//! end for the others). The promises are checked after all faults ran, in one assertion
//! listing every broken one. All faults run in one #[test]: nothing else in this binary runs
//! beside them.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::OpenOptions,
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Node, Pod, Service},
    },
    serde::{Serialize, de::DeserializeOwned},
};
use kproxy_tests::{
    apiserver::Http,
    cluster::{Cluster, Options, assert_route, assert_unreachable_here},
    control::{from_json, kube_client},
    eventually,
    kubelet::{docker_id, is_ready},
    privileged,
    requests::{RequestLoop, page_pod},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

/// The namespace of the Leases the writers create.
const NS: &str = "faults";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/faults/leases";
const REPLICAS: usize = 3;
/// The Deployment's default RollingUpdate maxSurge, 25 % of 3 rounded up.
const MAX_SURGE: usize = 1;
/// The API server's tmpfs: room for the store and the test's writes, small enough to fill.
const API_TMPFS: &str = "48m";
const DOCKER_SOCK: &str = "/var/run/docker.sock";
const DOCKER_PID: &str = "/var/run/docker.pid";
/// Where `cargo xtask setup` logs dockerd.
const DOCKERD_LOG: &str = "/var/log/kproxy/dockerd.log";

/// What one fault showed.
struct Outcome {
    name: &'static str,
    sent: usize,
    failed: usize,
    lost: usize,
    /// Figures beside the three counts (writes, pods, timings).
    notes: Vec<String>,
    /// Promises the fault broke.
    problems: Vec<String>,
}

impl Outcome {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            sent: 0,
            failed: 0,
            lost: 0,
            notes: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn line(&self) -> String {
        format!(
            "fault: {}: requests sent {}, failed {}, objects lost {}",
            self.name, self.sent, self.failed, self.lost
        )
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }
}

/// A request loop in the background; every output line is kept with its arrival time.
struct Loop(RequestLoop);

impl Loop {
    fn start(sh: Command, url: &str, what: &str, dir: &Path) -> Self {
        Self(RequestLoop::start(
            sh,
            url,
            what,
            dir,
            Duration::from_millis(100),
        ))
    }

    /// Requests finished since `since`, and the failures among them.
    fn since(&self, since: Instant) -> (usize, Vec<String>) {
        let mut sent = 0;
        let mut failures = Vec::new();
        for (t, l) in self.0.lines_since(since) {
            if page_pod(&l).is_some() {
                sent += 1;
            } else if l.starts_with("FAILED") {
                sent += 1;
                failures.push(format!(
                    "{}: {l} (at +{:?})",
                    self.0.what,
                    t.duration_since(since)
                ));
            }
        }
        (sent, failures)
    }

    /// The pods that answered the last `n` requests since `since` (`None` for a failure);
    /// fewer than `n` if fewer finished.
    fn last(&self, since: Instant, n: usize) -> Vec<Option<String>> {
        let done: Vec<Option<String>> = self
            .0
            .lines_since(since)
            .iter()
            .filter(|(_, l)| l.starts_with("FAILED") || page_pod(l).is_some())
            .map(|(_, l)| page_pod(l).map(str::to_string))
            .collect();
        done[done.len().saturating_sub(n)..].to_vec()
    }

    fn stop(&mut self) {
        self.0.stop();
    }
}

/// One create the writer tried: the Lease's name, when the answer came, its status code
/// (`None`: no answer, the server was gone).
struct Write {
    name: String,
    at: Instant,
    code: Option<u16>,
}

/// Threads creating Leases (`PREFIX-THREAD-N`, labelled `fault=PREFIX`, with `pad` bytes
/// of annotation) through curl until stopped, each recording every attempt.
struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Write>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(http: &Http, prefix: &'static str, threads: usize, pad: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|w| {
                let (http, stop, log) = (http.clone(), Arc::clone(&stop), Arc::clone(&log));
                thread::spawn(move || {
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let name = format!("{prefix}-{w}-{i}");
                        let mut lease = json!({
                            "apiVersion": "coordination.k8s.io/v1",
                            "kind": "Lease",
                            "metadata": {"name": name, "labels": {"fault": prefix}},
                            "spec": {"holderIdentity": "faults"},
                        });
                        if pad > 0 {
                            lease["metadata"]["annotations"] = json!({"pad": "x".repeat(pad)});
                        }
                        let body = lease.to_string();
                        let code = http
                            .try_req("POST", LEASES, "application/json", Some(body.as_bytes()))
                            .ok()
                            .map(|r| r.code);
                        let at = Instant::now();
                        log.lock().unwrap().push(Write { name, at, code });
                        if code != Some(201) {
                            thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
            })
            .collect();
        Self { stop, log, threads }
    }

    /// Whether some create answered after `after` satisfies `pred` (on its status code).
    fn answered_after(&self, after: Instant, pred: impl Fn(Option<u16>) -> bool) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.at > after && pred(w.code))
    }

    fn stop(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a writer thread");
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Status codes of `writes`, counted.
fn codes(writes: &[Write]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in writes {
        let k = w
            .code
            .map_or_else(|| "no answer".to_string(), |c| c.to_string());
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Names of the Leases labelled `fault=PREFIX` in the store.
fn stored_leases(http: &Http, prefix: &str) -> Option<BTreeSet<String>> {
    let r = http
        .try_req(
            "GET",
            &format!("{LEASES}?labelSelector=fault%3D{prefix}"),
            "application/json",
            None,
        )
        .ok()?;
    if r.code != 200 {
        return None;
    }
    let list = r.json();
    Some(
        list["items"]
            .as_array()?
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Polls `check` every 200 ms for up to `limit`; whether it held.
fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check() {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether process `pid` still runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// An httpd pod as the API shows it: serving (ready, not terminating), its container's
/// Docker id, its restarts.
type PodState = (bool, Option<String>, i32);

/// The cluster, the test's own kube-rs client and runtime, the request loops.
struct Suite {
    cluster: Cluster,
    rt: tokio::runtime::Runtime,
    client: Client,
    loops: Vec<Loop>,
    t0: Instant,
}

impl Suite {
    fn step(&self, what: &str) {
        eprintln!("\n=== {what} (at {:?})", self.t0.elapsed());
    }

    /// Requests finished since `since` over all loops, and the failures among them.
    fn traffic(&self, since: Instant) -> (usize, Vec<String>) {
        let mut sent = 0;
        let mut failures = Vec::new();
        for l in &self.loops {
            let (n, f) = l.since(since);
            sent += n;
            failures.extend(f);
        }
        (sent, failures)
    }

    /// Fills in the traffic counts of `o` since `since`; failures are a problem if `strict`.
    fn count_traffic(&self, o: &mut Outcome, since: Instant, strict: bool) {
        let (sent, failures) = self.traffic(since);
        o.sent = sent;
        o.failed = failures.len();
        o.check(sent > 0, || "no request finished during the fault".into());
        if strict {
            o.check(failures.is_empty(), || {
                format!("{} requests failed: {failures:?}", failures.len())
            });
        } else if !failures.is_empty() {
            let first = &failures[0];
            let last = &failures[failures.len() - 1];
            o.notes.push(format!("failures from {first} to {last}"));
        }
    }

    /// Whether the last `n` requests of every loop since `since` were answered by `pods`
    /// (any pod if `None`).
    fn serving(&self, since: Instant, n: usize, pods: Option<&BTreeSet<String>>) -> bool {
        self.loops.iter().all(|l| {
            let last = l.last(since, n);
            last.len() == n
                && last.iter().all(|p| {
                    p.as_ref()
                        .is_some_and(|p| pods.is_none_or(|s| s.contains(p)))
                })
        })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// httpd pods: name → (ready and not terminating, container id, restarts); `None` when
    /// the API does not answer.
    fn httpd_pods(&self) -> Option<BTreeMap<String, PodState>> {
        let list = self
            .rt
            .block_on(self.pods().list(&ListParams::default().labels("app=httpd")))
            .ok()?;
        Some(
            list.items
                .into_iter()
                .filter_map(|p| {
                    let serving = is_ready(&p) && p.metadata.deletion_timestamp.is_none();
                    let c = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
                    let id = docker_id(c).map(str::to_string);
                    Some((p.metadata.name.clone()?, (serving, id, c.restart_count)))
                })
                .collect(),
        )
    }

    /// The names of the httpd pods if there are exactly `REPLICAS`, all serving.
    fn settled_pods(&self) -> Option<BTreeSet<String>> {
        let pods = self.httpd_pods()?;
        (pods.len() == REPLICAS && pods.values().all(|(serving, _, _)| *serving))
            .then(|| pods.into_keys().collect())
    }

    fn node_ready(&self) -> bool {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Ok(node) = self.rt.block_on(nodes.get(self.cluster.node())) else {
            return false;
        };
        node.status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }
}

fn setup(cluster: Cluster) -> Suite {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = rt.block_on(kube_client(cluster.kubeconfig()));
    let mut s = Suite {
        cluster,
        rt,
        client,
        loops: Vec::new(),
        t0: Instant::now(),
    };
    s.step("httpd ×3 behind a LoadBalancer Service, the writers' namespace");
    let c = s.client.clone();
    s.rt.block_on(async {
        let pp = PostParams::default();
        Api::<k8s_openapi::api::core::v1::Namespace>::all(c.clone())
            .create(&pp, &from_json(json!({"metadata": {"name": NS}})))
            .await
            .expect("create the namespace");
        Api::<Deployment>::namespaced(c.clone(), "default")
            .create(
                &pp,
                &from_json(json!({
                    "metadata": {"name": "httpd", "labels": {"app": "httpd"}},
                    "spec": {
                        "replicas": REPLICAS,
                        "selector": {"matchLabels": {"app": "httpd"}},
                        "template": {
                            "metadata": {"labels": {"app": "httpd"}},
                            "spec": {"containers": [{"name": "httpd", "image": "httpd"}]},
                        },
                    },
                })),
            )
            .await
            .expect("create the Deployment");
        Api::<Service>::namespaced(c, "default")
            .create(
                &pp,
                &from_json(json!({
                    "metadata": {"name": "httpd"},
                    "spec": {
                        "type": "LoadBalancer",
                        "selector": {"app": "httpd"},
                        "ports": [{"port": 80, "targetPort": 80}],
                    },
                })),
            )
            .await
            .expect("create the Service");
    });
    let services: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let mut addrs = None;
    eventually("the Service's CLUSTER-IP and EXTERNAL-IP", || {
        let svc =
            s.rt.block_on(services.get("httpd"))
                .expect("get the Service");
        let cluster_ip: Option<Ipv4Addr> = svc
            .spec
            .and_then(|sp| sp.cluster_ip)
            .and_then(|ip| ip.parse().ok());
        let lb_ip: Option<Ipv4Addr> = svc
            .status
            .and_then(|st| st.load_balancer?.ingress?.first()?.ip.clone())
            .and_then(|ip| ip.parse().ok());
        addrs = cluster_ip.zip(lb_ip);
        addrs.is_some()
    });
    let (cluster_ip, lb_ip) = addrs.expect("checked");
    // Nothing sent below can leave the test's links (see tutorial.rs).
    assert_unreachable_here(cluster_ip, s.cluster.svc_cidr());
    assert_unreachable_here(lb_ip, s.cluster.pool());
    assert_route(s.cluster.client().cmd("ip"), lb_ip, "eth0", None);
    let mut pods = BTreeSet::new();
    eventually("3 serving httpd pods", || {
        s.cluster.kproxy.assert_running();
        pods = s.settled_pods().unwrap_or_default();
        !pods.is_empty()
    });
    let dir = s.cluster.dir().to_path_buf();
    s.loops = vec![
        Loop::start(
            s.cluster.host_cmd("sh"),
            &format!("http://{cluster_ip}/"),
            "host → CLUSTER-IP",
            &dir,
        ),
        Loop::start(
            s.cluster.host_cmd("sh"),
            &format!("http://{lb_ip}/"),
            "host → EXTERNAL-IP",
            &dir,
        ),
        Loop::start(
            s.cluster.client_cmd("sh"),
            &format!("http://{lb_ip}/"),
            "client → EXTERNAL-IP",
            &dir,
        ),
    ];
    let started = Instant::now();
    eventually("every loop answered 10 times in a row", || {
        s.serving(started, 10, Some(&pods))
    });
    s
}

/// kill -9 the API server under two Lease writers and a kube-rs watcher, restart it.
fn apiserver_kill(s: &mut Suite) -> Outcome {
    let mut o = Outcome::new("apiserver-kill");
    s.step("kill -9 the API server mid-writes");
    let t0 = Instant::now();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watch_errors = Arc::new(AtomicUsize::new(0));
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), NS);
    let watch = s.rt.spawn({
        let (seen, errors) = (Arc::clone(&seen), Arc::clone(&watch_errors));
        async move {
            let config = watcher::Config::default().labels("fault=a");
            let mut events = watcher(leases, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                        seen.lock()
                            .unwrap()
                            .insert(l.metadata.name.unwrap_or_default());
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let http = s.cluster.api.http();
    let writer = Writer::start(&http, "a", 2, 0);
    eventually("the writers' first creates", || {
        writer.answered_after(t0, |c| c == Some(201))
    });
    thread::sleep(Duration::from_secs(2));
    s.cluster.kill_apiserver();
    let killed = Instant::now();
    thread::sleep(Duration::from_secs(1));
    s.cluster.restart_apiserver();
    let restarted = Instant::now();
    o.notes.push(format!(
        "API server down {:?}",
        restarted.duration_since(killed)
    ));
    let resumed = wait_for(Duration::from_secs(20), || {
        writer.answered_after(restarted, |c| c == Some(201))
    });
    o.check(resumed, || {
        "no create answered 201 after the restart".into()
    });
    thread::sleep(Duration::from_secs(2));
    let writes = writer.stop();
    let acked: Vec<&Write> = writes.iter().filter(|w| w.code == Some(201)).collect();
    o.notes.push(format!("creates: {:?}", codes(&writes)));
    let stored = stored_leases(&s.cluster.api.http(), "a").unwrap_or_default();
    let lost: Vec<&str> = acked
        .iter()
        .filter(|w| !stored.contains(&w.name))
        .map(|w| w.name.as_str())
        .collect();
    o.lost = lost.len();
    o.check(lost.is_empty(), || {
        format!("acknowledged creates lost: {lost:?}")
    });
    // The watcher resumed: it sees every Lease created after the restart.
    let after: Vec<&str> = acked
        .iter()
        .filter(|w| w.at > restarted)
        .map(|w| w.name.as_str())
        .collect();
    let mut missed = Vec::new();
    wait_for(Duration::from_secs(20), || {
        let seen = seen.lock().unwrap();
        missed = after
            .iter()
            .filter(|n| !seen.contains(**n))
            .map(|n| (*n).to_string())
            .collect();
        missed.is_empty()
    });
    watch.abort();
    o.notes.push(format!(
        "watcher: {} Leases seen, {} created after the restart, {} stream errors",
        seen.lock().unwrap().len(),
        after.len(),
        watch_errors.load(Ordering::Relaxed)
    ));
    o.check(!after.is_empty() && missed.is_empty(), || {
        format!(
            "the watcher did not see {} of {} Leases created after the restart: {missed:?}",
            missed.len(),
            after.len()
        )
    });
    resumed_components(s, &mut o);
    s.count_traffic(&mut o, t0, true);
    o
}

/// After the API server's restart, the cluster's own watchers work again: the kubelet runs
/// a new pod bound to its node, the controller manager's EndpointSlice controller and
/// kproxy put a new Service with the httpd pods in the datapath. Both are removed again.
fn resumed_components(s: &Suite, o: &mut Outcome) {
    let pod = json!({
        "metadata": {"name": "after-restart"},
        "spec": {
            "nodeName": s.cluster.node(),
            "containers": [{"name": "c", "image": "kproxy/pause:1"}],
        },
    });
    let svc = json!({
        "metadata": {"name": "after-restart"},
        "spec": {"selector": {"app": "httpd"}, "ports": [{"port": 8080, "targetPort": 80}]},
    });
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NS);
    let services: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let created = create(s, &pods, &from_json(pod)) && create(s, &services, &from_json(svc));
    o.check(created, || {
        "cannot create a pod and a Service after the restart".into()
    });
    let running = wait_for(Duration::from_secs(20), || {
        s.rt.block_on(pods.get("after-restart"))
            .is_ok_and(|p| is_ready(&p))
    });
    o.check(running, || {
        "the kubelet did not run a pod created after the API server's restart".into()
    });
    let programmed = wait_for(Duration::from_secs(20), || {
        s.cluster.dump().iter().any(|r| {
            r["service"]
                .as_str()
                .is_some_and(|n| n.starts_with("default/after-restart"))
                && r["active_backends"] == REPLICAS
        })
    });
    o.check(programmed, || {
        "kproxy did not program a Service created after the API server's restart".into()
    });
    let dp = kube::api::DeleteParams::default();
    let _ = s.rt.block_on(pods.delete("after-restart", &dp));
    let _ = s.rt.block_on(services.delete("after-restart", &dp));
    // Gone before the next fault, which counts the node's containers.
    let gone = wait_for(Duration::from_secs(30), || {
        s.rt.block_on(pods.get_opt("after-restart"))
            .is_ok_and(|p| p.is_none())
    });
    o.check(gone, || {
        "the pod created after the restart was not deleted".into()
    });
}

/// Creates `obj`, retrying while the API does not answer (a connection of the old server);
/// whether it exists.
fn create<K>(s: &Suite, api: &Api<K>, obj: &K) -> bool
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    wait_for(Duration::from_secs(10), || {
        match s.rt.block_on(api.create(&PostParams::default(), obj)) {
            Ok(_) => true,
            Err(kube::Error::Api(e)) => e.code == 409,
            Err(_) => false,
        }
    })
}

/// kill -9 the kubelet; its pods keep serving; restarted, it adopts them.
fn kubelet_kill(s: &mut Suite) -> Outcome {
    let mut o = Outcome::new("kubelet-kill");
    s.step("kill -9 the kubelet");
    let before = s.httpd_pods().expect("list the pods");
    let containers_before = httpd_containers(s);
    let t0 = Instant::now();
    s.cluster.kubelet.kill();
    thread::sleep(Duration::from_secs(5));
    s.cluster.kubelet.restart();
    // The restarted kubelet syncs every pod and reports its status.
    thread::sleep(Duration::from_secs(5));
    let mut after = BTreeMap::new();
    let settled = wait_for(Duration::from_secs(20), || {
        after = s.httpd_pods().unwrap_or_default();
        s.node_ready() && after == before
    });
    let containers_after = httpd_containers(s);
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, b)| after.get(*name) != Some(*b))
        .map(|(name, _)| name)
        .collect();
    o.lost = changed.len();
    o.check(settled && changed.is_empty(), || {
        format!("pods not adopted as they were: before {before:?}, after {after:?}")
    });
    o.check(containers_before == containers_after, || {
        format!("Docker containers changed: {containers_before:?} → {containers_after:?}")
    });
    for needle in ["creating the pod sandbox", "starting container"] {
        let logged = s.cluster.kubelet.logged(needle);
        o.check(!logged, || {
            format!("the restarted kubelet logged {needle:?}")
        });
    }
    s.count_traffic(&mut o, t0, true);
    o
}

/// The Docker containers (sandboxes included, running or not) of the httpd pods.
fn httpd_containers(s: &Suite) -> BTreeSet<String> {
    let list =
        s.rt.block_on(s.pods().list(&ListParams::default().labels("app=httpd")))
            .expect("list the pods");
    list.items
        .iter()
        .filter_map(|p| p.metadata.uid.as_deref())
        .flat_map(|uid| s.cluster.kubelet.pod_containers(uid))
        .collect()
}

/// The frontends of the httpd Service in kproxy's datapath.
fn httpd_frontends(cluster: &Cluster) -> BTreeSet<String> {
    cluster
        .dump()
        .iter()
        .filter(|r| {
            r["service"]
                .as_str()
                .is_some_and(|s| s == "default/httpd" || s.starts_with("default/httpd:"))
        })
        .filter_map(|r| r["frontend"].as_str().map(str::to_string))
        .collect()
}

/// kill -9 kproxy; new connections keep working on the pinned datapath; restart it.
fn kproxy_kill(s: &mut Suite) -> Outcome {
    let mut o = Outcome::new("kproxy-kill");
    s.step("kill -9 kproxy");
    let before = httpd_frontends(&s.cluster);
    let t0 = Instant::now();
    s.cluster.kill_kproxy();
    thread::sleep(Duration::from_secs(5));
    let (down, _) = s.traffic(t0);
    let restarting = Instant::now();
    s.cluster.restart_kproxy();
    let restarted = Instant::now();
    thread::sleep(Duration::from_secs(5));
    let after = httpd_frontends(&s.cluster);
    o.lost = before.difference(&after).count();
    o.check(!before.is_empty() && before == after, || {
        format!("frontends before {before:?}, after the restart {after:?}")
    });
    o.notes.push(format!(
        "{down} requests with kproxy down, restart took {:?}",
        restarted.duration_since(restarting)
    ));
    s.count_traffic(&mut o, t0, true);
    o
}

/// Pods of the httpd Deployment as a watcher sees them, and the most that were ever active
/// (not terminating, not finished) at once.
struct PodCount {
    max_active: Arc<AtomicUsize>,
    names: Arc<Mutex<HashMap<String, bool>>>,
    task: tokio::task::JoinHandle<()>,
}

fn active(p: &Pod) -> bool {
    let finished = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    p.metadata.deletion_timestamp.is_none() && !finished
}

impl PodCount {
    fn start(s: &Suite) -> Self {
        let max_active = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(HashMap::new()));
        let (max, live) = (Arc::clone(&max_active), Arc::clone(&names));
        let pods = s.pods();
        let task = s.rt.spawn(async move {
            let config = watcher::Config::default().labels("app=httpd");
            let mut events = watcher(pods, config).default_backoff().boxed();
            let mut init = HashMap::new();
            while let Some(event) = events.next().await {
                let mut live = live.lock().unwrap();
                match event {
                    Ok(watcher::Event::Init) => init.clear(),
                    Ok(watcher::Event::InitApply(p)) => {
                        init.insert(p.metadata.name.clone().unwrap_or_default(), active(&p));
                    }
                    Ok(watcher::Event::InitDone) => *live = std::mem::take(&mut init),
                    Ok(watcher::Event::Apply(p)) => {
                        live.insert(p.metadata.name.clone().unwrap_or_default(), active(&p));
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        live.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    Err(_) => continue,
                }
                let n = live.values().filter(|a| **a).count();
                max.fetch_max(n, Ordering::Relaxed);
            }
        });
        Self {
            max_active,
            names,
            task,
        }
    }
}

/// kill -9 the controller manager during a rolling update, restart it.
fn controller_manager_kill(s: &mut Suite) -> Outcome {
    let mut o = Outcome::new("controller-manager-kill");
    s.step("kill -9 the controller manager during a rolling update");
    let old = s.settled_pods().expect("3 serving pods before the rollout");
    let count = PodCount::start(s);
    eventually("the pod watcher listed the pods", || {
        count.names.lock().unwrap().len() == REPLICAS
    });
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let t0 = Instant::now();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "faults.kproxy.io/restartedAt": format!("{:?}", std::time::SystemTime::now()),
    }}}}});
    let d =
        s.rt.block_on(deployments.patch("httpd", &PatchParams::default(), &Patch::Merge(&patch)))
            .expect("patch the Deployment's template");
    let generation = d.metadata.generation.unwrap_or_default();
    eventually("the rollout's first new pod", || {
        count.names.lock().unwrap().keys().any(|n| !old.contains(n))
    });
    s.cluster.kill_controller_manager();
    let killed = Instant::now();
    let old_at_kill = count
        .names
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, active)| **active && old.contains(*n))
        .count();
    o.notes.push(format!(
        "{old_at_kill} old pods still active when the controller manager was killed"
    ));
    o.check(old_at_kill > 0, || {
        "the rollout was over before the controller manager was killed".into()
    });
    thread::sleep(Duration::from_secs(3));
    s.cluster.restart_controller_manager();
    let down = killed.elapsed();
    let mut new = BTreeSet::new();
    let done = wait_for(Duration::from_secs(90), || {
        let Ok(d) = s.rt.block_on(deployments.get("httpd")) else {
            return false;
        };
        let st = d.status.unwrap_or_default();
        let n = Some(i32::try_from(REPLICAS).expect("small"));
        let rolled = d.metadata.generation == Some(generation)
            && st.observed_generation >= Some(generation)
            && st.updated_replicas == n
            && st.replicas == n
            && st.ready_replicas == n
            && st.available_replicas == n;
        new = s.settled_pods().unwrap_or_default();
        rolled && !new.is_empty() && new.is_disjoint(&old)
    });
    o.check(done, || {
        format!(
            "the rollout did not complete within 90 s of the restart (old pods {old:?}, now {:?})",
            s.httpd_pods()
        )
    });
    let served = done && wait_for(Duration::from_secs(20), || s.serving(t0, 10, Some(&new)));
    o.check(!done || served, || {
        "the loops' last 10 answers did not all come from the new pods".into()
    });
    count.task.abort();
    let max = count.max_active.load(Ordering::Relaxed);
    o.notes.push(format!(
        "controller manager down {:?}; rollout done {:?} after the patch; at most {max} pods \
         active at once",
        down,
        t0.elapsed()
    ));
    o.check(max <= REPLICAS + MAX_SURGE, || {
        format!("{max} pods active at once, more than replicas {REPLICAS} + maxSurge {MAX_SURGE}")
    });
    o.lost = REPLICAS - new.len().min(REPLICAS);
    s.count_traffic(&mut o, t0, true);
    o
}

/// Fills the API server's tmpfs under a Lease writer; frees it.
fn disk_full(s: &mut Suite) -> Outcome {
    let mut o = Outcome::new("disk-full");
    s.step("fill the API server's disk");
    let tmpfs = s
        .cluster
        .api_tmpfs()
        .expect("the API server's data directory is on a tmpfs")
        .to_path_buf();
    let filler = tmpfs.join("filler");
    let http = s.cluster.api.http();
    let t0 = Instant::now();
    // Large objects: the store file has to grow soon after the disk is full.
    let writer = Writer::start(&http, "f", 1, 32 * 1024);
    eventually("the writer's first creates", || {
        writer.answered_after(t0, |c| c == Some(201))
    });
    thread::sleep(Duration::from_secs(1));
    let filled = fill(&filler);
    let full_at = Instant::now();
    o.notes.push(format!("filled {} MiB", filled >> 20));
    let refused = wait_for(Duration::from_secs(20), || {
        writer.answered_after(full_at, |c| c.is_some_and(|c| c >= 500))
    });
    o.check(refused, || {
        "no create answered 5xx within 20 s of the disk filling up".into()
    });
    let readyz = http
        .try_req("GET", "/readyz", "text/plain", None)
        .map_or_else(
            |e| format!("no answer ({})", e.trim()),
            |r| r.code.to_string(),
        );
    o.notes.push(format!("/readyz on a full disk: {readyz}"));
    let pid = s.cluster.api.daemon.pid();
    o.check(alive(pid), || "the API server exited on a full disk".into());
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    let recovered = wait_for(Duration::from_secs(30), || {
        writer.answered_after(freed, |c| c == Some(201))
    });
    o.check(recovered, || {
        "creates did not succeed again within 30 s of freeing the disk".into()
    });
    if recovered {
        o.notes.push(format!(
            "writes succeed again {:?} after freeing",
            freed.elapsed()
        ));
    } else {
        // The faults after this one need an API server.
        s.cluster.restart_apiserver();
        o.notes.push("API server restarted to go on".into());
    }
    thread::sleep(Duration::from_secs(1));
    let writes = writer.stop();
    o.notes.push(format!("creates: {:?}", codes(&writes)));
    let stored = stored_leases(&s.cluster.api.http(), "f").unwrap_or_default();
    let lost: Vec<&str> = writes
        .iter()
        .filter(|w| w.code == Some(201) && !stored.contains(&w.name))
        .map(|w| w.name.as_str())
        .collect();
    o.lost = lost.len();
    o.check(lost.is_empty(), || {
        format!("acknowledged creates lost: {lost:?}")
    });
    s.count_traffic(&mut o, t0, false);
    o
}

/// Writes zeros to `path` until the filesystem is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// The running dockerd: its pid and command line.
fn dockerd() -> (u32, Vec<String>) {
    let pid: u32 = std::fs::read_to_string(DOCKER_PID)
        .expect("dockerd's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("dockerd's command line");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.first().is_some_and(|a| a.ends_with("dockerd")),
        "pid {pid} from {DOCKER_PID} is not dockerd: {args:?}"
    );
    (pid, args)
}

fn docker_answers() -> bool {
    Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "2",
            "--unix-socket",
            DOCKER_SOCK,
            "http://docker/_ping",
        ])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"OK")
}

/// Starts dockerd with `args` as `cargo xtask setup` does: its own session, logging to
/// the setup's log file.
fn start_dockerd(args: &[String]) {
    std::fs::create_dir_all(Path::new(DOCKERD_LOG).parent().expect("a directory"))
        .expect("create the log directory");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .expect("open dockerd's log");
    let status = Command::new("setsid")
        .arg("-f")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .status()
        .expect("run setsid");
    assert!(status.success(), "setsid -f dockerd: {status}");
}

/// Starts dockerd again if a test stopped it and did not get to start it (a panic).
struct DockerdBack(Vec<String>);

impl Drop for DockerdBack {
    fn drop(&mut self) {
        if !docker_answers() && !Path::new(DOCKER_PID).exists() {
            eprintln!("faults: starting dockerd again: {:?}", self.0);
            start_dockerd(&self.0);
            let _ = wait_for(Duration::from_mins(1), docker_answers);
        }
    }
}

/// SIGTERM dockerd, start it again; the kubelet must bring the pods back.
fn dockerd_restart(s: &mut Suite) -> Outcome {
    let mut o = Outcome::new("dockerd-restart");
    s.step("restart dockerd");
    let (pid, args) = dockerd();
    let back = DockerdBack(args.clone());
    let t0 = Instant::now();
    let out = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .output()
        .expect("run kill");
    assert!(out.status.success(), "kill -TERM {pid}: {out:?}");
    let stopped = wait_for(Duration::from_mins(1), || !alive(pid));
    assert!(stopped, "dockerd {pid} did not exit within 60 s of SIGTERM");
    let down = Instant::now();
    // dockerd removes its pid file on a clean exit; a stale one would stop the new one.
    let _ = std::fs::remove_file(DOCKER_PID);
    start_dockerd(&args);
    let up = wait_for(Duration::from_mins(1), docker_answers);
    assert!(up, "dockerd did not answer within 60 s of its start");
    drop(back);
    let answered = Instant::now();
    o.notes.push(format!(
        "dockerd stopped in {:?}, answered {:?} after its start",
        down.duration_since(t0),
        answered.duration_since(down)
    ));
    let mut pods = BTreeSet::new();
    let mut not_ready = false;
    let recovered = wait_for(Duration::from_mins(2), || {
        pods = s.settled_pods().unwrap_or_default();
        let ready = s.node_ready();
        not_ready |= !ready;
        !pods.is_empty() && ready && s.serving(answered, 10, Some(&pods))
    });
    o.notes.push(format!(
        "the Node was {}seen NotReady after dockerd's start",
        if not_ready { "" } else { "not " }
    ));
    o.check(recovered, || {
        format!(
            "not recovered within 120 s of dockerd's start: pods {:?}, node Ready {}",
            s.httpd_pods(),
            s.node_ready()
        )
    });
    if recovered {
        o.notes.push(format!(
            "pods back, node Ready and the Service answering {:?} after the SIGTERM",
            t0.elapsed()
        ));
    }
    o.lost = REPLICAS - pods.len().min(REPLICAS);
    s.count_traffic(&mut o, t0, false);
    o
}

#[test]
fn privileged_faults() {
    if !privileged("privileged_faults") {
        return;
    }
    let options = Options {
        api_tmpfs: Some(API_TMPFS.into()),
    };
    let cluster = Cluster::start_with("kpt-faults", &options);
    let mut s = setup(cluster);
    let mut outcomes = Vec::new();
    // dockerd's restart stops every container on the machine: last.
    let faults: [fn(&mut Suite) -> Outcome; 6] = [
        apiserver_kill,
        kubelet_kill,
        kproxy_kill,
        controller_manager_kill,
        disk_full,
        dockerd_restart,
    ];
    for fault in faults {
        let o = fault(&mut s);
        // Straight to stderr, past the test harness's capture: `cargo xtask test` (and CI's
        // log) shows the suite's lines even when it passes.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", o.line());
        for n in &o.notes {
            let _ = writeln!(err, "    {n}");
        }
        for p in &o.problems {
            let _ = writeln!(err, "    PROBLEM: {p}");
        }
        drop(err);
        outcomes.push(o);
    }
    for l in &mut s.loops {
        l.stop();
    }
    let broken: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| format!("{} — {}", o.line(), o.problems.join("; ")))
        .collect();
    eprintln!("\n=== fault suite done in {:?}", s.t0.elapsed());
    assert!(
        broken.is_empty(),
        "faults broke promises:\n{}\nall:\n{}",
        broken.join("\n"),
        outcomes
            .iter()
            .map(Outcome::line)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
