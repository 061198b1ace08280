//! Privileged: socket-LB beyond plain IPv4 connects. IPv6 sockets reaching a ClusterIP
//! through its IPv4-mapped address (`::ffff:VIP`, what Java and many dual-stack clients
//! use) are balanced like IPv4 ones; a service without endpoints refuses with
//! ECONNREFUSED (not EPERM); long-lived sockets connected to a backend that is removed are
//! destroyed (`SOCK_DESTROY`), so a UDP client reconnects to a live backend and a TCP
//! client sees its connection aborted instead of talking to a dead backend. Clients run in
//! the lab's socket-LB cgroup (see `kproxy_tests::lab`).
#![forbid(unsafe_code)]

use std::{collections::BTreeSet, net::Ipv4Addr};

use kproxy_tests::{
    Daemon, bin, eventually,
    lab::{Ep, Lab, Svc},
    privileged,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
/// A service without endpoints.
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 41);
const ECONNREFUSED: i64 = 111;
const ECONNABORTED: i64 = 103;
const ECONNRESET: i64 = 104;
const EDESTADDRREQ: i64 = 89;

/// How a destroyed connected UDP socket fails: ECONNABORTED for a receive (the error the
/// destroy leaves), EDESTADDRREQ for a send (the destroy also disconnected it).
fn udp_aborted(v: &Value) -> bool {
    v["errno"] == ECONNABORTED || v["errno"] == EDESTADDRREQ
}

fn kpt_sock() -> String {
    bin("kpt-sock").to_string_lossy().into_owned()
}

fn services(backends: &[usize]) -> Vec<Svc> {
    vec![
        Svc::cluster_ip(
            "sockv6",
            VIP,
            backends.iter().copied().map(Ep::ready).collect(),
        ),
        Svc::cluster_ip("sockempty", EMPTY_VIP, Vec::new()),
    ]
}

/// One `kpt-sock` probe from the node namespace, in the socket-LB cgroup.
fn probe(lab: &Lab, args: &[&str]) -> Value {
    let res = Lab::kpt_net(lab.host_cmd(&kpt_sock()), args);
    assert_eq!(res.len(), 1, "kpt-sock {args:?}: {res:?}");
    res.into_iter().next().unwrap()
}

fn is_backend(addr: &str, mapped: bool) -> bool {
    let prefix = if mapped {
        "[::ffff:10.244.1."
    } else {
        "10.244.1."
    };
    addr.starts_with(prefix) && addr.ends_with(":8080")
}

