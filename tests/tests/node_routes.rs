//! Privileged: `kproxy node`'s host-gw routes. A real API server holds three Nodes (pod CIDR
//! and InternalIP each); kproxy runs as the first one inside a fresh network namespace (its
//! uplink a veth there, the API server reached through a forwarder on the namespace's
//! loopback) and must route the other two nodes' pod CIDRs via their addresses, follow
//! address changes, deletions and re-registrations, keep its routes when it exits, and
//! remove a stale route of its protocol at the next start while leaving others' alone.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::{Shutdown, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    thread,
};

use k8s_openapi::api::core::v1::Node;
use kproxy_tests::{
    BpffsDir, Daemon, NetNs,
    apiserver::{ApiServer, TempDir},
    bin,
    control::{client, from_json},
    eventually, privileged, sh, unique, veth_pair,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// kproxy's route protocol (`kproxy/src/node/routes.rs`).
const PROTO: &str = "203";

/// Forwards TCP connections to `127.0.0.1:port` inside `ns` to `127.0.0.1:port` of the test's
/// own namespace (where the API server listens), so a kubeconfig for the API server works
/// unchanged inside `ns` (TLS passes through untouched).
fn forward_into(ns: &NetNs, port: u16) {
    let listener = ns.run(|| TcpListener::bind(("127.0.0.1", port)).expect("bind in netns"));
    // Threads spawned here are in the test's namespace: their connects reach the server.
    thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            thread::spawn(move || {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.flush();
                        let _ = to.shutdown(Shutdown::Write);
                    })
                };
                let a = pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                let b = pipe(outbound, inbound);
                let _ = (a.join(), b.join());
            });
        }
    });
}

/// The routes of kproxy's protocol in `ns`'s main table, as (destination, gateway).
fn kproxy_routes(ns: &NetNs) -> BTreeSet<(String, String)> {
    routes(ns, &["proto", PROTO])
}

fn routes(ns: &NetNs, filter: &[&str]) -> BTreeSet<(String, String)> {
    let mut args = vec!["-4", "route", "show"];
    args.extend_from_slice(filter);
    ns.ip(&args)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let via = w.iter().position(|x| *x == "via")?;
            Some((w.first()?.to_string(), w.get(via + 1)?.to_string()))
        })
        .collect()
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(d, v)| ((*d).to_string(), (*v).to_string()))
        .collect()
}

async fn create_node(nodes: &Api<Node>, name: &str, cidr: &str, ip: &str) {
    nodes
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": name},
                              "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})),
        )
        .await
        .expect("create node");
    set_ip(nodes, name, ip).await;
}

async fn set_ip(nodes: &Api<Node>, name: &str, ip: &str) {
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status");
}

fn start_kproxy(ns: &NetNs, bpffs: &BpffsDir, kubeconfig: &PathBuf, node: &str) -> Daemon {
    let mut cmd = ns.cmd(bin("kproxy"));
    cmd.arg("--bpffs")
        .arg(bpffs.path())
        .args(["node", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--node-name", node, "--uplink", "eth0", "--xdp-mode", "generic"])
        // Nothing on the machine's cgroup root: this test is about routes.
        .args(["--no-socket-lb", "--keep-local", "none", "--no-serve"])
        .env("RUST_LOG", "info");
    Daemon::spawn_until_logged(cmd, "kproxy ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_routes_follow_the_nodes() {
    if !privileged("node_routes_follow_the_nodes") {
        return;
    }
    let dir = TempDir::new("kpt-routes");
    let api = ApiServer::start(dir.path(), &[]);
    let c = client(&api).await;
    let nodes: Api<Node> = Api::all(c);
    let me = unique("kpt-rt-a");
    let (b, cc) = (unique("kpt-rt-b"), unique("kpt-rt-c"));
    create_node(&nodes, &me, "10.250.0.0/24", "192.168.77.1").await;
    create_node(&nodes, &b, "10.250.1.0/24", "192.168.77.12").await;
    create_node(&nodes, &cc, "10.250.2.0/24", "192.168.77.13").await;
    let kubeconfig = dir.path().join("node-kubeconfig");
    sh(Command::new(bin("kproxy-apiserver"))
        .args(["node-kubeconfig", &me, "--out"])
        .arg(&kubeconfig)
        .args(["--server", &api.url, "--data-dir"])
        .arg(&api.data_dir));

    // The node's namespace: eth0 on a LAN whose other end is a namespace of its own.
    let node = NetNs::new("kpt-rtn");
    let lan = NetNs::new("kpt-rtl");
    veth_pair(
        &node,
        "eth0",
        "192.168.77.1/24",
        &lan,
        "lan0",
        "192.168.77.254/24",
    );
    let port: u16 = api
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("API server port");
    forward_into(&node, port);
    let bpffs = BpffsDir::new("kpt-routes");

    let mut kproxy = start_kproxy(&node, &bpffs, &kubeconfig, &me);
    let want = set(&[
        ("10.250.1.0/24", "192.168.77.12"),
        ("10.250.2.0/24", "192.168.77.13"),
    ]);
    eventually("routes to the other nodes", || kproxy_routes(&node) == want);

    // An address change replaces the route.
    set_ip(&nodes, &b, "192.168.77.22").await;
    let want = set(&[
        ("10.250.1.0/24", "192.168.77.22"),
        ("10.250.2.0/24", "192.168.77.13"),
    ]);
    eventually("route via the new address", || kproxy_routes(&node) == want);

    // A deleted node's route goes; re-registered with another pod CIDR, it comes back.
    nodes
        .delete(&cc, &DeleteParams::default())
        .await
        .expect("delete node");
    let want = set(&[("10.250.1.0/24", "192.168.77.22")]);
    eventually("route of the deleted node removed", || {
        kproxy_routes(&node) == want
    });
    create_node(&nodes, &cc, "10.250.3.0/24", "192.168.77.13").await;
    let want = set(&[
        ("10.250.1.0/24", "192.168.77.22"),
        ("10.250.3.0/24", "192.168.77.13"),
    ]);
    eventually("route of the re-registered node", || {
        kproxy_routes(&node) == want
    });
    assert!(kproxy.logged("node route added"), "a log line per change");

    // kproxy exits: its routes stay. A stale route of its protocol and someone else's
    // route appear meanwhile; the next start removes only the former.
    kproxy.terminate();
    assert_eq!(kproxy_routes(&node), want, "routes outlive kproxy");
    node.ip(&[
        "route",
        "add",
        "10.250.9.0/24",
        "via",
        "192.168.77.19",
        "proto",
        PROTO,
    ]);
    node.ip(&["route", "add", "10.250.8.0/24", "via", "192.168.77.18"]);
    let kproxy = start_kproxy(&node, &bpffs, &kubeconfig, &me);
    eventually("stale route removed at start", || {
        kproxy_routes(&node) == want
    });
    assert!(kproxy.logged("node route removed"), "{:?}", kproxy.lines());
    assert!(
        routes(&node, &[]).contains(&("10.250.8.0/24".into(), "192.168.77.18".into())),
        "a route of another protocol is left alone"
    );
    // Nothing else changed at the restart: the wanted routes were already in place.
    assert!(!kproxy.logged("node route added"), "{:?}", kproxy.lines());
}
