//! Privileged: the node's own traffic to service addresses that nothing translated (issue 15,
//! item 1). kproxy routes its keep-local ranges (service CIDR, LoadBalancer pool) to the
//! keep-local device, whose program answers pings to service addresses and refuses the
//! rest (kproxy-ebpf `keep_local.rs`). The lab's node namespace plays the node: kproxy runs
//! standalone there with `--keep-local`, and the "host" commands run there too.
#![forbid(unsafe_code)]

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    time::{Duration, Instant},
};

use kproxy_tests::{
    Daemon, bin,
    lab::{Ep, Lab, NODE_IP, Svc, kpt},
    privileged, sh,
};

const SVC_CIDR: &str = "10.96.0.0/12";
const POOL: &str = "172.30.0.0/24";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 40);
/// In the service CIDR, used by no Service.
const UNUSED: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 41);
/// A port the Services do not serve, where the node has a listener on 0.0.0.0.
const HOST_PORT: u16 = 9999;
/// The keep-local device (kproxy's default name; the node namespace is the lab's own).
const DEV: &str = "kproxy0";

fn ping(mut cmd: Command, addr: Ipv4Addr) -> (Output, Duration) {
    let started = Instant::now();
    let out = cmd
        .args(["-c", "2", "-i", "0.2", "-W", "2", &addr.to_string()])
        .output()
        .expect("run ping");
    (out, started.elapsed())
}

fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One `kpt-net` client run; its single result line and how long it took.
fn one(cmd: Command, args: &[&str]) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let res = Lab::kpt_net(cmd, args);
    let took = started.elapsed();
    assert_eq!(res.len(), 1, "{args:?}: {res:?}");
    (res[0].clone(), took)
}

fn lab() -> Lab {
    let mut lab = Lab::new(2);
    lab.set_services(&[Svc {
        lb_ip: Some(LB_IP),
        ..Svc::cluster_ip("web", VIP, vec![Ep::ready(0), Ep::ready(1)])
    }]);
    lab.start_kproxy_with(
        "auto",
        "xdp",
        &["--keep-local", SVC_CIDR, "--keep-local", POOL],
    );
    lab
}

