//! A one-node lab for load-balancing tests, all in namespaces the test creates:
//!
//! ```text
//!  client netns                node netns                         backend netns b0..bN
//!  eth0 192.0.2.1 ──veth── up0 192.0.2.2   br0 10.244.1.1 ──veth── eth0 10.244.1.(2+i)
//!  (an "external host";     (kproxy: XDP/tc on up0)                (kpt-net serve)
//!   default route via node)
//! ```
//!
//! Socket-LB is attached to a cgroup of the lab's own, and "host"/"pod" commands run inside
//! it; the client namespace's processes stay outside, so their traffic really takes the
//! per-packet path through the uplink, as traffic from another machine would.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{BpffsDir, Daemon, NetNs, bin, eventually, sh, unique, veth_pair};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const BACKEND_PORT: u16 = 8080;

#[must_use]
pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + u8::try_from(i).expect("few backends"))
}

/// A cgroup v2 directory for the lab's socket-LB, removed on drop.
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// `program ARGS...` as a process of this cgroup (it moves itself in, then execs).
    #[must_use]
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.path)
            .arg(program);
        cmd
    }

    /// A new, uniquely named cgroup under the cgroup v2 root.
    #[must_use]
    #[expect(
        clippy::new_without_default,
        reason = "creates a directory in the cgroup hierarchy; not a plain value"
    )]
    pub fn new() -> Self {
        let root = cgroup2_root();
        let path = root.join(unique("kpt-cg"));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Move any leftover process back to the root first, or rmdir fails with EBUSY.
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            let root = self.path.parent().map(|p| p.join("cgroup.procs"));
            for pid in procs.lines() {
                if let Some(root) = &root {
                    let _ = std::fs::write(root, pid);
                }
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            pre.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("a cgroup2 mount")
}

/// One endpoint of a service.
#[derive(Clone, Copy)]
pub struct Ep {
    pub backend: usize,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Ep {
    #[must_use]
    pub const fn ready(backend: usize) -> Self {
        Self {
            backend,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    #[must_use]
    pub const fn terminating(backend: usize) -> Self {
        Self {
            backend,
            ready: false,
            serving: true,
            terminating: true,
        }
    }
}

/// A service with a TCP port 80 and a UDP port 53, both to the backends' port 8080.
#[derive(Clone)]
pub struct Svc {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub lb_ip: Option<Ipv4Addr>,
    pub external_ip: Option<Ipv4Addr>,
    /// TCP node port (the UDP one is this + 1).
    pub node_port: Option<u16>,
    pub affinity: bool,
    pub endpoints: Vec<Ep>,
    /// Service annotations (key, value), e.g. `kproxy.io/lb-algorithm`.
    pub annotations: Vec<(String, String)>,
}

impl Svc {
    #[must_use]
    pub fn cluster_ip(name: &str, ip: Ipv4Addr, endpoints: Vec<Ep>) -> Self {
        Self {
            name: name.into(),
            cluster_ip: ip,
            lb_ip: None,
            external_ip: None,
            node_port: None,
            affinity: false,
            endpoints,
            annotations: Vec::new(),
        }
    }

    /// Appends the Service and its EndpointSlice as manifest YAML.
    pub fn yaml(&self, out: &mut String) {
        let ty = if self.lb_ip.is_some() {
            "LoadBalancer"
        } else if self.node_port.is_some() {
            "NodePort"
        } else {
            "ClusterIP"
        };
        let np = |off: u16| {
            self.node_port
                .map(|p| format!(", nodePort: {}", p + off))
                .unwrap_or_default()
        };
        let annotations: Vec<String> = self
            .annotations
            .iter()
            .map(|(k, v)| format!("{k:?}: {v:?}"))
            .collect();
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: default, \
             annotations: {{{a}}}}}\nspec:\n  type: {ty}\n  clusterIP: {ip}\n",
            n = self.name,
            a = annotations.join(", "),
            ip = self.cluster_ip
        );
        if let Some(e) = self.external_ip {
            let _ = writeln!(out, "  externalIPs: [{e}]");
        }
        if self.affinity {
            let _ = writeln!(
                out,
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 300}}}}"
            );
        }
        let _ = writeln!(
            out,
            "  ports:\n  - {{name: http, port: 80, protocol: TCP, targetPort: 8080{}}}\n  \
             - {{name: dns, port: 53, protocol: UDP, targetPort: 8080{}}}",
            np(0),
            np(1)
        );
        if let Some(lb) = self.lb_ip {
            let _ = writeln!(out, "status:\n  loadBalancer:\n    ingress: [{{ip: {lb}}}]");
        }
        let _ = write!(
            out,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             name: {n}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {n}}}\n\
             addressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\n\
             - {{name: dns, port: 8080, protocol: UDP}}\n",
            n = self.name
        );
        out.push_str(if self.endpoints.is_empty() {
            "endpoints: []\n"
        } else {
            "endpoints:\n"
        });
        for ep in &self.endpoints {
            let _ = writeln!(
                out,
                "- addresses: [{}]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}",
                backend_ip(ep.backend),
                ep.ready,
                ep.serving,
                ep.terminating
            );
        }
    }
}

