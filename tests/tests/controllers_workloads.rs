//! The Deployment and ReplicaSet controllers end to end: a test API server, the real
//! `kproxy-controller-manager --controllers deployment,replicaset`, and the test itself
//! playing kubelet (it marks pods Running/Ready through the status subresource, as admin).
//! A watch on the pods checks the rollout invariants on every intermediate state.
#![forbid(unsafe_code)]

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Event, Pod},
};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    bin,
    control::{client, controller_manager},
    kubelet::is_ready,
    until,
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::{Value, json};

struct Cluster {
    _dir: TempDir,
    api: ApiServer,
    _cm: kproxy_tests::Daemon,
    client: kube::Client,
}

async fn cluster(prefix: &str) -> Cluster {
    let dir = TempDir::new(prefix);
    let api = ApiServer::start(dir.path(), &[]);
    let cm = controller_manager(&api, &["--controllers", "deployment,replicaset"]);
    let client = client(&api).await;
    Cluster {
        _dir: dir,
        api,
        _cm: cm,
        client,
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the JSON inline as json! literals"
)]
fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    }))
    .unwrap()
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the JSON inline as json! literals"
)]
fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// Creates `d` and waits until it is rolled out.
async fn create_rolled_out(c: &Cluster, d: &Deployment) -> Api<Deployment> {
    let deploys: Api<Deployment> = Api::default_namespaced(c.client.clone());
    deploys.create(&PostParams::default(), d).await.unwrap();
    let name = d.name_any();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap();
    until(&format!("{replicas} ready pods of {name}"), || {
        rolled_out(&c.client, &name, replicas)
    })
    .await;
    deploys
}

/// A new template: the container's image changed.
async fn set_image(deploys: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    deploys
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

/// Merge-patches the spec of Deployment `name`.
async fn patch_spec(deploys: &Api<Deployment>, name: &str, spec: Value) {
    deploys
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

/// Resizes through the scale subresource.
async fn scale<K>(api: &Api<K>, name: &str, replicas: i32)
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .unwrap();
}

fn hash_of(p: &Pod) -> String {
    p.labels()
        .get("pod-template-hash")
        .cloned()
        .unwrap_or_default()
}

/// The test's kubelet: every new pod becomes Running and Ready after `delay`.
fn mark_ready(client: kube::Client, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::default_namespaced(client);
        let mut seen = HashSet::new();
        let mut n = 0u32;
        let mut events = watcher(pods.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(p)) = events.try_next().await {
            if is_ready(&p) || p.metadata.deletion_timestamp.is_some() || !seen.insert(p.uid()) {
                continue;
            }
            n += 1;
            let (pods, name, ip) = (
                pods.clone(),
                p.name_any(),
                format!("10.244.{}.{}", n / 250, n % 250 + 1),
            );
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let now = jiff::Timestamp::now().to_string();
                let status = json!({"status": {"phase": "Running", "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            });
        }
    })
}

/// Every state of the namespace's pods, as the watch delivers them (one store revision at a
/// time): the most pods at once, the fewest ready, the most templates at once.
#[derive(Default, Debug)]
struct Seen {
    max_pods: usize,
    min_ready: usize,
    max_templates: usize,
}

fn monitor(client: kube::Client) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        min_ready: usize::MAX,
        ..Default::default()
    }));
    let out = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let pods: Api<Pod> = Api::default_namespaced(client);
        let mut live: HashMap<String, (bool, String)> = HashMap::new();
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        let mut listed = false;
        while let Ok(Some(ev)) = events.try_next().await {
            match ev {
                watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                    if p.metadata.deletion_timestamp.is_some() {
                        live.remove(&p.name_any());
                    } else {
                        live.insert(p.name_any(), (is_ready(&p), hash_of(&p)));
                    }
                }
                watcher::Event::Delete(p) => {
                    live.remove(&p.name_any());
                }
                watcher::Event::InitDone => listed = true,
                watcher::Event::Init => {}
            }
            if !listed {
                continue;
            }
            let ready = live.values().filter(|(r, _)| *r).count();
            let templates: HashSet<&String> = live.values().map(|(_, h)| h).collect();
            let mut s = out.lock().unwrap();
            s.max_pods = s.max_pods.max(live.len());
            s.min_ready = s.min_ready.min(ready);
            s.max_templates = s.max_templates.max(templates.len());
        }
    });
    (seen, task)
}

