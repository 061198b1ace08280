//! Host routing side by side: kproxy with its pod programs on the bridge (`--pod-bridge`),
//! once with `--host-routing legacy` (load-balanced packets to local pods routed by the
//! kernel over the bridge) and once with `bpf` (redirected into the pod and back out of the
//! uplink), each measured on the LB IP and directly on a pod IP in the same run. The figures
//! that decide the default: LB-IP keep-alive p50 and new connections/s against direct.

use std::{fmt::Write as _, net::SocketAddrV4};

use anyhow::Result;
use kproxy_tests::lab::{BACKEND_PORT, backend_ip};

use super::{
    Bench, LB_IP, SVC_PORT, check_interrupted,
    phases::{start_kproxy_with, stop_kproxy},
    progress,
    results::Results,
    topology::Side,
};

/// (mode, key of the LB-IP figures, key of the direct-to-pod figures).
pub const MODES: [(&str, &str, &str); 2] = [
    ("legacy", "hr-legacy", "direct+hr-legacy"),
    ("bpf", "hr-bpf", "direct+hr-bpf"),
];

/// Measures both host routing modes at the smallest service count.
pub fn phase(b: &mut Bench<'_>) -> Result<()> {
    let n = b.n_min;
    let lb = SocketAddrV4::new(LB_IP, SVC_PORT);
    let pod = SocketAddrV4::new(backend_ip(0), BACKEND_PORT);
    for (mode, key, direct) in MODES {
        check_interrupted()?;
        progress(&format!(
            "{key} {n} services: starting kproxy (--pod-bridge br0 --host-routing {mode})..."
        ));
        let (k, _) = start_kproxy_with(
            b,
            n,
            "auto",
            "xdp",
            &["--pod-bridge", "br0", "--host-routing", mode],
        )?;
        // Interleaved, so drift hits both alike.
        b.rr(key, n, Side::Client, lb)?;
        b.rr(direct, n, Side::Client, pod)?;
        b.conns(key, n, Side::Client, lb)?;
        b.conns(direct, n, Side::Client, pod)?;
        stop_kproxy(b, k)?;
    }
    Ok(())
}

/// `a / b` as a ratio cell.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// The markdown table: per mode, LB IP and direct p50 and conns/s, and their ratios.
pub fn table(res: &Results, n: usize, s: &mut String) {
    if !MODES
        .iter()
        .any(|(_, key, _)| res.rr.contains_key(&(*key, n)))
    {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Host routing (client → LB IP vs client → pod IP, {n} services, \
         `--pod-bridge br0`)\n\n\
         | --host-routing | LB p50 µs | direct p50 µs | p50 LB/direct | LB conns/s | \
         direct conns/s | conns LB/direct |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (mode, key, direct) in MODES {
        let p50 = |k: &'static str| res.rr.get(&(k, n)).map(|r| r.p50);
        let rate = |k: &'static str| res.conns.get(&(k, n)).map(|c| c.per_s);
        let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "| {mode} | {} | {} | {} | {} | {} | {} |",
            p50(key).map_or_else(|| "—".into(), |v| format!("{v:.1}")),
            p50(direct).map_or_else(|| "—".into(), |v| format!("{v:.1}")),
            ratio(p50(key), p50(direct)),
            cell(rate(key)),
            cell(rate(direct)),
            ratio(rate(key), rate(direct)),
        );
    }
    let _ = writeln!(
        s,
        "\nTargets: p50 LB/direct ≤ 1.00×, conns LB/direct ≥ 1.00×. `bpf` redirects \
         translated packets to local pods (`bpf_redirect_peer`) and their replies out of the \
         uplink; direct-to-pod traffic is not translated, so it keeps the kernel's path in \
         both modes."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataplane::results::{Conns, Rr};

    #[test]
    fn table_shows_both_modes_with_ratios() {
        let mut res = Results::default();
        for (i, (_, key, direct)) in MODES.into_iter().enumerate() {
            let lb = 60.0 - 10.0 * i as f64;
            res.rr.insert((key, 1), Rr { p50: lb, p99: lb });
            res.rr.insert(
                (direct, 1),
                Rr {
                    p50: 50.0,
                    p99: 60.0,
                },
            );
            res.conns.insert(
                (key, 1),
                Conns {
                    per_s: 900.0,
                    ..Conns::default()
                },
            );
            res.conns.insert(
                (direct, 1),
                Conns {
                    per_s: 1000.0,
                    ..Conns::default()
                },
            );
        }
        let mut s = String::new();
        table(&res, 1, &mut s);
        assert!(
            s.contains("| legacy | 60.0 | 50.0 | 1.20× | 900 | 1000 | 0.90× |"),
            "{s}"
        );
        assert!(s.contains("| bpf | 50.0 | 50.0 | 1.00× |"), "{s}");
        let mut empty = String::new();
        table(&Results::default(), 1, &mut empty);
        assert!(empty.is_empty());
    }
}
