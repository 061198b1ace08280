//! `cargo xtask bench cluster`: the product as a user meets it. Runs `cargo xtask run` (the
//! tree already built) several times and times each start until its "cluster ready" line;
//! then, in the running cluster, times `create deployment` → the pod answering on its
//! ClusterIP (from this host, socket-LB) and `expose --type=LoadBalancer` → the EXTERNAL-IP
//! answering from the lab client namespace (XDP/tc), reads every component's memory while
//! idle with one httpd Deployment, and runs `kctl bench` for the service hop's cost. Writes
//! target/bench/cluster.md and cluster.svg.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::{
    chart::{Axis, Chart},
    procfs::status_kib,
};
use crate::{
    run::{CONTROL_KUBECONFIG, LAB_NETNS, READY_LINE},
    util::{cargo, percentile, step, stop_requested},
};

pub struct ClusterBench {
    /// `cargo xtask run` starts timed (the last one stays up for the other figures).
    pub starts: usize,
    /// Samples of each latency.
    pub samples: usize,
    /// `kctl bench --duration`, seconds.
    pub bench_seconds: u64,
    /// `cargo xtask run --nodes`.
    pub nodes: usize,
}

const NS: &str = "default";
/// The component binaries whose memory is summed.
const COMPONENTS: [&str; 5] = [
    "kproxy-apiserver",
    "kproxy-controller-manager",
    "kproxy-scheduler",
    "kproxy-kubelet",
    "kproxy",
];

/// A `cargo xtask run` in the background, its output copied to a log; SIGINT stops it.
struct Running {
    child: Child,
    ready: mpsc::Receiver<String>,
}

impl Running {
    fn start(log: &Path, nodes: usize) -> Result<(Self, Duration, String)> {
        let started = Instant::now();
        let mut child = cargo()
            .args(["xtask", "run", "--nodes", &nodes.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start `cargo xtask run`")?;
        let out = child.stdout.take().expect("piped stdout");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let (tx, ready) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if line.starts_with(READY_LINE) {
                    let _ = tx.send(line);
                }
            }
        });
        let mut running = Self { child, ready };
        // The tree is built (see `cluster` in bench/mod.rs): this is startup alone.
        if let Ok(line) = running.ready.recv_timeout(Duration::from_mins(2)) {
            Ok((running, started.elapsed(), line))
        } else {
            running.stop();
            bail!(
                "`cargo xtask run` did not print its ready line; see {}",
                log.display()
            )
        }
    }

    /// What Ctrl-C does (`run` treats SIGTERM the same; SIGINT may be ignored in a
    /// background job); waits until everything is stopped.
    fn stop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: signalling our own child (cargo execs into xtask on Unix).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn deployment(name: &str, replicas: i32) -> Result<Deployment> {
    // What `kctl create deployment NAME --image=httpd` creates.
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "httpd", "image": "httpd"}]},
            },
        },
    }))?)
}

fn service(name: &str, app: &str, kind: &str) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": kind,
            "selector": {"app": app},
            "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}],
        },
    }))?)
}

/// The resident memory (MiB) of each component, found by executable under `bin_dir`.
fn component_rss(bin_dir: &Path) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for name in COMPONENTS {
        let exe = bin_dir.join(name);
        let mut kib = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("exe")).is_ok_and(|p| p == exe) {
                kib += status_kib(pid, "VmRSS:").unwrap_or(0);
            }
        }
        out.push((name, kib as f64 / 1024.0));
    }
    out
}

struct Row {
    what: &'static str,
    target: &'static str,
    figure: String,
    met: bool,
    /// Measured ÷ target bound, for the plot (below 1 is better, except ratios).
    fraction: f64,
}

