//! `kctl bench svc/NAME`: what the service hop costs. A load client pod (`kecho load`, see
//! `kproxy_podimages::load`) on the node of one of the service's ready endpoints measures new
//! connections/s, requests/s and request latency to the ClusterIP and directly to the same
//! pods (every ready endpoint of the port, new connections taking them in turn, as the
//! service spreads them), interleaved in rounds; for a LoadBalancer service kctl itself then
//! measures the EXTERNAL-IP from the client network namespace. The table puts them side by
//! side with the ratios `ClusterIP ÷ pod` (and `external-ip ÷ pod`): the service hop against
//! going straight to the same pods.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::AsyncBufReadExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_podimages::load::{self, Line, LoadConfig, Progress, Target, TargetResult};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::client::Ctx;
use crate::output;
use crate::tabwriter::TabWriter;

/// The client namespace `cargo xtask run` creates at the other end of the node's uplink.
const DEFAULT_CLIENT_NETNS: &str = "kproxy-client";
const NETNS_DIR: &str = "/run/netns";
const IMAGE: &str = "kecho:latest";
/// How long the bench pod may take to start.
const START_TIMEOUT: Duration = Duration::from_mins(1);
/// Slack for the bench pod beyond its start and its planned measuring time.
const RUN_SLACK: Duration = Duration::from_secs(30);
/// The label on the bench pod.
pub const POD_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "kctl-bench");
/// Without a terminal the progress line is repeated at most this often.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOutput {
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The service: svc/NAME, service/NAME or NAME.
    pub target: String,
    /// Concurrent connections (workers) per measurement.
    #[arg(long, default_value_t = load::DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// Measuring time per target (both phases, all rounds): 6s, 500ms, 1m.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The service port (number or name; default: the first TCP port).
    #[arg(long)]
    pub port: Option<String>,
    /// The HTTP path requested.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The network namespace (/run/netns/NAME: give NAME) the EXTERNAL-IP is measured from
    /// (default: kproxy-client when it exists).
    #[arg(long, value_name = "NAME")]
    pub client_netns: Option<String>,
    /// Run the load client pod on this node instead of an endpoint's (in a cluster of
    /// several nodes: same-node against cross-node pod → pod).
    #[arg(long, value_name = "NODE")]
    pub client_node: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<BenchOutput>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    load::parse_duration(s).map_err(|e| e.to_string())
}

// === plan ===

/// What to measure, from the Service and its EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub service: String,
    /// Every ready endpoint of the port, sorted: measured directly, in turn (the `pod` row).
    pub pods: Vec<SocketAddr>,
    /// The node of the first endpoint that names one: the bench pod runs there.
    pub node: String,
    pub cluster_ip: SocketAddr,
    /// `LBIP:PORT` for a LoadBalancer service with an ingress IP.
    pub external: Option<SocketAddr>,
}

/// `svc/NAME`, `service/NAME`, `services/NAME` or `NAME`.
pub fn service_name(target: &str) -> Result<&str> {
    let name = match target.split_once('/') {
        Some(("svc" | "service" | "services", name)) => name,
        Some((kind, _)) => bail!("kctl bench measures services, not {kind:?} (use svc/NAME)"),
        None => target,
    };
    if name.is_empty() {
        bail!("no service name in {target:?} (use svc/NAME)");
    }
    Ok(name)
}

