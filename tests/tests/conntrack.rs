//! Privileged: the connection tracking lifecycle of the per-packet paths, and the ARP
//! answers that make a LoadBalancer IP reachable on the uplink's segment. kproxy runs in the
//! lab's node namespace; the client namespace stands for another host behind the uplink.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::Ipv4Addr,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use kproxy_tests::{
    eventually,
    lab::{BACKEND_PORT, CLIENT_IP, Ep, Lab, Svc, backend_ip, kpt},
    privileged, sh,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// On the uplink's own segment (192.0.2.0/24): the client reaches it through ARP alone.
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const METRICS_PORT: u16 = 19_971;

fn web(endpoints: Vec<Ep>) -> Svc {
    Svc {
        lb_ip: Some(LB_IP),
        ..Svc::cluster_ip("web", VIP, endpoints)
    }
}

fn start(n: usize) -> Lab {
    let mut lab = Lab::new(n);
    lab.set_services(&[web((0..n).map(Ep::ready).collect())]);
    lab.start_kproxy_with(
        "auto",
        "xdp",
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{METRICS_PORT}"),
            "--ct-gc-interval",
            "1",
        ],
    );
    lab
}

/// Sets the service's endpoints and waits until kproxy applied them.
fn set_endpoints(lab: &mut Lab, endpoints: Vec<Ep>) {
    let before = lab.syncs();
    lab.set_services(&[web(endpoints)]);
    lab.wait_sync(before);
}

fn backend_index(name: &str) -> usize {
    name.trim_start_matches('b')
        .parse()
        .expect("backend name b<i>")
}

/// One UDP request from the client's fixed source port 40000 to the LB IP.
fn udp_from_fixed_port(lab: &Lab) -> Value {
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["udp", &format!("{LB_IP}:53"), "--sport", "40000"],
    );
    let r = res.into_iter().next().expect("one result");
    assert_eq!(r["ok"], true, "UDP request: {r}");
    assert_eq!(r["from"], format!("{LB_IP}:53").as_str(), "reply source");
    r
}

/// A metric's value from kproxy's /metrics (scraped inside the node namespace).
fn metric(lab: &Lab, name: &str) -> f64 {
    let body = sh(lab.node.cmd("bash").args([
        "-c",
        &format!(
            "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT}; \
             printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
        ),
    ]));
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// The same UDP 5-tuple keeps its backend while it exists, and gets a new one once the
/// backend is removed from the service (a CT hit on a deleted backend is not trusted).
#[test]
fn privileged_stale_udp_tuple_gets_a_new_backend() {
    if !privileged("privileged_stale_udp_tuple_gets_a_new_backend") {
        return;
    }
    let mut lab = start(3);
    let first = udp_from_fixed_port(&lab);
    let name = first["name"].as_str().unwrap().to_string();
    assert!(
        first["seen_peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{CLIENT_IP}:40000")),
        "{first}"
    );
    for _ in 0..3 {
        assert_eq!(udp_from_fixed_port(&lab)["name"], name.as_str(), "sticky");
    }
    // Remove that backend (not terminating: gone). Its namespace still answers on its
    // address, so only the datapath can move the flow.
    let gone = backend_index(&name);
    set_endpoints(
        &mut lab,
        (0..3).filter(|i| *i != gone).map(Ep::ready).collect(),
    );
    let moved = udp_from_fixed_port(&lab);
    assert_ne!(
        moved["name"],
        name.as_str(),
        "the tuple still went to the removed backend"
    );
    for _ in 0..3 {
        assert_eq!(
            udp_from_fixed_port(&lab)["name"],
            moved["name"],
            "sticky again"
        );
    }
}

