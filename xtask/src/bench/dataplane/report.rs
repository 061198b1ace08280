//! The markdown tables (`dataplane.md`) and the chart (`dataplane.svg`) of a run: one
//! function per section, in the order they appear.

use std::{fmt::Write as _, time::Duration};

use kproxy_common::MAX_SERVICES;

use super::results::{Memory, ProgramTime, Results, Rr};
use crate::bench::chart::{Axis, Chart};

/// What the report reads: the figures and the run's shape.
pub struct Report<'a> {
    pub res: &'a Results,
    /// The service counts, ascending.
    pub services: &'a [usize],
    /// The smallest and the largest service count.
    pub lo: usize,
    pub hi: usize,
    pub runs: usize,
    pub duration_ms: u64,
    pub concurrency: usize,
}

/// Connection-rate rows at every N, in table order (the direct baselines come first).
const RATE_ROWS: [&str; 9] = [
    "direct+ebpf",
    "direct+iptables-nft",
    "direct+nftables",
    "direct+iptables-legacy",
    "ebpf-socket",
    "ebpf-xdp",
    "iptables-nft",
    "nftables",
    "iptables-legacy",
];

/// Latency and bulk rows with the baseline each is compared with.
const VS_BASELINE: [(&str, &str); 7] = [
    ("direct", "direct"),
    ("direct-host", "direct-host"),
    ("ebpf-socket", "direct-host"),
    ("ebpf-xdp", "direct"),
    ("iptables-nft", "direct"),
    ("nftables", "direct"),
    ("iptables-legacy", "direct"),
];

