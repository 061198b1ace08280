//! A whole one-node cluster with kproxy as its service proxy, on this machine's real kernel:
//! a real API server, controller manager (deployment, replicaset, endpointslice, lbipam),
//! scheduler and kubelet running Docker pods on a test bridge; `kproxy node` with the node's
//! kubeconfig, XDP/tc on a test uplink (a veth whose peer is a client namespace standing for
//! another host on the node's segment), the pod programs on the kubelet's bridge, socket-LB
//! scoped to a test cgroup, and its node endpoint (`kctl lb`) on a free loopback port.
//!
//! It runs in the machine's root namespace, so every address is a test-only range probed free
//! first (198.19.0.0/16, RFC 2544 benchmarking space): the service CIDR is one /24, the uplink
//! another, and the LoadBalancer pool a /28 of the uplink's /24 (the client's on-link
//! segment). kproxy keeps the service CIDR and the pool local (`unreachable` routes), so an
//! untranslated packet to either is refused on the host, never forwarded. Socket-LB never
//! attaches to the cgroup root. Tests check each target with [`assert_unreachable_here`] or
//! [`assert_route`] before sending anything to it.
//!
//! Dropping a [`Cluster`] (also when a test panics) stops kproxy first, then removes the
//! routes, pins, cgroup, uplink and client namespace, the kubelet's pods and bridge, the
//! control plane and its data directory.
//!
//! The fault suite kills and restarts single components with their state kept
//! ([`Cluster::restart_apiserver`], [`Cluster::restart_kproxy`], ...): the API server listens
//! on a fixed port of its own so every client's kubeconfig stays valid across a restart, and
//! [`Options::api_tmpfs`] puts its data directory on a small tmpfs that a test can fill.