/// The lab's namespaces, links and routes, without any process in them.
pub struct Topology {
    pub client: NetNs,
    pub node: NetNs,
    pub backends: Vec<NetNs>,
}

impl Topology {
    /// Client, node (uplink `up0`, bridge `br0`, IP forwarding) and `n` backends on the
    /// bridge; namespaces are named `<prefix>-c`, `<prefix>-n`, `<prefix>-b<i>` + unique.
    #[must_use]
    pub fn build(prefix: &str, n: usize) -> Self {
        let client = NetNs::new(&format!("{prefix}-c"));
        let node = NetNs::new(&format!("{prefix}-n"));
        veth_pair(
            &client,
            "eth0",
            "192.0.2.1/24",
            &node,
            "up0",
            "192.0.2.2/24",
        );
        client.ip(&["route", "add", "default", "via", "192.0.2.2"]);
        // An external host's packets come from a NIC with full checksums; a veth with
        // checksum offload would send CHECKSUM_PARTIAL ones, which XDP leaves to tc
        // (kproxy-ebpf's partial.rs), and the XDP path would go untested.
        sh(client.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        node.ip(&["addr", "add", "10.244.1.1/24", "dev", "br0"]);
        node.ip(&["link", "set", "br0", "up"]);
        sh(node.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
        let backends = (0..n)
            .map(|i| {
                let b = NetNs::new(&format!("{prefix}-b{i}"));
                veth_pair(
                    &b,
                    "eth0",
                    &format!("{}/24", backend_ip(i)),
                    &node,
                    &format!("vb{i}"),
                    &format!("10.255.{i}.1/32"),
                );
                node.ip(&["link", "set", &format!("vb{i}"), "master", "br0"]);
                b.ip(&["route", "add", "default", "via", "10.244.1.1"]);
                b
            })
            .collect();
        Self {
            client,
            node,
            backends,
        }
    }
}

pub struct Lab {
    pub client: NetNs,
    pub node: NetNs,
    pub backends: Vec<NetNs>,
    pub bpffs: BpffsDir,
    pub cgroup: Cgroup,
    pub manifest: PathBuf,
    servers: Vec<Daemon>,
    kproxy: Option<Daemon>,
}

impl Lab {
    /// Builds the topology with `n` backends, each running `kpt-net serve` as `b<i>`.
    pub fn new(n: usize) -> Self {
        let Topology {
            client,
            node,
            backends,
        } = Topology::build("kpt", n);
        let mut servers = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let mut cmd = b.cmd(bin("kpt-net"));
            cmd.args(["serve", "--name", &format!("b{i}"), "--port", "8080"]);
            servers.push(Daemon::spawn(cmd));
        }
        let manifest = std::env::temp_dir().join(format!("{}.yaml", unique("kpt-manifest")));
        std::fs::write(&manifest, "").expect("write manifest");
        let lab = Self {
            client,
            node,
            backends,
            bpffs: BpffsDir::new("kpt-lab"),
            cgroup: Cgroup::new(),
            manifest,
            servers,
            kproxy: None,
        };
        for (i, s) in lab.servers.iter().enumerate() {
            eventually(&format!("backend b{i} serving"), || s.logged("serving"));
        }
        lab
    }

    /// Writes the manifest file (kproxy notices the change).
    pub fn set_services(&self, services: &[Svc]) {
        let mut y = String::new();
        for s in services {
            s.yaml(&mut y);
        }
        self.write_raw_manifest(&y);
    }

    /// Replaces the manifest with `text`; write-then-rename, so kproxy never reads a
    /// half-written file.
    pub fn write_raw_manifest(&self, text: &str) {
        let tmp = self.manifest.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, &self.manifest).expect("rename manifest");
    }

    /// Starts kproxy in the node namespace (XDP in `xdp_mode`, LB on `lb_mode`).
    pub fn start_kproxy(&mut self, xdp_mode: &str, lb_mode: &str) {
        self.start_kproxy_with(xdp_mode, lb_mode, &[]);
    }

    /// As [`Self::start_kproxy`], with extra `kproxy standalone` arguments.
    pub fn start_kproxy_with(&mut self, xdp_mode: &str, lb_mode: &str, extra: &[&str]) {
        let mut cmd = self.node.cmd(bin("kproxy"));
        cmd.arg("--bpffs")
            .arg(self.bpffs.path())
            .args(["standalone", "--uplink", "up0", "--xdp-mode", xdp_mode])
            .args(["--lb-mode", lb_mode])
            .arg("--manifests")
            .arg(&self.manifest);
        // Socket-LB on the lab's cgroup unless the test chooses the scope itself.
        if !extra.contains(&"--socket-lb-scope") {
            cmd.arg("--socket-lb-scope").arg(self.cgroup.path());
        }
        cmd.args(extra);
        let d = Daemon::spawn(cmd);
        let mut d = d;
        eventually("kproxy ready", || {
            d.assert_running();
            d.logged("kproxy ready")
        });
        self.kproxy = Some(d);
    }