impl Report<'_> {
    pub fn markdown(&self, elapsed: Duration) -> String {
        let mut s = String::new();
        self.intro(&mut s, elapsed);
        self.conns_table(&mut s);
        self.ratios(&mut s);
        self.hooks_table(&mut s);
        self.latency_table(&mut s);
        super::host_routing::table(self.res, self.lo, &mut s);
        self.bulk_table(&mut s);
        self.programming_table(&mut s);
        self.changes_table(&mut s);
        super::disruption::table(&self.res.disruption, &mut s);
        self.memory(&mut s);
        self.notes(&mut s);
        let _ = writeln!(
            s,
            "Chart: `dataplane.svg` (new connections/s per mode and N)."
        );
        s
    }

    fn intro(&self, s: &mut String, elapsed: Duration) {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpus = crate::util::cpus();
        let _ = writeln!(s, "# kproxy dataplane benchmark\n");
        let _ = writeln!(
            s,
            "`cargo xtask bench dataplane` — kernel {}, {cpus} CPUs, {:.0?} total. One run, one \
             topology (client netns ─veth─ node netns ─bridge─ 4 backend netns running \
             `kpt-net serve`); every mode measured back to back, so compare ratios within this \
             file rather than absolute numbers across machines (this machine is shared and noisy).\n",
            kernel.trim(),
            elapsed
        );
        let _ = writeln!(
            s,
            "Services have 4 endpoints each; the measured one is the last (highest index, last \
             in iptables rule order). New connections/s: connect, one request line, greeting + \
             echo read, close; {} workers for {} ms, median of {} runs (± = half the min–max \
             range of the runs), each run from a fresh source address and with the node's \
             connection tracking table flushed first: at these rates the 120 s TIME_WAIT \
             entries of the iptables/nftables modes would otherwise fill nf_conntrack_max \
             within seconds (a real kube-proxy node needs nf_conntrack_max ≥ rate × 120 s).\n",
            self.concurrency, self.duration_ms, self.runs
        );
    }

    fn conns_table(&self, s: &mut String) {
        let (lo, hi) = (self.lo, self.hi);
        let _ = writeln!(s, "## New TCP connections per second\n");
        let _ = writeln!(
            s,
            "{}",
            per_n_header("mode", self.services, &[&format!("N={hi} / N={lo}")])
        );
        for key in ["direct", "direct-again", "direct-host"] {
            let mut row = format!("| {} |", label(key));
            for _ in self.services {
                let _ = write!(row, " {} |", self.fmt_rate(key, 0));
            }
            row.push_str(" — |");
            let _ = writeln!(s, "{row}");
        }
        for key in RATE_ROWS {
            if !self.res.conns.keys().any(|(k, _)| *k == key) {
                continue;
            }
            let mut row = format!("| {} |", label(key));
            for n in self.services {
                let _ = write!(row, " {} |", self.fmt_rate(key, *n));
            }
            let _ = write!(row, " {} |", ratio(self.rate(key, hi), self.rate(key, lo)));
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    fn ratios(&self, s: &mut String) {
        let (lo, hi) = (self.lo, self.hi);
        let rate = |key, n| self.rate(key, n);
        let _ = writeln!(s, "### Ratios (connection rate)\n");
        let _ = writeln!(s, "| ratio | value |\n| --- | ---: |");
        let mut row = |name: String, v: String| {
            let _ = writeln!(s, "| {name} | {v} |");
        };
        for key in [
            "ebpf-xdp",
            "ebpf-socket",
            "iptables-nft",
            "nftables",
            "iptables-legacy",
        ] {
            if rate(key, hi).is_some() {
                row(
                    format!("{key}@{hi} / {key}@{lo}"),
                    ratio(rate(key, hi), rate(key, lo)),
                );
            }
        }
        for other in ["iptables-nft", "nftables", "iptables-legacy"] {
            if rate(other, hi).is_some() {
                row(
                    format!("ebpf-xdp / {other} @{hi}"),
                    ratio(rate("ebpf-xdp", hi), rate(other, hi)),
                );
            }
        }
        row(
            format!("ebpf-socket / iptables-nft @{hi}"),
            ratio(rate("ebpf-socket", hi), rate("iptables-nft", hi)),
        );
        for n in [lo, hi] {
            row(
                format!("socket-LB / direct (host process) @{n}"),
                ratio(rate("ebpf-socket", n), rate("direct-host", 0)),
            );
        }
        for n in [lo, hi] {
            row(
                format!("ebpf-xdp LB IP / direct (client) @{n}"),
                ratio(rate("ebpf-xdp", n), rate("direct", 0)),
            );
        }
        for (key, what) in [
            ("direct+ebpf", "eBPF"),
            ("direct+iptables-nft", "iptables-nft"),
            ("direct+nftables", "nftables"),
            ("direct+iptables-legacy", "iptables-legacy"),
        ] {
            if rate(key, hi).is_some() {
                row(
                    format!("direct with {hi} {what} services / direct with none"),
                    ratio(rate(key, hi), rate("direct", 0)),
                );
            }
        }
        let _ = writeln!(s);
    }

    fn hooks_table(&self, s: &mut String) {
        let lo = self.lo;
        let _ = writeln!(
            s,
            "## XDP native vs XDP generic vs tc (LB IP from the client, N={lo})\n"
        );
        let _ = writeln!(
            s,
            "| hook | conns/s | vs native | p50 µs | p99 µs | bulk Mbit/s |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for key in ["ebpf-xdp-native", "ebpf-xdp", "ebpf-tc"] {
            let rr = self.rr(key, lo);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                label(key),
                self.fmt_rate(key, lo),
                ratio(self.rate(key, lo), self.rate("ebpf-xdp-native", lo)),
                rr.map_or("—".into(), |r| format!("{:.1}", r.p50)),
                rr.map_or("—".into(), |r| format!("{:.1}", r.p99)),
                self.res
                    .bulk
                    .get(key)
                    .map_or("—".into(), |v| format!("{v:.0}")),
            );
        }
        let _ = writeln!(s);
    }

    fn latency_table(&self, s: &mut String) {
        let (lo, hi) = (self.lo, self.hi);
        let _ = writeln!(
            s,
            "## Request latency on a kept-alive connection (one line echoed, µs)\n"
        );
        let _ = writeln!(
            s,
            "| mode | p50 @{lo} | p99 @{lo} | p50 @{hi} | p99 @{hi} | p50 / direct p50 @{lo} |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        let cell = |r: Option<Rr>, p50: bool| {
            r.map_or("—".into(), |r| {
                format!("{:.1}", if p50 { r.p50 } else { r.p99 })
            })
        };
        for (key, base) in VS_BASELINE {
            let (l, h) = if key.starts_with("direct") {
                (self.rr(key, 0), self.rr(key, 0))
            } else {
                (self.rr(key, lo), self.rr(key, hi))
            };
            if l.is_none() && h.is_none() {
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                label(key),
                cell(l, true),
                cell(l, false),
                cell(h, true),
                cell(h, false),
                ratio(l.map(|r| r.p50), self.rr(base, 0).map(|r| r.p50)),
            );
        }
        let _ = writeln!(
            s,
            "\nThe ratio column compares host-side modes with the host-process baseline and \
             client-side modes with the client baseline.\n"
        );
    }

    fn bulk_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Bulk throughput, one connection (N={})\n", self.lo);
        let _ = writeln!(s, "| mode | Mbit/s | vs direct |\n| --- | ---: | ---: |");
        for (key, base) in VS_BASELINE {
            if let Some(v) = self.res.bulk.get(key) {
                let _ = writeln!(
                    s,
                    "| {} | {v:.0} | {} |",
                    label(key),
                    ratio(Some(*v), self.res.bulk.get(base).copied())
                );
            }
        }
        let _ = writeln!(s);
    }

    fn programming_table(&self, s: &mut String) {
        let services = self.services;
        let prog = |key: &str, n: usize| self.program(key, n);
        let _ = writeln!(s, "## Time to program all N services from empty\n");
        let _ = writeln!(s, "{}", per_n_header("what", services, &[]));
        let mut row = |name: &str, f: &dyn Fn(usize) -> String| {
            let _ = writeln!(s, "{}", per_n_row(name, services, f));
        };
        row(
            "eBPF: kproxy `took=` of the initial sync (parse + plan + map writes)",
            &|n| prog("ebpf", n).map_or("—".into(), |p| ms(p.took)),
        );
        row("eBPF: map operations of the initial sync", &|n| {
            prog("ebpf", n)
                .and_then(|p| p.map_ops)
                .map_or("—".into(), |o| o.to_string())
        });
        row(
            "eBPF: `took=` of a no-op reload (re-parse of services 1..N-1 + plan)",
            &|n| {
                prog("ebpf", n)
                    .and_then(|p| p.noop_took)
                    .map_or("—".into(), ms)
            },
        );
        row("eBPF: map writes alone (kproxy `apply=`)", &|n| {
            prog("ebpf", n).and_then(|p| p.apply).map_or("—".into(), ms)
        });
        row(
            "eBPF: kproxy start → ready (load, attach, initial sync)",
            &|n| {
                prog("ebpf", n)
                    .and_then(|p| p.start_wall)
                    .map_or("—".into(), ms)
            },
        );
        for (key, what) in [
            ("iptables-nft", "iptables-nft-restore (wall)"),
            ("nftables", "nft -f (wall)"),
            ("iptables-legacy", "iptables-legacy-restore (wall)"),
        ] {
            if prog(key, services[0]).is_some() {
                row(what, &|n| prog(key, n).map_or("—".into(), |p| ms(p.took)));
            }
        }
        let took = |key: &str| prog(key, self.hi).map(|p| p.took.as_secs_f64());
        let _ = writeln!(
            s,
            "\nAt N={}: iptables-nft-restore / kproxy = {}, nft -f / kproxy = {}.\n",
            self.hi,
            ratio(took("iptables-nft"), took("ebpf")),
            ratio(took("nftables"), took("ebpf"))
        );
    }

    fn changes_table(&self, s: &mut String) {
        let hi = self.hi;
        let _ = writeln!(
            s,
            "## One service change with N={hi} services present\n\nService {hi} is pointed at a \
             single (different) backend each time; \"effective\" runs from the change (the \
             manifest rename for kproxy, the tool's start for the rules) until a new \
             connection from the client reaches that backend (polled every ~1 ms).\n"
        );
        let _ = writeln!(
            s,
            "| mode | changes | effective p50 | effective max | tool p50 | tool max |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for (key, what) in [
            (
                "ebpf",
                "eBPF: kproxy, manifest rename (tool = kproxy's `took=`)",
            ),
            (
                "iptables-nft",
                "iptables-nft-restore --noflush of the service chain (tool = wall)",
            ),
            (
                "nftables",
                "nft -f: flush + add of the service chain (tool = wall)",
            ),
            (
                "iptables-legacy",
                "iptables-legacy-restore --noflush of the service chain (tool = wall)",
            ),
        ] {
            let Some(v) = self.res.changes.get(key) else {
                continue;
            };
            let eff: Vec<f64> = v.iter().map(|c| c.effective.as_secs_f64()).collect();
            let tl: Vec<f64> = v.iter().map(|c| c.tool.as_secs_f64()).collect();
            let d = |x: f64| ms(Duration::from_secs_f64(x));
            let _ = writeln!(
                s,
                "| {what} | {} | {} | {} | {} | {} |",
                v.len(),
                d(pct(eff.clone(), 50)),
                d(pct(eff, 100)),
                d(pct(tl.clone(), 50)),
                d(pct(tl, 100)),
            );
        }
        if let Some(v) = self.res.changes.get("ebpf") {
            let apply: Vec<f64> = v
                .iter()
                .filter_map(|c| c.apply.map(|d| d.as_secs_f64()))
                .collect();
            if !apply.is_empty() {
                let d = |x: f64| format!("{:.1} µs", x * 1e6);
                let _ = writeln!(
                    s,
                    "| eBPF: the map update alone (kproxy `apply=`) | {} | — | — | {} | {} |",
                    apply.len(),
                    d(pct(apply.clone(), 50)),
                    d(pct(apply, 100)),
                );
            }
            let ops: Vec<String> = v
                .iter()
                .filter_map(|c| c.map_ops)
                .map(|o| o.to_string())
                .collect();
            let _ = writeln!(
                s,
                "\nkproxy polls its manifest directory every 50 ms and re-reads only the changed file \
                 (the measured service has its own), but still builds and diffs the whole state, so its \
                 \"effective\" includes up to one poll interval, the parse of one file and a \
                 diff over all {hi} services; the map writes of one change are few (map_ops \
                 per change: {}).",
                ops.join(", ")
            );
        }
        let _ = writeln!(s);
    }

    fn memory(&self, s: &mut String) {
        let _ = writeln!(s, "## Kernel memory per service\n");
        self.map_memory(s);
        self.memory_per_service(s);
    }

    /// The eBPF maps' memlock at the largest N measured.
    fn map_memory(&self, s: &mut String) {
        let Some(((_, at_n), m)) = self
            .res
            .memory
            .iter()
            .filter(|((k, _), _)| *k == "ebpf")
            .max_by_key(|((_, n), _)| *n)
        else {
            return;
        };
        let total: u64 = m.maps.iter().map(|(_, v)| v).sum();
        let svc_maps: u64 = m
            .maps
            .iter()
            .filter(|(n, _)| {
                n.contains("services") || n.contains("revnat_v") || n.contains("svc_stats")
            })
            .map(|(_, v)| v)
            .sum();
        let _ = writeln!(
            s,
            "eBPF maps at N={at_n} (`bytes_memlock` from `bpftool map show pinned`; all \
             preallocated at their capacity, so the same for every N):\n"
        );
        let _ = writeln!(s, "| map | bytes |\n| --- | ---: |");
        for (name, v) in &m.maps {
            let _ = writeln!(s, "| {name} | {v} |");
        }
        let _ = writeln!(s, "| **all maps** | **{total}** |");
        let _ = writeln!(
            s,
            "\nPer-service maps (services, revnat, svc_stats) = {svc_maps} bytes = {:.0} \
             bytes per configured service (÷ MAX_SERVICES = {MAX_SERVICES}; the services \
             map itself has one slot per frontend plus one per backend of it); all maps ÷ \
             MAX_SERVICES = {:.0} bytes.\n",
            svc_maps as f64 / f64::from(MAX_SERVICES),
            total as f64 / f64::from(MAX_SERVICES)
        );
    }

    /// /proc/meminfo deltas around each load, per service.
    fn memory_per_service(&self, s: &mut String) {
        let services = self.services;
        let _ = writeln!(
            s,
            "Per loaded service (approximate: whole-machine /proc/meminfo deltas around the \
             load, noisy; for eBPF the delta spans the kproxy start and includes its own \
             process memory, shown separately as RSS):\n"
        );
        let _ = writeln!(s, "{}", per_n_header("mode", services, &[]));
        let mem = |key: &str, n: usize| self.mem(key, n);
        let per = |kb: i64, n: usize| bytes(kb as f64 * 1024.0 / n as f64);
        let mut row = |name: String, f: &dyn Fn(usize) -> String| {
            let _ = writeln!(s, "{}", per_n_row(&name, services, f));
        };
        row("eBPF: all map memlock ÷ N".into(), &|n| {
            mem("ebpf", n).map_or("—".into(), |m| {
                bytes(m.maps.iter().map(|(_, v)| *v).sum::<u64>() as f64 / n as f64)
            })
        });
        row("eBPF: Slab Δ ÷ N".into(), &|n| {
            mem("ebpf", n).map_or("—".into(), |m| per(m.slab_kb, n))
        });
        row(
            "eBPF: MemAvailable Δ ÷ N (incl. kproxy RSS)".into(),
            &|n| mem("ebpf", n).map_or("—".into(), |m| per(m.avail_kb, n)),
        );
        row("eBPF: kproxy RSS (userspace, total)".into(), &|n| {
            mem("ebpf", n)
                .and_then(|m| m.rss_kb)
                .map_or("—".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
        });
        for key in ["iptables-nft", "nftables", "iptables-legacy"] {
            if mem(key, services[0]).is_none() {
                continue;
            }
            row(format!("{key}: Slab Δ ÷ N"), &|n| {
                mem(key, n).map_or("—".into(), |m| per(m.slab_kb, n))
            });
            row(format!("{key}: MemAvailable Δ ÷ N"), &|n| {
                mem(key, n).map_or("—".into(), |m| per(m.avail_kb, n))
            });
        }
        let _ = writeln!(s);
    }

    fn notes(&self, s: &mut String) {
        if self.res.notes.is_empty() {
            return;
        }
        let _ = writeln!(s, "## Notes\n");
        for n in &self.res.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    /// Grouped bars: one group per N, one bar per service mode, dashed lines for the direct
    /// baselines.
    pub fn svg(&self) -> String {
        let modes = [
            ("ebpf-socket", "#2b8a3e"),
            ("ebpf-xdp", "#1971c2"),
            ("iptables-nft", "#e8590c"),
            ("iptables-legacy", "#c92a2a"),
            ("nftables", "#9c36b5"),
        ];
        let mut chart = Chart::bars(
            "New TCP connections/s by mode and number of services (higher is better)",
            self.services.iter().map(|n| format!("N = {n}")),
        )
        .size(960.0, 480.0)
        .x_label("services (4 endpoints each)")
        .y_label("connections/s")
        .note(&format!(
            "median of {} × {} ms runs, {} workers; ebpf-socket is a host process (compare with \
             \"direct host\"), the others come from the client netns",
            self.runs, self.duration_ms, self.concurrency
        ));
        for (key, color) in modes {
            if self.res.conns.keys().any(|(m, _)| *m == key) {
                let values = self.services.iter().map(|n| self.rate(key, *n)).collect();
                chart = chart.bar_series(key, color, values);
            }
        }
        for (key, color, text) in [
            ("direct", "#495057", "direct client → pod"),
            ("direct-host", "#868e96", "direct host → pod"),
        ] {
            if let Some(v) = self.rate(key, 0) {
                chart = chart.rule(Axis::Y, v, text, color);
            }
        }
        chart.render()
    }

    fn fmt_rate(&self, key: &str, n: usize) -> String {
        match self
            .res
            .conns
            .iter()
            .find(|((k, m), _)| *k == key && *m == n)
        {
            Some((_, c)) if c.errors > 0 => format!(
                "{:.0} ±{:.0}% ({} err)",
                c.per_s,
                c.spread * 100.0,
                c.errors
            ),
            Some((_, c)) => format!("{:.0} ±{:.0}%", c.per_s, c.spread * 100.0),
            None => "—".into(),
        }
    }

    fn rate(&self, key: &str, n: usize) -> Option<f64> {
        self.res
            .conns
            .iter()
            .find(|((k, m), _)| *k == key && *m == n)
            .map(|(_, c)| c.per_s)
    }

    fn rr(&self, key: &str, n: usize) -> Option<Rr> {
        self.res
            .rr
            .iter()
            .find(|((k, m), _)| *k == key && *m == n)
            .map(|(_, r)| *r)
    }

    fn program(&self, key: &str, n: usize) -> Option<&ProgramTime> {
        self.res
            .program
            .iter()
            .find(|((k, m), _)| *k == key && *m == n)
            .map(|(_, p)| p)
    }

    fn mem(&self, key: &str, n: usize) -> Option<&Memory> {
        self.res
            .memory
            .iter()
            .find(|((k, m), _)| *k == key && *m == n)
            .map(|(_, m)| m)
    }
}

/// A markdown table header with one `N=n` column per service count, then `extra` columns.
fn per_n_header(first: &str, services: &[usize], extra: &[&str]) -> String {
    let cols = services.len() + extra.len();
    let mut hdr = format!("| {first} |");
    for n in services {
        let _ = write!(hdr, " N={n} |");
    }
    for e in extra {
        let _ = write!(hdr, " {e} |");
    }
    format!("{hdr}\n| --- |{}", " ---: |".repeat(cols))
}

/// A markdown table row: `name`, then `f(n)` for each service count.
fn per_n_row(name: &str, services: &[usize], f: &dyn Fn(usize) -> String) -> String {
    let mut r = format!("| {name} |");
    for n in services {
        let _ = write!(r, " {} |", f(*n));
    }
    r
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn label(key: &str) -> &'static str {
    match key {
        "direct" => "direct: client → pod IP (nothing loaded)",
        "direct-host" => "direct: host process → pod IP (nothing loaded)",
        "direct-again" => {
            "direct: client → pod IP (nothing loaded), measured again late in the run (drift check)"
        }
        "direct+ebpf" => "direct: client → pod IP, with N kproxy services (XDP generic attached)",
        "direct+iptables-nft" => "direct: client → pod IP, with N iptables-nft services",
        "direct+nftables" => "direct: client → pod IP, with N nftables services",
        "direct+iptables-legacy" => "direct: client → pod IP, with N iptables-legacy services",
        "ebpf-socket" => "ebpf-socket: host process → ClusterIP (socket-LB)",
        "ebpf-xdp" => "ebpf-xdp: client → LB IP (XDP generic: kproxy's auto mode on veth)",
        "ebpf-xdp-native" => "ebpf-xdp-native: client → LB IP (XDP native)",
        "ebpf-tc" => "ebpf-tc: client → LB IP (tc ingress)",
        "iptables-nft" => "iptables-nft: client → ClusterIP",
        "nftables" => "nftables: client → ClusterIP",
        "iptables-legacy" => "iptables-legacy: client → ClusterIP",
        _ => "?",
    }
}

/// The `p`th percentile (0..=100) by index, 0 if empty.
fn pct(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// A byte count for the memory table; negative deltas are measurement noise.
fn bytes(v: f64) -> String {
    if v < 0.0 {
        "< 0 (noise)".into()
    } else if v >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / 1024.0 / 1024.0)
    } else if v >= 10.0 * 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::results::{Change, Conns};

    fn sample() -> Results {
        let mut r = Results::default();
        let ns = [1usize, 1000, 10000];
        let mut x = 1000.0;
        for key in ["direct", "direct-again", "direct-host"] {
            x += 137.0;
            r.conns.insert(
                (key, 0),
                Conns {
                    per_s: x,
                    errors: 0,
                    spread: 0.031,
                },
            );
        }
        for key in [
            "direct+ebpf",
            "direct+iptables-nft",
            "direct+nftables",
            "ebpf-socket",
            "ebpf-xdp",
            "iptables-nft",
            "nftables",
        ] {
            for n in ns {
                x += 71.5;
                r.conns.insert(
                    (key, n),
                    Conns {
                        per_s: x,
                        errors: if n == 1000 { 3 } else { 0 },
                        spread: 0.05,
                    },
                );
            }
        }
        for key in ["ebpf-xdp-native", "ebpf-tc"] {
            x += 11.0;
            r.conns.insert(
                (key, 1),
                Conns {
                    per_s: x,
                    errors: 0,
                    spread: 0.01,
                },
            );
        }
        for (key, n) in [
            ("direct", 0),
            ("direct-host", 0),
            ("ebpf-socket", 1),
            ("ebpf-xdp", 1),
            ("ebpf-socket", 10000),
            ("ebpf-xdp", 10000),
            ("iptables-nft", 1),
            ("iptables-nft", 10000),
            ("nftables", 1),
            ("ebpf-xdp-native", 1),
            ("ebpf-tc", 1),
        ] {
            x += 3.3;
            r.rr.insert(
                (key, n),
                Rr {
                    p50: x / 100.0,
                    p99: x / 50.0,
                },
            );
        }
        for key in [
            "direct",
            "direct-host",
            "ebpf-socket",
            "ebpf-xdp",
            "iptables-nft",
            "nftables",
            "ebpf-xdp-native",
            "ebpf-tc",
        ] {
            x += 100.0;
            r.bulk.insert(key, x);
        }
        for n in ns {
            r.program.insert(
                ("ebpf", n),
                ProgramTime {
                    took: Duration::from_micros(n as u64 * 30 + 500),
                    map_ops: Some(n as u64 * 5),
                    noop_took: if n == 1000 {
                        None
                    } else {
                        Some(Duration::from_micros(n as u64 * 7 + 90))
                    },
                    start_wall: Some(Duration::from_millis(n as u64 / 10 + 150)),
                    apply: Some(Duration::from_micros(n as u64 * 2)),
                },
            );
            for key in ["iptables-nft", "nftables"] {
                r.program.insert(
                    (key, n),
                    ProgramTime {
                        took: Duration::from_micros(n as u64 * 90 + 7000),
                        ..ProgramTime::default()
                    },
                );
            }
            r.memory.insert(
                ("ebpf", n),
                Memory {
                    maps: vec![
                        ("kproxy_services_v2".into(), 9_000_000),
                        ("kproxy_revnat_v1".into(), 400_000),
                        ("kproxy_affinity".into(), 12_345),
                    ],
                    slab_kb: i64::try_from(n).unwrap() * 3 - 40,
                    avail_kb: i64::try_from(n).unwrap() * 9 + 20_000,
                    rss_kb: Some(14_321),
                },
            );
            for key in ["iptables-nft", "nftables"] {
                r.memory.insert(
                    (key, n),
                    Memory {
                        slab_kb: i64::try_from(n).unwrap() * 2,
                        avail_kb: i64::try_from(n).unwrap() * 4 - 100,
                        ..Memory::default()
                    },
                );
            }
        }
        let mk = |i: u64, ops: Option<u64>, apply: Option<Duration>| Change {
            effective: Duration::from_micros(1500 + i * 321),
            tool: Duration::from_micros(300 + i * 77),
            map_ops: ops,
            apply,
        };
        r.changes.insert(
            "ebpf",
            (0..5)
                .map(|i| {
                    mk(
                        i,
                        Some(3 + i),
                        Some(Duration::from_nanos(20_000 + i * 1000)),
                    )
                })
                .collect(),
        );
        r.changes.insert(
            "iptables-nft",
            (0..5).map(|i| mk(i * 3, None, None)).collect(),
        );
        r.changes
            .insert("nftables", (0..5).map(|i| mk(i * 2, None, None)).collect());
        r.notes
            .push("iptables-legacy-restore not found: legacy iptables skipped".into());
        r.notes
            .push("ebpf-xdp @1000: 3 errors, first: \"reset\"".into());
        r
    }

    fn report(res: &Results) -> Report<'_> {
        Report {
            res,
            services: &[1, 1000, 10000],
            lo: 1,
            hi: 10000,
            runs: 3,
            duration_ms: 2000,
            concurrency: 4,
        }
    }

    /// The tables as they were when the report was one function (testdata/report.md, all
    /// but the header lines that name this machine).
    #[test]
    fn markdown_tables_are_unchanged() {
        let res = sample();
        let md = report(&res).markdown(Duration::from_secs(321));
        let mut lines = md.splitn(4, '\n');
        assert_eq!(lines.next(), Some("# kproxy dataplane benchmark"));
        assert_eq!(lines.next(), Some(""));
        assert!(lines.next().unwrap().contains("321s total"));
        let rest = lines.next().unwrap();
        let want = include_str!("testdata/report.md");
        for (i, (got, want)) in rest.lines().zip(want.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 4);
        }
        assert_eq!(rest, want);
    }

    #[test]
    fn chart_has_modes_groups_and_baselines() {
        let res = sample();
        let svg = report(&res).svg();
        for want in [
            ">ebpf-socket<",
            ">ebpf-xdp<",
            ">nftables<",
            ">N = 10000<",
            ">direct client → pod<",
            ">direct host → pod<",
            ">connections/s<",
        ] {
            assert!(svg.contains(want), "no {want:?}");
        }
        // No figures for legacy iptables in the sample: no series for it.
        assert!(!svg.contains("iptables-legacy"));
    }
}
