//! Load generator and datapath probe for `cargo xtask bench proxy`: writes Services and
//! EndpointSlices through the API server (kube-rs, as the endpoint controller would, with the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation) and checks from a socket in
//! the socket-LB cgroup which backend a ClusterIP really reaches.
//!
//! Endpoint addresses come from `10.192.0.0/12`; the bench routes that range to one backend
//! namespace, where a `local` route makes every address of it its own, so each endpoint is a
//! real listener and `serve` tells the probe which one it reached.
//!
//! * `serve --port P` — TCP server; every connection gets the address it was made to
//!   (`getsockname`) as one line, then is closed.
//! * `load --services N --node NODE --state FILE` — a Node object, a namespace and N Services
//!   with one slice of 3 ready endpoints each; progress on stderr; the Services' ClusterIPs
//!   and endpoints go to FILE; prints `{"services":..,"seconds":..,"objects_per_s":..}`.
//! * `probe --state FILE --samples K --cgroup DIR --netns NS` — one connection to each of K
//!   random Services (plus the first and the last); prints how many reached one of their own
//!   endpoints.
//! * `churn --state FILE --changes N --cgroup DIR --netns NS` — N times: one endpoint of a
//!   random Service moves to a new address; timed from just before the API write until a
//!   connection to the ClusterIP reaches the new address. Prints the latencies.
//!
//! `probe` and `churn` move the whole process into the socket-LB cgroup (a socket belongs to
//! its creator's cgroup) and open probe connections from a thread that joined the network
//! namespace NS, while the kube client stays in the starting namespace (the API server
//! listens on its loopback).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, stream};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const POOL: u32 = u32::from_be_bytes([10, 192, 0, 0]);
const POOL_SIZE: u32 = 1 << 20;
const ENDPOINTS: usize = 3;
const PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ProbeAt {
    /// State written by `load`.
    #[arg(long)]
    state: PathBuf,
    /// The socket-LB cgroup (cgroup v2 directory) the process joins.
    #[arg(long)]
    cgroup: PathBuf,
    /// Named network namespace (`ip netns`) the probe connections come from.
    #[arg(long)]
    netns: String,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Serve {
        #[arg(long, default_value_t = TARGET_PORT)]
        port: u16,
    },
    Load {
        #[arg(long)]
        services: usize,
        #[arg(long)]
        node: String,
        #[arg(long)]
        state: PathBuf,
        #[arg(long, default_value = "proxybench")]
        namespace: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    Probe {
        #[command(flatten)]
        at: ProbeAt,
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
    Churn {
        #[command(flatten)]
        at: ProbeAt,
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// A change not seen within this time counts as failed.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Pause between two probe connections (a busy loop would take a core from
        /// kproxy and the API server on a small machine).
        #[arg(long, default_value_t = 100)]
        probe_gap_us: u64,
    },
}

/// The address of endpoint number `k` of the pool.
fn pool_addr(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(POOL + 1 + k % (POOL_SIZE - 2))
}

/// What `load` leaves for `probe` and `churn`.
struct State {
    namespace: String,
    /// (name, ClusterIP, endpoint addresses).
    services: Vec<(String, Ipv4Addr, Vec<Ipv4Addr>)>,
    /// The next unused pool index.
    next: u32,
}

impl State {
    fn save(&self, path: &Path) -> Result<()> {
        let services: Vec<Value> = self
            .services
            .iter()
            .map(|(n, ip, eps)| {
                json!([
                    n,
                    ip.to_string(),
                    eps.iter().map(ToString::to_string).collect::<Vec<_>>()
                ])
            })
            .collect();
        let v = json!({"namespace": self.namespace, "next": self.next, "services": services});
        std::fs::write(path, v.to_string()).with_context(|| format!("write {}", path.display()))
    }

    fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).context("state is JSON")?;
        let ip = |v: &Value| -> Result<Ipv4Addr> {
            v.as_str()
                .unwrap_or_default()
                .parse()
                .context("an IPv4 address in the state")
        };
        let mut services = Vec::new();
        for s in v["services"].as_array().into_iter().flatten() {
            let eps = s[2]
                .as_array()
                .into_iter()
                .flatten()
                .map(ip)
                .collect::<Result<_>>()?;
            services.push((
                s[0].as_str().unwrap_or_default().to_string(),
                ip(&s[1])?,
                eps,
            ));
        }
        if services.is_empty() {
            bail!("no services in {}", path.display());
        }
        Ok(Self {
            namespace: v["namespace"].as_str().unwrap_or("default").to_string(),
            services,
            next: v["next"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
        })
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

fn slice_endpoints(eps: &[Ipv4Addr]) -> Value {
    eps.iter()
        .map(|ip| {
            json!({"addresses": [ip.to_string()],
                   "conditions": {"ready": true, "serving": true, "terminating": false}})
        })
        .collect()
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": PORT, "targetPort": TARGET_PORT, "protocol": "TCP"}]}
    }))
    .expect("a valid Service")
}

