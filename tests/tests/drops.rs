//! Privileged: the datapath's per-reason drop counters match the packets sent. A client
//! namespace behind the uplink sends UDP datagrams and TCP SYNs to a LoadBalancer IP whose
//! service has no endpoints (refused: `no-backend`), and hand-made broken frames
//! (`malformed`); the lab's "host" connects to the ClusterIP (socket-LB refusal). Each
//! packet is counted exactly once, under one reason, with XDP and with tc doing the LB;
//! `kproxy dump --drops` and `/metrics` agree. `kctl lb --drops` shows `kproxy node`'s
//! counters through the API server.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, process::Command};

use k8s_openapi::api::core::v1::{Node, Service};
use kproxy_tests::{
    Daemon,
    apiserver::{ApiServer, TempDir},
    bin,
    cluster::free_port,
    control::{client, controller_manager},
    eventually,
    lab::{CLIENT_IP, Lab, Svc, kpt},
    privileged, sh, unique,
};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
/// Every reason kproxy reports (the ABI order of `DropReason`).
const REASONS: [&str; 11] = [
    "no-backend",
    "map-full",
    "source-range",
    "fragment-missing",
    "malformed",
    "ct-insert-failed",
    "nat-failed",
    "reject-failed",
    "not-a-service",
    "snat-no-port",
    "forward-failed",
];
/// A UDP datagram with kpt-net's 6-byte payload: Ethernet 14 + IPv4 20 + UDP 8 + 6.
const UDP_FRAME: u64 = 48;
/// kpt-raw's frames: `truncated-ip` 24, `bad-ihl` 54, `tiny-frame` 16, `truncated-tcp` 42.
const MALFORMED: [&str; 4] = ["truncated-ip", "bad-ihl", "tiny-frame", "truncated-tcp"];
const MALFORMED_BYTES: u64 = 24 + 54 + 16 + 42;

type Drops = BTreeMap<String, (u64, u64)>;

/// `kproxy dump --drops -o json`: (packets, bytes) per reason.
fn dump_drops(lab: &Lab) -> Drops {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["dump", "--drops", "-o", "json"]));
    let rows: Value = serde_json::from_str(&out).expect("dump --drops json");
    rows.as_array()
        .expect("an array of reasons")
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().expect("reason").to_string(),
                (
                    r["packets"].as_u64().expect("packets"),
                    r["bytes"].as_u64().expect("bytes"),
                ),
            )
        })
        .collect()
}

/// `kproxy_datapath_drops_total` and `kproxy_datapath_drop_bytes_total` per reason, from
/// kproxy's /metrics (scraped inside the node namespace).
fn metric_drops(lab: &Lab, port: u16) -> Drops {
    let body = sh(lab.node.cmd("bash").args([
        "-c",
        &format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; \
             printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
        ),
    ]));
    let value = |family: &str, reason: &str| -> u64 {
        let prefix = format!("{family}{{reason=\"{reason}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {body}"))
    };
    REASONS
        .iter()
        .map(|r| {
            (
                (*r).to_string(),
                (
                    value("kproxy_datapath_drops_total", r),
                    value("kproxy_datapath_drop_bytes_total", r),
                ),
            )
        })
        .collect()
}

/// What rose between two readings, per reason (reasons that did not are left out).
fn delta(before: &Drops, after: &Drops) -> Drops {
    after
        .iter()
        .filter_map(|(r, &(p, b))| {
            let (p0, b0) = before.get(r).copied().unwrap_or_default();
            (p != p0 || b != b0).then(|| (r.clone(), (p - p0, b - b0)))
        })
        .collect()
}

fn expect(rows: &[(&str, (u64, u64))]) -> Drops {
    rows.iter().map(|(r, v)| ((*r).to_string(), *v)).collect()
}

/// Waits until the counters rose by exactly `want` (the programs run before the sender's
/// syscalls return, so this is normally true at once).
fn assert_rose(lab: &Lab, before: &Drops, want: &Drops, what: &str) -> Drops {
    let mut now = dump_drops(lab);
    eventually(what, || {
        now = dump_drops(lab);
        delta(before, &now) == *want
    });
    now
}

