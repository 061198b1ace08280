//! The node's health as its conditions say it: Ready (the container runtime answers),
//! MemoryPressure and DiskPressure (the host's figures against the `--eviction-hard`
//! thresholds, as the kubelet's eviction manager compares them). Parsing and comparing are
//! pure; [`Probe`] reads the host and asks Docker.

use std::{path::PathBuf, time::Duration};

use kproxy_apimachinery::quantity::Quantity;

/// The kubelet's default hard eviction thresholds (Linux).
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%";

/// How long Docker may take to answer a ping before the node is not ready.
pub const RUNTIME_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A threshold: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Quantity(u64),
    Percent(f64),
}

impl Threshold {
    /// Whether `available` of `capacity` is below the threshold.
    pub fn crossed(self, available: u64, capacity: u64) -> bool {
        match self {
            Threshold::Quantity(q) => available < q,
            #[expect(
                clippy::cast_precision_loss,
                reason = "a share of the capacity: the precision of f64 is plenty"
            )]
            Threshold::Percent(p) => (available as f64) < capacity as f64 * p / 100.0,
        }
    }
}

/// The signals this kubelet watches; `None`: not watched.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    pub memory_available: Option<Threshold>,
    pub nodefs_available: Option<Threshold>,
    pub nodefs_inodes_free: Option<Threshold>,
    pub imagefs_available: Option<Threshold>,
    pub imagefs_inodes_free: Option<Threshold>,
}

impl Thresholds {
    /// `--eviction-hard`: `signal<value` pairs separated by commas, the value a quantity
    /// (`100Mi`) or a percentage (`10%`). Given, it replaces the defaults as a whole.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut t = Thresholds::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = pair
                .split_once('<')
                .ok_or_else(|| format!("{pair:?}: expected signal<value"))?;
            let value = value.trim();
            let threshold = if let Some(p) = value.strip_suffix('%') {
                let p: f64 = p
                    .parse()
                    .map_err(|_| format!("{pair:?}: {value:?} is not a percentage"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("{pair:?}: a percentage is between 0% and 100%"));
                }
                Threshold::Percent(p)
            } else {
                let q = Quantity::parse(value)
                    .map_err(|e| format!("{pair:?}: {value:?} is not a quantity: {e}"))?;
                Threshold::Quantity(
                    u64::try_from(q.value())
                        .map_err(|_| format!("{pair:?}: {value:?} must not be negative"))?,
                )
            };
            let slot = match signal.trim() {
                "memory.available" => &mut t.memory_available,
                "nodefs.available" => &mut t.nodefs_available,
                "nodefs.inodesFree" => &mut t.nodefs_inodes_free,
                "imagefs.available" => &mut t.imagefs_available,
                "imagefs.inodesFree" => &mut t.imagefs_inodes_free,
                other => return Err(format!("{pair:?}: unknown eviction signal {other:?}")),
            };
            *slot = Some(threshold);
        }
        Ok(t)
    }
}

/// One filesystem's figures (statvfs): bytes and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fs {
    pub capacity: u64,
    pub available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// What the host reports; `None` where it could not be read (no pressure is then claimed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// `MemTotal` and `MemAvailable` in bytes.
    pub memory: Option<(u64, u64)>,
    /// The kubelet's state directory's filesystem.
    pub nodefs: Option<Fs>,
    /// Docker's root directory's filesystem (images, container layers).
    pub imagefs: Option<Fs>,
}

fn crossed(t: Option<Threshold>, available: u64, capacity: u64) -> bool {
    t.is_some_and(|t| t.crossed(available, capacity))
}

pub fn memory_pressure(t: &Thresholds, f: &Figures) -> bool {
    f.memory
        .is_some_and(|(total, avail)| crossed(t.memory_available, avail, total))
}

pub fn disk_pressure(t: &Thresholds, f: &Figures) -> bool {
    let fs = |fs: Option<Fs>, bytes: Option<Threshold>, inodes: Option<Threshold>| {
        fs.is_some_and(|fs| {
            crossed(bytes, fs.available, fs.capacity)
                || (fs.inodes > 0 && crossed(inodes, fs.inodes_free, fs.inodes))
        })
    };
    fs(f.nodefs, t.nodefs_available, t.nodefs_inodes_free)
        || fs(f.imagefs, t.imagefs_available, t.imagefs_inodes_free)
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// The node's health at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Why the container runtime is not usable; `None`: it answers.
    pub runtime_down: Option<String>,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
}

