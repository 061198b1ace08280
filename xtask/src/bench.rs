//! `cargo xtask bench [dataplane]`: the service datapaths side by side, in one run, on one
//! lab topology (the shape of `kproxy_tests::lab`):
//!
//! ```text
//!  client netns                node netns                         backend netns b0..b3
//!  eth0 192.0.2.1 ──veth── up0 192.0.2.2   br0 10.244.1.1 ──veth── eth0 10.244.1.(2+i)
//!  (+ 192.0.2.10.. as        (kproxy / iptables / nftables)        (kpt-net serve :8080)
//!   per-run source IPs)
//! ```
//!
//! Modes: direct to a pod, kproxy socket-LB (a host process in the lab cgroup), kproxy XDP
//! (native; generic and tc at the smallest service count) on a LoadBalancer IP, kube-proxy
//! shaped iptables rules (nft and legacy backends) and kube-proxy shaped nftables rules, each
//! with N services of 4 endpoints. Results go to `target/bench/dataplane.{md,svg}`.
//!
//! Everything created lives in namespaces, a cgroup, bpffs directories and temp files owned
//! by guards, so an error (or Ctrl-C, which is checked between steps) removes it all.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use kproxy_common::MAX_SERVICES;
use kproxy_tests::{
    BpffsDir, NetNs,
    lab::{BACKEND_PORT, Cgroup, Topology, backend_ip},
    mono_ns, unique,
};
use serde_json::Value;

use crate::{
    setup::{SetupArgs, setup},
    util::{cargo, is_root, run_cmd, step, workspace_root},
};

const BACKENDS: usize = 4;
/// The LoadBalancer IP of the measured service (the XDP / tc path).
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const SVC_PORT: u16 = 80;

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark (default: all of them).
    #[arg(value_enum)]
    bench: Option<Which>,
    /// Length of one load-generator run in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Runs per connection-rate figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent workers opening connections.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Service counts to compare (4 endpoints each); proxy: the largest, 3 endpoints each.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    services: Vec<usize>,
    /// Single-service changes timed per mode at the largest service count.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// api: objects created (and held while measuring memory).
    #[arg(long, default_value_t = 10_000)]
    api_objects: usize,
    /// api: concurrent client tasks.
    #[arg(long, default_value_t = 32)]
    api_concurrency: usize,
    /// api: seconds of gets.
    #[arg(long, default_value_t = 5.0)]
    api_get_seconds: f64,
    /// api: concurrent watchers.
    #[arg(long, default_value_t = 100)]
    api_watchers: usize,
    /// api: changes each watcher must receive.
    #[arg(long, default_value_t = 1000)]
    api_watch_events: usize,
    /// kubelet: pods started one at a time (each next to a bare docker run + veth).
    #[arg(long, default_value_t = 15)]
    kubelet_runs: usize,
    /// kubelet: pods created at once.
    #[arg(long, default_value_t = 50)]
    kubelet_pods: usize,
    /// controllers: pods created and timed until bound.
    #[arg(long, default_value_t = 3000)]
    ctrl_schedule_pods: usize,
    /// controllers: replicas of the timed Deployment.
    #[arg(long, default_value_t = 1000)]
    ctrl_replicas: i32,
    /// controllers: latency samples (readiness flips, LoadBalancer Services).
    #[arg(long, default_value_t = 200)]
    ctrl_samples: usize,
    /// controllers: pods in the cluster when memory is read.
    #[arg(long, default_value_t = 10_000)]
    ctrl_pods: usize,
    /// proxy: endpoint changes timed end to end (the Service count is the largest
    /// --services).
    #[arg(long, default_value_t = 200)]
    proxy_changes: usize,
    /// cluster: `cargo xtask run` starts timed.
    #[arg(long, default_value_t = 3)]
    cluster_starts: usize,
    /// cluster: samples per latency (deployments created, LoadBalancer Services exposed).
    #[arg(long, default_value_t = 10)]
    cluster_samples: usize,
    /// cluster: `kctl bench --duration` in seconds.
    #[arg(long, default_value_t = 6)]
    cluster_bench_seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Dataplane,
    Api,
    Kubelet,
    Controllers,
    Proxy,
    Cluster,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.bench == Some(Which::Kubelet) {
        setup(&SetupArgs::default())?;
        return kubelet(args);
    }
    setup(&SetupArgs {
        no_docker: args.bench.is_some(),
    })?;
    if args.bench == Some(Which::Api) {
        return api(args);
    }
    if args.bench == Some(Which::Controllers) {
        return controllers(args);
    }
    if args.bench == Some(Which::Proxy) {
        return proxy(args);
    }
    if args.bench == Some(Which::Cluster) {
        return cluster(args);
    }
    if !is_root() {
        bail!("the benchmarks need root (network namespaces, eBPF, iptables)");
    }
    let mut services = args.services.clone();
    services.sort_unstable();
    services.dedup();
    if services.is_empty() || services[0] == 0 || *services.last().unwrap() > 60_000 {
        bail!("--services takes counts between 1 and 60000");
    }
    step("bench: cargo build --release --bins");
    run_cmd(cargo().args(["build", "--release", "--bins"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let bins = Bins {
        kproxy: target.join("release/kproxy"),
        kpt_net: target.join("release/kpt-net"),
    };
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("mkdir {}", out_dir.display()))?;
    crate::util::install_stop_handlers();
    match args.bench {
        Some(Which::Api | Which::Kubelet | Which::Controllers | Which::Proxy | Which::Cluster) => {
            unreachable!("handled above")
        }
        Some(Which::Dataplane) => dataplane(args, &services, &bins, &out_dir),
        None => {
            dataplane(args, &services, &bins, &out_dir)?;
            api(args)?;
            controllers(args)?;
            proxy(args)?;
            kubelet(args)?;
            cluster(args)
        }
    }
}

/// `cargo build --release` of `packages`' binaries; returns the target directory and the
/// report directory (target/bench, created).
fn release_build(packages: &[&str]) -> Result<(PathBuf, PathBuf)> {
    step(&format!(
        "bench: cargo build --release ({})",
        packages.join(", ")
    ));
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--bins"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    run_cmd(&mut cmd)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("mkdir {}", out_dir.display()))?;
    Ok((target, out_dir))
}

fn api(args: &BenchArgs) -> Result<()> {
    let (target, out_dir) = release_build(&["kproxy-apiserver", "kproxy-tests"])?;
    crate::bench_api::run(
        &crate::bench_api::ApiBench {
            objects: args.api_objects,
            concurrency: args.api_concurrency,
            get_seconds: args.api_get_seconds,
            watchers: args.api_watchers,
            watch_events: args.api_watch_events,
        },
        &target,
        &out_dir,
    )
}

fn controllers(args: &BenchArgs) -> Result<()> {
    let (target, out_dir) = release_build(&[
        "kproxy-apiserver",
        "kproxy-controller-manager",
        "kproxy-scheduler",
        "kproxy-tests",
    ])?;
    crate::bench_controllers::run(
        &crate::bench_controllers::ControllersBench {
            schedule_pods: args.ctrl_schedule_pods,
            replicas: args.ctrl_replicas,
            samples: args.ctrl_samples,
            many_pods: args.ctrl_pods,
        },
        &target,
        &out_dir,
    )
}

fn proxy(args: &BenchArgs) -> Result<()> {
    if !is_root() {
        bail!("the proxy benchmark needs root (eBPF, network namespaces, cgroups)");
    }
    let (target, out_dir) = release_build(&["kproxy-apiserver", "kproxy", "kproxy-tests"])?;
    crate::bench_proxy::run(
        &crate::bench_proxy::ProxyBench {
            services: args.services.iter().copied().max().unwrap_or(10_000),
            changes: args.proxy_changes,
        },
        &target,
        &out_dir,
    )
}

fn cluster(args: &BenchArgs) -> Result<()> {
    if !is_root() {
        bail!("the cluster benchmark runs `cargo xtask run`: it needs root");
    }
    crate::util::install_stop_handlers();
    // Everything `cargo xtask run` starts, and `cargo xtask` itself, so that the timed
    // starts build nothing.
    let (target, out_dir) = release_build(&crate::run::COMPONENT_PACKAGES)?;
    run_cmd(cargo().args(["build", "-p", "xtask"]))?;
    crate::bench_cluster::run(
        &crate::bench_cluster::ClusterBench {
            starts: args.cluster_starts,
            samples: args.cluster_samples,
            bench_seconds: args.cluster_bench_seconds,
        },
        &target,
        &out_dir,
    )
}

fn kubelet(args: &BenchArgs) -> Result<()> {
    if !is_root() {
        bail!("the kubelet benchmark needs root (Docker, network namespaces)");
    }
    let (target, out_dir) = release_build(&["kproxy-apiserver", "kproxy-kubelet"])?;
    crate::bench_kubelet::run(
        &crate::bench_kubelet::KubeletBench {
            sequential: args.kubelet_runs,
            bulk: args.kubelet_pods,
        },
        &target,
        &out_dir,
    )
}

// === Interruption ===

fn check_interrupted() -> Result<()> {
    if crate::util::stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

fn progress(msg: &str) {
    println!("bench: {msg}");
    let _ = std::io::stdout().flush();
}

// === Guards ===

struct Bins {
    kproxy: PathBuf,
    kpt_net: PathBuf,
}

/// A child process in its own process group whose stderr lines are collected; killed on
/// drop.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(Self { child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn matching(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    fn tail(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until more than `before` lines contain `needle`; returns line number `before`.
    fn wait_line(&mut self, needle: &str, before: usize, timeout: Duration) -> Result<String> {
        let started = Instant::now();
        loop {
            if let Some(line) = self.matching(needle).into_iter().nth(before) {
                return Ok(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("process exited ({status}); log:\n{}", self.tail());
            }
            if started.elapsed() > timeout {
                bail!(
                    "no {needle:?} line within {timeout:?}; log:\n{}",
                    self.tail()
                );
            }
            check_interrupted()?;
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory, removed with its content on drop.
struct TmpDir {
    path: PathBuf,
}

impl TmpDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(unique("kproxy-bench"));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// === Topology ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The external client namespace (traffic crosses the uplink).
    Client,
    /// A process in the node namespace inside the socket-LB cgroup.
    Host,
}

struct Topo {
    // Dropped in this order: servers, then namespaces, cgroup and files.
    servers: Vec<Proc>,
    client: NetNs,
    node: NetNs,
    _backends: Vec<NetNs>,
    cgroup: Cgroup,
    tmp: TmpDir,
    kpt_net: PathBuf,
    kproxy: PathBuf,
    next_client_ip: std::cell::Cell<u8>,
    next_host_ip: std::cell::Cell<u8>,
}

fn sysctls(ns: &NetNs, extra: &[&str]) -> Result<()> {
    let mut cmd = ns.cmd("sysctl");
    cmd.args([
        "-qw",
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.tcp_timestamps=1",
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.core.somaxconn=4096",
        "net.ipv4.tcp_max_syn_backlog=4096",
    ])
    .args(extra);
    run_quiet(&mut cmd)
}

impl Topo {
    fn new(bins: &Bins) -> Result<Self> {
        let Topology {
            client,
            node,
            backends,
        } = Topology::build("kpb", BACKENDS);
        sysctls(&client, &[])?;
        sysctls(&node, &[])?;
        let mut servers = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            sysctls(b, &[])?;
            let mut cmd = b.cmd(&bins.kpt_net);
            cmd.args(["serve", "--name", &format!("b{i}"), "--port", "8080"]);
            servers.push(Proc::spawn(cmd)?);
        }
        for s in &mut servers {
            s.wait_line("serving", 0, Duration::from_secs(10))?;
        }
        Ok(Self {
            servers,
            client,
            node,
            _backends: backends,
            cgroup: Cgroup::new(),
            tmp: TmpDir::new()?,
            kpt_net: bins.kpt_net.clone(),
            kproxy: bins.kproxy.clone(),
            next_client_ip: std::cell::Cell::new(10),
            next_host_ip: std::cell::Cell::new(10),
        })
    }

    /// A fresh source address for one run, so TIME_WAIT sockets and connection tracking
    /// entries of earlier runs never meet this one's 4-tuples.
    fn fresh_ip(&self, from: Side) -> Result<Ipv4Addr> {
        let (cell, ns, dev, base) = match from {
            Side::Client => (&self.next_client_ip, &self.client, "eth0", [192, 0, 2]),
            Side::Host => (&self.next_host_ip, &self.node, "br0", [10, 244, 1]),
        };
        let last = cell.get();
        if last == 254 {
            bail!("out of source addresses");
        }
        cell.set(last + 1);
        let ip = Ipv4Addr::new(base[0], base[1], base[2], last);
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", dev]);
        Ok(ip)
    }

    fn kpt(&self, from: Side, args: &[&str]) -> Command {
        let mut cmd = match from {
            Side::Client => self.client.cmd(&self.kpt_net),
            Side::Host => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(r#"echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="/run/netns/$ns" -- "$@""#)
                    .arg(self.cgroup.path())
                    .arg(self.node.name())
                    .arg(&self.kpt_net);
                cmd
            }
        };
        cmd.args(args);
        cmd
    }

    /// Empties the node's connection tracking table. The iptables and nftables modes track
    /// every connection, and at these rates the entries in TIME_WAIT (120 s) would fill the
    /// machine-wide `nf_conntrack_max` within seconds ("table full, dropping packet"); each
    /// run starts from an empty table instead.
    fn flush_conntrack(&self) -> Result<()> {
        let out = self
            .node
            .cmd("conntrack")
            .arg("-F")
            .stdin(Stdio::null())
            .output()
            .context("running conntrack -F (apt-get install conntrack)")?;
        if !out.status.success() {
            bail!(
                "conntrack -F failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn servers_alive(&mut self) -> Result<()> {
        for s in &mut self.servers {
            if let Ok(Some(st)) = s.child.try_wait() {
                bail!("a backend server exited ({st}):\n{}", s.tail());
            }
        }
        Ok(())
    }
}

/// Runs a command, failing with its output.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs a command with `input` on stdin; returns its wall time.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<Duration> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_owned();
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    Ok(took)
}

/// Runs `kpt-net` and returns its last JSON line.
fn kpt_json(mut cmd: Command) -> Result<Value> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .next_back();
    match json {
        Some(v) if out.status.success() => Ok(v),
        other => bail!(
            "{cmd:?} failed ({}): {} {}",
            out.status,
            other.map(|v| v.to_string()).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `Slab` and `MemAvailable` from /proc/meminfo, in kB.
fn meminfo() -> (i64, i64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Slab:"), field("MemAvailable:"))
}

/// Parses a `Duration` debug rendering such as `1.25s`, `830.1ms` or `95µs`.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    for (suffix, scale) in [
        ("ns", 1e-9),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
    ] {
        if let Some(num) = s.strip_suffix(suffix) {
            return num
                .parse::<f64>()
                .ok()
                .map(|v| Duration::from_secs_f64(v * scale));
        }
    }
    None
}

/// The value of `key=` in a tracing log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let at = line.find(&pat)? + pat.len();
    line[at..].split_whitespace().next()
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        crate::util::percentile(v, 0.5)
    }
}

// === Service sets ===

/// ClusterIP of service `i` (1-based): 10.104.(i/256).(i%256), inside the default service
/// range 10.96.0.0/12 but away from the 10.96.0.x addresses the tests and `cargo xtask run`
/// use (a kproxy running on the machine with socket-LB on the root cgroup would otherwise
/// translate the bench's connections too).
fn vip(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).expect("service index");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 104, 0, 0)) + i)
}