/// Picks the port, the ready endpoints, the bench pod's node and the addresses to measure.
pub fn plan(svc: &Service, slices: &[EndpointSlice], port: Option<&str>) -> Result<Plan> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.as_ref().context("the service has no spec")?;
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") => bail!("service {name} has no ClusterIP yet"),
        Some("None") => {
            bail!(
                "service {name} is headless (clusterIP: None): there is no service hop to measure"
            )
        }
        Some(ip) => ip
            .parse::<IpAddr>()
            .with_context(|| format!("service {name}: bad ClusterIP {ip:?}"))?,
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let is_tcp = |p: &&k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.as_deref().unwrap_or("TCP") == "TCP"
    };
    let sp = match port {
        Some(want) => ports
            .iter()
            .find(|p| p.port.to_string() == want || p.name.as_deref() == Some(want))
            .with_context(|| {
                let have: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
                format!(
                    "service {name} has no port {want:?} (ports: {})",
                    have.join(", ")
                )
            })?,
        None => ports
            .iter()
            .find(is_tcp)
            .with_context(|| format!("service {name} has no TCP port"))?,
    };
    if !is_tcp(&sp) {
        bail!("port {} of service {name} is not TCP", sp.port);
    }
    let service_port = u16::try_from(sp.port).context("service port out of range")?;
    let port_name = sp.name.as_deref().unwrap_or("");
    // The endpoint port is the slice's port with the service port's name.
    let mut ready = std::collections::BTreeMap::<SocketAddr, Option<String>>::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let Some(ep_port) = slice.ports.as_deref().unwrap_or_default().iter().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        }) else {
            continue;
        };
        let Some(ep_port) = ep_port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            let is_ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let Some(Ok(ip)) = ep.addresses.first().map(|ip| ip.parse::<IpAddr>()) else {
                continue;
            };
            if is_ready {
                // An endpoint in two slices (during an update) counts once.
                let node = ready.entry(SocketAddr::new(ip, ep_port)).or_default();
                if node.is_none() {
                    node.clone_from(&ep.node_name);
                }
            }
        }
    }
    if ready.is_empty() {
        bail!("service {name} has no ready endpoint on port {service_port} (nothing to measure)");
    }
    // Deterministic: the same node for the same state.
    let node = ready.values().flatten().next().cloned().with_context(|| {
        format!("no ready endpoint of service {name} names its node: nowhere to run the bench pod")
    })?;
    let pods: Vec<SocketAddr> = ready.into_keys().collect();
    let external = if spec.type_.as_deref() == Some("LoadBalancer") {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| {
                i.iter()
                    .find_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok())
            })
            .map(|ip| SocketAddr::new(ip, service_port))
    } else {
        None
    };
    Ok(Plan {
        service: name,
        pods,
        node,
        cluster_ip: SocketAddr::new(cluster_ip, service_port),
        external,
    })
}

// === results ===

/// `part ÷ whole`, when both measured something.
#[must_use]
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0 && part.is_finite()).then(|| part / whole)
}

fn rate(v: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rate shown as a whole number"
    )]
    let n = v.round().max(0.0) as u64;
    // Thousands separators: 12,345.
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency(us: Option<u32>) -> String {
    match us {
        None => "-".to_string(),
        Some(us) if us < 1000 => format!("{us}µs"),
        Some(us) if us < 1_000_000 => format!("{:.2}ms", f64::from(us) / 1000.0),
        Some(us) => format!("{:.2}s", f64::from(us) / 1_000_000.0),
    }
}

/// The ADDRESS cell: the address, or how many endpoints the row spread over.
fn address_cell(addresses: &[SocketAddr]) -> String {
    match addresses {
        [] => "-".to_string(),
        [one] => one.to_string(),
        many => format!("{} endpoints", many.len()),
    }
}

/// Labels for the ratio lines.
fn label(target: &str) -> &str {
    match target {
        "clusterip" => "ClusterIP",
        "external-ip" => "EXTERNAL-IP",
        other => other,
    }
}

