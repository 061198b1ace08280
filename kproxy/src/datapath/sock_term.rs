//! Terminating the sockets socket-LB connected to a backend that is gone, so long-lived
//! clients move instead of talking to a dead address: a connected UDP socket sees
//! `ECONNABORTED` and reconnects (getting a live backend), a TCP connection is reset.
//! Unconnected UDP sockets need nothing: sendmsg4 translates every send afresh.
//!
//! This is netlink `sock_diag` (`SOCK_DESTROY`, `CONFIG_INET_DIAG_DESTROY`) from userspace:
//! aya 0.14 cannot load socket iterators nor call the `bpf_sock_destroy` kfunc. `sock_diag`
//! sees one network namespace, so a throwaway thread enters (setns) each namespace that has
//! a process in socket-LB's cgroup in turn and dumps, matches and destroys there.
//!
//! Which sockets: those whose peer is a removed backend's address and port. A UDP socket
//! also needs a socket rev-NAT entry for that backend under its cookie (so only sockets
//! socket-LB translated go); a TCP connection has no such entry (see `sock.rs`), so every
//! TCP socket to the removed backend in those namespaces goes, as in Cilium.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use kproxy_common::{IPPROTO_TCP, IPPROTO_UDP};

/// A removed backend: address and port in network byte order, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Removed {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
}

/// When each backend was last removed (shared with the delayed TCP termination threads).
pub type RemovedAt =
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<Removed, std::time::Instant>>>;

// linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_sockid`.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg` (the part read).
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// TCP states a client socket may be in while it holds its peer (ESTABLISHED, SYN_SENT,
/// FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING): not LISTEN, nor TIME_WAIT (no full socket).
const TCP_STATES: u32 = (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);
/// A connected UDP socket is "ESTABLISHED"; unconnected ones (CLOSE) move by themselves.
const UDP_STATES: u32 = 1 << 1;
/// The third word of an IPv4-mapped IPv6 address, as bytes.
const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// The cookie of the network namespace socket `fd` lives in (`SO_NETNS_COOKIE`, Linux 5.14):
/// the value `bpf_get_netns_cookie` gives the programs.
///
/// # Errors
/// The `getsockopt` error.
pub fn netns_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).expect("small");
    // SAFETY: valid fd; the kernel writes at most `len` bytes to `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// A socket from a `sock_diag` dump: its family and the raw `inet_diag_sockid`, which the
/// destroy request repeats (addresses, ports and cookie).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSock {
    pub family: u8,
    pub id: [u8; SOCKID_LEN],
}

impl DiagSock {
    /// The peer as an IPv4 address and port (network byte order), also when it is the
    /// IPv4-mapped peer of an IPv6 socket.
    #[must_use]
    pub fn peer_v4(&self) -> Option<(u32, u16)> {
        let dport = u16::from_ne_bytes([self.id[2], self.id[3]]);
        let dst = &self.id[20..36];
        let v4 = match i32::from(self.family) {
            libc::AF_INET => &dst[..4],
            libc::AF_INET6 if dst[..12] == V4_MAPPED => &dst[12..],
            _ => return None,
        };
        Some((u32::from_ne_bytes(v4.try_into().ok()?), dport))
    }

    /// The socket cookie (`bpf_get_socket_cookie`), as the dump reports it.
    #[must_use]
    pub fn cookie(&self) -> u64 {
        let lo = u32::from_ne_bytes(self.id[40..44].try_into().unwrap_or_default());
        let hi = u32::from_ne_bytes(self.id[44..48].try_into().unwrap_or_default());
        (u64::from(hi) << 32) | u64::from(lo)
    }
}

/// Whether `sock` (of protocol `proto`) is one to destroy: its peer is a removed backend,
/// and for UDP its cookie has a rev-NAT entry for that backend (`udp` holds (cookie,
/// addr, port) of those entries).
#[must_use]
pub fn should_destroy(
    sock: &DiagSock,
    proto: u8,
    removed: &BTreeSet<Removed>,
    udp: &BTreeSet<(u64, u32, u16)>,
) -> bool {
    let Some((addr, port)) = sock.peer_v4() else {
        return false;
    };
    if !removed.contains(&Removed { addr, port, proto }) {
        return false;
    }
    proto != IPPROTO_UDP || udp.contains(&(sock.cookie(), addr, port))
}

