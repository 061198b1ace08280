//! DaemonSets end to end: the real controller manager's DaemonSet controller and the real
//! scheduler place one pod per eligible node (nodeSelector, taints against tolerations) over
//! fake Nodes (kpt-fakenodes), follow nodes that change or go away, roll a template change
//! node by node, and answer the real kubectl (`get ds`, `rollout status`, `rollout
//! restart`). On a real kubelet's node the daemon pod runs in Docker.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{Kubectl, available};
use kproxy_tests::kubelet::{Kubelet, free_cidr, is_ready};
use kproxy_tests::{control, eventually, privileged, until};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn daemon_set(name: &str, image: &str, pod_spec: Value) -> DaemonSet {
    let mut spec = json!({"containers": [{"name": "c", "image": image}]});
    if let (Some(s), Value::Object(extra)) = (spec.as_object_mut(), pod_spec) {
        s.extend(extra);
    }
    control::from_json(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"ds": name}},
                 "template": {"metadata": {"labels": {"ds": name}}, "spec": spec}}
    }))
}

/// The live (not terminating) pods of DaemonSet `name`, by node.
async fn pods_by_node(pods: &Api<Pod>, name: &str) -> BTreeMap<String, Vec<Pod>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("ds={name}")))
        .await
        .unwrap()
        .items;
    let mut m: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in list
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        m.entry(node_of(&p)).or_default().push(p);
    }
    m
}

/// Exactly one ready pod on each of `nodes` and on no other node.
async fn one_ready_pod_on(pods: &Api<Pod>, name: &str, nodes: &[&str]) -> bool {
    let m = pods_by_node(pods, name).await;
    m.len() == nodes.len()
        && nodes.iter().all(|n| {
            m.get(*n)
                .is_some_and(|ps| ps.len() == 1 && is_ready(&ps[0]))
        })
}

fn revision(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("controller-revision-hash").cloned())
        .unwrap_or_default()
}