#[test]
fn privileged_socket_lb_v4_mapped_and_refusals() {
    if !privileged("privileged_socket_lb_v4_mapped_and_refusals") {
        return;
    }
    let mut lab = Lab::new(3);
    lab.set_services(&services(&[0, 1, 2]));
    lab.start_kproxy("auto", "xdp");

    // TCP from an IPv6 socket to ::ffff:VIP: balanced over the backends; getpeername
    // reports the (mapped) backend, as for IPv4 TCP (no socket rev-NAT entry for TCP).
    let mapped = format!("[::ffff:{VIP}]:80");
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let r = probe(&lab, &["tcp", &mapped]);
        assert_eq!(r["ok"], true, "{mapped}: {r}");
        let peer = r["getpeername"].as_str().unwrap();
        assert!(is_backend(peer, true), "getpeername {peer}: {r}");
        seen.insert(r["name"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen.len(),
        3,
        "all backends reached over ::ffff:VIP: {seen:?}"
    );

    // UDP, unconnected and connected: the answer appears to come from ::ffff:VIP:53.
    let mapped53 = format!("[::ffff:{VIP}]:53");
    for connected in [false, true] {
        let mut args = vec!["udp", mapped53.as_str()];
        if connected {
            args.push("--connected");
        }
        let r = probe(&lab, &args);
        assert_eq!(r["ok"], true, "{args:?}: {r}");
        assert_eq!(
            r["from"],
            mapped53.as_str(),
            "recvfrom reports the VIP: {r}"
        );
        assert!(r["name"].as_str().unwrap().starts_with('b'), "{r}");
    }
    // IPv4 UDP keeps its reverse translation too.
    let r = probe(&lab, &["udp", &format!("{VIP}:53")]);
    assert_eq!(r["from"], format!("{VIP}:53"), "{r}");

    // A service without endpoints: ECONNREFUSED for TCP connect, connected UDP and sendto,
    // over IPv4 and IPv4-mapped IPv6 alike.
    for args in [
        vec!["tcp".to_string(), format!("{EMPTY_VIP}:80")],
        vec![
            "udp".into(),
            format!("{EMPTY_VIP}:53"),
            "--connected".into(),
        ],
        vec!["udp".into(), format!("{EMPTY_VIP}:53")],
        vec!["tcp".into(), format!("[::ffff:{EMPTY_VIP}]:80")],
        vec![
            "udp".into(),
            format!("[::ffff:{EMPTY_VIP}]:53"),
            "--connected".into(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = probe(&lab, &args);
        assert_eq!(r["ok"], false, "{args:?}: {r}");
        assert_eq!(
            r["errno"], ECONNREFUSED,
            "{args:?}: ECONNREFUSED expected: {r}"
        );
    }
}

/// The first backend name a long-running `kpt-sock` logged.
fn first_answer(d: &mut Daemon, what: &str) -> String {
    let mut name = String::new();
    eventually(&format!("{what} answered"), || {
        d.assert_running();
        name = d
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v["answer"].as_str().map(str::to_string))
            .unwrap_or_default();
        !name.is_empty()
    });
    name
}

fn events(d: &Daemon) -> Vec<Value> {
    d.lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn privileged_socket_lb_terminates_sockets_of_removed_backends() {
    if !privileged("privileged_socket_lb_terminates_sockets_of_removed_backends") {
        return;
    }
    // Four backends: the three clients leave at least one.
    let mut lab = Lab::new(4);
    lab.set_services(&services(&[0, 1, 2, 3]));
    lab.start_kproxy("auto", "xdp");

    // Long-lived clients: connected UDP (IPv4 and IPv4-mapped IPv6) and a TCP connection.
    let long = |cmd: &str, target: String| {
        let mut c = lab.host_cmd(&kpt_sock());
        c.args([cmd, &target, "--duration-ms", "30000"]);
        Daemon::spawn(c)
    };
    let mut udp4 = long("udp-long", format!("{VIP}:53"));
    let mut udp6 = long("udp-long", format!("[::ffff:{VIP}]:53"));
    let mut tcp = long("tcp-long", format!("{VIP}:80"));
    let udp4_be = first_answer(&mut udp4, "UDP client");
    let udp6_be = first_answer(&mut udp6, "mapped UDP client");
    let tcp_be = first_answer(&mut tcp, "TCP client");

    // Remove the backends they use (the backend processes keep running: without the
    // termination each client would go on talking to its removed backend).
    let gone: BTreeSet<String> = [&udp4_be, &udp6_be, &tcp_be].into_iter().cloned().collect();
    let keep: Vec<usize> = (0..4)
        .filter(|i| !gone.contains(&format!("b{i}")))
        .collect();
    let before = lab.syncs();
    lab.set_services(&services(&keep));
    lab.wait_sync(before);
    eventually("kproxy terminated the sockets", || {
        lab.kproxy()
            .logged("terminated sockets connected to removed backends")
    });

    for (d, what) in [(&mut udp4, "UDP"), (&mut udp6, "mapped UDP")] {
        eventually(
            &format!("{what} client aborted, then answered by a kept backend"),
            || {
                d.assert_running();
                let ev = events(d);
                let Some(abort) = ev.iter().position(udp_aborted) else {
                    return false;
                };
                ev[abort..].iter().any(|v| {
                    v["answer"]
                        .as_str()
                        .is_some_and(|n| !gone.contains(n) && n.starts_with('b'))
                })
            },
        );
        // After the abort, no answer from a removed backend.
        let ev = events(d);
        let abort = ev.iter().position(udp_aborted).unwrap();
        assert!(
            ev[abort..]
                .iter()
                .all(|v| v["answer"].as_str().is_none_or(|n| !gone.contains(n))),
            "{what}: answers from a removed backend after the abort: {ev:?}"
        );
    }
    eventually(
        "the TCP connection to the removed backend was aborted",
        || {
            events(&tcp)
                .iter()
                .any(|v| v["errno"] == ECONNABORTED || v["errno"] == ECONNRESET)
        },
    );
}