use std::{
    ffi::OsString,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

use crate::{
    BpffsDir, Daemon, NetNs,
    apiserver::{ApiServer, TempDir},
    bin,
    control::{controller_manager, scheduler},
    eventually,
    kubelet::Kubelet,
    lab::{Cgroup, kproxy_dump},
    sh, unique,
};

/// A /24 in 198.19.0.0/16 that no address or route on this host falls into yet. Starts at a
/// per-process offset so concurrent test binaries pick different ones.
#[must_use]
pub fn free_net() -> u32 {
    u32::from(crate::free_slash24("198.19", 53))
}

/// A free TCP port on loopback (bound and released: good enough between tests).
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The uplink: a veth whose host end (`host_if`, in the root namespace, `198.19.NET.1`) is
/// kproxy's `--uplink`, and whose other end is `eth0` (`198.19.NET.2`) of the client
/// namespace. Deleting the host end on drop removes both (the namespace goes with its own
/// guard).
pub struct Uplink {
    pub host_if: String,
    pub client: NetNs,
    pub net: u32,
}

impl Uplink {
    #[must_use]
    pub fn new(net: u32) -> Self {
        let client = NetNs::new("kpt-cpc");
        let host_if = unique("kpu");
        assert!(
            host_if.len() <= 15,
            "{host_if} is too long for an interface"
        );
        let up = Self {
            host_if,
            client,
            net,
        };
        sh(Command::new("ip").args([
            "link",
            "add",
            &up.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            up.client.name(),
        ]));
        sh(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", up.host_ip()),
            "dev",
            &up.host_if,
        ]));
        sh(Command::new("ip").args(["link", "set", &up.host_if, "up"]));
        up.client.ip(&[
            "addr",
            "add",
            &format!("{}/24", up.client_ip()),
            "dev",
            "eth0",
        ]);
        up.client.ip(&["link", "set", "eth0", "up"]);
        up
    }

    /// The host end's address (the node's address on the segment: NodePorts answer here).
    #[must_use]
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.octet(), 1)
    }

    /// The client namespace's address.
    #[must_use]
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.octet(), 2)
    }

    fn octet(&self) -> u8 {
        u8::try_from(self.net).expect("a /24 number is a byte")
    }

    #[must_use]
    pub fn host_mac(&self) -> String {
        let link: Value = serde_json::from_str(&sh(Command::new("ip").args([
            "-j",
            "link",
            "show",
            "dev",
            &self.host_if,
        ])))
        .expect("ip -j link");
        link[0]["address"]
            .as_str()
            .expect("the uplink has a MAC")
            .to_string()
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

/// kproxy's `unreachable` routes for the test's ranges (`--keep-local`), removed on drop even
/// when kproxy could not remove them.
pub struct KeepLocal(pub Vec<String>);

impl Drop for KeepLocal {
    fn drop(&mut self) {
        for cidr in &self.0 {
            let _ = Command::new("ip")
                .args(["route", "del", "unreachable", cidr])
                .status();
        }
    }
}

/// Runs a command and returns its output whatever its exit status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `target` must meet the keep-local route `cidr` on this host: kproxy's `unreachable` route
/// for it is installed, and `ip route get` of `target` fails with EHOSTUNREACH, so an
/// untranslated packet to it is refused here instead of leaving by the default route.
pub fn assert_unreachable_here(target: Ipv4Addr, cidr: &str) {
    let routes = sh(Command::new("ip").args(["-4", "route", "show", "type", "unreachable"]));
    assert!(
        routes
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(cidr)),
        "unreachable route for {cidr} missing:\n{routes}"
    );
    let out = run(Command::new("ip").args(["-4", "route", "get", &target.to_string()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("No route to host"),
        "{target} must hit the unreachable route: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `ip route get` of `target`, run by `ip` (in some namespace), must leave through `dev`
/// without a gateway other than `via` (if given).
pub fn assert_route(mut ip: Command, target: Ipv4Addr, dev: &str, via: Option<Ipv4Addr>) {
    let out = sh(ip.args(["-4", "route", "get", &target.to_string()]));
    let words: Vec<&str> = out.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1).copied())
    };
    assert_eq!(
        field("dev"),
        Some(dev),
        "{target} must leave via {dev}: {out}"
    );
    assert_eq!(
        field("via"),
        via.map(|v| v.to_string()).as_deref(),
        "{target}: unexpected gateway: {out}"
    );
}

/// A tmpfs mounted on a fresh directory, unmounted on drop (also when a test panics).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `16m`) on `path` (created).
    #[must_use]
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("create the tmpfs mount point");
        sh(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path));
        Self(path.to_path_buf())
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there must not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// How [`Cluster::start_with`] sets the cluster up.
#[derive(Default)]
pub struct Options {
    /// The API server's data directory on a tmpfs of this size (`16m`), for tests that fill
    /// the store's disk ([`Cluster::api_tmpfs`]).
    pub api_tmpfs: Option<String>,
}

/// The running cluster. Fields are dropped in declaration order: kproxy first (it detaches
/// from the cgroup and uplink and removes its routes), the control plane and its files last.
pub struct Cluster {
    /// `kproxy node`, with its log.
    pub kproxy: Daemon,
    _keep_local: KeepLocal,
    bpffs: BpffsDir,
    cgroup: Cgroup,
    pub uplink: Uplink,
    pub kubelet: Kubelet,
    _scheduler: Daemon,
    controller_manager: Daemon,
    pub api: ApiServer,
    /// Dropped after the API server that writes there, before `dir` that holds it.
    api_tmpfs: Option<Tmpfs>,
    /// What restarts the API server, the controller manager and kproxy with.
    api_args: Vec<String>,
    cm_args: Vec<String>,
    kproxy_args: Vec<OsString>,
    /// 198.19.`svc_net`.0/24 is the service CIDR.
    pub svc_net: u32,
    /// kproxy's node endpoint port on 127.0.0.1 (`kctl lb NODE --port PORT`).
    pub serve_port: u16,
    svc_cidr: String,
    pool: String,
    dir: TempDir,
}

impl Cluster {
    /// Starts every component and returns once kproxy has done its initial sync and serves
    /// its node endpoint. `prefix` names the test's scratch directory and pins.
    #[must_use]
    pub fn start(prefix: &str) -> Self {
        Self::start_with(prefix, &Options::default())
    }

