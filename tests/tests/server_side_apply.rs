//! Server-side apply end to end: the real kubectl (`apply --server-side`, `scale`,
//! `--force-conflicts`), kube-rs `Patch::Apply`, field ownership recorded by ordinary writes,
//! and bad apply input. API-only: no root, no Docker.
#![forbid(unsafe_code)]

use k8s_openapi::api::apps::v1::Deployment;
use kproxy_tests::apiserver::{ApiServer, Http, TempDir};
use kproxy_tests::kubectl::{Kubectl, available};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const APPLY: &str = "application/apply-patch+yaml";

fn manifest(replicas: u32, labels: &str, env: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{{labels}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: httpd
        env: [{env}]
"
    )
}

/// The (manager, operation, subresource) of each managedFields entry.
fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("manager"), s("operation"), s("subresource"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["manager"] == manager && e["operation"] == operation)
        })
        .unwrap_or_else(|| panic!("no {manager}/{operation} entry in {obj}"))
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "short names for the objects of one scenario"
)]
fn kubectl_apply_server_side_scale_conflict_force_and_removal() {
    if !available() {
        return;
    }
    let dir = TempDir::new("kpt-ssa-kubectl");
    let s = ApiServer::start(dir.path(), &[]);
    let k = Kubectl::new(&s.kubeconfig, dir.path());
    let file = dir.path().join("web.yaml");
    let write = |m: String| std::fs::write(&file, m).expect("write manifest");
    let f = file.to_str().unwrap();

    // Create through apply.
    write(manifest(
        3,
        "app: web, tier: front",
        "{name: A, value: '1'}, {name: B, value: '2'}",
    ));
    assert!(
        k.ok(&["apply", "--server-side", "-f", f])
            .contains("deployment.apps/web serverside-applied")
    );
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        managers(&d),
        [("kubectl".into(), "Apply".into(), String::new())]
    );
    let fields = &entry(&d, "kubectl", "Apply")["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(fields["f:metadata"]["f:labels"]["f:tier"], json!({}));
    let c = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(c["."], json!({}), "{fields}");
    assert!(c["f:env"]["k:{\"name\":\"B\"}"].is_object(), "{fields}");

    // Re-applying the same manifest writes nothing.
    k.ok(&["apply", "--server-side", "-f", f]);
    assert_eq!(rv(&k.json(&["get", "deployment", "web"])), rv(&d));

    // kubectl scale owns replicas now (through /scale); applying 3 again conflicts.
    k.ok(&["scale", "deployment", "web", "--replicas=5"]);
    let scaled = k.json(&["get", "deployment", "web"]);
    assert!(
        managers(&scaled).contains(&("kubectl".into(), "Update".into(), "scale".into())),
        "{:?}",
        managers(&scaled)
    );
    let (ok, out, err) = k.run(&["apply", "--server-side", "-f", f]);
    assert!(!ok, "apply should conflict:\n{out}");
    assert!(
        err.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        ),
        "{err}"
    );
    let after = k.json(&["get", "deployment", "web"]);
    assert_eq!(
        after["spec"]["replicas"], 5,
        "a refused apply changes nothing"
    );
    assert_eq!(rv(&after), rv(&scaled));

    // --force-conflicts takes replicas back; the scaler owned nothing else, so its entry goes.
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", f]);
    let forced = k.json(&["get", "deployment", "web"]);
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(
        managers(&forced),
        [("kubectl".into(), "Apply".into(), String::new())]
    );

    // Fields dropped from the manifest are removed from the object.
    write(manifest(3, "app: web", "{name: A, value: '1'}"));
    k.ok(&["apply", "--server-side", "-f", f]);
    let pruned = k.json(&["get", "deployment", "web"]);
    assert_eq!(pruned["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        pruned["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}])
    );
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [{"name": "api", "image": "kecho"}]}},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_apply_shares_equal_fields_and_conflicts_on_different_ones() {
    let dir = TempDir::new("kpt-ssa-kube");
    let s = ApiServer::start(dir.path(), &[]);
    let deps: Api<Deployment> = Api::default_namespaced(kproxy_tests::control::client(&s).await);
    let to_value = |d: &Deployment| serde_json::to_value(d).unwrap();

    let created = deps
        .patch(
            "api",
            &PatchParams::apply("team-a"),
            &Patch::Apply(deployment("api", 2)),
        )
        .await
        .unwrap();
    let created = to_value(&created);
    assert_eq!(created["spec"]["replicas"], 2);
    assert_eq!(
        managers(&created),
        [("team-a".into(), "Apply".into(), String::new())]
    );

    // Another manager applying the same value shares the field: no conflict.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
                      "spec": {"replicas": 2}});
    let shared = deps
        .patch("api", &PatchParams::apply("team-b"), &Patch::Apply(&same))
        .await
        .unwrap();
    let shared = to_value(&shared);
    for m in ["team-a", "team-b"] {
        assert_eq!(
            entry(&shared, m, "Apply")["fieldsV1"]["f:spec"]["f:replicas"],
            json!({}),
            "{m} owns replicas"
        );
    }

    // A different value conflicts with the other owner; nothing changes.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
                       "spec": {"replicas": 4}});
    match deps
        .patch("api", &PatchParams::apply("team-b"), &Patch::Apply(&other))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                e.message,
                "Apply failed with 1 conflict: conflict with \"team-a\": .spec.replicas"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The Status names each field as a FieldManagerConflict cause.
    let h = s.http();
    let raw = h.patch(
        &format!("{DEPLOYMENTS}/api?fieldManager=team-b"),
        APPLY,
        &other.to_string(),
    );
    assert_eq!(raw.code, 409, "{}", raw.body);
    assert_eq!(
        raw.json()["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"team-a\"",
                "field": ".spec.replicas"}])
    );
    let unchanged = h.get(&format!("{DEPLOYMENTS}/api")).json();
    assert_eq!(unchanged["spec"]["replicas"], 2);
    assert_eq!(rv(&unchanged), rv(&shared));

    // Forced, team-b takes the field from team-a.
    let forced = deps
        .patch(
            "api",
            &PatchParams::apply("team-b").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    let forced = to_value(&forced);
    assert_eq!(forced["spec"]["replicas"], 4);
    assert!(
        entry(&forced, "team-a", "Apply")["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    // Status through /status is its own entry, scoped to status.
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
                        "spec": {"replicas": 9}, "status": {"observedGeneration": 2}});
    let st = deps
        .patch_status("api", &PatchParams::apply("ctrl"), &Patch::Apply(&status))
        .await
        .unwrap();
    let st = to_value(&st);
    assert_eq!(st["spec"]["replicas"], 4, "status apply leaves spec alone");
    assert_eq!(st["status"]["observedGeneration"], 2);
    let e = entry(&st, "ctrl", "Apply");
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}}})
    );
}