fn counted_once_per_packet(lb_mode: &str, metrics_port: u16) {
    let mut lab = Lab::new(0);
    lab.set_services(&[Svc {
        lb_ip: Some(LB_IP),
        ..Svc::cluster_ip("empty", VIP, vec![])
    }]);
    lab.start_kproxy_with(
        "auto",
        lb_mode,
        &["--metrics-addr", &format!("127.0.0.1:{metrics_port}")],
    );
    let start = dump_drops(&lab);
    assert_eq!(
        start.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut r = REASONS.to_vec();
            r.sort_unstable();
            r
        },
        "every reason is listed, zero included"
    );

    // N connected UDP sends: each is answered with a port unreachable (ECONNREFUSED).
    let n = 7;
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["udp", &format!("{LB_IP}:53"), "--connected", "--count", "7"],
    );
    assert_eq!(res.len(), n, "{res:?}");
    assert!(
        res.iter().all(|r| r["kind"] == "ConnectionRefused"),
        "refused: {res:?}"
    );
    let after_udp = assert_rose(
        &lab,
        &start,
        &expect(&[("no-backend", (7, 7 * UDP_FRAME))]),
        "no-backend rose by the UDP datagrams",
    );

    // M TCP connects: one SYN each, answered with a RST.
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--count", "5"],
    );
    assert_eq!(res.len(), 5, "{res:?}");
    assert!(
        res.iter().all(|r| r["kind"] == "ConnectionRefused"),
        "refused: {res:?}"
    );
    let mut after_tcp = dump_drops(&lab);
    eventually("no-backend rose by the SYNs", || {
        after_tcp = dump_drops(&lab);
        delta(&after_udp, &after_tcp).get("no-backend").map(|v| v.0) == Some(5)
    });
    let d = delta(&after_udp, &after_tcp);
    assert_eq!(d.len(), 1, "only no-backend rose: {d:?}");
    // A SYN is 14 + 20 + 20 bytes plus the TCP options Linux sends (up to 40).
    let syn_bytes = d["no-backend"].1;
    assert!((5 * 54..=5 * 94).contains(&syn_bytes), "{syn_bytes}");

    // Socket-LB refusals from the host (no packet: counted with 0 bytes).
    let res = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["tcp", &format!("{VIP}:80"), "--count", "3"],
    );
    assert!(
        res.iter().all(|r| r["kind"] == "ConnectionRefused"),
        "refused: {res:?}"
    );
    let after_sock = assert_rose(
        &lab,
        &after_tcp,
        &expect(&[("no-backend", (3, 0))]),
        "no-backend rose by the host's connects",
    );

    // K malformed frames at the LB IP: counted once (XDP sees them first, also when tc
    // does the LB), never as refusals.
    let link: Value = serde_json::from_str(&lab.node.ip(&["-j", "link", "show", "up0"])).unwrap();
    let mac = link[0]["address"].as_str().unwrap().to_string();
    let mut raw = lab.client_cmd(&bin("kpt-raw").to_string_lossy());
    raw.args([
        "eth0",
        &mac,
        &CLIENT_IP.to_string(),
        &LB_IP.to_string(),
        "80",
    ])
    .args(MALFORMED);
    sh(&mut raw);
    let after_raw = assert_rose(
        &lab,
        &after_sock,
        &expect(&[("malformed", (4, MALFORMED_BYTES))]),
        "malformed rose by the broken frames",
    );

    // /metrics shows the same counters, every reason included.
    let m = metric_drops(&lab, metrics_port);
    assert_eq!(m, after_raw, "/metrics matches kproxy dump --drops");
    let total = delta(&start, &m);
    assert_eq!(total["no-backend"].0, 7 + 5 + 3);
    assert_eq!(total["malformed"], (4, MALFORMED_BYTES));
    lab.kproxy().assert_running();
}

#[test]
fn privileged_drops_counted_once_per_packet_lb_in_xdp() {
    if !privileged("privileged_drops_counted_once_per_packet_lb_in_xdp") {
        return;
    }
    counted_once_per_packet("xdp", 19_983);
}

#[test]
fn privileged_drops_counted_once_per_packet_lb_in_tc() {
    if !privileged("privileged_drops_counted_once_per_packet_lb_in_tc") {
        return;
    }
    counted_once_per_packet("tc", 19_984);
}

