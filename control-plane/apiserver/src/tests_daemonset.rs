//! apps/v1 DaemonSets through `handler::router` in-process, over the memory store: discovery,
//! defaults and the initial status, validation (with the messages Kubernetes gives), the
//! status subresource and generation, the `kubectl get ds` table, and the strategic merge
//! patch `kubectl rollout restart ds/NAME` sends.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::test_api::{Answer, OneNode as Server, answer, request};

const DS: &str = "/apis/apps/v1/namespaces/default/daemonsets";

impl Server {
    async fn ds_call(&self, method: Method, uri: &str, ct: &str, body: &Value) -> Answer {
        self.send(&self.admin, method, uri, ct, body).await
    }

    async fn post_ds(&self, body: &Value) -> Answer {
        self.ds_call(Method::POST, DS, "application/json", body)
            .await
    }

    async fn ds_table(&self, uri: &str) -> Answer {
        let mut r = request(
            &self.admin,
            Method::GET,
            uri,
            "application/json",
            Vec::new(),
        );
        r.headers_mut().insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io"
                .parse()
                .unwrap(),
        );
        answer(&self.app, r).await
    }
}

/// A DaemonSet as `kubectl apply` of a tutorial manifest sends it.
fn daemon_set(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    })
}

fn with(mut v: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let slot = v.pointer_mut(parent).unwrap();
    if value.is_null() {
        slot.as_object_mut().unwrap().remove(key);
    } else {
        slot[key] = value;
    }
    v
}

/// The 422's message, after checking the code.
async fn rejected(s: &Server, body: &Value) -> String {
    let a = s.post_ds(body).await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    a.body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn daemonsets_are_discovered_with_short_name_and_status() {
    let s = Server::new("ds-discovery").await;
    let a = s
        .ds_call(
            Method::GET,
            "/apis/apps/v1",
            "application/json",
            &Value::Null,
        )
        .await;
    assert_eq!(a.code, StatusCode::OK);
    let resources = a.body["resources"].as_array().unwrap();
    let ds = resources
        .iter()
        .find(|r| r["name"] == "daemonsets")
        .unwrap();
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["shortNames"], json!(["ds"]));
    assert_eq!(ds["categories"], json!(["all"]));
    assert_eq!(ds["namespaced"], true);
    assert!(resources.iter().any(|r| r["name"] == "daemonsets/status"));
    assert!(!resources.iter().any(|r| r["name"] == "daemonsets/scale"));
}

#[tokio::test]
async fn create_fills_in_kubernetes_defaults_and_empty_counts() {
    let s = Server::new("ds-defaults").await;
    let a = s.post_ds(&daemon_set("agent")).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let spec = &a.body["spec"];
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(a.body["metadata"]["generation"], 1);
    assert_eq!(
        a.body["status"],
        json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
               "desiredNumberScheduled": 0, "numberReady": 0})
    );
    // OnDelete gets no rollingUpdate.
    let on_delete = with(
        daemon_set("manual"),
        "/spec/updateStrategy",
        json!({"type": "OnDelete"}),
    );
    let a = s.post_ds(&on_delete).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        a.body["spec"]["updateStrategy"],
        json!({"type": "OnDelete"})
    );
}