/// Kubernetes manifests: services 1..=n with 4 endpoints each; service n (the measured one)
/// also has the LoadBalancer IP and `last_eps` as its endpoints.
#[cfg(test)]
fn manifest(n: usize, last_eps: &[usize]) -> String {
    manifest_part(1..=n, n, last_eps)
}

/// Services `range` of `n` (service `n`, the measured one, gets `last_eps` as endpoints).
fn manifest_part(range: std::ops::RangeInclusive<usize>, n: usize, last_eps: &[usize]) -> String {
    let mut y = String::with_capacity(range.clone().count() * 560);
    for i in range {
        let last = i == n;
        let ty = if last { "LoadBalancer" } else { "ClusterIP" };
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec:\n  type: {ty}\n  clusterIP: {ip}\n  ports:\n  - {{name: http, port: {SVC_PORT}, protocol: TCP, targetPort: {BACKEND_PORT}}}\n",
            ip = vip(i)
        );
        if last {
            let _ = writeln!(
                y,
                "status:\n  loadBalancer:\n    ingress: [{{ip: {LB_IP}}}]"
            );
        }
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             name: svc-{i}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc-{i}}}\n\
             addressType: IPv4\nports:\n- {{name: http, port: {BACKEND_PORT}, protocol: TCP}}\nendpoints:\n"
        );
        let all: Vec<usize> = (0..BACKENDS).collect();
        for b in if last { last_eps } else { &all } {
            let _ = writeln!(
                y,
                "- addresses: [{}]\n  conditions: {{ready: true}}",
                backend_ip(*b)
            );
        }
    }
    y
}

fn svc_chain(i: usize) -> String {
    format!("KUBE-SVC-{i:016}")
}

fn sep_chain(i: usize, b: usize) -> String {
    format!("KUBE-SEP-{i:012}{b:04}")
}

