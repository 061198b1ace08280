//! `cargo xtask run`: set up, build, and run the one-node cluster in the foreground: the API
//! server, the controller manager, the scheduler, the kubelet (this host is master and worker
//! at once) and `kproxy node` on a lab uplink, one process each, supervised (a component that
//! dies is restarted); Ctrl-C stops them in order. State stays in /var/lib/kproxy so the next
//! run resumes the same cluster; `--reset` starts from scratch.
//!
//! Modules: `preflight` refuses what cannot work (not root, no cgroup v2 or eBPF, a second
//! run, a port taken), `supervisor` runs and restarts the component processes, `lifecycle`
//! brings the cluster up and down (lab uplink, kubeconfigs, health, `--reset`), `nodes` adds
//! simulated worker hosts (`--nodes N`).

mod etcd;
mod lifecycle;
mod nodes;
mod preflight;
mod supervisor;

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

pub use self::lifecycle::node_name;
use self::{
    lifecycle::{
        create_lab_uplink, link_kctl, print_components, print_next_steps, reset, start_all,
        stop_all,
    },
    preflight::{RunLock, check_ports, preflight},
    supervisor::{Component, supervise, wait_ready},
};
use crate::{
    setup::{SetupArgs, setup},
    util::{
        cargo, install_stop_handlers, output_of, run_cmd, step, stop_requested, workspace_root,
    },
};

/// The lab "client host": a network namespace reached through a veth that plays the node's
/// uplink, so nothing is ever attached to this machine's real network interface.
pub const LAB_NETNS: &str = "kproxy-client";
const LAB_UPLINK: &str = "kp-uplink";
const LAB_PEER: &str = "kp-client0";
const LAB_NODE_ADDR: &str = "172.31.0.1/24";
const LAB_CLIENT_ADDR: &str = "172.31.0.2/24";
const LAB_NODE_IP: &str = "172.31.0.1";
/// The controller manager's default LoadBalancer pool.
pub const LB_POOL: &str = "172.30.0.0/24";
/// The API server's default service CIDR.
const SERVICE_CIDR: &str = "10.96.0.0/12";

const LOG_DIR: &str = "/var/log/kproxy";
const STATE_DIR: &str = "/var/lib/kproxy";
const APISERVER_DATA: &str = "/var/lib/kproxy/apiserver";
/// The admin kubeconfig the scheduler and the controller manager use (not the user's, whose
/// current context may change).
pub const CONTROL_KUBECONFIG: &str = "/var/lib/kproxy/controller-manager/kubeconfig";
const KUBELET_DATA: &str = "/var/lib/kproxy/kubelet";
/// Held (flock) while a `cargo xtask run` runs; holds its pid.
const LOCK_FILE: &str = "/run/kproxy-run.lock";
/// kproxy's metrics and /healthz.
const KPROXY_METRICS: &str = "127.0.0.1:9962";
/// The controller manager's and the scheduler's /healthz and /readyz (Kubernetes' ports).
const CM_HEALTH: &str = "127.0.0.1:10257";
const SCHEDULER_HEALTH: &str = "127.0.0.1:10259";
/// The packages of the five components and kctl: all `run` builds (release, fat LTO: each
/// binary takes a while to link, so nothing else).
pub const COMPONENT_PACKAGES: [&str; 6] = [
    "kproxy",
    "kproxy-apiserver",
    "kproxy-controller-manager",
    "kproxy-scheduler",
    "kproxy-kubelet",
    "kctl",
];
/// Where the CLI goes on PATH.
const KCTL_LINK: &str = "/usr/local/bin/kctl";
/// The line `run` prints once the cluster serves; `cargo xtask bench cluster` waits for it.
pub const READY_LINE: &str = "run: cluster ready";

