//! batch/v1 Jobs and core/v1 ServiceAccounts through `handler::router` in-process, over the
//! memory store: discovery, defaults, the generated selector, validation, the table columns,
//! and the ServiceAccount admission of pods.

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::handler::router;
use crate::test_api::{Answer, TempDir, answer, request, test_api};

struct Server {
    app: Router,
    admin: String,
    _dir: TempDir,
}

impl Server {
    async fn new(name: &str) -> Server {
        let t = test_api(&format!("batch-{name}"), 1000, &[]).await;
        Server {
            app: router(t.api.clone()),
            admin: t.admin,
            _dir: t.dir,
        }
    }

    async fn send(&self, method: Method, uri: &str, body: &Value) -> Answer {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).unwrap()
        };
        answer(
            &self.app,
            request(&self.admin, method, uri, "application/json", bytes),
        )
        .await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, &Value::Null).await
    }

    async fn post(&self, uri: &str, body: &Value) -> Answer {
        self.send(Method::POST, uri, body).await
    }
}

const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";

/// What `kubectl create job pi --image=busybox` sends.
fn kubectl_job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": name, "image": "busybox"}]
        }}}
    })
}

fn message(a: &Answer) -> &str {
    a.body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn batch_v1_is_discovered() {
    let s = Server::new("discovery").await;
    let groups = s.get("/apis").await;
    assert!(
        groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "batch" && g["preferredVersion"]["version"] == "v1"),
        "{}",
        groups.body
    );
    let list = s.get("/apis/batch/v1").await;
    assert_eq!(list.code, StatusCode::OK);
    let jobs = list.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "jobs")
        .unwrap()
        .clone();
    assert_eq!(jobs["kind"], "Job");
    assert_eq!(jobs["namespaced"], true);
    assert!(
        list.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "jobs/status")
    );
    let core = s.get("/api/v1").await;
    let sa = core.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts")
        .unwrap()
        .clone();
    assert_eq!(sa["shortNames"], json!(["sa"]));
}

#[tokio::test]
async fn jobs_get_kubernetes_defaults_and_a_generated_selector() {
    let s = Server::new("defaults").await;
    let a = s.post(JOBS, &kubectl_job("pi")).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let j = &a.body;
    let uid = j["metadata"]["uid"].as_str().unwrap();
    let spec = &j["spec"];
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["manualSelector"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let want = json!({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "pi",
        "controller-uid": uid, "job-name": "pi",
    });
    assert_eq!(spec["template"]["metadata"]["labels"], want);
    assert_eq!(
        j["metadata"]["labels"], want,
        "template labels become the Job's"
    );
    assert_eq!(
        spec["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(j["status"], json!({}));

    // Only parallelism given: completions stay unset (any success ends the Job).
    let mut body = kubectl_job("par");
    body["spec"]["parallelism"] = json!(3);
    let a = s.post(JOBS, &body).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    assert!(a.body["spec"].get("completions").is_none());
    assert_eq!(a.body["spec"]["parallelism"], 3);
}

#[tokio::test]
async fn invalid_jobs_are_refused_as_kubernetes_does() {
    let s = Server::new("invalid").await;
    let mut always = kubectl_job("always");
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let a = s.post(JOBS, &always).await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&a),
        "Job.batch \"always\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
    );
    // Without a restartPolicy the pod default (Always) applies, and is refused the same way.
    let mut unset = kubectl_job("unset");
    unset["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    let a = s.post(JOBS, &unset).await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message(&a).contains("Unsupported value: \"Always\""),
        "{}",
        message(&a)
    );

    let mut neg = kubectl_job("neg");
    neg["spec"]["completions"] = json!(-1);
    neg["spec"]["parallelism"] = json!(-2);
    let a = s.post(JOBS, &neg).await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&a),
        "Job.batch \"neg\" is invalid: [spec.parallelism: Invalid value: -2: must be greater than or equal to 0, spec.completions: Invalid value: -1: must be greater than or equal to 0]"
    );

    // A selector the user wrote without manualSelector is not the generated one.
    let mut manual = kubectl_job("sel");
    manual["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
    manual["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
    let a = s.post(JOBS, &manual).await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message(&a).contains("spec.selector: Invalid value"),
        "{}",
        message(&a)
    );
    assert!(message(&a).contains("`selector` not auto-generated"));
    // With manualSelector it is the user's business, as long as it matches the template.
    manual["spec"]["manualSelector"] = json!(true);
    let a = s.post(JOBS, &manual).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        a.body["spec"]["selector"],
        json!({"matchLabels": {"app": "x"}})
    );
    let mut mismatch = kubectl_job("mismatch");
    mismatch["spec"]["manualSelector"] = json!(true);
    mismatch["spec"]["selector"] = json!({"matchLabels": {"app": "y"}});
    let a = s.post(JOBS, &mismatch).await;
    assert!(
        message(&a).contains("`selector` does not match template `labels`"),
        "{}",
        message(&a)
    );

    // The template and completions are immutable.
    let a = s.post(JOBS, &kubectl_job("fixed")).await;
    assert_eq!(a.code, StatusCode::CREATED);
    let patch = json!({"spec": {"completions": 4}});
    let a = answer(
        &s.app,
        request(
            &s.admin,
            Method::PATCH,
            &format!("{JOBS}/fixed"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        ),
    )
    .await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&a),
        "Job.batch \"fixed\" is invalid: spec.completions: Invalid value: 4: field is immutable"
    );
}

