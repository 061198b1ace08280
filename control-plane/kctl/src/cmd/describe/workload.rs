//! `describe deployment` and `describe replicaset`.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::containers::pod_template;
use super::{
    Clock, Writer, controlled_by, events_section, int, int_or_string, items, label_selector, str_of,
};
use crate::client::Ctx;

/// Pods of a controller by phase: running, waiting (pending), succeeded, failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PodCounts {
    pub running: usize,
    pub waiting: usize,
    pub succeeded: usize,
    pub failed: usize,
}

/// The deployment's replica sets: (old, new). The new one runs the current pod template.
/// Lookup failures leave both empty, as kubectl does.
pub(super) async fn replica_sets_of(ctx: &Ctx, deploy: &Value) -> (Vec<Value>, Vec<Value>) {
    let ns = str_of(&deploy["metadata"]["namespace"]);
    let lp = ListParams {
        label_selector: Some(label_selector(&deploy["spec"]["selector"])),
        ..Default::default()
    };
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let Ok(list) = api.list(&lp).await else {
        return (Vec::new(), Vec::new());
    };
    let owned: Vec<Value> = list
        .items
        .iter()
        .filter_map(|rs| serde_json::to_value(rs).ok())
        .filter(|rs| controller_uid(rs) == str_of(&deploy["metadata"]["uid"]))
        .collect();
    split_replica_sets(deploy, owned)
}

/// Old and new replica sets of `deploy` among `owned`.
pub(super) fn split_replica_sets(deploy: &Value, owned: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let want = template_without_hash(&deploy["spec"]["template"]);
    owned
        .into_iter()
        .partition::<Vec<Value>, _>(|rs| template_without_hash(&rs["spec"]["template"]) != want)
}

fn template_without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    t
}

fn controller_uid(obj: &Value) -> &str {
    items(&obj["metadata"]["ownerReferences"])
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .map_or("", |r| str_of(&r["uid"]))
}

