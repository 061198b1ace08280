//! kproxy-scheduler against a real API server, with nodes registered as plain objects (Ready,
//! allocatable written through the status subresource; no kubelet): pods land on nodes that
//! fit, one owner's pods spread, a pod too big for every node gets `FailedScheduling` and
//! lands once a fitting node is added, node selectors and taints are respected, pods for
//! another scheduler are left alone, and 2,000 pods (half waiting, half created while the
//! scheduler runs) fill 100 nodes exactly to their pod capacity (no overcommit with many binds
//! in flight).
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    control, patience, until_some,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::{Value, json};

/// Registers a Ready node with `cpu` cores, 4Gi and `pods` slots.
async fn add_node(c: &Client, name: &str, cpu: &str, pods: u32, extra: Value) {
    let nodes: Api<Node> = Api::all(c.clone());
    let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    merge(&mut n, extra);
    nodes
        .create(&PostParams::default(), &serde_json::from_value(n).unwrap())
        .await
        .unwrap();
    let res = json!({"cpu": cpu, "memory": "4Gi", "pods": pods.to_string()});
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"capacity": res, "allocatable": res,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})),
        )
        .await
        .unwrap();
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the JSON inline as json! literals"
)]
fn pod(name: &str, cpu: &str, spec: Value) -> Pod {
    let mut p = json!({"metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {"containers": [{"name": "c", "image": "kecho",
            "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]}});
    merge(&mut p, json!({"spec": spec}));
    serde_json::from_value(p).unwrap()
}

/// A ReplicaSet to own test pods (no controller runs here, so it only has to exist: the API
/// server collects pods whose owners are gone). Returns its uid.
async fn owner(c: &Client, name: &str) -> String {
    let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::default_namespaced(c.clone());
    let rs = json!({"metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"owner": name}},
                 "template": {"metadata": {"labels": {"owner": name}},
                              "spec": {"containers": [{"name": "c", "image": "kecho"}]}}}});
    sets.create(&PostParams::default(), &serde_json::from_value(rs).unwrap())
        .await
        .unwrap()
        .metadata
        .uid
        .expect("a uid")
}

fn owned(mut p: Pod, owner_uid: &str) -> Pod {
    p.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "web", "uid": owner_uid, "controller": true}))
        .unwrap(),
    ]);
    p
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

async fn bound_to(pods: &Api<Pod>, name: &str) -> String {
    until_some(&format!("pod {name} bound"), || async {
        node_of(&pods.get(name).await.unwrap())
    })
    .await
}

/// The messages of the events about pod `name` with `reason`.
async fn events(c: &Client, name: &str, reason: &str) -> Vec<String> {
    let evs: Api<Event> = Api::default_namespaced(c.clone());
    evs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .map(|e| {
            assert_eq!(
                e.source.and_then(|s| s.component).as_deref(),
                Some("default-scheduler")
            );
            e.message.unwrap_or_default()
        })
        .collect()
}

