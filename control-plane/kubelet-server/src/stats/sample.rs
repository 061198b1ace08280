//! One reading of a container's or the node's CPU and memory, and the CPU rate between two
//! readings: pure arithmetic over what Docker and /proc report.

use std::collections::HashMap;

use bollard::models::ContainerStatsResponse;
use jiff::Timestamp;

/// Nanoseconds per USER_HZ tick of /proc/stat. The kernel scales /proc/stat to USER_HZ,
/// which is 100 on every architecture Linux exposes to user space through this file.
const NANOS_PER_TICK: u64 = 10_000_000;

/// A cumulative CPU counter read at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuReading {
    pub time: Timestamp,
    /// CPU time used since the container (or the machine) started, in core-nanoseconds.
    pub usage_core_nanos: u64,
}

/// The CPU rate between two readings of the same counter, in nanocores (1e9 = one core busy
/// the whole time). None when the readings do not make an interval (same or reversed time,
/// a counter that went back).
pub fn nano_cores(older: &CpuReading, newer: &CpuReading) -> Option<u64> {
    let elapsed = newer.time.as_nanosecond() - older.time.as_nanosecond();
    let used = newer.usage_core_nanos.checked_sub(older.usage_core_nanos)?;
    if elapsed <= 0 {
        return None;
    }
    let rate = u128::from(used) * 1_000_000_000 / elapsed.unsigned_abs();
    u64::try_from(rate).ok()
}

/// Memory figures at a moment, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    pub time: Timestamp,
    pub usage: u64,
    /// Usage less inactive file pages: what Kubernetes (and `docker stats`) count as in use.
    pub working_set: u64,
    /// Anonymous memory (not backed by a file).
    pub rss: u64,
    /// Capacity less working set (the node only).
    pub available: Option<u64>,
}

/// The figures of one `docker stats` answer (one-shot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerReading {
    pub cpu: CpuReading,
    pub memory: MemoryReading,
}

/// Reads Docker's stats; `now` stands in when Docker gives no read time. None when Docker
/// reports no CPU counter (the container is not running).
pub fn from_docker(s: &ContainerStatsResponse, now: Timestamp) -> Option<ContainerReading> {
    let time = s
        .read
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        // Docker sends the zero time for a container it has no figures of.
        .filter(|t| t.as_second() > 0)
        .unwrap_or(now);
    let usage_core_nanos = s.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    let mem = s.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let empty = HashMap::new();
    let stats = mem.and_then(|m| m.stats.as_ref()).unwrap_or(&empty);
    Some(ContainerReading {
        cpu: CpuReading {
            time,
            usage_core_nanos,
        },
        memory: MemoryReading {
            time,
            usage,
            working_set: working_set(usage, stats),
            // cgroup v1 names it rss (total_rss with children), v2 anon.
            rss: ["total_rss", "rss", "anon"]
                .iter()
                .find_map(|k| stats.get(*k).copied())
                .unwrap_or(0),
            available: None,
        },
    })
}

/// Usage less inactive file pages, as the docker CLI computes MEM USAGE and cAdvisor the
/// working set: `total_inactive_file` on cgroup v1, `inactive_file` on v2; never below 0.
pub fn working_set(usage: u64, stats: &HashMap<String, u64>) -> u64 {
    let inactive = stats
        .get("total_inactive_file")
        .or_else(|| stats.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// Why /proc could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no {what}")]
    Missing {
        path: &'static str,
        what: &'static str,
    },
}

/// The node's CPU time from /proc/stat's `cpu` line: every state but idle and iowait (guest
/// time is already inside user and nice), in core-nanoseconds.
pub fn node_cpu(proc_stat: &str, time: Timestamp) -> Result<CpuReading, ProcError> {
    let missing = ProcError::Missing {
        path: "/proc/stat",
        what: "cpu line",
    };
    let line = proc_stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or(missing)?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Ok(CpuReading {
        time,
        usage_core_nanos: busy * NANOS_PER_TICK,
    })
}

/// The node's memory from /proc/meminfo, as Kubernetes counts it for the root cgroup:
/// usage = MemTotal − MemFree, working set = usage − Inactive(file), available = MemTotal −
/// working set (the `memory.available` eviction signal), rss = AnonPages.
pub fn node_memory(meminfo: &str, time: Timestamp) -> Result<MemoryReading, ProcError> {
    let kib = |key: &'static str| -> Result<u64, ProcError> {
        meminfo
            .lines()
            .find_map(|l| {
                let (k, rest) = l.split_once(':')?;
                (k == key).then(|| rest.trim().trim_end_matches("kB").trim().parse().ok())?
            })
            .map(|v: u64| v * 1024)
            .ok_or(ProcError::Missing {
                path: "/proc/meminfo",
                what: key,
            })
    };
    let total = kib("MemTotal")?;
    let usage = total.saturating_sub(kib("MemFree")?);
    let working_set = usage.saturating_sub(kib("Inactive(file)")?);
    Ok(MemoryReading {
        time,
        usage,
        working_set,
        rss: kib("AnonPages").unwrap_or(0),
        available: Some(total.saturating_sub(working_set)),
    })
}

