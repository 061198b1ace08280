//! `cargo xtask bench [dataplane|api|kubelet|controllers|proxy|cluster]`: release builds,
//! measured; each bench writes `target/bench/<name>.md` (the tables) and `<name>.svg` (one
//! chart, drawn by [`chart`]).
//!
//! This module holds the command line and runs the chosen benches; each bench is a module
//! (`dataplane` the service datapaths side by side, `api` the API server, `controllers` the
//! scheduler and controller manager, `kubelet` pod starts, `proxy` `kproxy node` end to end,
//! `cluster` `cargo xtask run` as a user meets it). Shared here: the release build, the
//! JSON-printing load generators and log-line fields; in `procfs`, memory from /proc.

mod api;
mod chart;
mod cluster;
mod controllers;
mod dataplane;
mod etcd;
mod kubelet;
mod netns;
mod nodes;
mod procfs;
mod proxy;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::{
    setup::{SetupArgs, setup},
    util::{cargo, is_root, run_cmd, step, workspace_root},
};

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
    /// api: `etcd` also measures the API server on a local etcd, side by side with redb.
    #[arg(long = "store", value_enum, default_value = "redb")]
    api_store: ApiStore,
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
    /// cluster: nodes of the cluster (`cargo xtask run --nodes`); more than one adds the
    /// cross-node, failover and per-node memory figures.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ApiStore {
    Redb,
    Etcd,
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
    let bins = dataplane::Bins {
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
        Some(Which::Dataplane) => dataplane::run(args, &services, &bins, &out_dir),
        None => {
            dataplane::run(args, &services, &bins, &out_dir)?;
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
    api::run(
        &api::ApiBench {
            objects: args.api_objects,
            concurrency: args.api_concurrency,
            get_seconds: args.api_get_seconds,
            watchers: args.api_watchers,
            watch_events: args.api_watch_events,
            etcd: args.api_store == ApiStore::Etcd,
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
    controllers::run(
        &controllers::ControllersBench {
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
    proxy::run(
        &proxy::ProxyBench {
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
    cluster::run(
        &cluster::ClusterBench {
            starts: args.cluster_starts,
            samples: args.cluster_samples,
            bench_seconds: args.cluster_bench_seconds,
            nodes: args.nodes,
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
    kubelet::run(
        &kubelet::KubeletBench {
            sequential: args.kubelet_runs,
            bulk: args.kubelet_pods,
        },
        &target,
        &out_dir,
    )
}

/// Runs a load generator (`kpt-apiload`, `kpt-ctrlload`) against `kubeconfig`; returns the
/// JSON line it prints.
fn load(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("{} output {line:?}", bin.display()))
}

/// The value of `key=` in a tracing log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_log_line() {
        let l = "2026-01-01T00:00:00.1Z  INFO kproxy::node: initial sync done services=10001 map_ops=60002 took=412.3ms";
        assert_eq!(log_field(l, "services"), Some("10001"));
        assert_eq!(log_field(l, "took"), Some("412.3ms"));
        assert_eq!(log_field(l, "apply"), None);
        assert_eq!(log_field("a xtook=1 took=2", "took"), Some("2"));
    }
}