/// A netlink message: header then `body`.
fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + body.len()).expect("small message");
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// An `inet_diag_req_v2`.
#[must_use]
pub fn diag_request(family: u8, proto: u8, states: u32, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let mut r = Vec::with_capacity(REQ_LEN);
    r.extend_from_slice(&[family, proto, 0, 0]);
    r.extend_from_slice(&states.to_ne_bytes());
    r.extend_from_slice(id);
    r
}

/// What one buffer of netlink replies held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replies {
    pub socks: Vec<DiagSock>,
    /// An `NLMSG_ERROR` code (0 is an ack).
    pub error: Option<i32>,
    pub done: bool,
}

/// Parses the netlink messages in `buf`.
#[must_use]
pub fn parse_replies(mut buf: &[u8]) -> Replies {
    let mut out = Replies::default();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[..4].try_into().unwrap_or_default()) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let body = &buf[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => out.done = true,
            NLMSG_ERROR if body.len() >= 4 => {
                out.error = Some(i32::from_ne_bytes(body[..4].try_into().unwrap_or_default()));
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= MSG_LEN => {
                let mut id = [0; SOCKID_LEN];
                id.copy_from_slice(&body[4..4 + SOCKID_LEN]);
                out.socks.push(DiagSock {
                    family: body[0],
                    id,
                });
            }
            _ => {}
        }
        // Messages are 4-byte aligned.
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// A `NETLINK_SOCK_DIAG` socket of the calling thread's network namespace.
struct Diag {
    fd: OwnedFd,
    seq: u32,
}

impl Diag {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 0 })
    }

    /// The namespace's cookie (`bpf_get_netns_cookie`), to honour socket-LB's netns scope.
    fn netns_cookie(&self) -> io::Result<u64> {
        netns_cookie(self.fd.as_fd())
    }

    fn send(&mut self, ty: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let m = message(ty, flags, self.seq, body);
        // SAFETY: valid fd and buffer; a netlink socket sends to the kernel without address.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Replies> {
        // SAFETY: valid fd; the kernel writes at most `buf.len()` bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        Ok(parse_replies(&buf[..n]))
    }

    /// The sockets of `family`/`proto` in `states`.
    fn dump(&mut self, family: u8, proto: u8, states: u32) -> io::Result<Vec<DiagSock>> {
        let req = diag_request(family, proto, states, &[0; SOCKID_LEN]);
        self.send(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, &req)?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut socks = Vec::new();
        loop {
            let r = self.recv(&mut buf)?;
            socks.extend(r.socks);
            if let Some(e) = r.error.filter(|e| *e != 0) {
                return Err(io::Error::from_raw_os_error(-e));
            }
            if r.done {
                return Ok(socks);
            }
        }
    }

    /// Destroys one socket; a socket gone meanwhile is not an error.
    fn destroy(&mut self, proto: u8, sock: &DiagSock) -> io::Result<()> {
        let req = diag_request(sock.family, proto, u32::MAX, &sock.id);
        self.send(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, &req)?;
        let mut buf = [0u8; 512];
        match self.recv(&mut buf)?.error {
            Some(0) | None => Ok(()),
            Some(e) if -e == libc::ENOENT => Ok(()),
            Some(e) => Err(io::Error::from_raw_os_error(-e)),
        }
    }
}

/// Which sockets socket-LB translates (see `config::SOCK_LB_*`): those of the namespace
/// with cookie `netns` (`None`: every namespace), and those of processes under the cgroup
/// whose id is `cgroup` (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    pub netns: Option<u64>,
    pub cgroup: u64,
}

/// One network namespace with a process in the walked cgroup tree.
struct Namespace {
    path: PathBuf,
    file: File,
    /// A process in it is under the scope's cgroup.
    in_cgroup: bool,
}

