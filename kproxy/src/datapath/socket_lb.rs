//! Socket-LB: the cgroup/sock_addr programs, attached to a cgroup v2 directory (normally
//! the root) with pinned links.

use std::{
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use kproxy_common::{
    PROG_SOCK4_CONNECT, PROG_SOCK4_GETPEERNAME, PROG_SOCK4_RECVMSG, PROG_SOCK4_SENDMSG,
};

use super::{
    Datapath, DatapathError, cgroup_link, kernel_at_least,
    pin::{pin_link, remove_pin},
    program,
};

/// Socket-LB programs, attached to the cgroup v2 root: program, pin tag (`link_sock_TAG`)
/// and the kernel attach type (`enum bpf_attach_type`, linux/bpf.h), which tells whether a
/// pinned link is the one this program belongs in.
pub(super) const SOCK_PROGS: [(&str, &str, u32); 4] = [
    (PROG_SOCK4_CONNECT, "connect4", 10), // BPF_CGROUP_INET4_CONNECT
    (PROG_SOCK4_SENDMSG, "sendmsg4", 14), // BPF_CGROUP_UDP4_SENDMSG
    (PROG_SOCK4_RECVMSG, "recvmsg4", 19), // BPF_CGROUP_UDP4_RECVMSG
    (PROG_SOCK4_GETPEERNAME, "getpeername4", 29), // BPF_CGROUP_INET4_GETPEERNAME
];

impl Datapath {
    /// Attaches the socket-LB programs (connect4, sendmsg4, recvmsg4, getpeername4) to a
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
        tracing::info!(
            cgroup = %cgroup.display(), reused_pinned_links = reused,
            "socket-LB attached (connect4, sendmsg4, recvmsg4, getpeername4)"
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

    /// Where the socket-LB link with pin name tag `tag` (see `SOCK_PROGS`) is pinned.
    fn sock_link_pin(&self, tag: &str) -> PathBuf {
        self.bpffs_dir.join(format!("link_sock_{tag}"))
    }
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
