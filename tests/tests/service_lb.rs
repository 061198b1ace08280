//! Privileged: service load balancing end to end. kproxy runs in a node namespace with real
//! backends behind a bridge and an external client behind the uplink (see `kproxy_tests::lab`).
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::{collections::BTreeMap, net::Ipv4Addr, process::Command, thread, time::Duration};

use kproxy_tests::{
    bin, eventually,
    lab::{CLIENT_IP, Ep, Lab, NODE_IP, Svc, kpt},
    privileged, sh,
};
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 11);
const NODE_PORT: u16 = 30080;

fn web(endpoints: Vec<Ep>) -> Svc {
    Svc {
        lb_ip: Some(LB_IP),
        external_ip: Some(EXT_IP),
        node_port: Some(NODE_PORT),
        ..Svc::cluster_ip("web", VIP, endpoints)
    }
}

fn all_ready(n: usize) -> Vec<Ep> {
    (0..n).map(Ep::ready).collect()
}

fn names(results: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        assert_eq!(r["ok"], true, "a request failed: {r}");
        *m.entry(r["name"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// Long-lived echo connections through both paths: the external client via the LB IP
/// (per-packet) and a host process via the ClusterIP (socket-LB).
fn spawn_holds(lab: &Lab, duration_ms: u32) -> Vec<std::process::Child> {
    [
        (lab.client_cmd(&kpt()), format!("{LB_IP}:80")),
        (lab.host_cmd(&kpt()), format!("{VIP}:80")),
    ]
    .into_iter()
    .map(|(mut cmd, target)| {
        cmd.args(["hold", &target, "--duration-ms", &duration_ms.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn hold")
    })
    .collect()
}

/// Every held connection echoed every line until its end.
fn assert_holds_ok(holds: Vec<std::process::Child>) {
    for h in holds {
        let out = h.wait_with_output().expect("hold finished");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "an established connection broke: {text}"
        );
    }
}

fn lab_with_web(xdp_mode: &str, lb_mode: &str) -> Lab {
    let mut lab = Lab::new(3);
    lab.set_services(&[web(all_ready(3))]);
    lab.start_kproxy(xdp_mode, lb_mode);
    lab
}

#[test]
fn privileged_clusterip_tcp_udp_from_host_and_pod() {
    if !privileged("privileged_clusterip_tcp_udp_from_host_and_pod") {
        return;
    }
    let lab = lab_with_web("auto", "xdp");
    let vip = format!("{VIP}:80");

    // 300 new TCP connections from the host: every backend gets 20-47 %.
    let res = Lab::kpt_net(lab.host_cmd(&kpt()), &["tcp", &vip, "--count", "300"]);
    assert_eq!(res.len(), 300);
    let spread = names(&res);
    assert_eq!(spread.len(), 3, "all backends used: {spread:?}");
    for (b, n) in &spread {
        assert!(
            (60..=141).contains(n),
            "backend {b} got {n}/300: {spread:?}"
        );
    }
    // A socket-LB TCP socket is connected to the backend itself and keeps no reverse
    // entry (as in Cilium), so getpeername reports the backend; UDP below keeps the VIP.
    assert!(
        res.iter().all(|r| r["getpeername"]
            .as_str()
            .is_some_and(|p| p.starts_with("10.244.1.") && p.ends_with(":8080"))),
        "getpeername is the backend: {res:?}"
    );

    // UDP: answers appear to come from the VIP.
    let res = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["udp", &format!("{VIP}:53"), "--count", "30"],
    );
    assert_eq!(res.len(), 30);
    assert!(names(&res).len() >= 2, "UDP spread over backends");
    assert!(
        res.iter().all(|r| r["from"] == format!("{VIP}:53")),
        "UDP replies come from the VIP: {res:?}"
    );

    // From a pod, including hairpin (b0 reaching itself through its service).
    let res = Lab::kpt_net(lab.pod_cmd(0, &kpt()), &["tcp", &vip, "--count", "60"]);
    let spread = names(&res);
    assert!(
        spread.contains_key("b0"),
        "hairpin: b0 reached itself via the VIP: {spread:?}"
    );
    assert_eq!(spread.len(), 3);
    let res = Lab::kpt_net(
        lab.pod_cmd(1, &kpt()),
        &["udp", &format!("{VIP}:53"), "--count", "10"],
    );
    assert!(
        res.iter()
            .all(|r| r["ok"] == true && r["from"] == format!("{VIP}:53")),
        "{res:?}"
    );
}

/// LB IP, externalIP and NodePort from the external client through the uplink; the backend
/// sees the client's own address; replies come from the address the client called.
fn external_paths(xdp_mode: &str, lb_mode: &str) {
    let lab = lab_with_web(xdp_mode, lb_mode);
    for target in [
        format!("{LB_IP}:80"),
        format!("{EXT_IP}:80"),
        format!("{NODE_IP}:{NODE_PORT}"),
    ] {
        let res = Lab::kpt_net(lab.client_cmd(&kpt()), &["tcp", &target, "--count", "60"]);
        assert_eq!(res.len(), 60, "{target}: {res:?}");
        let spread = names(&res);
        assert_eq!(spread.len(), 3, "{target}: all backends used: {spread:?}");
        for r in &res {
            let seen = r["seen_peer"].as_str().unwrap();
            assert!(
                seen.starts_with(&format!("{CLIENT_IP}:")),
                "{target}: backend saw {seen}, not the client's address"
            );
            assert_eq!(r["getpeername"], target.as_str());
        }
        // UDP through the same frontends (port 53, node port + 1).
        let udp_target = if target.starts_with(&NODE_IP.to_string()) {
            format!("{NODE_IP}:{}", NODE_PORT + 1)
        } else {
            target.replace(":80", ":53")
        };
        let res = Lab::kpt_net(
            lab.client_cmd(&kpt()),
            &["udp", &udp_target, "--count", "20"],
        );
        assert_eq!(res.len(), 20);
        for r in &res {
            assert_eq!(r["ok"], true, "{udp_target}: {r}");
            assert_eq!(r["from"], udp_target.as_str(), "UDP reply source");
            assert!(
                r["seen_peer"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{CLIENT_IP}:"))
            );
        }
    }
    // Traffic to non-service addresses is untouched: the client reaches the node and a
    // backend directly, and a non-service port on the LB IP is not translated.
    sh(lab
        .client_cmd("ping")
        .args(["-c", "2", "-i", "0.1", "-W", "2", &NODE_IP.to_string()]));
    let direct = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", "10.244.1.3:8080", "--count", "3"],
    );
    assert!(
        direct.iter().all(|r| r["ok"] == true && r["name"] == "b1"),
        "{direct:?}"
    );
    let other_port = Lab::kpt_net(lab.client_cmd(&kpt()), &["tcp", &format!("{LB_IP}:81")]);
    assert_eq!(
        other_port[0]["ok"], false,
        "port 81 is no service: {other_port:?}"
    );
}

#[test]
fn privileged_external_via_xdp_driver() {
    if privileged("privileged_external_via_xdp_driver") {
        external_paths("driver", "xdp");
    }
}

#[test]
fn privileged_external_via_xdp_generic() {
    if privileged("privileged_external_via_xdp_generic") {
        external_paths("generic", "xdp");
    }
}

#[test]
fn privileged_external_via_tc() {
    if privileged("privileged_external_via_tc") {
        external_paths("driver", "tc");
    }
}

#[test]
fn privileged_client_ip_affinity_pins_a_client() {
    if !privileged("privileged_client_ip_affinity_pins_a_client") {
        return;
    }
    let mut lab = Lab::new(3);
    let mut svc = web(all_ready(3));
    svc.affinity = true;
    lab.set_services(&[svc]);
    lab.start_kproxy("auto", "xdp");
    for (what, cmd, target) in [
        ("host", lab.host_cmd(&kpt()), format!("{VIP}:80")),
        ("external", lab.client_cmd(&kpt()), format!("{LB_IP}:80")),
    ] {
        let spread = names(&Lab::kpt_net(cmd, &["tcp", &target, "--count", "40"]));
        assert_eq!(
            spread.len(),
            1,
            "{what}: affinity pins one backend: {spread:?}"
        );
    }
}

/// Removing a backend (it becomes terminating) moves new flows away from it while an
/// established connection to it keeps working; with no ready backend, new connections are
/// refused quickly (RST / ECONNREFUSED), not blackholed.
#[test]
fn privileged_backend_removal_and_no_endpoints() {
    if !privileged("privileged_backend_removal_and_no_endpoints") {
        return;
    }
    let mut lab = lab_with_web("auto", "xdp");

    // Long-lived connections through both paths; note which backend they landed on.
    let holds = spawn_holds(&lab, 4000);
    thread::sleep(Duration::from_millis(500));

    // b0..b2 → only b1, b2 ready; b0 terminating.
    let before = lab.syncs();
    lab.set_services(&[web(vec![Ep::terminating(0), Ep::ready(1), Ep::ready(2)])]);
    lab.wait_sync(before);
    for (cmd, target) in [
        (lab.client_cmd(&kpt()), format!("{LB_IP}:80")),
        (lab.host_cmd(&kpt()), format!("{VIP}:80")),
    ] {
        let spread = names(&Lab::kpt_net(cmd, &["tcp", &target, "--count", "60"]));
        assert!(
            !spread.contains_key("b0"),
            "{target}: terminating b0 got new flows: {spread:?}"
        );
        assert_eq!(spread.len(), 2, "{spread:?}");
    }
    assert_holds_ok(holds);

    // No ready endpoint at all: refused, and quickly.
    let before = lab.syncs();
    lab.set_services(&[web(vec![])]);
    lab.wait_sync(before);
    let started = std::time::Instant::now();
    let ext = Lab::kpt_net(lab.client_cmd(&kpt()), &["tcp", &format!("{LB_IP}:80")]);
    assert_eq!(ext[0]["ok"], false);
    assert_eq!(
        ext[0]["kind"], "ConnectionRefused",
        "external: RST expected: {ext:?}"
    );
    let udp = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["udp", &format!("{LB_IP}:53"), "--connected"],
    );
    assert_eq!(
        udp[0]["kind"], "ConnectionRefused",
        "external UDP: ICMP port unreachable expected: {udp:?}"
    );
    let host = Lab::kpt_net(lab.host_cmd(&kpt()), &["tcp", &format!("{VIP}:80")]);
    assert_eq!(host[0]["ok"], false);
    assert_eq!(
        host[0]["kind"], "ConnectionRefused",
        "socket-LB refuses with ECONNREFUSED (bpf_set_retval), as kube-proxy's REJECT: {host:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusals must not time out"
    );
}

/// kproxy killed with SIGKILL and started again: pinned maps and connection tracking are
/// reused, established connections keep working, services are not rewritten.
#[test]
fn privileged_restart_keeps_established_flows() {
    if !privileged("privileged_restart_keeps_established_flows") {
        return;
    }
    let mut lab = lab_with_web("auto", "xdp");
    let holds = spawn_holds(&lab, 5000);
    thread::sleep(Duration::from_secs(1));
    lab.kill_kproxy();
    thread::sleep(Duration::from_millis(300));
    lab.start_kproxy("auto", "xdp");
    assert!(
        lab.kproxy().logged("map_ops=0"),
        "a restart with an unchanged manifest rewrites nothing"
    );
    assert_holds_ok(holds);
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--count", "10"],
    );
    assert_eq!(names(&res).values().sum::<usize>(), 10);
}

/// An invalid manifest is rejected with a clear message and the running state is kept.
#[test]
fn privileged_invalid_manifest_keeps_running_state() {
    if !privileged("privileged_invalid_manifest_keeps_running_state") {
        return;
    }
    let mut lab = Lab::new(2);
    lab.set_services(&[web(all_ready(2))]);
    lab.start_kproxy("auto", "xdp");
    for (bad, expect) in [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
            "document 1",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 70000}]\n",
            "spec.ports[0].port",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "ConfigMap",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec:\n  ports: [{port: 80}]\n",
            "metadata.name",
        ),
    ] {
        let errors = lab.kproxy().count_logged("manifest rejected");
        lab.write_raw_manifest(bad);
        let d = lab.kproxy();
        eventually("the manifest is rejected", || {
            d.count_logged("manifest rejected") > errors
        });
        assert!(d.logged(expect), "the error names {expect:?}");
        let res = Lab::kpt_net(
            lab.host_cmd(&kpt()),
            &["tcp", &format!("{VIP}:80"), "--count", "5"],
        );
        assert_eq!(
            names(&res).values().sum::<usize>(),
            5,
            "service still works after {bad:?}"
        );
    }
    // `kproxy dump` shows the kept table with its backends.
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["dump", "-o", "json"]));
    let table: Value = serde_json::from_str(&out).expect("dump json");
    let row = table
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["frontend"] == format!("{VIP}:80/TCP"))
        .expect("VIP row");
    assert_eq!(row["service"], "default/web:http");
    assert_eq!(row["active_backends"], 2);
    assert!(row["counter"]["new_flows"].as_u64().unwrap() >= 20);
}

