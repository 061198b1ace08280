//! Privileged: a three-node cluster on this machine's real kernel and Docker
//! (`kproxy_tests::multinode::MultiCluster`: the host is node 1, two network namespaces on
//! one LAN bridge are nodes 2 and 3, each with its own kubelet and `kproxy node` inside, pod
//! CIDRs from node IPAM, no encapsulation: kproxy routes each other node's pod CIDR via that
//! node's address). A six-replica kecho Deployment behind a ClusterIP Service then shows:
//!
//! - (a) the scheduler spreads the replicas over all three nodes (its owner spreading);
//! - (b) pod → pod across nodes keeps the source address: kecho answers with the peer
//!   address it sees, which must be the calling pod's own IP;
//! - (c) the ClusterIP from every node's own network namespace (socket-LB of that node's
//!   kproxy) is answered, also by pods on the other nodes;
//! - (d) the ClusterIP from a pod on each node (that node's pod programs or socket-LB on its
//!   pods' cgroup) is answered, also by pods on the other nodes.
//!
//! Why each part can fail: nothing but kproxy's host-gw routes tells a node where another
//! node's pod CIDR is (no default route in the worker namespaces, the host's default route
//! leads away from the LAN), so (b), (c) and (d) across nodes need them; the kubelet's
//! `--cluster-cidr` keeps pod → pod traffic unmasqueraded, without it (b) sees the node's
//! address. The service CIDR is kept local (`unreachable`) on every node, so an untranslated
//! packet to the ClusterIP is refused where it starts. NodePort and LoadBalancer IPs to
//! remote backends (SNAT) are not covered here.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::Command,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod, Service},
};
use kproxy_tests::{
    cluster::{assert_unreachable_here, run},
    eventually,
    kubelet::{container_status, docker_id, http_deployment, is_ready, pod_ip},
    multinode::MultiCluster,
    privileged, unique,
};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const NS: &str = "default";
const REPLICAS: usize = 6;
/// Requests per client: with two of six pods on the client's own node, all of them landing
/// there has a probability of 3^-18.
const REQUESTS: usize = 18;

/// One ready replica: its name, node, address and kecho container.
#[derive(Debug, Clone)]
struct Replica {
    name: String,
    node: String,
    ip: Ipv4Addr,
    container: String,
}

fn replicas(c: &MultiCluster, app: &str) -> Vec<Replica> {
    let pods: Api<Pod> = Api::namespaced(c.kubelet.client(), NS);
    c.kubelet
        .block_on(pods.list(&ListParams::default().labels(&format!("app={app}"))))
        .expect("list pods")
        .items
        .into_iter()
        .filter(is_ready)
        .filter_map(|p| {
            Some(Replica {
                name: p.metadata.name.clone()?,
                node: p.spec.as_ref()?.node_name.clone()?,
                ip: pod_ip(&p)?,
                container: docker_id(container_status(&p, "echo")?)?.to_string(),
            })
        })
        .collect()
}

/// `kecho`'s answer `<pod> <peer-ip>:<peer-port>`: the pod and the peer address.
fn parse_greeting(body: &str) -> Option<(String, Ipv4Addr)> {
    let mut words = body.split_whitespace();
    let pod = words.next()?.to_string();
    let peer = words.next()?.rsplit_once(':')?.0.parse().ok()?;
    Some((pod, peer))
}

/// Runs `fetch` (prints one greeting) `REQUESTS` times; the answering pods by count.
fn collect(what: &str, mut fetch: impl FnMut() -> Command) -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for _ in 0..REQUESTS {
        let out = run(&mut fetch());
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: request failed ({}): {body}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let (pod, _) = parse_greeting(&body).unwrap_or_else(|| panic!("{what}: {body:?}"));
        *names.entry(pod).or_default() += 1;
    }
    names
}

/// Every answer came from a replica, and some from replicas on other nodes than `node`.
fn assert_remote_answers(
    what: &str,
    node: &str,
    answers: &BTreeMap<String, usize>,
    by_name: &BTreeMap<String, Replica>,
) {
    let nodes: BTreeSet<&str> = answers
        .keys()
        .map(|n| {
            by_name
                .get(n)
                .unwrap_or_else(|| panic!("{what}: {n} is no replica"))
                .node
                .as_str()
        })
        .collect();
    eprintln!("{what} (node {node}): answered by {answers:?} on nodes {nodes:?}");
    assert!(
        nodes.iter().any(|n| *n != node),
        "{what}: only pods of node {node} answered: {answers:?}"
    );
}