/// Counts the replica set's own pods by phase.
pub(super) async fn pod_counts(ctx: &Ctx, rs: &Value) -> Result<PodCounts, String> {
    let ns = str_of(&rs["metadata"]["namespace"]);
    let lp = ListParams {
        label_selector: Some(label_selector(&rs["spec"]["selector"])),
        ..Default::default()
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = api
        .list(&lp)
        .await
        .map_err(|e| crate::errors::render(&e.into()))?;
    let pods: Vec<Value> = list
        .items
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    Ok(count_pods(str_of(&rs["metadata"]["uid"]), &pods))
}

pub(super) fn count_pods(owner_uid: &str, pods: &[Value]) -> PodCounts {
    let mut c = PodCounts::default();
    for p in pods.iter().filter(|p| controller_uid(p) == owner_uid) {
        match str_of(&p["status"]["phase"]) {
            "Running" => c.running += 1,
            "Pending" => c.waiting += 1,
            "Succeeded" => c.succeeded += 1,
            "Failed" => c.failed += 1,
            _ => {}
        }
    }
    c
}

fn replica_sets_line(list: &[Value]) -> String {
    if list.is_empty() {
        return "<none>".into();
    }
    list.iter()
        .map(|rs| {
            format!(
                "{} ({}/{} replicas created)",
                str_of(&rs["metadata"]["name"]),
                int(&rs["status"]["replicas"]),
                int(&rs["spec"]["replicas"])
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn conditions(w: &mut Writer, obj: &Value) {
    let list = items(&obj["status"]["conditions"]);
    if list.is_empty() {
        return;
    }
    w.write(0, "Conditions:\n  Type\tStatus\tReason\n");
    w.write(1, "----\t------\t------\n");
    for c in list {
        put!(
            w,
            1,
            "{} \t{}\t{}\n",
            str_of(&c["type"]),
            str_of(&c["status"]),
            str_of(&c["reason"])
        );
    }
}

pub(super) fn render_deployment(
    d: &Value,
    old: &[Value],
    new: &[Value],
    events: Option<&[Event]>,
    clock: &Clock,
) -> String {
    let mut w = Writer::new();
    let meta = &d["metadata"];
    let spec = &d["spec"];
    let status = &d["status"];
    put!(w, 0, "Name:\t{}\n", str_of(&meta["name"]));
    put!(w, 0, "Namespace:\t{}\n", str_of(&meta["namespace"]));
    put!(
        w,
        0,
        "CreationTimestamp:\t{}\n",
        clock.rfc(&meta["creationTimestamp"])
    );
    super::labels_multiline(&mut w, "Labels", &super::string_map(&meta["labels"]));
    super::annotations_multiline(
        &mut w,
        "Annotations",
        &super::string_map(&meta["annotations"]),
    );
    put!(w, 0, "Selector:\t{}\n", label_selector(&spec["selector"]));
    put!(
        w,
        0,
        "Replicas:\t{} desired | {} updated | {} total | {} available | {} unavailable\n",
        spec["replicas"].as_i64().unwrap_or(1),
        int(&status["updatedReplicas"]),
        int(&status["replicas"]),
        int(&status["availableReplicas"]),
        int(&status["unavailableReplicas"])
    );
    put!(
        w,
        0,
        "StrategyType:\t{}\n",
        str_of(&spec["strategy"]["type"])
    );
    put!(
        w,
        0,
        "MinReadySeconds:\t{}\n",
        int(&spec["minReadySeconds"])
    );
    let ru = &spec["strategy"]["rollingUpdate"];
    if ru.is_object() {
        let show = |v: &Value| {
            if v.is_null() {
                "<nil>".to_string()
            } else {
                int_or_string(v)
            }
        };
        put!(
            w,
            0,
            "RollingUpdateStrategy:\t{} max unavailable, {} max surge\n",
            show(&ru["maxUnavailable"]),
            show(&ru["maxSurge"])
        );
    }
    pod_template(&mut w, &spec["template"], clock);
    conditions(&mut w, d);
    if !old.is_empty() || !new.is_empty() {
        put!(w, 0, "OldReplicaSets:\t{}\n", replica_sets_line(old));
        put!(w, 0, "NewReplicaSet:\t{}\n", replica_sets_line(new));
    }
    events_section(&mut w, events, clock);
    w.finish()
}

pub(super) fn render_replica_set(
    rs: &Value,
    counts: Result<PodCounts, String>,
    events: Option<&[Event]>,
    clock: &Clock,
) -> String {
    let mut w = Writer::new();
    let meta = &rs["metadata"];
    put!(w, 0, "Name:\t{}\n", str_of(&meta["name"]));
    put!(w, 0, "Namespace:\t{}\n", str_of(&meta["namespace"]));
    let selector = label_selector(&rs["spec"]["selector"]);
    put!(w, 0, "Selector:\t{}\n", super::or_none(&selector));
    super::labels_multiline(&mut w, "Labels", &super::string_map(&meta["labels"]));
    super::annotations_multiline(
        &mut w,
        "Annotations",
        &super::string_map(&meta["annotations"]),
    );
    if let Some(owner) = controlled_by(rs) {
        put!(w, 0, "Controlled By:\t{owner}\n");
    }
    put!(
        w,
        0,
        "Replicas:\t{} current / {} desired\n",
        int(&rs["status"]["replicas"]),
        rs["spec"]["replicas"].as_i64().unwrap_or(1)
    );
    w.write(0, "Pods Status:\t");
    match counts {
        Ok(c) => put!(
            w,
            0,
            "{} Running / {} Waiting / {} Succeeded / {} Failed\n",
            c.running,
            c.waiting,
            c.succeeded,
            c.failed
        ),
        Err(e) => put!(w, 0, "error in fetching pods: {e}\n"),
    }
    pod_template(&mut w, &rs["spec"]["template"], clock);
    conditions(&mut w, rs);
    events_section(&mut w, events, clock);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::super::tests::clock;
    use super::*;
    use serde_json::json;

    fn template(hash: Option<&str>, image: &str) -> Value {
        let mut labels = json!({"app": "web"});
        if let Some(h) = hash {
            labels["pod-template-hash"] = json!(h);
        }
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": image}]}})
    }

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1", "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": template(None, "nginx:1.27"),
            },
            "status": {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 1, "unavailableReplicas": 1,
                "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]},
        })
    }

    fn rs(name: &str, image: &str, replicas: i64) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "d1", "controller": true}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "h"}}, "template": template(Some("h"), image)},
            "status": {"replicas": replicas},
        })
    }

    #[test]
    fn splits_old_and_new_replica_sets() {
        let (old, new) = split_replica_sets(
            &deployment(),
            vec![
                rs("web-old", "nginx:1.26", 0),
                rs("web-new", "nginx:1.27", 2),
            ],
        );
        assert_eq!(old.len(), 1);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0]["metadata"]["name"], "web-new");
        assert_eq!(replica_sets_line(&new), "web-new (2/2 replicas created)");
        assert_eq!(replica_sets_line(&[]), "<none>");
    }

    #[test]
    fn renders_a_deployment() {
        let (old, new) = split_replica_sets(&deployment(), vec![rs("web-new", "nginx:1.27", 2)]);
        let out = render_deployment(&deployment(), &old, &new, Some(&[]), &clock());
        let expected = "\
Name:                   web
Namespace:              default
CreationTimestamp:      Wed, 01 May 2024 10:00:00 +0000
Labels:                 app=web
Annotations:            <none>
Selector:               app=web
Replicas:               2 desired | 2 updated | 2 total | 1 available | 1 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Pod Template:
  Labels:  app=web
  Containers:
   web:
    Image:         nginx:1.27
    Port:          <none>
    Host Port:     <none>
    Environment:   <none>
    Mounts:        <none>
  Volumes:         <none>
  Node-Selectors:  <none>
  Tolerations:     <none>
Conditions:
  Type           Status  Reason
  ----           ------  ------
  Available      False   MinimumReplicasUnavailable
OldReplicaSets:  <none>
NewReplicaSet:   web-new (2/2 replicas created)
Events:          <none>
";
        assert_eq!(out, expected);
    }

    #[test]
    fn renders_a_replica_set_and_counts_its_pods() {
        let pod = |phase: &str, owner: &str| json!({"metadata": {"ownerReferences": [{"uid": owner, "controller": true}]}, "status": {"phase": phase}});
        let pods = [
            pod("Running", "u-web-new"),
            pod("Pending", "u-web-new"),
            pod("Running", "other"),
            pod("Failed", "u-web-new"),
        ];
        let counts = count_pods("u-web-new", &pods);
        assert_eq!(
            counts,
            PodCounts {
                running: 1,
                waiting: 1,
                succeeded: 0,
                failed: 1
            }
        );
        let out = render_replica_set(&rs("web-new", "nginx", 2), Ok(counts), None, &clock());
        assert!(out.starts_with("Name:           web-new\nNamespace:      default\nSelector:       app=web,pod-template-hash=h\n"), "{out}");
        assert!(out.contains("Controlled By:  Deployment/web\nReplicas:       2 current / 2 desired\nPods Status:    1 Running / 1 Waiting / 0 Succeeded / 1 Failed\n"), "{out}");
        let out = render_replica_set(
            &rs("web-new", "nginx", 2),
            Err("boom".into()),
            None,
            &clock(),
        );
        assert!(
            out.contains("Pods Status:    error in fetching pods: boom\n"),
            "{out}"
        );
    }
}
