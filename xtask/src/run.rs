//! `cargo xtask run`: set up, build, and run the one-node cluster in the foreground: the API
//! server, the controller manager, the scheduler, the kubelet (this host is master and worker
//! at once) and `kproxy node` on a lab uplink, one process each, supervised (a component that
//! dies is restarted); Ctrl-C stops them in order. State stays in /var/lib/kproxy so the next
//! run resumes the same cluster; `--reset` starts from scratch.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    setup::{SetupArgs, setup},
    util::{
        cargo, install_stop_handlers, is_root, output_of, run_cmd, step, stop_requested,
        workspace_root,
    },
};

/// The lab "client host": a network namespace reached through a veth that plays the node's
/// uplink, so nothing is ever attached to this machine's real network interface.
pub const LAB_NETNS: &str = "kproxy-client";
const LAB_UPLINK: &str = "kp-uplink";
const LAB_PEER: &str = "kp-client0";
const LAB_NODE_ADDR: &str = "172.31.0.1/24";
const LAB_CLIENT_ADDR: &str = "172.31.0.2/24";
const LAB_NODE_IP: &str = "172.31.0.1";
/// The controller manager's default LoadBalancer pool.
pub const LB_POOL: &str = "172.30.0.0/24";
/// The API server's default service CIDR.
const SERVICE_CIDR: &str = "10.96.0.0/12";

const LOG_DIR: &str = "/var/log/kproxy";
const STATE_DIR: &str = "/var/lib/kproxy";
const APISERVER_DATA: &str = "/var/lib/kproxy/apiserver";
/// The admin kubeconfig the scheduler and the controller manager use (not the user's, whose
/// current context may change).
pub const CONTROL_KUBECONFIG: &str = "/var/lib/kproxy/controller-manager/kubeconfig";
const KUBELET_DATA: &str = "/var/lib/kproxy/kubelet";
/// Held (flock) while a `cargo xtask run` runs; holds its pid.
const LOCK_FILE: &str = "/run/kproxy-run.lock";
/// kproxy's metrics and /healthz.
const KPROXY_METRICS: &str = "127.0.0.1:9962";
/// The controller manager's and the scheduler's /healthz and /readyz (Kubernetes' ports).
const CM_HEALTH: &str = "127.0.0.1:10257";
const SCHEDULER_HEALTH: &str = "127.0.0.1:10259";
/// The packages of the five components and kctl: all `run` builds (release, fat LTO: each
/// binary takes a while to link, so nothing else).
pub const COMPONENT_PACKAGES: [&str; 6] = [
    "kproxy",
    "kproxy-apiserver",
    "kproxy-controller-manager",
    "kproxy-scheduler",
    "kproxy-kubelet",
    "kctl",
];
/// Where the CLI goes on PATH.
const KCTL_LINK: &str = "/usr/local/bin/kctl";
/// The line `run` prints once the cluster serves; `cargo xtask bench cluster` waits for it.
pub const READY_LINE: &str = "run: cluster ready";

#[derive(Args)]
pub struct RunArgs {
    /// Attach to this existing interface instead of creating the lab uplink.
    #[arg(long)]
    uplink: Option<String>,
    /// XDP mode for the uplink: auto, driver or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: String,
    /// Start from scratch: delete the previous cluster's objects and state
    /// (/var/lib/kproxy), its pods' containers and kproxy's pinned maps.
    #[arg(long)]
    reset: bool,
}

fn ip(args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").args(args).stdout(Stdio::null()))
}

