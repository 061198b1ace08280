//! Privileged: `--socket-lb-scope host --socket-lb-cgroup DIR`. Socket-LB sits on the
//! cgroup v2 root but translates only the sockets of kproxy's own network namespace, plus
//! those of processes under DIR whatever their namespace (a node's pods, placed there by the
//! kubelet's `--cgroup-parent`). A process in a pod namespace inside the lab's cgroup gets
//! its connect() to a ClusterIP translated; the same process outside the cgroup does not;
//! without the flag at the next start, the pinned configuration no longer names the cgroup.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use kproxy_tests::{
    lab::{Ep, Lab, Svc, kpt},
    privileged,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);

/// One TCP connection to the VIP made by `cmd`'s process.
fn connect(cmd: std::process::Command) -> Value {
    let target = format!("{VIP}:80");
    Lab::kpt_net(cmd, &["tcp", &target, "--count", "1"])
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

/// Whether socket-LB rewrote the connect: it succeeded and the socket's peer is the backend
/// (a per-packet translation would leave the VIP as the peer).
fn translated(v: &Value) -> bool {
    v["ok"] == true
        && v["getpeername"]
            .as_str()
            .is_some_and(|p| p.starts_with("10.244.1."))
}

fn start(lab: &mut Lab, cgroup: bool) {
    let dir = lab.cgroup.path().to_string_lossy().into_owned();
    let mut extra = vec!["--socket-lb-scope", "host"];
    if cgroup {
        extra.extend(["--socket-lb-cgroup", &dir]);
    }
    lab.start_kproxy_with("auto", "xdp", &extra);
}

#[test]
fn socket_lb_covers_the_cgroup_in_any_namespace() {
    if !privileged("socket_lb_covers_the_cgroup_in_any_namespace") {
        return;
    }
    let mut lab = Lab::new(2);
    lab.set_services(&[Svc::cluster_ip("sockcg", VIP, vec![Ep::ready(1)])]);
    start(&mut lab, true);

    // A "pod" process: backend 0's namespace, inside the cgroup.
    let pod = connect(lab.pod_cmd(0, &kpt()));
    assert!(translated(&pod), "pod in the cgroup: {pod}");
    assert_eq!(pod["name"], "b1", "{pod}");
    // The same namespace outside the cgroup: not socket-LB's.
    let outside = connect(lab.backends[0].cmd(kpt()));
    assert!(!translated(&outside), "outside the cgroup: {outside}");
    // kproxy's own namespace (the "host"), outside the cgroup: host scope.
    let host = connect(lab.node.cmd(kpt()));
    assert!(translated(&host), "host namespace: {host}");

    // Restarted without the flag: the pinned config map forgets the cgroup.
    lab.kill_kproxy();
    start(&mut lab, false);
    let pod = connect(lab.pod_cmd(0, &kpt()));
    assert!(!translated(&pod), "cgroup scope cleared: {pod}");
    let host = connect(lab.node.cmd(kpt()));
    assert!(translated(&host), "host namespace after restart: {host}");
}
