//! `cargo xtask bench controllers`: the scheduler and the controller manager against a real API
//! server (redb, as `cargo xtask run` uses) with 100 fake nodes (kpt-fakenodes: Nodes, Leases,
//! pods reported Running/Ready without containers). All figures are end to end from the
//! API write a user makes to the object the controllers produce, measured by kube-rs watchers
//! (kpt-ctrlload). Results: target/bench/controllers.{md,svg}.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};
use kproxy_tests::Daemon;
use kproxy_tests::apiserver::{ApiServer, TempDir};
use serde_json::Value;

use super::{
    chart::{Axis, Chart},
    procfs::status_kib,
};
use crate::util::step;

pub struct ControllersBench {
    pub schedule_pods: usize,
    pub replicas: i32,
    pub samples: usize,
    pub many_pods: usize,
}

/// `kpt-ctrlload PHASE ARGS --namespace NS`.
fn load(bin: &Path, kubeconfig: &Path, ns: &str, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["--namespace", ns]);
    super::load(bin, kubeconfig, &all)
}

/// A release binary started like the tests start the debug ones, quieter: only kproxy's own
/// info lines (the readiness line among them) reach the log.
fn spawn(bin: &Path, args: &[&str], ready: &str) -> Daemon {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_LOG", "warn,kproxy=info");
    Daemon::spawn_until_logged(cmd, ready)
}