/// kube-proxy's iptables shape for services 1..=n (iptables-restore input).
fn iptables_rules(n: usize) -> String {
    let mut chains = String::with_capacity(n * 200);
    let mut rules = String::with_capacity(n * 700);
    chains
        .push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    rules.push_str("-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n");
    for i in 1..=n {
        let svc = svc_chain(i);
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport {SVC_PORT} -j {svc}",
            vip(i)
        );
        for b in 0..BACKENDS {
            let sep = sep_chain(i, b);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            match b {
                0 => {
                    let _ = writeln!(
                        rules,
                        "-A {svc} -m statistic --mode random --probability 0.25000000000 -j {sep}"
                    );
                }
                1 => {
                    let _ = writeln!(
                        rules,
                        "-A {svc} -m statistic --mode random --probability 0.33333333349 -j {sep}"
                    );
                }
                2 => {
                    let _ = writeln!(
                        rules,
                        "-A {svc} -m statistic --mode random --probability 0.50000000000 -j {sep}"
                    );
                }
                _ => {
                    let _ = writeln!(rules, "-A {svc} -j {sep}");
                }
            }
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m tcp -j DNAT --to-destination {}:{BACKEND_PORT}",
                backend_ip(b)
            );
        }
    }
    chains.push_str(&rules);
    chains.push_str("COMMIT\n");
    chains
}

/// `iptables-restore --noflush` input that points service `i` at backend `b` only.
fn iptables_change(i: usize, b: usize) -> String {
    let svc = svc_chain(i);
    format!(
        "*nat\n:{svc} - [0:0]\n-A {svc} -j {}\nCOMMIT\n",
        sep_chain(i, b)
    )
}

const NFT_TABLE: &str = "kproxy-bench";

/// kube-proxy's nftables shape for services 1..=n (`nft -f` input).
fn nft_rules(n: usize) -> String {
    let mut s = String::with_capacity(n * 700);
    let _ = write!(
        s,
        "table ip {NFT_TABLE} {{\n map service-ips {{\n  type ipv4_addr . inet_proto . inet_service : verdict\n  elements = {{\n"
    );
    for i in 1..=n {
        let sep = if i == n { "\n" } else { ",\n" };
        let _ = write!(
            s,
            "   {} . tcp . {SVC_PORT} : goto service-{i}{sep}",
            vip(i)
        );
    }
    s.push_str("  }\n }\n");
    s.push_str(" chain services {\n  ip daddr . meta l4proto . th dport vmap @service-ips\n }\n");
    s.push_str(
        " chain nat-prerouting {\n  type nat hook prerouting priority -100; policy accept;\n  jump services\n }\n",
    );
    s.push_str(
        " chain nat-output {\n  type nat hook output priority -100; policy accept;\n  jump services\n }\n",
    );
    for i in 1..=n {
        let arms: Vec<String> = (0..BACKENDS)
            .map(|b| format!("{b} : goto endpoint-{i}-{b}"))
            .collect();
        let _ = write!(
            s,
            " chain service-{i} {{\n  numgen random mod {BACKENDS} vmap {{ {} }}\n }}\n",
            arms.join(", ")
        );
        for b in 0..BACKENDS {
            let _ = write!(
                s,
                " chain endpoint-{i}-{b} {{\n  meta l4proto tcp dnat to {}:{BACKEND_PORT}\n }}\n",
                backend_ip(b)
            );
        }
    }
    s.push_str("}\n");
    s
}

/// An incremental `nft -f` that points service `i` at backend `b` only.
fn nft_change(i: usize, b: usize) -> String {
    format!(
        "flush chain ip {NFT_TABLE} service-{i}\n\
         add rule ip {NFT_TABLE} service-{i} numgen random mod 1 vmap {{ 0 : goto endpoint-{i}-{b} }}\n"
    )
}

// === Results ===

#[derive(Clone, Copy, Default)]
struct Conns {
    per_s: f64,
    errors: u64,
    /// Half the min–max range of the runs, relative to the median.
    spread: f64,
}

#[derive(Clone, Copy)]
struct Rr {
    p50: f64,
    p99: f64,
}

#[derive(Default)]
struct ProgramTime {
    /// kproxy: the sync's `took=`; rules: the restore tool's wall time.
    took: Duration,
    /// kproxy: map operations of the initial sync.
    map_ops: Option<u64>,
    /// kproxy: `took=` of a reload of the unchanged file (parse + plan, no map writes).
    noop_took: Option<Duration>,
    /// kproxy: from process start to "kproxy ready" (load + attach + initial sync).
    start_wall: Option<Duration>,
    /// kproxy: `apply=` of the initial sync (the map writes alone).
    apply: Option<Duration>,
}

#[derive(Default)]
struct Memory {
    /// (map pin name, bytes_memlock)
    maps: Vec<(String, u64)>,
    slab_kb: i64,
    avail_kb: i64,
    rss_kb: Option<i64>,
}

struct Change {
    /// From the change (rename / tool start) until a new connection reaches the new backend.
    effective: Duration,
    /// kproxy's `took=` for the reload, or the tool's wall time.
    tool: Duration,
    map_ops: Option<u64>,
    /// kproxy: `apply=` (the map writes of the change alone).
    apply: Option<Duration>,
}

