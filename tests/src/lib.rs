//! Harness for privileged end-to-end tests: network namespaces and processes that clean up
//! after themselves (also when a test panics), the workspace binaries, and a patient
//! `eventually` instead of bare sleeps.
//!
//! Tests shell out to `ip` and `nsenter` here on purpose: the product itself uses netlink, and
//! the tests check it against the standard tools.

pub mod apiserver;
pub mod bigudp;
pub mod cluster;
pub mod control;
pub mod etcd;
pub mod kubectl;
pub mod kubelet;
pub mod kubelet_server;
pub mod lab;
pub mod multinode;
pub mod requests;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Whether privileged tests can run. Without root they are skipped with a loud message,
/// except under `CI=true`, where a missing privilege fails the test.
#[must_use]
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root (netns, eBPF) and CI=true forbids skipping"
    );
    eprintln!("\n!!!! SKIPPED {test}: needs root (netns, eBPF); run `cargo xtask test` as root\n");
    false
}

/// A name no other test (or test run) uses: `<prefix>-<pid>-<n>`.
#[must_use]
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and panics with its output if it fails; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop with everything inside it.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command run inside the namespace. `nsenter --net` changes only the network
    /// namespace (unlike `ip netns exec`, which also remounts /sys and hides bpffs).
    #[must_use]
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `f` on a thread inside the namespace (setns is per thread): for a test's own
    /// sockets there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name());
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        sh(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Creates a veth pair with one end in each namespace, addresses them and brings them up.
/// The links disappear with their namespaces.
pub fn veth_pair(a: &NetNs, a_if: &str, a_cidr: &str, b: &NetNs, b_if: &str, b_cidr: &str) {
    let tmp = unique("kpv");
    // Create in the root namespace under a unique name, then move: the final names only
    // need to be unique inside their own namespaces.
    let tmp_a = format!("va{}", &tmp[tmp.len().saturating_sub(10)..]);
    let tmp_b = format!("vb{}", &tmp[tmp.len().saturating_sub(10)..]);
    sh(Command::new("ip").args([
        "link",
        "add",
        &tmp_a,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &tmp_b,
        "netns",
        b.name(),
    ]));
    a.ip(&["link", "set", &tmp_a, "name", a_if]);
    b.ip(&["link", "set", &tmp_b, "name", b_if]);
    a.ip(&["addr", "add", a_cidr, "dev", a_if]);
    b.ip(&["addr", "add", b_cidr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A bpffs directory for one test's pinned maps, removed on drop.
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    pub fn new(prefix: &str) -> Self {
        Self {
            path: Path::new("/sys/fs/bpf").join(unique(prefix)),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        // bpffs supports unlink of pins and rmdir of empty directories.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process whose stderr is collected line by line; killed on drop.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// Spawns `cmd` and waits (see [`patience`]) until its log contains `ready`; panics with
    /// the log if it exits first.
    pub fn spawn_until_logged(cmd: Command, ready: &str) -> Self {
        let what = format!("{} to log {ready:?}", cmd.get_program().display());
        let mut d = Self::spawn(cmd);
        eventually(&what, || {
            d.assert_running();
            d.logged(ready)
        });
        d
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether any log line so far contains `needle`.
    #[must_use]
    pub fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// How many log lines so far contain `needle`.
    #[must_use]
    pub fn count_logged(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics if the process already exited (with its log in the message).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "daemon exited early ({status}); log:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().expect("wait for daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long `eventually` waits: `KPROXY_TEST_PATIENCE_MS`, default 20 s.
#[must_use]
pub fn patience() -> Duration {
    let ms = std::env::var("KPROXY_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    Duration::from_millis(ms)
}

/// Polls `check` until it returns true, panicking with `what` after [`patience`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < patience(),
            "timed out after {:?} waiting for: {what}",
            patience()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The async twin of [`eventually`]: awaits `check` until it returns true, panicking with
/// `what` after [`patience`].
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until_some(what, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await;
}

/// Like [`until`], for a check that yields a value once it holds.
pub async fn until_some<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < patience(),
            "timed out after {:?} waiting for: {what}",
            patience()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes on this machine (the
/// bench times a change in one process against its effect seen by another).
#[must_use]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Path of a workspace binary (built by `cargo xtask test` before the tests run).
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`; \
         `cargo xtask test` does this)",
        path.display()
    );
    path
}

/// The third octet N of a `{net16}.N.0/24` that no address or route on this host falls into
/// yet. Starts at a per-process offset (`salt` spreads the binaries) so concurrent test
/// binaries pick different ones.
#[must_use]
pub fn free_slash24(net16: &str, salt: u32) -> u8 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(salt);
    for _ in 0..256 {
        let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 256;
        let cidr = format!("{net16}.{n}.0/24");
        let addrs = sh(Command::new("ip").args(["-4", "-o", "addr", "show", "to", &cidr]));
        let routes =
            sh(Command::new("ip").args(["-4", "route", "show", "table", "all", "root", &cidr]));
        if addrs.trim().is_empty() && routes.trim().is_empty() {
            return u8::try_from(n).expect("below 256");
        }
    }
    panic!("no free /24 in {net16}.0.0/16");
}