fn slice(svc: &str, eps: &[Ipv4Addr]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{svc}-ep"),
            "labels": {"kubernetes.io/service-name": svc,
                       "endpointslice.kubernetes.io/managed-by": "kpt-proxyload"},
            "annotations": {TRIGGER: now_rfc3339()},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
        "endpoints": slice_endpoints(eps),
    }))
    .expect("a valid EndpointSlice")
}

async fn load(
    client: Client,
    services: usize,
    node: &str,
    state: &Path,
    namespace: &str,
    concurrency: usize,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}}))?,
        )
        .await
        .with_context(|| format!("create Node {node}"))?;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": namespace}}))?,
    )
    .await
    .with_context(|| format!("create namespace {namespace}"))?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let step = (services / 10).max(1);
    let mut results: Vec<(usize, Ipv4Addr, Vec<Ipv4Addr>)> = stream::iter(0..services)
        .map(|i| {
            let (svcs, slices, done) = (svcs.clone(), slices.clone(), Arc::clone(&done));
            async move {
                let name = format!("s{i}");
                let created = svcs
                    .create(&PostParams::default(), &service(&name))
                    .await
                    .with_context(|| format!("create Service {name}"))?;
                let vip: Ipv4Addr = created
                    .spec
                    .and_then(|s| s.cluster_ip)
                    .context("no ClusterIP allocated")?
                    .parse()
                    .context("ClusterIP")?;
                let base = u32::try_from(i * ENDPOINTS).context("too many endpoints")?;
                let eps: Vec<Ipv4Addr> = (0..u32::try_from(ENDPOINTS).expect("few endpoints"))
                    .map(|e| pool_addr(base + e))
                    .collect();
                slices
                    .create(&PostParams::default(), &slice(&name, &eps))
                    .await
                    .with_context(|| format!("create EndpointSlice of {name}"))?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    eprintln!(
                        "kpt-proxyload: {n}/{services} Services with their slices ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                anyhow::Ok((i, vip, eps))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let secs = started.elapsed().as_secs_f64();
    results.sort_by_key(|r| r.0);
    State {
        namespace: namespace.to_string(),
        services: results
            .into_iter()
            .map(|(i, vip, eps)| (format!("s{i}"), vip, eps))
            .collect(),
        next: u32::try_from(services * ENDPOINTS)?,
    }
    .save(state)?;
    println!(
        "{}",
        json!({"services": services, "seconds": secs,
               "objects_per_s": (services * 2) as f64 / secs})
    );
    Ok(())
}

/// A small xorshift generator: the bench needs spread, not quality.
struct Rng(u64);

impl Rng {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the seed keeps the low 64 bits of the clock"
    )]
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Self(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("below n, which is a usize")
    }
}

/// Moves this process (all its threads) into `cgroup`: sockets created from now on are
/// under its socket-LB programs.
fn join_cgroup(cgroup: &Path) -> Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining cgroup {}", cgroup.display()))
}

/// Moves the calling thread into the named network namespace.
fn join_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// One connection to `vip`: the backend address that answered.
fn reach(vip: SocketAddrV4) -> std::io::Result<Ipv4Addr> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(vip), Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("unexpected answer {buf:?}")))
}

/// Runs `f` on a thread inside the network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<Result<T>>> {
    let netns = netns.to_string();
    Ok(thread::Builder::new().name("probe".into()).spawn(move || {
        join_netns(&netns)?;
        Ok(f())
    })?)
}

