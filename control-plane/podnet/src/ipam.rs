//! Pod address allocation from the node's pod CIDR, persisted in a small JSON file so a
//! restarted kubelet hands each pod its address back and never allocates one twice.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The file format. `cidr` and `gateway` are stored so that reopening with another range
/// fails loudly instead of silently reinterpreting old allocations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    /// The last address handed out; the search for a free one starts after it so a just
    /// released address is not reused at once (stale ARP entries, late packets).
    last: Option<Ipv4Addr>,
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// Allocates pod addresses from one IPv4 CIDR, keyed by owner (the pod uid).
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    state: State,
}

impl Ipam {
    /// [`Ipam::open`], except that state kept for another pod CIDR is set aside (renamed to
    /// `<file>.<old CIDR>`) and a fresh one started: the control plane gave the node another
    /// range (a new cluster, or its Node re-created), so the old addresses mean nothing and
    /// the pods holding them belong to no pod of this cluster. Returns the old CIDR then.
    pub fn open_for_assigned(
        path: impl Into<PathBuf>,
        cidr: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(Self, Option<Ipv4Net>)> {
        let path = path.into();
        match Self::open(&path, cidr, gateway) {
            Err(Error::CidrMismatch { stored, .. }) => {
                let mut aside = path.clone().into_os_string();
                aside.push(format!(".{}", stored.to_string().replace('/', "_")));
                fs::rename(&path, &aside).map_err(|source| Error::Io {
                    what: "setting aside IPAM state of another pod CIDR",
                    path: path.clone(),
                    source,
                })?;
                Ok((Self::open(path, cidr, gateway)?, Some(stored)))
            }
            other => other.map(|ipam| (ipam, None)),
        }
    }

    /// Opens (or creates) the state file for `cidr`, whose `gateway` (the bridge address)
    /// is never allocated, nor are the network and broadcast addresses.
    pub fn open(path: impl Into<PathBuf>, cidr: Ipv4Net, gateway: Ipv4Addr) -> Result<Self> {
        let path = path.into();
        let cidr = cidr.trunc();
        check_range(cidr, gateway)?;
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if state.cidr != cidr {
                    return Err(Error::CidrMismatch {
                        path,
                        stored: state.cidr,
                        requested: cidr,
                    });
                }
                if state.gateway != gateway {
                    return Err(Error::InvalidConfig(format!(
                        "IPAM state {} has gateway {}, not {gateway}",
                        path.display(),
                        state.gateway
                    )));
                }
                check_allocations(&path, &state)?;
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                cidr,
                gateway,
                last: None,
                allocations: BTreeMap::new(),
            },
            Err(source) => {
                return Err(Error::Io {
                    what: "reading IPAM state",
                    path,
                    source,
                });
            }
        };
        Ok(Self { path, state })
    }

    /// The address of `owner`: the one it already has, or a newly allocated one.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        if owner.is_empty() {
            return Err(Error::InvalidConfig("IPAM owner must not be empty".into()));
        }
        if let Some(&ip) = self.state.allocations.get(owner) {
            return Ok(ip);
        }
        let ip = self.next_free()?;
        let mut next = self.state.clone();
        next.allocations.insert(owner.to_owned(), ip);
        next.last = Some(ip);
        // Persist before answering: an address handed out must survive a crash.
        persist(&self.path, &next)?;
        self.state = next;
        Ok(ip)
    }

    /// Frees `owner`'s address; returns it, or `None` if the owner had none.
    pub fn release(&mut self, owner: &str) -> Result<Option<Ipv4Addr>> {
        if !self.state.allocations.contains_key(owner) {
            return Ok(None);
        }
        let mut next = self.state.clone();
        let ip = next.allocations.remove(owner);
        persist(&self.path, &next)?;
        self.state = next;
        Ok(ip)
    }

    /// Current allocations by owner.
    #[must_use]
    pub fn allocations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.state.allocations
    }

    #[must_use]
    pub fn cidr(&self) -> Ipv4Net {
        self.state.cidr
    }

    #[must_use]
    pub fn gateway(&self) -> Ipv4Addr {
        self.state.gateway
    }

    fn next_free(&self) -> Result<Ipv4Addr> {
        let used: BTreeSet<Ipv4Addr> = self.state.allocations.values().copied().collect();
        let (first, last) = host_range(self.state.cidr);
        let (first, last) = (u32::from(first), u32::from(last));
        let start = match self.state.last {
            Some(l) if u32::from(l) >= first && u32::from(l) < last => u32::from(l) + 1,
            _ => first,
        };
        // Scan start..=last, then wrap to first..start.
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.state.gateway && !used.contains(ip))
            .ok_or(Error::Exhausted {
                cidr: self.state.cidr,
                capacity: u64::from(last - first), // hosts minus the gateway
            })
    }
}