pub fn run(b: &ClusterBench, target: &Path, out_dir: &Path) -> Result<()> {
    let bin_dir = target.join("release");
    let log = out_dir.join("cluster-run.log");
    let _ = std::fs::remove_file(&log);
    // 1. Starts of the whole cluster.
    let mut starts = Vec::new();
    let mut own_clock = Vec::new();
    let mut running = None;
    for i in 1..=b.starts.max(1) {
        step(&format!(
            "bench cluster: `cargo xtask run` start {i} of {} (output in {})",
            b.starts,
            log.display()
        ));
        let (r, took, line) = Running::start(&log, b.nodes)?;
        println!(
            "bench: {line} (seen by the bench after {:.2} s)",
            took.as_secs_f64()
        );
        starts.push(took.as_secs_f64());
        // "run: cluster ready in 1.07 s: …"
        own_clock.push(line.split_whitespace().nth(4).unwrap_or("?").to_string());
        if i < b.starts {
            let mut r = r;
            r.stop();
        } else {
            running = Some(r);
        }
    }
    let mut running = running.expect("the last start stays up");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let figures = rt.block_on(async {
        let mut f = measure(b, &bin_dir).await?;
        if b.nodes > 1 {
            let client = admin_client().await?;
            let host = crate::run::node_name()?;
            f.nodes =
                super::nodes::measure(client, &bin_dir, &host, b.nodes, b.bench_seconds).await?;
        }
        Ok::<_, anyhow::Error>(f)
    });
    let figures = match figures {
        Ok(f) => f,
        Err(e) => {
            running.stop();
            return Err(e);
        }
    };
    running.stop();

    let Figures {
        create_to_clusterip,
        expose_to_external,
        rss,
        bench,
        nodes,
    } = figures;
    let ready_bound = if b.nodes > 1 { 5.0 } else { 3.0 };
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let start_p50 = percentile(&sorted(&starts), 0.5);
    let c = sorted(&create_to_clusterip);
    let create_max = c.last().copied().unwrap_or(f64::NAN);
    let e = sorted(&expose_to_external);
    let expose_p50 = percentile(&e, 0.5);
    let rss_total: f64 = rss.iter().map(|(_, m)| m).sum();
    let mut rows = vec![
        Row {
            what: if b.nodes > 1 {
                "`cargo xtask run --nodes N` → every node Ready, all components healthy (built tree)"
            } else {
                "`cargo xtask run` → node Ready, all components healthy (built tree)"
            },
            target: if b.nodes > 1 { "≤ 5 s" } else { "≤ 3 s" },
            figure: format!(
                "{start_p50:.2} s median of {} (each: {}; `run`'s own clock: {})",
                starts.len(),
                starts
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                own_clock.join(", ")
            ),
            met: start_p50 <= ready_bound,
            fraction: start_p50 / ready_bound,
        },
        Row {
            what: "`expose --type=LoadBalancer` → EXTERNAL-IP answering from the client netns",
            target: "p50 ≤ 1 s",
            figure: format!(
                "p50 {:.0} ms (max {:.0} ms, n = {})",
                expose_p50 * 1e3,
                e.last().copied().unwrap_or(f64::NAN) * 1e3,
                e.len()
            ),
            met: expose_p50 <= 1.0,
            fraction: expose_p50 / 1.0,
        },
        Row {
            what: "`create deployment` → the pod answering on its ClusterIP",
            target: "≤ 1.5 s (every sample)",
            figure: format!(
                "max {:.0} ms (p50 {:.0} ms, n = {})",
                create_max * 1e3,
                percentile(&c, 0.5) * 1e3,
                c.len()
            ),
            met: create_max <= 1.5,
            fraction: create_max / 1.5,
        },
        Row {
            what: "all components together, RSS idle with the httpd Deployment",
            target: "≤ 100 MB",
            figure: format!(
                "{:.1} MB ({})",
                rss_total * 1.048_576,
                rss.iter()
                    .map(|(n, m)| format!("{n} {m:.1} MiB"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: rss_total * 1.048_576 <= 100.0,
            fraction: rss_total * 1.048_576 / 100.0,
        },
    ];
    let ratio = bench.ratio;
    rows.push(Row {
        what: "`kctl bench`: ClusterIP ÷ pod-direct, new connections/s",
        target: "≥ 0.95",
        figure: format!("{ratio:.3} ({})", bench.summary),
        met: ratio >= 0.95 && bench.failed == 0,
        fraction: if ratio > 0.0 { 0.95 / ratio } else { f64::NAN },
    });

    rows.extend(nodes.into_iter().map(|r| Row {
        what: r.what,
        target: r.target,
        figure: r.figure,
        met: r.met,
        fraction: r.fraction,
    }));
    let mut md = String::from("# cargo xtask bench cluster\n\n");
    let _ = writeln!(
        md,
        "The product as a user meets it: `cargo xtask run --nodes {}` on this host (lab uplink; \
         nodes beyond the first are network namespaces on a LAN bridge), \
         the API driven with kube-rs as `kctl` would, requests from this host and from the lab \
         client namespace. {} samples per latency.\n",
        b.nodes, b.samples
    );
    md.push_str("| figure | target | measured | met |\n|---|---|---|---|\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            r.what,
            r.target,
            r.figure,
            if r.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        md,
        "\n`kctl bench svc/… --duration {}s -o json` (requests: latency p50/p99; the \
         pod row goes to the service's ready pods directly, the external-ip row comes from \
         the client namespace after the in-pod rounds):\n\n```\n{}\n```",
        b.bench_seconds,
        bench.table.trim_end()
    );
    std::fs::write(out_dir.join("cluster.md"), &md)?;
    std::fs::write(out_dir.join("cluster.svg"), svg(&rows))?;
    println!("\n{md}");
    println!(
        "bench: wrote {} and cluster.svg",
        out_dir.join("cluster.md").display()
    );
    Ok(())
}

struct Figures {
    create_to_clusterip: Vec<f64>,
    expose_to_external: Vec<f64>,
    rss: Vec<(&'static str, f64)>,
    bench: BenchFigures,
    /// The figures of several nodes (empty with one).
    nodes: Vec<super::nodes::NodeRow>,
}

struct BenchFigures {
    ratio: f64,
    failed: u64,
    summary: String,
    table: String,
}

async fn admin_client() -> Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(CONTROL_KUBECONFIG)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

async fn measure(b: &ClusterBench, bin_dir: &Path) -> Result<Figures> {
    let client = admin_client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    let tag = std::process::id();
    let mut names: Vec<(bool, String)> = Vec::new();
    let result = async {
        // 2. create deployment → its pod answering on the ClusterIP (the Service exists).
        step("bench cluster: create deployment → the pod answering on its ClusterIP");
        let mut create = Vec::new();
        for i in 0..b.samples {
            if stop_requested() {
                bail!("interrupted");
            }
            let name = format!("bench-cd-{tag}-{i}");
            let svc = services.create(&pp, &service(&name, &name, "ClusterIP")?).await?;
            names.push((false, name.clone()));
            let ip: Ipv4Addr = svc
                .spec
                .and_then(|s| s.cluster_ip)
                .ok_or_else(|| anyhow!("no ClusterIP"))?
                .parse()?;
            let t0 = Instant::now();
            deployments.create(&pp, &deployment(&name, 1)?).await?;
            names.push((true, name.clone()));
            let took = super::netns::until_answered(
                SocketAddr::from((ip, 80)),
                format!("pod: {name}-"),
                None,
                t0,
                Duration::from_secs(30),
            )?
            .ok_or_else(|| anyhow!("{name}: no answer on {ip}:80 within 30 s"))?;
            println!("bench: {name} answered on {ip} after {:.0} ms", took.as_secs_f64() * 1e3);
            create.push(took.as_secs_f64());
        }
        // 3. expose → EXTERNAL-IP answering from the client namespace (pods already Ready).
        step("bench cluster: expose --type=LoadBalancer → the EXTERNAL-IP answering from the client netns");
        let app = format!("bench-lb-{tag}");
        deployments.create(&pp, &deployment(&app, 1)?).await?;
        names.push((true, app.clone()));
        let warm = format!("{app}-warm");
        let svc = services.create(&pp, &service(&warm, &app, "ClusterIP")?).await?;
        names.push((false, warm.clone()));
        let ip: Ipv4Addr = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .ok_or_else(|| anyhow!("no ClusterIP"))?
            .parse()?;
        super::netns::until_answered(
            SocketAddr::from((ip, 80)),
            format!("pod: {app}-"),
            None,
            Instant::now(),
            Duration::from_secs(30),
        )?
        .ok_or_else(|| anyhow!("{app} never answered on {ip}"))?;
        let netns = PathBuf::from(format!("/run/netns/{LAB_NETNS}"));
        let mut expose = Vec::new();
        let mut kept = None;
        for i in 0..b.samples {
            if stop_requested() {
                bail!("interrupted");
            }
            let name = format!("{app}-{i}");
            let t0 = Instant::now();
            services.create(&pp, &service(&name, &app, "LoadBalancer")?).await?;
            names.push((false, name.clone()));
            let lb_ip: Ipv4Addr = loop {
                let s = services.get(&name).await?;
                if let Some(ip) = s
                    .status
                    .and_then(|s| s.load_balancer?.ingress?.into_iter().next()?.ip)
                {
                    break ip.parse()?;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("{name}: no EXTERNAL-IP within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let took = super::netns::until_answered(
                SocketAddr::from((lb_ip, 80)),
                format!("pod: {app}-"),
                Some(netns.clone()),
                t0,
                Duration::from_secs(30),
            )?
            .ok_or_else(|| anyhow!("{name}: {lb_ip} did not answer the client within 30 s"))?;
            println!(
                "bench: {name} answered on {lb_ip} from {LAB_NETNS} after {:.0} ms",
                took.as_secs_f64() * 1e3
            );
            expose.push(took.as_secs_f64());
            if i + 1 < b.samples {
                services.delete(&name, &DeleteParams::default()).await?;
            } else {
                kept = Some(name);
            }
        }
        // 4. Memory, idle with one httpd Deployment: the others go first.
        step("bench cluster: memory of all components, idle with one httpd Deployment");
        for (is_deploy, name) in &names {
            if *is_deploy && name != &app {
                deployments.delete(name, &DeleteParams::default()).await?;
            }
        }
        tokio::time::sleep(Duration::from_secs(8)).await;
        let rss = component_rss(bin_dir);
        // 5. kctl bench on the kept LoadBalancer Service.
        let kept = kept.ok_or_else(|| anyhow!("no LoadBalancer Service kept"))?;
        step(&format!("bench cluster: kctl bench svc/{kept}"));
        let bench = kctl_bench(bin_dir, &kept, b.bench_seconds)?;
        Ok(Figures {
            create_to_clusterip: create,
            expose_to_external: expose,
            rss,
            bench,
            nodes: Vec::new(),
        })
    }
    .await;
    // The bench's objects go, whatever happened; the user's stay.
    for (is_deploy, name) in names.iter().rev() {
        if *is_deploy {
            let _ = deployments.delete(name, &DeleteParams::default()).await;
        } else {
            let _ = services.delete(name, &DeleteParams::default()).await;
        }
    }
    result
}

/// Runs `kctl bench svc/NAME -o json` once: the ClusterIP ÷ pod-direct ratio of new
/// connections/s, the failed count over all rows, and the rows as a table.
fn kctl_bench(bin_dir: &Path, svc: &str, seconds: u64) -> Result<BenchFigures> {
    let out = Command::new(bin_dir.join("kctl"))
        .args([
            "bench",
            &format!("svc/{svc}"),
            "--duration",
            &format!("{seconds}s"),
            "-o",
            "json",
        ])
        .env("KUBECONFIG", CONTROL_KUBECONFIG)
        .stderr(Stdio::inherit())
        .output()
        .context("run kctl bench")?;
    if !out.status.success() {
        bail!("kctl bench failed ({})", out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("kctl bench -o json")?;
    let ratio = v["ratiosToPod"]["clusterip"]["connectionsPerSecond"]
        .as_f64()
        .ok_or_else(|| anyhow!("kctl bench -o json has no ClusterIP ratio: {v}"))?;
    let mut table = String::from(
        "target       address                conn/s    req/s   p50 µs   p99 µs  failed\n",
    );
    let mut failed = 0;
    for r in v["results"].as_array().into_iter().flatten() {
        let f = r["connections"]["failed"].as_u64().unwrap_or(0)
            + r["requests"]["failed"].as_u64().unwrap_or(0);
        failed += f;
        let _ = writeln!(
            table,
            "{:<12} {:<22} {:>7.0} {:>8.0} {:>8} {:>8} {:>7}",
            r["target"].as_str().unwrap_or("?"),
            match r["addresses"].as_array().map(Vec::len) {
                Some(1) => r["addresses"][0].as_str().unwrap_or("?").to_string(),
                Some(n) => format!("{n} endpoints"),
                None => "?".to_string(),
            },
            r["connections"]["per_second"].as_f64().unwrap_or(f64::NAN),
            r["requests"]["per_second"].as_f64().unwrap_or(f64::NAN),
            r["requests"]["p50_us"]
                .as_u64()
                .map_or("-".to_string(), |u| u.to_string()),
            r["requests"]["p99_us"]
                .as_u64()
                .map_or("-".to_string(), |u| u.to_string()),
            f
        );
    }
    Ok(BenchFigures {
        ratio,
        summary: format!("{failed} failed requests or connections over all rows"),
        table,
        failed,
    })
}

/// One bar per figure: measured ÷ target (the line at 1 is the target), green where met.
fn svg(rows: &[Row]) -> String {
    // A figure that could not be taken, or a far miss, shows at the cap.
    let fraction = |r: &Row| {
        if r.fraction.is_finite() {
            r.fraction.min(10.0)
        } else {
            10.0
        }
    };
    let of = |met: bool| {
        rows.iter()
            .map(|r| (r.met == met).then(|| fraction(r)))
            .collect()
    };
    Chart::bars(
        "kproxy cluster: measured ÷ target (below the dashed line meets it)",
        rows.iter().map(|r| r.what.replace('`', "")),
    )
    .size(900.0, 420.0)
    .y_label("measured ÷ target")
    .bar_series("meets the target", "#2f855a", of(true))
    .bar_series("misses the target", "#c53030", of(false))
    .rule(Axis::Y, 1.0, "target", "red")
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_escapes_labels_and_marks_misses() {
        let rows = [Row {
            what: "a <b> & c",
            target: "≤ 1",
            figure: String::new(),
            met: false,
            fraction: 2.0,
        }];
        let s = svg(&rows);
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        assert!(s.contains(r##"fill="#c53030"><title>misses the target"##));
        assert!(!s.contains(r##"fill="#2f855a"><title>"##));
    }
}
