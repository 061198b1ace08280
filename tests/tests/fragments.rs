//! Privileged: IPv4 fragments through the service load balancer. A 3,000-byte UDP datagram
//! (fragmented by the sender at MTU 1500) to a LoadBalancer IP, a NodePort (XDP and tc LB
//! modes) and a ClusterIP from a pod namespace (the pod veth's per-packet tc path) reaches
//! one backend whole, and the backend's 3,000-byte reply (fragmented too) reaches the client
//! whole, from the service address. A lone later fragment is counted as fragment-missing.
#![forbid(unsafe_code)]

use std::{collections::BTreeSet, net::Ipv4Addr, process::Command};

use kproxy_tests::{
    bin,
    lab::{CLIENT_IP, Ep, Lab, NODE_IP, Svc, kpt},
    privileged, sh,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const NODE_PORT: u16 = 30080;
/// Larger than the 1,500-byte MTU of every link in the lab: three fragments.
const SIZE: &str = "3000";

fn lab(xdp_mode: &str, lb_mode: &str) -> Lab {
    let mut lab = Lab::new(3);
    lab.set_services(&[Svc {
        lb_ip: Some(LB_IP),
        node_port: Some(NODE_PORT),
        ..Svc::cluster_ip("big", VIP, (0..3).map(Ep::ready).collect())
    }]);
    // Pod veths get the per-packet programs; pods' processes run outside the socket-LB
    // cgroup (`backends[i].cmd`), so their service traffic takes that path.
    lab.start_kproxy_with(xdp_mode, lb_mode, &["--pod-bridge", "br0"]);
    lab
}

/// `kpt-net udp-big` from `cmd`: every datagram answered whole, from `target`; the backend
/// names that answered, in order.
fn big_udp(cmd: Command, target: &str, args: &[&str], count: usize) -> Vec<String> {
    let mut all = vec!["udp-big", target, "--size", SIZE, "--count"];
    let count_s = count.to_string();
    all.push(&count_s);
    all.extend(args);
    let res = Lab::kpt_net(cmd, &all);
    assert_eq!(res.len(), count, "{target}: {res:?}");
    res.iter()
        .map(|r| {
            assert_eq!(r["ok"], true, "{target}: {r}");
            assert_eq!(r["from"], target, "{target}: reply source: {r}");
            r["name"].as_str().expect("name").to_string()
        })
        .collect()
}

/// Large datagrams from one fixed source port all reach the same backend (one flow); from
/// new sockets, they spread over backends (each its own flow) and still arrive whole.
fn one_backend_per_flow(cmd: impl Fn() -> Command, target: &str, sport: &str) {
    let fixed = big_udp(cmd(), target, &["--sport", sport], 6);
    let backends: BTreeSet<&String> = fixed.iter().collect();
    assert_eq!(
        backends.len(),
        1,
        "{target}: one flow, one backend: {fixed:?}"
    );
    let spread = big_udp(cmd(), target, &[], 12);
    let backends: BTreeSet<&String> = spread.iter().collect();
    assert!(backends.len() >= 2, "{target}: flows spread: {spread:?}");
}

/// External client to the LB IP and the NodePort; the backend sees the client's address.
fn external(lab: &Lab) {
    for (target, sport) in [
        (format!("{LB_IP}:53"), "41000"),
        (format!("{NODE_IP}:{}", NODE_PORT + 1), "41001"),
    ] {
        one_backend_per_flow(|| lab.client_cmd(&kpt()), &target, sport);
        let res = Lab::kpt_net(
            lab.client_cmd(&kpt()),
            &["udp-big", &target, "--size", SIZE],
        );
        let seen = res[0]["seen_peer"].as_str().unwrap_or_default();
        assert!(
            seen.starts_with(&format!("{CLIENT_IP}:")),
            "{target}: backend saw {seen}"
        );
    }
}

/// A pod reaching the ClusterIP through its veth's tc program (including, by chance of the
/// hash, itself: hairpin).
fn from_pod(lab: &Lab) {
    let target = format!("{VIP}:53");
    one_backend_per_flow(|| lab.backends[1].cmd(kpt()), &target, "42000");
}

/// Drop counters per reason from `kproxy dump --drops`.
fn drops(lab: &Lab, reason: &str) -> u64 {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["dump", "--drops", "-o", "json"]));
    let rows: Value = serde_json::from_str(&out).expect("drops json");
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["reason"] == reason)
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {reason} row in {rows}"))
}

/// Lone later fragments (their first fragment never sent) pass untranslated and are counted
/// once each. Sent before any large datagram, so no recorded first fragment can match.
fn lone_fragments_counted(lab: &Lab) {
    let before = drops(lab, "fragment-missing");
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["frag-tail", &format!("{LB_IP}:53"), "--count", "5"],
    );
    assert_eq!(res[0]["ok"], true, "{res:?}");
    let after = drops(lab, "fragment-missing");
    assert_eq!(after - before, 5, "fragment-missing counted per packet");
}

#[test]
fn privileged_fragments_via_xdp() {
    if !privileged("privileged_fragments_via_xdp") {
        return;
    }
    let lab = lab("auto", "xdp");
    lone_fragments_counted(&lab);
    external(&lab);
    from_pod(&lab);
}

#[test]
fn privileged_fragments_via_tc() {
    if !privileged("privileged_fragments_via_tc") {
        return;
    }
    let lab = lab("driver", "tc");
    lone_fragments_counted(&lab);
    external(&lab);
    from_pod(&lab);
}
