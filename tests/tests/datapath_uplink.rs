//! Privileged: kproxy attaches XDP and tc programs to a veth inside a node namespace; real
//! traffic from a client namespace flows through it; the per-CPU counters read back from
//! the pinned maps match exactly what was sent, and an aya-log event reaches kproxy's log.
#![forbid(unsafe_code)]

use std::process::Command;

use kproxy_tests::{BpffsDir, Daemon, bin, eventually, lab::Topology, privileged, sh};
use serde_json::Value;

const PINGS: u64 = 5;
/// 14 (Ethernet) + 20 (IPv4) + 8 (ICMP) + 56 (ping's default payload).
const PING_FRAME: u64 = 98;

fn counter(rows: &Value, hook: &str, class: &str) -> (u64, u64) {
    let row = rows
        .as_array()
        .expect("dump -o json is an array")
        .iter()
        .find(|r| r["hook"] == hook && r["class"] == class)
        .unwrap_or_else(|| panic!("no row {hook}/{class} in {rows}"));
    (
        row["packets"].as_u64().unwrap(),
        row["bytes"].as_u64().unwrap(),
    )
}

fn dump(bpffs: &BpffsDir) -> Value {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(bpffs.path())
        .args(["ifstats", "-o", "json"]));
    serde_json::from_str(&out).expect("dump output is JSON")
}

fn uplink_counts_match_traffic(xdp_mode: &str) {
    // Client and node namespaces joined by the uplink veth (no backends needed here).
    let Topology { client, node, .. } = Topology::build("kpt-up", 0);
    let bpffs = BpffsDir::new("kpt");

    let mut cmd = node.cmd(bin("kproxy"));
    cmd.arg("--bpffs").arg(bpffs.path()).args([
        "standalone",
        "--uplink",
        "up0",
        "--xdp-mode",
        xdp_mode,
        "--debug-events",
        "--no-socket-lb",
    ]);
    let mut kproxy = Daemon::spawn(cmd);
    eventually("kproxy attached", || {
        kproxy.assert_running();
        kproxy.logged("kproxy ready")
    });
    assert!(
        kproxy.logged(&format!(
            "xdp_mode={}",
            if xdp_mode == "generic" {
                "Generic"
            } else {
                "Driver"
            }
        )),
        "kproxy did not report the XDP mode it was asked for"
    );

    let before = dump(&bpffs);
    sh(client.cmd("ping").args([
        "-c",
        &PINGS.to_string(),
        "-i",
        "0.05",
        "-W",
        "2",
        "192.0.2.2",
    ]));
    let after = dump(&bpffs);
    let delta = |hook, class| {
        let (p1, b1) = counter(&after, hook, class);
        let (p0, b0) = counter(&before, hook, class);
        (p1 - p0, b1 - b0)
    };
    // Echo requests arrive on up0 (XDP, then tc ingress); echo replies leave it (tc egress).
    assert_eq!(delta("xdp-ingress", "icmp"), (PINGS, PINGS * PING_FRAME));
    assert_eq!(delta("tc-ingress", "icmp"), (PINGS, PINGS * PING_FRAME));
    assert_eq!(delta("tc-egress", "icmp"), (PINGS, PINGS * PING_FRAME));
    assert_eq!(delta("xdp-ingress", "tcp").0, 0, "no TCP was sent");

    eventually("an aya-log event in kproxy's log", || {
        kproxy.logged("xdp-ingress icmp 192.0.2.1 -> 192.0.2.2 len 98")
    });

    // Runtime switch: with debug events off, new packets log nothing.
    sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(bpffs.path())
        .args(["debug", "off"]));
    sh(client
        .cmd("ping")
        .args(["-c", "1", "-s", "100", "-W", "2", "192.0.2.2"]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !kproxy.logged("len 142"),
        "debug events still emitted after `kproxy debug off`"
    );

    // Stopping kproxy leaves the datapath in place (pinned links and maps): packets are
    // still counted. `kproxy cleanup` detaches it.
    let status = kproxy.terminate();
    assert!(status.success(), "kproxy exit status {status}");
    sh(client.cmd("ping").args(["-c", "1", "-W", "2", "192.0.2.2"]));
    let (pkts, _) = counter(&dump(&bpffs), "xdp-ingress", "icmp");
    assert_eq!(
        pkts,
        PINGS + 2,
        "the datapath keeps running while kproxy is down"
    );
    sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(bpffs.path())
        .arg("cleanup"));
    // The kernel releases an unpinned link after an RCU grace period, so poll: a ping
    // that no longer changes the counter shows the programs are gone.
    eventually("programs detached after `kproxy cleanup`", || {
        let (before, _) = counter(&dump(&bpffs), "xdp-ingress", "icmp");
        sh(client.cmd("ping").args(["-c", "1", "-W", "2", "192.0.2.2"]));
        counter(&dump(&bpffs), "xdp-ingress", "icmp").0 == before
    });
}

#[test]
fn privileged_uplink_xdp_driver_mode_counts_match() {
    if privileged("privileged_uplink_xdp_driver_mode_counts_match") {
        uplink_counts_match_traffic("driver");
    }
}

#[test]
fn privileged_uplink_xdp_generic_mode_counts_match() {
    if privileged("privileged_uplink_xdp_generic_mode_counts_match") {
        uplink_counts_match_traffic("generic");
    }
}

#[test]
fn dump_without_running_kproxy_is_a_clear_error() {
    let out = Command::new(bin("kproxy"))
        .args(["--bpffs", "/sys/fs/bpf/kproxy-test-does-not-exist", "dump"])
        .output()
        .expect("run kproxy dump");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open pinned map"),
        "unexpected error text: {err}"
    );
}
