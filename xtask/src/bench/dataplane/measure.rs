//! One figure at a time against the lab: new connections per second, request latency, bulk
//! throughput, and how long a change takes to reach the datapath; each is `kpt-net` run
//! from the client namespace or from a host process in the socket-LB cgroup.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddrV4,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use kproxy_tests::mono_ns;
use serde_json::Value;

use super::{
    Bench, check_interrupted, progress,
    results::{Conns, Rr},
    topology::Side,
};
use crate::util::median;

/// Runs `kpt-net` and returns its last JSON line.
fn kpt_json(mut cmd: Command) -> Result<Value> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .next_back();
    match json {
        Some(v) if out.status.success() => Ok(v),
        other => bail!(
            "{cmd:?} failed ({}): {} {}",
            out.status,
            other.map(|v| v.to_string()).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

impl Bench<'_> {
    pub fn conns(
        &mut self,
        key: &'static str,
        n: usize,
        from: Side,
        target: SocketAddrV4,
    ) -> Result<()> {
        progress(&format!(
            "{key} {n} services: new connections/s to {target} ({} × {} ms)...",
            self.args.runs, self.args.duration_ms
        ));
        let mut rates = Vec::new();
        let mut errors = 0;
        for _ in 0..self.args.runs.max(1) {
            check_interrupted()?;
            self.topo.servers_alive()?;
            self.topo.flush_conntrack()?;
            let bind = self.topo.fresh_ip(from)?.to_string();
            let v = kpt_json(self.topo.kpt(
                from,
                &[
                    "conns",
                    &target.to_string(),
                    "--duration-ms",
                    &self.args.duration_ms.to_string(),
                    "--concurrency",
                    &self.args.concurrency.to_string(),
                    "--bind",
                    &bind,
                ],
            ))
            .with_context(|| format!("{key} {n}: conns to {target}"))?;
            rates.push(v["conns_per_s"].as_f64().unwrap_or(0.0));
            let e = v["errors"].as_u64().unwrap_or(0);
            if e > 0 {
                self.res.notes.push(format!(
                    "{key} @{n}: {e} errors, first: {}",
                    v["first_error"]
                ));
            }
            errors += e;
        }
        let per_s = median(&mut rates);
        let spread = match (rates.first(), rates.last()) {
            (Some(lo), Some(hi)) if per_s > 0.0 => (hi - lo) / 2.0 / per_s,
            _ => 0.0,
        };
        let c = Conns {
            per_s,
            errors,
            spread,
        };
        progress(&format!("  -> {:.0} conns/s ({errors} errors)", c.per_s));
        self.res.conns.insert((key, n), c);
        Ok(())
    }

    pub fn rr(
        &mut self,
        key: &'static str,
        n: usize,
        from: Side,
        target: SocketAddrV4,
    ) -> Result<()> {
        check_interrupted()?;
        self.topo.flush_conntrack()?;
        progress(&format!(
            "{key} {n} services: request latency to {target}..."
        ));
        let ms = (self.args.duration_ms * 3 / 4).max(200).to_string();
        let v = kpt_json(
            self.topo
                .kpt(from, &["rr", &target.to_string(), "--duration-ms", &ms]),
        )
        .with_context(|| format!("{key} {n}: rr to {target}"))?;
        let r = Rr {
            p50: v["p50_us"].as_f64().unwrap_or(0.0),
            p99: v["p99_us"].as_f64().unwrap_or(0.0),
        };
        progress(&format!("  -> p50 {:.1} µs, p99 {:.1} µs", r.p50, r.p99));
        self.res.rr.insert((key, n), r);
        Ok(())
    }

    pub fn bulk(
        &mut self,
        key: &'static str,
        n: usize,
        from: Side,
        target: SocketAddrV4,
    ) -> Result<()> {
        check_interrupted()?;
        progress(&format!(
            "{key} {n} services: bulk throughput from {target}..."
        ));
        let ms = self.args.duration_ms.to_string();
        let v = kpt_json(
            self.topo
                .kpt(from, &["bulk", &target.to_string(), "--duration-ms", &ms]),
        )
        .with_context(|| format!("{key}: bulk from {target}"))?;
        let mbit = v["mbit_per_s"].as_f64().unwrap_or(0.0);
        progress(&format!("  -> {mbit:.0} Mbit/s"));
        self.res.bulk.insert(key, mbit);
        Ok(())
    }

    /// Starts ``kpt-net wait-for`, runs `change`, and returns (effective, change's own
    /// duration as `change` reports it).
    pub fn timed_change(
        &mut self,
        target: SocketAddrV4,
        backend: usize,
        change: impl FnOnce(&mut Self, u64) -> Result<Duration>,
    ) -> Result<(Duration, Duration)> {
        check_interrupted()?;
        let bind = self.topo.fresh_ip(Side::Client)?.to_string();
        let name = format!("b{backend}");
        let mut cmd = self.topo.kpt(
            Side::Client,
            &[
                "wait-for",
                &target.to_string(),
                "--name",
                &name,
                "--timeout-ms",
                "20000",
                "--bind",
                &bind,
            ],
        );
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start kpt-net wait-for")?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        out.read_line(&mut first)?;
        if !first.contains("started") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kpt-net wait-for did not start: {first:?}");
        }
        let t0 = mono_ns();
        let tool = change(self, t0);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let status = child.wait()?;
        let tool = tool?;
        let v: Value = rest
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .next_back()
            .unwrap_or(Value::Null);
        if !status.success() || v["ok"] != true {
            bail!("the change never took effect (waited for {name} at {target}): {v}");
        }
        let at = v["mono_ns"].as_u64().unwrap_or(t0);
        Ok((Duration::from_nanos(at.saturating_sub(t0)), tool))
    }
}