    pub fn kproxy(&mut self) -> &mut Daemon {
        self.kproxy.as_mut().expect("kproxy started")
    }

    /// Kills kproxy (SIGKILL: no cleanup at all) and waits for it.
    pub fn kill_kproxy(&mut self) {
        if let Some(mut d) = self.kproxy.take() {
            d.kill();
        }
    }

    /// Number of "services synced" log lines so far (to wait for a reload).
    pub fn syncs(&mut self) -> usize {
        self.kproxy().count_logged("services synced")
    }

    /// Waits until kproxy has applied one more manifest version than `before`.
    pub fn wait_sync(&mut self, before: usize) {
        let d = self.kproxy.as_mut().expect("kproxy started");
        eventually("kproxy applied the manifest", || {
            d.assert_running();
            d.count_logged("services synced") > before
        });
    }

    /// A command in the node namespace, inside the lab's socket-LB cgroup ("host").
    #[must_use]
    pub fn host_cmd(&self, program: &str) -> Command {
        self.in_cgroup(&self.node, program)
    }

    /// A command in backend `i`'s namespace, inside the socket-LB cgroup ("pod").
    #[must_use]
    pub fn pod_cmd(&self, i: usize, program: &str) -> Command {
        self.in_cgroup(&self.backends[i], program)
    }

    /// A command on the external client host (outside the socket-LB cgroup).
    #[must_use]
    pub fn client_cmd(&self, program: &str) -> Command {
        self.client.cmd(program)
    }

    fn in_cgroup(&self, ns: &NetNs, program: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="/run/netns/$ns" -- "$@""#)
            .arg(self.cgroup.path())
            .arg(ns.name())
            .arg(program);
        cmd
    }

    /// Runs `kpt-net ARGS` as `cmd` builds it and parses its JSON lines.
    pub fn kpt_net(mut cmd: Command, args: &[&str]) -> Vec<serde_json::Value> {
        let out = cmd.args(args).output().expect("run kpt-net");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kproxy = None;
        self.servers.clear();
        let _ = std::fs::remove_file(&self.manifest);
    }
}

/// The path of the `kpt-net` test tool, as a string for commands run in namespaces.
#[must_use]
pub fn kpt() -> String {
    crate::bin("kpt-net").to_string_lossy().into_owned()
}

/// `kproxy dump -o json` rows of the datapath pinned under `bpffs`.
#[must_use]
pub fn kproxy_dump(bpffs: &Path) -> Vec<serde_json::Value> {
    let out = sh(Command::new(crate::bin("kproxy"))
        .arg("--bpffs")
        .arg(bpffs)
        .args(["dump", "-o", "json"]));
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("dump json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sends one UDP datagram from each source port `from_port..from_port + count` of `cmd`'s
/// host to `target` (`kpt-net udp-flows`): the backend name that answered each flow, in
/// port order. The same call later repeats the same 5-tuples.
#[must_use]
pub fn udp_flow_backends(
    mut cmd: Command,
    target: &str,
    from_port: u16,
    count: usize,
) -> Vec<String> {
    let out = cmd
        .args(["udp-flows", target, "--from-port", &from_port.to_string()])
        .args(["--count", &count.to_string()])
        .output()
        .expect("run kpt-net udp-flows");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "udp-flows output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["lost"], 0, "flows without an answer: {}", v["lost"]);
    v["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_string())
        .collect()
}

/// How many flows answered from another backend in `after` than in `before`.
#[must_use]
pub fn flows_moved(before: &[String], after: &[String]) -> usize {
    before.iter().zip(after).filter(|(b, a)| b != a).count()
}

/// Deletes kproxy's connection tracking entries (`kproxy ct-flush`), so the next packet of
/// every flow is balanced afresh, as on a node that never saw it.
pub fn flush_ct(bpffs: &Path) {
    sh(Command::new(crate::bin("kproxy"))
        .arg("--bpffs")
        .arg(bpffs)
        .arg("ct-flush"));
}

/// The network of [`Lab::add_remote_client`]'s host.
pub const REMOTE_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

impl Lab {
    /// A second external host, 198.51.100.2, one routed hop behind the client host (a
    /// client from another network): its traffic reaches the uplink with its own source
    /// address. The namespace goes when the returned value is dropped.
    #[must_use]
    pub fn add_remote_client(&self) -> NetNs {
        let remote = NetNs::new("kpt-r");
        veth_pair(
            &remote,
            "eth0",
            &format!("{REMOTE_CLIENT_IP}/24"),
            &self.client,
            "rc0",
            "198.51.100.1/24",
        );
        remote.ip(&["route", "add", "default", "via", "198.51.100.1"]);
        sh(remote.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
        sh(self
            .client
            .cmd("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]));
        self.node.ip(&[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            &CLIENT_IP.to_string(),
        ]);
        remote
    }
}
