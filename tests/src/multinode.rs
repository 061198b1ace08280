//! A cluster of several nodes on this machine's real kernel, as `cargo xtask run --nodes N`
//! builds it: the host is node 1 (master and worker), every further node is a network
//! namespace standing for another host, with its own kubelet and `kproxy node` started inside
//! it, the same binaries a real second machine runs.
//!
//! All nodes and a client namespace share one L2 segment, the LAN: a bridge in a namespace of
//! its own, with a veth port to the host (kproxy's uplink there, `198.19.L.1`), to the client
//! (`.2`) and to each worker's `eth0` (`.12`, `.13`, ...: node K at `.(10+K)`). The API server also binds the host's
//! LAN address, which the workers' kubeconfigs name. Pod CIDRs come from the controller
//! manager's node IPAM (`/26`s of a probed-free `10.252.N.0/24`). Each worker's pods run under
//! a Docker cgroup parent of their own; its kproxy runs with `--socket-lb-scope host
//! --socket-lb-cgroup <that cgroup>` as on a real node: attached at the cgroup v2 root, it
//! translates only sockets of the worker's namespace and of its pods. The host node's kproxy,
//! in the machine's own namespace, is scoped to a test cgroup instead (never the whole host).
//!
//! Dropping a [`MultiCluster`] (also on panic) stops every kproxy and kubelet, removes the
//! workers' pods' containers, their cgroups (every hierarchy), bpffs directories and
//! namespaces, then the LAN, the host node and the control plane.

use std::{
    ffi::OsString,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    BpffsDir, Daemon, NetNs,
    apiserver::{ApiServer, TempDir},
    bin,
    cluster::{KeepLocal, free_net, free_port},
    control::{controller_manager, scheduler},
    eventually,
    kubelet::{Kubelet, Placement},
    lab::Cgroup,
    sh, unique,
};

/// The LAN: a bridge in its own namespace joining the host, the client and the workers.
pub struct Lan {
    /// The host's port (kproxy's uplink on the host node), `198.19.net.1/24`.
    pub host_if: String,
    pub net: u32,
    ns: NetNs,
}

impl Lan {
    #[must_use]
    pub fn new(net: u32) -> Self {
        let ns = NetNs::new("kpt-lan");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        let host_if = unique("kpl");
        assert!(
            host_if.len() <= 15,
            "{host_if} is too long for an interface"
        );
        let lan = Self { host_if, net, ns };
        let port = port_name();
        sh(Command::new("ip").args([
            "link",
            "add",
            &lan.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            lan.ns.name(),
        ]));
        lan.enslave(&port);
        sh(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", lan.addr(1)),
            "dev",
            &lan.host_if,
        ]));
        sh(Command::new("ip").args(["link", "set", &lan.host_if, "up"]));
        lan
    }

    /// `198.19.net.host`.
    #[must_use]
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, u8::try_from(self.net).expect("a byte"), host)
    }

    /// Connects namespace `ns` to the LAN as `eth0` with address `198.19.net.host/24`.
    pub fn attach(&self, ns: &NetNs, host: u8) {
        let tmp = port_name();
        let port = port_name();
        sh(Command::new("ip").args([
            "link",
            "add",
            &tmp,
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.ns.name(),
        ]));
        ns.ip(&["link", "set", &tmp, "name", "eth0"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", self.addr(host)),
            "dev",
            "eth0",
        ]);
        ns.ip(&["link", "set", "eth0", "up"]);
        self.enslave(&port);
    }

    fn enslave(&self, port: &str) {
        self.ns.ip(&["link", "set", port, "master", "br0"]);
        self.ns.ip(&["link", "set", port, "up"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // The namespace goes with its own guard (and the LAN ends of every veth with it).
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

/// A name for one end of a LAN veth, unique and short enough for an interface.
fn port_name() -> String {
    let u = unique("p");
    format!("lp{}", &u[u.len().saturating_sub(12)..])
}

/// A Docker cgroup parent (`/NAME`) for one node's pods: created in the cgroup v2 hierarchy
/// (kproxy's `--socket-lb-cgroup`); on drop removed from every hierarchy runc used.
pub struct PodCgroup {
    name: String,
    v2: PathBuf,
}

impl PodCgroup {
    #[must_use]
    pub fn new() -> Self {
        let probe = Cgroup::new();
        let root = probe
            .path()
            .parent()
            .expect("a cgroup below the root")
            .to_path_buf();
        drop(probe);
        let name = unique("kpt-pods");
        let v2 = root.join(&name);
        std::fs::create_dir(&v2).unwrap_or_else(|e| panic!("mkdir {}: {e}", v2.display()));
        Self { name, v2 }
    }

    /// Docker's `--cgroup-parent` form.
    #[must_use]
    pub fn parent(&self) -> String {
        format!("/{}", self.name)
    }

    /// The cgroup v2 directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.v2
    }
}

impl Default for PodCgroup {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes the empty directories under and including `dir`, deepest first (cgroupfs allows
/// rmdir of an empty cgroup only).
fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        rmdir_tree(&self.v2);
        // cgroup v1 controllers (Docker's cgroupfs driver) get the parent too.
        if let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") {
            for m in mounts.flatten() {
                let dir = m.path().join(&self.name);
                if dir.exists() {
                    rmdir_tree(&dir);
                }
            }
        }
    }
}

/// What every node's kproxy and kubelet share.
struct Shared<'a> {
    api: &'a ApiServer,
    /// The API server as the workers reach it (its LAN address).
    lan_url: String,
    cluster_cidr: String,
    keep_local: Vec<String>,
}