fn probe(at: &ProbeAt, samples: usize) -> Result<()> {
    let state = State::load(&at.state)?;
    join_cgroup(&at.cgroup)?;
    let mut rng = Rng::new();
    let n = state.services.len();
    let mut picks = vec![0, n - 1];
    picks.extend((0..samples).map(|_| rng.below(n)));
    let chosen: Vec<(String, Ipv4Addr, Vec<Ipv4Addr>)> = picks
        .into_iter()
        .map(|i| state.services[i].clone())
        .collect();
    let results = in_netns(&at.netns, move || {
        chosen
            .into_iter()
            .map(|(name, vip, eps)| {
                let got = reach(SocketAddrV4::new(vip, PORT));
                let ok = got.as_ref().is_ok_and(|a| eps.contains(a));
                let got = match got {
                    Ok(a) => a.to_string(),
                    Err(e) => e.to_string(),
                };
                json!({"service": name, "vip": vip.to_string(), "ok": ok, "answer": got})
            })
            .collect::<Vec<_>>()
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
    let ok = results.iter().filter(|r| r["ok"] == true).count();
    let bad: Vec<&Value> = results.iter().filter(|r| r["ok"] != true).collect();
    println!("{}", json!({"probed": results.len(), "ok": ok, "bad": bad}));
    Ok(())
}

/// A request to the probe thread: connect to `vip` until `want` answers.
struct Watch {
    vip: SocketAddrV4,
    want: Ipv4Addr,
    t0: Instant,
}

/// What the probe thread saw: time from `t0` to the first answer of `want` (`None` after
/// the timeout), and connections made.
type Seen = (Option<Duration>, usize);

async fn churn(
    client: Client,
    at: &ProbeAt,
    changes: usize,
    timeout: Duration,
    gap: Duration,
) -> Result<()> {
    let mut state = State::load(&at.state)?;
    join_cgroup(&at.cgroup)?;
    let slices: Api<EndpointSlice> = Api::namespaced(client, &state.namespace);
    let (req_tx, req_rx) = mpsc::channel::<Watch>();
    let (seen_tx, seen_rx) = mpsc::channel::<Seen>();
    let prober = in_netns(&at.netns, move || {
        for w in req_rx {
            let mut attempts = 0;
            let seen = loop {
                attempts += 1;
                if reach(w.vip).is_ok_and(|a| a == w.want) {
                    break Some(w.t0.elapsed());
                }
                if w.t0.elapsed() > timeout {
                    break None;
                }
                thread::sleep(gap);
            };
            if seen_tx.send((seen, attempts)).is_err() {
                return;
            }
        }
    })?;
    let seen_rx = Arc::new(std::sync::Mutex::new(seen_rx));
    let mut rng = Rng::new();
    let mut latencies = Vec::with_capacity(changes);
    let mut write_ms = Vec::with_capacity(changes);
    let mut failed = Vec::new();
    let mut attempts_total = 0;
    for c in 0..changes {
        let i = rng.below(state.services.len());
        let j = rng.below(ENDPOINTS);
        let new = pool_addr(state.next);
        state.next += 1;
        let (name, vip, eps) = &mut state.services[i];
        let old = eps[j];
        eps[j] = new;
        let patch = json!({
            "metadata": {"annotations": {TRIGGER: now_rfc3339()}},
            "endpoints": slice_endpoints(eps),
        });
        let t0 = Instant::now();
        req_tx
            .send(Watch {
                vip: SocketAddrV4::new(*vip, PORT),
                want: new,
                t0,
            })
            .context("probe thread gone")?;
        slices
            .patch(
                &format!("{name}-ep"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("patch the slice of {name}"))?;
        write_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let rx = Arc::clone(&seen_rx);
        let (seen, attempts) = tokio::task::spawn_blocking(move || rx.lock().unwrap().recv())
            .await?
            .context("probe thread gone")?;
        attempts_total += attempts;
        if let Some(d) = seen {
            latencies.push(d.as_secs_f64() * 1000.0);
        } else {
            eprintln!(
                "kpt-proxyload: change {c}: {name} {old} -> {new} not seen within {timeout:?}"
            );
            failed.push(
                json!({"service": name.clone(), "old": old.to_string(), "new": new.to_string()}),
            );
        }
        if (c + 1) % (changes / 4).max(1) == 0 {
            eprintln!("kpt-proxyload: {}/{changes} endpoint changes", c + 1);
        }
    }
    drop(req_tx);
    prober
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
    state.save(&at.state)?;
    println!(
        "{}",
        json!({"changes": changes, "latencies_ms": latencies, "failed": failed,
               "write_ms": write_ms, "probe_connections": attempts_total})
    );
    Ok(())
}

/// Answers every connection with the local address it was made to.
fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind :{port}"))?;
    eprintln!("kpt-proxyload: serving on :{port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if let Ok(SocketAddr::V4(local)) = conn.local_addr() {
            let _ = writeln!(conn, "{}", local.ip());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli: Cli = clap::Parser::parse();
    match cli.cmd {
        Cmd::Serve { port } => serve(port),
        Cmd::Probe { at, samples } => probe(&at, samples),
        Cmd::Load {
            services,
            node,
            state,
            namespace,
            concurrency,
        } => {
            let client = Client::try_default()
                .await
                .context("kube client ($KUBECONFIG)")?;
            load(client, services, &node, &state, &namespace, concurrency).await
        }
        Cmd::Churn {
            at,
            changes,
            timeout_ms,
            probe_gap_us,
        } => {
            let client = Client::try_default()
                .await
                .context("kube client ($KUBECONFIG)")?;
            churn(
                client,
                &at,
                changes,
                Duration::from_millis(timeout_ms),
                Duration::from_micros(probe_gap_us),
            )
            .await
        }
    }
}