#[derive(Default)]
struct Results {
    conns: BTreeMap<(&'static str, usize), Conns>,
    rr: BTreeMap<(&'static str, usize), Rr>,
    bulk: BTreeMap<&'static str, f64>,
    program: BTreeMap<(&'static str, usize), ProgramTime>,
    memory: BTreeMap<(&'static str, usize), Memory>,
    changes: BTreeMap<&'static str, Vec<Change>>,
    notes: Vec<String>,
}

struct Bench<'a> {
    topo: Topo,
    args: &'a BenchArgs,
    n_min: usize,
    n_max: usize,
    res: Results,
}

impl Bench<'_> {
    fn conns(
        &mut self,
        key: &'static str,
        n: usize,
        from: Side,
        target: SocketAddrV4,
    ) -> Result<()> {
        progress(&format!(
            "{key} {n} services: new connections/s to {target} ({} × {} ms)...",
            self.args.runs, self.args.duration_ms
        ));
        let mut rates = Vec::new();
        let mut errors = 0;
        for _ in 0..self.args.runs.max(1) {
            check_interrupted()?;
            self.topo.servers_alive()?;
            self.topo.flush_conntrack()?;
            let bind = self.topo.fresh_ip(from)?.to_string();
            let v = kpt_json(self.topo.kpt(
                from,
                &[
                    "conns",
                    &target.to_string(),
                    "--duration-ms",
                    &self.args.duration_ms.to_string(),
                    "--concurrency",
                    &self.args.concurrency.to_string(),
                    "--bind",
                    &bind,
                ],
            ))
            .with_context(|| format!("{key} {n}: conns to {target}"))?;
            rates.push(v["conns_per_s"].as_f64().unwrap_or(0.0));
            let e = v["errors"].as_u64().unwrap_or(0);
            if e > 0 {
                self.res.notes.push(format!(
                    "{key} @{n}: {e} errors, first: {}",
                    v["first_error"]
                ));
            }
            errors += e;
        }
        let per_s = median(&mut rates);
        let spread = match (rates.first(), rates.last()) {
            (Some(lo), Some(hi)) if per_s > 0.0 => (hi - lo) / 2.0 / per_s,
            _ => 0.0,
        };
        let c = Conns {
            per_s,
            errors,
            spread,
        };
        progress(&format!("  -> {:.0} conns/s ({errors} errors)", c.per_s));
        self.res.conns.insert((key, n), c);
        Ok(())
    }

    fn rr(&mut self, key: &'static str, n: usize, from: Side, target: SocketAddrV4) -> Result<()> {
        check_interrupted()?;
        self.topo.flush_conntrack()?;
        progress(&format!(
            "{key} {n} services: request latency to {target}..."
        ));
        let ms = (self.args.duration_ms * 3 / 4).max(200).to_string();
        let v = kpt_json(
            self.topo
                .kpt(from, &["rr", &target.to_string(), "--duration-ms", &ms]),
        )
        .with_context(|| format!("{key} {n}: rr to {target}"))?;
        let r = Rr {
            p50: v["p50_us"].as_f64().unwrap_or(0.0),
            p99: v["p99_us"].as_f64().unwrap_or(0.0),
        };
        progress(&format!("  -> p50 {:.1} µs, p99 {:.1} µs", r.p50, r.p99));
        self.res.rr.insert((key, n), r);
        Ok(())
    }

    fn bulk(
        &mut self,
        key: &'static str,
        n: usize,
        from: Side,
        target: SocketAddrV4,
    ) -> Result<()> {
        check_interrupted()?;
        progress(&format!(
            "{key} {n} services: bulk throughput from {target}..."
        ));
        let ms = self.args.duration_ms.to_string();
        let v = kpt_json(
            self.topo
                .kpt(from, &["bulk", &target.to_string(), "--duration-ms", &ms]),
        )
        .with_context(|| format!("{key}: bulk from {target}"))?;
        let mbit = v["mbit_per_s"].as_f64().unwrap_or(0.0);
        progress(&format!("  -> {mbit:.0} Mbit/s"));
        self.res.bulk.insert(key, mbit);
        Ok(())
    }

    /// Starts ``kpt-net wait-for`, runs `change`, and returns (effective, change's own
    /// duration as `change` reports it).
    fn timed_change(
        &mut self,
        target: SocketAddrV4,
        backend: usize,
        change: impl FnOnce(&mut Self, u64) -> Result<Duration>,
    ) -> Result<(Duration, Duration)> {
        check_interrupted()?;
        let bind = self.topo.fresh_ip(Side::Client)?.to_string();
        let name = format!("b{backend}");
        let mut cmd = self.topo.kpt(
            Side::Client,
            &[
                "wait-for",
                &target.to_string(),
                "--name",
                &name,
                "--timeout-ms",
                "20000",
                "--bind",
                &bind,
            ],
        );
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start kpt-net wait-for")?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        out.read_line(&mut first)?;
        if !first.contains("started") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kpt-net wait-for did not start: {first:?}");
        }
        let t0 = mono_ns();
        let tool = change(self, t0);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let status = child.wait()?;
        let tool = tool?;
        let v: Value = rest
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .next_back()
            .unwrap_or(Value::Null);
        if !status.success() || v["ok"] != true {
            bail!("the change never took effect (waited for {name} at {target}): {v}");
        }
        let at = v["mono_ns"].as_u64().unwrap_or(t0);
        Ok((Duration::from_nanos(at.saturating_sub(t0)), tool))
    }
}

// === The dataplane bench ===

fn dataplane(args: &BenchArgs, services: &[usize], bins: &Bins, out_dir: &Path) -> Result<()> {
    let started = Instant::now();
    progress("building the lab (client, node, 4 backends)...");
    let topo = Topo::new(bins)?;
    let mut b = Bench {
        topo,
        args,
        n_min: services[0],
        n_max: *services.last().unwrap(),
        res: Results::default(),
    };
    let pod = SocketAddrV4::new(backend_ip(0), BACKEND_PORT);
    let foreign = foreign_connect_hooks(b.topo.cgroup.path());
    if !foreign.is_empty() {
        let msg = format!(
            "other connect4 programs are attached on this machine ({}); every connection of \
             this run (all modes alike) also passes through them",
            foreign.join(", ")
        );
        progress(&format!("WARNING: {msg}"));
        b.res.notes.push(msg);
    }

    // Baselines: nothing loaded in the node.
    b.conns("direct", 0, Side::Client, pod)?;
    b.conns("direct-host", 0, Side::Host, pod)?;
    b.rr("direct", 0, Side::Client, pod)?;
    b.rr("direct-host", 0, Side::Host, pod)?;
    b.bulk("direct", 0, Side::Client, pod)?;
    b.bulk("direct-host", 0, Side::Host, pod)?;

    ebpf_phase(&mut b, services)?;
    rules_phase(&mut b, services, RuleKind::IptablesNft)?;
    rules_phase(&mut b, services, RuleKind::Nft)?;
    // The plain baseline once more (before legacy iptables, whose hooks stay registered):
    // how much the machine drifted during the run.
    b.conns("direct-again", 0, Side::Client, pod)?;
    if which::which("iptables-legacy-restore").is_ok() {
        // Last: legacy iptables keeps its nat hooks (and conntrack) registered in the node
        // namespace until the namespace goes away.
        rules_phase(&mut b, services, RuleKind::IptablesLegacy)?;
    } else {
        b.res
            .notes
            .push("iptables-legacy-restore not found: legacy iptables skipped".into());
    }

    let elapsed = started.elapsed();
    let md = report::markdown(&b, services, elapsed);
    let svg = report::svg(&b, services);
    let md_path = out_dir.join("dataplane.md");
    let svg_path = out_dir.join("dataplane.svg");
    std::fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
    std::fs::write(&svg_path, &svg).with_context(|| format!("write {}", svg_path.display()))?;
    drop(b);
    println!("\n{md}");
    progress(&format!(
        "done in {:.0?}: {} and {}",
        started.elapsed(),
        md_path.display(),
        svg_path.display()
    ));
    Ok(())
}

/// A running kproxy with its own (fresh) bpffs directory. Drop order: the process, then
/// the pins (which detaches the uplink programs).
struct Kproxy {
    proc: Proc,
    _bpffs: BpffsDir,
    bpffs_path: PathBuf,
    manifest: PathBuf,
}

impl Kproxy {
    fn syncs(&self) -> usize {
        self.proc.matching("services synced").len()
    }
}

fn start_kproxy(
    b: &mut Bench<'_>,
    n: usize,
    xdp_mode: &str,
    lb_mode: &str,
) -> Result<(Kproxy, ProgramTime)> {
    // A manifest directory: the measured (last) service in a file of its own, so a change
    // to it re-reads that file only.
    let manifest = b.topo.tmp.path.join("manifests");
    let _ = std::fs::remove_dir_all(&manifest);
    std::fs::create_dir_all(&manifest)?;
    let all: Vec<usize> = (0..BACKENDS).collect();
    std::fs::write(
        manifest.join("services.yaml"),
        manifest_part(1..=n - 1, n, &all),
    )?;
    std::fs::write(manifest.join("last.yaml"), manifest_part(n..=n, n, &all))?;
    let bpffs = BpffsDir::new("kpb");
    let bpffs_path = bpffs.path().to_path_buf();
    let mut cmd = b.topo.node.cmd(&b.topo.kproxy);
    cmd.env("RUST_LOG", "info")
        .arg("--bpffs")
        .arg(&bpffs_path)
        .arg("standalone")
        .arg("--manifests")
        .arg(&manifest)
        .args([
            "--uplink",
            "up0",
            "--xdp-mode",
            xdp_mode,
            "--lb-mode",
            lb_mode,
        ])
        .arg("--cgroup")
        .arg(b.topo.cgroup.path());
    let t = Instant::now();
    let mut proc = Proc::spawn(cmd)?;
    let synced = proc.wait_line("services synced", 0, Duration::from_mins(3))?;
    proc.wait_line("kproxy ready", 0, Duration::from_secs(30))?;
    let start_wall = t.elapsed();
    let took = log_field(&synced, "took")
        .and_then(parse_debug_duration)
        .ok_or_else(|| anyhow!("no took= in {synced:?}"))?;
    let map_ops = log_field(&synced, "map_ops").and_then(|v| v.parse().ok());
    let apply = log_field(&synced, "apply").and_then(parse_debug_duration);
    Ok((
        Kproxy {
            proc,
            _bpffs: bpffs,
            bpffs_path,
            manifest,
        },
        ProgramTime {
            took,
            map_ops,
            noop_took: None,
            start_wall: Some(start_wall),
            apply,
        },
    ))
}

/// Writes the manifest through a rename (kproxy never reads a half-written file).
fn replace_manifest(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// connect4 programs attached to cgroups other than `ours` (e.g. a `cargo xtask run` kproxy
/// on the root cgroup): they see every connection of the bench too.
fn foreign_connect_hooks(ours: &Path) -> Vec<String> {
    let Ok(out) = Command::new("bpftool").args(["cgroup", "tree"]).output() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut path = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('/') {
            path = line.trim().to_string();
        } else if line.contains("inet4_connect") && Path::new(&path) != ours {
            let name = line.split_whitespace().last().unwrap_or("?");
            found.push(format!("{name} on {path}"));
        }
    }
    found
}

/// Memlock of every map pinned in `dir` (`bpftool map show pinned`).
fn pinned_map_memlock(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("link_") {
            continue;
        }
        let Ok(o) = Command::new("bpftool")
            .args(["map", "show", "pinned"])
            .arg(e.path())
            .arg("-j")
            .output()
        else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout)
            && let Some(bytes) = v["bytes_memlock"].as_u64()
        {
            out.push((name, bytes));
        }
    }
    out.sort();
    out
}