/// First and last usable host addresses (network and broadcast excluded).
fn host_range(cidr: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let net = u32::from(cidr.network());
    let bcast = u32::from(cidr.broadcast());
    (Ipv4Addr::from(net + 1), Ipv4Addr::from(bcast - 1))
}

fn check_range(cidr: Ipv4Net, gateway: Ipv4Addr) -> Result<()> {
    // /31 and /32 have no network/broadcast pair to exclude and no room for pods.
    if cidr.prefix_len() > 30 {
        return Err(Error::InvalidConfig(format!(
            "pod CIDR {cidr} is too small (prefix must be /30 or shorter)"
        )));
    }
    let (first, last) = host_range(cidr);
    if gateway < first || gateway > last {
        return Err(Error::InvalidConfig(format!(
            "gateway {gateway} is not a host address of {cidr}"
        )));
    }
    Ok(())
}

fn check_allocations(path: &Path, state: &State) -> Result<()> {
    let corrupt = |reason: String| {
        Err(Error::CorruptState {
            path: path.to_owned(),
            reason,
        })
    };
    let (first, last) = host_range(state.cidr);
    let mut seen = BTreeMap::new();
    for (owner, &ip) in &state.allocations {
        if owner.is_empty() {
            return corrupt("an allocation has an empty owner".into());
        }
        if ip < first || ip > last || ip == state.gateway {
            return corrupt(format!(
                "{owner} holds {ip}, which is not allocatable in {}",
                state.cidr
            ));
        }
        if let Some(other) = seen.insert(ip, owner) {
            return corrupt(format!("{ip} is allocated to both {other} and {owner}"));
        }
    }
    Ok(())
}