fn frontend_counter(lab: &Lab, frontend: &str) -> (u64, u64) {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["dump", "-o", "json"]));
    let table: Value = serde_json::from_str(&out).expect("dump json");
    let row = table
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["frontend"] == frontend)
        .unwrap_or_else(|| panic!("no {frontend} in {table}"));
    (
        row["counter"]["packets"].as_u64().unwrap(),
        row["counter"]["new_flows"].as_u64().unwrap(),
    )
}

fn xdp_malformed(lab: &Lab) -> u64 {
    let out = sh(Command::new(bin("kproxy"))
        .arg("--bpffs")
        .arg(lab.bpffs.path())
        .args(["ifstats", "-o", "json"]));
    let rows: Value = serde_json::from_str(&out).expect("ifstats json");
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["hook"] == "xdp-ingress" && r["class"] == "malformed")
        .and_then(|r| r["packets"].as_u64())
        .expect("malformed row")
}

/// Truncated headers, bad IHL, IP options, fragments, ICMP errors and unknown protocols
/// aimed at a LoadBalancer IP: passed or dropped, never load-balanced by mistake, no
/// verifier or runtime trouble; a valid SYN carrying IP options is still balanced.
#[test]
fn privileged_malformed_packets_are_not_misforwarded() {
    if !privileged("privileged_malformed_packets_are_not_misforwarded") {
        return;
    }
    let mut lab = lab_with_web("driver", "xdp");
    let link: Value = serde_json::from_str(&lab.node.ip(&["-j", "link", "show", "up0"])).unwrap();
    let mac = link[0]["address"].as_str().unwrap().to_string();
    let frontend = format!("{LB_IP}:80/TCP");
    let raw = |cases: &[&str]| {
        let mut cmd = lab.client_cmd(&bin("kpt-raw").to_string_lossy());
        cmd.args([
            "eth0",
            &mac,
            &CLIENT_IP.to_string(),
            &LB_IP.to_string(),
            "80",
        ])
        .args(cases);
        sh(&mut cmd);
    };
    let (pkts0, flows0) = frontend_counter(&lab, &frontend);
    let malformed0 = xdp_malformed(&lab);
    raw(&[
        "truncated-ip",
        "bad-ihl",
        "tiny-frame",
        "truncated-tcp",
        "fragment-udp",
        "icmp-error",
        "unknown-proto",
    ]);
    // truncated-ip, bad-ihl, tiny-frame, and truncated-tcp (its TCP header cut short).
    eventually("XDP counted the four malformed frames", || {
        xdp_malformed(&lab) == malformed0 + 4
    });
    assert_eq!(
        frontend_counter(&lab, &frontend),
        (pkts0, flows0),
        "no malformed packet was load-balanced"
    );
    raw(&["ip-options-syn"]);
    eventually("the SYN with IP options was balanced", || {
        frontend_counter(&lab, &frontend).1 == flows0 + 1
    });
    lab.kproxy().assert_running();
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--count", "5"],
    );
    assert_eq!(
        names(&res).values().sum::<usize>(),
        5,
        "service still works"
    );
}