fn vm_rss_kb(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn stop_kproxy(b: &Bench<'_>, k: Kproxy) -> Result<()> {
    drop(k);
    // The uplink must be bare again before the next mode.
    let out = b
        .topo
        .node
        .cmd("bpftool")
        .args(["net", "show", "dev", "up0"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("kproxy") {
        bail!("kproxy programs are still attached to up0 after cleanup:\n{text}");
    }
    Ok(())
}

fn ebpf_phase(b: &mut Bench<'_>, services: &[usize]) -> Result<()> {
    let pod = SocketAddrV4::new(backend_ip(0), BACKEND_PORT);
    let lb = SocketAddrV4::new(LB_IP, SVC_PORT);
    for &n in services {
        check_interrupted()?;
        progress(&format!(
            "ebpf {n} services: starting kproxy (--xdp-mode auto: generic on veth), initial sync..."
        ));
        let (slab0, avail0) = meminfo();
        let (mut k, mut prog) = start_kproxy(b, n, "auto", "xdp")?;
        let (slab1, avail1) = meminfo();
        progress(&format!(
            "  -> synced in {:.1?} ({} map ops), ready after {:.1?}",
            prog.took,
            prog.map_ops.unwrap_or(0),
            prog.start_wall.unwrap_or_default()
        ));
        b.res.memory.insert(
            ("ebpf", n),
            Memory {
                maps: pinned_map_memlock(&k.bpffs_path),
                slab_kb: slab1 - slab0,
                avail_kb: avail0 - avail1,
                rss_kb: vm_rss_kb(k.proc.pid()),
            },
        );
        let svc = SocketAddrV4::new(vip(n), SVC_PORT);
        b.conns("ebpf-socket", n, Side::Host, svc)?;
        b.conns("ebpf-xdp", n, Side::Client, lb)?;
        b.conns("direct+ebpf", n, Side::Client, pod)?;
        if n == b.n_min {
            b.rr("ebpf-socket", n, Side::Host, svc)?;
            b.rr("ebpf-xdp", n, Side::Client, lb)?;
            b.bulk("ebpf-socket", n, Side::Host, svc)?;
            b.bulk("ebpf-xdp", n, Side::Client, lb)?;
        }
        if n == b.n_max && n != b.n_min {
            b.rr("ebpf-socket", n, Side::Host, svc)?;
            b.rr("ebpf-xdp", n, Side::Client, lb)?;
        }
        // The same file again: parse + plan with nothing to write.
        progress(&format!(
            "ebpf {n} services: no-op reload (parse + plan only)..."
        ));
        let before = k.syncs();
        let all: Vec<usize> = (0..BACKENDS).collect();
        let text = manifest_part(1..=n - 1, n, &all);
        replace_manifest(&k.manifest.join("services.yaml"), &text)?;
        let line = k
            .proc
            .wait_line("services synced", before, Duration::from_mins(2))?;
        prog.noop_took = log_field(&line, "took").and_then(parse_debug_duration);
        if n == b.n_max {
            ebpf_changes(b, &mut k, n)?;
        }
        b.res.program.insert(("ebpf", n), prog);
        stop_kproxy(b, k)?;
    }
    // The uplink hook comparison at the smallest service count.
    let n = b.n_min;
    for (key, xdp_mode, lb_mode) in [
        ("ebpf-xdp-native", "driver", "xdp"),
        ("ebpf-tc", "auto", "tc"),
    ] {
        check_interrupted()?;
        progress(&format!(
            "{key} {n} services: starting kproxy (--xdp-mode {xdp_mode} --lb-mode {lb_mode})..."
        ));
        let (k, _) = start_kproxy(b, n, xdp_mode, lb_mode)?;
        b.conns(key, n, Side::Client, lb)?;
        b.rr(key, n, Side::Client, lb)?;
        b.bulk(key, n, Side::Client, lb)?;
        stop_kproxy(b, k)?;
    }
    Ok(())
}

/// The backend a change points the measured service at: an unrecorded first change
/// (`None`) moves it from 4 endpoints to b3 alone, then the recorded ones cycle b0, b1, b2,
/// so every change names a backend that did not serve the service before (a connection
/// landing there proves the change took effect).
fn change_backend(c: Option<usize>) -> usize {
    c.map_or(BACKENDS - 1, |c| c % (BACKENDS - 1))
}

fn change_steps(changes: usize) -> impl Iterator<Item = Option<usize>> {
    std::iter::once(None).chain((0..changes).map(Some))
}

fn ebpf_changes(b: &mut Bench<'_>, k: &mut Kproxy, n: usize) -> Result<()> {
    let lb = SocketAddrV4::new(LB_IP, SVC_PORT);
    let mut samples = Vec::new();
    for c in change_steps(b.args.changes) {
        let backend = change_backend(c);
        progress(&format!(
            "ebpf {n} services: change {}: service {n} -> b{backend} only, manifest rename until effective...",
            c.map_or("0 (unrecorded)".into(), |c| format!(
                "{}/{}",
                c + 1,
                b.args.changes
            )),
        ));
        let path = k.manifest.join("last.yaml");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, manifest_part(n..=n, n, &[backend]))?;
        let before = k.syncs();
        let (effective, _) = b.timed_change(lb, backend, |_, _| {
            std::fs::rename(&tmp, &path)?;
            Ok(Duration::ZERO)
        })?;
        let line = k
            .proc
            .wait_line("services synced", before, Duration::from_mins(1))?;
        let took = log_field(&line, "took")
            .and_then(parse_debug_duration)
            .unwrap_or_default();
        let map_ops = log_field(&line, "map_ops").and_then(|v| v.parse().ok());
        let apply = log_field(&line, "apply").and_then(parse_debug_duration);
        progress(&format!(
            "  -> effective after {effective:.1?} (kproxy took={took:.1?}, apply={apply:.1?}, map_ops={})",
            map_ops.unwrap_or(0)
        ));
        if c.is_some() {
            samples.push(Change {
                effective,
                tool: took,
                map_ops,
                apply,
            });
        }
    }
    b.res.changes.insert("ebpf", samples);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    IptablesNft,
    Nft,
    IptablesLegacy,
}

impl RuleKind {
    const fn key(self) -> &'static str {
        match self {
            Self::IptablesNft => "iptables-nft",
            Self::Nft => "nftables",
            Self::IptablesLegacy => "iptables-legacy",
        }
    }

    const fn direct_key(self) -> &'static str {
        match self {
            Self::IptablesNft => "direct+iptables-nft",
            Self::Nft => "direct+nftables",
            Self::IptablesLegacy => "direct+iptables-legacy",
        }
    }

    fn load(self, topo: &Topo, n: usize) -> Result<Duration> {
        match self {
            Self::IptablesNft | Self::IptablesLegacy => {
                let text = iptables_rules(n);
                let tool = if self == Self::IptablesNft {
                    "iptables-nft-restore"
                } else {
                    "iptables-legacy-restore"
                };
                run_with_input(&mut topo.node.cmd(tool), &text)
            }
            Self::Nft => {
                let text = nft_rules(n);
                run_with_input(topo.node.cmd("nft").args(["-f", "-"]), &text)
            }
        }
    }

    fn change(self, topo: &Topo, i: usize, backend: usize) -> Result<Duration> {
        match self {
            Self::IptablesNft => run_with_input(
                topo.node.cmd("iptables-nft-restore").arg("--noflush"),
                &iptables_change(i, backend),
            ),
            Self::IptablesLegacy => run_with_input(
                topo.node.cmd("iptables-legacy-restore").arg("--noflush"),
                &iptables_change(i, backend),
            ),
            Self::Nft => run_with_input(
                topo.node.cmd("nft").args(["-f", "-"]),
                &nft_change(i, backend),
            ),
        }
    }

    /// Removes everything `load` created.
    fn unload(self, topo: &Topo) -> Result<()> {
        match self {
            Self::IptablesNft => {
                run_quiet(topo.node.cmd("nft").args(["delete", "table", "ip", "nat"]))
            }
            Self::Nft => run_quiet(
                topo.node
                    .cmd("nft")
                    .args(["delete", "table", "ip", NFT_TABLE]),
            ),
            Self::IptablesLegacy => {
                run_quiet(topo.node.cmd("iptables-legacy").args(["-t", "nat", "-F"]))?;
                run_quiet(topo.node.cmd("iptables-legacy").args(["-t", "nat", "-X"]))
            }
        }
    }
}

fn rules_phase(b: &mut Bench<'_>, services: &[usize], kind: RuleKind) -> Result<()> {
    let key = kind.key();
    let pod = SocketAddrV4::new(backend_ip(0), BACKEND_PORT);
    for &n in services {
        check_interrupted()?;
        progress(&format!("{key} {n} services: loading rules..."));
        let (slab0, avail0) = meminfo();
        let took = kind.load(&b.topo, n)?;
        let (slab1, avail1) = meminfo();
        progress(&format!("  -> loaded in {took:.2?}"));
        b.res.program.insert(
            (key, n),
            ProgramTime {
                took,
                ..ProgramTime::default()
            },
        );
        b.res.memory.insert(
            (key, n),
            Memory {
                slab_kb: slab1 - slab0,
                avail_kb: avail0 - avail1,
                ..Memory::default()
            },
        );
        let measured = (|| -> Result<()> {
            let svc = SocketAddrV4::new(vip(n), SVC_PORT);
            b.conns(key, n, Side::Client, svc)?;
            b.conns(kind.direct_key(), n, Side::Client, pod)?;
            if n == b.n_min {
                b.rr(key, n, Side::Client, svc)?;
                b.bulk(key, n, Side::Client, svc)?;
            }
            if n == b.n_max && n != b.n_min {
                b.rr(key, n, Side::Client, svc)?;
            }
            if n == b.n_max {
                let mut samples = Vec::new();
                for c in change_steps(b.args.changes) {
                    let backend = change_backend(c);
                    progress(&format!(
                        "{key} {n} services: change {}: service {n} -> b{backend} only...",
                        c.map_or("0 (unrecorded)".into(), |c| format!(
                            "{}/{}",
                            c + 1,
                            b.args.changes
                        )),
                    ));
                    let (effective, tool) =
                        b.timed_change(svc, backend, |b, _| kind.change(&b.topo, n, backend))?;
                    progress(&format!(
                        "  -> tool {tool:.1?}, effective after {effective:.1?}"
                    ));
                    if c.is_some() {
                        samples.push(Change {
                            effective,
                            tool,
                            map_ops: None,
                            apply: None,
                        });
                    }
                }
                b.res.changes.insert(key, samples);
            }
            Ok(())
        })();
        // Remove the rules also when a measurement failed (the namespace's deletion would
        // remove them too).
        let unloaded = kind.unload(&b.topo);
        measured?;
        unloaded.with_context(|| format!("removing the {key} rules"))?;
    }
    Ok(())
}