    /// [`Cluster::start`] with [`Options`].
    #[must_use]
    pub fn start_with(prefix: &str, options: &Options) -> Self {
        let svc_net = free_net();
        let up_net = free_net();
        let svc_cidr = format!("198.19.{svc_net}.0/24");
        // The pool is part of the uplink's /24 (the client's on-link segment), away from the
        // two addresses the veth ends use.
        let pool = format!("198.19.{up_net}.128/28");

        let dir = TempDir::new(prefix);
        let api_tmpfs = options
            .api_tmpfs
            .as_deref()
            .map(|size| Tmpfs::mount(&dir.path().join("apiserver-fs"), size));
        let api_dir = api_tmpfs
            .as_ref()
            .map_or_else(|| dir.path().to_path_buf(), |t| t.path().join("data"));
        std::fs::create_dir_all(&api_dir).expect("create the API server's data directory");
        // A port of its own (not :0), so that a restarted API server keeps its URL.
        let api_args: Vec<String> = [
            "--service-cidr",
            &svc_cidr,
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
        ]
        .map(String::from)
        .to_vec();
        let api = ApiServer::start(&api_dir, &strs(&api_args));
        let cm_args: Vec<String> = [
            "--controllers",
            "deployment,replicaset,endpointslice,lbipam",
            "--lb-pool",
            &pool,
            "--service-cidr",
            &svc_cidr,
        ]
        .map(String::from)
        .to_vec();
        let controller_manager = controller_manager(&api, &strs(&cm_args));
        let scheduler = scheduler(&api, &[]);
        let kubelet = Kubelet::start(&api, &[]);
        let uplink = Uplink::new(up_net);
        let cgroup = Cgroup::new();
        let bpffs = BpffsDir::new(prefix);
        let keep_local = KeepLocal(vec![svc_cidr.clone(), pool.clone()]);

        // kproxy authenticates as the kubelet's node.
        let kubeconfig: PathBuf = dir.path().join("node-kubeconfig");
        sh(Command::new(bin("kproxy-apiserver"))
            .args(["node-kubeconfig", &kubelet.node, "--out"])
            .arg(&kubeconfig)
            .args(["--server", &api.url, "--data-dir"])
            .arg(&api.data_dir));
        // The API server reaches the endpoint at the Node's InternalIP (the kubelet's
        // `--node-ip 127.0.0.1`) and this port.
        let serve_port = free_port();
        let mut kproxy_args: Vec<OsString> = vec!["--bpffs".into(), bpffs.path().into()];
        kproxy_args.extend(["node".into(), "--kubeconfig".into(), kubeconfig.into()]);
        kproxy_args.extend(["--node-name".into(), kubelet.node.clone().into()]);
        for cidr in &keep_local.0 {
            kproxy_args.extend(["--keep-local".into(), cidr.into()]);
        }
        // Plain unreachable routes (what `assert_unreachable_here` checks): tests share the
        // host's namespace, and one keep-local device per test would outlive a killed one.
        kproxy_args.extend(["--keep-local-dev".into(), "none".into()]);
        // One node: no pod CIDR to route; and kproxy's route sweep would remove another
        // test's host-gw routes (all kproxy routes share one protocol number).
        kproxy_args.push("--no-node-routes".into());
        kproxy_args.extend([
            "--serve-addr".into(),
            format!("127.0.0.1:{serve_port}").into(),
            "--serve-cert-dir".into(),
            dir.path().join("kproxy-pki").into(),
        ]);
        for arg in [
            "--uplink",
            &uplink.host_if,
            "--xdp-mode",
            "generic",
            "--pod-bridge",
            &kubelet.bridge,
            "--socket-lb-scope",
        ] {
            kproxy_args.push(arg.into());
        }
        kproxy_args.push(cgroup.path().into());
        let kproxy = spawn_kproxy(&kproxy_args);
        Self {
            kproxy,
            _keep_local: keep_local,
            bpffs,
            cgroup,
            uplink,
            kubelet,
            _scheduler: scheduler,
            controller_manager,
            api,
            api_tmpfs,
            api_args,
            cm_args,
            kproxy_args,
            svc_net,
            serve_port,
            svc_cidr,
            pool,
            dir,
        }
    }

