//! Privileged: `spec.loadBalancerSourceRanges` is enforced on the LoadBalancer IP, in XDP and
//! in tc LB mode. The range admits the lab's client host (192.0.2.1/32) and not a second
//! client namespace one hop behind it (198.51.100.2): the admitted client reaches the
//! backend over TCP and UDP, the other's connects time out and each of its datagrams is
//! dropped and counted once under `source-range`. The NodePort of the same Service stays
//! open to both (kube-proxy restricts only the LoadBalancer IPs). Changing the ranges to
//! admit the second client opens the LB IP to it without a restart.
#![forbid(unsafe_code)]

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use kproxy_tests::{
    NetNs, bin, eventually,
    lab::{CLIENT_IP, Ep, Lab, NODE_IP, REMOTE_CLIENT_IP, Svc},
    privileged, sh,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 140);
const NODE_PORT: u16 = 30_140;
/// A datagram from [`udp_echo`]: Ethernet 14 + IPv4 20 + UDP 8 + 5 bytes.
const UDP_FRAME: u64 = 47;

/// `kproxy dump --drops -o json`: packets and bytes of the `source-range` reason.
fn source_range_drops(lab: &Lab) -> (u64, u64) {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["dump", "--drops", "-o", "json"]));
    let rows: Value = serde_json::from_str(&out).expect("dump --drops json");
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["reason"] == "source-range")
        .map(|r| (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()))
        .expect("a source-range row")
}

/// Packets of `class` tc ingress on the uplink saw (`kproxy ifstats`).
fn tc_ingress_packets(lab: &Lab, class: &str) -> u64 {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["ifstats", "-o", "json"]));
    let rows: Value = serde_json::from_str(&out).expect("ifstats json");
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["hook"] == "tc-ingress" && r["class"] == class)
        .and_then(|r| r["packets"].as_u64())
        .expect("a tc-ingress row")
}

/// A TCP connection from a process in `ns` to `dst`: the backend's greeting, or the error
/// kind.
fn tcp_greeting(ns: &NetNs, dst: SocketAddrV4) -> Result<String, String> {
    ns.run(|| {
        let mut stream =
            TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_millis(1500))
                .map_err(|e| format!("{:?}", e.kind()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("{:?}", e.kind()))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// `count` datagrams from `ns` to `dst` (one socket): how many were answered.
fn udp_echo(ns: &NetNs, dst: SocketAddrV4, count: usize) -> usize {
    ns.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut answered = 0;
        let mut buf = [0u8; 256];
        for _ in 0..count {
            sock.send_to(b"hello", dst).expect("send");
            if sock.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        answered
    })
}

fn manifest(ranges: &str) -> String {
    let mut yaml = String::new();
    Svc {
        lb_ip: Some(LB_IP),
        node_port: Some(NODE_PORT),
        ..Svc::cluster_ip("ranged", VIP, vec![Ep::ready(0)])
    }
    .yaml(&mut yaml);
    yaml.replacen(
        "  type: LoadBalancer\n",
        &format!("  type: LoadBalancer\n  loadBalancerSourceRanges: [{ranges}]\n"),
        1,
    )
}

fn source_ranges_enforced(lb_mode: &str) {
    let mut lab = Lab::new(1);
    let other = lab.add_remote_client();
    lab.write_raw_manifest(&manifest(&format!("{CLIENT_IP}/32")));
    lab.start_kproxy("auto", lb_mode);
    let lb_tcp = SocketAddrV4::new(LB_IP, 80);
    let lb_udp = SocketAddrV4::new(LB_IP, 53);

    // The admitted client reaches the backend (the first ARP may take a moment).
    eventually("the admitted client connects", || {
        tcp_greeting(&lab.client, lb_tcp).is_ok_and(|g| g.starts_with("b0 "))
    });
    assert_eq!(udp_echo(&lab.client, lb_udp, 5), 5);

    // The other address: every datagram dropped and counted, the connect times out.
    let before = source_range_drops(&lab);
    let tc_before = tc_ingress_packets(&lab, "udp");
    let n = 6;
    assert_eq!(udp_echo(&other, lb_udp, n), 0);
    let after = source_range_drops(&lab);
    // In XDP mode the datagrams never reach tc (the lab's clients send full checksums).
    let tc_seen = tc_ingress_packets(&lab, "udp") - tc_before;
    assert_eq!(tc_seen, if lb_mode == "xdp" { 0 } else { n as u64 });
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (n as u64, n as u64 * UDP_FRAME),
        "each datagram counted once"
    );
    let refused = tcp_greeting(&other, lb_tcp);
    assert_eq!(refused, Err("TimedOut".to_string()));
    assert!(
        source_range_drops(&lab).0 > after.0,
        "the SYNs were counted"
    );

    // The NodePort is not restricted.
    let np = tcp_greeting(&other, SocketAddrV4::new(NODE_IP, NODE_PORT));
    assert!(np.as_deref().is_ok_and(|g| g.starts_with("b0 ")), "{np:?}");

    // Admit the other address too: it gets through without a restart.
    let syncs = lab.syncs();
    lab.write_raw_manifest(&manifest(&format!("{CLIENT_IP}/32, {REMOTE_CLIENT_IP}/32")));
    lab.wait_sync(syncs);
    let g = tcp_greeting(&other, lb_tcp);
    assert!(g.as_deref().is_ok_and(|g| g.starts_with("b0 ")), "{g:?}");
    assert_eq!(udp_echo(&other, lb_udp, 3), 3);
}

#[test]
fn privileged_source_ranges_xdp() {
    if privileged("privileged_source_ranges_xdp") {
        source_ranges_enforced("xdp");
    }
}

#[test]
fn privileged_source_ranges_tc() {
    if privileged("privileged_source_ranges_tc") {
        source_ranges_enforced("tc");
    }
}