mod report {
    //! The markdown tables and the SVG chart.

    use std::{fmt::Write as _, time::Duration};

    use super::{Bench, Change, MAX_SERVICES};

    /// A markdown table header with one `N=n` column per service count, then `extra` columns.
    fn per_n_header(first: &str, services: &[usize], extra: &[&str]) -> String {
        let cols = services.len() + extra.len();
        let mut hdr = format!("| {first} |");
        for n in services {
            let _ = write!(hdr, " N={n} |");
        }
        for e in extra {
            let _ = write!(hdr, " {e} |");
        }
        format!("{hdr}\n| --- |{}", " ---: |".repeat(cols))
    }

    /// A markdown table row: `name`, then `f(n)` for each service count.
    fn per_n_row(name: &str, services: &[usize], f: &dyn Fn(usize) -> String) -> String {
        let mut r = format!("| {name} |");
        for n in services {
            let _ = write!(r, " {} |", f(*n));
        }
        r
    }

    fn fmt_rate(b: &Bench<'_>, key: &str, n: usize) -> String {
        match b.res.conns.iter().find(|((k, m), _)| *k == key && *m == n) {
            Some((_, c)) if c.errors > 0 => format!(
                "{:.0} ±{:.0}% ({} err)",
                c.per_s,
                c.spread * 100.0,
                c.errors
            ),
            Some((_, c)) => format!("{:.0} ±{:.0}%", c.per_s, c.spread * 100.0),
            None => "—".into(),
        }
    }

    fn rate(b: &Bench<'_>, key: &str, n: usize) -> Option<f64> {
        b.res
            .conns
            .iter()
            .find(|((k, m), _)| *k == key && *m == n)
            .map(|(_, c)| c.per_s)
    }

