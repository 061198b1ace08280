//! Privileged: ICMP through service addresses (issue 15, item 1). Errors about translated
//! flows are translated too: PMTU discovery works through a LoadBalancer IP, a connected
//! UDP client of a backend without listener gets ECONNREFUSED; echo requests to a VIP are
//! answered (see `kproxy-ebpf/src/icmp.rs`).
#![forbid(unsafe_code)]

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use kproxy_tests::{
    NetNs,
    lab::{Ep, Lab, REMOTE_CLIENT_IP, Svc, kpt},
    privileged,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const CLOSED_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const CLOSED_LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 20);
/// The MTU of the router's side of the remote client's link.
const SMALL_MTU: &str = "1280";

fn web(endpoints: Vec<Ep>) -> Svc {
    Svc {
        lb_ip: Some(LB_IP),
        ..Svc::cluster_ip("web", VIP, endpoints)
    }
}

/// Services `web` (backends 0 and 1 serving) and `closed` (backend 0, on a port nobody
/// listens on), with kproxy's pod programs on every backend's veth.
fn lab(n: usize, xdp_mode: &str, lb_mode: &str) -> Lab {
    let mut lab = Lab::new(n);
    let mut yaml = String::new();
    web((0..n).map(Ep::ready).collect()).yaml(&mut yaml);
    let mut closed = String::new();
    Svc {
        lb_ip: Some(CLOSED_LB_IP),
        ..Svc::cluster_ip("closed", CLOSED_VIP, vec![Ep::ready(0)])
    }
    .yaml(&mut closed);
    yaml.push_str(
        &closed
            .replace("targetPort: 8080", "targetPort: 9999")
            .replace("port: 8080", "port: 9999"),
    );
    lab.write_raw_manifest(&yaml);
    let ifaces: Vec<String> = (0..n).map(|i| format!("vb{i}")).collect();
    let mut extra = Vec::new();
    for i in &ifaces {
        extra.extend(["--pod-iface", i.as_str()]);
    }
    lab.start_kproxy_with(xdp_mode, lb_mode, &extra);
    lab
}

/// The lab's remote client (one routed hop behind the client namespace) with the MTU of
/// the router's side of its link lowered: it announces a 1460-byte MSS, so full-size
/// segments reach the router, which answers them with "fragmentation needed" sent to their
/// source, the LoadBalancer IP.
fn far_host(lab: &Lab) -> NetNs {
    let far = lab.add_remote_client();
    lab.client.ip(&["link", "set", "rc0", "mtu", SMALL_MTU]);
    far
}

fn pmtu_through_lb_ip(xdp_mode: &str, lb_mode: &str) {
    let lab = lab(1, xdp_mode, lb_mode);
    let far = far_host(&lab);
    // The backend streams full-size segments with DF set until the client goes away.
    let res = Lab::kpt_net(
        far.cmd(kpt()),
        &["bulk", &format!("{LB_IP}:80"), "--duration-ms", "1500"],
    );
    assert_eq!(res.len(), 1, "{res:?}");
    let bytes = res[0]["bytes"].as_u64().unwrap_or(0);
    assert!(
        bytes > 1_000_000,
        "large reply through the LB IP stalled (PMTU): {res:?}"
    );
    // The backend learned the path MTU to the far host from the translated error.
    let route = lab.backends[0].ip(&["route", "get", &REMOTE_CLIENT_IP.to_string()]);
    assert!(
        route.contains(&format!("mtu {SMALL_MTU}")),
        "backend's route cache: {route}"
    );
}

#[test]
fn privileged_pmtu_through_lb_ip_xdp() {
    if privileged("privileged_pmtu_through_lb_ip_xdp") {
        pmtu_through_lb_ip("auto", "xdp");
    }
}

#[test]
fn privileged_pmtu_through_lb_ip_tc() {
    if privileged("privileged_pmtu_through_lb_ip_tc") {
        pmtu_through_lb_ip("auto", "tc");
    }
}