/// `/metrics` serves per-service counters in the Prometheus text format.
#[test]
fn privileged_metrics_endpoint() {
    if !privileged("privileged_metrics_endpoint") {
        return;
    }
    let mut lab = Lab::new(1);
    lab.set_services(&[web(all_ready(1))]);
    lab.start_kproxy_with("auto", "xdp", &["--metrics-addr", "127.0.0.1:19962"]);
    let res = Lab::kpt_net(
        lab.host_cmd(&kpt()),
        &["tcp", &format!("{VIP}:80"), "--count", "3"],
    );
    assert_eq!(names(&res).values().sum::<usize>(), 3);
    // kproxy runs in the node namespace: scrape it from there.
    let body = sh(lab.node.cmd("bash").args([
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/19962; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
    ]));
    assert!(body.contains("kproxy_service_new_flows_total{"), "{body}");
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("kproxy_service_new_flows_total{")
                && l.contains(&format!("frontend=\"{VIP}:80/TCP\""))
        })
        .unwrap_or_else(|| panic!("no VIP series in {body}"));
    assert!(line.ends_with(" 3"), "3 new flows counted: {line}");
    assert!(body.contains("kproxy_frontends "), "{body}");
}

/// Per-packet translation on pod veths (tc), for pod traffic socket-LB does not see: the
/// pod processes here run outside the socket-LB cgroup. Includes hairpin: a pod reaching
/// itself through its service (its source is translated so it accepts the packets).
#[test]
fn privileged_pod_veth_per_packet_and_hairpin() {
    if !privileged("privileged_pod_veth_per_packet_and_hairpin") {
        return;
    }
    let mut lab = Lab::new(3);
    lab.set_services(&[web(all_ready(3))]);
    lab.start_kproxy_with(
        "auto",
        "xdp",
        &[
            "--pod-iface",
            "vb0",
            "--pod-iface",
            "vb1",
            "--pod-iface",
            "vb2",
        ],
    );
    let vip = format!("{VIP}:80");
    let res = Lab::kpt_net(lab.backends[1].cmd(kpt()), &["tcp", &vip, "--count", "60"]);
    let spread = names(&res);
    assert_eq!(
        spread.len(),
        3,
        "all backends, including b1 itself: {spread:?}"
    );
    for r in &res {
        assert_eq!(r["getpeername"], vip.as_str());
        let seen = r["seen_peer"].as_str().unwrap();
        if r["name"] == "b1" {
            assert!(seen.starts_with("169.254.42.1:"), "hairpin source: {seen}");
        } else {
            assert!(
                seen.starts_with("10.244.1.3:"),
                "pod source preserved: {seen}"
            );
        }
    }
    let res = Lab::kpt_net(
        lab.backends[2].cmd(kpt()),
        &["udp", &format!("{VIP}:53"), "--count", "20"],
    );
    assert!(
        res.iter()
            .all(|r| r["ok"] == true && r["from"] == format!("{VIP}:53")),
        "{res:?}"
    );
    assert!(names(&res).len() >= 2);
}

