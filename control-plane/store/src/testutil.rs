//! Test harness: real etcd servers (Debian's `etcd-server`, `/usr/bin/etcd`) on free loopback
//! ports with throw-away data directories, killed on drop. Used by this crate's tests and by
//! kproxy-tests (feature `testutil`).
//!
//! Without the binary the helpers return None so tests can skip, except under `CI=true`, where a
//! missing etcd is a failure (`cargo xtask setup` installs it).

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::{EtcdConfig, EtcdStore};

/// The etcd binary (`$KPROXY_ETCD`, else `/usr/bin/etcd`), or None (a skip) when it is missing
/// outside CI.
///
/// # Panics
/// Under `CI=true` when etcd is not installed.
pub fn etcd_binary() -> Option<PathBuf> {
    let path =
        std::env::var_os("KPROXY_ETCD").map_or_else(|| "/usr/bin/etcd".into(), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing (CI=true): run `cargo xtask setup` (Debian package etcd-server)",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing; `cargo xtask setup` installs it",
        path.display()
    );
    None
}

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "kproxy-{what}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create etcd scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (released at once; etcd binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// One etcd member process.
pub struct EtcdMember {
    name: String,
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<OsString>,
    client_url: String,
    log: PathBuf,
}

impl EtcdMember {
    /// The member's client URL (`http://127.0.0.1:PORT`).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// Kills the member with SIGKILL (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on its data (after [`EtcdMember::kill`]); see
    /// [`EtcdCluster::restart`] to also wait for it.
    pub fn start_again(&mut self) {
        self.kill();
        self.child = Some(launch(&self.bin, &self.args, &self.log));
    }

    /// Whether the member still runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The member's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An etcd cluster of one or more members on loopback, with its data in a temp dir.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    // Dropped after the members (field order), so etcd never writes into a removed dir.
    _dir: Scratch,
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one answers; None if etcd is not installed
    /// (outside CI).
    ///
    /// # Panics
    /// If etcd does not start or become healthy within 30 s (with its log).
    pub async fn start(size: usize) -> Option<EtcdCluster> {
        let bin = etcd_binary()?;
        let dir = Scratch::new("etcd");
        let token = dir
            .0
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                spawn(
                    &bin,
                    &dir.0,
                    &format!("m{i}"),
                    client,
                    peer,
                    &initial,
                    &token,
                )
            })
            .collect();
        let cluster = EtcdCluster { members, _dir: dir };
        cluster.wait_healthy().await;
        Some(cluster)
    }

    /// A single-member etcd.
    pub async fn single() -> Option<EtcdCluster> {
        Self::start(1).await
    }

    /// The client URLs of all members (also those killed).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A store config for this cluster (prefix `/registry`).
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.endpoints(),
            ..EtcdConfig::default()
        }
    }

    /// Connects a store to every member.
    ///
    /// # Panics
    /// If the config is refused.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(self.config())
            .await
            .expect("connect to test etcd")
    }

    /// Restarts member `i` on its data and waits until the cluster answers again.
    pub async fn restart(&mut self, i: usize) {
        self.members[i].start_again();
        self.wait_healthy().await;
    }

    pub fn member(&mut self, i: usize) -> &mut EtcdMember {
        &mut self.members[i]
    }

    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// The index of the member that is the raft leader now, if one is.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            let Ok(mut c) = etcd_client::Client::connect([m.client_url.as_str()], None).await
            else {
                continue;
            };
            if let Ok(status) = c.status().await
                && status
                    .header()
                    .is_some_and(|h| h.member_id() == status.leader())
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in self.members.iter().filter(|m| m.is_running()) {
            loop {
                let options = etcd_client::ConnectOptions::new()
                    .with_timeout(Duration::from_secs(1))
                    .with_require_leader(true);
                let ok = match etcd_client::Client::connect([m.client_url.as_str()], Some(options))
                    .await
                {
                    Ok(mut c) => c.get("health", None).await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not become healthy within 30s; log:\n{}",
                    m.name,
                    m.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn spawn(
    bin: &Path,
    dir: &Path,
    name: &str,
    client: u16,
    peer: u16,
    initial: &str,
    token: &str,
) -> EtcdMember {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = dir.join(format!("{name}.log"));
    let mut args: Vec<OsString> = Vec::new();
    let mut arg = |a: &str| args.push(a.into());
    for a in [
        "--name",
        name,
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        initial,
        "--initial-cluster-token",
        token,
        "--initial-cluster-state",
        "new",
        // The store's tests commit a 3000-op txn; etcd's default allows 128 ops.
        "--max-txn-ops",
        "10000",
        // Short raft timers: the election after a killed leader finishes quickly.
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
        "--logger",
        "zap",
        "--log-level",
        "warn",
    ] {
        arg(a);
    }
    args.push("--data-dir".into());
    args.push(dir.join(name).into_os_string());
    let child = launch(bin, &args, &log);
    EtcdMember {
        name: name.to_owned(),
        child: Some(child),
        bin: bin.to_owned(),
        args,
        client_url,
        log,
    }
}

fn launch(bin: &Path, args: &[OsString], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open etcd log");
    let err = out.try_clone().expect("clone etcd log handle");
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}