fn host_traffic_to_vips() {
    let mut lab = lab();
    // Strict reverse-path filtering: the answers arrive on the keep-local device from the
    // service address, whose route is that device, so they pass.
    sh(lab
        .node
        .cmd("sysctl")
        .args(["-qw", "net.ipv4.conf.all.rp_filter=1"]));
    let routes = lab.node.ip(&["-4", "route", "show"]);
    for cidr in [SVC_CIDR, POOL] {
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with(&format!("{cidr} dev {DEV}"))),
            "{cidr} routed to {DEV}:\n{routes}"
        );
    }
    // A listener of the node on every address, on a port no Service serves.
    let listener = Daemon::spawn_until_logged(
        {
            let mut cmd = lab.node.cmd(kpt());
            cmd.args(["serve", "--name", "host", "--port", &HOST_PORT.to_string()]);
            cmd
        },
        "serving",
    );

    // Pings from the node itself to the ClusterIP and the LB IP are answered.
    for addr in [VIP, LB_IP] {
        let (out, _) = ping(lab.host_cmd("ping"), addr);
        assert!(out.status.success(), "host -> {addr}: {}", show(&out));
    }
    // An address no Service uses fails at once (host unreachable), as the unreachable
    // route made it.
    let (out, took) = ping(lab.host_cmd("ping"), UNUSED);
    assert!(!out.status.success(), "host -> {UNUSED} answered");
    assert!(
        show(&out).contains("Unreachable") && took < Duration::from_millis(1500),
        "host -> {UNUSED} ({took:?}): {}",
        show(&out)
    );
    let (res, took) = one(lab.host_cmd(&kpt()), &["tcp", &format!("{UNUSED}:80")]);
    assert_eq!(res["kind"], "HostUnreachable", "{res}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // TCP and UDP to a service address on a port it does not serve are refused at once,
    // never reach the node's listener on 0.0.0.0.
    for addr in [VIP, LB_IP] {
        let target = format!("{addr}:{HOST_PORT}");
        let (res, took) = one(lab.host_cmd(&kpt()), &["tcp", &target]);
        assert_eq!(res["ok"], false, "{target} reached a listener: {res}");
        assert_eq!(res["kind"], "ConnectionRefused", "{target}: {res}");
        assert!(
            took < Duration::from_millis(1500),
            "{target}: took {took:?}"
        );
        let (res, took) = one(lab.host_cmd(&kpt()), &["udp", &target, "--connected"]);
        assert_eq!(res["kind"], "ConnectionRefused", "udp {target}: {res}");
        assert!(
            took < Duration::from_millis(1500),
            "udp {target}: took {took:?}"
        );
    }
    // The listener is there and answers on the node's own address.
    let (res, _) = one(
        lab.host_cmd(&kpt()),
        &["tcp", &format!("{NODE_IP}:{HOST_PORT}")],
    );
    assert_eq!(res["name"], "host", "{res}");
    drop(listener);

    // Service ports: socket-LB translates before routing, as before.
    for addr in [VIP, LB_IP] {
        let (res, _) = one(lab.host_cmd(&kpt()), &["tcp", &format!("{addr}:80")]);
        assert_eq!(res["ok"], true, "host -> {addr}:80: {res}");
        let (res, _) = one(lab.host_cmd(&kpt()), &["udp", &format!("{addr}:53")]);
        assert_eq!(res["ok"], true, "host -> {addr}:53: {res}");
    }
    // Forwarded traffic: the external client still gets the LB IP's echo replies (uplink),
    // no answer from a ClusterIP, and a refusal for a port the LB IP does not serve.
    let (out, _) = ping(lab.client_cmd("ping"), LB_IP);
    assert!(out.status.success(), "client -> LB IP: {}", show(&out));
    let (out, _) = ping(lab.client_cmd("ping"), VIP);
    assert!(!out.status.success(), "client -> ClusterIP answered");
    let (res, took) = one(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:{HOST_PORT}")],
    );
    assert_eq!(res["kind"], "ConnectionRefused", "client: {res}");
    assert!(took < Duration::from_millis(1500), "client: took {took:?}");
    let (res, _) = one(lab.client_cmd(&kpt()), &["tcp", &format!("{LB_IP}:80")]);
    assert_eq!(res["ok"], true, "client -> LB IP:80: {res}");

    let drops = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["dump", "--drops", "-o", "json"]));
    let drops: serde_json::Value = serde_json::from_str(&drops).expect("drops json");
    let refused = drops
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["reason"] == "not-a-service"))
        .map_or(0, |r| r["packets"].as_u64().unwrap_or(0));
    assert!(refused >= 7, "not-a-service counted {refused}: {drops}");

    // The pinned link keeps answering while kproxy is down, and a restarted kproxy takes
    // the device and its link over.
    lab.kill_kproxy();
    let (out, _) = ping(lab.host_cmd("ping"), VIP);
    assert!(out.status.success(), "kproxy down: {}", show(&out));
    lab.start_kproxy_with(
        "auto",
        "xdp",
        &["--keep-local", SVC_CIDR, "--keep-local", POOL],
    );
    let (out, _) = ping(lab.host_cmd("ping"), LB_IP);
    assert!(out.status.success(), "after restart: {}", show(&out));

    // `kproxy cleanup` gives the ranges back to unreachable routes and deletes the device:
    // still nothing leaves the node, and pings fail at once.
    lab.kill_kproxy();
    sh(lab
        .node
        .cmd(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .arg("cleanup"));
    let routes = lab.node.ip(&["-4", "route", "show"]);
    for cidr in [SVC_CIDR, POOL] {
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with(&format!("unreachable {cidr}"))),
            "unreachable {cidr} after cleanup:\n{routes}"
        );
    }
    let links = lab.node.ip(&["link", "show"]);
    assert!(!links.contains(DEV), "{DEV} left after cleanup:\n{links}");
    let (out, took) = ping(lab.node.cmd("ping"), VIP);
    assert!(
        !out.status.success() && took < Duration::from_millis(1500),
        "after cleanup ({took:?}): {}",
        show(&out)
    );
}

#[test]
fn privileged_host_pings_vips_and_refuses_other_ports() {
    if privileged("privileged_host_pings_vips_and_refuses_other_ports") {
        host_traffic_to_vips();
    }
}