/// Resident memory of a process in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_fit_spread_and_wait_for_a_node_that_fits() {
    let dir = TempDir::new("kpt-sched");
    let api = ApiServer::start(dir.path(), &[]);
    let c = control::client(&api).await;
    for n in ["n1", "n2", "n3"] {
        add_node(&c, n, "2", 110, json!({})).await;
    }
    let sched = control::scheduler(&api, &[]);
    let pods: Api<Pod> = Api::default_namespaced(c.clone());

    // Six pods of one owner on three equal nodes: two each.
    let web = owner(&c, "web").await;
    for i in 0..6 {
        pods.create(
            &PostParams::default(),
            &owned(pod(&format!("web-{i}"), "100m", json!({})), &web),
        )
        .await
        .unwrap();
    }
    let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(bound_to(&pods, &format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)])
    );
    let scheduled = until_some("Scheduled event for web-0", || async {
        events(&c, "web-0", "Scheduled").await.pop()
    })
    .await;
    assert!(
        scheduled.starts_with("Successfully assigned default/web-0 to n"),
        "{scheduled}"
    );

    // Three cores fit no node: an event and the PodScheduled condition say why.
    pods.create(&PostParams::default(), &pod("big", "3", json!({})))
        .await
        .unwrap();
    let msg = until_some("FailedScheduling event for big", || async {
        events(&c, "big", "FailedScheduling").await.pop()
    })
    .await;
    assert_eq!(msg, "0/3 nodes are available: 3 Insufficient cpu.");
    let cond = until_some("PodScheduled=False on big", || async {
        let p = pods.get("big").await.unwrap();
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")
    })
    .await;
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_deref(),
            cond.message.as_deref()
        ),
        ("False", Some("Unschedulable"), Some(msg.as_str()))
    );
    // No polling: while nothing changes, the pod is not tried again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sched.count_logged("unschedulable"),
        1,
        "{:?}",
        sched.lines()
    );
    assert_eq!(node_of(&pods.get("big").await.unwrap()), None);

    // A node with room is the change that retries it.
    let added = Instant::now();
    add_node(&c, "n4", "4", 110, json!({})).await;
    assert_eq!(bound_to(&pods, "big").await, "n4");
    eprintln!(
        "big pod bound {:?} after its node was added",
        added.elapsed()
    );
    let scheduled = until_some("Scheduled event for big", || async {
        events(&c, "big", "Scheduled").await.pop()
    })
    .await;
    assert_eq!(scheduled, "Successfully assigned default/big to n4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_taints_and_other_schedulers() {
    let dir = TempDir::new("kpt-sched");
    let api = ApiServer::start(dir.path(), &[]);
    let c = control::client(&api).await;
    add_node(
        &c,
        "hdd",
        "4",
        110,
        json!({"metadata": {"labels": {"disk": "hdd"}}}),
    )
    .await;
    add_node(
        &c,
        "ssd",
        "4",
        110,
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    )
    .await;
    add_node(
        &c,
        "gpu",
        "4",
        110,
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    // Created before the scheduler starts: it is found by the initial list, and left alone.
    pods.create(
        &PostParams::default(),
        &pod("other", "100m", json!({"schedulerName": "someone-else"})),
    )
    .await
    .unwrap();
    let _sched = control::scheduler(&api, &[]);

    pods.create(
        &PostParams::default(),
        &pod("fast", "100m", json!({"nodeSelector": {"disk": "ssd"}})),
    )
    .await
    .unwrap();
    assert_eq!(bound_to(&pods, "fast").await, "ssd");

    for i in 0..8 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("plain-{i}"), "100m", json!({})),
        )
        .await
        .unwrap();
    }
    for i in 0..8 {
        assert_ne!(bound_to(&pods, &format!("plain-{i}")).await, "gpu");
    }

    let tolerant = json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu"]}]}]}}},
    });
    pods.create(&PostParams::default(), &pod("trainer", "1", tolerant))
        .await
        .unwrap();
    assert_eq!(bound_to(&pods, "trainer").await, "gpu");

    pods.create(
        &PostParams::default(),
        &pod("nowhere", "100m", json!({"nodeSelector": {"disk": "nvme"}})),
    )
    .await
    .unwrap();
    let msg = until_some("FailedScheduling event for nowhere", || async {
        events(&c, "nowhere", "FailedScheduling").await.pop()
    })
    .await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         2 node(s) didn't match Pod's node affinity/selector."
    );

    // Everything else was decided since; the other scheduler's pod was never touched.
    let other = pods.get("other").await.unwrap();
    assert_eq!(node_of(&other), None);
    assert!(
        other
            .status
            .and_then(|s| s.conditions)
            .is_none_or(|cs| cs.is_empty())
    );
    assert!(events(&c, "other", "FailedScheduling").await.is_empty());
    assert!(events(&c, "other", "Scheduled").await.is_empty());
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, in clock ticks (100 per second).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Creates pods `load-{from}..load-{to}` (10m CPU each, seven owners), 64 requests at a time.
async fn create_load(pods: &Api<Pod>, owners: &[String], from: usize, to: usize) {
    futures::stream::iter(from..to)
        .for_each_concurrent(64, |i| {
            let pods = pods.clone();
            let owner = owners[i % owners.len()].clone();
            async move {
                let p = owned(pod(&format!("load-{i:04}"), "10m", json!({})), &owner);
                pods.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .await;
}

/// Watches pods until `want` of them are bound; sends once the initial list is in. Counting
/// through the watch, not by listing, keeps the measurement from loading the server.
fn count_bound(
    pods: &Api<Pod>,
    want: usize,
    listed: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<(Instant, HashMap<String, String>)> {
    let pods = pods.clone();
    tokio::spawn(async move {
        let mut placed: HashMap<String, String> = HashMap::new();
        let mut listed = Some(listed);
        let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default()));
        while let Some(ev) = stream.try_next().await.unwrap() {
            let p = match ev {
                watcher::Event::InitDone => {
                    listed.take().map(|t| t.send(()));
                    continue;
                }
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                _ => continue,
            };
            if let Some(n) = node_of(&p) {
                placed.insert(p.metadata.name.clone().unwrap(), n);
                if placed.len() == want {
                    return (Instant::now(), placed);
                }
            }
        }
        unreachable!("the watch ended");
    })
}

/// 1,000 pods waiting when the scheduler starts (scheduling and binding timed alone), then
/// 1,000 more created while it runs (timed end to end from the first create). Nodes have
/// room for exactly 20 pods each, and every node must end with exactly 20: with many binds in
/// flight, no decision may overcommit a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_pods_fill_a_hundred_nodes_to_capacity() {
    const NODES: usize = 100;
    const PER_NODE: usize = 20;
    const BATCH: usize = NODES * PER_NODE / 2;
    let dir = TempDir::new("kpt-sched");
    let api = ApiServer::start(dir.path(), &[]);
    let c = control::client(&api).await;
    futures::stream::iter(0..NODES)
        .for_each_concurrent(16, |i| {
            let c = c.clone();
            async move {
                add_node(
                    &c,
                    &format!("node-{i:03}"),
                    "8",
                    u32::try_from(PER_NODE).unwrap(),
                    json!({}),
                )
                .await;
            }
        })
        .await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let mut owners = Vec::new();
    for i in 0..7 {
        owners.push(owner(&c, &format!("rs-{i}")).await);
    }
    create_load(&pods, &owners, 0, BATCH).await;

    let (listed, is_listed) = tokio::sync::oneshot::channel();
    let first = count_bound(&pods, BATCH, listed);
    is_listed.await.unwrap();
    let started = Instant::now();
    let sched = control::scheduler(&api, &[]);
    let (done, _) = tokio::time::timeout(patience(), first)
        .await
        .expect("the waiting pods bound in time")
        .unwrap();
    let waiting = done - started;
    let cpu_first = cpu_secs(sched.pid());

    let (listed, is_listed) = tokio::sync::oneshot::channel();
    let all = count_bound(&pods, 2 * BATCH, listed);
    is_listed.await.unwrap();
    let started = Instant::now();
    create_load(&pods, &owners, BATCH, 2 * BATCH).await;
    let created = started.elapsed();
    let (done, placed) = tokio::time::timeout(patience(), all)
        .await
        .expect("the new pods bound in time")
        .unwrap();
    let live = done - started;
    eprintln!(
        "{BATCH} waiting pods bound {waiting:?} after the scheduler was started: {:.0} pods/s, \
         scheduler CPU {cpu_first:.2} s; {BATCH} more created in {created:?}, all bound \
         {live:?} after the first create: {:.0} pods/s, scheduler CPU {:.2} s, RSS {:.1} MiB ({})",
        BATCH as f64 / waiting.as_secs_f64(),
        BATCH as f64 / live.as_secs_f64(),
        cpu_secs(sched.pid()) - cpu_first,
        rss_mib(sched.pid()),
        kproxy_tests::bin("kproxy-scheduler").display(),
    );
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for n in placed.values() {
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(per_node.len(), NODES);
    assert!(per_node.values().all(|&k| k == PER_NODE), "{per_node:?}");
}