fn hold(lab: &Lab, duration_ms: u32) -> Child {
    lab.client_cmd(&kpt())
        .args([
            "hold",
            &format!("{LB_IP}:80"),
            "--duration-ms",
            &duration_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hold")
}

/// A TCP connection whose backend is removed (not terminating) is reset at its next
/// packet: the flow moves to another backend, whose stack answers it with a RST. The
/// client sees a reset at once instead of a connection that hangs.
#[test]
fn privileged_removed_backend_resets_its_connections() {
    if !privileged("privileged_removed_backend_resets_its_connections") {
        return;
    }
    let mut lab = start(2);
    let mut conn = hold(&lab, 8000);
    // `hold` prints `{"connected": NAME}` first.
    let mut out = BufReader::new(conn.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read hold output");
    let first: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
    let name = first["connected"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let gone = backend_index(&name);
    // Its namespace still answers on its address: only the datapath can end the flow.
    set_endpoints(&mut lab, vec![Ep::ready(1 - gone)]);
    let started = Instant::now();
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read hold output");
    let status = conn.wait().expect("hold finished");
    assert!(
        !status.success(),
        "a flow to a removed backend went on: {rest}"
    );
    assert!(
        rest.contains("ConnectionReset"),
        "reset expected, not a hang or another error: {rest}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the reset came late: {:?}",
        started.elapsed()
    );
}

/// One TCP connection from the client's port 41000 to the LB IP, ended by a RST.
fn tcp_from_fixed_port(lab: &Lab) -> String {
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--sport", "41000", "--rst"],
    );
    let r = res.into_iter().next().expect("one result");
    assert_eq!(r["ok"], true, "TCP connection: {r}");
    r["name"].as_str().expect("backend name").to_string()
}

/// A new SYN over a closed connection's tuple is a new flow: its backend, now terminating
/// (it still exists, so the old entry would otherwise be followed), gets no new connection.
#[test]
fn privileged_new_syn_over_a_closed_tuple_picks_a_new_backend() {
    if !privileged("privileged_new_syn_over_a_closed_tuple_picks_a_new_backend") {
        return;
    }
    let mut lab = start(2);
    let first = tcp_from_fixed_port(&lab);
    let other = 1 - backend_index(&first);
    let mut endpoints = vec![Ep::terminating(backend_index(&first)), Ep::ready(other)];
    endpoints.sort_by_key(|e| e.backend);
    set_endpoints(&mut lab, endpoints);
    for _ in 0..3 {
        assert_eq!(
            tcp_from_fixed_port(&lab),
            format!("b{other}"),
            "a new connection on the old tuple went to the terminating {first}"
        );
    }
}

/// A direct connection to a backend's own address that reuses the source port of a closed
/// service connection (its entries linger 10 s) is not taken for that flow: its SYN-ACK is
/// not rewritten to come from the service address, so it connects (before the fix it timed
/// out: `kctl bench` measuring a ClusterIP and then a pod from one client saw it).
#[test]
fn privileged_direct_connection_on_a_closed_service_tuple() {
    if !privileged("privileged_direct_connection_on_a_closed_service_tuple") {
        return;
    }
    let lab = start(1);
    assert_eq!(tcp_from_fixed_port(&lab), "b0");
    for _ in 0..2 {
        let res = Lab::kpt_net(
            lab.client_cmd(&kpt()),
            &[
                "tcp",
                &format!("{}:{BACKEND_PORT}", backend_ip(0)),
                "--sport",
                "41000",
                "--rst",
            ],
        );
        let r = res.into_iter().next().expect("one result");
        assert_eq!(r["ok"], true, "direct connection on the old tuple: {r}");
        assert_eq!(r["name"], "b0", "{r}");
        // And back through the service on the same tuple.
        assert_eq!(tcp_from_fixed_port(&lab), "b0");
    }
}

/// Closed TCP connections leave connection tracking within the closing lifetime: garbage
/// collection deletes their entries.
#[test]
fn privileged_closed_connections_are_collected() {
    if !privileged("privileged_closed_connections_are_collected") {
        return;
    }
    let lab = start(1);
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--count", "3"],
    );
    assert!(res.iter().all(|r| r["ok"] == true), "{res:?}");
    // Each connection has a forward and a reply entry; GC runs every second.
    eventually("the entries are counted", || {
        metric(&lab, "kproxy_ct_entries") >= 6.0 || metric(&lab, "kproxy_ct_gc_deleted_total") > 0.0
    });
    // Closing lifetime 10 s, GC every second: gone well within 20 s. An established or
    // SYN lifetime (hours, a minute) would keep them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&lab, "kproxy_ct_entries") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still tracked after 20 s"
        );
        thread::sleep(Duration::from_millis(500));
    }
    assert!(metric(&lab, "kproxy_ct_gc_deleted_total") >= 6.0);
}

/// A client on the uplink's segment with no route for the LoadBalancer IP reaches it: the
/// uplink answers ARP for it, then traffic takes the XDP path with the client's address
/// kept. Once the service is gone, nobody answers.
#[test]
fn privileged_loadbalancer_ip_answered_by_arp() {
    if !privileged("privileged_loadbalancer_ip_answered_by_arp") {
        return;
    }
    let mut lab = start(2);
    let route = sh(lab
        .client_cmd("ip")
        .args(["route", "get", &LB_IP.to_string()]));
    assert!(
        !route.contains("via"),
        "the client must reach {LB_IP} on-link, not through a router: {route}"
    );
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--count", "10"],
    );
    for r in &res {
        assert_eq!(r["ok"], true, "{r}");
        assert!(
            r["seen_peer"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{CLIENT_IP}:")),
            "client address kept: {r}"
        );
    }
    let link: Value =
        serde_json::from_str(&sh(lab.node.cmd("ip").args(["-j", "link", "show", "up0"])))
            .expect("ip -j link");
    let node_mac = link[0]["address"]
        .as_str()
        .expect("up0 has a MAC")
        .to_string();
    let neigh = sh(lab
        .client_cmd("ip")
        .args(["neigh", "show", &LB_IP.to_string()]));
    assert!(
        neigh.contains(node_mac.trim()),
        "{LB_IP} resolved to the uplink's MAC {node_mac}: {neigh}"
    );
    // The service goes away: the address is withdrawn, ARP goes unanswered.
    let before = lab.syncs();
    lab.set_services(&[]);
    lab.wait_sync(before);
    sh(lab.client_cmd("ip").args(["neigh", "flush", "dev", "eth0"]));
    let res = Lab::kpt_net(lab.client_cmd(&kpt()), &["tcp", &format!("{LB_IP}:80")]);
    assert_eq!(res[0]["ok"], false, "{res:?}");
    let neigh = sh(lab
        .client_cmd("ip")
        .args(["neigh", "show", &LB_IP.to_string()]));
    assert!(
        !neigh.contains(node_mac.trim()),
        "a withdrawn address still resolves: {neigh}"
    );
}