/// The network namespaces of the processes in `cgroup` and its descendants, one open
/// handle per namespace; those with a process under the cgroup whose id is `scope_cgroup`
/// are marked.
fn namespaces(cgroup: &Path, scope_cgroup: u64) -> Vec<Namespace> {
    let mut seen = BTreeMap::new();
    let mut out: Vec<Namespace> = Vec::new();
    let mut dirs = vec![(cgroup.to_path_buf(), false)];
    while let Some((dir, above)) = dirs.pop() {
        // A cgroup's id is its directory's inode number on cgroup v2.
        let under = above
            || (scope_cgroup != 0
                && std::fs::metadata(&dir).is_ok_and(|m| m.ino() == scope_cgroup));
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
                // Processes come and go: one that exited is skipped.
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                let Ok(meta) = file.metadata() else { continue };
                if let Some(&i) = seen.get(&(meta.dev(), meta.ino())) {
                    let ns: &mut Namespace = &mut out[i];
                    ns.in_cgroup |= under;
                } else {
                    seen.insert((meta.dev(), meta.ino()), out.len());
                    out.push(Namespace {
                        path,
                        file,
                        in_cgroup: under,
                    });
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| (e.path(), under)),
            );
        }
    }
    out
}

/// What a termination pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Terminated {
    pub namespaces: usize,
    pub destroyed: usize,
    pub failed: usize,
}

/// Destroys, in every network namespace with a process in `cgroup` (only those in `scope`),
/// the sockets `should_destroy` picks. Runs on a thread of its own, which is discarded
/// afterwards (setns changes the calling thread's namespace).
pub fn terminate(
    cgroup: &Path,
    scope: Scope,
    removed: BTreeSet<Removed>,
    udp: BTreeSet<(u64, u32, u16)>,
) -> io::Result<Terminated> {
    let cgroup = cgroup.to_path_buf();
    std::thread::Builder::new()
        .name("sock-terminate".into())
        .spawn(move || terminate_here(&cgroup, scope, &removed, &udp))?
        .join()
        .map_err(|_| io::Error::other("the socket termination thread panicked"))
}