    fn ratio(a: Option<f64>, b: Option<f64>) -> String {
        match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "—".into(),
        }
    }

    fn ms(d: Duration) -> String {
        let ms = d.as_secs_f64() * 1000.0;
        if ms >= 100.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{ms:.1} ms")
        }
    }

    fn label(key: &str) -> &'static str {
        match key {
            "direct" => "direct: client → pod IP (nothing loaded)",
            "direct-host" => "direct: host process → pod IP (nothing loaded)",
            "direct-again" => {
                "direct: client → pod IP (nothing loaded), measured again late in the run (drift check)"
            }
            "direct+ebpf" => {
                "direct: client → pod IP, with N kproxy services (XDP generic attached)"
            }
            "direct+iptables-nft" => "direct: client → pod IP, with N iptables-nft services",
            "direct+nftables" => "direct: client → pod IP, with N nftables services",
            "direct+iptables-legacy" => "direct: client → pod IP, with N iptables-legacy services",
            "ebpf-socket" => "ebpf-socket: host process → ClusterIP (socket-LB)",
            "ebpf-xdp" => "ebpf-xdp: client → LB IP (XDP generic: kproxy's auto mode on veth)",
            "ebpf-xdp-native" => "ebpf-xdp-native: client → LB IP (XDP native)",
            "ebpf-tc" => "ebpf-tc: client → LB IP (tc ingress)",
            "iptables-nft" => "iptables-nft: client → ClusterIP",
            "nftables" => "nftables: client → ClusterIP",
            "iptables-legacy" => "iptables-legacy: client → ClusterIP",
            _ => "?",
        }
    }

    fn pct(mut v: Vec<f64>, p: usize) -> f64 {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        v[(v.len() * p / 100).min(v.len() - 1)]
    }

    pub fn markdown(b: &Bench<'_>, services: &[usize], elapsed: Duration) -> String {
        let a = b.args;
        let (lo, hi) = (b.n_min, b.n_max);
        let mut s = String::new();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpus = crate::util::cpus();
        let _ = writeln!(s, "# kproxy dataplane benchmark\n");
        let _ = writeln!(
            s,
            "`cargo xtask bench dataplane` — kernel {}, {cpus} CPUs, {:.0?} total. One run, one \
             topology (client netns ─veth─ node netns ─bridge─ 4 backend netns running \
             `kpt-net serve`); every mode measured back to back, so compare ratios within this \
             file rather than absolute numbers across machines (this machine is shared and noisy).\n",
            kernel.trim(),
            elapsed
        );
        let _ = writeln!(
            s,
            "Services have 4 endpoints each; the measured one is the last (highest index, last \
             in iptables rule order). New connections/s: connect, one request line, greeting + \
             echo read, close; {} workers for {} ms, median of {} runs (± = half the min–max \
             range of the runs), each run from a fresh source address and with the node's \
             connection tracking table flushed first: at these rates the 120 s TIME_WAIT \
             entries of the iptables/nftables modes would otherwise fill nf_conntrack_max \
             within seconds (a real kube-proxy node needs nf_conntrack_max ≥ rate × 120 s).\n",
            a.concurrency, a.duration_ms, a.runs
        );

        // Connection rate.
        let _ = writeln!(s, "## New TCP connections per second\n");
        let _ = writeln!(
            s,
            "{}",
            per_n_header("mode", services, &[&format!("N={hi} / N={lo}")])
        );
        for key in ["direct", "direct-again", "direct-host"] {
            let mut row = format!("| {} |", label(key));
            for _ in services {
                let _ = write!(row, " {} |", fmt_rate(b, key, 0));
            }
            row.push_str(" — |");
            let _ = writeln!(s, "{row}");
        }
        for key in [
            "direct+ebpf",
            "direct+iptables-nft",
            "direct+nftables",
            "direct+iptables-legacy",
            "ebpf-socket",
            "ebpf-xdp",
            "iptables-nft",
            "nftables",
            "iptables-legacy",
        ] {
            if !b.res.conns.keys().any(|(k, _)| *k == key) {
                continue;
            }
            let mut row = format!("| {} |", label(key));
            for n in services {
                let _ = write!(row, " {} |", fmt_rate(b, key, *n));
            }
            let _ = write!(row, " {} |", ratio(rate(b, key, hi), rate(b, key, lo)));
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);

        // Ratios.
        let _ = writeln!(s, "### Ratios (connection rate)\n");
        let _ = writeln!(s, "| ratio | value |\n| --- | ---: |");
        let mut ratio_row = |name: String, v: String| {
            let _ = writeln!(s, "| {name} | {v} |");
        };
        for key in [
            "ebpf-xdp",
            "ebpf-socket",
            "iptables-nft",
            "nftables",
            "iptables-legacy",
        ] {
            if rate(b, key, hi).is_some() {
                ratio_row(
                    format!("{key}@{hi} / {key}@{lo}"),
                    ratio(rate(b, key, hi), rate(b, key, lo)),
                );
            }
        }
        for other in ["iptables-nft", "nftables", "iptables-legacy"] {
            if rate(b, other, hi).is_some() {
                ratio_row(
                    format!("ebpf-xdp / {other} @{hi}"),
                    ratio(rate(b, "ebpf-xdp", hi), rate(b, other, hi)),
                );
            }
        }
        ratio_row(
            format!("ebpf-socket / iptables-nft @{hi}"),
            ratio(rate(b, "ebpf-socket", hi), rate(b, "iptables-nft", hi)),
        );
        for n in [lo, hi] {
            ratio_row(
                format!("socket-LB / direct (host process) @{n}"),
                ratio(rate(b, "ebpf-socket", n), rate(b, "direct-host", 0)),
            );
        }
        for n in [lo, hi] {
            ratio_row(
                format!("ebpf-xdp LB IP / direct (client) @{n}"),
                ratio(rate(b, "ebpf-xdp", n), rate(b, "direct", 0)),
            );
        }
        for (key, what) in [
            ("direct+ebpf", "eBPF"),
            ("direct+iptables-nft", "iptables-nft"),
            ("direct+nftables", "nftables"),
            ("direct+iptables-legacy", "iptables-legacy"),
        ] {
            if rate(b, key, hi).is_some() {
                ratio_row(
                    format!("direct with {hi} {what} services / direct with none"),
                    ratio(rate(b, key, hi), rate(b, "direct", 0)),
                );
            }
        }
        let _ = writeln!(s);

        // Uplink hooks.
        let _ = writeln!(
            s,
            "## XDP native vs XDP generic vs tc (LB IP from the client, N={lo})\n"
        );
        let _ = writeln!(
            s,
            "| hook | conns/s | vs native | p50 µs | p99 µs | bulk Mbit/s |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for key in ["ebpf-xdp-native", "ebpf-xdp", "ebpf-tc"] {
            let rr = b
                .res
                .rr
                .iter()
                .find(|((k, n), _)| *k == key && *n == lo)
                .map(|(_, r)| *r);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                label(key),
                fmt_rate(b, key, lo),
                ratio(rate(b, key, lo), rate(b, "ebpf-xdp-native", lo)),
                rr.map_or("—".into(), |r| format!("{:.1}", r.p50)),
                rr.map_or("—".into(), |r| format!("{:.1}", r.p99)),
                b.res
                    .bulk
                    .get(key)
                    .map_or("—".into(), |v| format!("{v:.0}")),
            );
        }
        let _ = writeln!(s);

        // Latency.
        let _ = writeln!(
            s,
            "## Request latency on a kept-alive connection (one line echoed, µs)\n"
        );
        let _ = writeln!(
            s,
            "| mode | p50 @{lo} | p99 @{lo} | p50 @{hi} | p99 @{hi} | p50 / direct p50 @{lo} |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        let rr_of = |key: &str, n: usize| {
            b.res
                .rr
                .iter()
                .find(|((k, m), _)| *k == key && *m == n)
                .map(|(_, r)| *r)
        };
        for (key, base) in [
            ("direct", "direct"),
            ("direct-host", "direct-host"),
            ("ebpf-socket", "direct-host"),
            ("ebpf-xdp", "direct"),
            ("iptables-nft", "direct"),
            ("nftables", "direct"),
            ("iptables-legacy", "direct"),
        ] {
            let (l, h) = if key.starts_with("direct") {
                (rr_of(key, 0), rr_of(key, 0))
            } else {
                (rr_of(key, lo), rr_of(key, hi))
            };
            if l.is_none() && h.is_none() {
                continue;
            }
            let f = |r: Option<super::Rr>, p50: bool| {
                r.map_or("—".into(), |r| {
                    format!("{:.1}", if p50 { r.p50 } else { r.p99 })
                })
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                label(key),
                f(l, true),
                f(l, false),
                f(h, true),
                f(h, false),
                ratio(l.map(|r| r.p50), rr_of(base, 0).map(|r| r.p50)),
            );
        }
        let _ = writeln!(
            s,
            "\nThe ratio column compares host-side modes with the host-process baseline and \
             client-side modes with the client baseline.\n"
        );

        // Bulk.
        let _ = writeln!(s, "## Bulk throughput, one connection (N={lo})\n");
        let _ = writeln!(s, "| mode | Mbit/s | vs direct |\n| --- | ---: | ---: |");
        for (key, base) in [
            ("direct", "direct"),
            ("direct-host", "direct-host"),
            ("ebpf-socket", "direct-host"),
            ("ebpf-xdp", "direct"),
            ("iptables-nft", "direct"),
            ("nftables", "direct"),
            ("iptables-legacy", "direct"),
        ] {
            if let Some(v) = b.res.bulk.get(key) {
                let _ = writeln!(
                    s,
                    "| {} | {v:.0} | {} |",
                    label(key),
                    ratio(Some(*v), b.res.bulk.get(base).copied())
                );
            }
        }
        let _ = writeln!(s);

        // Programming time.
        let _ = writeln!(s, "## Time to program all N services from empty\n");
        let _ = writeln!(s, "{}", per_n_header("what", services, &[]));
        let prog = |key: &str, n: usize| {
            b.res
                .program
                .iter()
                .find(|((k, m), _)| *k == key && *m == n)
                .map(|(_, p)| p)
        };
        let mut row = |name: &str, f: &dyn Fn(usize) -> String| {
            let _ = writeln!(s, "{}", per_n_row(name, services, f));
        };
        row(
            "eBPF: kproxy `took=` of the initial sync (parse + plan + map writes)",
            &|n| prog("ebpf", n).map_or("—".into(), |p| ms(p.took)),
        );
        row("eBPF: map operations of the initial sync", &|n| {
            prog("ebpf", n)
                .and_then(|p| p.map_ops)
                .map_or("—".into(), |o| o.to_string())
        });
        row(
            "eBPF: `took=` of a no-op reload (re-parse of services 1..N-1 + plan)",
            &|n| {
                prog("ebpf", n)
                    .and_then(|p| p.noop_took)
                    .map_or("—".into(), ms)
            },
        );
        row("eBPF: map writes alone (kproxy `apply=`)", &|n| {
            prog("ebpf", n).and_then(|p| p.apply).map_or("—".into(), ms)
        });
        row(
            "eBPF: kproxy start → ready (load, attach, initial sync)",
            &|n| {
                prog("ebpf", n)
                    .and_then(|p| p.start_wall)
                    .map_or("—".into(), ms)
            },
        );
        for (key, what) in [
            ("iptables-nft", "iptables-nft-restore (wall)"),
            ("nftables", "nft -f (wall)"),
            ("iptables-legacy", "iptables-legacy-restore (wall)"),
        ] {
            if prog(key, services[0]).is_some() {
                row(what, &|n| prog(key, n).map_or("—".into(), |p| ms(p.took)));
            }
        }
        let took = |key: &str| prog(key, hi).map(|p| p.took.as_secs_f64());
        let _ = writeln!(
            s,
            "\nAt N={hi}: iptables-nft-restore / kproxy = {}, nft -f / kproxy = {}.\n",
            ratio(took("iptables-nft"), took("ebpf")),
            ratio(took("nftables"), took("ebpf"))
        );

        // Changes.
        let _ = writeln!(
            s,
            "## One service change with N={hi} services present\n\nService {hi} is pointed at a \
             single (different) backend each time; \"effective\" runs from the change (the \
             manifest rename for kproxy, the tool's start for the rules) until a new \
             connection from the client reaches that backend (polled every ~1 ms).\n"
        );
        let _ = writeln!(
            s,
            "| mode | changes | effective p50 | effective max | tool p50 | tool max |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for (key, what) in [
            (
                "ebpf",
                "eBPF: kproxy, manifest rename (tool = kproxy's `took=`)",
            ),
            (
                "iptables-nft",
                "iptables-nft-restore --noflush of the service chain (tool = wall)",
            ),
            (
                "nftables",
                "nft -f: flush + add of the service chain (tool = wall)",
            ),
            (
                "iptables-legacy",
                "iptables-legacy-restore --noflush of the service chain (tool = wall)",
            ),
        ] {
            let Some(v) = b.res.changes.get(key) else {
                continue;
            };
            let eff: Vec<f64> = v
                .iter()
                .map(|c: &Change| c.effective.as_secs_f64())
                .collect();
            let tl: Vec<f64> = v.iter().map(|c| c.tool.as_secs_f64()).collect();
            let d = |x: f64| ms(Duration::from_secs_f64(x));
            let _ = writeln!(
                s,
                "| {what} | {} | {} | {} | {} | {} |",
                v.len(),
                d(pct(eff.clone(), 50)),
                d(pct(eff, 100)),
                d(pct(tl.clone(), 50)),
                d(pct(tl, 100)),
            );
        }
        if let Some(v) = b.res.changes.get("ebpf") {
            let apply: Vec<f64> = v
                .iter()
                .filter_map(|c| c.apply.map(|d| d.as_secs_f64()))
                .collect();
            if !apply.is_empty() {
                let d = |x: f64| format!("{:.1} µs", x * 1e6);
                let _ = writeln!(
                    s,
                    "| eBPF: the map update alone (kproxy `apply=`) | {} | — | — | {} | {} |",
                    apply.len(),
                    d(pct(apply.clone(), 50)),
                    d(pct(apply, 100)),
                );
            }
            let ops: Vec<String> = v
                .iter()
                .filter_map(|c| c.map_ops)
                .map(|o| o.to_string())
                .collect();
            let _ = writeln!(
                s,
                "\nkproxy polls its manifest directory every 50 ms and re-reads only the changed file \
                 (the measured service has its own), but still builds and diffs the whole state, so its \
                 \"effective\" includes up to one poll interval, the parse of one file and a \
                 diff over all {hi} services; the map writes of one change are few (map_ops \
                 per change: {}).",
                ops.join(", ")
            );
        }
        let _ = writeln!(s);

        // Memory.
        let _ = writeln!(s, "## Kernel memory per service\n");
        if let Some(((_, at_n), m)) = b
            .res
            .memory
            .iter()
            .filter(|((k, _), _)| *k == "ebpf")
            .max_by_key(|((_, n), _)| *n)
        {
            let at_n = *at_n;
            let total: u64 = m.maps.iter().map(|(_, v)| v).sum();
            let svc_maps: u64 = m
                .maps
                .iter()
                .filter(|(n, _)| {
                    n.contains("services") || n.contains("revnat_v") || n.contains("svc_stats")
                })
                .map(|(_, v)| v)
                .sum();
            let _ = writeln!(
                s,
                "eBPF maps at N={at_n} (`bytes_memlock` from `bpftool map show pinned`; all \
                 preallocated at their capacity, so the same for every N):\n"
            );
            let _ = writeln!(s, "| map | bytes |\n| --- | ---: |");
            for (name, v) in &m.maps {
                let _ = writeln!(s, "| {name} | {v} |");
            }
            let _ = writeln!(s, "| **all maps** | **{total}** |");
            let _ = writeln!(
                s,
                "\nPer-service maps (services, revnat, svc_stats) = {svc_maps} bytes = {:.0} \
                 bytes per configured service (÷ MAX_SERVICES = {MAX_SERVICES}; the services \
                 map itself has one slot per frontend plus one per backend of it); all maps ÷ \
                 MAX_SERVICES = {:.0} bytes.\n",
                svc_maps as f64 / f64::from(MAX_SERVICES),
                total as f64 / f64::from(MAX_SERVICES)
            );
        }
        let _ = writeln!(
            s,
            "Per loaded service (approximate: whole-machine /proc/meminfo deltas around the \
             load, noisy; for eBPF the delta spans the kproxy start and includes its own \
             process memory, shown separately as RSS):\n"
        );
        let _ = writeln!(s, "{}", per_n_header("mode", services, &[]));
        let mem = |key: &str, n: usize| {
            b.res
                .memory
                .iter()
                .find(|((k, m), _)| *k == key && *m == n)
                .map(|(_, m)| m)
        };
        let per = |kb: i64, n: usize| bytes(kb as f64 * 1024.0 / n as f64);
        let mut mrow = |name: String, f: &dyn Fn(usize) -> String| {
            let _ = writeln!(s, "{}", per_n_row(&name, services, f));
        };
        mrow("eBPF: all map memlock ÷ N".into(), &|n| {
            mem("ebpf", n).map_or("—".into(), |m| {
                bytes(m.maps.iter().map(|(_, v)| *v).sum::<u64>() as f64 / n as f64)
            })
        });
        mrow("eBPF: Slab Δ ÷ N".into(), &|n| {
            mem("ebpf", n).map_or("—".into(), |m| per(m.slab_kb, n))
        });
        mrow(
            "eBPF: MemAvailable Δ ÷ N (incl. kproxy RSS)".into(),
            &|n| mem("ebpf", n).map_or("—".into(), |m| per(m.avail_kb, n)),
        );
        mrow("eBPF: kproxy RSS (userspace, total)".into(), &|n| {
            mem("ebpf", n)
                .and_then(|m| m.rss_kb)
                .map_or("—".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
        });
        for key in ["iptables-nft", "nftables", "iptables-legacy"] {
            if mem(key, services[0]).is_none() {
                continue;
            }
            mrow(format!("{key}: Slab Δ ÷ N"), &|n| {
                mem(key, n).map_or("—".into(), |m| per(m.slab_kb, n))
            });
            mrow(format!("{key}: MemAvailable Δ ÷ N"), &|n| {
                mem(key, n).map_or("—".into(), |m| per(m.avail_kb, n))
            });
        }
        let _ = writeln!(s);

        if !b.res.notes.is_empty() {
            let _ = writeln!(s, "## Notes\n");
            for n in &b.res.notes {
                let _ = writeln!(s, "- {n}");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "Chart: `dataplane.svg` (new connections/s per mode and N)."
        );
        s
    }

    /// A byte count for the memory table; negative deltas are measurement noise.
    fn bytes(v: f64) -> String {
        if v < 0.0 {
            "< 0 (noise)".into()
        } else if v >= 10.0 * 1024.0 * 1024.0 {
            format!("{:.1} MiB", v / 1024.0 / 1024.0)
        } else if v >= 10.0 * 1024.0 {
            format!("{:.1} KiB", v / 1024.0)
        } else {
            format!("{v:.0} B")
        }
    }

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// A grouped bar chart: one group per N, one bar per service mode, dashed lines for the
    /// direct baselines.
    pub fn svg(b: &Bench<'_>, services: &[usize]) -> String {
        let modes: Vec<(&str, &str)> = [
            ("ebpf-socket", "#2b8a3e"),
            ("ebpf-xdp", "#1971c2"),
            ("iptables-nft", "#e8590c"),
            ("iptables-legacy", "#c92a2a"),
            ("nftables", "#9c36b5"),
        ]
        .into_iter()
        .filter(|(k, _)| b.res.conns.keys().any(|(m, _)| m == k))
        .collect();
        let baselines = [
            ("direct", "#495057", "direct client → pod"),
            ("direct-host", "#868e96", "direct host → pod"),
        ];
        let max = b.res.conns.values().map(|c| c.per_s).fold(1.0, f64::max) * 1.12;
        let (w, h) = (960.0, 480.0);
        let (left, right, top, bottom) = (80.0, 220.0, 50.0, 60.0);
        let plot_w = w - left - right;
        let plot_h = h - top - bottom;
        let y = |v: f64| top + plot_h - v / max * plot_h;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" font-size="16" text-anchor="middle">New TCP connections/s by mode and number of services (higher is better)</text>"#,
            left + plot_w / 2.0
        );
        // Y grid.
        let step = nice_step(max / 5.0);
        let mut v = 0.0;
        while v <= max {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dee2e6"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
                left + plot_w,
                left - 6.0,
                yy + 4.0
            );
            v += step;
        }
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">connections/s</text>"#,
            top + plot_h / 2.0,
            top + plot_h / 2.0
        );
        // Bars.
        let group_w = plot_w / services.len() as f64;
        let bar_w = (group_w * 0.8) / modes.len().max(1) as f64;
        for (gi, n) in services.iter().enumerate() {
            let gx = left + gi as f64 * group_w + group_w * 0.1;
            for (mi, (key, color)) in modes.iter().enumerate() {
                let Some(v) = rate(b, key, *n) else { continue };
                let x = gx + mi as f64 * bar_w;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} N={n}: {v:.0}/s</title></rect>"#,
                    y(v),
                    bar_w - 2.0,
                    top + plot_h - y(v),
                    esc(key)
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{v:.0}</text>"#,
                    x + (bar_w - 2.0) / 2.0,
                    y(v) - 3.0
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">N = {n}</text>"#,
                left + gi as f64 * group_w + group_w / 2.0,
                top + plot_h + 20.0
            );
        }
        // Baselines.
        for (key, color, _) in baselines {
            if let Some(v) = rate(b, key, 0) {
                let _ = writeln!(
                    s,
                    r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/>"#,
                    y(v),
                    left + plot_w,
                    y(v)
                );
            }
        }
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#212529"/>"##,
            top + plot_h,
            left + plot_w,
            top + plot_h
        );
        // Legend.
        let lx = left + plot_w + 20.0;
        let mut ly = top + 10.0;
        for (key, color) in &modes {
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{ly}" width="14" height="14" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
                lx + 20.0,
                ly + 11.0,
                esc(key)
            );
            ly += 22.0;
        }
        for (key, color, text) in baselines {
            if rate(b, key, 0).is_some() {
                let _ = writeln!(
                    s,
                    r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/><text x="{}" y="{}">{}</text>"#,
                    ly + 7.0,
                    lx + 14.0,
                    ly + 7.0,
                    lx + 20.0,
                    ly + 11.0,
                    esc(text)
                );
                ly += 22.0;
            }
        }
        let _ = writeln!(
            s,
            r##"<text x="{left}" y="{}" font-size="10" fill="#495057">median of {} × {} ms runs, {} workers; ebpf-socket is a host process (compare with "direct host"), the others come from the client netns</text>"##,
            h - 12.0,
            b.args.runs,
            b.args.duration_ms,
            b.args.concurrency
        );
        s.push_str("</svg>\n");
        s
    }

    fn nice_step(raw: f64) -> f64 {
        let mag = 10f64.powf(raw.log10().floor());
        let f = raw / mag;
        let nice = if f < 1.5 {
            1.0
        } else if f < 3.5 {
            2.0
        } else if f < 7.5 {
            5.0
        } else {
            10.0
        };
        nice * mag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_tracing_debug() {
        assert_eq!(
            parse_debug_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_debug_duration("2.5ms"),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(parse_debug_duration("7µs"), Some(Duration::from_micros(7)));
        assert_eq!(parse_debug_duration("80ns"), Some(Duration::from_nanos(80)));
        let line = "INFO kproxy: services synced services=3 frontends=4 map_ops=12 took=3.2ms";
        assert_eq!(log_field(line, "map_ops"), Some("12"));
        assert_eq!(log_field(line, "took"), Some("3.2ms"));
    }

    #[test]
    fn addresses_and_rule_shapes() {
        assert_eq!(vip(1), Ipv4Addr::new(10, 104, 0, 1));
        assert_eq!(vip(10_000), Ipv4Addr::new(10, 104, 39, 16));
        let r = iptables_rules(2);
        assert!(r.contains(
            "-A KUBE-SERVICES -d 10.104.0.2/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-0000000000000002"
        ));
        assert_eq!(r.matches("--probability").count(), 6);
        assert!(r.ends_with("COMMIT\n"));
        let n = nft_rules(2);
        assert!(n.contains("10.104.0.2 . tcp . 80 : goto service-2\n"));
        assert!(n.contains("numgen random mod 4 vmap"));
        let m = manifest(2, &[1]);
        assert_eq!(m.matches("kind: Service\n").count(), 2);
        assert_eq!(m.matches("ingress: [{ip: 172.30.0.10}]").count(), 1);
        assert!(m.ends_with("- addresses: [10.244.1.3]\n  conditions: {ready: true}\n"));
    }
}
