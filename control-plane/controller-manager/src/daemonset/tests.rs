use jiff::Timestamp;
use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Node};
use serde_json::{Value, json};

use super::plan::{self, Actions, Doom, Inputs, Strategy};
use super::*;

const HASH: &str = "new";

fn ds(spec: Value) -> DaemonSet {
    let mut base = json!({
        "metadata": {"name": "agent", "namespace": "ns1", "uid": "u1", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    });
    merge(&mut base["spec"], spec);
    serde_json::from_value(base).unwrap()
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

fn node(name: &str, extra: Value) -> Node {
    let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    merge(&mut n, extra);
    serde_json::from_value(n).unwrap()
}

/// A pod of the set on `node`, created `age` seconds before [`now`], with this revision.
fn pod(name: &str, node: &str, revision: &str, ready: bool, age: i64) -> CachedPod {
    let created = now() - jiff::SignedDuration::from_secs(age);
    CachedPod::from_pod(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns1", "creationTimestamp": created.to_string(),
                         "labels": {"app": "agent", "controller-revision-hash": revision},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                              "name": "agent", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": created.to_string()}]}
        }))
        .unwrap(),
    )
}

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// Runs `f` on the inputs of this set, nodes and pods.
fn with<T>(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[CachedPod],
    f: impl FnOnce(&Inputs<'_>) -> T,
) -> T {
    let spec =
        plan::with_daemon_tolerations(&ds.spec.as_ref().unwrap().template.spec.clone().unwrap());
    let nodes: Vec<&Node> = nodes.iter().collect();
    let pods: Vec<&CachedPod> = pods.iter().collect();
    f(&Inputs {
        ds,
        spec: &spec,
        nodes: &nodes,
        pods: &pods,
        hash: HASH,
        now: now(),
    })
}

fn plan_of(ds: &DaemonSet, nodes: &[Node], pods: &[CachedPod]) -> Actions {
    with(ds, nodes, pods, plan::plan)
}

fn deleted(a: &Actions) -> Vec<(&str, Doom)> {
    a.delete.iter().map(|(n, d)| (n.as_str(), *d)).collect()
}

#[test]
fn one_pod_per_eligible_node() {
    let nodes = [
        node("a", json!({"metadata": {"labels": {"role": "edge"}}})),
        node("b", json!({"metadata": {"labels": {"role": "edge"}}})),
        node("c", json!({})),
    ];
    let all = ds(json!({}));
    assert_eq!(plan_of(&all, &nodes, &[]).create_on, ["a", "b", "c"]);
    // A node that has its pod gets none; nodeSelector narrows.
    let edge = ds(json!({"template": {"spec": {"nodeSelector": {"role": "edge"}}}}));
    let a = plan_of(&edge, &nodes, &[pod("p-a", "a", HASH, true, 60)]);
    assert_eq!(a.create_on, ["b"]);
    assert!(a.delete.is_empty());
    // Required node affinity, matched with the scheduler's own matcher.
    let affinity = ds(json!({"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}]}}}}}}));
    assert_eq!(plan_of(&affinity, &nodes, &[]).create_on, ["c"]);
    // A template nodeName limits the set to that node.
    let named = ds(json!({"template": {"spec": {"nodeName": "b"}}}));
    assert_eq!(plan_of(&named, &nodes, &[]).create_on, ["b"]);
}

#[test]
fn taints_against_tolerations() {
    let nodes = [
        node("plain", json!({})),
        node(
            "gpu",
            json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}),
        ),
        node(
            "evict",
            json!({"spec": {"taints": [{"key": "bad", "effect": "NoExecute"}]}}),
        ),
        node(
            "soft",
            json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}),
        ),
    ];
    let d = ds(json!({}));
    assert_eq!(plan_of(&d, &nodes, &[]).create_on, ["plain", "soft"]);
    let tolerant = ds(json!({"template": {"spec": {"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}}));
    assert_eq!(
        plan_of(&tolerant, &nodes, &[]).create_on,
        ["plain", "gpu", "soft"]
    );
    // A pod already on a NoSchedule node stays; one on a NoExecute node goes.
    let pods = [
        pod("p-plain", "plain", HASH, true, 60),
        pod("p-gpu", "gpu", HASH, true, 60),
        pod("p-evict", "evict", HASH, true, 60),
        pod("p-soft", "soft", HASH, true, 60),
    ];
    let a = plan_of(&d, &nodes, &pods);
    assert!(a.create_on.is_empty());
    assert_eq!(deleted(&a), [("p-evict", Doom::Misscheduled)]);
    let counts = with(&d, &nodes, &pods, plan::status);
    assert_eq!(counts.desired_number_scheduled, 2);
    assert_eq!(counts.number_misscheduled, 2, "gpu and evict");
}

#[test]
fn daemon_pods_tolerate_node_conditions_and_cordons() {
    let nodes = [
        node(
            "cordoned",
            json!({"spec": {"unschedulable": true, "taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        ),
        node(
            "down",
            json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
        ),
        node(
            "full",
            json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/pid-pressure", "effect": "NoSchedule"}]}}),
        ),
        node(
            "nonet",
            json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]}}),
        ),
    ];
    assert_eq!(
        plan_of(&ds(json!({})), &nodes, &[]).create_on,
        ["cordoned", "down", "full"]
    );
    let host = ds(json!({"template": {"spec": {"hostNetwork": true}}}));
    assert_eq!(plan_of(&host, &nodes, &[]).create_on.len(), 4);
}

#[test]
fn default_tolerations_replace_equal_ones() {
    let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
        "containers": [],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 5},
                        {"key": "mine", "operator": "Exists"}]
    }))
    .unwrap();
    let t = plan::with_daemon_tolerations(&spec).tolerations.unwrap();
    assert_eq!(t.len(), 7, "{t:?}");
    assert_eq!(
        t[0].toleration_seconds, None,
        "ours replaces the template's"
    );
    assert_eq!(t[1].key.as_deref(), Some("mine"));
    assert!(
        !t.iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable"))
    );
}