/// One simulated host: a namespace on the LAN with a kubelet and a kproxy inside. Fields drop
/// in order: kproxy, the kubelet (and its pods' containers), the cgroups, the namespace, the
/// pins.
pub struct Worker {
    pub kproxy: Daemon,
    pub kubelet: Kubelet,
    pods: PodCgroup,
    pub ns: NetNs,
    bpffs: BpffsDir,
    pub ip: Ipv4Addr,
    _dir: TempDir,
}

impl Worker {
    fn start(shared: &Shared<'_>, lan: &Lan, host: u8) -> Self {
        let ns = NetNs::new("kpt-node");
        lan.attach(&ns, host);
        sh(ns.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
        let ip = lan.addr(host);
        let bpffs = BpffsDir::new("kpt-node");
        let pods = PodCgroup::new();
        let dir = TempDir::new("kpt-node");
        let place = Placement {
            netns: Some(ns.name()),
            server: Some(&shared.lan_url),
            node_ip: Some(ip),
            ipam: true,
        };
        let kubelet = Kubelet::start_placed(
            shared.api,
            &place,
            &[
                "--cluster-cidr",
                &shared.cluster_cidr,
                "--cgroup-parent",
                &pods.parent(),
            ],
        );
        let kubeconfig = node_kubeconfig(shared.api, &kubelet.node, &shared.lan_url, dir.path());
        let mut args = kproxy_args(&bpffs, &kubeconfig, &kubelet, shared);
        args.extend(
            [
                "--uplink",
                "eth0",
                "--serve-addr",
                &format!("{ip}:{}", free_port()),
                "--socket-lb-scope",
                "host",
                "--socket-lb-cgroup",
            ]
            .map(OsString::from),
        );
        args.push(pods.path().into());
        args.extend([
            "--serve-cert-dir".into(),
            dir.path().join("kproxy-pki").into(),
        ]);
        let mut cmd = ns.cmd(bin("kproxy"));
        cmd.args(&args).env("RUST_LOG", "info");
        let kproxy = Daemon::spawn_until_logged(cmd, "initial sync done");
        Self {
            kproxy,
            kubelet,
            pods,
            ns,
            bpffs,
            ip,
            _dir: dir,
        }
    }

    /// `program ARGS...` as a process of this node (in its namespace: socket-LB applies).
    #[must_use]
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.ns.cmd(program)
    }

