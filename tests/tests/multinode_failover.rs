//! Privileged: node failure and recovery in a three-node cluster on this machine's real
//! kernel and Docker (`kproxy_tests::multinode::MultiCluster`). A three-replica kecho
//! Deployment (one pod per node) behind a LoadBalancer Service (externalTrafficPolicy
//! Cluster); the host node is kept out of the L2 announcement (`--no-l2-announce`), so a
//! worker announces the EXTERNAL-IP. The NodePort of every node and the EXTERNAL-IP reach
//! the pods of all three nodes from the client namespace. Then, under a request loop from
//! the client namespace:
//!
//! - the announcing worker dies (its kubelet and kproxy killed, its link down): the other
//!   worker takes the Service's lease over and sends gratuitous ARP, so the client moves at
//!   once; ten requests in a row succeed once the dead node's pod is no longer an endpoint
//!   (until it turns NotReady, a third of new flows still go to it, as in Kubernetes);
//! - the dead node turns NotReady within the controller manager's grace period, its pod is
//!   evicted and replaced on a live node;
//! - the node returns (link up, kubelet restarted): it is Ready again and the evicted pod is
//!   gone from the API and from Docker.
//!
//! Why each part can fail: without the lease takeover and the gratuitous ARP the client keeps
//! the dead node's MAC; without SNAT for remote backends the new announcer's answers from
//! other nodes' pods never come back; without node lifecycle the pod stays bound to the dead
//! node; without the kubelet's cleanup the evicted pod's containers stay.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Node, Pod, Service},
};
use kproxy_tests::{
    cluster::run,
    eventually,
    kubelet::{http_deployment, is_ready},
    multinode::{MultiCluster, MultiOptions},
    privileged, unique,
};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const NS: &str = "default";

/// One GET to `addr` with short timeouts: the answering pod's name.
fn greet(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let line = body.rsplit("\r\n\r\n").next()?;
    Some(line.split_whitespace().next()?.to_string())
}