/// `--socket-lb-scope host`: socket-LB translates only in kproxy's own network namespace
/// (the lab's node), so pods and namespaces standing for other hosts are left to the
/// per-packet paths. A pod with the pod programs on its veth still reaches the ClusterIP,
/// including a host-network backend, whose replies are reverse-translated on their way into
/// the pod (tc egress of its veth).
#[test]
fn privileged_socket_lb_host_scope_and_host_network_backend() {
    if !privileged("privileged_socket_lb_host_scope_and_host_network_backend") {
        return;
    }
    let mut lab = Lab::new(2);
    // A host-network backend: a server in the node namespace, on the bridge address.
    let host_server = kproxy_tests::Daemon::spawn({
        let mut cmd = lab.node.cmd(bin("kpt-net"));
        cmd.args(["serve", "--name", "node", "--port", "9090"]);
        cmd
    });
    eventually("the node server is up", || host_server.logged("serving"));
    let host_vip = Ipv4Addr::new(10, 96, 0, 20);
    let mut manifest = String::new();
    web(all_ready(2)).yaml(&mut manifest);
    let _ = write!(
        manifest,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: apiserver, namespace: default}}\n\
         spec:\n  clusterIP: {host_vip}\n  ports:\n  - {{name: https, port: 443, protocol: TCP, \
         targetPort: 9090}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: apiserver-1\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: apiserver}}\naddressType: IPv4\n\
         ports:\n- {{name: https, port: 9090, protocol: TCP}}\nendpoints:\n\
         - addresses: [10.244.1.1]\n  conditions: {{ready: true}}\n"
    );
    lab.write_raw_manifest(&manifest);
    lab.start_kproxy_with(
        "auto",
        "xdp",
        &["--socket-lb-scope", "host", "--pod-iface", "vb1"],
    );
    let vip = format!("{VIP}:80");
    // The node's own processes: socket-LB (nothing else translates in that namespace).
    let res = Lab::kpt_net(lab.host_cmd(&kpt()), &["tcp", &vip, "--count", "6"]);
    assert_eq!(names(&res).values().sum::<usize>(), 6);
    // Pod b0 has no pod programs and is out of socket-LB's scope: untranslated, it fails.
    let res = Lab::kpt_net(lab.pod_cmd(0, &kpt()), &["tcp", &vip]);
    assert_eq!(
        res[0]["ok"], false,
        "b0 was translated by socket-LB: {res:?}"
    );
    // Pod b1: per-packet on its veth.
    let res = Lab::kpt_net(lab.pod_cmd(1, &kpt()), &["tcp", &vip, "--count", "6"]);
    assert_eq!(names(&res).values().sum::<usize>(), 6);
    // Pod b1 to the host-network backend: the reply comes back from the ClusterIP.
    let target = format!("{host_vip}:443");
    let res = Lab::kpt_net(lab.pod_cmd(1, &kpt()), &["tcp", &target, "--count", "3"]);
    for r in &res {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["name"], "node");
        assert_eq!(r["getpeername"], target.as_str());
    }
    // The external client is untouched by socket-LB either way.
    let res = Lab::kpt_net(
        lab.client_cmd(&kpt()),
        &["tcp", &format!("{LB_IP}:80"), "--count", "4"],
    );
    assert_eq!(names(&res).values().sum::<usize>(), 4);
}
