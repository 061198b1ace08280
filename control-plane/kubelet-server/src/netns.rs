//! Connections to `localhost:PORT` inside a pod's network namespace, for port-forward.
//!
//! The namespace is the pod sandbox's (the pause container's, which owns it). A throwaway
//! thread enters it with setns(2) and connects; the socket stays in that namespace whatever
//! thread later uses it, so it is handed to tokio and the thread ends.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use tokio::net::TcpStream;

/// How long a connection attempt may take (a listener that never accepts).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a forwarded connection goes: a pod's namespace in the server, a loopback port in
/// the sessions' tests. The error is the message for the client's error stream.
pub trait Dial: Clone + Send + Sync + 'static {
    fn dial(&self, port: u16) -> impl Future<Output = Result<TcpStream, String>> + Send;
}

impl Dial for PodNetns {
    fn dial(&self, port: u16) -> impl Future<Output = Result<TcpStream, String>> + Send {
        self.connect(port)
    }
}

/// Connections to 127.0.0.1 of this namespace: port-forward sessions in unit tests, without
/// a pod.
#[cfg(test)]
#[derive(Clone)]
pub struct Loopback;

#[cfg(test)]
impl Dial for Loopback {
    async fn dial(&self, port: u16) -> Result<TcpStream, String> {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("dial {port}: {e}"))
    }
}

/// Where a pod's ports are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetns {
    /// The pod sandbox's Docker container id (Kubernetes' messages name the sandbox).
    pub sandbox_id: String,
    /// A process in the namespace: the sandbox's init.
    pub pid: i64,
}

impl PodNetns {
    /// Connects to `localhost:port` in the pod, over IPv4 and then IPv6 as Kubernetes' CRI
    /// runtimes do. The error is the kubelet's message for the client's error stream.
    pub async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let target = self.clone();
        let spawned = std::thread::Builder::new()
            .name("portforward-dial".into())
            .spawn(move || {
                let _ = tx.send(target.connect_blocking(port));
            });
        if let Err(e) = spawned {
            return Err(self.forward_error(port, &format!("starting a dialing thread: {e}")));
        }
        let stream = rx
            .await
            .map_err(|_| self.forward_error(port, "the dialing thread ended"))??;
        stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
            .map_err(|e| self.forward_error(port, &e.to_string()))
    }

    /// Runs on a thread of its own (setns changes the calling thread's namespace).
    fn connect_blocking(&self, port: u16) -> Result<StdTcpStream, String> {
        let path = format!("/proc/{}/ns/net", self.pid);
        let ns = File::open(&path).map_err(|e| {
            self.forward_error(
                port,
                &format!("opening the pod's network namespace {path}: {e}"),
            )
        })?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
            self.forward_error(port, &format!("entering the pod's network namespace: {e}"))
        })?;
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let err4 = match StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let err6 = match StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        Err(self.forward_error(port, &refused_message(&self.sandbox_id, port, &err4, &err6)))
    }

    /// The kubelet's wrapping of a forwarding failure (its port-forward stream handler).
    pub fn forward_error(&self, port: u16, cause: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid : {cause}",
            self.sandbox_id
        )
    }
}

/// The CRI runtime's words (containerd) when neither address takes the connection; errors
/// read as Go prints them (`dial tcp4 127.0.0.1:80: connect: connection refused`).
pub fn refused_message(sandbox_id: &str, port: u16, v4: &io::Error, v6: &io::Error) -> String {
    format!(
        "failed to connect to localhost:{port} inside namespace {sandbox_id:?}, \
         IPv4: dial tcp4 127.0.0.1:{port}: {} IPv6 dial tcp6 [::1]:{port}: {} ",
        go_dial_error(v4),
        go_dial_error(v6)
    )
}

/// An OS error as Go's net package words it: `connect: ` and the lower-case errno text.
fn go_dial_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let desc = Errno::from_raw(code).desc();
            let mut chars = desc.chars();
            let lower = chars
                .next()
                .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
                .unwrap_or_default();
            format!("connect: {lower}")
        }
        None if e.kind() == io::ErrorKind::TimedOut => "i/o timeout".into(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_failures_like_kubernetes() {
        let refused = io::Error::from_raw_os_error(Errno::ECONNREFUSED as i32);
        let unreachable = io::Error::from_raw_os_error(Errno::EADDRNOTAVAIL as i32);
        assert_eq!(
            refused_message("abc", 80, &refused, &unreachable),
            "failed to connect to localhost:80 inside namespace \"abc\", IPv4: dial tcp4 \
             127.0.0.1:80: connect: connection refused IPv6 dial tcp6 [::1]:80: connect: \
             cannot assign requested address "
        );
        let ns = PodNetns {
            sandbox_id: "abc".into(),
            pid: 1,
        };
        assert_eq!(
            ns.forward_error(80, "boom"),
            "error forwarding port 80 to pod abc, uid : boom"
        );
    }
}
