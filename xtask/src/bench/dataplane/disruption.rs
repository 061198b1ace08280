//! The disruption figure (issue 15, Maglev): how many of 10,000 UDP flows to an LB IP move
//! to another backend when 1 of 10 backends is removed, and when one is added to the nine,
//! with `kproxy.io/lb-algorithm: maglev` and `random`. The method of `tests/tests/maglev.rs`:
//! a lab of its own (client, node, 11 backends), one datagram per source port, kproxy's CT
//! flushed (`kproxy ct-flush`) before each round so every flow is balanced afresh. One seed's
//! figure carries the sampling noise of 10,000 flows (±0.3 points) and the seed's own luck,
//! so it is taken under five fixed `--lb-hash-seed`s and reported as mean and range.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Result, bail};
use kproxy_tests::{
    BpffsDir,
    lab::{Ep, Svc, Topology, flows_moved, udp_flow_backends},
};

use super::{
    process::{Proc, TmpDir, run_quiet},
    progress,
    topology::Bins,
};

const FLOWS: usize = 10_000;
const FROM_PORT: u16 = 20_000;
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 20);
const SEEDS: [&str; 5] = ["bench-1", "bench-2", "bench-3", "bench-4", "bench-5"];

/// Flows moved (of [`FLOWS`]) by one backend change.
#[derive(Clone, Copy)]
pub struct Disruption {
    /// b3 of b0..b9 removed.
    pub removed: usize,
    /// b10 added to the nine.
    pub added: usize,
}

fn manifest(backends: &[usize], algorithm: &str) -> String {
    let svc = Svc {
        lb_ip: Some(LB_IP),
        annotations: vec![("kproxy.io/lb-algorithm".into(), algorithm.into())],
        ..Svc::cluster_ip(
            "mag",
            Ipv4Addr::new(10, 96, 0, 20),
            backends.iter().copied().map(Ep::ready).collect(),
        )
    };
    let mut y = String::new();
    svc.yaml(&mut y);
    y
}

/// The figure under each of the fixed seeds.
pub fn measure(bins: &Bins, algorithm: &str) -> Result<Vec<Disruption>> {
    progress(&format!(
        "disruption ({algorithm}): labs with 11 backends, {FLOWS} UDP flows per round, {} seeds...",
        SEEDS.len()
    ));
    SEEDS
        .iter()
        .map(|seed| {
            super::check_interrupted()?;
            measure_seed(bins, algorithm, seed)
        })
        .collect()
}

/// Ten backends, b3 removed, b10 added, under `algorithm` and `seed`.
fn measure_seed(bins: &Bins, algorithm: &str, seed: &str) -> Result<Disruption> {
    let Topology {
        client,
        node,
        backends,
    } = Topology::build("kpd", 11);
    let mut servers = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let mut cmd = b.cmd(&bins.kpt_net);
        cmd.args(["serve", "--name", &format!("b{i}"), "--port", "8080"]);
        servers.push(Proc::spawn(cmd)?);
    }
    for s in &mut servers {
        s.wait_line("serving", 0, Duration::from_secs(10))?;
    }
    let tmp = TmpDir::new()?;
    let file = tmp.path.join("mag.yaml");
    let write = |backends: &[usize]| -> Result<()> {
        let part = file.with_extension("tmp");
        std::fs::write(&part, manifest(backends, algorithm))?;
        std::fs::rename(&part, &file)?;
        Ok(())
    };
    let ten: Vec<usize> = (0..10).collect();
    write(&ten)?;
    let bpffs = BpffsDir::new("kpd");
    let mut cmd = node.cmd(&bins.kproxy);
    cmd.env("RUST_LOG", "info")
        .arg("--bpffs")
        .arg(bpffs.path())
        .arg("standalone")
        .arg("--manifests")
        .arg(&file)
        .args(["--uplink", "up0", "--xdp-mode", "auto", "--lb-mode", "xdp"])
        // The client's sockets must take the per-packet path, whatever cgroup it sits in.
        .arg("--no-socket-lb")
        .args(["--lb-hash-seed", seed]);
    let mut k = Proc::spawn(cmd)?;
    k.wait_line("kproxy ready", 0, Duration::from_secs(30))?;
    let round = || -> Result<Vec<String>> {
        run_quiet(
            std::process::Command::new(&bins.kproxy)
                .arg("--bpffs")
                .arg(bpffs.path())
                .arg("ct-flush"),
        )?;
        Ok(udp_flow_backends(
            client.cmd(&bins.kpt_net),
            &format!("{LB_IP}:53"),
            FROM_PORT,
            FLOWS,
        ))
    };
    let change = |k: &mut Proc, backends: &[usize]| -> Result<()> {
        let before = k.matching("services synced").len();
        write(backends)?;
        k.wait_line("services synced", before, Duration::from_secs(30))?;
        Ok(())
    };
    let r10 = round()?;
    let nine: Vec<usize> = ten.iter().copied().filter(|b| *b != 3).collect();
    change(&mut k, &nine)?;
    let r9 = round()?;
    if r9.iter().any(|n| n == "b3") {
        bail!("{algorithm}: the removed backend b3 still answers");
    }
    let mut with_new = nine;
    with_new.push(10);
    change(&mut k, &with_new)?;
    let r10b = round()?;
    let d = Disruption {
        removed: flows_moved(&r10, &r9),
        added: flows_moved(&r9, &r10b),
    };
    progress(&format!(
        "  -> removing 1 of 10 moved {} flows, adding 1 to 9 moved {}",
        d.removed, d.added
    ));
    // Dropped in order: kproxy, the servers, then the namespaces and files.
    drop(k);
    drop(servers);
    Ok(d)
}

/// `mean % (min–max)` of `moved` over the seeds.
fn mean_range(moved: &[usize]) -> String {
    let pct = |n: usize| 100.0 * n as f64 / FLOWS as f64;
    let mean = moved.iter().map(|n| pct(*n)).sum::<f64>() / moved.len().max(1) as f64;
    let lo = moved.iter().copied().min().unwrap_or(0);
    let hi = moved.iter().copied().max().unwrap_or(0);
    format!("{mean:.1} % ({:.1}–{:.1})", pct(lo), pct(hi))
}

/// The markdown section (nothing when the figure was not taken).
pub fn table(res: &BTreeMap<&'static str, Vec<Disruption>>, s: &mut String) {
    if res.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Flows moved by a backend change ({FLOWS} UDP flows to an LB IP, CT flushed; \
         mean and range over {} hash seeds)\n\n\
         | algorithm | 1 of 10 removed | 1 added to 9 |\n| --- | ---: | ---: |",
        SEEDS.len()
    );
    for (algorithm, runs) in res {
        let removed: Vec<usize> = runs.iter().map(|d| d.removed).collect();
        let added: Vec<usize> = runs.iter().map(|d| d.added).collect();
        let _ = writeln!(
            s,
            "| {algorithm} | {} | {} |",
            mean_range(&removed),
            mean_range(&added)
        );
    }
    let _ = writeln!(
        s,
        "\nTarget (issue 15): Maglev ≤ 11 % when 1 of 10 is removed; the removed backend's own \
         share is 10 %."
    );
}
