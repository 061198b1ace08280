//! Privileged: traffic policies end to end in the lab (kproxy standalone as node `n1`,
//! zone `za`): `externalTrafficPolicy: Local` with endpoints on and off the node, the
//! `healthCheckNodePort`, `internalTrafficPolicy: Local`, the fallback to terminating
//! endpoints and zone hints. Which node an endpoint is on is what its `nodeName` says: the
//! lab's backends all sit behind the node's bridge.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, process::Command};

use kproxy_tests::{
    eventually,
    lab::{CLIENT_IP, Lab, NODE_IP, backend_ip, kpt},
    privileged,
};
use serde_json::Value;

const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 20);
const HC_PORT: u16 = 32100;

/// One endpoint: backend index, node, ready, zone hint.
struct E(usize, &'static str, bool, Option<&'static str>);

/// A Service `name` (TCP port 80 to 8080) with `spec` lines and its EndpointSlice.
fn service(out: &mut String, name: &str, ip: &str, spec: &str, status: &str, eps: &[E]) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  clusterIP: {ip}\n{spec}  ports: [{{name: http, port: 80, protocol: TCP, \
         targetPort: 8080{np}}}]\n{status}\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
         name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:{}\n",
        if eps.is_empty() { " []" } else { "" },
        np = if spec.contains("LoadBalancer") {
            ", nodePort: 30090"
        } else {
            ""
        },
    );
    for E(i, node, ready, zone) in eps {
        let (serving, terminating) = if *ready { (true, false) } else { (true, true) };
        let _ = writeln!(
            out,
            "- addresses: [{}]\n  nodeName: {node}\n  conditions: {{ready: {ready}, \
             serving: {serving}, terminating: {terminating}}}",
            backend_ip(*i)
        );
        if let Some(z) = zone {
            let _ = writeln!(out, "  hints: {{forZones: [{{name: {z}}}]}}");
        }
    }
}