/// The table and the ratios against `pod`; `notes` are printed under them.
#[must_use]
pub fn render(results: &[TargetResult], notes: &[String]) -> String {
    let mut t = String::from("TARGET\tADDRESS\tCONN/S\tREQ/S\tP50\tP90\tP99\tFAILED\n");
    for r in results {
        let _ = writeln!(
            t,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.target,
            address_cell(&r.addresses),
            rate(r.connections.per_second),
            rate(r.requests.per_second),
            latency(r.requests.p50_us),
            latency(r.requests.p90_us),
            latency(r.requests.p99_us),
            r.connections.failed + r.requests.failed
        );
    }
    let mut out = TabWriter::new(6, 3).format(&t);
    out.push_str("(P50/P90/P99: request latency, connect to last byte)\n");
    if let Some(pod) = results.iter().find(|r| r.target == "pod") {
        if pod.addresses.len() > 1 {
            let _ = writeln!(
                out,
                "(pod: the service's {} ready endpoints directly, new connections taking them in turn)",
                pod.addresses.len()
            );
        }
        let mut lines = String::new();
        for r in results.iter().filter(|r| r.target != "pod") {
            let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(
                lines,
                "{} ÷ pod:\tnew connections/s {}\trequests/s {}",
                label(&r.target),
                show(ratio(r.connections.per_second, pod.connections.per_second)),
                show(ratio(r.requests.per_second, pod.requests.per_second)),
            );
        }
        if !lines.is_empty() {
            out.push('\n');
            out.push_str(&TabWriter::new(0, 2).format(&lines));
        }
    }
    let mut failures = false;
    for r in results {
        for (phase, p) in [("connections", &r.connections), ("requests", &r.requests)] {
            if p.failed > 0 {
                failures = true;
                let _ = writeln!(
                    out,
                    "{}: {} of {} {phase} failed; first error: {}",
                    r.target,
                    p.failed,
                    p.failed + p.ok,
                    p.first_error.as_deref().unwrap_or("(none recorded)")
                );
            }
        }
    }
    if failures {
        out.push_str(
            "note: a failed operation stalls its worker (up to its timeout), so a target with failures shows lower rates than its path allows\n",
        );
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    out
}

/// `-o json`: the plan, every result, the ratios and the notes.
#[must_use]
pub fn to_json(plan: &Plan, results: &[TargetResult], notes: &[String]) -> serde_json::Value {
    let pod = results.iter().find(|r| r.target == "pod");
    let ratios: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .filter(|r| r.target != "pod")
        .filter_map(|r| {
            let pod = pod?;
            Some((
                r.target.clone(),
                json!({
                    "connectionsPerSecond": ratio(r.connections.per_second, pod.connections.per_second),
                    "requestsPerSecond": ratio(r.requests.per_second, pod.requests.per_second),
                }),
            ))
        })
        .collect();
    json!({
        "service": plan.service,
        "node": plan.node,
        "results": results,
        "ratiosToPod": ratios,
        "notes": notes,
    })
}

// === progress ===

/// The progress line on stderr: rewritten in place on a terminal, else repeated now and then.
struct ProgressLine {
    tty: bool,
    last: Option<Instant>,
    shown: bool,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    fn show(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{text}\x1b[K");
            self.shown = true;
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY)
        {
            let _ = writeln!(err, "{text}");
            self.last = Some(Instant::now());
        }
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

/// `bench svc/web [pod 3/12] clusterip requests, round 2/3: 4,553/s, 0 failed`
#[must_use]
pub fn progress_text(service: &str, where_: &str, p: &Progress) -> String {
    format!(
        "bench svc/{service} [{where_} {}/{}] {} {}, round {}/{}: {}/s, {} failed",
        p.slice,
        p.slices,
        p.target,
        p.phase.as_str(),
        p.round,
        p.rounds,
        rate(p.per_second),
        p.failed
    )
}

// === run ===

pub async fn run(ctx: &mut Ctx, args: BenchArgs) -> Result<()> {
    let name = service_name(&args.target)?;
    if let Some(netns) = &args.client_netns {
        check_netns_name(netns)?;
    }
    let ns = ctx.namespace.clone();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let svc = services.get(name).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let slices = slices
        .list(&lp)
        .await
        .with_context(|| format!("listing the EndpointSlices of service {name}"))?
        .items;
    let mut plan = plan(&svc, &slices, args.port.as_deref())?;
    if let Some(node) = &args.client_node {
        plan.node.clone_from(node);
    }
    let in_pod = LoadConfig {
        connections: args.connections,
        duration: args.duration,
        path: args.path.clone(),
        ..LoadConfig::new(vec![
            Target {
                name: "pod".into(),
                addrs: plan.pods.clone(),
            },
            Target::single("clusterip", plan.cluster_ip),
        ])
    };
    in_pod.validate().map_err(|e| anyhow!("{e}"))?;
    let mut notes = Vec::new();
    let external = external_netns(&plan, args.client_netns.as_deref(), &mut notes);

    // Listening before the pod exists: from here on a Ctrl-C no longer kills kctl but is
    // noticed below, so the pod is deleted whenever it comes.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C (SIGINT)")?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod = pods
        .create(&PostParams::default(), &bench_pod(&plan, &in_pod)?)
        .await
        .context("creating the bench pod")?;
    let pod_name = pod.name_any();
    if args.output.is_none() {
        eprintln!(
            "bench svc/{}: pod {pod_name} on node {} measures {} directly (pod) and {} (ClusterIP), {} connections, {:?} each",
            plan.service,
            plan.node,
            endpoints_text(&plan.pods),
            plan.cluster_ip,
            in_pod.connections,
            in_pod.duration
        );
    }
    let mut progress = ProgressLine::new();
    let budget = in_pod.total() + START_TIMEOUT + RUN_SLACK;
    let outcome = tokio::select! {
        r = tokio::time::timeout(
            budget,
            measure_in_pod(&pods, &pod_name, &plan, &in_pod, &mut progress),
        ) => r.unwrap_or_else(|_| Err(anyhow!(
            "bench pod {pod_name} gave no complete result within {budget:?} ({:?} of measuring, {START_TIMEOUT:?} to start, {RUN_SLACK:?} slack); it is deleted",
            in_pod.total()
        ))),
        _ = interrupt.recv() => Err(anyhow!("interrupted; bench pod {pod_name} is deleted")),
    };
    progress.clear();
    // Always: a bench pod left behind would keep loading the service.
    if let Err(e) = pods
        .delete(&pod_name, &DeleteParams::default().grace_period(0))
        .await
        && !crate::errors::is_not_found(&e)
    {
        eprintln!("warning: could not delete bench pod {pod_name}: {e}");
    }
    let mut results = outcome?;

    if let Some((netns, addr)) = external {
        let local = LoadConfig {
            targets: vec![Target::single("external-ip", addr)],
            ..in_pod.clone()
        };
        let outcome = tokio::select! {
            r = measure_from_netns(&netns, local, &plan, &mut progress) => r,
            // Not a skipped measurement: the user stopped kctl.
            _ = interrupt.recv() => {
                progress.clear();
                bail!("interrupted while measuring the EXTERNAL-IP {addr}");
            }
        };
        progress.clear();
        match outcome {
            Ok(r) => results.extend(r),
            Err(e) => notes.push(format!("external-ip: skipped: {e:#}")),
        }
    }
    match args.output {
        Some(BenchOutput::Json) => output::emit(&format!(
            "{}\n",
            output::to_json(&to_json(&plan, &results, &notes))?
        )),
        None => output::emit(&render(&results, &notes)),
    }
}

/// `10.244.0.7:8080`, or `3 endpoints (10.244.0.7:8080, ...)`.
fn endpoints_text(pods: &[SocketAddr]) -> String {
    match pods {
        [one] => one.to_string(),
        many => {
            let list: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("{} endpoints ({})", many.len(), list.join(", "))
        }
    }
}

/// `--client-netns` names a namespace under /run/netns.
pub fn check_netns_name(name: &str) -> Result<()> {
    if name.contains('/') {
        bail!(
            "--client-netns {name:?}: must be a namespace name (as in {NETNS_DIR}/NAME), not a path"
        );
    }
    if name.is_empty() || name == "." || name == ".." {
        bail!("--client-netns {name:?}: must be a namespace name (as in {NETNS_DIR}/NAME)");
    }
    Ok(())
}

/// The client namespace to measure the EXTERNAL-IP from, or a note saying why not.
/// `requested` has passed [`check_netns_name`].
fn external_netns(
    plan: &Plan,
    requested: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<(PathBuf, SocketAddr)> {
    let addr = plan.external?;
    let name = requested.unwrap_or(DEFAULT_CLIENT_NETNS);
    let path = Path::new(NETNS_DIR).join(name);
    if !path.exists() {
        notes.push(format!(
            "external-ip {addr}: skipped: no network namespace {} (name one with --client-netns)",
            path.display()
        ));
        return None;
    }
    Some((path, addr))
}

fn bench_pod(plan: &Plan, cfg: &LoadConfig) -> Result<Pod> {
    let mut args = vec!["load".to_string()];
    args.extend(cfg.to_args());
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "kctl-bench-",
            "labels": {POD_LABEL.0: POD_LABEL.1},
        },
        "spec": {
            "nodeName": plan.node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "load",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "args": args,
            }],
        },
    }))
    .context("building the bench pod")
}

