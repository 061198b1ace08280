//! The controllers and the scheduler together on fake nodes (kpt-fakenodes: Nodes, Leases,
//! pods reported Running/Ready, no containers): a node that stops heartbeating becomes
//! unreachable, and its Deployment's pods are replaced on the node that is left.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::{control, kubelet::is_ready, until};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_nodes_pods_are_replaced_on_another_node() {
    let dir = TempDir::new("kpt-fakecluster");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = control::controller_manager(
        &api,
        &[
            "--node-monitor-grace-period",
            "3",
            "--pod-eviction-timeout",
            "1",
        ],
    );
    let _sched = control::scheduler(&api, &[]);
    let mut doomed = control::fake_nodes(&api, "fa", 1, &["--heartbeat", "0.5"]);
    let _survivor = control::fake_nodes(&api, "fb", 1, &["--heartbeat", "0.5"]);
    let c = control::client(&api).await;

    let deps: Api<Deployment> = Api::default_namespaced(c.clone());
    let d = json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "kecho"}]}}}});
    deps.create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let list = || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
    };

    // The scheduler spreads one owner's pods: one on each node.
    until("one ready pod on each node", || async {
        let per_node: BTreeMap<String, usize> =
            list()
                .await
                .iter()
                .filter(|p| is_ready(p))
                .fold(BTreeMap::new(), |mut m, p| {
                    *m.entry(node_of(p)).or_default() += 1;
                    m
                });
        per_node.get("fa-0") == Some(&1) && per_node.get("fb-0") == Some(&1)
    })
    .await;

    // fa-0 stops heartbeating: Unknown + unreachable taint, its pod evicted, a replacement
    // scheduled on fb-0 (the tainted node takes no new pods).
    doomed.kill();
    let nodes: Api<Node> = Api::all(c.clone());
    until("fa-0 is unreachable and tainted", || async {
        let n = nodes.get("fa-0").await.unwrap();
        let unknown = n.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown")
        });
        let tainted = n.spec.and_then(|s| s.taints).is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
        });
        unknown && tainted
    })
    .await;
    until("two ready pods, both on fb-0", || async {
        let live: Vec<Pod> = list()
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        live.len() == 2 && live.iter().all(|p| node_of(p) == "fb-0")
    })
    .await;
    until("the Deployment reports 2 available", || async {
        let d = deps.get_status("web").await.unwrap();
        d.status.and_then(|s| s.available_replicas) == Some(2)
    })
    .await;
}