fn pods_of(c: &MultiCluster, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(c.kubelet.client(), NS);
    c.kubelet
        .block_on(pods.list(&ListParams::default().labels(&format!("app={app}"))))
        .expect("list pods")
        .items
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

fn node_ready(c: &MultiCluster, name: &str) -> bool {
    let nodes: Api<Node> = Api::all(c.kubelet.client());
    c.kubelet
        .block_on(nodes.get(name))
        .ok()
        .and_then(|n| n.status?.conditions)
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[test]
fn privileged_a_dead_announcer_fails_over_and_its_pods_move() {
    if !privileged("privileged_a_dead_announcer_fails_over_and_its_pods_move") {
        return;
    }
    let options = MultiOptions {
        controller_manager: [
            "--controllers",
            "nodelifecycle",
            // Above the kubelets' 5 s heartbeat, as Kubernetes requires of the grace period.
            "--node-monitor-grace-period",
            "12",
            "--pod-eviction-timeout",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        host_kproxy: vec!["--no-l2-announce".into()],
    };
    let mut c = MultiCluster::start_with("kpt-mnfo", 3, &options);
    c.wait_ready();
    let app = unique("fo");
    let deployment = http_deployment(&app, 3, "echo", "kproxy/kecho:1", 8080);
    let deployments: Api<Deployment> = Api::namespaced(c.kubelet.client(), NS);
    c.kubelet
        .block_on(deployments.create(&PostParams::default(), &deployment))
        .expect("create the Deployment");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": app},
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }))
    .expect("a Service");
    let services: Api<Service> = Api::namespaced(c.kubelet.client(), NS);
    c.kubelet
        .block_on(services.create(&PostParams::default(), &service))
        .expect("create the Service");
    eventually("three ready replicas, one per node", || {
        let pods = pods_of(&c, &app);
        let nodes: BTreeSet<&str> = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(node_of)
            .collect();
        nodes.len() == 3
    });
    let mut lb_ip: Option<Ipv4Addr> = None;
    eventually("an EXTERNAL-IP", || {
        lb_ip = c
            .kubelet
            .block_on(services.get(&app))
            .ok()
            .and_then(|s| s.status?.load_balancer?.ingress?.first()?.ip.clone())
            .and_then(|ip| ip.parse().ok());
        lb_ip.is_some()
    });
    let addr = SocketAddr::from((lb_ip.expect("an EXTERNAL-IP"), 80));
    eventually("the EXTERNAL-IP answering the client", || {
        c.client.run(|| greet(addr)).is_some()
    });

    // The NodePort of every node answers the client, from pods of every node (remote ones
    // through the node's SNAT).
    let node_port = c
        .kubelet
        .block_on(services.get(&app))
        .ok()
        .and_then(|s| s.spec?.ports?.first()?.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .expect("a NodePort");
    let node_ips: Vec<Ipv4Addr> = std::iter::once(c.lan.addr(1))
        .chain(c.workers.iter().map(|w| w.ip))
        .collect();
    for ip in node_ips {
        let at = SocketAddr::from((ip, node_port));
        let answered: BTreeSet<String> =
            c.client.run(|| (0..45).filter_map(|_| greet(at)).collect());
        eprintln!("NodePort {at}: answered by {answered:?}");
        assert_eq!(
            answered.len(),
            3,
            "NodePort {at} reaches the pods of all three nodes"
        );
    }

    // The announcer is a worker: the host is no candidate.
    let leases: Api<Lease> = Api::namespaced(c.kubelet.client(), "kube-system");
    let lease = format!("kproxy-l2-{NS}.{app}");
    let holder = |c: &MultiCluster| {
        c.kubelet
            .block_on(leases.get(&lease))
            .ok()
            .and_then(|l| l.spec?.holder_identity)
    };
    let announcer = holder(&c).expect("the Service's lease has a holder");
    let dead = c
        .workers
        .iter()
        .position(|w| w.node() == announcer)
        .unwrap_or_else(|| panic!("the announcer {announcer} is not a worker"));
    // The announcer's own pod and the other nodes' (SNAT to remote backends) all answer.
    let pods = pods_of(&c, &app);
    let answered: BTreeSet<String> = c
        .client
        .run(|| (0..60).filter_map(|_| greet(addr)).collect());
    let nodes: BTreeSet<&str> = pods
        .iter()
        .filter(|p| answered.contains(p.metadata.name.as_deref().unwrap_or_default()))
        .filter_map(node_of)
        .collect();
    eprintln!("via the EXTERNAL-IP (announced by {announcer}): pods {answered:?} on {nodes:?}");
    assert_eq!(
        nodes.len(),
        3,
        "pods of every node answer through {announcer}"
    );
    let dead_pod: Pod = pods_of(&c, &app)
        .into_iter()
        .find(|p| node_of(p) == Some(announcer.as_str()))
        .expect("a pod on the announcer");
    let dead_pod_name = dead_pod.metadata.name.clone().expect("a name");
    let dead_uid = dead_pod.metadata.uid.clone().expect("a uid");

    // The announcer dies under a request loop.
    {
        let w = &mut c.workers[dead];
        w.kproxy.kill();
        w.kubelet.kill();
        w.ns.ip(&["link", "set", "eth0", "down"]);
    }
    let killed = Instant::now();
    let (failed, took) = c.client.run(|| {
        let mut failed = 0;
        let mut streak = 0;
        while streak < 10 {
            if killed.elapsed() > Duration::from_secs(30) {
                return (failed, None);
            }
            if greet(addr).is_some() {
                streak += 1;
            } else {
                streak = 0;
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (failed, Some(killed.elapsed()))
    });
    if took.is_none() {
        let neigh = c.client.ip(&["neigh"]);
        eprintln!("client neighbours: {neigh}");
        for w in &c.workers {
            eprintln!("--- {} log:", w.node());
            for l in w
                .kproxy
                .lines()
                .iter()
                .filter(|l| !l.contains("DEBUG"))
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("{l}");
            }
            for fe in kproxy_tests::lab::kproxy_dump(w.bpffs()) {
                if fe.to_string().contains(&addr.ip().to_string()) {
                    eprintln!("frontend: {fe}");
                }
            }
            let drops = run(std::process::Command::new(kproxy_tests::bin("kproxy"))
                .arg("--bpffs")
                .arg(w.bpffs())
                .args(["dump", "--drops"]));
            eprintln!("drops: {}", String::from_utf8_lossy(&drops.stdout));
        }
        panic!("requests did not succeed again within 30 s ({failed} failed)");
    }
    eprintln!(
        "after the announcer died: {failed} requests failed, 10 in a row succeeded by {took:?}"
    );
    let now = holder(&c).expect("a holder");
    assert_ne!(now, announcer, "another worker holds the lease");
    assert!(
        c.workers.iter().any(|w| w.node() == now),
        "the new announcer {now} is a worker"
    );

    // NotReady, the pod evicted and replaced on a live node.
    eventually("the dead node NotReady", || !node_ready(&c, &announcer));
    eventually("three ready replicas on live nodes", || {
        let pods = pods_of(&c, &app);
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        live.len() == 3
            && live
                .iter()
                .all(|p| is_ready(p) && node_of(p) != Some(announcer.as_str()))
    });

    // The node returns: Ready again, and its evicted pod is cleaned up.
    {
        let w = &mut c.workers[dead];
        w.ns.ip(&["link", "set", "eth0", "up"]);
        w.kubelet.restart();
    }
    eventually("the returned node Ready", || node_ready(&c, &announcer));
    eventually("the evicted pod gone from the API", || {
        !pods_of(&c, &app)
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(dead_pod_name.as_str()))
    });
    eventually("the evicted pod's containers gone from Docker", || {
        let out = run(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.kproxy.pod.uid={dead_uid}"),
        ]));
        out.status.success() && out.stdout.iter().all(u8::is_ascii_whitespace)
    });
}