fn terminate_here(
    cgroup: &Path,
    scope: Scope,
    removed: &BTreeSet<Removed>,
    udp: &BTreeSet<(u64, u32, u16)>,
) -> Terminated {
    let mut done = Terminated::default();
    let protos: BTreeSet<u8> = removed.iter().map(|r| r.proto).collect();
    for Namespace {
        path,
        file: ns,
        in_cgroup,
    } in namespaces(cgroup, scope.cgroup)
    {
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let err = io::Error::last_os_error();
            tracing::debug!(ns = %path.display(), %err, "cannot enter a namespace to terminate sockets");
            continue;
        }
        let mut diag = match Diag::open() {
            Ok(d) => d,
            Err(err) => {
                tracing::warn!(ns = %path.display(), %err, "no sock_diag socket");
                continue;
            }
        };
        if let Some(want) = scope.netns
            && !in_cgroup
            && diag.netns_cookie().ok() != Some(want)
        {
            continue;
        }
        done.namespaces += 1;
        for &proto in &protos {
            let states = if proto == IPPROTO_TCP {
                TCP_STATES
            } else {
                UDP_STATES
            };
            for family in [libc::AF_INET, libc::AF_INET6] {
                let family = u8::try_from(family).expect("small family");
                let socks = match diag.dump(family, proto, states) {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::warn!(ns = %path.display(), %err, proto, family, "sock_diag dump failed");
                        continue;
                    }
                };
                for sock in socks
                    .iter()
                    .filter(|s| should_destroy(s, proto, removed, udp))
                {
                    match diag.destroy(proto, sock) {
                        Ok(()) => done.destroyed += 1,
                        Err(err) => {
                            done.failed += 1;
                            tracing::warn!(ns = %path.display(), %err, proto, "SOCK_DESTROY failed");
                        }
                    }
                }
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(family: i32, dst: [u8; 16], dport: u16, cookie: u64) -> DiagSock {
        let mut id = [0u8; SOCKID_LEN];
        id[2..4].copy_from_slice(&dport.to_be_bytes());
        id[20..36].copy_from_slice(&dst);
        id[40..48].copy_from_slice(&cookie.to_le_bytes());
        DiagSock {
            family: u8::try_from(family).unwrap(),
            id,
        }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&a);
        d
    }

    fn mapped(a: [u8; 4]) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[..12].copy_from_slice(&V4_MAPPED);
        d[12..].copy_from_slice(&a);
        d
    }

    const BE: [u8; 4] = [10, 244, 1, 2];

    fn removed(proto: u8) -> BTreeSet<Removed> {
        BTreeSet::from([Removed {
            addr: u32::from_ne_bytes(BE),
            port: 8080u16.to_be(),
            proto,
        }])
    }

    #[test]
    fn peer_of_v4_and_mapped_v6_sockets() {
        let want = Some((u32::from_ne_bytes(BE), 8080u16.to_be()));
        assert_eq!(sock(libc::AF_INET, v4(BE), 8080, 1).peer_v4(), want);
        assert_eq!(sock(libc::AF_INET6, mapped(BE), 8080, 1).peer_v4(), want);
        let mut real6 = mapped(BE);
        real6[0] = 0x20;
        assert_eq!(sock(libc::AF_INET6, real6, 8080, 1).peer_v4(), None);
        assert_eq!(
            sock(libc::AF_INET, v4(BE), 8080, 0x1234_5678_9abc).cookie(),
            0x1234_5678_9abc
        );
    }

    #[test]
    fn tcp_by_peer_udp_only_with_a_revnat_entry() {
        let s = sock(libc::AF_INET, v4(BE), 8080, 7);
        let other_port = sock(libc::AF_INET, v4(BE), 8081, 7);
        let none = BTreeSet::new();
        assert!(should_destroy(
            &s,
            IPPROTO_TCP,
            &removed(IPPROTO_TCP),
            &none
        ));
        assert!(!should_destroy(
            &other_port,
            IPPROTO_TCP,
            &removed(IPPROTO_TCP),
            &none
        ));
        // The removed backend is UDP: a TCP socket to it stays.
        assert!(!should_destroy(
            &s,
            IPPROTO_TCP,
            &removed(IPPROTO_UDP),
            &none
        ));
        // UDP: only with the socket's own rev-NAT entry.
        assert!(!should_destroy(
            &s,
            IPPROTO_UDP,
            &removed(IPPROTO_UDP),
            &none
        ));
        let entry = BTreeSet::from([(7, u32::from_ne_bytes(BE), 8080u16.to_be())]);
        assert!(should_destroy(
            &s,
            IPPROTO_UDP,
            &removed(IPPROTO_UDP),
            &entry
        ));
        let m = sock(libc::AF_INET6, mapped(BE), 8080, 7);
        assert!(should_destroy(
            &m,
            IPPROTO_UDP,
            &removed(IPPROTO_UDP),
            &entry
        ));
    }

    #[test]
    fn replies_round_trip() {
        let s = sock(libc::AF_INET, v4(BE), 8080, 9);
        let mut body = vec![s.family, 1, 0, 0];
        body.extend_from_slice(&s.id);
        body.extend_from_slice(&[0u8; 20]);
        let mut buf = message(SOCK_DIAG_BY_FAMILY, 2, 1, &body);
        buf.extend(message(NLMSG_DONE, 2, 1, &0i32.to_ne_bytes()));
        let r = parse_replies(&buf);
        assert_eq!(r.socks, vec![s]);
        assert!(r.done);
        let err = message(NLMSG_ERROR, 0, 2, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_replies(&err).error, Some(-libc::ENOENT));
        let req = diag_request(2, IPPROTO_UDP, UDP_STATES, &s.id);
        assert_eq!(req.len(), REQ_LEN);
        assert_eq!(&req[8..], &s.id);
    }
}
