//! `cargo xtask bench api`: the API server under load from kube-rs clients (kpt-apiload), with
//! the embedded redb store (durable before each answer) and, side by side, the in-memory
//! store as the reference for what durability costs. Results: target/bench/api.{md,svg}.

use std::{fmt::Write as _, path::Path, time::Instant};

use anyhow::Result;
use kproxy_tests::apiserver::{ApiServer, TempDir};
use serde_json::Value;

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
}

struct Figures {
    store: &'static str,
    creates_per_s: f64,
    gets_per_s: f64,
    rss_idle_mib: f64,
    rss_loaded_mib: f64,
    hwm_mib: f64,
    watch: Value,
}

fn one(b: &ApiBench, target: &Path, store: &'static str, with_watch: bool) -> Result<Figures> {
    let dir = TempDir::new("kproxy-bench-api");
    // ApiServer finds the binary next to the test harness; point it at the release build.
    let server = ApiServer::start_with(
        &target.join("release/kproxy-apiserver"),
        dir.path(),
        &["--store", store],
    );
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
    step(&format!(
        "bench api [{store}]: gets for {} s",
        b.get_seconds
    ));
    let gets = load(
        &load_bin,
        &kc,
        &[
            "gets",
            "--seconds",
            &b.get_seconds.to_string(),
            "--concurrency",
            &c,
            "--count",
            &n,
        ],
    )?;
    let watch = if with_watch {
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
    Ok(Figures {
        store,
        creates_per_s: creates["creates_per_s"].as_f64().unwrap_or(0.0),
        gets_per_s: gets["gets_per_s"].as_f64().unwrap_or(0.0),
        rss_idle_mib: rss_idle as f64 / 1024.0,
        rss_loaded_mib: rss_loaded as f64 / 1024.0,
        hwm_mib: hwm as f64 / 1024.0,
        watch,
    })
}

pub fn run(b: &ApiBench, target: &Path, out_dir: &Path) -> Result<()> {
    let started = Instant::now();
    let redb = one(b, target, "redb", true)?;
    let mem = one(b, target, "memory", false)?;
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
        "| store | creates/s | gets/s | RSS idle | RSS with {} pods | peak RSS |",
        b.objects
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for f in [&redb, &mem] {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            f.store, f.creates_per_s, f.gets_per_s, f.rss_idle_mib, f.rss_loaded_mib, f.hwm_mib
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
    std::fs::write(out_dir.join("api.md"), &md)?;
    std::fs::write(out_dir.join("api.svg"), svg(&redb, &mem))?;
    println!("\n{md}");
    println!(
        "bench: wrote {} and api.svg",
        out_dir.join("api.md").display()
    );
    Ok(())
}

/// Grouped bars: creates/s and gets/s per store, the targets dashed.
fn svg(redb: &Figures, mem: &Figures) -> String {
    Chart::bars(
        "API server: requests per second (kube-rs clients)",
        ["creates/s", "gets/s"],
    )
    .size(620.0, 340.0)
    .y_label("requests/s")
    .bar_series(
        "redb",
        "#2b6cb0",
        vec![Some(redb.creates_per_s), Some(redb.gets_per_s)],
    )
    .bar_series(
        "memory",
        "#a0aec0",
        vec![Some(mem.creates_per_s), Some(mem.gets_per_s)],
    )
    .rule(Axis::Y, 5000.0, "creates/s target", "red")
    .rule(Axis::Y, 20000.0, "gets/s target", "#e8590c")
    .render()
}
