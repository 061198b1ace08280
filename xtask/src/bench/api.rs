//! `cargo xtask bench api`: the API server under load from kube-rs clients (kpt-apiload), with
//! the embedded redb store (durable before each answer) and, side by side, the in-memory
//! store as the reference for what durability costs; with `--store etcd` also on a local etcd
//! (`etcd`: etcd's own put rate, creates against it, gets from the watch cache); then a fresh
//! server under 2,000 idle connections and a JSON-patch bomb (memory, `/healthz` latency).
//! Results: target/bench/api.{md,svg}.

use std::{
    fmt::Write as _,
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use kproxy_tests::apiserver::{ApiServer, TempDir};
use serde_json::{Value, json};

use super::{
    chart::{Axis, Chart},
    load,
    procfs::status_kib,
};
use crate::util::step;

pub struct ApiBench {
    pub objects: usize,
    pub concurrency: usize,
    pub get_seconds: f64,
    pub watchers: usize,
    pub watch_events: usize,
    /// Also measure the API server on a local etcd.
    pub etcd: bool,
}

struct Figures {
    store: &'static str,
    creates_per_s: f64,
    /// Consistent gets (no resourceVersion).
    gets_per_s: f64,
    /// Gets with resourceVersion=0 ("any": the watch cache may answer without asking etcd).
    gets_any_per_s: f64,
    rss_idle_mib: f64,
    rss_loaded_mib: f64,
    hwm_mib: f64,
    watch: Value,
    /// Creates/s from [`REFERENCE_CLIENTS`] clients (the etcd run only; after everything else,
    /// so neither RSS figure includes their connections).
    creates_per_s_reference_clients: Option<f64>,
}

/// `etcdctl check perf --load l`'s client count: etcd's own put rate is measured with this
/// many, so the etcd run also creates with this many for a like-for-like ratio.
const REFERENCE_CLIENTS: usize = 500;

/// The like-for-like creates are this many times `objects`: etcd's rate is a 60 s average,
/// and a burst of 10,000 (2–2.5 s here) swung with whatever else the shared machine did in
/// those seconds (0.69–0.90× over six runs of one build) and paid its 500 TLS handshakes
/// out of a third of the creates.
const REFERENCE_ROUNDS: usize = 3;

/// How many like-for-like creates the etcd run makes.
fn reference_creates(b: &ApiBench) -> usize {
    b.objects * REFERENCE_ROUNDS
}

/// What a run measures besides creates, gets and RSS.
#[derive(Clone, Copy)]
struct Extras {
    /// The watch fan-out.
    watch: bool,
    /// Creates from [`REFERENCE_CLIENTS`] clients, last.
    reference_clients: bool,
}

fn one(
    b: &ApiBench,
    target: &Path,
    store: &'static str,
    flags: &[&str],
    extras: Extras,
) -> Result<Figures> {
    let dir = TempDir::new("kproxy-bench-api");
    let mut args = vec!["--store", store];
    args.extend_from_slice(flags);
    // ApiServer finds the binary next to the test harness; point it at the release build.
    let server = ApiServer::start_with(&target.join("release/kproxy-apiserver"), dir.path(), &args);
    let pid = server.daemon.pid();
    let kc = server.kubeconfig.clone();
    let load_bin = target.join("release/kpt-apiload");
    let rss_idle = status_kib(pid, "VmRSS:").unwrap_or(0);
    let (n, c) = (b.objects.to_string(), b.concurrency.to_string());

    step(&format!(
        "bench api [{store}]: {} creates from {} concurrent clients",
        b.objects, b.concurrency
    ));
    let creates = load(
        &load_bin,
        &kc,
        &["creates", "--count", &n, "--concurrency", &c],
    )?;
    let rss_loaded = status_kib(pid, "VmRSS:").unwrap_or(0);
    let gets = |any: bool| {
        step(&format!(
            "bench api [{store}]: {} gets for {} s",
            if any {
                "resourceVersion=0"
            } else {
                "consistent"
            },
            b.get_seconds
        ));
        let secs = b.get_seconds.to_string();
        let mut args = vec![
            "gets",
            "--seconds",
            &secs,
            "--concurrency",
            &c,
            "--count",
            &n,
        ];
        if any {
            args.push("--any-version");
        }
        load(&load_bin, &kc, &args).map(|v| v["gets_per_s"].as_f64().unwrap_or(0.0))
    };
    let gets_per_s = gets(false)?;
    let gets_any_per_s = gets(true)?;
    let watch = if extras.watch {
        step(&format!(
            "bench api [{store}]: {} watchers, {} changes",
            b.watchers, b.watch_events
        ));
        load(
            &load_bin,
            &kc,
            &[
                "watch",
                "--watchers",
                &b.watchers.to_string(),
                "--events",
                &b.watch_events.to_string(),
                "--concurrency",
                "16",
            ],
        )?
    } else {
        Value::Null
    };
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let creates_per_s_reference_clients = if extras.reference_clients {
        let count = reference_creates(b);
        step(&format!(
            "bench api [{store}]: {count} more creates from {REFERENCE_CLIENTS} clients (as \
             etcdctl check perf)"
        ));
        let (n, c) = (count.to_string(), REFERENCE_CLIENTS.to_string());
        let v = load(
            &load_bin,
            &kc,
            &[
                "--namespace",
                "kpt-bench-clients",
                "creates",
                "--count",
                &n,
                "--concurrency",
                &c,
            ],
        )?;
        v["creates_per_s"].as_f64()
    } else {
        None
    };
    Ok(Figures {
        store,
        creates_per_s: creates["creates_per_s"].as_f64().unwrap_or(0.0),
        gets_per_s,
        gets_any_per_s,
        rss_idle_mib: rss_idle as f64 / 1024.0,
        rss_loaded_mib: rss_loaded as f64 / 1024.0,
        hwm_mib: hwm as f64 / 1024.0,
        watch,
        creates_per_s_reference_clients,
    })
}

/// Idle connections held open during [`pressure`].
const IDLE_CONNECTIONS: usize = 2000;

/// The server under [`IDLE_CONNECTIONS`] idle connections and a patch bomb.
struct Pressure {
    rss_max_mib: f64,
    hwm_mib: f64,
    healthz_p50_ms: f64,
    healthz_p99_ms: f64,
    healthz_failed: usize,
    probes: usize,
    bomb_status: u16,
    bomb_ms: f64,
}

/// Raises this process's soft open-file limit to its hard limit: the idle connections need
/// one descriptor each.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a valid rlimit to fill or read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

/// One `/healthz` through curl on a fresh connection (handshake included): the status and
/// curl's own total time, in ms.
fn healthz(url: &str, ca: &Path) -> (u16, f64) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["-w", "%{http_code} %{time_total}"])
        .arg(format!("{url}/healthz"))
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut f = text.split_whitespace();
    let code = f.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let secs: f64 = f.next().and_then(|t| t.parse().ok()).unwrap_or(5.0);
    (code, secs * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an index into a short, non-empty list"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A fresh server (redb) holding [`IDLE_CONNECTIONS`] idle TCP connections while a patch bomb
/// (40 copies of an Event into itself: 2^40 Events if executed) is sent; `/healthz` is probed
/// and RSS sampled meanwhile. All within the server's 10 s TLS handshake timeout, which
/// closes the idle connections.
fn pressure(target: &Path) -> Result<Pressure> {
    raise_open_files();
    let dir = TempDir::new("kproxy-bench-pressure");
    let server = ApiServer::start_with(
        &target.join("release/kproxy-apiserver"),
        dir.path(),
        &["--store", "redb"],
    );
    let pid = server.daemon.pid();
    let http = server.http();
    let events = "/api/v1/namespaces/default/events";
    let created = http.post(
        events,
        &json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "bomb"},
            "involvedObject": {"kind": "Node", "name": "n1"},
            "reason": "Bench", "message": "m", "type": "Normal",
        }),
    );
    anyhow::ensure!(created.code == 201, "creating the Event: {}", created.body);
    let addr = server.url.trim_start_matches("https://").to_string();
    let ca = server.data_dir.join("pki/ca.crt");

    step(&format!(
        "bench api [pressure]: {IDLE_CONNECTIONS} idle connections and a patch bomb"
    ));
    let started = Instant::now();
    let idle = (0..IDLE_CONNECTIONS)
        .map(|_| TcpStream::connect(&addr))
        .collect::<Result<Vec<_>, _>>()
        .context("opening the idle connections")?;
    let doubling: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
        .collect();
    let bomb = std::thread::spawn(move || {
        let t = Instant::now();
        let r = http.try_req(
            "PATCH",
            &format!("{events}/bomb"),
            "application/json-patch+json",
            Some(&serde_json::to_vec(&doubling).unwrap_or_default()),
        );
        (r.map_or(0, |r| r.code), t.elapsed())
    });
    let (mut lat, mut failed, mut rss_max) = (Vec::new(), 0, 0);
    while started.elapsed() < Duration::from_secs(8) && (lat.len() < 50 || !bomb.is_finished()) {
        let (code, ms) = healthz(&server.url, &ca);
        if code == 200 {
            lat.push(ms);
        } else {
            failed += 1;
        }
        rss_max = rss_max.max(status_kib(pid, "VmRSS:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    drop(idle);
    let (bomb_status, bomb_took) = bomb
        .join()
        .map_err(|_| anyhow::anyhow!("the patch bomb thread panicked"))?;
    let probes = lat.len() + failed;
    lat.sort_by(f64::total_cmp);
    Ok(Pressure {
        rss_max_mib: rss_max as f64 / 1024.0,
        hwm_mib: hwm as f64 / 1024.0,
        healthz_p50_ms: percentile(&lat, 0.5),
        healthz_p99_ms: percentile(&lat, 0.99),
        healthz_failed: failed,
        probes,
        bomb_status,
        bomb_ms: bomb_took.as_secs_f64() * 1000.0,
    })
}

pub fn run(b: &ApiBench, target: &Path, out_dir: &Path) -> Result<()> {
    let started = Instant::now();
    let redb = one(
        b,
        target,
        "redb",
        &[],
        Extras {
            watch: true,
            reference_clients: false,
        },
    )?;
    let mem = one(
        b,
        target,
        "memory",
        &[],
        Extras {
            watch: false,
            reference_clients: false,
        },
    )?;
    let etcd = b.etcd.then(|| on_etcd(b, target)).transpose()?;
    let p = pressure(target)?;
    let w = &redb.watch;
    let mut md = String::new();
    writeln!(md, "# API server benchmark\n")?;
    writeln!(
        md,
        "{} pods created by {} concurrent kube-rs clients, then random gets for {} s; {} watchers \
         on the pods, then {} label patches. Both the server and the load generator run on this \
         machine ({} CPUs), release builds. Took {:.0} s.\n",
        b.objects,
        b.concurrency,
        b.get_seconds,
        b.watchers,
        b.watch_events,
        crate::util::cpus(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        md,
        "| store | creates/s | gets/s | gets/s, resourceVersion=0 | RSS idle | RSS with {} pods | peak RSS |",
        b.objects
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for f in [Some(&redb), Some(&mem), etcd.as_ref().map(|e| &e.figures)]
        .into_iter()
        .flatten()
    {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            f.store,
            f.creates_per_s,
            f.gets_per_s,
            f.gets_any_per_s,
            f.rss_idle_mib,
            f.rss_loaded_mib,
            f.hwm_mib
        )?;
    }
    writeln!(
        md,
        "\nDurability cost (redb / memory, same run): creates {:.2}×, gets {:.2}×.\n",
        redb.creates_per_s / mem.creates_per_s,
        redb.gets_per_s / mem.gets_per_s
    )?;
    writeln!(
        md,
        "Watch (redb): {}/{} watchers received all {} events, {}/{} in resourceVersion order; the \
         last watcher had the last event {:.0} ms after the first patch.\n",
        w["complete"],
        w["watchers"],
        w["events"],
        w["in_order"],
        w["watchers"],
        w["last_delivery_ms"].as_f64().unwrap_or(0.0)
    )?;
    writeln!(
        md,
        "Under pressure (a fresh redb server): {IDLE_CONNECTIONS} idle TCP connections held \
         open and a JSON-patch bomb (40 copies of an Event into itself) sent, while `/healthz` is \
         probed through curl on fresh connections (TLS handshake included) and RSS sampled.\n"
    )?;
    writeln!(
        md,
        "| idle connections | patch bomb | /healthz p50 | /healthz p99 | failed probes | RSS max | peak RSS |"
    )?;
    writeln!(md, "|---:|---|---:|---:|---:|---:|---:|")?;
    writeln!(
        md,
        "| {IDLE_CONNECTIONS} | {} in {:.0} ms | {:.1} ms | {:.1} ms | {}/{} | {:.1} MiB | {:.1} MiB |\n",
        p.bomb_status,
        p.bomb_ms,
        p.healthz_p50_ms,
        p.healthz_p99_ms,
        p.healthz_failed,
        p.probes,
        p.rss_max_mib,
        p.hwm_mib
    )?;
    writeln!(md, "| target | measured (redb) | met |\n|---|---:|---|")?;
    let row = |md: &mut String, name: &str, v: String, ok: bool| {
        writeln!(md, "| {name} | {v} | {} |", if ok { "yes" } else { "no" })
    };
    row(
        &mut md,
        "≥ 5,000 creates/s",
        format!("{:.0}", redb.creates_per_s),
        redb.creates_per_s >= 5000.0,
    )?;
    row(
        &mut md,
        "≥ 20,000 gets/s",
        format!("{:.0}", redb.gets_per_s),
        redb.gets_per_s >= 20000.0,
    )?;
    let all = w["complete"] == w["watchers"] && w["in_order"] == w["watchers"];
    row(
        &mut md,
        "100 watchers get every event in order",
        format!("{}/{}", w["complete"], w["watchers"]),
        all,
    )?;
    row(
        &mut md,
        "RSS ≤ 50 MB with 10,000 objects",
        format!("{:.1} MiB", redb.rss_loaded_mib),
        redb.rss_loaded_mib * 1.048_576 <= 50.0,
    )?;
    row(
        &mut md,
        "≤ 100 MB RSS under 2,000 idle connections and a patch bomb",
        format!("{:.1} MiB", p.hwm_mib),
        p.hwm_mib * 1.048_576 <= 100.0,
    )?;
    row(
        &mut md,
        "/healthz ≤ 100 ms under them (p99)",
        if p.probes == 0 {
            "no probe ran (opening the idle connections took the whole window)".to_string()
        } else {
            format!("{:.1} ms", p.healthz_p99_ms)
        },
        p.probes > 0 && p.healthz_p99_ms <= 100.0 && p.healthz_failed == 0,
    )?;
    row(
        &mut md,
        "the patch bomb refused (4xx) in well under a second",
        format!("{} in {:.0} ms", p.bomb_status, p.bomb_ms),
        (400..500).contains(&p.bomb_status) && p.bomb_ms < 1000.0,
    )?;
    if let Some(e) = &etcd {
        etcd_section(&mut md, b, e)?;
    }
    std::fs::write(out_dir.join("api.md"), &md)?;
    std::fs::write(
        out_dir.join("api.svg"),
        svg(&redb, &mem, etcd.as_ref().map(|e| &e.figures)),
    )?;
    println!("\n{md}");
    println!(
        "bench: wrote {} and api.svg",
        out_dir.join("api.md").display()
    );
    Ok(())
}

/// Grouped bars: creates/s and both kinds of gets/s per store, the targets dashed.
fn svg(redb: &Figures, mem: &Figures, etcd: Option<&Figures>) -> String {
    let bars = |f: &Figures| {
        vec![
            Some(f.creates_per_s),
            Some(f.gets_per_s),
            Some(f.gets_any_per_s),
        ]
    };
    let mut chart = Chart::bars(
        "API server: requests per second (kube-rs clients)",
        ["creates/s", "gets/s", "gets/s (rv=0)"],
    )
    .size(620.0, 340.0)
    .y_label("requests/s")
    .bar_series("redb", "#2b6cb0", bars(redb))
    .bar_series("memory", "#a0aec0", bars(mem));
    if let Some(e) = etcd {
        chart = chart.bar_series("etcd", "#2f855a", bars(e));
    }
    chart
        .rule(Axis::Y, 5000.0, "creates/s target", "red")
        .rule(Axis::Y, 20000.0, "gets/s target", "#e8590c")
        .render()
}

/// The etcd run: the API server's figures and etcd's own put rate, same machine.
struct OnEtcd {
    figures: Figures,
    raw_puts_per_s: Option<f64>,
}

fn on_etcd(b: &ApiBench, target: &Path) -> Result<OnEtcd> {
    let etcd = super::etcd::BenchEtcd::start()?;
    let figures = one(
        b,
        target,
        "etcd",
        &["--etcd-servers", etcd.url()],
        Extras {
            watch: true,
            reference_clients: true,
        },
    )?;
    // After the API run, so its keys are not in etcd meanwhile.
    let raw_puts_per_s = super::etcd::raw_put_rate(etcd.url())?;
    Ok(OnEtcd {
        figures,
        raw_puts_per_s,
    })
}

/// The etcd figures against the targets.
fn etcd_section(md: &mut String, b: &ApiBench, e: &OnEtcd) -> Result<()> {
    let f = &e.figures;
    let w = &f.watch;
    writeln!(
        md,
        "\n## On etcd\n\nA one-member etcd on this machine (data in a scratch directory, as \
         redb's), the API server with `--store etcd` (GETs from its watch cache). etcd's own put \
         rate: {}.\n",
        e.raw_puts_per_s.map_or_else(
            || "not measured (no etcdctl)".to_string(),
            |r| format!("{r:.0} writes/s (`etcdctl check perf --load l`, 500 clients)")
        )
    )?;
    writeln!(md, "| target | measured (etcd) | met |\n|---|---:|---|")?;
    let row = |md: &mut String, name: &str, v: String, ok: bool| {
        writeln!(md, "| {name} | {v} | {} |", if ok { "yes" } else { "no" })
    };
    // Figures shown beside the targets, for comparison only.
    let shown_row =
        |md: &mut String, name: &str, v: String| writeln!(md, "| {name} | {v} | not a target |");
    // The ratio holds creates from as many clients as etcd's own rate was measured with; the
    // bench's usual client count is shown beside it (fewer requests in flight: etcd batches
    // fewer writes per fsync).
    let ratio = |creates: f64| e.raw_puts_per_s.map(|r| creates / r);
    let shown = |creates: f64| {
        format!(
            "{creates:.0} ({})",
            ratio(creates).map_or_else(|| "no reference".into(), |r| format!("{r:.2}×"))
        )
    };
    let reference = f.creates_per_s_reference_clients;
    row(
        md,
        &format!(
            "creates/s ≥ 0.7× etcd's own put rate ({REFERENCE_CLIENTS} clients each; {} \
             creates)",
            reference_creates(b)
        ),
        reference.map_or_else(|| "not measured".into(), shown),
        reference.and_then(&ratio).is_some_and(|r| r >= 0.7),
    )?;
    shown_row(
        md,
        &format!(
            "creates/s from {} clients, against the same rate",
            b.concurrency
        ),
        shown(f.creates_per_s),
    )?;
    // kube-apiserver serves a GET from its watch cache when it names a resourceVersion ("0":
    // any); one without goes to etcd there. Both are shown; the cache-served one is the target.
    row(
        md,
        "≥ 20,000 gets/s from the watch cache (resourceVersion=0)",
        format!("{:.0}", f.gets_any_per_s),
        f.gets_any_per_s >= 20000.0,
    )?;
    shown_row(
        md,
        "consistent gets/s (no resourceVersion: etcd's revision first, then the cache)",
        format!("{:.0}", f.gets_per_s),
    )?;
    let all = w["complete"] == w["watchers"] && w["in_order"] == w["watchers"];
    row(
        md,
        &format!("{} watchers get every event in order", b.watchers),
        format!(
            "{}/{}, last delivery {:.0} ms",
            w["complete"],
            w["watchers"],
            w["last_delivery_ms"].as_f64().unwrap_or(0.0)
        ),
        all,
    )?;
    row(
        md,
        &format!("RSS ≤ 60 MB with {} pods", b.objects),
        format!("{:.1} MiB", f.rss_loaded_mib),
        f.rss_loaded_mib * 1.048_576 <= 60.0,
    )?;
    Ok(())
}