fn create_lab_uplink() -> Result<()> {
    step(&format!(
        "run: creating the lab uplink {LAB_UPLINK} ({LAB_NODE_ADDR}) to client netns \
         {LAB_NETNS} ({LAB_CLIENT_ADDR})"
    ));
    remove_lab_uplink();
    ip(&["netns", "add", LAB_NETNS])?;
    ip(&[
        "link", "add", LAB_UPLINK, "type", "veth", "peer", "name", LAB_PEER, "netns", LAB_NETNS,
    ])?;
    ip(&["addr", "add", LAB_NODE_ADDR, "dev", LAB_UPLINK])?;
    ip(&["link", "set", LAB_UPLINK, "up"])?;
    ip(&[
        "-n",
        LAB_NETNS,
        "addr",
        "add",
        LAB_CLIENT_ADDR,
        "dev",
        LAB_PEER,
    ])?;
    ip(&["-n", LAB_NETNS, "link", "set", LAB_PEER, "up"])?;
    ip(&["-n", LAB_NETNS, "link", "set", "lo", "up"])?;
    // The LoadBalancer pool is routed to the node from the client host, as a router in
    // front of a cluster would; kproxy's XDP program answers for the addresses.
    ip(&["-n", LAB_NETNS, "route", "add", LB_POOL, "via", LAB_NODE_IP])?;
    Ok(())
}

/// Removes what a previous run left behind; missing pieces are fine.
fn remove_lab_uplink() {
    let _ = Command::new("ip")
        .args(["link", "del", LAB_UPLINK])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("ip")
        .args(["netns", "del", LAB_NETNS])
        .stderr(Stdio::null())
        .status();
}

