//! The datapath's drop and error counters (`kproxy_drops_v2`, one per-CPU [`Counter`] per
//! [`DropReason`]) as userspace shows them: `kproxy dump --drops`, the node endpoint's
//! `/lb` (`kctl lb --drops`) and `/metrics`. Every reason is listed, zero included, so a
//! reason that never fired is visibly zero rather than missing.

use std::fmt::Write as _;

use kproxy_common::{Counter, DropReason};
use prometheus_client::{
    metrics::{counter::Counter as PromCounter, family::Family},
    registry::Registry,
};
use serde::Serialize;

/// One reason's counter summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DropStat {
    /// [`DropReason::name`]: `no-backend`, `malformed`, ...
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// One row per reason in [`DropReason::ALL`] order, each the sum of its per-CPU values as
/// `per_cpu(slot)` reads them.
pub fn sum_drops<E>(
    mut per_cpu: impl FnMut(u32) -> Result<Vec<Counter>, E>,
) -> Result<Vec<DropStat>, E> {
    DropReason::ALL
        .iter()
        .map(|&reason| {
            let total = per_cpu(reason as u32)?
                .into_iter()
                .fold(Counter::default(), Counter::plus);
            Ok(DropStat {
                reason: reason.name(),
                packets: total.packets,
                bytes: total.bytes,
            })
        })
        .collect()
}

/// The `kproxy dump --drops` table.
#[must_use]
pub fn render_table(rows: &[DropStat]) -> String {
    let mut out = format!("{:<18} {:>12} {:>14}\n", "REASON", "PACKETS", "BYTES");
    for r in rows {
        let _ = writeln!(out, "{:<18} {:>12} {:>14}", r.reason, r.packets, r.bytes);
    }
    out
}

/// Registers `datapath_drops` and `datapath_drop_bytes` (counters, so `_total` in the
/// exposition) with one `reason` label per row.
pub fn register_metrics(reg: &mut Registry, rows: &[DropStat]) {
    let packets = Family::<Vec<(String, String)>, PromCounter>::default();
    let bytes = Family::<Vec<(String, String)>, PromCounter>::default();
    for r in rows {
        let labels = vec![("reason".to_string(), r.reason.to_string())];
        packets.get_or_create(&labels).inc_by(r.packets);
        bytes.get_or_create(&labels).inc_by(r.bytes);
    }
    reg.register(
        "datapath_drops",
        "Packets the datapath dropped or passed on untranslated, per reason",
        packets,
    );
    reg.register(
        "datapath_drop_bytes",
        "Bytes of the packets in datapath_drops, per reason",
        bytes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn sums_cpus_per_reason_and_lists_every_reason() {
        let rows = sum_drops(|slot| {
            Ok::<_, ()>(match slot {
                0 => vec![c(2, 120), c(0, 0), c(3, 180)],
                4 => vec![c(1, 54), c(u64::MAX, 1)],
                _ => vec![c(0, 0); 3],
            })
        })
        .unwrap();
        assert_eq!(rows.len(), DropReason::COUNT as usize);
        assert_eq!(
            rows[0],
            DropStat {
                reason: "no-backend",
                packets: 5,
                bytes: 300
            }
        );
        // Counters wrap rather than panic.
        assert_eq!(
            (rows[4].reason, rows[4].packets, rows[4].bytes),
            ("malformed", 0, 55)
        );
        assert!(
            rows.iter()
                .skip(1)
                .filter(|r| r.reason != "malformed")
                .all(|r| r.packets == 0)
        );
        let names: Vec<_> = rows.iter().map(|r| r.reason).collect();
        assert_eq!(
            names,
            DropReason::ALL.map(DropReason::name).to_vec(),
            "ABI order"
        );
        assert_eq!(sum_drops(|_| Err::<Vec<Counter>, _>("gone")), Err("gone"));
    }

    #[test]
    fn table_has_a_row_per_reason() {
        let rows = sum_drops(|s| Ok::<_, ()>(vec![c(u64::from(s), u64::from(s) * 60)])).unwrap();
        let text = render_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + DropReason::COUNT as usize);
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["REASON", "PACKETS", "BYTES"]
        );
        assert_eq!(
            lines[5].split_whitespace().collect::<Vec<_>>(),
            ["malformed", "4", "240"]
        );
    }

    #[test]
    fn metrics_name_every_reason_zero_included() {
        let rows = sum_drops(|s| Ok::<_, ()>(vec![c(u64::from(s == 0) * 7, 0)])).unwrap();
        let mut reg = Registry::default();
        register_metrics(reg.sub_registry_with_prefix("kproxy"), &rows);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains("kproxy_datapath_drops_total{reason=\"no-backend\"} 7"),
            "{text}"
        );
        for r in DropReason::ALL.into_iter().skip(1) {
            let line = format!("kproxy_datapath_drops_total{{reason=\"{}\"}} 0", r.name());
            assert!(text.contains(&line), "{line} missing in {text}");
            let line = format!(
                "kproxy_datapath_drop_bytes_total{{reason=\"{}\"}} 0",
                r.name()
            );
            assert!(text.contains(&line), "{line} missing in {text}");
        }
    }
}