#[tokio::test]
async fn job_and_service_account_tables_have_kubectl_columns() {
    let s = Server::new("table").await;
    assert_eq!(
        s.post(JOBS, &kubectl_job("pi")).await.code,
        StatusCode::CREATED
    );
    let table = answer(&s.app, {
        let mut r = request(&s.admin, Method::GET, JOBS, "application/json", Vec::new());
        r.headers_mut().insert(
            axum::http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io"
                .parse()
                .unwrap(),
        );
        r
    })
    .await;
    assert_eq!(table.code, StatusCode::OK, "{}", table.body);
    let cols: Vec<&str> = table.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Completions", "Duration", "Age"]);
    let cells = &table.body["rows"][0]["cells"];
    assert_eq!(cells[0], "pi");
    assert_eq!(cells[1], "Running");
    assert_eq!(cells[2], "0/1");
    assert_eq!(cells[3], "", "not started: no duration");

    let sa = s
        .post(
            "/api/v1/namespaces/default/serviceaccounts",
            &json!({"metadata": {"name": "robot"}, "secrets": [{"name": "s1"}]}),
        )
        .await;
    assert_eq!(sa.code, StatusCode::CREATED, "{}", sa.body);
    let table = answer(&s.app, {
        let mut r = request(
            &s.admin,
            Method::GET,
            "/api/v1/namespaces/default/serviceaccounts",
            "application/json",
            Vec::new(),
        );
        r.headers_mut().insert(
            axum::http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io"
                .parse()
                .unwrap(),
        );
        r
    })
    .await;
    let cols: Vec<&str> = table.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Secrets", "Age"]);
    let robot = table.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "robot")
        .unwrap();
    assert_eq!(robot["cells"][1], 1);
}

#[tokio::test]
async fn pods_run_as_an_existing_service_account() {
    let s = Server::new("sa-admission").await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, sa: Option<&str>| {
        let mut p = json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(sa) = sa {
            p["spec"]["serviceAccountName"] = json!(sa);
        }
        p
    };
    // No account named: `default` (allowed even before the controller created it).
    let a = s.post(pods, &pod("plain", None)).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["spec"]["serviceAccountName"], "default");
    assert_eq!(a.body["spec"]["serviceAccount"], "default");

    let a = s.post(pods, &pod("robotic", Some("robot"))).await;
    assert_eq!(a.code, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(
        message(&a),
        "pods \"robotic\" is forbidden: error looking up service account default/robot: serviceaccount \"robot\" not found"
    );
    assert_eq!(a.body["reason"], "Forbidden");
    let sa = s
        .post(
            "/api/v1/namespaces/default/serviceaccounts",
            &json!({"metadata": {"name": "robot"}}),
        )
        .await;
    assert_eq!(sa.code, StatusCode::CREATED, "{}", sa.body);
    let a = s.post(pods, &pod("robotic", Some("robot"))).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["spec"]["serviceAccount"], "robot");

    let bad = s
        .post(
            "/api/v1/namespaces/default/serviceaccounts",
            &json!({"metadata": {"name": "Not_Valid"}}),
        )
        .await;
    assert_eq!(bad.code, StatusCode::UNPROCESSABLE_ENTITY);
}