/// Refuses to run without what the node needs, with one message each instead of a failure
/// deep inside a component.
fn preflight() -> Result<()> {
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
    // SAFETY: closing the descriptor the syscall just returned.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// An exclusive lock on [`LOCK_FILE`] for this run; a second run finds it held and says so.
struct RunLock(#[allow(dead_code, reason = "held for the flock")] std::fs::File);

impl RunLock {
    fn acquire(path: &str) -> Result<Self> {
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
fn check_ports() -> Result<()> {
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

fn check_free(wanted: &[(&str, &str)]) -> Result<()> {
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

/// `kctl` on PATH: a link to this tree's release build (an existing file that is not our link
/// is left alone).
fn link_kctl(kctl: &Path) -> Result<()> {
    let link = Path::new(KCTL_LINK);
    match std::fs::read_link(link) {
        Ok(target) if target == kctl => return Ok(()),
        Ok(_) => std::fs::remove_file(link).with_context(|| format!("replace {KCTL_LINK}"))?,
        Err(_) if link.exists() => {
            println!(
                "run: {KCTL_LINK} exists and is not a link; leaving it (use {})",
                kctl.display()
            );
            return Ok(());
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(kctl, link).with_context(|| format!("link {KCTL_LINK}"))?;
    println!(
        "run: installed kctl on PATH ({KCTL_LINK} → {})",
        kctl.display()
    );
    Ok(())
}

/// `--reset`: the previous cluster's pods (containers), kproxy's pinned maps and all state.
fn reset(kproxy: &Path, node: &str) -> Result<()> {
    step(&format!(
        "run --reset: removing the previous cluster: its pods' containers, kproxy's pinned maps, {STATE_DIR}"
    ));
    let _ = Command::new(kproxy)
        .args(["cleanup", "--maps"])
        .stdout(Stdio::null())
        .status();
    let removed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(remove_pod_containers(node))?;
    println!("run --reset: removed {removed} pod containers");
    match std::fs::remove_dir_all(STATE_DIR) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {STATE_DIR}"));
        }
        _ => {}
    }
    Ok(())
}

/// Removes every container this node's kubelet made (labelled with the node: other
/// kubelets on this Docker engine, such as the tests', keep theirs).
async fn remove_pod_containers(node: &str) -> Result<usize> {
    use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
    let docker = crate::images::connect().await?;
    let label = format!("io.kproxy.node={node}");
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("list the kubelet's containers")?;
    let mut n = 0;
    for c in list {
        let Some(id) = c.id else { continue };
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .with_context(|| format!("remove container {id}"))?;
        n += 1;
    }
    Ok(n)
}

/// One supervised process: its command line, log and the line that says it is ready.
struct Component {
    name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    log: String,
    ready: &'static str,
    child: Option<Child>,
    /// Where this start's part of the (appended) log begins.
    log_offset: u64,
    started: Instant,
    /// Restarts in a row of a component that died soon after starting.
    quick_deaths: u32,
    retry_at: Option<Instant>,
    /// Restarted by the supervisor at this time, not yet ready.
    restarting: Option<Instant>,
}

impl Component {
    fn new(
        name: &'static str,
        bin: PathBuf,
        args: &[&str],
        log: &str,
        ready: &'static str,
    ) -> Self {
        Self {
            name,
            bin,
            args: args.iter().map(|a| (*a).to_string()).collect(),
            env: Vec::new(),
            log: format!("{LOG_DIR}/{log}"),
            ready,
            child: None,
            log_offset: 0,
            started: Instant::now(),
            quick_deaths: 0,
            retry_at: None,
            restarting: None,
        }
    }

    fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(LOG_DIR).with_context(|| format!("create {LOG_DIR}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log))?;
        self.log_offset = log.metadata().map_or(0, |m| m.len());
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: the terminal's Ctrl-C reaches only `run`, which stops
            // the components in order.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it makes the component die with `run` (even
        // if `run` is killed) instead of outliving it unsupervised.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("start {}", self.bin.display()))?,
        );
        self.started = Instant::now();
        Ok(())
    }

    /// Whether this start's part of the log has the ready line yet.
    fn logged_ready(&self) -> bool {
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return false;
        };
        use std::io::Seek as _;
        if f.seek(std::io::SeekFrom::Start(self.log_offset)).is_err() {
            return false;
        }
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(self.ready))
    }

    /// The exit status if the process ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("run: {} did not stop in {grace:?}; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until every component in `comps` logged its ready line (30 s at most each).
fn wait_ready(comps: &mut [&mut Component]) -> Result<()> {
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..comps.len()).collect();
    while !pending.is_empty() {
        if stop_requested() {
            bail!("interrupted while starting");
        }
        let mut still = Vec::new();
        for i in pending {
            let c = &mut comps[i];
            if let Some(status) = c.exited() {
                bail!("{} exited while starting ({status}); see {}", c.name, c.log);
            }
            if !c.logged_ready() {
                still.push(i);
            }
        }
        pending = still;
        if started.elapsed() > Duration::from_secs(30) {
            let names: Vec<&str> = pending.iter().map(|&i| comps[i].name).collect();
            bail!("not ready after 30 s: {}; see {LOG_DIR}/", names.join(", "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// This host's node name, as the kubelet derives it.
fn node_name() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read the host name")?
        .trim()
        .to_lowercase())
}

/// Writes a kubeconfig with `kproxy-apiserver SUBCOMMAND [ARG] --out PATH`.
fn write_kubeconfig(apiserver: &Path, what: &[&str], out: &str) -> Result<()> {
    run_cmd(
        Command::new(apiserver)
            .args(what)
            .args(["--out", out, "--data-dir", APISERVER_DATA])
            .stdout(Stdio::null()),
    )
    .with_context(|| format!("write {out} (kproxy-apiserver {})", what.join(" ")))
}

/// Waits until the Node object says Ready and the API server and kproxy answer their health
/// checks.
fn wait_healthy(node: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(CONTROL_KUBECONFIG)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let started = Instant::now();
        loop {
            let ready = match nodes.get_opt(node).await? {
                Some(n) => n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
                None => false,
            };
            let readyz = client
                .request_text(http::Request::get("/readyz").body(Vec::new())?)
                .await
                .is_ok_and(|t| t.trim() == "ok");
            let ok = |addr: &str, path: &str| {
                crate::util::http_get(
                    addr.parse().expect("a socket address"),
                    path,
                    Duration::from_secs(1),
                )
                .is_ok_and(|(status, _)| status == 200)
            };
            let cm = ok(CM_HEALTH, "/readyz");
            let sched = ok(SCHEDULER_HEALTH, "/readyz");
            let kproxy = ok(KPROXY_METRICS, "/healthz");
            if ready && readyz && cm && sched && kproxy {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "not healthy after 30 s: node Ready {ready}, API server /readyz {readyz}, \
                     controller manager /readyz {cm}, scheduler /readyz {sched}, kproxy \
                     /healthz {kproxy}; see {LOG_DIR}/"
                );
            }
            if stop_requested() {
                bail!("interrupted while starting");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

pub fn run(args: &RunArgs) -> Result<()> {
    let t0 = Instant::now();
    preflight()?;
    let _lock = RunLock::acquire(LOCK_FILE)?;
    // From here Ctrl-C / SIGTERM only set a flag: `run` stops what it started, in order.
    install_stop_handlers();
    check_ports()?;
    setup(&SetupArgs::default())?;
    step(
        "run: building the five components and kctl (release, link-time optimised: the first build takes several minutes; includes the eBPF programs)",
    );
    run_cmd(
        cargo()
            .args(["build", "--release", "--bins"])
            .args(COMPONENT_PACKAGES.iter().flat_map(|p| ["-p", p])),
    )?;
    if stop_requested() {
        bail!("interrupted");
    }
    let bin_dir: PathBuf = workspace_root().join("target/release");
    let kproxy = bin_dir.join("kproxy");
    let apiserver_bin = bin_dir.join("kproxy-apiserver");
    let node = node_name()?;
    if args.reset {
        reset(&kproxy, &node)?;
    }
    link_kctl(&bin_dir.join("kctl"))?;

    let uplink = if let Some(iface) = &args.uplink {
        if output_of(Command::new("ip").args(["link", "show", iface])).is_none() {
            bail!("interface {iface} does not exist");
        }
        iface.clone()
    } else {
        create_lab_uplink()?;
        LAB_UPLINK.to_string()
    };
    let node_kubeconfig = format!("{KUBELET_DATA}/kubeconfig");
    let mut comps = [
        Component::new(
            "the API server",
            apiserver_bin.clone(),
            &[
                "serve",
                "--data-dir",
                APISERVER_DATA,
                "--bind",
                "127.0.0.1:6443",
            ],
            "apiserver.log",
            "API server ready",
        ),
        Component::new(
            "the controller manager",
            bin_dir.join("kproxy-controller-manager"),
            &["--kubeconfig", CONTROL_KUBECONFIG],
            "controller-manager.log",
            "controller manager ready",
        ),
        Component::new(
            "the scheduler",
            bin_dir.join("kproxy-scheduler"),
            &["--kubeconfig", CONTROL_KUBECONFIG],
            "scheduler.log",
            "scheduler ready",
        ),
        Component::new(
            "the kubelet",
            bin_dir.join("kproxy-kubelet"),
            &[
                "--kubeconfig",
                &node_kubeconfig,
                "--data-dir",
                KUBELET_DATA,
                "--node-name",
                &node,
            ],
            "kubelet.log",
            "kubelet ready",
        ),
        Component::new(
            "kproxy",
            kproxy.clone(),
            &[
                "node",
                "--kubeconfig",
                &node_kubeconfig,
                "--node-name",
                &node,
                "--uplink",
                &uplink,
                "--xdp-mode",
                &args.xdp_mode,
                // Pod veths get the per-packet programs as the kubelet creates them;
                // socket-LB stays in the host's namespace, so the lab client namespace
                // (another host) takes the uplink path.
                "--pod-bridge",
                "kbr0",
                "--socket-lb-scope",
                "host",
                "--metrics-addr",
                KPROXY_METRICS,
            ],
            "kproxy.log",
            "initial sync done",
        ),
    ];
    // The controller manager and the scheduler use mimalloc, which commits its first arena
    // at once: 11-13 MB each of untouched memory at idle (measured: 13.1 → 1.7 MB anonymous
    // for the scheduler). Committing on demand changes nothing else; the variable must be
    // set before the process's first allocation, so it goes in the environment.
    for c in comps
        .iter_mut()
        .filter(|c| matches!(c.name, "the controller manager" | "the scheduler"))
    {
        c.env.push(("MIMALLOC_ARENA_EAGER_COMMIT", "0"));
    }
    let started = start_all(&mut comps, &apiserver_bin, &node, &node_kubeconfig, &uplink);
    if let Err(e) = started {
        stop_all(&mut comps, &kproxy, args.uplink.is_none());
        return Err(e);
    }
    println!(
        "{READY_LINE} in {:.2} s: node {node} is Ready, all components healthy",
        t0.elapsed().as_secs_f64()
    );
    print_components(&comps);
    print_next_steps(&node, args.uplink.is_none());

    supervise(&mut comps);
    stop_all(&mut comps, &kproxy, args.uplink.is_none());
    Ok(())
}

/// Starts the API server, then the others side by side, and waits until the cluster serves.
fn start_all(
    comps: &mut [Component; 5],
    apiserver_bin: &Path,
    node: &str,
    node_kubeconfig: &str,
    uplink: &str,
) -> Result<()> {
    let [api, cm, sched, kubelet, kproxy] = comps;
    step(&format!(
        "run: starting the API server on https://127.0.0.1:6443 (state {APISERVER_DATA}, log {})",
        api.log
    ));
    api.spawn()?;
    wait_ready(&mut [&mut *api])?;
    println!(
        "run: API server ready; kubeconfig context `kproxy` is current (kctl and kubectl use it)"
    );
    write_kubeconfig(apiserver_bin, &["admin-kubeconfig"], CONTROL_KUBECONFIG)?;
    write_kubeconfig(apiserver_bin, &["node-kubeconfig", node], node_kubeconfig)?;
    step(&format!(
        "run: starting the controller manager (LoadBalancer pool {LB_POOL}, pod CIDRs from \
         10.244.0.0/16), the scheduler, the kubelet for node {node} (bridge kbr0, state \
         {KUBELET_DATA}) and kproxy node on {uplink} (socket-LB for this host's namespace, tc \
         on pod veths, XDP + tc on the uplink); logs in {LOG_DIR}/"
    ));
    for c in [&mut *cm, &mut *sched, &mut *kubelet, &mut *kproxy] {
        c.spawn()?;
    }
    wait_ready(&mut [cm, sched, kubelet, kproxy])?;
    wait_healthy(node)
}

/// Restarts a component that exits until Ctrl-C; one that keeps dying soon after starting
/// waits 1, 2, 4 … 30 s between attempts.
fn supervise(comps: &mut [Component]) {
    while !stop_requested() {
        for c in comps.iter_mut() {
            if let Some(status) = c.exited() {
                c.restarting = None;
                let lived = c.started.elapsed();
                c.quick_deaths = if lived < Duration::from_secs(30) {
                    c.quick_deaths + 1
                } else {
                    0
                };
                let delay = restart_delay(c.quick_deaths);
                println!(
                    "run: {} exited ({status}) after {:.1} s; restarting it{} (log {})",
                    c.name,
                    lived.as_secs_f64(),
                    if delay.is_zero() {
                        String::new()
                    } else {
                        format!(" in {} s", delay.as_secs())
                    },
                    c.log
                );
                c.retry_at = Some(Instant::now() + delay);
            }
            if c.child.is_none() && c.retry_at.is_some_and(|t| Instant::now() >= t) {
                c.retry_at = None;
                match c.spawn() {
                    Ok(()) => c.restarting = Some(Instant::now()),
                    Err(e) => {
                        println!("run: restarting {} failed: {e:#}", c.name);
                        c.retry_at = Some(Instant::now() + Duration::from_secs(5));
                    }
                }
            }
            // Readiness of a restarted component is polled here, not waited for, so the
            // others stay watched meanwhile.
            if let Some(since) = c.restarting {
                if c.logged_ready() {
                    c.restarting = None;
                    println!("run: {} is running again", c.name);
                } else if since.elapsed() > Duration::from_secs(30) {
                    println!(
                        "run: {} did not become ready in 30 s; restarting it (log {})",
                        c.name, c.log
                    );
                    c.restarting = None;
                    if let Some(mut child) = c.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    c.quick_deaths += 1;
                    c.retry_at = Some(Instant::now() + restart_delay(c.quick_deaths));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No wait for a component that ran a while; then 1, 2, 4 … 30 s while it keeps dying soon
/// after starting.
fn restart_delay(quick_deaths: u32) -> Duration {
    match quick_deaths {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 2).min(5)).min(Duration::from_secs(30)),
    }
}

/// Stops kproxy first (and detaches its programs; its pinned maps stay for the next run),
/// then the kubelet (its pods keep running and are adopted next time), the scheduler, the
/// controller manager and the API server; removes the lab uplink and the keep-local routes.
fn stop_all(comps: &mut [Component], kproxy: &Path, lab: bool) {
    println!("\nrun: stopping the cluster");
    for c in comps.iter_mut().rev() {
        c.stop(Duration::from_secs(15));
        if c.name == "kproxy" {
            let _ = Command::new(kproxy)
                .arg("cleanup")
                .stdout(Stdio::null())
                .status();
        }
    }
    for cidr in [SERVICE_CIDR, LB_POOL] {
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", cidr])
            .stderr(Stdio::null())
            .status();
    }
    if lab {
        remove_lab_uplink();
    }
    println!(
        "run: stopped; pods keep running in Docker and state stays in {STATE_DIR}: the next \
         `cargo xtask run` resumes this cluster (`--reset` starts from scratch)"
    );
}

/// What runs where: one line per component.
fn print_components(comps: &[Component]) {
    let serves = |name: &str| match name {
        "the API server" => "https://127.0.0.1:6443",
        "the controller manager" => "health http://127.0.0.1:10257",
        "the scheduler" => "health http://127.0.0.1:10259",
        "the kubelet" => "logs/exec :10250 (via the API server)",
        _ => "metrics http://127.0.0.1:9962, kctl lb :10262",
    };
    println!();
    for c in comps {
        let pid = c.child.as_ref().map_or(0, Child::id);
        println!(
            "  {:<24} pid {pid:<8} {:<40} {}",
            c.name.trim_start_matches("the "),
            serves(c.name),
            c.log
        );
    }
}

fn print_next_steps(node: &str, lab: bool) {
    println!("\nThis host is node {node} (master and worker). Logs: {LOG_DIR}/*.log");
    println!("Try, in another terminal:");
    println!("  kctl create deployment httpd --image=httpd");
    println!("  kctl expose deployment httpd --type=LoadBalancer --port=80");
    println!("  kctl get svc httpd          # CLUSTER-IP and EXTERNAL-IP (from {LB_POOL})");
    println!("  curl http://<CLUSTER-IP>/   # balanced by kproxy's socket-LB");
    println!("  curl http://<EXTERNAL-IP>/  # the LoadBalancer address, from the host too");
    if lab {
        println!(
            "  ip netns exec {LAB_NETNS} curl http://<EXTERNAL-IP>/   # from another host: XDP + tc"
        );
    }
    println!("  kctl scale deployment httpd --replicas=3; kctl lb   # the service table, counters");
    println!("  kctl bench svc/httpd        # service hop vs pod-direct: connections/s, latency");
    println!("  kctl rollout restart deployment httpd; kctl rollout status deployment httpd");
    println!("  kubectl get svc,deploy,pods # the real kubectl (context `kproxy`)");
    println!("Ctrl-C stops the cluster (pods keep running and are adopted next time).\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_grow_to_half_a_minute() {
        let d: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, [0, 0, 1, 2, 4, 8, 16, 30, 30]);
    }

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