    #[must_use]
    pub fn node(&self) -> &str {
        &self.kubelet.node
    }

    #[must_use]
    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }

    /// The cgroup v2 directory of this node's pods.
    #[must_use]
    pub fn pods_cgroup(&self) -> &Path {
        self.pods.path()
    }
}

/// `kproxy-apiserver node-kubeconfig NODE --server URL` into `dir`.
fn node_kubeconfig(api: &ApiServer, node: &str, server: &str, dir: &Path) -> PathBuf {
    let path = dir.join("node-kubeconfig");
    sh(Command::new(bin("kproxy-apiserver"))
        .args(["node-kubeconfig", node, "--out"])
        .arg(&path)
        .args(["--server", server, "--data-dir"])
        .arg(&api.data_dir));
    path
}

/// The flags every node's kproxy gets.
fn kproxy_args(
    bpffs: &BpffsDir,
    kubeconfig: &Path,
    kubelet: &Kubelet,
    shared: &Shared<'_>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--bpffs".into(), bpffs.path().into()];
    args.extend(["node".into(), "--kubeconfig".into(), kubeconfig.into()]);
    args.extend(["--node-name".into(), kubelet.node.clone().into()]);
    for cidr in &shared.keep_local {
        args.extend(["--keep-local".into(), cidr.into()]);
    }
    // Plain unreachable routes: the host node shares the machine's namespace, where a
    // keep-local device would outlive a killed kproxy.
    args.extend(["--keep-local-dev".into(), "none".into()]);
    args.extend(["--xdp-mode", "generic", "--pod-bridge", &kubelet.bridge].map(OsString::from));
    args
}

/// Extra flags for [`MultiCluster::start_with`].
#[derive(Default)]
pub struct MultiOptions {
    /// Appended to the controller manager's (a repeated `--controllers` adds to the list).
    pub controller_manager: Vec<String>,
    /// Appended to the host node's `kproxy node`.
    pub host_kproxy: Vec<String>,
}

/// The running cluster. Fields drop in declaration order: the workers, the host's kproxy,
/// its routes, pins and cgroup, the host kubelet, the client and the LAN, the control plane.
pub struct MultiCluster {
    pub workers: Vec<Worker>,
    pub kproxy: Daemon,
    _keep_local: KeepLocal,
    bpffs: BpffsDir,
    cgroup: Cgroup,
    pub kubelet: Kubelet,
    pub client: NetNs,
    pub lan: Lan,
    _scheduler: Daemon,
    _controller_manager: Daemon,
    pub api: ApiServer,
    svc_cidr: String,
    cluster_cidr: String,
    _dir: TempDir,
}

impl MultiCluster {
    /// Starts the control plane, the host node and `nodes - 1` workers; returns once every
    /// kproxy has synced (the Nodes' readiness is [`MultiCluster::wait_ready`]'s).
    #[must_use]
    pub fn start(prefix: &str, nodes: usize) -> Self {
        Self::start_with(prefix, nodes, &MultiOptions::default())
    }

