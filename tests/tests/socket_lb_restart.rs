//! Privileged: socket-LB while kproxy is down. Its cgroup links are pinned like the uplink's,
//! so a process connecting to a ClusterIP between a SIGKILL and the restart still gets a
//! backend; the restarted kproxy swaps its programs into the same links (no second
//! attachment) and `kproxy cleanup` detaches them. All traffic stays inside the lab's
//! namespaces and its own socket-LB cgroup (see `kproxy_tests::lab`).
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, process::Command};

use kproxy_tests::{
    bin,
    lab::{Ep, Lab, Svc, kpt},
    privileged, sh,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// The socket-LB attach types, as bpftool names them (the IPv6 ones translate IPv4-mapped
/// addresses).
const SOCK_ATTACH_TYPES: [&str; 8] = [
    "cgroup_inet4_connect",
    "cgroup_udp4_sendmsg",
    "cgroup_udp4_recvmsg",
    "cgroup_inet4_getpeername",
    "cgroup_inet6_connect",
    "cgroup_udp6_sendmsg",
    "cgroup_udp6_recvmsg",
    "cgroup_inet6_getpeername",
];
const PIN_TAGS: [&str; 8] = [
    "connect4",
    "sendmsg4",
    "recvmsg4",
    "getpeername4",
    "connect6",
    "sendmsg6",
    "recvmsg6",
    "getpeername6",
];

/// Attach type → number of programs attached directly to `cgroup` (not inherited).
fn cgroup_attachments(cgroup: &Path) -> BTreeMap<String, usize> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool cgroup show: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let progs: Vec<Value> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bpftool JSON {text:?}: {e}"))
    };
    let mut m = BTreeMap::new();
    for p in progs {
        *m.entry(p["attach_type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

/// (link id, program id) of each pinned socket-LB link.
fn pinned_links(bpffs: &Path) -> Vec<(u64, u64)> {
    PIN_TAGS
        .iter()
        .map(|tag| {
            let pin = bpffs.join(format!("link_sock_{tag}"));
            let out = Command::new("bpftool")
                .args(["-j", "link", "show", "pinned"])
                .arg(&pin)
                .output()
                .expect("run bpftool");
            assert!(out.status.success(), "{}: {out:?}", pin.display());
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            (v["id"].as_u64().unwrap(), v["prog_id"].as_u64().unwrap())
        })
        .collect()
}

/// `count` TCP connections to the VIP from a process in the socket-LB cgroup.
fn connect_vip(lab: &Lab, count: usize) -> Vec<Value> {
    let res = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["tcp", &format!("{VIP}:80"), "--count", &count.to_string()],
    );
    assert_eq!(res.len(), count, "one result per connection: {res:?}");
    res
}

fn assert_all_reach_backends(res: &[Value], when: &str) {
    for r in res {
        assert_eq!(r["ok"], true, "{when}: a connection to the VIP failed: {r}");
        assert!(
            r["name"].as_str().is_some_and(|n| n.starts_with('b')),
            "{when}: not answered by a backend: {r}"
        );
        // TCP keeps no socket rev-NAT entry: getpeername reports the backend.
        assert!(
            r["getpeername"]
                .as_str()
                .is_some_and(|p| p.starts_with("10.244.1.") && p.ends_with(":8080")),
            "{when}: getpeername reports the backend: {r}"
        );
    }
}

#[test]
fn privileged_socket_lb_translates_while_kproxy_is_down() {
    if !privileged("privileged_socket_lb_translates_while_kproxy_is_down") {
        return;
    }
    let mut lab = Lab::new(2);
    lab.set_services(&[Svc::cluster_ip(
        "sockrestart",
        VIP,
        vec![Ep::ready(0), Ep::ready(1)],
    )]);
    lab.start_kproxy("auto", "xdp");
    assert_all_reach_backends(&connect_vip(&lab, 10), "kproxy running");
    let once: BTreeMap<String, usize> = SOCK_ATTACH_TYPES
        .iter()
        .map(|t| ((*t).to_string(), 1))
        .collect();
    assert_eq!(cgroup_attachments(lab.cgroup.path()), once);

    // kproxy is gone (no cleanup at all); new connections are still load balanced. Without
    // the pinned links they would fail: the node namespace has no route to the VIP (checked
    // after `kproxy cleanup` below).
    lab.kill_kproxy();
    let res = connect_vip(&lab, 20);
    assert_all_reach_backends(&res, "kproxy down");
    let udp = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["udp", &format!("{VIP}:53"), "--count", "5"],
    );
    assert!(
        udp.len() == 5
            && udp
                .iter()
                .all(|r| r["ok"] == true && r["from"] == format!("{VIP}:53")),
        "UDP through the pinned sendmsg4/recvmsg4 links while kproxy is down: {udp:?}"
    );

    // The restarted kproxy reuses the pinned links: same link ids, new programs in them,
    // still one attachment per type.
    let before = pinned_links(lab.bpffs.path());
    lab.start_kproxy("auto", "xdp");
    assert!(
        lab.kproxy().logged("reused_pinned_links=8"),
        "the restart swapped its programs into the 8 pinned links"
    );
    let after = pinned_links(lab.bpffs.path());
    for ((id0, prog0), (id1, prog1)) in before.iter().zip(&after) {
        assert_eq!(id0, id1, "the pinned link is reused, not re-created");
        assert_ne!(prog0, prog1, "the new kproxy's program runs in the link");
    }
    assert_eq!(cgroup_attachments(lab.cgroup.path()), once);
    assert_all_reach_backends(&connect_vip(&lab, 10), "after the restart");

    // `kproxy cleanup` (kproxy stopped) detaches them.
    lab.kill_kproxy();
    sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .arg("cleanup"));
    assert_eq!(cgroup_attachments(lab.cgroup.path()), BTreeMap::new());
    let res = connect_vip(&lab, 1);
    assert_eq!(
        res[0]["ok"], false,
        "without socket-LB the VIP is unreachable in the lab: {res:?}"
    );
}