fn namespace(server: &ApiServer, ns: &str) -> Result<()> {
    let r = server.http().post(
        "/api/v1/namespaces",
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    if r.code != 201 {
        bail!("creating namespace {ns}: {} {}", r.code, r.body);
    }
    Ok(())
}

pub fn run(b: &ControllersBench, target: &Path, out_dir: &Path) -> Result<()> {
    let started = Instant::now();
    let dir = TempDir::new("kproxy-bench-ctrl");
    let rel = target.join("release");
    let server = ApiServer::start_with(&rel.join("kproxy-apiserver"), dir.path(), &[]);
    let kc = server.kubeconfig.clone();
    let kcs = kc.to_string_lossy().into_owned();
    step("bench controllers: starting the controller manager, the scheduler, 100 fake nodes");
    let cm = spawn(
        &rel.join("kproxy-controller-manager"),
        &[
            "--kubeconfig",
            &kcs,
            "--lb-pool",
            "172.30.0.0/20",
            "--health-addr",
            "127.0.0.1:0",
        ],
        "controller manager ready",
    );
    let sched = spawn(
        &rel.join("kproxy-scheduler"),
        &["--kubeconfig", &kcs, "--health-addr", "127.0.0.1:0"],
        "scheduler ready",
    );
    let _nodes = spawn(
        &rel.join("kpt-fakenodes"),
        &[
            "--kubeconfig",
            &kcs,
            "--nodes",
            "100",
            "--pods",
            "250",
            "--cpu",
            "64",
            "--memory",
            "256Gi",
        ],
        "fake nodes ready",
    );
    let load_bin = rel.join("kpt-ctrlload");
    for ns in ["sched", "deploy", "ep", "lb", "many"] {
        namespace(&server, ns)?;
    }

    step(&format!(
        "bench controllers: {} pods created, timed until all are bound",
        b.schedule_pods
    ));
    let sched_fig = load(
        &load_bin,
        &kc,
        "sched",
        &["schedule", "--count", &b.schedule_pods.to_string()],
    )?;
    step(&format!(
        "bench controllers: a {}-replica Deployment, timed until all pods are Ready",
        b.replicas
    ));
    let deploy_fig = load(
        &load_bin,
        &kc,
        "deploy",
        &["deployment", "--replicas", &b.replicas.to_string()],
    )?;
    step(&format!(
        "bench controllers: {} pod readiness flips timed to the EndpointSlice",
        b.samples * 2
    ));
    let ep_fig = load(
        &load_bin,
        &kc,
        "ep",
        &["endpoints", "--samples", &b.samples.to_string()],
    )?;
    step(&format!(
        "bench controllers: {} LoadBalancer Services timed to their address",
        b.samples
    ));
    let lb_fig = load(
        &load_bin,
        &kc,
        "lb",
        &["lbip", "--samples", &b.samples.to_string()],
    )?;
    let total_pods = b.schedule_pods + usize::try_from(b.replicas).unwrap_or(0) + 10;
    let extra = b.many_pods.saturating_sub(total_pods);
    step(&format!(
        "bench controllers: {extra} more pods in 10 Deployments ({} in all), then memory",
        extra + total_pods
    ));
    let many_fig = load(
        &load_bin,
        &kc,
        "many",
        &["pods", "--count", &extra.to_string()],
    )?;
    // Let the controllers settle (status writes, expectations) before reading memory.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cm_rss = status_kib(cm.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let sched_rss = status_kib(sched.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let pods_total = extra + total_pods;

    let bound_per_s = sched_fig["bound_per_s"].as_f64().unwrap_or(0.0);
    let created_per_s = sched_fig["created_per_s"].as_f64().unwrap_or(0.0);
    let deploy_s = deploy_fig["pods_ready_s"].as_f64().unwrap_or(f64::NAN);
    let deploy_status_s = deploy_fig["status_available_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let ep_p99 = ep_fig["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let lb_p99 = lb_fig["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let mut md = String::new();
    writeln!(md, "# Scheduler and controller manager benchmark\n")?;
    writeln!(
        md,
        "API server (redb), kproxy-controller-manager, kproxy-scheduler and 100 fake nodes \
         (kpt-fakenodes) on this machine ({} CPUs), release builds; every figure is end to \
         end from the API write to what the controllers produce, seen by a kube-rs watcher. \
         Took {:.0} s.\n",
        crate::util::cpus(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(md, "| measure | figure |\n|---|---:|")?;
    writeln!(
        md,
        "| {} pods created (64 clients) → all bound | {:.2} s: {bound_per_s:.0} pods/s bound (creates alone: {created_per_s:.0}/s) |",
        b.schedule_pods,
        sched_fig["all_bound_s"].as_f64().unwrap_or(f64::NAN)
    )?;
    writeln!(
        md,
        "| {}-replica Deployment created → all pods Ready | {deploy_s:.2} s (Deployment status available: {deploy_status_s:.2} s) |",
        b.replicas
    )?;
    writeln!(
        md,
        "| pod readiness change → EndpointSlice (n={}) | p50 {:.1} ms, p99 {ep_p99:.1} ms, max {:.1} ms |",
        ep_fig["samples"],
        ep_fig["p50_ms"].as_f64().unwrap_or(f64::NAN),
        ep_fig["max_ms"].as_f64().unwrap_or(f64::NAN)
    )?;
    writeln!(
        md,
        "| LoadBalancer Service created → address in status (n={}) | p50 {:.1} ms, p99 {lb_p99:.1} ms, max {:.1} ms |",
        lb_fig["samples"],
        lb_fig["p50_ms"].as_f64().unwrap_or(f64::NAN),
        lb_fig["max_ms"].as_f64().unwrap_or(f64::NAN)
    )?;
    writeln!(
        md,
        "| RSS with {pods_total} pods ({} s to all Ready for the last {extra}) | controller manager {cm_rss:.1} MiB + scheduler {sched_rss:.1} MiB = {:.1} MiB |\n",
        many_fig["all_ready_s"]
            .as_f64()
            .map_or("?".into(), |v| format!("{v:.1}")),
        cm_rss + sched_rss
    )?;
    writeln!(md, "| target | measured | met |\n|---|---:|---|")?;
    let row = |md: &mut String, name: &str, v: String, ok: bool| {
        writeln!(md, "| {name} | {v} | {} |", if ok { "yes" } else { "no" })
    };
    row(
        &mut md,
        "≥ 1,000 pods/s scheduled and bound onto 100 nodes",
        format!("{bound_per_s:.0}/s"),
        bound_per_s >= 1000.0,
    )?;
    row(
        &mut md,
        "1,000-replica Deployment all Running/Ready ≤ 3 s",
        format!("{deploy_s:.2} s"),
        deploy_s <= 3.0,
    )?;
    row(
        &mut md,
        "EndpointSlice after readiness change p99 ≤ 50 ms",
        format!("{ep_p99:.1} ms"),
        ep_p99 <= 50.0,
    )?;
    row(
        &mut md,
        "LoadBalancer IP written p99 ≤ 50 ms",
        format!("{lb_p99:.1} ms"),
        lb_p99 <= 50.0,
    )?;
    row(
        &mut md,
        "scheduler + controller manager ≤ 40 MB RSS with 10,000 pods",
        format!(
            "{:.1} MB with {pods_total} pods",
            (cm_rss + sched_rss) * 1.048_576
        ),
        (cm_rss + sched_rss) * 1.048_576 <= 40.0 && pods_total >= 10_000,
    )?;
    std::fs::write(out_dir.join("controllers.md"), &md)?;
    std::fs::write(
        out_dir.join("controllers.svg"),
        svg(&[
            ("pods bound/s ÷ 1,000", bound_per_s / 1000.0),
            ("deployment ready s ÷ 3", deploy_s / 3.0),
            ("endpoints p99 ÷ 50 ms", ep_p99 / 50.0),
            ("LB IP p99 ÷ 50 ms", lb_p99 / 50.0),
            ("RSS ÷ 40 MB", (cm_rss + sched_rss) * 1.048_576 / 40.0),
        ]),
    )?;
    println!("\n{md}");
    println!(
        "bench: wrote {} and controllers.svg",
        out_dir.join("controllers.md").display()
    );
    Ok(())
}

/// Each figure as a fraction of its target (1.0 = the target line; pods/s must be above it,
/// the others below).
fn svg(bars: &[(&str, f64)]) -> String {
    Chart::bars(
        "Controllers: figure ÷ target (dashed line = target)",
        bars.iter().map(|b| b.0),
    )
    .y_label("figure ÷ target")
    .bar_series(
        "figure ÷ target",
        "#2b6cb0",
        // A figure that could not be taken shows as 0, as a miss.
        bars.iter()
            .map(|b| Some(if b.1.is_finite() { b.1 } else { 0.0 }))
            .collect(),
    )
    .rule(Axis::Y, 1.0, "target", "red")
    .render()
}