#[test]
fn privileged_three_nodes_route_pods_and_services_across_nodes() {
    if !privileged("privileged_three_nodes_route_pods_and_services_across_nodes") {
        return;
    }
    let c = MultiCluster::start("kpt-mnode", 3);
    c.wait_ready();
    let node_names = c.nodes();

    // Node IPAM gave every node its own part of the cluster CIDR.
    let nodes: Api<Node> = Api::all(c.kubelet.client());
    let cidrs: BTreeSet<String> = node_names
        .iter()
        .map(|n| {
            c.kubelet
                .block_on(nodes.get(n))
                .expect("get node")
                .spec
                .and_then(|s| s.pod_cidr)
                .expect("a pod CIDR")
        })
        .collect();
    assert_eq!(cidrs.len(), 3, "distinct pod CIDRs: {cidrs:?}");

    let app = unique("echo");
    let deployments: Api<Deployment> = Api::namespaced(c.kubelet.client(), NS);
    let deployment = http_deployment(
        &app,
        u32::try_from(REPLICAS).expect("few"),
        "echo",
        "kproxy/kecho:1",
        8080,
    );
    c.kubelet
        .block_on(deployments.create(&PostParams::default(), &deployment))
        .expect("create the Deployment");
    let services: Api<Service> = Api::namespaced(c.kubelet.client(), NS);
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "echo", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }))
    .expect("a Service");
    let svc = c
        .kubelet
        .block_on(services.create(&PostParams::default(), &service))
        .expect("create the Service");
    let cluster_ip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip?.parse().ok())
        .expect("a ClusterIP");

    let mut ready = Vec::new();
    eventually("six ready replicas", || {
        ready = replicas(&c, &app);
        ready.len() == REPLICAS
    });
    // (a) spread over all three nodes.
    let per_node: BTreeMap<&str, usize> = ready.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.node.as_str()).or_default() += 1;
        m
    });
    eprintln!("replicas per node: {per_node:?}");
    assert_eq!(
        per_node.keys().copied().collect::<BTreeSet<_>>(),
        node_names.iter().map(String::as_str).collect(),
        "the replicas spread over every node"
    );
    let by_name: BTreeMap<String, Replica> =
        ready.iter().map(|r| (r.name.clone(), r.clone())).collect();

    // (b) pod → pod across nodes keeps the source address: one caller per node, to a
    // replica on the next node.
    for (i, node) in node_names.iter().enumerate() {
        let next = &node_names[(i + 1) % node_names.len()];
        let from = ready
            .iter()
            .find(|r| &r.node == node)
            .expect("a replica here");
        let to = ready
            .iter()
            .find(|r| &r.node == next)
            .expect("a replica there");
        let url = format!("http://{}:8080/", to.ip);
        let mut body = String::new();
        eventually(&format!("{} → {} ({url})", from.name, to.name), || {
            let out =
                run(Command::new("docker").args(["exec", &from.container, "/kecho", "get", &url]));
            body = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        });
        let (pod, peer) = parse_greeting(&body).unwrap_or_else(|| panic!("greeting: {body:?}"));
        eprintln!(
            "pod {} ({node}) → pod {pod} ({next}): peer seen {peer}",
            from.name
        );
        assert_eq!(pod, to.name);
        assert_eq!(peer, from.ip, "the source address is kept across nodes");
    }

    // (c) the ClusterIP from every node's own namespace. It must meet the keep-local
    // route on each node before anything is sent.
    assert_unreachable_here(cluster_ip, c.svc_cidr());
    for w in &c.workers {
        let routes = sh_out(
            w.ns.cmd("ip")
                .args(["-4", "route", "show", "type", "unreachable"]),
        );
        assert!(
            routes
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(c.svc_cidr())),
            "keep-local route missing on {}: {routes}",
            w.node()
        );
    }
    let url = format!("http://{cluster_ip}/");
    eventually("every replica is a backend on every node", || {
        // Endpoints reach each kproxy through its own watch: wait for the first answer.
        run(c.host_cmd("curl").args(["-sf", "--max-time", "2", &url]))
            .status
            .success()
            && c.workers.iter().all(|w| {
                run(w.cmd("curl").args(["-sf", "--max-time", "2", &url]))
                    .status
                    .success()
            })
    });
    let host_node = c.kubelet.node.clone();
    let answers = collect("ClusterIP from node 1", || {
        let mut cmd = c.host_cmd("curl");
        cmd.args(["-sS", "--max-time", "3", &url]);
        cmd
    });
    assert_remote_answers("ClusterIP from node 1", &host_node, &answers, &by_name);
    for (k, w) in c.workers.iter().enumerate() {
        let what = format!("ClusterIP from node {}", k + 2);
        let answers = collect(&what, || {
            let mut cmd = w.cmd("curl");
            cmd.args(["-sS", "--max-time", "3", &url]);
            cmd
        });
        assert_remote_answers(&what, w.node(), &answers, &by_name);
    }

    // (d) the ClusterIP from a pod on each node.
    for node in &node_names {
        let from = ready
            .iter()
            .find(|r| &r.node == node)
            .expect("a replica here");
        let what = format!("ClusterIP from pod {}", from.name);
        let answers = collect(&what, || {
            let mut cmd = Command::new("docker");
            cmd.args(["exec", &from.container, "/kecho", "get", &url]);
            cmd
        });
        assert_remote_answers(&what, node, &answers, &by_name);
    }
}

fn sh_out(cmd: &mut Command) -> String {
    kproxy_tests::sh(cmd)
}