#[tokio::test]
async fn invalid_daemonsets_get_kubernetes_messages() {
    let s = Server::new("ds-invalid").await;
    let mismatch = with(
        daemon_set("bad"),
        "/spec/template/metadata/labels",
        json!({"app": "x"}),
    );
    assert_eq!(
        rejected(&s, &mismatch).await,
        "DaemonSet.apps \"bad\" is invalid: spec.template.metadata.labels: Invalid value: \
         {\"app\":\"x\"}: `selector` does not match template `labels`"
    );
    let empty = with(daemon_set("bad"), "/spec/selector", json!({}));
    assert!(
        rejected(&s, &empty)
            .await
            .contains("spec.selector: Invalid value: {}: empty selector is invalid for daemonset")
    );
    // No selector selects nothing, so the template never matches.
    let none = with(daemon_set("bad"), "/spec/selector", Value::Null);
    assert!(
        rejected(&s, &none)
            .await
            .contains("`selector` does not match template `labels`")
    );
    let never = with(
        daemon_set("bad"),
        "/spec/template/spec/restartPolicy",
        json!("Never"),
    );
    assert_eq!(
        rejected(&s, &never).await,
        "DaemonSet.apps \"bad\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \
         \"Never\": supported values: \"Always\""
    );
    let deadline = with(
        daemon_set("bad"),
        "/spec/template/spec/activeDeadlineSeconds",
        json!(5),
    );
    assert!(rejected(&s, &deadline).await.contains(
        "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in DaemonSet is not Supported"
    ));
    let both = with(
        daemon_set("bad"),
        "/spec/updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "10%"}}),
    );
    assert!(rejected(&s, &both).await.contains(
        "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: \"10%\": may not be set when maxUnavailable is non-zero"
    ));
    let zero = with(
        daemon_set("bad"),
        "/spec/updateStrategy",
        json!({"rollingUpdate": {"maxUnavailable": 0}}),
    );
    assert!(rejected(&s, &zero).await.contains(
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
    ));
    let big = with(
        daemon_set("bad"),
        "/spec/updateStrategy",
        json!({"rollingUpdate": {"maxUnavailable": "150%"}}),
    );
    assert!(rejected(&s, &big).await.contains(
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
    ));
    let unknown = with(
        daemon_set("bad"),
        "/spec/updateStrategy",
        json!({"type": "Surge"}),
    );
    assert_eq!(
        rejected(&s, &unknown).await,
        "DaemonSet.apps \"bad\" is invalid: spec.updateStrategy: Unsupported value: \
         {\"Type\":\"Surge\",\"RollingUpdate\":null}: supported values: \"RollingUpdate\", \"OnDelete\""
    );
    let negative = with(daemon_set("bad"), "/spec/minReadySeconds", json!(-1));
    assert!(
        rejected(&s, &negative).await.contains(
            "spec.minReadySeconds: Invalid value: -1: must be greater than or equal to 0"
        )
    );
}

#[tokio::test]
async fn selector_is_immutable_and_spec_changes_bump_generation() {
    let s = Server::new("ds-update").await;
    let created = s.post_ds(&daemon_set("agent")).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    let uri = format!("{DS}/agent");
    let mut changed = created.body.clone();
    changed["spec"]["selector"] = json!({"matchLabels": {"app": "agent", "tier": "x"}});
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let a = s
        .ds_call(Method::PUT, &uri, "application/json", &changed)
        .await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.selector: Invalid value:")
            && a.body["message"]
                .as_str()
                .unwrap()
                .contains("field is immutable"),
        "{}",
        a.body
    );

    // What `kubectl rollout restart ds/agent` sends.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    let a = s
        .ds_call(
            Method::PATCH,
            &uri,
            "application/strategic-merge-patch+json",
            &restart,
        )
        .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["metadata"]["generation"], 2);
    assert_eq!(
        a.body["spec"]["template"]["spec"]["containers"][0]["name"], "c",
        "containers merge by name"
    );

    // The controller's status write keeps the spec and the generation.
    let status = json!({"status": {"observedGeneration": 2, "desiredNumberScheduled": 3,
        "currentNumberScheduled": 3, "numberReady": 2, "numberMisscheduled": 0,
        "updatedNumberScheduled": 3, "numberAvailable": 2, "numberUnavailable": 1}});
    let a = s
        .ds_call(
            Method::PATCH,
            &format!("{uri}/status"),
            "application/merge-patch+json",
            &status,
        )
        .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["metadata"]["generation"], 2);
    assert_eq!(a.body["status"]["numberReady"], 2);
}

#[tokio::test]
async fn the_table_has_kubectl_get_ds_columns() {
    let s = Server::new("ds-table").await;
    let edge = with(
        daemon_set("agent"),
        "/spec/template/spec/nodeSelector",
        json!({"role": "edge", "disk": "ssd"}),
    );
    assert_eq!(s.post_ds(&edge).await.code, StatusCode::CREATED);
    let status = json!({"status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
        "currentNumberScheduled": 2, "numberReady": 1, "numberMisscheduled": 0,
        "updatedNumberScheduled": 2, "numberAvailable": 1}});
    let a = s
        .ds_call(
            Method::PATCH,
            &format!("{DS}/agent/status"),
            "application/merge-patch+json",
            &status,
        )
        .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    let t = s.ds_table(DS).await;
    assert_eq!(t.code, StatusCode::OK, "{}", t.body);
    let cols: Vec<(&str, i64)> = t.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        cols,
        [
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Node Selector", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ]
    );
    let cells = t.body["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        cells[..7],
        [
            json!("agent"),
            json!(3),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("disk=ssd,role=edge")
        ]
    );
    assert_eq!(
        cells[8..],
        [json!("c"), json!("busybox"), json!("app=agent")]
    );
}
