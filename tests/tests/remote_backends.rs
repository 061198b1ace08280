//! Privileged: external traffic to backends on another node (`externalTrafficPolicy:
//! Cluster`, SNAT as Cilium's kube-proxy replacement does it), in XDP (driver, generic) and
//! tc LB modes. All in namespaces the test creates, the uplink segment being a bridge:
//!
//! ```text
//!  client 192.0.2.1 ─┐                      node1 (kproxy standalone, uplink up0 192.0.2.2)
//!                    ├── lan0 (own netns) ──    br0 10.244.1.1 ── b0 10.244.1.2 (local pod)
//!  node2 192.0.2.3 ──┘                          route 10.244.2.0/24 via 192.0.2.3 (host-gw)
//!   br0 10.244.2.1 ── r0 10.244.2.2, r1 10.244.2.3 (remote pods)
//! ```
//!
//! r0 sends with full checksums (its replies stay in XDP), r1 with the veth default
//! (CHECKSUM_PARTIAL replies, which XDP leaves to tc): both reply paths are covered.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, path::PathBuf, process::Command};

use kproxy_tests::{
    BpffsDir, Daemon, NetNs, bin, eventually,
    lab::{Cgroup, Lab, kpt, udp_flow_backends},
    privileged, sh, unique,
};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NODE1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const NODE2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const REMOTE_PODS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 2, 3)];
/// LoadBalancer IPs and node ports: remote endpoints only, local + remote, Local policy.
const LB_REMOTE: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 40);
const LB_MIXED: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 41);
const LB_LOCAL: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 42);
const NP_REMOTE: u16 = 30400;
/// kproxy-common's `SNAT_PORT_MIN..=SNAT_PORT_MAX`.
const SNAT_PORTS: std::ops::RangeInclusive<u16> = 61_000..=65_535;

/// A veth from `a` (named `a_if`, with `a_cidr`) into the LAN namespace, as a port of lan0.
fn lan_port(lan: &NetNs, a: &NetNs, a_if: &str, a_cidr: &str) {
    let tmp = unique("kpl");
    let (ta, tb) = (
        format!("la{}", &tmp[tmp.len().saturating_sub(10)..]),
        format!("lb{}", &tmp[tmp.len().saturating_sub(10)..]),
    );
    sh(Command::new("ip").args([
        "link",
        "add",
        &ta,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &tb,
        "netns",
        lan.name(),
    ]));
    a.ip(&["link", "set", &ta, "name", a_if]);
    a.ip(&["addr", "add", a_cidr, "dev", a_if]);
    a.ip(&["link", "set", a_if, "up"]);
    lan.ip(&["link", "set", &tb, "master", "lan0"]);
    lan.ip(&["link", "set", &tb, "up"]);
}

/// A pod namespace behind `node`'s bridge br0 (gateway `gw`), serving `kpt-net` as `name`.
fn pod(node: &NetNs, name: &str, ip: Ipv4Addr, gw: &str, veth: &str) -> (NetNs, Daemon) {
    let ns = NetNs::new(&format!("kpr-{name}"));
    kproxy_tests::veth_pair(
        &ns,
        "eth0",
        &format!("{ip}/24"),
        node,
        veth,
        &format!("169.254.9.{}/32", ip.octets()[3]),
    );
    node.ip(&["link", "set", veth, "master", "br0"]);
    ns.ip(&["route", "add", "default", "via", gw]);
    let mut cmd = ns.cmd(bin("kpt-net"));
    cmd.args(["serve", "--name", name, "--port", "8080"]);
    let d = Daemon::spawn(cmd);
    eventually(&format!("{name} serving"), || d.logged("serving"));
    (ns, d)
}

/// A node namespace with IP forwarding and a pod bridge `br0` at `gw/24`.
fn node(prefix: &str, lan: &NetNs, uplink: &str, cidr: &str, gw: &str) -> NetNs {
    let n = NetNs::new(prefix);
    lan_port(lan, &n, uplink, cidr);
    n.ip(&["link", "add", "br0", "type", "bridge"]);
    n.ip(&["addr", "add", &format!("{gw}/24"), "dev", "br0"]);
    n.ip(&["link", "set", "br0", "up"]);
    sh(n.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
    n
}

/// The two-node lab; fields drop in reverse order of need (processes before namespaces).
struct TwoNodes {
    kproxy: Option<Daemon>,
    _servers: Vec<Daemon>,
    _pods: Vec<NetNs>,
    client: NetNs,
    node1: NetNs,
    _node2: NetNs,
    _lan: NetNs,
    bpffs: BpffsDir,
    _cgroup: Cgroup,
    manifest: PathBuf,
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        self.kproxy = None;
        let _ = std::fs::remove_file(&self.manifest);
    }
}