#[test]
fn gone_nodes_duplicates_and_failed_pods() {
    let nodes = [node("a", json!({})), node("b", json!({}))];
    let mut failed = pod("p-b", "b", HASH, false, 30);
    failed.phase = podcache::Phase::Failed;
    let mut terminating = pod("p-x", "x", HASH, true, 10);
    terminating.deletion = Some(now());
    let pods = [
        pod("p-a-old", "a", HASH, true, 60),
        pod("p-a-new", "a", HASH, true, 5),
        failed,
        pod("p-gone", "gone", HASH, true, 60),
        terminating,
    ];
    let a = plan_of(&ds(json!({})), &nodes, &pods);
    assert!(
        a.create_on.is_empty(),
        "b is replaced once its failed pod is gone"
    );
    assert_eq!(
        deleted(&a),
        [
            ("p-a-new", Doom::Duplicate),
            ("p-b", Doom::Failed),
            ("p-gone", Doom::Misscheduled),
        ]
    );
}

#[test]
fn rolling_update_replaces_node_by_node() {
    let nodes = [
        node("a", json!({})),
        node("b", json!({})),
        node("c", json!({})),
    ];
    let d = ds(json!({}));
    let old = |n: &str| pod(&format!("old-{n}"), n, "old", true, 600);
    // Step 1: one old pod goes (maxUnavailable defaults to 1).
    let a = plan_of(&d, &nodes, &[old("a"), old("b"), old("c")]);
    assert_eq!(deleted(&a), [("old-a", Doom::Outdated)]);
    // Step 2: its node gets a pod of the new template.
    let a = plan_of(&d, &nodes, &[old("b"), old("c")]);
    assert_eq!(a.create_on, ["a"]);
    assert!(a.delete.is_empty());
    // Step 3: while the new pod is not ready, nothing else goes.
    let unready = pod("new-a", "a", HASH, false, 1);
    assert!(plan_of(&d, &nodes, &[unready, old("b"), old("c")]).is_empty());
    // Step 4: once it is available, the next node.
    let ready = pod("new-a", "a", HASH, true, 1);
    let a = plan_of(&d, &nodes, &[ready.clone(), old("b"), old("c")]);
    assert_eq!(deleted(&a), [("old-b", Doom::Outdated)]);
    // minReadySeconds: ready for 1 s is not yet available for 30.
    let slow = ds(json!({"minReadySeconds": 30}));
    assert!(plan_of(&slow, &nodes, &[ready.clone(), old("b"), old("c")]).is_empty());
    // maxUnavailable 2 takes two at once; an unavailable old pod goes regardless.
    let two = ds(
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}),
    );
    let a = plan_of(&two, &nodes, &[old("a"), old("b"), old("c")]);
    assert_eq!(deleted(&a).len(), 2);
    let broken = pod("old-c", "c", "old", false, 600);
    let a = plan_of(&d, &nodes, &[ready, old("b"), broken]);
    assert_eq!(
        deleted(&a),
        [("old-c", Doom::Outdated), ("old-b", Doom::Outdated)]
    );
    // OnDelete: old pods stay until someone deletes them.
    let manual = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
    assert!(plan_of(&manual, &nodes, &[old("a"), old("b"), old("c")]).is_empty());
}

#[test]
fn update_bounds_are_percentages_rounded_up() {
    let bounds = |ru: Value, desired| {
        let d = ds(json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru}}));
        plan::strategy(&d, desired)
    };
    let ru = |max_unavailable, max_surge| Strategy::RollingUpdate {
        max_unavailable,
        max_surge,
    };
    assert_eq!(bounds(json!({"maxUnavailable": "10%"}), 15), ru(2, 0));
    assert_eq!(
        bounds(json!({"maxUnavailable": "0%"}), 15),
        ru(1, 0),
        "a rollout must move"
    );
    assert_eq!(bounds(json!({"maxUnavailable": "100%"}), 3), ru(3, 0));
    assert_eq!(
        bounds(json!({"maxUnavailable": 0, "maxSurge": "50%"}), 3),
        ru(0, 2)
    );
    assert_eq!(plan::strategy(&ds(json!({})), 5), ru(1, 0));
}