#[derive(Args)]
pub struct RunArgs {
    /// Attach to this existing interface instead of creating the lab uplink.
    #[arg(long)]
    uplink: Option<String>,
    /// XDP mode for the uplink: auto, driver or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: String,
    /// Start from scratch: delete the previous cluster's objects and state
    /// (/var/lib/kproxy), its pods' containers and kproxy's pinned maps.
    #[arg(long)]
    reset: bool,
    /// Where the API server keeps the cluster's objects: its redb file, or a local etcd
    /// (Debian's etcd-server, supervised with the components, data in /var/lib/kproxy/etcd).
    #[arg(long, value_enum, default_value = "redb")]
    store: RunStore,
    /// Nodes in the cluster: this host (master and worker) plus N-1 simulated worker hosts,
    /// each a network namespace on the lab LAN with its own kubelet and kproxy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=nodes::MAX_NODES as i64))]
    nodes: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RunStore {
    Redb,
    Etcd,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let t0 = Instant::now();
    preflight()?;
    let _lock = RunLock::acquire(LOCK_FILE)?;
    // From here Ctrl-C / SIGTERM only set a flag: `run` stops what it started, in order.
    install_stop_handlers();
    check_ports()?;
    let mut etcd = match args.store {
        RunStore::Etcd => Some(etcd::component()?),
        RunStore::Redb => None,
    };
    setup(&SetupArgs::default())?;
    step(
        "run: building the five components and kctl (release, link-time optimised: the first build takes several minutes; includes the eBPF programs)",
    );
    run_cmd(
        cargo()
            .args(["build", "--release", "--bins"])
            .args(COMPONENT_PACKAGES.iter().flat_map(|p| ["-p", p])),
    )?;
    if stop_requested() {
        bail!("interrupted");
    }
    let bin_dir: PathBuf = workspace_root().join("target/release");
    let kproxy = bin_dir.join("kproxy");
    let apiserver_bin = bin_dir.join("kproxy-apiserver");
    let node = node_name()?;
    if args.nodes > 1 && args.uplink.is_some() {
        bail!("--nodes needs the lab uplink: the workers join its LAN (drop --uplink)");
    }
    let workers = nodes::workers(&node, usize::from(args.nodes));
    if args.reset {
        reset(&kproxy, &node)?;
        nodes::remove_containers(&node)?;
    }
    link_kctl(&bin_dir.join("kctl"))?;

    let uplink = if let Some(iface) = &args.uplink {
        if output_of(Command::new("ip").args(["link", "show", iface])).is_none() {
            bail!("interface {iface} does not exist");
        }
        iface.clone()
    } else if workers.is_empty() {
        // Worker namespaces and the LAN of an earlier `--nodes` run go too.
        nodes::remove_lan();
        create_lab_uplink()?;
        LAB_UPLINK.to_string()
    } else {
        nodes::create_lan(&workers)?;
        LAB_UPLINK.to_string()
    };
    let node_kubeconfig = format!("{KUBELET_DATA}/kubeconfig");
    let mut api_args = vec![
        "serve",
        "--data-dir",
        APISERVER_DATA,
        "--bind",
        "127.0.0.1:6443",
    ];
    if etcd.is_some() {
        api_args.extend(["--store", "etcd", "--etcd-servers", etcd::CLIENT_URL]);
    }
    // The workers reach the API server on the LAN; its certificate names that address too.
    if !workers.is_empty() {
        api_args.extend(["--bind", nodes::LAN_API_BIND]);
    }
    let mut kubelet_args = vec![
        "--kubeconfig",
        &node_kubeconfig,
        "--data-dir",
        KUBELET_DATA,
        "--node-name",
        &node,
    ];
    // Other nodes route this node's pods via its LAN address and keep pod sources.
    if !workers.is_empty() {
        kubelet_args.extend([
            "--node-ip",
            LAB_NODE_IP,
            "--cluster-cidr",
            nodes::CLUSTER_CIDR,
        ]);
    }
    let mut comps = [
        Component::new(
            "the API server",
            apiserver_bin.clone(),
            &api_args,
            "apiserver.log",
            "API server ready",
        ),
        Component::new(
            "the controller manager",
            bin_dir.join("kproxy-controller-manager"),
            &["--kubeconfig", CONTROL_KUBECONFIG],
            "controller-manager.log",
            "controller manager ready",
        ),
        Component::new(
            "the scheduler",
            bin_dir.join("kproxy-scheduler"),
            &["--kubeconfig", CONTROL_KUBECONFIG],
            "scheduler.log",
            "scheduler ready",
        ),
        Component::new(
            "the kubelet",
            bin_dir.join("kproxy-kubelet"),
            &kubelet_args,
            "kubelet.log",
            "kubelet ready",
        ),
        Component::new(
            "kproxy",
            kproxy.clone(),
            &[
                "node",
                "--kubeconfig",
                &node_kubeconfig,
                "--node-name",
                &node,
                "--uplink",
                &uplink,
                "--xdp-mode",
                &args.xdp_mode,
                // Pod veths get the per-packet programs as the kubelet creates them;
                // socket-LB stays in the host's namespace, so the lab client namespace
                // (another host) takes the uplink path.
                "--pod-bridge",
                "kbr0",
                "--socket-lb-scope",
                "host",
                "--metrics-addr",
                KPROXY_METRICS,
            ],
            "kproxy.log",
            "initial sync done",
        ),
    ];
    // The controller manager and the scheduler use mimalloc, which commits its first arena
    // at once: 11-13 MB each of untouched memory at idle (measured: 13.1 → 1.7 MB anonymous
    // for the scheduler). Committing on demand changes nothing else; the variable must be
    // set before the process's first allocation, so it goes in the environment.
    for c in comps
        .iter_mut()
        .filter(|c| matches!(c.name.as_str(), "the controller manager" | "the scheduler"))
    {
        c.env.push(("MIMALLOC_ARENA_EAGER_COMMIT", "0"));
    }
    let mut worker_comps = nodes::components(&bin_dir, &workers, &args.xdp_mode, &node)?;
    let started = start_etcd(etcd.as_mut())
        .and_then(|()| start_all(&mut comps, &apiserver_bin, &node, &node_kubeconfig, &uplink))
        .and_then(|()| {
            if workers.is_empty() {
                return Ok(());
            }
            nodes::start(&mut worker_comps, &apiserver_bin, &kproxy, &workers, &node)
        });
    // etcd first: it is stopped last; the workers last: they are stopped first.
    let mut comps: Vec<Component> = etcd.into_iter().chain(comps).chain(worker_comps).collect();
    if let Err(e) = started {
        stop_all(&mut comps, &kproxy, args.uplink.is_none());
        nodes::remove(&workers, &kproxy, &node);
        return Err(e);
    }
    if workers.is_empty() {
        println!(
            "{READY_LINE} in {:.2} s: node {node} is Ready, all components healthy",
            t0.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "{READY_LINE} in {:.2} s: all {} nodes are Ready, all components healthy",
            t0.elapsed().as_secs_f64(),
            workers.len() + 1
        );
    }
    print_components(&comps);
    print_next_steps(&node, args.uplink.is_none());
    nodes::print_next_steps(&workers);

    supervise(&mut comps);
    stop_all(&mut comps, &kproxy, args.uplink.is_none());
    nodes::remove(&workers, &kproxy, &node);
    Ok(())
}

/// Starts etcd (with `--store etcd`) and waits until it serves clients.
fn start_etcd(comp: Option<&mut Component>) -> Result<()> {
    let Some(comp) = comp else {
        return Ok(());
    };
    step(&format!(
        "run: starting etcd on {} (data /var/lib/kproxy/etcd, log {})",
        etcd::CLIENT_URL,
        comp.log
    ));
    comp.spawn()?;
    wait_ready(&mut [comp])
}
