//! `cargo xtask bench proxy`: `kproxy node` against a real API server, end to end, with the
//! Services and EndpointSlices written through the API as the endpoint controller would
//! (`kpt-proxyload`; no controller manager runs). Issue 11's targets, in one run:
//!
//! 1. N Services × 3 endpoints are in the API server before kproxy starts; the time from
//!    spawning `kproxy node` until it logs `initial sync done`, then a probe checks that
//!    random ClusterIPs really reach their endpoints.
//! 2. One endpoint of a random Service moves to a new address, repeatedly: the time from just
//!    before the API write until a connection to the ClusterIP reaches the new address, next
//!    to kproxy's own `kubeproxy_network_programming_duration_seconds`.
//! 3. kproxy's VmRSS / VmHWM after the sync and after the churn.
//! 4. kproxy's CPU time (utime + stime) over the churn, per change.
//!
//! ```text
//!  root netns: API server, kproxy node (no uplink; socket-LB on the bench's cgroup)
//!  node netns (Topology)               backend netns b0
//!  br0 10.244.1.1 ──────veth────────── eth0 10.244.1.2; `local 10.192.0.0/12 dev lo`
//!  route 10.192.0.0/12 via 10.244.1.2  (kpt-proxyload serve :8080: answers the address hit)
//!  probe thread of kpt-proxyload (in the cgroup)
//! ```
//!
//! Every endpoint address is one of the backend namespace's own, so each is a real listener
//! and the answer names the endpoint reached. Results: target/bench/proxy.{md,svg}.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use kproxy_tests::{
    BpffsDir, Daemon,
    apiserver::{ApiServer, TempDir},
    lab::{Cgroup, Topology},
    unique,
};
use serde_json::Value;

use crate::bench_api::rss_kib;
use crate::util::{percentile, step};

/// The endpoint addresses `kpt-proxyload` uses (routed to the backend namespace).
const POOL: &str = "10.192.0.0/12";

pub struct ProxyBench {
    pub services: usize,
    pub changes: usize,
}

/// Runs `kpt-proxyload ARGS` with the kubeconfig; its progress goes to the terminal, the
/// JSON line it prints is returned.
fn proxyload(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!("kpt-proxyload {args:?} failed ({})", out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("kpt-proxyload output {line:?}"))
}

/// kproxy's CPU time so far: utime + stime from /proc/PID/stat (clock ticks, 10 ms on
/// most kernels), and the sum of its threads' on-CPU nanoseconds from schedstat (exact,
/// threads that exited are missing).
fn cpu_time(pid: u32) -> Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let mut sched_ns = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            sched_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok((
        Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)),
        Duration::from_nanos(sched_ns),
    ))
}

/// A Prometheus histogram from a text page: cumulative buckets, sum, count.
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn parse(page: &str, name: &str) -> Self {
        let mut h = Self {
            buckets: Vec::new(),
            sum: 0.0,
            count: 0,
        };
        for line in page.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (key, value) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            if let Some(le) = key
                .strip_prefix("_bucket{le=\"")
                .and_then(|l| l.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                h.buckets.push((le, value.parse().unwrap_or(0)));
            } else if key == "_sum" {
                h.sum = value.parse().unwrap_or(0.0);
            } else if key == "_count" {
                h.count = value.parse().unwrap_or(0);
            }
        }
        h
    }

    /// The upper bound of the bucket holding quantile `q` (the histogram cannot say more).
    fn quantile_bound(&self, q: f64) -> f64 {
        let want = (q * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= want.max(1))
            .map_or(f64::NAN, |(le, _)| *le)
    }

    /// "n=…, mean …, p50 ≤ …, p99 ≤ …" in milliseconds.
    fn describe_ms(&self) -> String {
        if self.count == 0 {
            return "no observations".into();
        }
        format!(
            "n={}, mean {:.2} ms, p50 ≤ {} ms, p99 ≤ {} ms (bucket bounds)",
            self.count,
            self.sum / self.count as f64 * 1000.0,
            fmt_bound(self.quantile_bound(0.5) * 1000.0),
            fmt_bound(self.quantile_bound(0.99) * 1000.0)
        )
    }
}