    /// [`MultiCluster::start`] with extra flags.
    #[must_use]
    pub fn start_with(prefix: &str, nodes: usize, options: &MultiOptions) -> Self {
        assert!((1..=100).contains(&nodes), "1 to 100 nodes");
        let svc_net = free_net();
        let lan_net = free_net();
        let svc_cidr = format!("198.19.{svc_net}.0/24");
        let pool = format!("198.19.{lan_net}.128/28");
        let cluster_cidr = format!("10.252.{}.0/24", crate::free_slash24("10.252", 41));
        let dir = TempDir::new(prefix);
        let lan = Lan::new(lan_net);
        let client = NetNs::new("kpt-mcl");
        lan.attach(&client, 2);
        let lan_bind = format!("{}:{}", lan.addr(1), free_port());
        let api = ApiServer::start(
            dir.path(),
            &[
                "--service-cidr",
                &svc_cidr,
                "--bind",
                &format!("127.0.0.1:{}", free_port()),
                "--bind",
                &lan_bind,
            ],
        );
        let mut cm_args = vec![
            "--controllers",
            "deployment,replicaset,endpointslice,lbipam,nodeipam",
            "--lb-pool",
            &pool,
            "--service-cidr",
            &svc_cidr,
            "--cluster-cidr",
            &cluster_cidr,
            "--node-cidr-mask-size",
            "26",
        ];
        cm_args.extend(options.controller_manager.iter().map(String::as_str));
        let controller_manager = controller_manager(&api, &cm_args);
        let scheduler = scheduler(&api, &[]);
        let place = Placement {
            node_ip: Some(lan.addr(1)),
            ipam: true,
            ..Placement::default()
        };
        let kubelet = Kubelet::start_placed(&api, &place, &["--cluster-cidr", &cluster_cidr]);
        let keep_local = KeepLocal(vec![svc_cidr.clone(), pool]);
        let bpffs = BpffsDir::new(prefix);
        let cgroup = Cgroup::new();
        let shared = Shared {
            api: &api,
            lan_url: format!("https://{lan_bind}"),
            cluster_cidr: cluster_cidr.clone(),
            keep_local: keep_local.0.clone(),
        };
        let kubeconfig = node_kubeconfig(&api, &kubelet.node, &api.url, dir.path());
        let mut args = kproxy_args(&bpffs, &kubeconfig, &kubelet, &shared);
        args.extend(
            [
                "--uplink",
                &lan.host_if,
                "--serve-addr",
                &format!("{}:{}", lan.addr(1), free_port()),
                "--socket-lb-scope",
            ]
            .map(OsString::from),
        );
        args.push(cgroup.path().into());
        args.extend([
            "--serve-cert-dir".into(),
            dir.path().join("kproxy-pki").into(),
        ]);
        args.extend(options.host_kproxy.iter().map(OsString::from));
        let mut cmd = Command::new(bin("kproxy"));
        cmd.args(&args).env("RUST_LOG", "info");
        let kproxy = Daemon::spawn_until_logged(cmd, "initial sync done");
        let workers = (2..=nodes)
            .map(|k| Worker::start(&shared, &lan, u8::try_from(10 + k).expect("a byte")))
            .collect();
        Self {
            workers,
            kproxy,
            _keep_local: keep_local,
            bpffs,
            cgroup,
            kubelet,
            client,
            lan,
            _scheduler: scheduler,
            _controller_manager: controller_manager,
            api,
            svc_cidr,
            cluster_cidr,
            _dir: dir,
        }
    }

    /// Every node's name, the host's first.
    #[must_use]
    pub fn nodes(&self) -> Vec<String> {
        std::iter::once(self.kubelet.node.clone())
            .chain(self.workers.iter().map(|w| w.node().to_string()))
            .collect()
    }

    /// Waits until every Node reports Ready.
    pub fn wait_ready(&self) {
        use k8s_openapi::api::core::v1::Node;
        let nodes: kube::Api<Node> = kube::Api::all(self.kubelet.client());
        for name in self.nodes() {
            eventually(&format!("node {name} Ready"), || {
                self.kubelet
                    .block_on(nodes.get_opt(&name))
                    .ok()
                    .flatten()
                    .and_then(|n| n.status?.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
        }
    }

    /// `program ARGS...` as a host process of node 1, inside its socket-LB cgroup.
    #[must_use]
    pub fn host_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cgroup.cmd(program)
    }

    #[must_use]
    pub fn svc_cidr(&self) -> &str {
        &self.svc_cidr
    }

    /// The cluster's pod CIDR (node IPAM hands out /26s of it).
    #[must_use]
    pub fn cluster_cidr(&self) -> &str {
        &self.cluster_cidr
    }

    #[must_use]
    pub fn kubeconfig(&self) -> &Path {
        &self.api.kubeconfig
    }

    #[must_use]
    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }
}