    /// The admin kubeconfig (for kctl, kubectl and kube-rs clients).
    #[must_use]
    pub fn kubeconfig(&self) -> &Path {
        &self.api.kubeconfig
    }

    /// The node's name (the kubelet's and kproxy's).
    #[must_use]
    pub fn node(&self) -> &str {
        &self.kubelet.node
    }

    /// The service CIDR (ClusterIPs), a keep-local range.
    #[must_use]
    pub fn svc_cidr(&self) -> &str {
        &self.svc_cidr
    }

    /// The LoadBalancer pool (EXTERNAL-IPs), a keep-local range on the uplink's segment.
    #[must_use]
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The socket-LB cgroup: host processes in it get their connects translated.
    #[must_use]
    pub fn cgroup(&self) -> &Path {
        self.cgroup.path()
    }

    /// kproxy's pinned maps and links.
    #[must_use]
    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }

    /// A scratch directory removed with the cluster.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client namespace (another host on the uplink's segment).
    #[must_use]
    pub fn client(&self) -> &NetNs {
        &self.uplink.client
    }

    /// `program ARGS...` as a host process inside the socket-LB cgroup.
    #[must_use]
    pub fn host_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cgroup.cmd(program)
    }

    /// `program ARGS...` in the client namespace (outside the socket-LB cgroup: its traffic
    /// takes the uplink's per-packet path).
    #[must_use]
    pub fn client_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.uplink.client.cmd(program)
    }

    /// `kproxy dump -o json` rows of this cluster's datapath.
    #[must_use]
    pub fn dump(&self) -> Vec<Value> {
        kproxy_dump(self.bpffs.path())
    }

    /// The tmpfs under the API server's data directory ([`Options::api_tmpfs`]).
    #[must_use]
    pub fn api_tmpfs(&self) -> Option<&Path> {
        self.api_tmpfs.as_ref().map(Tmpfs::path)
    }

    /// SIGKILL to the API server: no chance to flush or close anything.
    pub fn kill_apiserver(&mut self) {
        self.api.daemon.kill();
    }

    /// Starts the API server again on the same data directory and port (kills it first if
    /// it still runs); returns once it is ready.
    pub fn restart_apiserver(&mut self) {
        self.kill_apiserver();
        let data_dir = self.api.data_dir.clone();
        let url = self.api.url.clone();
        self.api = ApiServer::start(&data_dir, &strs(&self.api_args));
        assert_eq!(self.api.url, url, "the restarted API server moved");
    }

    /// SIGKILL to the controller manager.
    pub fn kill_controller_manager(&mut self) {
        self.controller_manager.kill();
    }

    /// Starts the controller manager again with the same flags (kills it first if it still
    /// runs); returns once it is ready.
    pub fn restart_controller_manager(&mut self) {
        self.kill_controller_manager();
        self.controller_manager = controller_manager(&self.api, &strs(&self.cm_args));
    }

    /// SIGKILL to kproxy: its programs and maps stay pinned and keep serving.
    pub fn kill_kproxy(&mut self) {
        self.kproxy.kill();
    }

    /// Starts kproxy again with the same flags and pins (kills it first if it still runs);
    /// returns once it has synced and serves its node endpoint.
    pub fn restart_kproxy(&mut self) {
        self.kill_kproxy();
        self.kproxy = spawn_kproxy(&self.kproxy_args);
    }
}

/// Starts `kproxy ARGS` and waits for its initial sync and its node endpoint.
fn spawn_kproxy(args: &[OsString]) -> Daemon {
    let mut cmd = Command::new(bin("kproxy"));
    cmd.args(args).env("RUST_LOG", "info");
    let mut kproxy = Daemon::spawn_until_logged(cmd, "initial sync done");
    eventually("kproxy's node endpoint listening", || {
        kproxy.assert_running();
        kproxy.logged("listening endpoint=\"kproxy node endpoint\"")
    });
    kproxy
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