/// Waits until the container runs or has run; fails on a pod that cannot start.
async fn wait_started(pods: &Api<Pod>, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let pod = pods.get(name).await.context("reading the bench pod")?;
        let status = pod.status.unwrap_or_default();
        let cs = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .next();
        if let Some(state) = cs.and_then(|c| c.state) {
            if state.running.is_some() || state.terminated.is_some() {
                return Ok(());
            }
            if let Some(w) = state.waiting {
                let reason = w.reason.unwrap_or_default();
                if matches!(
                    reason.as_str(),
                    "ErrImagePull"
                        | "ImagePullBackOff"
                        | "InvalidImageName"
                        | "CreateContainerError"
                ) {
                    bail!(
                        "bench pod {name} cannot start: {reason}: {} (the node needs image {IMAGE}: cargo xtask images)",
                        w.message.unwrap_or_default()
                    );
                }
            }
        }
        if status.phase.as_deref() == Some("Failed") {
            bail!(
                "bench pod {name} failed: {}",
                status.message.unwrap_or_default()
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("bench pod {name} did not start within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `kecho load` in the bench pod and collects its results from the pod's log.
async fn measure_in_pod(
    pods: &Api<Pod>,
    name: &str,
    plan: &Plan,
    cfg: &LoadConfig,
    progress: &mut ProgressLine,
) -> Result<Vec<TargetResult>> {
    progress.show(&format!(
        "bench svc/{}: starting pod {name} ...",
        plan.service
    ));
    wait_started(pods, name).await?;
    let lp = LogParams {
        follow: true,
        ..Default::default()
    };
    let log = pods
        .log_stream(name, &lp)
        .await
        .with_context(|| format!("following the log of bench pod {name}"))?;
    // The stream type is not Unpin: pin it.
    let mut lines = Box::pin(log).lines();
    let mut results = Vec::new();
    let mut other = Vec::new();
    while let Some(line) = futures::TryStreamExt::try_next(&mut lines)
        .await
        .with_context(|| format!("reading the log of bench pod {name}"))?
    {
        match Line::parse(&line) {
            Some(Line::Progress(p)) => progress.show(&progress_text(&plan.service, "pod", &p)),
            Some(Line::Result(r)) => results.push(r),
            None => other.push(line),
        }
    }
    if results.len() < cfg.targets.len() {
        let status = pods
            .get(name)
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .and_then(|c| c.state)
            .and_then(|s| s.terminated)
            .map(|t| match t.exit_code {
                // Rust's exit code after a panic on the main thread.
                101 => " (exit code 101: the load engine panicked)".to_string(),
                code => format!(" (exit code {code})"),
            })
            .unwrap_or_default();
        bail!(
            "bench pod {name} ended without all results{status}; its log:\n{}",
            other.join("\n")
        );
    }
    Ok(results)
}

/// Runs the engine in a thread that entered `netns`, reporting the same lines as the pod.
async fn measure_from_netns(
    netns: &Path,
    cfg: LoadConfig,
    plan: &Plan,
    progress: &mut ProgressLine,
) -> Result<Vec<TargetResult>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Line, String>>();
    let path = netns.to_path_buf();
    // A dedicated OS thread: setns changes the calling thread only, and the engine blocks.
    let engine = std::thread::Builder::new()
        .name("bench-netns".into())
        .spawn(move || {
            if let Err(e) = enter_netns(&path) {
                let _ = tx.send(Err(e));
                return;
            }
            load::run(&cfg, &mut |event| {
                let line = match event {
                    load::Event::Progress(p) => Line::Progress(p.clone()),
                    load::Event::Result(r) => Line::Result(r.clone()),
                };
                let _ = tx.send(Ok(line));
            });
        })
        .context("starting the client-namespace thread")?;
    let mut results = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg.map_err(|e| anyhow!(e))? {
            Line::Progress(p) => {
                progress.show(&progress_text(&plan.service, "client netns", &p));
            }
            Line::Result(r) => results.push(r),
        }
    }
    if results.is_empty() {
        // The channel closed: the thread has ended (or is unwinding); say how.
        let joined = tokio::task::spawn_blocking(move || engine.join())
            .await
            .context("waiting for the client-namespace engine thread")?;
        match joined {
            Err(panic) => bail!(
                "the client-namespace engine thread panicked: {}",
                load::panic_message(panic.as_ref())
            ),
            Ok(()) => bail!("the client-namespace engine thread ended without a result"),
        }
    }
    Ok(results)
}

fn enter_netns(path: &Path) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        if e == nix::errno::Errno::EPERM {
            format!("entering {} needs root (CAP_SYS_ADMIN)", path.display())
        } else {
            format!("setns {}: {e}", path.display())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn web_svc(kind: &str, cluster_ip: &str) -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": kind, "clusterIP": cluster_ip,
                     "ports": [{"name": "udp", "port": 53, "protocol": "UDP"},
                               {"name": "http", "port": 80, "targetPort": 8080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.19.0.10"}]}},
        }))
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "udp", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(ip: &str, node: &str, ready: bool) -> serde_json::Value {
        json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}})
    }

    #[test]
    fn service_names() {
        assert_eq!(service_name("svc/web").unwrap(), "web");
        assert_eq!(service_name("service/web").unwrap(), "web");
        assert_eq!(service_name("web").unwrap(), "web");
        let e = service_name("deploy/web").unwrap_err().to_string();
        assert!(e.contains("not \"deploy\""), "{e}");
        assert!(service_name("svc/").is_err());
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn plan_takes_every_ready_endpoint_and_the_tcp_port() {
        let slices = [
            slice(json!([
                ep("10.244.0.9", "node-b", false),
                ep("10.244.0.8", "node-b", true),
                ep("10.244.0.7", "node-a", true),
            ])),
            // During an update an endpoint may be in two slices: it counts once.
            slice(json!([
                ep("10.244.0.7", "node-a", true),
                ep("10.244.0.10", "node-c", true),
            ])),
        ];
        let p = plan(&web_svc("LoadBalancer", "10.96.0.20"), &slices, None).unwrap();
        assert_eq!(p.service, "web");
        // All ready ones, on every node: the ClusterIP spreads over the same set.
        assert_eq!(
            p.pods,
            addrs(&["10.244.0.7:8080", "10.244.0.8:8080", "10.244.0.10:8080"])
        );
        assert_eq!(p.node, "node-a");
        assert_eq!(p.cluster_ip, "10.96.0.20:80".parse().unwrap());
        assert_eq!(p.external, Some("198.19.0.10:80".parse().unwrap()));
        // By name or number; ClusterIP services have no external target.
        let p = plan(&web_svc("ClusterIP", "10.96.0.20"), &slices, Some("http")).unwrap();
        assert_eq!((p.cluster_ip.port(), p.external), (80, None));
        assert!(plan(&web_svc("ClusterIP", "10.96.0.20"), &slices, Some("80")).is_ok());
        // The bench pod goes to a node an endpoint names.
        let slices = [slice(json!([
            {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
            ep("10.244.0.6", "node-b", true),
        ]))];
        let p = plan(&web_svc("ClusterIP", "10.96.0.20"), &slices, None).unwrap();
        assert_eq!(p.pods, addrs(&["10.244.0.5:8080", "10.244.0.6:8080"]));
        assert_eq!(p.node, "node-b");
    }

    #[test]
    fn client_netns_is_a_name() {
        assert!(check_netns_name("kproxy-client").is_ok());
        for bad in ["/run/netns/x", "a/b", "../x"] {
            let e = check_netns_name(bad).unwrap_err().to_string();
            assert!(
                e.contains("must be a namespace name (as in /run/netns/NAME), not a path"),
                "{e}"
            );
        }
        for bad in ["", ".", ".."] {
            let e = check_netns_name(bad).unwrap_err().to_string();
            assert!(e.contains("must be a namespace name"), "{e}");
        }
    }

    #[test]
    fn plan_errors_are_clear() {
        let ready = [slice(json!([ep("10.244.0.7", "node-a", true)]))];
        let err = |svc: &Service, slices: &[EndpointSlice], port| {
            plan(svc, slices, port).unwrap_err().to_string()
        };
        let e = err(&web_svc("ClusterIP", "None"), &ready, None);
        assert!(e.contains("headless"), "{e}");
        let e = err(&web_svc("ClusterIP", ""), &ready, None);
        assert!(e.contains("no ClusterIP"), "{e}");
        let unready = [slice(json!([ep("10.244.0.7", "node-a", false)]))];
        let e = err(&web_svc("ClusterIP", "10.96.0.20"), &unready, None);
        assert!(e.contains("no ready endpoint"), "{e}");
        let e = err(&web_svc("ClusterIP", "10.96.0.20"), &[], None);
        assert!(e.contains("no ready endpoint"), "{e}");
        let e = err(&web_svc("ClusterIP", "10.96.0.20"), &ready, Some("8443"));
        assert!(
            e.contains("no port \"8443\"") && e.contains("53, 80"),
            "{e}"
        );
        let e = err(&web_svc("ClusterIP", "10.96.0.20"), &ready, Some("udp"));
        assert!(e.contains("not TCP"), "{e}");
        let nowhere = [slice(json!([{"addresses": ["10.244.0.5"]}]))];
        let e = err(&web_svc("ClusterIP", "10.96.0.20"), &nowhere, None);
        assert!(e.contains("names its node"), "{e}");
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert_eq!(parse_duration("6s"), Ok(Duration::from_secs(6)));
        let e = parse_duration("fast").unwrap_err();
        assert!(e.contains("6s, 500ms or 1m"), "{e}");
        // Too short for 3 rounds of two phases: refused before a pod is created.
        let cfg = LoadConfig {
            duration: Duration::from_millis(300),
            ..LoadConfig::new(vec![Target::parse("pod=10.0.0.1:80,10.0.0.2:80").unwrap()])
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("600ms"));
    }

    fn phase(per_second: f64, failed: u64) -> load::PhaseResult {
        load::PhaseResult {
            ok: 100,
            failed,
            seconds: 1.0,
            per_second,
            p50_us: Some(850),
            p90_us: Some(1500),
            p99_us: Some(2_500_000),
            first_error: (failed > 0).then(|| "connect: Connection refused".to_string()),
        }
    }

    /// The lines' round trip is tested with the engine (podimages load.rs); here only how a
    /// progress line is shown.
    #[test]
    fn progress_line_text() {
        let p = Progress {
            target: "pod".into(),
            phase: load::Phase::Requests,
            round: 2,
            rounds: 3,
            slice: 6,
            slices: 12,
            ok: 10,
            failed: 1,
            per_second: 12345.4,
        };
        assert_eq!(
            progress_text("web", "pod", &p),
            "bench svc/web [pod 6/12] pod requests, round 2/3: 12,345/s, 1 failed"
        );
    }

    #[test]
    fn table_and_ratios() {
        let results = vec![
            TargetResult {
                target: "pod".into(),
                addresses: addrs(&["10.244.0.7:8080", "10.244.0.8:8080", "10.244.0.9:8080"]),
                connections: phase(5000.0, 0),
                requests: phase(4000.0, 0),
            },
            TargetResult {
                target: "clusterip".into(),
                addresses: addrs(&["10.96.0.20:80"]),
                connections: phase(4900.0, 0),
                requests: phase(3600.0, 2),
            },
        ];
        let out = render(&results, &["external-ip: skipped: no netns".into()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "TARGET      ADDRESS         CONN/S   REQ/S   P50     P90      P99     FAILED"
        );
        assert_eq!(
            lines[1],
            "pod         3 endpoints     5,000    4,000   850µs   1.50ms   2.50s   0"
        );
        assert!(
            lines[2].starts_with("clusterip   10.96.0.20:80   4,900    3,600 "),
            "{out}"
        );
        assert!(lines[2].ends_with("   2"), "{out}");
        assert!(
            out.contains("(pod: the service's 3 ready endpoints directly, new connections taking them in turn)\n"),
            "{out}"
        );
        assert!(
            out.contains("ClusterIP ÷ pod:  new connections/s 0.98  requests/s 0.90\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "clusterip: 2 of 102 requests failed; first error: connect: Connection refused"
            ),
            "{out}"
        );
        assert!(out.contains("\nnote: a failed operation stalls"), "{out}");
        assert!(out.ends_with("external-ip: skipped: no netns\n"), "{out}");
        let plan = Plan {
            service: "web".into(),
            pods: addrs(&["10.244.0.7:8080", "10.244.0.8:8080", "10.244.0.9:8080"]),
            node: "node-a".into(),
            cluster_ip: "10.96.0.20:80".parse().unwrap(),
            external: None,
        };
        let j = to_json(&plan, &results, &[]);
        assert_eq!(
            j["ratiosToPod"]["clusterip"]["connectionsPerSecond"],
            json!(0.98)
        );
        assert_eq!(j["results"][1]["requests"]["failed"], json!(2));
        assert_eq!(j["results"][0]["target"], "pod");
        assert_eq!(j["results"][0]["addresses"][0], "10.244.0.7:8080");
        // The engine's field names, as scripts reading `-o json` know them (no line `type`).
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&j["results"][1]),
            ["addresses", "connections", "requests", "target"]
        );
        assert_eq!(
            keys(&j["results"][1]["requests"]),
            [
                "failed",
                "first_error",
                "ok",
                "p50_us",
                "p90_us",
                "p99_us",
                "per_second",
                "seconds"
            ]
        );
        assert_eq!(
            j["results"][0]["addresses"].as_array().map(Vec::len),
            Some(3)
        );
        // A single-address row shows the address itself.
        assert_eq!(address_cell(&addrs(&["10.96.0.20:80"])), "10.96.0.20:80");
        assert_eq!(address_cell(&[]), "-");
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(rate(999.6), "1,000");
        assert_eq!(rate(1_234_567.0), "1,234,567");
    }
}