#[test]
fn surge_starts_the_new_pod_before_the_old_one_goes() {
    let nodes = [node("a", json!({})), node("b", json!({}))];
    let d = ds(json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}));
    let old = |n: &str| pod(&format!("old-{n}"), n, "old", true, 600);
    // Step 1: a new pod beside the old one on one node.
    let a = plan_of(&d, &nodes, &[old("a"), old("b")]);
    assert_eq!(a.create_on, ["a"]);
    assert!(a.delete.is_empty());
    // Step 2: while it is not available, nothing else happens (both old pods serve).
    let unready = pod("new-a", "a", HASH, false, 1);
    assert!(plan_of(&d, &nodes, &[old("a"), unready, old("b")]).is_empty());
    // Step 3: once it is available the old pod goes.
    let ready = pod("new-a", "a", HASH, true, 1);
    let a = plan_of(&d, &nodes, &[old("a"), ready.clone(), old("b")]);
    assert_eq!(deleted(&a), [("old-a", Doom::Outdated)]);
    assert!(a.create_on.is_empty());
    // Step 4: the next node surges.
    assert_eq!(
        plan_of(&d, &nodes, &[ready.clone(), old("b")]).create_on,
        ["b"]
    );
    // An unavailable old pod is replaced at once, beyond the surge budget.
    let broken = pod("old-b", "b", "old", false, 600);
    let a = plan_of(&d, &nodes, &[old("a"), unready_new("a"), broken]);
    assert_eq!(a.create_on, ["b"]);
    // A not-ready old pod beside a new one goes without waiting.
    let a = plan_of(
        &d,
        &nodes,
        &[
            pod("old-a", "a", "old", false, 600),
            unready_new("a"),
            old("b"),
        ],
    );
    assert_eq!(deleted(&a), [("old-a", Doom::Outdated)]);
}

fn unready_new(n: &str) -> CachedPod {
    pod(&format!("new-{n}"), n, HASH, false, 1)
}

#[test]
fn status_counts_per_node() {
    let nodes = [
        node("a", json!({})),
        node("b", json!({})),
        node("c", json!({})),
        node("off", json!({"metadata": {"labels": {"role": "off"}}})),
    ];
    let d = ds(
        json!({"minReadySeconds": 30, "template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["off"]}]}]}}}}}}),
    );
    let pods = [
        pod("p-a", "a", HASH, true, 60),
        pod("p-b", "b", "old", true, 10),
        pod("p-off", "off", HASH, true, 60),
    ];
    let c = with(&d, &nodes, &pods, plan::status);
    assert_eq!(c.desired_number_scheduled, 3);
    assert_eq!(c.current_number_scheduled, 2);
    assert_eq!(c.number_ready, 2);
    assert_eq!(c.number_available, 1, "p-b is ready for 10 s of 30");
    assert_eq!(c.updated_number_scheduled, 1);
    assert_eq!(c.number_misscheduled, 1);
    assert_eq!(c.number_unavailable(), 2);
    assert_eq!(
        c.next_available,
        Some(now() + jiff::SignedDuration::from_secs(20))
    );
    let body = status_body(&c, 2);
    assert_eq!(body["observedGeneration"], 2);
    assert_eq!(body["numberAvailable"], 1);
    let empty = status_body(&plan::Counts::default(), 1);
    assert_eq!(
        empty["numberAvailable"],
        Value::Null,
        "omitempty counts are removed"
    );
    assert_eq!(empty["numberReady"], 0);
}

#[test]
fn daemon_pods_are_pinned_labelled_and_owned() {
    let d = ds(json!({"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "role", "operator": "Exists"}]}]}},
        "podAntiAffinity": {}}}}}));
    let spec =
        plan::with_daemon_tolerations(&d.spec.as_ref().unwrap().template.spec.clone().unwrap());
    let p = daemon_pod(&d, "h1", &spec, "n7").unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["metadata"]["generateName"], "agent-");
    assert_eq!(v["metadata"]["labels"]["controller-revision-hash"], "h1");
    assert_eq!(v["metadata"]["labels"]["pod-template-generation"], "2");
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
    let req =
        &v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        req["nodeSelectorTerms"],
        json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}])
    );
    assert!(
        v["spec"]["affinity"]["podAntiAffinity"].is_object(),
        "the rest of the affinity stays"
    );
    assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 6);
    let cached = CachedPod::from_pod(p);
    assert_eq!(
        cached.target_node.as_deref(),
        Some("n7"),
        "pinned before it is bound"
    );
    assert!(plan::is_updated(&cached, "h1"));
}

#[test]
fn a_pinned_unbound_pod_counts_for_its_node() {
    let d = ds(json!({}));
    let spec =
        plan::with_daemon_tolerations(&d.spec.as_ref().unwrap().template.spec.clone().unwrap());
    let mut p = daemon_pod(&d, HASH, &spec, "a").unwrap();
    p.metadata.name = Some("pending".into());
    let cached = CachedPod::from_pod(p);
    let nodes = [node("a", json!({}))];
    assert!(
        plan_of(&d, &nodes, &[cached]).is_empty(),
        "no second pod while it waits"
    );
}