fn fmt_bound(ms: f64) -> String {
    if ms.is_infinite() {
        "∞".into()
    } else if ms < 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

/// The value of `key=` in a tracing log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Waits until a log line of `d` contains `needle`, polling every millisecond; returns the
/// line and when it was seen.
fn wait_logged(d: &mut Daemon, needle: &str, timeout: Duration) -> Result<(String, Instant)> {
    let started = Instant::now();
    loop {
        if let Some(l) = d.lines().into_iter().find(|l| l.contains(needle)) {
            return Ok((l, Instant::now()));
        }
        d.assert_running();
        if started.elapsed() > timeout {
            let lines = d.lines();
            bail!(
                "no {needle:?} within {timeout:?}; log:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        Self {
            rss_kib: rss_kib(pid, "VmRSS:"),
            hwm_kib: rss_kib(pid, "VmHWM:"),
        }
    }

    fn rss_mb(&self) -> f64 {
        self.rss_kib as f64 * 1024.0 / 1e6
    }

    fn describe(&self) -> String {
        format!(
            "VmRSS {:.1} MB, VmHWM {:.1} MB",
            self.rss_mb(),
            self.hwm_kib as f64 * 1024.0 / 1e6
        )
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear script: set up, load, start, churn, report"
)]
pub fn run(b: &ProxyBench, target: &Path, out_dir: &Path) -> Result<()> {
    if b.services == 0 || b.services > 100_000 || b.changes == 0 {
        bail!("bench proxy: --services takes 1..=100000 and --proxy-changes at least 1");
    }
    let started = Instant::now();
    let rel = target.join("release");
    let load_bin = rel.join("kpt-proxyload");
    let kproxy_bin = rel.join("kproxy");

    step("bench proxy: lab namespaces, backend listener, socket-LB cgroup");
    let topo = Topology::build("kpb", 1);
    let backend = &topo.backends[0];
    backend.ip(&["route", "add", "local", POOL, "dev", "lo"]);
    topo.node.ip(&["route", "add", POOL, "via", "10.244.1.2"]);
    let mut server_cmd = backend.cmd(&load_bin);
    server_cmd.args(["serve", "--port", "8080"]);
    let mut server = Daemon::spawn(server_cmd);
    wait_logged(&mut server, "serving", Duration::from_secs(10))?;
    let cgroup = Cgroup::new();
    let cgroup_s = cgroup.path().to_string_lossy().into_owned();

    let dir = TempDir::new("kproxy-bench-proxy");
    let api = ApiServer::start_with(&rel.join("kproxy-apiserver"), dir.path(), &[]);
    let node = unique("kpb-node");
    let node_kc = dir.path().join("node-kubeconfig");
    crate::util::run_cmd(
        Command::new(rel.join("kproxy-apiserver"))
            .args(["node-kubeconfig", &node, "--out"])
            .arg(&node_kc)
            .args(["--server", &api.url, "--data-dir"])
            .arg(&api.data_dir)
            .stdout(Stdio::null()),
    )?;
    let state = dir.path().join("state.json");
    let state_s = state.to_string_lossy().into_owned();

    step(&format!(
        "bench proxy: {} Services × 3 endpoints into the API server",
        b.services
    ));
    let loaded = proxyload(
        &load_bin,
        &api.kubeconfig,
        &[
            "load",
            "--services",
            &b.services.to_string(),
            "--node",
            &node,
            "--state",
            &state_s,
        ],
    )?;
    // Trigger times of the loaded slices must be before kproxy's start (second
    // resolution), or the initial sync would count them as programming latency.
    thread::sleep(Duration::from_millis(1100));
    let api_rss = Memory::of(api.daemon.pid());

    step("bench proxy: starting kproxy node, timed until `initial sync done`");
    let bpffs = BpffsDir::new("kpb");
    let metrics_port = free_port()?;
    let mut cmd = Command::new(&kproxy_bin);
    cmd.arg("--bpffs")
        .arg(bpffs.path())
        .args(["node", "--kubeconfig"])
        .arg(&node_kc)
        .args(["--node-name", &node, "--keep-local", "none"])
        // Socket-LB for the probe's cgroup only; no node endpoint (its fixed port would clash
        // with a kproxy of a test running meanwhile).
        .args(["--socket-lb-scope", &cgroup_s, "--no-serve"])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("RUST_LOG", "warn,kproxy=info");
    let t0 = Instant::now();
    let mut kp = Daemon::spawn(cmd);
    let (_, ready_at) = wait_logged(
        &mut kp,
        "waiting for the initial lists",
        Duration::from_mins(1),
    )?;
    let (sync_line, synced_at) = wait_logged(&mut kp, "initial sync done", Duration::from_mins(2))?;
    let to_ready = ready_at - t0;
    let to_sync = synced_at - t0;
    let pass_took = log_field(&sync_line, "took").unwrap_or("?").to_string();
    let map_ops = log_field(&sync_line, "map_ops").unwrap_or("?").to_string();
    let synced_services = log_field(&sync_line, "services").unwrap_or("?").to_string();
    let pid = kp.pid();
    let mem_sync = Memory::of(pid);

    step("bench proxy: probing random ClusterIPs from the socket-LB cgroup");
    let probe_args = [
        "--state",
        &state_s,
        "--cgroup",
        &cgroup_s,
        "--netns",
        topo.node.name(),
    ];
    let mut args = vec!["probe", "--samples", "20"];
    args.extend(probe_args);
    let probed = proxyload(&load_bin, &api.kubeconfig, &args)?;
    let probed_ok = probed["ok"].as_u64().unwrap_or(0);
    let probed_n = probed["probed"].as_u64().unwrap_or(0);
    if probed_ok != probed_n {
        eprintln!(
            "bench proxy: ClusterIPs that did not reach their endpoints: {}",
            probed["bad"]
        );
    }

    step(&format!(
        "bench proxy: {} endpoint changes, each timed until a connection reaches the new address",
        b.changes
    ));
    let cpu0 = cpu_time(pid)?;
    let changes_s = b.changes.to_string();
    let mut args = vec!["churn", "--changes", &changes_s];
    args.extend(probe_args);
    let churned = proxyload(&load_bin, &api.kubeconfig, &args)?;
    let cpu1 = cpu_time(pid)?;
    kp.assert_running();
    let mem_churn = Memory::of(pid);
    let (status, page) = crate::util::http_get(
        std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        "/metrics",
        Duration::from_secs(5),
    )?;
    if status != 200 {
        bail!("GET /metrics: status {status}");
    }
    let programming = Histogram::parse(&page, "kubeproxy_network_programming_duration_seconds");
    let sync_hist = Histogram::parse(&page, "kubeproxy_sync_proxy_rules_duration_seconds");

    let mut lat: Vec<f64> = churned["latencies_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    lat.sort_by(f64::total_cmp);
    let failed = churned["failed"].as_array().map_or(0, Vec::len);
    let mut write: Vec<f64> = churned["write_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    write.sort_by(f64::total_cmp);
    // A change never seen counts as slower than every one seen.
    let mut lat_all = lat.clone();
    lat_all.extend(std::iter::repeat_n(f64::INFINITY, failed));
    let (p50, p99, max) = (
        percentile(&lat_all, 0.5),
        percentile(&lat_all, 0.99),
        lat_all.last().copied().unwrap_or(f64::NAN),
    );
    let n = b.changes as f64;
    let cpu_ticks_ms = (cpu1.0.saturating_sub(cpu0.0)).as_secs_f64() * 1000.0 / n;
    let cpu_sched_ms = (cpu1.1.saturating_sub(cpu0.1)).as_secs_f64() * 1000.0 / n;
    let rss_max = mem_sync.rss_mb().max(mem_churn.rss_mb());

    let mut md = String::new();
    writeln!(md, "# kproxy node benchmark\n")?;
    writeln!(
        md,
        "`kproxy node` (release build) against a real API server (redb) on this machine ({} \
         CPUs), no controller manager: kpt-proxyload writes the Services and EndpointSlices \
         (3 ready endpoints each, trigger-time annotation set like the endpoint controller). \
         Probe connections come from a process in kproxy's socket-LB cgroup; every endpoint \
         is a real listener that answers with the address it was reached on. Took {:.0} s.\n",
        crate::util::cpus(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(md, "| measure | figure |\n|---|---:|")?;
    writeln!(
        md,
        "| {} Services + {} slices created before kproxy starts | {:.1} s ({:.0} objects/s); API server {} |",
        b.services,
        b.services,
        loaded["seconds"].as_f64().unwrap_or(f64::NAN),
        loaded["objects_per_s"].as_f64().unwrap_or(f64::NAN),
        api_rss.describe()
    )?;
    writeln!(
        md,
        "| kproxy start → datapath loaded, watching (`kproxy ready`) | {:.0} ms |",
        to_ready.as_secs_f64() * 1000.0
    )?;
    writeln!(
        md,
        "| kproxy start → `initial sync done` ({synced_services} Services, {map_ops} map ops; the full pass itself took {pass_took}) | {:.0} ms |",
        to_sync.as_secs_f64() * 1000.0
    )?;
    writeln!(
        md,
        "| ClusterIPs probed after the sync that reached one of their endpoints | {probed_ok}/{probed_n} |"
    )?;
    writeln!(
        md,
        "| endpoint change: API write → connection reaches the new address (n={}, failed {failed}) | p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms |",
        b.changes
    )?;
    writeln!(
        md,
        "| … of which the API write (PATCH round trip) | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&write, 0.5),
        percentile(&write, 0.99)
    )?;
    writeln!(
        md,
        "| kproxy's kubeproxy_network_programming_duration_seconds | {} |",
        programming.describe_ms()
    )?;
    writeln!(
        md,
        "| kproxy's kubeproxy_sync_proxy_rules_duration_seconds (per Service synced) | {} |",
        sync_hist.describe_ms()
    )?;
    writeln!(
        md,
        "| kproxy memory after the initial sync | {} |",
        mem_sync.describe()
    )?;
    writeln!(
        md,
        "| kproxy memory after the churn | {} |",
        mem_churn.describe()
    )?;
    writeln!(
        md,
        "| kproxy CPU per endpoint change (utime+stime over {} changes; threads' schedstat) | {cpu_ticks_ms:.3} ms ({cpu_sched_ms:.3} ms) |\n",
        b.changes
    )?;
    writeln!(md, "| target | measured | met |\n|---|---:|---|")?;
    let at_scale = b.services >= 10_000;
    let scale_note = if at_scale {
        String::new()
    } else {
        format!(" (at {} Services, not 10,000)", b.services)
    };
    let row = |md: &mut String, name: &str, v: String, ok: bool| {
        let verdict = match (ok, at_scale) {
            (true, true) => "yes",
            (true, false) => "yes at this scale",
            (false, _) => "**no**",
        };
        writeln!(md, "| {name} | {v}{scale_note} | {verdict} |")
    };
    row(
        &mut md,
        "initial sync of 10,000 Services ≤ 1 s from kproxy start",
        format!(
            "{:.0} ms, {probed_ok}/{probed_n} probed ClusterIPs served",
            to_sync.as_secs_f64() * 1000.0
        ),
        to_sync <= Duration::from_secs(1) && probed_ok == probed_n && probed_n > 0,
    )?;
    row(
        &mut md,
        "one endpoint change in the datapath p99 ≤ 10 ms after the API write",
        format!("p99 {p99:.2} ms"),
        p99 <= 10.0,
    )?;
    row(
        &mut md,
        "kproxy RSS ≤ 40 MB at 10,000 Services",
        format!("{rss_max:.1} MB"),
        rss_max <= 40.0,
    )?;
    // utime+stime comes in clock ticks and lags (the kernel scales sampled ticks to the
    // runtime lazily); the threads' schedstat is exact. The larger one is judged.
    let cpu_ms = cpu_ticks_ms.max(cpu_sched_ms);
    row(
        &mut md,
        "CPU time per endpoint change ≤ 1 ms",
        format!("{cpu_ms:.3} ms"),
        cpu_ms <= 1.0,
    )?;
    std::fs::write(out_dir.join("proxy.md"), &md)?;
    std::fs::write(out_dir.join("proxy.json"), churned.to_string())?;
    std::fs::write(out_dir.join("proxy.svg"), cdf_svg(&lat, failed, b.changes))?;
    println!("\n{md}");
    println!(
        "bench: wrote {}, proxy.svg and proxy.json (raw latencies)",
        out_dir.join("proxy.md").display()
    );
    // kproxy first (its pinned links go with the bpffs directory), then the rest.
    drop(kp);
    drop(bpffs);
    Ok(())
}

/// The CDF of the endpoint-change latencies, with the 10 ms target.
fn cdf_svg(sorted_ms: &[f64], failed: usize, total: usize) -> String {
    let (w, h, left, bottom, top) = (620.0, 320.0, 50.0, 270.0, 30.0);
    let right = w - 20.0;
    // The x axis spans the slowest change, at least past the target, at most 1 s.
    let xmax = sorted_ms
        .last()
        .copied()
        .unwrap_or(10.0)
        .clamp(12.0, 1000.0);
    let x = |ms: f64| left + ms.min(xmax) / xmax * (right - left);
    let y = |f: f64| bottom - f * (bottom - top);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<text x="10" y="18" font-size="14">kproxy node: API write → new backend reached, CDF of {total} changes ({failed} never seen)</text>"#
    );
    let _ = write!(
        s,
        r#"<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="black"/><line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="black"/>"#
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}%</text>"#,
            left - 4.0,
            y(f) + 4.0,
            f * 100.0
        );
        let ms = xmax * f;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{ms:.1} ms</text>"#,
            x(ms),
            bottom + 16.0
        );
    }
    let mut points = String::new();
    let n = total.max(1) as f64;
    for (i, ms) in sorted_ms.iter().enumerate() {
        let _ = write!(points, "{:.1},{:.1} ", x(*ms), y(i as f64 / n));
        let _ = write!(points, "{:.1},{:.1} ", x(*ms), y((i + 1) as f64 / n));
    }
    let _ = write!(
        s,
        r##"<polyline points="{points}" fill="none" stroke="#2b6cb0" stroke-width="2"/>"##
    );
    let tx = x(10.0);
    let _ = write!(
        s,
        r#"<line x1="{tx}" x2="{tx}" y1="{top}" y2="{bottom}" stroke="red" stroke-dasharray="4"/><text x="{}" y="{}" fill="red">target p99 10 ms</text>"#,
        tx + 4.0,
        top + 12.0
    );
    let py = y(0.99);
    let _ = write!(
        s,
        r#"<line x1="{left}" x2="{right}" y1="{py}" y2="{py}" stroke="gray" stroke-dasharray="2"/>"#
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_from_a_prometheus_page() {
        let page = "\
# TYPE kubeproxy_network_programming_duration_seconds histogram
kubeproxy_network_programming_duration_seconds_sum 0.03
kubeproxy_network_programming_duration_seconds_count 10
kubeproxy_network_programming_duration_seconds_bucket{le=\"0.001\"} 2
kubeproxy_network_programming_duration_seconds_bucket{le=\"0.002\"} 6
kubeproxy_network_programming_duration_seconds_bucket{le=\"0.004\"} 9
kubeproxy_network_programming_duration_seconds_bucket{le=\"+Inf\"} 10
kubeproxy_sync_proxy_rules_duration_seconds_count 99
";
        let h = Histogram::parse(page, "kubeproxy_network_programming_duration_seconds");
        assert_eq!(h.count, 10);
        assert!((h.sum - 0.03).abs() < 1e-9);
        assert_eq!(h.buckets.len(), 4);
        assert!((h.quantile_bound(0.5) - 0.002).abs() < 1e-9);
        assert!(h.quantile_bound(0.99).is_infinite());
        assert!(h.describe_ms().contains("mean 3.00 ms"));
    }

    #[test]
    fn fields_of_a_log_line() {
        let l = "2026-01-01T00:00:00.1Z  INFO kproxy::node: initial sync done services=10001 map_ops=60002 took=412.3ms";
        assert_eq!(log_field(l, "services"), Some("10001"));
        assert_eq!(log_field(l, "took"), Some("412.3ms"));
        assert_eq!(log_field(l, "apply"), None);
    }
}