/// Reads /proc/stat and /proc/meminfo now.
pub async fn read_node() -> Result<(CpuReading, MemoryReading), ProcError> {
    let read = |path: &'static str| async move {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| ProcError::Read { path, source })
    };
    let (stat, meminfo) = (read("/proc/stat").await?, read("/proc/meminfo").await?);
    let now = Timestamp::now();
    Ok((node_cpu(&stat, now)?, node_memory(&meminfo, now)?))
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    use super::*;

    fn at(secs: i64, nanos: i32) -> Timestamp {
        Timestamp::new(secs, nanos).unwrap()
    }

    #[test]
    fn rate_between_two_readings() {
        let a = CpuReading {
            time: at(100, 0),
            usage_core_nanos: 5_000_000_000,
        };
        // One core busy for 10 s.
        let b = CpuReading {
            time: at(110, 0),
            usage_core_nanos: 15_000_000_000,
        };
        assert_eq!(nano_cores(&a, &b), Some(1_000_000_000));
        // A quarter core over 500 ms.
        let c = CpuReading {
            time: at(110, 500_000_000),
            usage_core_nanos: 15_125_000_000,
        };
        assert_eq!(nano_cores(&b, &c), Some(250_000_000));
        assert_eq!(nano_cores(&b, &b), None, "no interval");
        assert_eq!(nano_cores(&b, &a), None, "the counter went back");
    }

    #[test]
    fn working_set_is_usage_less_inactive_file() {
        let v1 = HashMap::from([
            ("total_inactive_file".to_string(), 24_576),
            ("inactive_file".to_string(), 4096),
        ]);
        assert_eq!(working_set(671_744, &v1), 647_168);
        let v2 = HashMap::from([("inactive_file".to_string(), 1000)]);
        assert_eq!(working_set(5000, &v2), 4000);
        assert_eq!(working_set(500, &v2), 0, "never below zero");
        assert_eq!(working_set(500, &HashMap::new()), 500);
    }

    #[test]
    fn reads_a_docker_answer() {
        let s = ContainerStatsResponse {
            read: Some("2026-12-05T10:52:45.426779443Z".into()),
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(2_028_464_355),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(671_744),
                stats: Some(HashMap::from([
                    ("total_inactive_file".to_string(), 24_576),
                    ("total_rss".to_string(), 65_536),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = from_docker(&s, at(1, 0)).unwrap();
        assert_eq!(r.cpu.time, at(1_796_467_965, 426_779_443));
        assert_eq!(r.cpu.usage_core_nanos, 2_028_464_355);
        assert_eq!(
            (r.memory.usage, r.memory.working_set, r.memory.rss),
            (671_744, 647_168, 65_536)
        );
        // A stopped container: the zero time and no counter.
        let stopped = ContainerStatsResponse {
            read: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(from_docker(&stopped, at(1, 0)), None);
    }

    #[test]
    fn node_cpu_from_proc_stat() {
        let stat = "cpu  4426331 178673 1051061 2836596 25773 0 25156 2037 0 0\n\
                    cpu0 2162513 78861 516471 1495233 8148 0 9955 1045 0 0\n";
        let r = node_cpu(stat, at(5, 0)).unwrap();
        let busy = 4_426_331 + 178_673 + 1_051_061 + 25_156 + 2037;
        assert_eq!(r.usage_core_nanos, busy * 10_000_000);
        assert!(node_cpu("intr 1 2\n", at(5, 0)).is_err());
    }

    #[test]
    fn node_memory_from_meminfo() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:        13296224 kB\n\
                       Inactive(file):  5769548 kB\nAnonPages:         54120 kB\n";
        let r = node_memory(meminfo, at(5, 0)).unwrap();
        let usage = (24_683_784 - 13_296_224) * 1024;
        let ws = usage - 5_769_548 * 1024;
        assert_eq!((r.usage, r.working_set, r.rss), (usage, ws, 54_120 * 1024));
        assert_eq!(r.available, Some(24_683_784 * 1024 - ws));
        let e = node_memory("MemTotal: 1 kB\n", at(5, 0)).unwrap_err();
        assert_eq!(e.to_string(), "/proc/meminfo has no MemFree");
    }
}