/// The Local LoadBalancer Service `lb` with `eps`.
fn local_lb(eps: &[E]) -> String {
    let mut y = String::new();
    service(
        &mut y,
        "lb",
        "10.96.0.20",
        &format!(
            "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  \
             healthCheckNodePort: {HC_PORT}\n"
        ),
        &format!("status:\n  loadBalancer:\n    ingress: [{{ip: {LB_IP}}}]\n"),
        eps,
    );
    y
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

fn tcp(cmd: Command, target: &str, count: usize) -> Vec<Value> {
    Lab::kpt_net(cmd, &["tcp", target, "--count", &count.to_string()])
}

/// `curl` of the health check from the client: (status, body, headers).
fn health(lab: &Lab) -> (u16, String, String) {
    let out = lab
        .client_cmd("curl")
        .args(["-s", "-D", "/dev/stderr", "-m", "3", "-w", "\n%{http_code}"])
        .arg(format!("http://{NODE_IP}:{HC_PORT}/healthz"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).to_ascii_lowercase(),
    )
}

fn start(manifest: &str, backends: usize) -> Lab {
    let mut lab = Lab::new(backends);
    lab.write_raw_manifest(manifest);
    lab.start_kproxy_with("auto", "xdp", &["--node-name", "n1", "--node-zone", "za"]);
    lab
}

#[test]
fn privileged_external_local_policy_and_health_check() {
    if !privileged("privileged_external_local_policy_and_health_check") {
        return;
    }
    let mut lab = start(
        &local_lb(&[E(0, "n1", true, None), E(1, "n2", true, None)]),
        2,
    );

    // External frontends (LB IP, NodePort) reach only the local endpoint, and the backend
    // sees the client's own address.
    for target in [format!("{LB_IP}:80"), format!("{NODE_IP}:30090")] {
        let res = tcp(lab.client_cmd(&kpt()), &target, 20);
        assert_eq!(names(&res), BTreeMap::from([("b0".into(), 20)]), "{target}");
        for r in &res {
            let seen = r["seen_peer"].as_str().unwrap();
            assert!(
                seen.starts_with(&format!("{CLIENT_IP}:")),
                "{target}: {seen}"
            );
        }
    }
    // The ClusterIP keeps every endpoint.
    let cluster = names(&tcp(lab.host_cmd(&kpt()), "10.96.0.20:80", 40));
    assert_eq!(cluster.len(), 2, "{cluster:?}");

    let (code, body, headers) = health(&lab);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["localEndpoints"], 1);
    assert_eq!(
        v["service"],
        serde_json::json!({"namespace": "default", "name": "lb"})
    );
    assert_eq!(v["serviceProxyHealthy"], true);
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );

    // The local endpoint goes away: 503, and external traffic is not sent to the other
    // node's endpoint.
    let before = lab.syncs();
    lab.write_raw_manifest(&local_lb(&[E(1, "n2", true, None)]));
    lab.wait_sync(before);
    eventually("health check says 503", || health(&lab).0 == 503);
    let (_, body, _) = health(&lab);
    assert!(body.contains(r#""localEndpoints":0"#), "{body}");
    // Dropped, not refused (kube-proxy's "has no local endpoints" DROP): the connect
    // times out instead of meeting a RST.
    let res = tcp(lab.client_cmd(&kpt()), &format!("{LB_IP}:80"), 1);
    assert!(
        res.iter()
            .all(|r| r["ok"] == false && r["kind"] == "TimedOut"),
        "{res:?}"
    );
    // ClusterIP traffic still reaches the remote endpoint.
    let cluster = names(&tcp(lab.host_cmd(&kpt()), "10.96.0.20:80", 5));
    assert_eq!(cluster, BTreeMap::from([("b1".into(), 5)]));

    // The Service goes away: so does its health check port.
    let before = lab.syncs();
    lab.write_raw_manifest("");
    lab.wait_sync(before);
    eventually("health check port closed", || health(&lab).0 == 0);
}

#[test]
fn privileged_internal_local_terminating_fallback_and_zone_hints() {
    if !privileged("privileged_internal_local_terminating_fallback_and_zone_hints") {
        return;
    }
    let mut y = String::new();
    // internalTrafficPolicy Local: only b0 (on n1); `itp-none` has no local endpoint.
    service(
        &mut y,
        "itp",
        "10.96.0.21",
        "  internalTrafficPolicy: Local\n",
        "",
        &[
            E(0, "n1", true, None),
            E(1, "n2", true, None),
            E(2, "n2", true, None),
        ],
    );
    service(
        &mut y,
        "itp-none",
        "10.96.0.22",
        "  internalTrafficPolicy: Local\n",
        "",
        &[E(1, "n2", true, None)],
    );
    // No ready endpoint: the serving-and-terminating ones take new flows.
    service(
        &mut y,
        "term",
        "10.96.0.23",
        "",
        "",
        &[E(1, "n2", false, None), E(2, "n1", false, None)],
    );
    // Every ready endpoint hinted: only those for zone za.
    service(
        &mut y,
        "hinted",
        "10.96.0.24",
        "",
        "",
        &[
            E(0, "n1", true, Some("zb")),
            E(1, "n2", true, Some("za")),
            E(2, "n3", true, Some("za")),
        ],
    );
    let mut lab = start(&y, 3);

    let itp = names(&tcp(lab.host_cmd(&kpt()), "10.96.0.21:80", 20));
    assert_eq!(itp, BTreeMap::from([("b0".into(), 20)]));
    // Socket-LB refuses (ECONNREFUSED) a Local service without a local endpoint.
    let none = tcp(lab.host_cmd(&kpt()), "10.96.0.22:80", 3);
    assert!(
        none.iter()
            .all(|r| r["ok"] == false && r["kind"] == "ConnectionRefused"),
        "{none:?}"
    );

    let term = names(&tcp(lab.host_cmd(&kpt()), "10.96.0.23:80", 40));
    assert_eq!(
        term.keys().cloned().collect::<Vec<_>>(),
        ["b1", "b2"],
        "{term:?}"
    );

    let hinted = names(&tcp(lab.host_cmd(&kpt()), "10.96.0.24:80", 40));
    assert_eq!(
        hinted.keys().cloned().collect::<Vec<_>>(),
        ["b1", "b2"],
        "{hinted:?}"
    );
    // One endpoint loses its hint: hints are ignored, every endpoint is used.
    let y2 = y.replace("  hints: {forZones: [{name: zb}]}\n", "");
    let before = lab.syncs();
    lab.write_raw_manifest(&y2);
    lab.wait_sync(before);
    let all = names(&tcp(lab.host_cmd(&kpt()), "10.96.0.24:80", 60));
    assert_eq!(all.len(), 3, "{all:?}");
}