async fn status_counts(sets: &Api<DaemonSet>, name: &str) -> [i32; 5] {
    let s = sets
        .get_status(name)
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    [
        s.desired_number_scheduled,
        s.current_number_scheduled,
        s.number_ready,
        s.updated_number_scheduled.unwrap_or(0),
        s.number_available.unwrap_or(0),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_places_one_pod_per_eligible_fake_node_and_rolls_updates() {
    if !available() {
        return;
    }
    let dir = TempDir::new("kpt-ds-fake");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = control::controller_manager(&api, &["--controllers", "daemonset"]);
    let _sched = control::scheduler(&api, &[]);
    let _edge = control::fake_nodes(&api, "dse", 2, &["--label", "role=edge"]);
    let _plain = control::fake_nodes(&api, "dsp", 2, &[]);
    let c = control::client(&api).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let sets: Api<DaemonSet> = Api::default_namespaced(c.clone());
    let k = Kubectl::new(&api.kubeconfig, dir.path());

    // dsp-1 is tainted: no daemon pod there unless the template tolerates it.
    let taint =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    nodes
        .patch("dsp-1", &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    sets.create(
        &PostParams::default(),
        &daemon_set("agent", "kecho", json!({})),
    )
    .await
    .unwrap();
    until("one ready agent pod on each untainted node", || {
        one_ready_pod_on(&pods, "agent", &["dse-0", "dse-1", "dsp-0"])
    })
    .await;
    until(
        "status: 3 desired, current, ready, up to date, available",
        || async { status_counts(&sets, "agent").await == [3; 5] },
    )
    .await;
    let first = pods_by_node(&pods, "agent").await;
    let pod = &first["dse-0"][0];
    let pinned = &pod
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity;
    assert_eq!(
        serde_json::to_value(pinned).unwrap()["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["dse-0"]}]}]}),
        "placed through the scheduler by node affinity"
    );

    // The real kubectl's view.
    let out = k.ok(&["get", "ds"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..7], ["agent", "3", "3", "3", "3", "3", "<none>"]);
    let out = k.ok(&["rollout", "status", "ds/agent", "--timeout=30s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );

    // Tolerating the taint is a template change: a rolling update onto all four nodes,
    // never more than maxUnavailable (1) node without an available pod.
    let tolerate = json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&tolerate))
        .await
        .unwrap();
    until("every node runs an updated ready pod", || async {
        let m = pods_by_node(&pods, "agent").await;
        let serving = m.values().filter(|ps| ps.iter().any(is_ready)).count();
        assert!(
            serving >= 2,
            "more than one node lost its pod at once: {m:?}"
        );
        m.len() == 4
            && m.values().all(|ps| {
                ps.len() == 1
                    && is_ready(&ps[0])
                    && revision(&ps[0]) != revision(&first["dse-0"][0])
            })
    })
    .await;
    let out = k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    until("status: 4 everywhere", || async {
        status_counts(&sets, "agent").await == [4; 5]
    })
    .await;

    // kubectl rollout restart: every pod replaced.
    let before: Vec<String> = pods_by_node(&pods, "agent")
        .await
        .values()
        .flatten()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let out = k.ok(&["rollout", "restart", "ds/agent"]);
    assert!(out.contains("daemonset.apps/agent restarted"), "{out}");
    let out = k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    until("four fresh ready pods", || async {
        let m = pods_by_node(&pods, "agent").await;
        m.len() == 4
            && m.values()
                .flatten()
                .all(|p| is_ready(p) && !before.contains(p.metadata.name.as_ref().unwrap()))
    })
    .await;

    // A nodeSelector narrows the set; a node that loses the label loses its pod.
    let edge = daemon_set("edge", "kecho", json!({"nodeSelector": {"role": "edge"}}));
    sets.create(&PostParams::default(), &edge).await.unwrap();
    until("edge pods on the edge nodes only", || {
        one_ready_pod_on(&pods, "edge", &["dse-0", "dse-1"])
    })
    .await;
    let out = k.ok(&["get", "ds", "edge"]);
    assert!(out.contains("role=edge"), "{out}");
    let unlabel = json!({"metadata": {"labels": {"role": null}}});
    nodes
        .patch("dse-1", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    until("dse-1 lost its edge pod", || {
        one_ready_pod_on(&pods, "edge", &["dse-0"])
    })
    .await;

    // A node that goes away takes its daemon pod with it.
    nodes
        .delete("dsp-0", &DeleteParams::default())
        .await
        .unwrap();
    until("no agent pod for the deleted node", || async {
        let m = pods_by_node(&pods, "agent").await;
        !m.contains_key("dsp-0") && m.len() == 3
    })
    .await;
    until("status: 3 desired after the node left", || async {
        status_counts(&sets, "agent").await == [3; 5]
    })
    .await;

    // OnDelete: a template change leaves the pods alone.
    let on_delete = json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
        "template": {"metadata": {"annotations": {"x": "y"}}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&on_delete))
        .await
        .unwrap();
    until("the change observed, nothing updated", || async {
        let d = sets.get_status("agent").await.unwrap();
        let s = d.status.unwrap_or_default();
        s.observed_generation == d.metadata.generation
            && s.updated_number_scheduled.unwrap_or(0) == 0
    })
    .await;
    let (ok, _, err) = k.run(&["rollout", "status", "ds/agent", "--timeout=5s"]);
    assert!(
        !ok && err.contains("rollout status is only available for RollingUpdate strategy type"),
        "{err}"
    );
}

#[test]
fn a_daemon_pod_runs_in_docker_on_the_kubelets_node() {
    if !privileged("a_daemon_pod_runs_in_docker_on_the_kubelets_node") || !available() {
        return;
    }
    let dir = TempDir::new("kpt-ds-kubelet");
    let api = ApiServer::start(dir.path(), &[]);
    let cluster_cidr = free_cidr().to_string();
    let _cm = control::controller_manager(
        &api,
        &[
            "--controllers",
            "daemonset,nodeipam",
            "--cluster-cidr",
            &cluster_cidr,
            "--node-cidr-mask-size",
            "24",
        ],
    );
    let _sched = control::scheduler(&api, &[]);
    let kubelet = Kubelet::start_with_ipam(&api, &[]);
    let k = Kubectl::new(&api.kubeconfig, dir.path());
    let sets: Api<DaemonSet> = Api::default_namespaced(kubelet.client());
    let pods: Api<Pod> = Api::default_namespaced(kubelet.client());
    kubelet
        .block_on(sets.create(
            &PostParams::default(),
            &daemon_set("web", "kproxy/httpd:1", json!({})),
        ))
        .unwrap();

    let running = |what: &str| {
        let mut uid = String::new();
        eventually(what, || {
            let m = kubelet.block_on(pods_by_node(&pods, "web"));
            let Some(ps) = m.get(&kubelet.node) else {
                return false;
            };
            let Some(p) = ps.iter().find(|p| is_ready(p)) else {
                return false;
            };
            uid = p.metadata.uid.clone().unwrap_or_default();
            m.len() == 1 && ps.len() == 1 && !kubelet.pod_containers(&uid).is_empty()
        });
        uid
    };
    let first = running("the daemon pod running in Docker on the kubelet's node");
    eventually("kubectl get ds shows 1 ready and available", || {
        let out = k.ok(&["get", "ds", "web", "--no-headers"]);
        out.split_whitespace().collect::<Vec<_>>()[..6] == ["web", "1", "1", "1", "1", "1"]
    });

    // A template change replaces the pod; the new one runs too.
    k.ok(&["set", "env", "ds/web", "GREETING=hello"]);
    let out = k.ok(&["rollout", "status", "ds/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let second = running("the updated daemon pod running");
    assert_ne!(first, second, "a new pod for the new template");
    eventually("the old pod's containers are gone", || {
        kubelet.pod_containers(&first).is_empty()
    });

    // Deleting the DaemonSet deletes its pod.
    k.ok(&["delete", "ds", "web"]);
    eventually("the daemon pod is gone", || {
        kubelet.block_on(pods_by_node(&pods, "web")).is_empty()
            && kubelet.pod_containers(&second).is_empty()
    });
}
