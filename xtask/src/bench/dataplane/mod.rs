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
//!
//! Modules: `topology` builds the lab, `process` runs its programs, `services` and `rules`
//! write what each mode loads (kproxy manifests, iptables/nftables rule sets), `measure`
//! takes one figure, `phases` runs the modes, `disruption` counts the flows a backend
//! change moves (Maglev vs random, a lab of its own), `host_routing` compares
//! `--host-routing legacy` and `bpf`, `results` holds the figures and `report` turns
//! them into the markdown table and the chart.

mod disruption;
mod host_routing;
mod measure;
mod phases;
mod process;
mod report;
mod results;
mod rules;
mod services;
mod topology;

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use kproxy_tests::lab::{BACKEND_PORT, backend_ip};

pub use self::topology::Bins;
use self::{
    phases::{ebpf_phase, foreign_connect_hooks, rules_phase},
    report::Report,
    results::Results,
    rules::RuleKind,
    topology::{Side, Topo},
};
use super::BenchArgs;

const BACKENDS: usize = 4;
/// The LoadBalancer IP of the measured service (the XDP / tc path).
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const SVC_PORT: u16 = 80;

/// One dataplane run: the lab, the options and the figures so far.
struct Bench<'a> {
    topo: Topo,
    args: &'a BenchArgs,
    n_min: usize,
    n_max: usize,
    res: Results,
}

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

pub fn run(args: &BenchArgs, services: &[usize], bins: &Bins, out_dir: &Path) -> Result<()> {
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
    host_routing::phase(&mut b)?;
    for algorithm in ["maglev", "random"] {
        check_interrupted()?;
        let runs = disruption::measure(bins, algorithm)?;
        b.res.disruption.insert(algorithm, runs);
    }
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
    let report = Report {
        res: &b.res,
        services,
        lo: b.n_min,
        hi: b.n_max,
        runs: args.runs,
        duration_ms: args.duration_ms,
        concurrency: args.concurrency,
    };
    let md = report.markdown(elapsed);
    let svg = report.svg();
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