/// Writes the state atomically: a synced temporary file renamed over the old one, then the
/// directory synced so the rename itself is durable.
fn persist(path: &Path, state: &State) -> Result<()> {
    let io = |what| {
        move |source| Error::Io {
            what,
            path: path.to_owned(),
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io("creating the IPAM state directory"))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::CorruptState {
        path: path.to_owned(),
        reason: format!("cannot serialize: {e}"),
    })?;
    let mut file = fs::File::create(&tmp).map_err(io("creating the IPAM temporary file"))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("writing the IPAM temporary file"))?;
    fs::rename(&tmp, path).map_err(io("replacing the IPAM state"))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the IPAM state directory"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "kproxy-podnet-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn file(&self) -> PathBuf {
            self.0.join("state").join("ipam.json")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocate_is_idempotent_per_owner() {
        let dir = TempDir::new("idem");
        let mut ipam = Ipam::open(dir.file(), net("10.244.0.0/24"), ip("10.244.0.1")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        assert_eq!(ipam.allocations().len(), 2);
        assert_eq!(a, ip("10.244.0.2"));
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast_and_reports_exhaustion() {
        let dir = TempDir::new("exhaust");
        // /29: .0 network, .7 broadcast, gateway .3 in the middle: 5 pod addresses.
        let mut ipam = Ipam::open(dir.file(), net("10.1.0.0/29"), ip("10.1.0.3")).unwrap();
        let mut got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")).unwrap())
            .collect();
        got.sort();
        let want: Vec<Ipv4Addr> = ["10.1.0.1", "10.1.0.2", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
            .into_iter()
            .map(ip)
            .collect();
        assert_eq!(got, want);
        let err = ipam.allocate("p5").unwrap_err();
        assert!(matches!(err, Error::Exhausted { capacity: 5, .. }), "{err}");
        assert!(
            err.to_string().contains("10.1.0.0/29 is exhausted"),
            "{err}"
        );
        // An existing owner still gets its address when the range is full.
        assert_eq!(ipam.allocate("p0").unwrap(), ip("10.1.0.1"));
    }

    #[test]
    fn release_frees_the_address_for_reuse() {
        let dir = TempDir::new("release");
        let mut ipam = Ipam::open(dir.file(), net("10.1.0.0/30"), ip("10.1.0.1")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.1.0.2"));
        assert!(ipam.allocate("b").is_err());
        assert_eq!(ipam.release("a").unwrap(), Some(ip("10.1.0.2")));
        assert_eq!(ipam.release("a").unwrap(), None);
        assert_eq!(ipam.release("never").unwrap(), None);
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.1.0.2"));
        assert!(!ipam.allocations().contains_key("a"));
    }

    #[test]
    fn recently_released_addresses_are_reused_last() {
        let dir = TempDir::new("cursor");
        let mut ipam = Ipam::open(dir.file(), net("10.1.0.0/24"), ip("10.1.0.1")).unwrap();
        let a = ipam.allocate("a").unwrap();
        ipam.release("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn state_survives_reopen() {
        let dir = TempDir::new("reopen");
        let (cidr, gw) = (net("10.244.3.0/24"), ip("10.244.3.1"));
        let (a, b) = {
            let mut ipam = Ipam::open(dir.file(), cidr, gw).unwrap();
            let a = ipam.allocate("a").unwrap();
            let b = ipam.allocate("b").unwrap();
            ipam.release("a").unwrap();
            (a, b)
        };
        let mut ipam = Ipam::open(dir.file(), cidr, gw).unwrap();
        assert_eq!(ipam.allocations().get("b"), Some(&b));
        assert!(!ipam.allocations().contains_key("a"));
        assert_eq!(ipam.allocate("b").unwrap(), b);
        let c = ipam.allocate("c").unwrap();
        assert!(c != b && c != a, "the cursor persisted too: {c}");
        assert!(!dir.file().with_extension("json.tmp").exists());
    }

    #[test]
    fn corrupt_or_inconsistent_state_is_a_clear_error() {
        let dir = TempDir::new("corrupt");
        let (cidr, gw) = (net("10.2.0.0/24"), ip("10.2.0.1"));
        fs::create_dir_all(dir.file().parent().unwrap()).unwrap();
        let cases = [
            ("{not json", "corrupt"),
            (
                r#"{"cidr":"10.2.0.0/24","gateway":"10.2.0.1","last":null,"allocations":{"a":"10.3.0.5"}}"#,
                "not allocatable",
            ),
            (
                r#"{"cidr":"10.2.0.0/24","gateway":"10.2.0.1","last":null,"allocations":{"a":"10.2.0.1"}}"#,
                "not allocatable",
            ),
            (
                r#"{"cidr":"10.2.0.0/24","gateway":"10.2.0.1","last":null,"allocations":{"a":"10.2.0.9","b":"10.2.0.9"}}"#,
                "allocated to both",
            ),
            (
                r#"{"cidr":"10.9.0.0/24","gateway":"10.9.0.1","last":null,"allocations":{}}"#,
                "belongs to pod CIDR 10.9.0.0/24",
            ),
        ];
        for (content, want) in cases {
            fs::write(dir.file(), content).unwrap();
            let err = Ipam::open(dir.file(), cidr, gw).unwrap_err().to_string();
            assert!(err.contains(want), "{content}: {err}");
            assert!(err.contains("ipam.json"), "error names the file: {err}");
        }
    }

    #[test]
    fn state_of_another_pod_cidr_is_set_aside_for_an_assigned_one() {
        let dir = TempDir::new("aside");
        let old = net("10.9.0.0/24");
        let mut ipam = Ipam::open(dir.file(), old, ip("10.9.0.1")).unwrap();
        ipam.allocate("a").unwrap();
        drop(ipam);
        let (cidr, gw) = (net("10.2.0.0/24"), ip("10.2.0.1"));
        assert!(
            Ipam::open(dir.file(), cidr, gw).is_err(),
            "open still refuses"
        );
        let (mut ipam, aside) = Ipam::open_for_assigned(dir.file(), cidr, gw).unwrap();
        assert_eq!(aside, Some(old));
        assert!(cidr.contains(&ipam.allocate("b").unwrap()));
        let mut kept = dir.file().into_os_string();
        kept.push(".10.9.0.0_24");
        assert!(PathBuf::from(kept).exists(), "the old state is kept beside");
        // The same range again: nothing set aside.
        drop(ipam);
        let (_, aside) = Ipam::open_for_assigned(dir.file(), cidr, gw).unwrap();
        assert_eq!(aside, None);
    }

    #[test]
    fn bad_configuration_is_rejected() {
        let dir = TempDir::new("config");
        for (cidr, gw) in [
            ("10.0.0.0/31", "10.0.0.0"),
            ("10.0.0.0/24", "10.0.0.0"),
            ("10.0.0.0/24", "10.0.0.255"),
            ("10.0.0.0/24", "10.0.1.1"),
        ] {
            assert!(
                matches!(
                    Ipam::open(dir.file(), net(cidr), ip(gw)),
                    Err(Error::InvalidConfig(_))
                ),
                "{cidr} {gw}"
            );
        }
        let mut ipam = Ipam::open(dir.file(), net("10.0.0.0/24"), ip("10.0.0.1")).unwrap();
        assert!(ipam.allocate("").is_err());
        ipam.allocate("a").unwrap();
        // The stored gateway must match: it is never allocated, so changing it could clash.
        let err = Ipam::open(dir.file(), net("10.0.0.0/24"), ip("10.0.0.2")).unwrap_err();
        assert!(err.to_string().contains("has gateway 10.0.0.1"), "{err}");
        // A host-bits CIDR is normalized rather than rejected.
        assert_eq!(
            Ipam::open(dir.file(), net("10.0.0.7/24"), ip("10.0.0.1"))
                .unwrap()
                .cidr(),
            net("10.0.0.0/24")
        );
    }

    #[test]
    fn unreadable_state_is_an_io_error() {
        let dir = TempDir::new("io");
        // A directory where the file should be.
        fs::create_dir_all(dir.file()).unwrap();
        let err = Ipam::open(dir.file(), net("10.0.0.0/24"), ip("10.0.0.1")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