fn apply(h: &Http, name: &str, manager: &str, body: &str) -> (u16, Value) {
    let r = h.patch(
        &format!("{DEPLOYMENTS}/{name}?fieldManager={manager}"),
        APPLY,
        body,
    );
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.code, v)
}

#[test]
fn bad_apply_input_is_rejected_and_changes_nothing() {
    let dir = TempDir::new("kpt-ssa-bad");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let good = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: httpd}]}\n";
    let (code, created) = apply(&h, "web", "m", good);
    assert_eq!(code, 201, "{created}");
    let before = h.get(&format!("{DEPLOYMENTS}/web")).json();

    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "web",
            "m",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web\n",
            400,
            "error decoding YAML",
        ),
        (
            "web",
            "m",
            "apiVersion: apps/v1\nkind: Service\nmetadata: {name: web}\nspec: {replicas: 7}\n",
            400,
            "does not match the expected kind",
        ),
        (
            "web",
            "m",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\nspec: {replicas: 7}\n",
            400,
            "does not match the name on the URL",
        ),
        (
            "web",
            "m",
            "apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 7}\n",
            400,
            "Incorrect version specified in apply patch",
        ),
        (
            "web",
            "m",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, managedFields: [{manager: x}]}\n",
            400,
            "managedFields must be nil",
        ),
        (
            "web",
            "m",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: -3}\n",
            422,
            "must be greater than or equal to 0",
        ),
        (
            "web",
            "",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 7}\n",
            422,
            "fieldManager: Required value",
        ),
        // Nothing is created by bad input either.
        (
            "new",
            "m",
            "apiVersion: apps/v1\nkind: Service\nmetadata: {name: new}\n",
            400,
            "does not match the expected kind",
        ),
        ("new", "m", "- a\n- b\n", 400, "must be a JSON object"),
    ];
    for (name, manager, body, want, text) in cases {
        let (code, status) = apply(&h, name, manager, body);
        assert_eq!(code, *want, "{body}: {status}");
        let msg = status["message"].as_str().unwrap_or_default();
        assert!(msg.contains(text), "{body}: {msg}");
    }
    let after = h.get(&format!("{DEPLOYMENTS}/web")).json();
    assert_eq!(after, before, "bad input changed the object");
    assert_eq!(h.get(&format!("{DEPLOYMENTS}/new")).code, 404);
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "short names for the objects of one scenario"
)]
fn ordinary_writes_record_update_entries_and_take_changed_fields() {
    let dir = TempDir::new("kpt-ssa-update");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let (code, _) = apply(&h, "web", "applier", &deployment("web", 1).to_string());
    assert_eq!(code, 201);

    // A merge patch by curl (manager from the User-Agent) takes replicas from the applier.
    let p = h.patch(
        &format!("{DEPLOYMENTS}/web"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":2},"metadata":{"labels":{"x":"y"}}}"#,
    );
    assert_eq!(p.code, 200, "{}", p.body);
    let d = p.json();
    let curl = entry(&d, "curl", "Update");
    assert_eq!(curl["apiVersion"], "apps/v1");
    assert_eq!(
        curl["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}}, "f:spec": {"f:replicas": {}}})
    );
    assert!(
        entry(&d, "applier", "Apply")["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    // A write that changes nothing records nothing.
    let again = h.patch(
        &format!("{DEPLOYMENTS}/web?fieldManager=someone"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":2}}"#,
    );
    assert_eq!(rv(&again.json()), rv(&d));

    // `force` belongs to apply only.
    let f = h.patch(
        &format!("{DEPLOYMENTS}/web?force=true"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":3}}"#,
    );
    assert_eq!(f.code, 422, "{}", f.body);

    // Kubernetes' reset: managedFields overwritten with one empty entry clears them.
    let reset = h.patch(
        &format!("{DEPLOYMENTS}/web"),
        "application/merge-patch+json",
        r#"{"metadata":{"managedFields":[{}]}}"#,
    );
    assert_eq!(reset.code, 200, "{}", reset.body);
    assert!(reset.json()["metadata"].get("managedFields").is_none());

    // A create records its creator with every field it set (status excluded).
    let c = h.post(
        &format!("{DEPLOYMENTS}?fieldManager=creator"),
        &deployment("second", 1),
    );
    assert_eq!(c.code, 201, "{}", c.body);
    let c = c.json();
    assert_eq!(
        managers(&c),
        [("creator".into(), "Update".into(), String::new())]
    );
    let f = &entry(&c, "creator", "Update")["fieldsV1"];
    assert!(f["f:spec"]["f:replicas"].is_object(), "{f}");
    assert!(f.get("f:status").is_none(), "{f}");
}