/// Reads the host's figures and pings Docker.
#[derive(Clone)]
pub struct Probe {
    pub docker: bollard::Docker,
    pub thresholds: Thresholds,
    pub state_dir: PathBuf,
    pub docker_root: Option<PathBuf>,
}

fn statvfs(path: &std::path::Path) -> Option<Fs> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size();
    Some(Fs {
        capacity: s.blocks().saturating_mul(frag),
        available: s.blocks_available().saturating_mul(frag),
        inodes: s.files(),
        inodes_free: s.files_available(),
    })
}

impl Probe {
    pub fn figures(&self) -> Figures {
        Figures {
            memory: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| parse_meminfo(&t)),
            nodefs: statvfs(&self.state_dir),
            imagefs: self.docker_root.as_deref().and_then(statvfs),
        }
    }

    pub async fn check(&self) -> Health {
        let runtime_down =
            match tokio::time::timeout(RUNTIME_PING_TIMEOUT, self.docker.ping()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("docker: {e}")),
                Err(_) => Some(format!(
                    "docker did not answer a ping within {}s",
                    RUNTIME_PING_TIMEOUT.as_secs()
                )),
            };
        let figures = self.figures();
        Health {
            runtime_down,
            memory_pressure: memory_pressure(&self.thresholds, &figures),
            disk_pressure: disk_pressure(&self.thresholds, &figures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    #[test]
    fn eviction_hard_parses_like_the_kubelet() {
        let t = Thresholds::parse(DEFAULT_EVICTION_HARD).unwrap();
        assert_eq!(t.memory_available, Some(Threshold::Quantity(100 * MI)));
        assert_eq!(t.nodefs_available, Some(Threshold::Percent(10.0)));
        assert_eq!(t.nodefs_inodes_free, Some(Threshold::Percent(5.0)));
        assert_eq!(t.imagefs_available, Some(Threshold::Percent(15.0)));
        assert_eq!(t.imagefs_inodes_free, None);
        let t = Thresholds::parse("memory.available<1Gi").unwrap();
        assert_eq!(t.memory_available, Some(Threshold::Quantity(1024 * MI)));
        assert_eq!(
            t.nodefs_available, None,
            "a given flag replaces the defaults"
        );
        assert_eq!(Thresholds::parse("").unwrap(), Thresholds::default());
        for bad in [
            "memory.available>1Gi",
            "memory.available<lots",
            "memory.available<-1Mi",
            "nodefs.available<150%",
            "cpu.available<1",
        ] {
            assert!(Thresholds::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_pressure_below_the_threshold() {
        let t = Thresholds::parse("memory.available<100Mi").unwrap();
        let at = |avail| Figures {
            memory: Some((8 * 1024 * MI, avail)),
            ..Figures::default()
        };
        assert!(memory_pressure(&t, &at(99 * MI)));
        assert!(!memory_pressure(&t, &at(100 * MI)));
        assert!(
            !memory_pressure(&t, &Figures::default()),
            "unknown: no pressure"
        );
        let pct = Thresholds::parse("memory.available<50%").unwrap();
        assert!(memory_pressure(&pct, &at(4 * 1024 * MI - 1)));
        assert!(!memory_pressure(&pct, &at(4 * 1024 * MI)));
    }

    #[test]
    fn disk_pressure_on_either_filesystem() {
        let t = Thresholds::parse(DEFAULT_EVICTION_HARD).unwrap();
        let fs = |available, inodes_free| Fs {
            capacity: 1000,
            available,
            inodes: 100,
            inodes_free,
        };
        let ok = fs(500, 50);
        let f = |nodefs, imagefs| Figures {
            memory: None,
            nodefs: Some(nodefs),
            imagefs: Some(imagefs),
        };
        assert!(!disk_pressure(&t, &f(ok, ok)));
        assert!(
            !disk_pressure(&t, &f(fs(100, 50), ok)),
            "10% is not below 10%"
        );
        assert!(disk_pressure(&t, &f(fs(99, 50), ok)));
        assert!(disk_pressure(&t, &f(fs(500, 4), ok)), "inodes");
        assert!(disk_pressure(&t, &f(ok, fs(149, 50))), "imagefs below 15%");
        assert!(
            !disk_pressure(&t, &f(ok, fs(150, 0))),
            "imagefs inodes not watched"
        );
        assert!(!disk_pressure(&t, &Figures::default()));
    }

    #[test]
    fn meminfo_total_and_available() {
        let t = "MemTotal:        8041652 kB\nMemFree:  100 kB\nMemAvailable:    2000 kB\n";
        assert_eq!(parse_meminfo(t), Some((8_041_652 * 1024, 2000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_meminfo("nonsense"), None);
    }
}