impl TwoNodes {
    fn start(xdp_mode: &str, lb_mode: &str) -> Self {
        let lan = NetNs::new("kpr-lan");
        lan.ip(&["link", "add", "lan0", "type", "bridge"]);
        lan.ip(&["link", "set", "lan0", "up"]);
        let client = NetNs::new("kpr-c");
        lan_port(&lan, &client, "eth0", &format!("{CLIENT}/24"));
        client.ip(&["route", "add", "default", "via", &NODE1.to_string()]);
        // Full checksums from the client, so the XDP path is the one tested (partial.rs).
        sh(client.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
        let node1 = node("kpr-n1", &lan, "up0", &format!("{NODE1}/24"), "10.244.1.1");
        let node2 = node("kpr-n2", &lan, "eth0", &format!("{NODE2}/24"), "10.244.2.1");
        // Host-gw routes, as `kproxy node` programs them from the Node objects.
        node1.ip(&["route", "add", "10.244.2.0/24", "via", &NODE2.to_string()]);
        node2.ip(&["route", "add", "10.244.1.0/24", "via", &NODE1.to_string()]);
        let (b0, s0) = pod(&node1, "b0", LOCAL_POD, "10.244.1.1", "vb0");
        let (r0, sr0) = pod(&node2, "r0", REMOTE_PODS[0], "10.244.2.1", "vr0");
        let (r1, sr1) = pod(&node2, "r1", REMOTE_PODS[1], "10.244.2.1", "vr1");
        sh(r0.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
        let manifest = std::env::temp_dir().join(format!("{}.yaml", unique("kpr-manifest")));
        std::fs::write(&manifest, manifest_text()).expect("write manifest");
        let bpffs = BpffsDir::new("kpr");
        let cgroup = Cgroup::new();
        let mut cmd = node1.cmd(bin("kproxy"));
        cmd.arg("--bpffs")
            .arg(bpffs.path())
            .args(["standalone", "--uplink", "up0", "--xdp-mode", xdp_mode])
            .args(["--lb-mode", lb_mode, "--node-name", "n1"])
            .arg("--manifests")
            .arg(&manifest)
            .arg("--socket-lb-scope")
            .arg(cgroup.path());
        let mut kproxy = Daemon::spawn(cmd);
        eventually("kproxy ready", || {
            kproxy.assert_running();
            kproxy.logged("kproxy ready")
        });
        Self {
            kproxy: Some(kproxy),
            _servers: vec![s0, sr0, sr1],
            _pods: vec![b0, r0, r1],
            client,
            node1,
            _node2: node2,
            _lan: lan,
            bpffs,
            _cgroup: cgroup,
            manifest,
        }
    }

    fn client(&self, args: &[&str]) -> Vec<Value> {
        Lab::kpt_net(self.client.cmd(kpt()), args)
    }

    /// `kproxy dump --drops`: packets per reason.
    fn drops(&self) -> BTreeMap<String, u64> {
        let out = sh(Command::new(bin("kproxy"))
            .arg("--bpffs")
            .arg(self.bpffs.path())
            .args(["dump", "--drops", "-o", "json"]));
        let rows: Value = serde_json::from_str(&out).expect("dump --drops json");
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["reason"].as_str().unwrap_or_default().to_string(),
                    r["packets"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// A LoadBalancer Service (TCP 80 and UDP 53 to 8080, node ports `np`/`np + 1`) and its
/// EndpointSlice: (address, node) pairs.
fn service(out: &mut String, name: &str, n: u8, np: u16, policy: &str, eps: &[(Ipv4Addr, &str)]) {
    let lb = Ipv4Addr::new(172, 30, 0, 40 + n);
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.{c}\n  externalTrafficPolicy: {policy}\n  \
         ports:\n  - {{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: {np}}}\n  \
         - {{name: dns, port: 53, protocol: UDP, targetPort: 8080, nodePort: {np1}}}\n\
         status:\n  loadBalancer:\n    ingress: [{{ip: {lb}}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
         name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\n\
         - {{name: dns, port: 8080, protocol: UDP}}\nendpoints:\n",
        c = 40 + n,
        np1 = np + 1,
    );
    for (addr, node) in eps {
        let _ = writeln!(
            out,
            "- addresses: [{addr}]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true, terminating: false}}"
        );
    }
}

fn manifest_text() -> String {
    let (r0, r1) = (REMOTE_PODS[0], REMOTE_PODS[1]);
    let mut y = String::new();
    service(
        &mut y,
        "remote",
        0,
        NP_REMOTE,
        "Cluster",
        &[(r0, "n2"), (r1, "n2")],
    );
    service(
        &mut y,
        "mixed",
        1,
        NP_REMOTE + 10,
        "Cluster",
        &[(LOCAL_POD, "n1"), (r0, "n2"), (r1, "n2")],
    );
    service(
        &mut y,
        "local",
        2,
        NP_REMOTE + 20,
        "Local",
        &[(LOCAL_POD, "n1"), (r0, "n2")],
    );
    y
}

/// The address (and port) a backend saw as its peer.
fn seen(r: &Value) -> (Ipv4Addr, u16) {
    let s = r["seen_peer"].as_str().unwrap_or_default();
    let (ip, port) = s
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("seen_peer in {r}"));
    (ip.parse().expect("ip"), port.parse().expect("port"))
}

fn names(res: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in res {
        assert_eq!(r["ok"], true, "a request failed: {r}");
        *m.entry(r["name"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    m
}

/// Remote backends through the LB IP and the NodePort, TCP and UDP: reached, the backend
/// sees node1's address and an SNAT port, the client sees the address it called.
fn remote_only(lab: &TwoNodes) {
    for (tcp, udp) in [
        (format!("{LB_REMOTE}:80"), format!("{LB_REMOTE}:53")),
        (
            format!("{NODE1}:{NP_REMOTE}"),
            format!("{NODE1}:{}", NP_REMOTE + 1),
        ),
    ] {
        let res = lab.client(&["tcp", &tcp, "--count", "40"]);
        assert_eq!(res.len(), 40, "{tcp}: {res:?}");
        let spread = names(&res);
        assert_eq!(spread.len(), 2, "{tcp}: both remote backends: {spread:?}");
        for r in &res {
            let (ip, port) = seen(r);
            assert_eq!(ip, NODE1, "{tcp}: the backend saw {r}");
            assert!(SNAT_PORTS.contains(&port), "{tcp}: port {port}");
            assert_eq!(r["getpeername"], tcp.as_str());
        }
        let res = lab.client(&["udp", &udp, "--count", "20"]);
        assert_eq!(res.len(), 20, "{udp}: {res:?}");
        assert_eq!(names(&res).len(), 2, "{udp}: {res:?}");
        for r in &res {
            assert_eq!(r["from"], udp.as_str(), "UDP reply source: {r}");
            assert_eq!(seen(r).0, NODE1, "{udp}: {r}");
        }
    }
}

/// Many concurrent connections and flows from the client: each gets its own SNAT port.
/// Sized below the range's capacity: a closed connection holds its port for 10 s, and a new
/// flow tries 32 random ports: with ~4,500 ports per backend, a range 88 % full leaves 1.7 %
/// of new flows without one (8 of 7,910 connections in 500 ms failed so once). At
/// most 3,000 connections and 1,000 UDP flows over two backends keep each range under half
/// full, where 32 collisions in a row are beyond reach.
fn many_flows(lab: &TwoNodes) {
    let res = lab.client(&[
        "conns",
        &format!("{LB_REMOTE}:80"),
        "--duration-ms",
        "500",
        "--concurrency",
        "8",
        "--max-conns",
        "3000",
    ]);
    let r = &res[0];
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["conns"].as_u64().unwrap_or(0) > 100, "{r}");
    // 1,000 UDP flows from consecutive client ports: all answered.
    let names = udp_flow_backends(
        lab.client.cmd(kpt()),
        &format!("{LB_REMOTE}:53"),
        41_000,
        1000,
    );
    assert!(names.iter().all(|n| n == "r0" || n == "r1"), "{names:?}");
    let drops = lab.drops();
    assert_eq!(drops.get("snat-no-port"), Some(&0), "{r} {drops:?}");
    assert_eq!(drops.get("forward-failed"), Some(&0), "{drops:?}");
}

/// Local and remote backends of one Service: both reached, only the remote ones see the
/// node's address; a Local policy keeps the client's address and the local endpoint only.
fn mixed_and_local(lab: &TwoNodes) {
    let res = lab.client(&["tcp", &format!("{LB_MIXED}:80"), "--count", "60"]);
    let spread = names(&res);
    assert_eq!(spread.len(), 3, "{spread:?}");
    for r in &res {
        let want = if r["name"] == "b0" { CLIENT } else { NODE1 };
        assert_eq!(seen(r).0, want, "{r}");
    }
    let res = lab.client(&["tcp", &format!("{LB_LOCAL}:80"), "--count", "20"]);
    assert_eq!(names(&res), BTreeMap::from([("b0".to_string(), 20)]));
    assert!(res.iter().all(|r| seen(r).0 == CLIENT), "{res:?}");
    // The node itself still reaches the remote pod directly (its own connections are not
    // taken for SNAT replies).
    let direct = Lab::kpt_net(
        lab.node1.cmd(kpt()),
        &["tcp", &format!("{}:8080", REMOTE_PODS[0]), "--count", "5"],
    );
    assert!(direct.iter().all(|r| r["ok"] == true), "{direct:?}");
}

fn run(xdp_mode: &str, lb_mode: &str) {
    let lab = TwoNodes::start(xdp_mode, lb_mode);
    remote_only(&lab);
    many_flows(&lab);
    mixed_and_local(&lab);
}

#[test]
fn privileged_remote_backends_xdp_driver() {
    if privileged("privileged_remote_backends_xdp_driver") {
        run("driver", "xdp");
    }
}

#[test]
fn privileged_remote_backends_xdp_generic() {
    if privileged("privileged_remote_backends_xdp_generic") {
        run("generic", "xdp");
    }
}

#[test]
fn privileged_remote_backends_tc() {
    if privileged("privileged_remote_backends_tc") {
        run("driver", "tc");
    }
}
