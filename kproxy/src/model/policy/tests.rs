use std::net::Ipv4Addr;

use super::*;
use crate::model::Proto;

const A: BackendState = BackendState::Active;
const T: BackendState = BackendState::Terminating;

fn be(i: u8) -> BackendAddr {
    BackendAddr {
        addr: Ipv4Addr::new(10, 244, 0, i),
        port: 8080,
        proto: Proto::Tcp,
    }
}

fn ready(i: u8, node: &'static str) -> Candidate<'static> {
    Candidate {
        backend: be(i),
        ready: true,
        serving: true,
        terminating: false,
        node: Some(node),
        zone_hints: Vec::new(),
        node_hints: Vec::new(),
    }
}

fn terminating(i: u8, node: &'static str) -> Candidate<'static> {
    Candidate {
        ready: false,
        terminating: true,
        ..ready(i, node)
    }
}

fn zoned(mut c: Candidate<'static>, zones: &[&'static str]) -> Candidate<'static> {
    c.zone_hints = zones.to_vec();
    c
}

fn here() -> Locality {
    Locality {
        node: Some("n1".into()),
        zone: Some("za".into()),
    }
}

fn pick(cands: &[Candidate<'_>], scope: Scope) -> Vec<(u8, BackendState)> {
    select(cands, scope, &here())
        .into_iter()
        .map(|(b, s)| (b.addr.octets()[3], s))
        .collect()
}

#[test]
fn policy_names() {
    assert_eq!(Scope::of(None), Scope::Cluster);
    assert_eq!(Scope::of(Some("Cluster")), Scope::Cluster);
    assert_eq!(Scope::of(Some("Local")), Scope::Local);
}

#[test]
fn cluster_takes_every_ready_endpoint_and_keeps_terminating_ones() {
    let cands = [ready(1, "n1"), ready(2, "n2"), terminating(3, "n2")];
    assert_eq!(pick(&cands, Scope::Cluster), [(1, A), (2, A), (3, T)]);
}

#[test]
fn local_takes_only_this_nodes_endpoints() {
    let cands = [
        ready(1, "n1"),
        ready(2, "n2"),
        terminating(3, "n1"),
        terminating(4, "n2"),
    ];
    assert_eq!(pick(&cands, Scope::Local), [(1, A), (3, T)]);
}

#[test]
fn local_without_local_endpoints_has_none() {
    // No fallback to other nodes: the traffic is not served here.
    let cands = [ready(2, "n2"), terminating(3, "n2")];
    assert!(pick(&cands, Scope::Local).is_empty());
    // Nor without a node name: nothing is local.
    let nowhere = Locality::default();
    assert!(select(&[ready(1, "n1")], Scope::Local, &nowhere).is_empty());
}

#[test]
fn no_ready_endpoint_falls_back_to_serving_terminating() {
    let not_serving = Candidate {
        serving: false,
        ..terminating(4, "n1")
    };
    let cands = [terminating(1, "n1"), terminating(2, "n2"), not_serving];
    assert_eq!(pick(&cands, Scope::Cluster), [(1, A), (2, A)]);
    // Local falls back within this node, even with ready endpoints elsewhere.
    let cands = [ready(1, "n2"), terminating(2, "n1"), terminating(3, "n2")];
    assert_eq!(pick(&cands, Scope::Local), [(2, A)]);
}

#[test]
fn zone_hints_narrow_the_cluster_scope() {
    let cands = [
        zoned(ready(1, "n1"), &["zb"]),
        zoned(ready(2, "n2"), &["za"]),
        zoned(ready(3, "n3"), &["za", "zb"]),
    ];
    assert_eq!(pick(&cands, Scope::Cluster), [(2, A), (3, A)]);
    // Hints do not apply to the Local scope.
    assert_eq!(pick(&cands, Scope::Local), [(1, A)]);
}

#[test]
fn zone_hints_are_ignored_unless_complete_and_matching() {
    // One ready endpoint without hints: all.
    let cands = [zoned(ready(1, "n1"), &["zb"]), ready(2, "n2")];
    assert_eq!(pick(&cands, Scope::Cluster), [(1, A), (2, A)]);
    // No endpoint for this zone: all.
    let cands = [
        zoned(ready(1, "n1"), &["zb"]),
        zoned(ready(2, "n2"), &["zc"]),
    ];
    assert_eq!(pick(&cands, Scope::Cluster), [(1, A), (2, A)]);
    // Node without a zone: all.
    let unzoned = Locality {
        zone: None,
        ..here()
    };
    let cands = [
        zoned(ready(1, "n1"), &["za"]),
        zoned(ready(2, "n2"), &["zb"]),
    ];
    assert_eq!(select(&cands, Scope::Cluster, &unzoned).len(), 2);
    // Terminating endpoints without hints do not disable them.
    let cands = [
        zoned(ready(1, "n1"), &["za"]),
        zoned(ready(2, "n2"), &["zb"]),
        terminating(3, "n2"),
    ];
    assert_eq!(pick(&cands, Scope::Cluster), [(1, A), (3, T)]);
}

#[test]
fn node_hints_win_over_zone_hints() {
    let mut c1 = zoned(ready(1, "n1"), &["za"]);
    c1.node_hints = vec!["n1"];
    let mut c2 = zoned(ready(2, "n2"), &["za"]);
    c2.node_hints = vec!["n2"];
    assert_eq!(pick(&[c1, c2], Scope::Cluster), [(1, A)]);
}

#[test]
fn a_duplicated_address_is_active_if_ready_anywhere() {
    let cands = [ready(1, "n1"), terminating(1, "n1")];
    assert_eq!(pick(&cands, Scope::Cluster), [(1, A)]);
    let cands = [terminating(1, "n1"), ready(1, "n1"), ready(2, "n1")];
    assert_eq!(pick(&cands, Scope::Local), [(1, A), (2, A)]);
}

#[test]
fn local_ready_counts_ready_endpoints_on_this_node() {
    let cands = [
        ready(1, "n1"),
        ready(2, "n2"),
        terminating(3, "n1"),
        ready(4, "n1"),
    ];
    assert_eq!(local_ready(&cands, &here()), 2);
    assert_eq!(local_ready(&cands, &Locality::default()), 0);
}

#[test]
fn health_check_port_needs_load_balancer_and_local() {
    let svc = |ty: &str, etp: Option<&str>, port: Option<i32>| Service {
        spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
            type_: Some(ty.into()),
            external_traffic_policy: etp.map(String::from),
            health_check_node_port: port,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        health_check_port(&svc("LoadBalancer", Some("Local"), Some(31000))),
        Some(31000)
    );
    assert_eq!(
        health_check_port(&svc("LoadBalancer", Some("Local"), None)),
        None
    );
    assert_eq!(
        health_check_port(&svc("LoadBalancer", None, Some(31000))),
        None
    );
    assert_eq!(
        health_check_port(&svc("NodePort", Some("Local"), Some(31000))),
        None
    );
}

#[test]
fn local_policy_without_local_endpoints_drops_but_an_empty_service_refuses() {
    let drops = |cands: &[Candidate<'_>], scope| {
        drops_without_local(cands, scope, &select(cands, scope, &here()))
    };
    // Endpoints only on another node: Local drops, Cluster uses them.
    let remote = [ready(1, "n2")];
    assert!(drops(&remote, Scope::Local));
    assert!(!drops(&remote, Scope::Cluster));
    // A local endpoint: nothing to drop.
    assert!(!drops(&[ready(1, "n2"), ready(2, "n1")], Scope::Local));
    // A serving-but-terminating local endpoint takes new flows (KEP-1669): nothing to drop.
    assert!(!drops(
        &[terminating(2, "n1"), ready(1, "n2")],
        Scope::Local
    ));
    // No endpoint anywhere: refused, as kube-proxy rejects services without endpoints.
    assert!(!drops(&[], Scope::Local));
}
