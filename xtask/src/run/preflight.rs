//! Refuses to run without what the node needs, with one message each instead of a failure
//! deep inside a component: root, cgroup v2, eBPF, one run at a time, free ports.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Context as _, Result, bail};

use super::{CM_HEALTH, KPROXY_METRICS, SCHEDULER_HEALTH};
use crate::util::is_root;

/// Refuses to run without what the node needs, with one message each instead of a failure
/// deep inside a component.
pub fn preflight() -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask run` loads eBPF programs, creates network namespaces and runs Docker \
             containers: run it as root (e.g. `sudo -E cargo xtask run`)"
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
    {
        bail!("this host has no cgroup v2 hierarchy mounted: kproxy's socket-LB needs one");
    }
    // A one-entry array map: the smallest thing only a kernel with the bpf() syscall does.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key size
    attr[2] = 4; // value size
    attr[3] = 1; // max entries
    // SAFETY: BPF_MAP_CREATE reads `size_of_val(&attr)` bytes of the zero-padded attribute.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "this kernel refuses eBPF ({err}): kproxy needs a kernel built with \
             CONFIG_BPF_SYSCALL (and TCX, Linux ≥ 6.6), not in a container without CAP_BPF"
        );
    }
    let fd = libc::c_int::try_from(fd).expect("a descriptor fits c_int");
    // SAFETY: closing the descriptor the syscall just returned.
    unsafe { libc::close(fd) };
    Ok(())
}

/// An exclusive lock on [`super::LOCK_FILE`] for this run; a second run finds it held and says so.
pub struct RunLock(#[expect(dead_code, reason = "held for the flock")] std::fs::File);

impl RunLock {
    pub fn acquire(path: &str) -> Result<Self> {
        use std::io::{Read as _, Seek as _, Write as _};
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("open {path}"))?;
        // SAFETY: flock on a descriptor we own; the lock goes with the file.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "a cluster is already running here (`cargo xtask run`, pid {}): use it, or stop \
                 it with Ctrl-C in its terminal first",
                pid.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self(file))
    }
}

/// Fails naming the port and its owner if a component's address is taken.
pub fn check_ports() -> Result<()> {
    check_free(&PORTS)
}

/// The listening addresses of the components, and whose they are.
const PORTS: [(&str, &str); 6] = [
    ("127.0.0.1:6443", "the API server"),
    (CM_HEALTH, "the controller manager's health endpoint"),
    (SCHEDULER_HEALTH, "the scheduler's health endpoint"),
    ("0.0.0.0:10250", "the kubelet's log/exec endpoint"),
    ("0.0.0.0:10262", "kproxy's node endpoint (kctl lb)"),
    (KPROXY_METRICS, "kproxy's metrics"),
];

/// Refuses to go on if any of `wanted` (address, whose) is taken, naming its owner.
pub fn check_free(wanted: &[(&str, &str)]) -> Result<()> {
    for &(addr, what) in wanted {
        let sa: SocketAddr = addr.parse().expect("a socket address");
        if let Err(e) = TcpListener::bind(sa) {
            let owner = port_owner(sa.port())
                .map(|o| format!(" by {o}"))
                .unwrap_or_default();
            bail!(
                "port {} ({what}) is taken{owner}: {e}; stop that process first",
                sa.port()
            );
        }
    }
    Ok(())
}

/// `pid N (comm)` of the process listening on TCP `port`, if /proc tells.
fn port_owner(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // 0A: TCP_LISTEN.
            if lport == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_finds_the_lock_held() {
        let path =
            std::env::temp_dir().join(format!("kproxy-run-test-{}.lock", std::process::id()));
        let path = path.to_str().unwrap();
        let first = RunLock::acquire(path).unwrap();
        let err = RunLock::acquire(path).err().expect("the lock is held");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("already running") && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(first);
        drop(RunLock::acquire(path).expect("free again once the first run ends"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_taken_port_is_named_with_its_owner() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let err =
            check_free(&[(addr.as_str(), "the test's endpoint")]).expect_err("the port is taken");
        let msg = format!("{err:#}");
        let port = held.local_addr().unwrap().port().to_string();
        assert!(
            msg.contains(&format!("port {port} (the test's endpoint) is taken")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        check_free(&[(addr.as_str(), "the test's endpoint")]).expect("free once released");
    }
}
