//! Privileged: the kubelet's pod network library (`kproxy-podnet`) against real namespaces.
//! Two "pods" (network namespaces) on a test bridge reach each other and the host; attaching
//! twice changes nothing; detaching removes both veth ends; the forwarding rules are added
//! once and removed again. Every bridge, namespace, veth and pod CIDR is this test's own.
#![forbid(unsafe_code)]

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use kproxy_podnet::{
    Error, Ipam, Ipv4Net, POD_IFNAME, attach, detach, disable_forwarding, enable_forwarding,
    ensure_bridge, forwarding_rules, host_ifname,
};
use kproxy_tests::{NetNs, eventually, privileged, sh, unique};

/// A link in the root namespace deleted on drop (bridges, host veths, dummies).
struct RootLink(String);

impl RootLink {
    /// Bridge names must fit in 15 bytes: `kpb-<pid>-<n>`.
    fn bridge_name() -> Self {
        let name = unique("kpb");
        assert!(name.len() <= 15, "{name} is too long for an interface");
        Self(name)
    }
}

impl Drop for RootLink {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Removes the forwarding rules on drop, also when the test panics.
struct Forwarding {
    bridge: String,
    cidr: Ipv4Net,
}

impl Forwarding {
    fn enable(bridge: &str, cidr: Ipv4Net) -> Self {
        enable_forwarding(bridge, cidr).expect("enable_forwarding");
        Self {
            bridge: bridge.to_owned(),
            cidr,
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Err(e) = disable_forwarding(&self.bridge, self.cidr) {
            eprintln!("cleanup: disable_forwarding: {e}");
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("kpt-podnet"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ns_path(ns: &NetNs) -> PathBuf {
    Path::new("/run/netns").join(ns.name())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn pings(ns: &NetNs, ip: Ipv4Addr) -> bool {
    succeeds(ns.cmd("ping").args(["-c", "1", "-W", "1", &ip.to_string()]))
}

fn link_exists(name: &str) -> bool {
    succeeds(Command::new("ip").args(["link", "show", "dev", name]))
}

/// Non-empty lines of a command's output.
fn lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// The checks that make a pod "attached": eth0 with exactly its address, up, one default
/// route via the gateway, lo up.
fn assert_pod_plumbed(ns: &NetNs, ip: Ipv4Addr, gateway: Ipv4Addr) {
    let addrs = ns.ip(&["-4", "-o", "addr", "show", "dev", POD_IFNAME]);
    assert_eq!(
        lines(&addrs).len(),
        1,
        "exactly one address on eth0: {addrs}"
    );
    assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    let link = ns.ip(&["-o", "link", "show", "dev", POD_IFNAME]);
    assert!(
        link.contains(",UP") || link.contains("<UP"),
        "eth0 up: {link}"
    );
    let lo = ns.ip(&["-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains("UP"), "lo up: {lo}");
    let routes = ns.ip(&["-4", "route", "show", "default"]);
    assert_eq!(lines(&routes).len(), 1, "one default route: {routes}");
    assert!(
        routes.contains(&format!("default via {gateway} dev {POD_IFNAME}")),
        "{routes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_the_bridge_reach_each_other_and_the_host() {
    if !privileged("pods_on_the_bridge_reach_each_other_and_the_host") {
        return;
    }
    let bridge = RootLink::bridge_name();
    let cidr: Ipv4Net = "10.250.1.0/24".parse().unwrap();
    let gateway: Ipv4Addr = "10.250.1.1".parse().unwrap();
    let gateway_cidr = Ipv4Net::new(gateway, 24).unwrap();

    ensure_bridge(&bridge.0, gateway_cidr)
        .await
        .expect("ensure_bridge");
    ensure_bridge(&bridge.0, gateway_cidr)
        .await
        .expect("ensure_bridge again");
    let addrs = sh(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &bridge.0]));
    assert_eq!(lines(&addrs).len(), 1, "one bridge address: {addrs}");
    assert!(addrs.contains("inet 10.250.1.1/24"), "{addrs}");
    let link = sh(Command::new("ip").args(["-d", "-o", "link", "show", "dev", &bridge.0]));
    assert!(link.contains("bridge") && link.contains("UP"), "{link}");
    // dockerd's FORWARD DROP also hits bridged traffic when br_netfilter is loaded.
    let _forwarding = Forwarding::enable(&bridge.0, cidr);

    let state = TempDir::new();
    let mut ipam = Ipam::open(state.0.join("ipam.json"), cidr, gateway).expect("ipam");
    let pods: Vec<(String, NetNs)> = (0..2)
        .map(|_| (unique("uid"), NetNs::new("kpt-pod")))
        .collect();
    let mut plumbed = Vec::new();
    let mut host_links = Vec::new();
    for (uid, ns) in &pods {
        let ip = ipam.allocate(uid).expect("allocate");
        let host = host_ifname(uid);
        host_links.push(RootLink(host.clone()));
        attach(&ns_path(ns), &bridge.0, &host, ip, 24, gateway)
            .await
            .expect("attach");
        assert_pod_plumbed(ns, ip, gateway);
        let port = sh(Command::new("ip").args(["-o", "link", "show", "dev", &host]));
        assert!(port.contains(&format!("master {}", bridge.0)), "{port}");
        assert!(port.contains(",UP") || port.contains("<UP"), "{port}");
        plumbed.push((ns, ip, host));
    }
    let [(a, ip_a, host_a), (b, ip_b, _)] = &plumbed[..] else {
        unreachable!("two pods")
    };

    eventually("pod a pings pod b", || pings(a, *ip_b));
    eventually("pod b pings pod a", || pings(b, *ip_a));
    eventually("pod a pings its gateway", || pings(a, gateway));
    // Host -> pod: from the root namespace, whose route to the pods is the bridge's.
    for ip in [ip_a, ip_b] {
        eventually(&format!("the host pings {ip}"), || {
            succeeds(Command::new("ping").args(["-c", "1", "-W", "1", &ip.to_string()]))
        });
    }

    // Re-attaching (a restarted kubelet) changes nothing and duplicates nothing.
    for (ns, ip, host) in &plumbed {
        attach(&ns_path(ns), &bridge.0, host, *ip, 24, gateway)
            .await
            .expect("re-attach");
        assert_pod_plumbed(ns, *ip, gateway);
        let peers = ns.ip(&["-o", "link", "show"]);
        assert_eq!(lines(&peers).len(), 2, "lo and eth0 only: {peers}");
    }
    let ports = sh(Command::new("ip").args(["-o", "link", "show", "master", &bridge.0]));
    assert_eq!(lines(&ports).len(), 2, "two bridge ports: {ports}");
    eventually("pod a still pings pod b", || pings(a, *ip_b));

    // Re-attaching with another address leaves eth0 with the new one only.
    let moved: Ipv4Addr = "10.250.1.200".parse().unwrap();
    attach(&ns_path(a), &bridge.0, host_a, moved, 24, gateway)
        .await
        .expect("re-attach with a new address");
    assert_pod_plumbed(a, moved, gateway);
    eventually("pod b pings pod a's new address", || pings(b, moved));

    // Detach removes the host veth and, with it, the pod's eth0; twice is fine.
    detach(host_a).await.expect("detach");
    assert!(!link_exists(host_a), "{host_a} still exists");
    let left = a.ip(&["-o", "link", "show"]);
    assert!(!left.contains(POD_IFNAME), "eth0 survived detach: {left}");
    detach(host_a).await.expect("detach again");
    assert!(!pings(b, moved), "a detached pod still answers");
    assert!(ipam.release(&pods[0].0).expect("release").is_some());
}

#[tokio::test]
async fn attach_and_bridge_errors_are_clear() {
    if !privileged("attach_and_bridge_errors_are_clear") {
        return;
    }
    let gateway: Ipv4Addr = "10.250.3.1".parse().unwrap();
    let ns = NetNs::new("kpt-pod");
    let missing = unique("kpb");
    let host = host_ifname(&unique("uid"));
    let _host_link = RootLink(host.clone());
    let ip: Ipv4Addr = "10.250.3.2".parse().unwrap();

    let err = attach(&ns_path(&ns), &missing, &host, ip, 24, gateway)
        .await
        .expect_err("attach to a missing bridge");
    assert!(
        matches!(err, Error::LinkMissing(ref n) if *n == missing),
        "{err}"
    );

    // A name taken by something that is not a bridge (a veth; this kernel may lack dummy).
    let veth = RootLink::bridge_name();
    let veth_peer = RootLink::bridge_name();
    sh(Command::new("ip").args([
        "link",
        "add",
        &veth.0,
        "type",
        "veth",
        "peer",
        "name",
        &veth_peer.0,
    ]));
    let err = ensure_bridge(&veth.0, Ipv4Net::new(gateway, 24).unwrap())
        .await
        .expect_err("ensure_bridge over a veth");
    assert!(matches!(err, Error::WrongLinkKind { .. }), "{err}");

    // detach only deletes veths.
    let bridge = RootLink::bridge_name();
    ensure_bridge(&bridge.0, Ipv4Net::new(gateway, 24).unwrap())
        .await
        .expect("ensure_bridge");
    let err = detach(&bridge.0).await.expect_err("detach of a bridge");
    assert!(matches!(err, Error::WrongLinkKind { .. }), "{err}");
    assert!(link_exists(&bridge.0), "detach must not delete a non-veth");

    // A namespace whose eth0 is not ours is refused, not clobbered.
    ns.ip(&[
        "link", "add", POD_IFNAME, "type", "veth", "peer", "name", "eth1",
    ]);
    let err = attach(&ns_path(&ns), &bridge.0, &host, ip, 24, gateway)
        .await
        .expect_err("attach over a foreign eth0");
    assert!(matches!(err, Error::ForeignEth0 { .. }), "{err}");
    assert!(!link_exists(&host), "no veth left behind");
    assert!(
        ns.ip(&["-o", "link", "show", "dev", POD_IFNAME])
            .contains("eth0@eth1")
    );

    let err = attach(
        Path::new("/nonexistent/ns"),
        &bridge.0,
        &host,
        ip,
        24,
        gateway,
    )
    .await
    .expect_err("attach to a missing namespace");
    assert!(matches!(err, Error::Setns { .. }), "{err}");
    detach(&host).await.expect("detach of a missing veth");
}

#[test]
fn forwarding_rules_are_added_once_and_removed() {
    if !privileged("forwarding_rules_are_added_once_and_removed") {
        return;
    }
    // The rules only name the bridge; it need not exist for iptables.
    let bridge = unique("kpb");
    let cidr: Ipv4Net = "10.250.2.0/24".parse().unwrap();
    let chain = if succeeds(Command::new("iptables").args(["-w", "-S", "DOCKER-USER"])) {
        "DOCKER-USER"
    } else {
        "FORWARD"
    };
    let rules = forwarding_rules(&bridge, cidr, chain);
    let tag = format!("kproxy podnet {bridge}");
    let check = |rule: &kproxy_podnet::ForwardRule| {
        succeeds(
            Command::new("iptables")
                .args(["-w", "-t", rule.table, "-C", rule.chain])
                .args(&rule.spec),
        )
    };
    let count = |table: &str, chain: &str| {
        let out = sh(Command::new("iptables").args(["-w", "-t", table, "-S", chain]));
        out.lines().filter(|l| l.contains(&tag)).count()
    };

    let guard = Forwarding::enable(&bridge, cidr);
    enable_forwarding(&bridge, cidr).expect("enable_forwarding again");
    for rule in &rules {
        assert!(check(rule), "missing: {rule:?}");
    }
    assert_eq!(count("filter", chain), 2, "accept in and out, once each");
    assert_eq!(count("nat", "POSTROUTING"), 1, "one masquerade rule");
    let masq = sh(Command::new("iptables").args(["-w", "-t", "nat", "-S", "POSTROUTING"]));
    assert!(
        masq.lines().any(|l| l.contains(&tag)
            && l.contains("-s 10.250.2.0/24 ! -d 10.250.2.0/24")
            && l.contains("MASQUERADE")),
        "{masq}"
    );
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(forward.trim(), "1");

    disable_forwarding(&bridge, cidr).expect("disable_forwarding");
    for rule in &rules {
        assert!(!check(rule), "left behind: {rule:?}");
    }
    assert_eq!(count("filter", chain), 0);
    assert_eq!(count("nat", "POSTROUTING"), 0);
    drop(guard);
}
