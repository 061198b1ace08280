//! Privileged: `--pod-bridge` follows pod veths through rtnetlink link events. A pod whose
//! veth joins the bridge after kproxy started reaches a ClusterIP through the per-packet tc
//! path (socket-LB is off, and the node has no route to the service range, so nothing else
//! could answer); deleting the veth detaches it (no stale pin, kproxy keeps running);
//! re-creating it attaches it again.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use kproxy_tests::{
    NetNs, eventually,
    lab::{Ep, Lab, Svc, kpt},
    privileged, veth_pair,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// The late pod's host-side veth.
const POD_VETH: &str = "vlate0";

/// Log lines with `message` about interface `iface` (the `iface=` field, matched whole).
fn iface_lines(lab: &mut Lab, message: &str, iface: &str) -> usize {
    let field = format!("iface={iface}");
    lab.kproxy()
        .lines()
        .iter()
        .filter(|l| l.contains(message) && l.split_whitespace().any(|w| w == field))
        .count()
}

/// `count` TCP requests to the ClusterIP from `cmd`'s namespace; every one must be
/// answered, and by the service's backends only.
fn requests_answered(cmd: std::process::Command, count: usize) -> BTreeMap<String, usize> {
    let res = Lab::kpt_net(
        cmd,
        &["tcp", &format!("{VIP}:80"), "--count", &count.to_string()],
    );
    assert_eq!(res.len(), count, "one result per request: {res:?}");
    let mut by_backend = BTreeMap::new();
    for r in &res {
        assert_eq!(r["ok"], Value::Bool(true), "a request failed: {r}");
        assert_eq!(r["getpeername"], format!("{VIP}:80"), "reverse NAT: {r}");
        *by_backend
            .entry(r["name"].as_str().expect("backend name").to_string())
            .or_default() += 1;
    }
    assert!(
        by_backend.keys().all(|b| b == "b0" || b == "b1"),
        "{by_backend:?}"
    );
    by_backend
}

/// The late pod's veth pair: `eth0` with `cidr` in `pod`, `POD_VETH` on the node, enslaved
/// to br0.
fn plug_pod(lab: &Lab, pod: &NetNs, cidr: &str) {
    veth_pair(pod, "eth0", cidr, &lab.node, POD_VETH, "10.255.50.1/32");
    pod.ip(&["route", "add", "default", "via", "10.244.1.1"]);
    lab.node.ip(&["link", "set", POD_VETH, "master", "br0"]);
}

#[test]
fn privileged_pod_veths_follow_link_events() {
    if !privileged("privileged_pod_veths_follow_link_events") {
        return;
    }
    let mut lab = Lab::new(2);
    // A bridge without an assigned MAC takes the lowest of its ports' MACs, so adding or
    // deleting a port can change the gateway's MAC under the other pods' ARP caches (their
    // traffic then stalls for seconds). Pin it, as a node's pod bridge should be.
    lab.node
        .ip(&["link", "set", "br0", "address", "02:42:0a:f4:01:01"]);
    lab.set_services(&[Svc::cluster_ip(
        "late",
        VIP,
        vec![Ep::ready(0), Ep::ready(1)],
    )]);
    lab.start_kproxy_with("auto", "xdp", &["--no-socket-lb", "--pod-bridge", "br0"]);
    let pin: PathBuf = lab.bpffs.path().join(format!("link_tc_pod_{POD_VETH}"));

    // The backends' veths were on the bridge already: attached at start.
    for vb in ["vb0", "vb1"] {
        assert_eq!(
            iface_lines(&mut lab, "pod interface attached", vb),
            1,
            "{vb} attached once at start"
        );
    }
    let spread = requests_answered(lab.backends[1].cmd(kpt()), 20);
    assert_eq!(spread.len(), 2, "b1 reached b0 and itself: {spread:?}");

    // A pod that appears after kproxy started.
    let pod = NetNs::new("kpt-late");
    plug_pod(&lab, &pod, "10.244.1.50/24");
    eventually("the late pod's veth attached", || {
        lab.kproxy().assert_running();
        iface_lines(&mut lab, "pod interface attached", POD_VETH) == 1
    });
    assert!(pin.exists(), "tc link pinned at {}", pin.display());
    let spread = requests_answered(pod.cmd(kpt()), 40);
    assert_eq!(
        spread.len(),
        2,
        "both backends answer the late pod: {spread:?}"
    );

    // Gone: detached, pin removed, kproxy still serving the other pods.
    lab.node.ip(&["link", "del", POD_VETH]);
    eventually("the late pod's veth detached", || {
        lab.kproxy().assert_running();
        iface_lines(&mut lab, "pod interface detached", POD_VETH) == 1
    });
    assert!(!pin.exists(), "pinned tc link removed with the veth");
    requests_answered(lab.backends[0].cmd(kpt()), 10);

    // Back under the same name (a new ifindex): attached again, and works again. The pod
    // gets a new address, as IPAM would hand out: the backends may still have the old
    // address's neighbour entry with the deleted eth0's MAC.
    plug_pod(&lab, &pod, "10.244.1.51/24");
    eventually("the re-created veth attached", || {
        lab.kproxy().assert_running();
        iface_lines(&mut lab, "pod interface attached", POD_VETH) == 2
    });
    assert!(pin.exists(), "tc link pinned again at {}", pin.display());
    let spread = requests_answered(pod.cmd(kpt()), 40);
    assert_eq!(spread.len(), 2, "{spread:?}");
    lab.kproxy().assert_running();
    assert_eq!(
        lab.kproxy().count_logged("cannot attach the pod program"),
        0,
        "no attach failed"
    );

    // Deleted while kproxy is down: nobody sees the event, so the restarted kproxy removes
    // the pin it finds for an interface that is no pod veth any more.
    lab.kill_kproxy();
    lab.node.ip(&["link", "del", POD_VETH]);
    assert!(
        pin.exists(),
        "the pin outlives the veth while kproxy is down"
    );
    lab.start_kproxy_with("auto", "xdp", &["--no-socket-lb", "--pod-bridge", "br0"]);
    assert!(
        lab.kproxy()
            .logged("removed the pinned links of pod veths gone while kproxy was down"),
        "stale pin sweep logged"
    );
    assert!(!pin.exists(), "stale pin removed at start");
    requests_answered(lab.backends[0].cmd(kpt()), 10);
}