/// `kctl --kubeconfig K lb NODE --port P --drops ARGS...`: stdout; panics on failure.
fn kctl_drops(kubeconfig: &Path, node: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new(bin("kctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["lb", node, "--port", &port.to_string(), "--drops"])
        .args(args)
        .output()
        .expect("run kctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kctl lb --drops failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kctl lb --drops -o json` as (packets, bytes) per reason.
fn kctl_drops_json(kubeconfig: &Path, node: &str, port: u16) -> Drops {
    let out = kctl_drops(kubeconfig, node, port, &["-o", "json"]);
    let rows: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    rows.as_array()
        .expect("an array of reasons")
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// `kproxy node` behind a real API server: connects from its socket-LB cgroup to a
/// Service without endpoints show up as `no-backend` in `kctl lb --drops`, equal to what
/// `kproxy dump --drops` reads from the pinned map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_kctl_lb_drops_shows_the_node_counters() {
    if !privileged("privileged_kctl_lb_drops_shows_the_node_counters") {
        return;
    }
    let dir = TempDir::new("kpt-drops");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = controller_manager(&api, &["--controllers", "endpointslice"]);
    let c = client(&api).await;
    let lab = Lab::new(0);
    let node = unique("kpt-dropnode");
    let port = free_port();
    kproxy_tests::control::create_node(&Api::<Node>::all(c.clone()), &node, "127.0.0.1", None)
        .await;
    let kubeconfig = dir.path().join("node-kubeconfig");
    sh(Command::new(bin("kproxy-apiserver"))
        .args(["node-kubeconfig", &node, "--out"])
        .arg(&kubeconfig)
        .args(["--server", &api.url, "--data-dir"])
        .arg(&api.data_dir));
    let mut cmd = Command::new(bin("kproxy"));
    cmd.arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["node", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--node-name",
            &node,
            "--keep-local",
            "none",
            "--no-node-routes",
        ])
        .arg("--socket-lb-scope")
        .arg(lab.cgroup.path())
        .args([
            "--serve-addr",
            &format!("127.0.0.1:{port}"),
            "--serve-cert-dir",
        ])
        .arg(dir.path().join("kproxy-pki"))
        .env("RUST_LOG", "info");
    let mut kp = Daemon::spawn_until_logged(cmd, "initial sync done");
    eventually("the node endpoint listening", || {
        kp.assert_running();
        kp.logged("listening endpoint=\"kproxy node endpoint\"")
    });
    // A Service whose selector matches no pod: an empty EndpointSlice, refusals.
    let svc: Service = Api::default_namespaced(c.clone())
        .create(
            &PostParams::default(),
            &kproxy_tests::control::from_json(json!({"metadata": {"name": "nobody"},
                "spec": {"selector": {"app": "nobody"},
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})),
        )
        .await
        .expect("create service");
    let vip = svc.spec.and_then(|s| s.cluster_ip).expect("clusterIP");
    let target = format!("{vip}:80");
    // Programmed once a connect is refused rather than sent off untranslated.
    eventually("the ClusterIP refuses", || {
        kp.assert_running();
        let r = Lab::kpt_net(lab.host_cmd(&kpt()), &["tcp", &target]);
        r.first().is_some_and(|r| r["kind"] == "ConnectionRefused")
    });

    let before = kctl_drops_json(&api.kubeconfig, &node, port);
    assert_eq!(before.len(), REASONS.len(), "every reason: {before:?}");
    let res = Lab::kpt_net(lab.host_cmd(&kpt()), &["tcp", &target, "--count", "6"]);
    assert!(
        res.len() == 6 && res.iter().all(|r| r["kind"] == "ConnectionRefused"),
        "{res:?}"
    );
    let after = kctl_drops_json(&api.kubeconfig, &node, port);
    assert_eq!(
        delta(&before, &after),
        expect(&[("no-backend", (6, 0))]),
        "socket-LB refusals, no packet"
    );
    assert_eq!(
        after,
        dump_drops(&lab),
        "kctl lb --drops = kproxy dump --drops"
    );

    // The table: a header and one row per reason.
    let table = kctl_drops(&api.kubeconfig, &node, port, &[]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["REASON", "PACKETS", "BYTES"], "{table}");
    assert_eq!(lines.len(), 1 + REASONS.len(), "{table}");
    let no_backend = lines
        .iter()
        .find(|l| l[0] == "no-backend")
        .expect("no-backend row");
    assert_eq!(no_backend[1], after["no-backend"].0.to_string(), "{table}");
    kp.assert_running();
}
