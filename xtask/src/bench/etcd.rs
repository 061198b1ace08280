//! The etcd side of `cargo xtask bench api --store etcd`: a one-member etcd on loopback
//! (Debian's /usr/bin/etcd, data in a scratch directory like the redb run's), and etcd's own
//! put rate on this machine through `etcdctl check perf` (500 clients at the `l` load), the
//! reference the API server's creates on etcd are held against.

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use kproxy_tests::{apiserver::TempDir, etcd::LocalEtcd};

use crate::util::step;

const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A scratch etcd with its data directory, both gone on drop.
pub struct BenchEtcd {
    etcd: LocalEtcd,
    // After `etcd` (field order): etcd stops before its directory is removed.
    _dir: TempDir,
}

impl BenchEtcd {
    pub fn start() -> Result<Self> {
        let dir = TempDir::new("kproxy-bench-etcd");
        let etcd = LocalEtcd::start(&dir.path().join("data"))?;
        Ok(Self { etcd, _dir: dir })
    }

    pub fn url(&self) -> &str {
        &self.etcd.url
    }
}

/// etcd's put rate on this machine (`etcdctl check perf --load l`: 500 clients, 60 s), or
/// None without etcdctl (Debian's etcd-client package).
pub fn raw_put_rate(url: &str) -> Result<Option<f64>> {
    if !std::path::Path::new(ETCDCTL).exists() {
        return Ok(None);
    }
    step("bench api [etcd]: etcd's own put rate (etcdctl check perf --load l, 60 s)");
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url, "check", "perf", "--load", "l"])
        .output()
        .context("run etcdctl check perf")?;
    // It exits non-zero when the rate is below the load's goal; the rate is printed either way.
    let text = String::from_utf8_lossy(&out.stdout);
    match throughput(&text) {
        Some(rate) => Ok(Some(rate)),
        None => bail!(
            "etcdctl check perf printed no throughput: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The N of "... Throughput is N writes/s" (PASS) or "Throughput too low: N writes/s" (FAIL).
fn throughput(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.contains("Throughput"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| w.starts_with("writes/s"))?;
            words.get(at.checked_sub(1)?)?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_perf_output() {
        let pass = " 60 / 60 Boooooo! 100.00% 1m0s\nPASS: Throughput is 4237 writes/s\nPASS: Slowest request took 0.2s\n";
        assert_eq!(throughput(pass), Some(4237.0));
        assert_eq!(
            throughput("FAIL: Throughput too low: 812 writes/s\n"),
            Some(812.0)
        );
        assert_eq!(throughput("FAIL: ran out of time\n"), None);
    }
}
