//! Socket-LB: the cgroup/sock_addr programs, attached to a cgroup v2 directory (normally
//! the root) with pinned links.

use std::{
    collections::BTreeSet,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use kproxy_common::{
    Backend, IPPROTO_UDP, MAP_BACKENDS, MAP_CONFIG, MAP_SOCK_REVNAT, PROG_SOCK4_CONNECT,
    PROG_SOCK4_GETPEERNAME, PROG_SOCK4_RECVMSG, PROG_SOCK4_SENDMSG, PROG_SOCK6_CONNECT,
    PROG_SOCK6_GETPEERNAME, PROG_SOCK6_RECVMSG, PROG_SOCK6_SENDMSG, SockRevNatKey, SockRevNatValue,
    config,
};

use super::{
    Datapath, DatapathError, cgroup_link, kernel_at_least,
    pin::{pin_link, remove_pin},
    program,
    sock_term::{self, Removed},
};

/// Socket-LB programs, attached to the cgroup v2 root: program, pin tag (`link_sock_TAG`)
/// and the kernel attach type (`enum bpf_attach_type`, linux/bpf.h), which tells whether a
/// pinned link is the one this program belongs in. The `*6` programs translate IPv4-mapped
/// addresses of IPv6 sockets only.
pub(super) const SOCK_PROGS: [(&str, &str, u32); 8] = [
    (PROG_SOCK4_CONNECT, "connect4", 10), // BPF_CGROUP_INET4_CONNECT
    (PROG_SOCK4_SENDMSG, "sendmsg4", 14), // BPF_CGROUP_UDP4_SENDMSG
    (PROG_SOCK4_RECVMSG, "recvmsg4", 19), // BPF_CGROUP_UDP4_RECVMSG
    (PROG_SOCK4_GETPEERNAME, "getpeername4", 29), // BPF_CGROUP_INET4_GETPEERNAME
    (PROG_SOCK6_CONNECT, "connect6", 11), // BPF_CGROUP_INET6_CONNECT
    (PROG_SOCK6_SENDMSG, "sendmsg6", 15), // BPF_CGROUP_UDP6_SENDMSG
    (PROG_SOCK6_RECVMSG, "recvmsg6", 20), // BPF_CGROUP_UDP6_RECVMSG
    (PROG_SOCK6_GETPEERNAME, "getpeername6", 30), // BPF_CGROUP_INET6_GETPEERNAME
];

impl Datapath {
    /// Attaches the socket-LB programs (`SOCK_PROGS`) to a
    /// cgroup v2 directory, normally the root so every process on the node is covered.
    /// Other programs already attached there keep running: on kernels >= 5.7 aya attaches
    /// through bpf_link, which always coexists with other links (and rejects any mode flag,
    /// hence `Single`, i.e. flags 0).
    ///
    /// As on the uplink, the links are pinned next to the maps (`link_sock_*`), so they stay
    /// attached while kproxy is down and `connect()`s to a service during a restart or after
    /// a crash are still translated (by the previous programs, from the pinned maps). A
    /// restarted kproxy swaps its programs into the pinned links atomically
    /// (`bpf_link_update`) instead of attaching a second time. A pinned link on another
    /// cgroup (`--cgroup` changed) is replaced, the new link being attached before the old
    /// one goes, so the cgroup is never without socket-LB.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let cgroup_err = |source| DatapathError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        };
        let dir = std::fs::File::open(cgroup).map_err(cgroup_err)?;
        // On cgroup v2 the id the kernel reports for a cgroup link is the inode number of
        // the cgroup's directory.
        let cgroup_id = dir.metadata().map_err(cgroup_err)?.ino();
        // Before 5.7 aya attaches with BPF_PROG_ATTACH, which cannot be pinned: keep those
        // attachments owned by this process (detached when it exits), as before pinning.
        let pinnable = kernel_at_least(5, 7);
        let mut reused = 0;
        for (name, tag, attach_type) in SOCK_PROGS {
            let pin = self.sock_link_pin(tag);
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let err = |what: String| {
                move |source| DatapathError::Program {
                    what,
                    program: name,
                    source,
                }
            };
            match cgroup_link::open(&pin) {
                Ok(Some(old)) if old.cgroup_id == cgroup_id && old.attach_type == attach_type => {
                    let new_prog = prog.fd().map_err(err("get the fd".into()))?;
                    match old.update(new_prog.as_fd()) {
                        Ok(()) => {
                            reused += 1;
                            continue;
                        }
                        Err(e) => tracing::warn!(
                            pin = %pin.display(), err = %e,
                            "cannot swap the program of the pinned socket-LB link; attaching anew"
                        ),
                    }
                }
                Ok(Some(old)) => tracing::info!(
                    pin = %pin.display(), old_cgroup_id = old.cgroup_id, %cgroup_id,
                    "pinned socket-LB link is on another (or a removed) cgroup; replacing it"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    pin = %pin.display(), err = %e,
                    "unusable pinned socket-LB link; replacing it"
                ),
            }
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(err(format!("attach to cgroup {}", cgroup.display())))?;
            if !pinnable {
                continue;
            }
            let link = prog
                .take_link(id)
                .map_err(err(format!("take the link on cgroup {}", cgroup.display())))?;
            // The old pin (if any) only goes now, after the new link is attached, so the
            // cgroup is never without socket-LB. A failed pin drops (and so detaches) the
            // new link; that must not go unnoticed.
            pin_link(link, &pin).map_err(|source| DatapathError::PinLink { path: pin, source })?;
        }
        self.sock_cgroup = Some(cgroup.to_path_buf());
        tracing::info!(
            cgroup = %cgroup.display(), reused_pinned_links = reused,
            "socket-LB attached (connect, sendmsg, recvmsg, getpeername; IPv4 and IPv4-mapped IPv6)"
        );
        Ok(())
    }

    /// Removes the pinned socket-LB links of a previous kproxy (socket-LB now off), which
    /// detaches those programs from their cgroup.
    pub fn detach_pinned_cgroup_links(&self) -> Result<usize, DatapathError> {
        let mut removed = 0;
        for (_, tag, _) in SOCK_PROGS {
            let pin = self.sock_link_pin(tag);
            if remove_pin(&pin).map_err(|source| DatapathError::PinLink { path: pin, source })? {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "socket-LB is off: pinned socket-LB links removed");
        }
        Ok(removed)
    }

    /// Terminates the sockets socket-LB connected to backends just removed from the maps
    /// (see `sock_term`); nothing while socket-LB is off. UDP sockets go at once; TCP ones
    /// after `TCP_GRACE`, and only if the backend is still gone then: requests in flight on
    /// short connections finish, and a backend that comes straight back (a pod re-created
    /// at the same address) keeps its connections. Failures are logged: the maps are right
    /// already, a socket left over only talks to a dead backend as before.
    pub(super) fn terminate_sockets(&self, removed: &BTreeSet<Removed>) {
        let Some(cgroup) = &self.sock_cgroup else {
            return;
        };
        // An id deleted while its address stays under another id is no removal.
        let live = live_backends(&self.bpffs_dir);
        let (udp_removed, tcp_removed): (BTreeSet<Removed>, BTreeSet<Removed>) = removed
            .difference(&live)
            .partition(|r| r.proto == IPPROTO_UDP);
        if !udp_removed.is_empty() {
            let (udp, scope) = match self.sock_term_inputs(&udp_removed) {
                Ok(v) => v,
                Err(err) => {
                    tracing::warn!(%err, "cannot read the socket rev-NAT map; UDP sockets kept");
                    (BTreeSet::new(), sock_term::Scope::default())
                }
            };
            log_terminated(sock_term::terminate(cgroup, scope, udp_removed, udp));
        }
        if tcp_removed.is_empty() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut at) = self.sock_removed_at.lock() {
            // Entries older than the grace are done with.
            at.retain(|_, t| now.duration_since(*t) < TCP_GRACE * 2);
            at.extend(tcp_removed.iter().map(|r| (*r, now)));
        }
        let scope = self
            .sock_term_inputs(&BTreeSet::new())
            .map(|v| v.1)
            .unwrap_or_default();
        let (cgroup, dir) = (cgroup.clone(), self.bpffs_dir.clone());
        let removed_at = self.sock_removed_at.clone();
        let spawned = std::thread::Builder::new()
            .name("sock-terminate-tcp".into())
            .spawn(move || {
                std::thread::sleep(TCP_GRACE);
                let live = live_backends(&dir);
                // Only backends still gone whose latest removal is this one: a backend
                // re-added and removed again meanwhile is left to that removal's thread.
                let latest = |r: &Removed| {
                    removed_at
                        .lock()
                        .map_or(true, |at| at.get(r).is_none_or(|t| *t <= now))
                };
                let gone: BTreeSet<Removed> = tcp_removed
                    .difference(&live)
                    .filter(|r| latest(r))
                    .copied()
                    .collect();
                if !gone.is_empty() {
                    log_terminated(sock_term::terminate(&cgroup, scope, gone, BTreeSet::new()));
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the TCP socket termination thread");
        }
    }

    /// The (cookie, backend address, port) of socket rev-NAT entries for removed UDP
    /// backends, and socket-LB's scope (its netns cookie, if limited, and cgroup).
    #[expect(clippy::type_complexity, reason = "a pair read together, used once")]
    fn sock_term_inputs(
        &self,
        removed: &BTreeSet<Removed>,
    ) -> Result<(BTreeSet<(u64, u32, u16)>, sock_term::Scope), aya::maps::MapError> {
        let mut udp = BTreeSet::new();
        if removed.iter().any(|r| r.proto == IPPROTO_UDP)
            && let Some(map) = self.ebpf.map(MAP_SOCK_REVNAT)
        {
            let revnat = HashMap::<&MapData, SockRevNatKey, SockRevNatValue>::try_from(map)?;
            for key in revnat.keys() {
                let k = key?;
                let r = Removed {
                    addr: k.addr,
                    port: k.port,
                    proto: IPPROTO_UDP,
                };
                if removed.contains(&r) {
                    udp.insert((k.cookie, k.addr, k.port));
                }
            }
        }
        let mut scope = sock_term::Scope::default();
        if let Some(map) = self.ebpf.map(MAP_CONFIG) {
            let cfg = Array::<&MapData, u32>::try_from(map)?;
            let pair = |lo, hi| -> Result<u64, aya::maps::MapError> {
                Ok((u64::from(cfg.get(&hi, 0)?) << 32) | u64::from(cfg.get(&lo, 0)?))
            };
            let c = pair(config::SOCK_LB_NETNS_LO, config::SOCK_LB_NETNS_HI)?;
            scope.netns = (c != 0).then_some(c);
            scope.cgroup = pair(config::SOCK_LB_CGROUP_LO, config::SOCK_LB_CGROUP_HI)?;
        }
        Ok((udp, scope))
    }

    /// Where the socket-LB link with pin name tag `tag` (see `SOCK_PROGS`) is pinned.
    fn sock_link_pin(&self, tag: &str) -> PathBuf {
        self.bpffs_dir.join(format!("link_sock_{tag}"))
    }
}

/// How long TCP connections to a removed backend may go on before they are destroyed.
const TCP_GRACE: Duration = Duration::from_secs(2);

fn log_terminated(result: std::io::Result<sock_term::Terminated>) {
    match result {
        Ok(t) if t.destroyed > 0 || t.failed > 0 => tracing::info!(
            destroyed = t.destroyed,
            failed = t.failed,
            namespaces = t.namespaces,
            "terminated sockets connected to removed backends"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot terminate sockets of removed backends"),
    }
}

/// The backends the pinned backends map holds now (empty if it cannot be read: the
/// removal was decided, its sockets go).
fn live_backends(dir: &Path) -> BTreeSet<Removed> {
    let Ok(map) = crate::pinned::open_pinned(dir, MAP_BACKENDS) else {
        return BTreeSet::new();
    };
    let Ok(backends) = HashMap::<MapData, u32, Backend>::try_from(aya::maps::Map::HashMap(map))
    else {
        return BTreeSet::new();
    };
    backends
        .iter()
        .filter_map(Result::ok)
        .map(|(_, b)| Removed {
            addr: b.addr,
            port: b.port,
            proto: b.proto,
        })
        .collect()
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` on hybrid ones such as these machines).
pub fn find_cgroup2_root() -> Result<PathBuf, DatapathError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| {
        DatapathError::Cgroup {
            path: "/proc/self/mountinfo".into(),
            source,
        }
    })?;
    // Fields: id parent major:minor root mountpoint options ... - fstype source superopts
    info.lines()
        .find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .ok_or(DatapathError::NoCgroup2)
}

/// The id (its directory's inode number) and depth below the cgroup v2 root of `dir`, a
/// cgroup v2 directory, for `Datapath::set_socket_lb_cgroup`. The directory is created
/// when missing (as a container runtime would, with the node's pods as `--cgroup-parent`),
/// so kproxy may start before the node's first pod.
pub fn cgroup_scope(dir: &Path) -> Result<(u64, u32), DatapathError> {
    let err = |source| DatapathError::Cgroup {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let canonical = dir.canonicalize().map_err(err)?;
    let root = find_cgroup2_root()?.canonicalize().map_err(err)?;
    let below = canonical.strip_prefix(&root).map_err(|_| {
        err(std::io::Error::other(format!(
            "not below the cgroup v2 root {}",
            root.display()
        )))
    })?;
    let level = u32::try_from(below.components().count()).unwrap_or(u32::MAX);
    if level == 0 {
        return Err(err(std::io::Error::other(
            "the cgroup v2 root itself: use --socket-lb-scope all",
        )));
    }
    let id = std::fs::metadata(&canonical).map_err(err)?.ino();
    Ok((id, level))
}