/// [`monitor`], started once the namespace has `pods` pods and its first list shows them.
async fn monitor_listed(
    client: &kube::Client,
    pods: usize,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let (seen, task) = monitor(client.clone());
    until("monitor listed", || async {
        seen.lock().unwrap().max_pods == pods
    })
    .await;
    (seen, task)
}

async fn pods_of(client: &kube::Client, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn sets_of(client: &kube::Client, selector: &str) -> Vec<ReplicaSet> {
    let rs: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    rs.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// The rollout is finished: status says so for the current generation, and only the new
/// set has pods.
async fn rolled_out(client: &kube::Client, name: &str, replicas: i32) -> bool {
    let d: Api<Deployment> = Api::default_namespaced(client.clone());
    let Ok(d) = d.get(name).await else {
        return false;
    };
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && pods_of(client, &format!("app={name}")).await.len() == usize::try_from(replicas).unwrap()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn revision(rs: &ReplicaSet) -> String {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned()
        .unwrap_or_default()
}

async fn events_for(client: &kube::Client, name: &str) -> Vec<Event> {
    let ev: Api<Event> = Api::default_namespaced(client.clone());
    ev.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

fn kctl(api: &ApiServer, home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("kctl"))
        .args(args)
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HOME", home)
        .output()
        .expect("run kctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ kctl {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_scales_its_replica_set_up_and_down() {
    let c = cluster("kpt-cm-scale").await;
    let _kubelet = mark_ready(c.client.clone(), Duration::ZERO);
    let deploys = create_rolled_out(
        &c,
        &deployment("web", 3, "httpd", rolling(json!(1), json!(0))),
    )
    .await;

    // One set named <deployment>-<hash>, the hash on its selector, labels and template.
    let sets = sets_of(&c.client, "app=web").await;
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert!(
        hash.chars()
            .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)),
        "{hash}"
    );
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    assert_eq!(revision(rs), "1");
    assert_eq!(
        rs.annotations()["deployment.kubernetes.io/desired-replicas"],
        "3"
    );
    assert_eq!(
        rs.annotations()["deployment.kubernetes.io/max-replicas"],
        "4"
    );
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Deployment", "web", Some(true))
    );
    let st = rs.status.clone().unwrap();
    assert_eq!(
        (
            st.replicas,
            st.fully_labeled_replicas,
            st.ready_replicas,
            st.available_replicas,
            st.observed_generation
        ),
        (3, Some(3), Some(3), Some(3), rs.metadata.generation)
    );

    // Pods: generateName, controller reference blocking the owner's deletion, template labels.
    for p in pods_of(&c.client, "app=web").await {
        assert!(
            p.name_any().starts_with(&format!("web-{hash}-")),
            "{}",
            p.name_any()
        );
        assert_eq!(
            p.metadata.generate_name.as_deref(),
            Some(format!("web-{hash}-").as_str())
        );
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str()),
            ("ReplicaSet", rs.name_any().as_str())
        );
        assert_eq!(
            (o.controller, o.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(p.labels()["pod-template-hash"], hash);
    }

    // Deployment status and conditions.
    let d = deploys.get("web").await.unwrap();
    let s = d.status.clone().unwrap();
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        condition(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );

    // Scale up through the scale subresource, then down.
    scale(&deploys, "web", 10).await;
    until("10 ready pods", || rolled_out(&c.client, "web", 10)).await;
    scale(&deploys, "web", 2).await;
    until("2 pods", || rolled_out(&c.client, "web", 2)).await;
    assert_eq!(
        sets_of(&c.client, "app=web").await.len(),
        1,
        "a resize makes no new set"
    );

    // Events as kube-controller-manager writes them.
    let rs_name = rs.name_any();
    until("ScalingReplicaSet events", || async {
        let msgs: Vec<String> = events_for(&c.client, "web")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
            .filter_map(|e| e.message)
            .collect();
        [
            format!("Scaled up replica set {rs_name} from 0 to 3"),
            format!("Scaled up replica set {rs_name} from 3 to 10"),
            format!("Scaled down replica set {rs_name} from 10 to 2"),
        ]
        .iter()
        .all(|m| msgs.contains(m))
    })
    .await;
    let rs_events = events_for(&c.client, &rs_name).await;
    assert!(rs_events.iter().any(|e| {
        e.reason.as_deref() == Some("SuccessfulCreate")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with(&format!("Created pod: web-{hash}-")))
            && e.source.as_ref().and_then(|s| s.component.as_deref())
                == Some("replicaset-controller")
    }));
    assert!(
        rs_events
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_adopts_orphans_never_overshoots_and_deletes_unready_first() {
    let c = cluster("kpt-cm-rs").await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(c.client.clone());
    // An orphan that matches: adopted instead of a new pod being created for it.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "burst"}},
        "spec": {"containers": [{"name": "c", "image": "kecho"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let (seen, _mon) = monitor(c.client.clone());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "burst"},
        "spec": {"replicas": 200, "selector": {"matchLabels": {"app": "burst"}},
                 "template": {"metadata": {"labels": {"app": "burst"}},
                              "spec": {"containers": [{"name": "c", "image": "kecho"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    until("200 pods", || async {
        pods_of(&c.client, "app=burst").await.len() == 200
    })
    .await;
    until("status says 200", || async {
        sets.get("burst")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.replicas == 200)
    })
    .await;
    // Let any overshoot show before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods_of(&c.client, "app=burst").await.len(), 200);
    assert_eq!(
        seen.lock().unwrap().max_pods,
        200,
        "never more pods than replicas"
    );
    let o = pods.get("orphan").await.unwrap();
    assert_eq!(o.owner_references()[0].name, "burst", "orphan adopted");

    // Three pods ready; scaling down to 3 keeps exactly those.
    let all = pods_of(&c.client, "app=burst").await;
    let keep: Vec<String> = all
        .iter()
        .take(3)
        .map(kube::ResourceExt::name_any)
        .collect();
    for name in &keep {
        let status = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    until("3 ready", || async {
        sets.get("burst")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.ready_replicas == Some(3))
    })
    .await;
    scale(&sets, "burst", 3).await;
    until("3 pods", || async {
        pods_of(&c.client, "app=burst").await.len() == 3
    })
    .await;
    let mut left: Vec<String> = pods_of(&c.client, "app=burst")
        .await
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    left.sort();
    let mut keep = keep;
    keep.sort();
    assert_eq!(left, keep, "the unready pods went first");

    // A pod relabelled out of the selector is released and replaced.
    pods.patch(
        &keep[0],
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    until("released and replaced", || async {
        let released = pods.get(&keep[0]).await.unwrap();
        released.owner_references().is_empty() && pods_of(&c.client, "app=burst").await.len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_surge_and_unavailability_then_rolls_back() {
    let c = cluster("kpt-cm-roll").await;
    let _kubelet = mark_ready(c.client.clone(), Duration::from_millis(150));
    let deploys = create_rolled_out(
        &c,
        &deployment("web", 6, "kecho:1", rolling(json!(2), json!(1))),
    )
    .await;
    let first = sets_of(&c.client, "app=web").await[0].name_any();

    let (seen, _mon) = monitor_listed(&c.client, 6).await;
    set_image(&deploys, "web", "kecho:2").await;
    until("rolled out to kecho:2", || rolled_out(&c.client, "web", 6)).await;
    {
        let s = seen.lock().unwrap();
        assert!(s.max_pods <= 8, "above replicas + maxSurge: {s:?}");
        assert!(
            s.min_ready >= 5,
            "below replicas - maxUnavailable ready: {s:?}"
        );
        assert_eq!(s.max_templates, 2);
    }
    let sets = sets_of(&c.client, "app=web").await;
    assert_eq!(sets.len(), 2);
    let second = sets.iter().find(|rs| rs.name_any() != first).unwrap();
    assert_eq!(revision(second), "2");
    let old = sets.iter().find(|rs| rs.name_any() == first).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");

    // kctl rollout: status, history, undo (back to the first set, as revision 3), restart.
    let home = c.api.data_dir.clone();
    let (ok, out) = kctl(&c.api, &home, &["rollout", "status", "deployment/web"]);
    assert!(
        ok && out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let (ok, out) = kctl(&c.api, &home, &["rollout", "history", "deployment/web"]);
    assert!(ok, "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| !r.is_empty())
        .collect();
    assert_eq!(rows, [vec!["1", "<none>"], vec!["2", "<none>"]], "{out}");
    assert!(out.starts_with("deployment.apps/web"), "{out}");

    let (ok, out) = kctl(&c.api, &home, &["rollout", "undo", "deployment/web"]);
    assert!(
        ok && out.contains("deployment.apps/web rolled back"),
        "{out}"
    );
    until("rolled back to kecho:1", || async {
        let d = deploys.get("web").await.unwrap();
        let image = d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone();
        image.as_deref() == Some("kecho:1") && rolled_out(&c.client, "web", 6).await
    })
    .await;
    let sets = sets_of(&c.client, "app=web").await;
    assert_eq!(sets.len(), 2, "the old set came back, no third one");
    let back = sets.iter().find(|rs| rs.name_any() == first).unwrap();
    assert_eq!(revision(back), "3");
    assert_eq!(
        back.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(back.spec.as_ref().unwrap().replicas, Some(6));
    {
        let s = seen.lock().unwrap();
        assert!(s.max_pods <= 8 && s.min_ready >= 5, "rollback too: {s:?}");
    }
    let (ok, out) = kctl(
        &c.api,
        &home,
        &["rollout", "undo", "deployment/web", "--to-revision", "9"],
    );
    assert!(
        !ok && out.contains("unable to find specified revision 9 in history"),
        "{out}"
    );

    let (ok, out) = kctl(&c.api, &home, &["rollout", "restart", "deployment/web"]);
    assert!(ok && out.contains("deployment.apps/web restarted"), "{out}");
    let (ok, out) = kctl(
        &c.api,
        &home,
        &["rollout", "status", "deploy/web", "--timeout", "60s"],
    );
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    assert!(rolled_out(&c.client, "web", 6).await);
    let sets = sets_of(&c.client, "app=web").await;
    assert_eq!(sets.len(), 3, "a restart is a new template");
    assert!(sets.iter().any(|rs| {
        revision(rs) == "4"
            && rs
                .spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt"))
    }));

    // revisionHistoryLimit 1: only the newest old set is kept.
    patch_spec(&deploys, "web", json!({"revisionHistoryLimit": 1})).await;
    until("history pruned", || async {
        sets_of(&c.client, "app=web").await.len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_new_ones_start_and_pause_holds_rollouts() {
    let c = cluster("kpt-cm-recreate").await;
    let _kubelet = mark_ready(c.client.clone(), Duration::from_millis(50));
    let deploys = create_rolled_out(
        &c,
        &deployment("db", 3, "kecho:1", json!({"type": "Recreate"})),
    )
    .await;
    let (seen, _mon) = monitor_listed(&c.client, 3).await;
    set_image(&deploys, "db", "kecho:2").await;
    until("recreated with kecho:2", || async {
        rolled_out(&c.client, "db", 3).await && sets_of(&c.client, "app=db").await.len() == 2
    })
    .await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.max_templates, 1, "old and new pods never coexist: {s:?}");
        assert_eq!(s.max_pods, 3, "{s:?}");
    }

    // Paused: a template change makes no new set; the status is still kept.
    patch_spec(&deploys, "db", json!({"paused": true})).await;
    until("Progressing DeploymentPaused", || async {
        condition(&deploys.get("db").await.unwrap(), "Progressing")
            == Some(("Unknown".into(), "DeploymentPaused".into()))
    })
    .await;
    set_image(&deploys, "db", "kecho:3").await;
    until("generation observed while paused", || async {
        let d = deploys.get("db").await.unwrap();
        d.status.and_then(|s| s.observed_generation) == d.metadata.generation
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sets_of(&c.client, "app=db").await.len(),
        2,
        "no rollout while paused"
    );
    patch_spec(&deploys, "db", json!({"paused": false})).await;
    until("resumed rollout", || async {
        rolled_out(&c.client, "db", 3).await && sets_of(&c.client, "app=db").await.len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_exceeded_when_pods_never_get_ready() {
    let c = cluster("kpt-cm-deadline").await;
    let deploys: Api<Deployment> = Api::default_namespaced(c.client.clone());
    let mut d = deployment("stuck", 2, "kecho", rolling(json!(1), json!(0)));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
    deploys.create(&PostParams::default(), &d).await.unwrap();
    until("ProgressDeadlineExceeded", || async {
        condition(&deploys.get("stuck").await.unwrap(), "Progressing")
            == Some(("False".into(), "ProgressDeadlineExceeded".into()))
    })
    .await;
    let d = deploys.get("stuck").await.unwrap();
    assert_eq!(
        condition(&d, "Available"),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
    let s = d.status.unwrap();
    assert_eq!((s.replicas, s.unavailable_replicas), (Some(2), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_replicas_exactly() {
    let c = cluster("kpt-cm-1000").await;
    let deploys: Api<Deployment> = Api::default_namespaced(c.client.clone());
    let start = Instant::now();
    deploys
        .create(
            &PostParams::default(),
            &deployment("big", 1000, "kecho", rolling(json!("25%"), json!("25%"))),
        )
        .await
        .unwrap();
    until("1000 pods in the replica set's status", || async {
        sets_of(&c.client, "app=big")
            .await
            .first()
            .and_then(|rs| rs.status.clone())
            .is_some_and(|s| s.replicas == 1000)
    })
    .await;
    eprintln!("1000 pods created and counted in {:?}", start.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods_of(&c.client, "app=big").await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_before_any_controller() {
    fn code<T>(r: Result<T, kube::Error>) -> (u16, String) {
        match r {
            Err(kube::Error::Api(s)) => (s.code, s.message),
            Ok(_) => (200, String::new()),
            Err(e) => panic!("{e}"),
        }
    }
    let dir = TempDir::new("kpt-cm-invalid");
    let api = ApiServer::start(dir.path(), &[]);
    let c = client(&api).await;
    let deploys: Api<Deployment> = Api::default_namespaced(c.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(c);

    let mut mismatch = deployment("a", 1, "x", rolling(json!(1), json!(0)));
    mismatch
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some([("app".to_string(), "other".to_string())].into());
    let (status, msg) = code(deploys.create(&PostParams::default(), &mismatch).await);
    assert_eq!(status, 422, "{msg}");
    assert!(msg.contains("does not match template"), "{msg}");

    let (status, msg) = code(
        deploys
            .create(
                &PostParams::default(),
                &deployment("b", -1, "x", rolling(json!(1), json!(0))),
            )
            .await,
    );
    assert_eq!(status, 422, "{msg}");
    assert!(msg.contains("spec.replicas"), "{msg}");

    let (status, msg) = code(
        deploys
            .create(
                &PostParams::default(),
                &deployment("c", 1, "x", rolling(json!(0), json!(0))),
            )
            .await,
    );
    assert_eq!(status, 422, "{msg}");
    assert!(msg.contains("maxUnavailable"), "{msg}");
    let (status, msg) = code(
        deploys
            .create(
                &PostParams::default(),
                &deployment("d", 1, "x", rolling(json!("0%"), json!(0))),
            )
            .await,
    );
    assert_eq!(status, 422, "{msg}");

    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "r"},
        "spec": {"replicas": -3, "selector": {"matchLabels": {"app": "r"}},
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    }))
    .unwrap();
    let (status, msg) = code(sets.create(&PostParams::default(), &rs).await);
    assert_eq!(status, 422, "{msg}");
    assert!(
        msg.contains("spec.replicas") && msg.contains("does not match template"),
        "{msg}"
    );
    assert!(
        deploys
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// The real kubectl 1.33 against the controllers: rollout status / history / undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_and_undo() {
    if !kproxy_tests::kubectl::available() {
        return;
    }
    let c = cluster("kpt-cm-kubectl").await;
    let _kubelet = mark_ready(c.client.clone(), Duration::from_millis(20));
    let k = kproxy_tests::kubectl::Kubectl::new(&c.api.kubeconfig, &c.api.data_dir);
    // kubectl blocks; run it off the runtime's threads.
    let kubectl = |args: &[&str]| {
        tokio::task::block_in_place(|| {
            let (ok, o, e) = k.run(args);
            (ok, format!("{o}{e}"))
        })
    };
    let (ok, out) = kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=kecho:1",
        "--replicas=3",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        ok && out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let (ok, out) = kubectl(&["set", "image", "deployment/web", "kecho=kecho:2"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (ok, out) = kubectl(&["rollout", "history", "deployment/web"]);
    assert!(
        ok && out.contains("REVISION") && out.contains("CHANGE-CAUSE"),
        "{out}"
    );
    let revs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revs, ["1", "2"], "{out}");
    let (ok, out) = kubectl(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(ok && out.contains("kecho:1"), "{out}");
    let (ok, out) = kubectl(&["rollout", "undo", "deployment/web"]);
    assert!(
        ok && out.contains("deployment.apps/web rolled back"),
        "{out}"
    );
    let (ok, out) = kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (ok, out) = kubectl(&["rollout", "history", "deployment/web"]);
    let revs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert!(ok && revs == ["2", "3"], "{out}");
    let (ok, out) = kubectl(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert!(ok && out.trim() == "kecho:1", "{out}");
    let (ok, out) = kubectl(&["rollout", "restart", "deployment/web"]);
    assert!(ok && out.contains("restarted"), "{out}");
    let (ok, out) = kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (ok, out) = kubectl(&["describe", "deployment", "web"]);
    assert!(ok && out.contains("ScalingReplicaSet"), "{out}");
}