/// One connected UDP exchange; the result line and how long it took.
fn connected_udp(cmd: std::process::Command, target: &str) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let res = Lab::kpt_net(cmd, &["udp", target, "--connected"]);
    let took = started.elapsed();
    assert_eq!(res.len(), 1, "{res:?}");
    (res[0].clone(), took)
}

fn udp_refused(xdp_mode: &str, lb_mode: &str) {
    let lab = lab(2, xdp_mode, lb_mode);
    // An external client (uplink) and a pod outside socket-LB (its veth's tc program):
    // the backend's port unreachable reaches both as coming from the service.
    let cases = [
        (lab.client_cmd(&kpt()), format!("{CLOSED_LB_IP}:53")),
        (lab.backends[1].cmd(kpt()), format!("{CLOSED_VIP}:53")),
    ];
    for (cmd, target) in cases {
        let (res, took) = connected_udp(cmd, &target);
        assert_eq!(res["ok"], false, "{target}: {res}");
        assert_eq!(res["kind"], "ConnectionRefused", "{target}: {res}");
        // The read timeout is 2 s: a refusal comes at once.
        assert!(
            took < Duration::from_millis(1500),
            "{target}: took {took:?}"
        );
    }
    // The open service still answers on the same paths.
    let (res, _) = connected_udp(lab.client_cmd(&kpt()), &format!("{LB_IP}:53"));
    assert_eq!(res["ok"], true, "{res}");
}

#[test]
fn privileged_connected_udp_refused_xdp() {
    if privileged("privileged_connected_udp_refused_xdp") {
        udp_refused("auto", "xdp");
    }
}

#[test]
fn privileged_connected_udp_refused_tc() {
    if privileged("privileged_connected_udp_refused_tc") {
        udp_refused("auto", "tc");
    }
}

fn ping(mut cmd: std::process::Command, addr: Ipv4Addr) -> std::process::Output {
    cmd.args(["-c", "2", "-i", "0.2", "-W", "2", &addr.to_string()])
        .output()
        .expect("run ping")
}

fn pings_answered(xdp_mode: &str, lb_mode: &str) {
    let lab = lab(2, xdp_mode, lb_mode);
    let cases = [
        ("client -> LB IP", lab.client_cmd("ping"), LB_IP),
        ("pod -> ClusterIP", lab.backends[1].cmd("ping"), VIP),
        ("pod -> LB IP", lab.backends[1].cmd("ping"), LB_IP),
        (
            "client -> LB IP without backend listener",
            lab.client_cmd("ping"),
            CLOSED_LB_IP,
        ),
    ];
    for (what, cmd, addr) in cases {
        let out = ping(cmd, addr);
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A ClusterIP is not reachable from outside: no answer for the uplink.
    let out = ping(lab.client_cmd("ping"), VIP);
    assert!(!out.status.success(), "client -> ClusterIP answered");

    // A restarted kproxy finds the addresses where it left them (it reads the pinned
    // bucket array back) and rewrites nothing.
    let mut lab = lab;
    lab.kill_kproxy();
    let pod_ifaces = ["--pod-iface", "vb0", "--pod-iface", "vb1"];
    lab.start_kproxy_with(xdp_mode, lb_mode, &pod_ifaces);
    assert!(lab.kproxy().logged("map_ops=0"), "restart rewrote maps");
    for (what, cmd, addr) in [
        (
            "after restart: pod -> ClusterIP",
            lab.backends[1].cmd("ping"),
            VIP,
        ),
        (
            "after restart: client -> LB IP",
            lab.client_cmd("ping"),
            LB_IP,
        ),
    ] {
        let out = ping(cmd, addr);
        assert!(out.status.success(), "{what}");
    }
}

#[test]
fn privileged_ping_vips_xdp() {
    if privileged("privileged_ping_vips_xdp") {
        pings_answered("auto", "xdp");
    }
}

#[test]
fn privileged_ping_vips_tc() {
    if privileged("privileged_ping_vips_tc") {
        pings_answered("auto", "tc");
    }
}
