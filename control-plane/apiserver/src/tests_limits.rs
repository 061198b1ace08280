//! Input limits (issue 14: patch bombs, YAML bombs, watch and list limits): requests through
//! `handler::router` in-process, over the memory store.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::context::Shared;
use crate::handler::router;
use crate::test_api::{Answer, TempDir, answer, request, test_api};

/// A router over a fresh memory store keeping `history` events, with the admin's and a node's
/// tokens.
struct Server {
    app: Router,
    api: Shared,
    admin: String,
    node: String,
    _dir: TempDir,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

impl Server {
    async fn new(name: &str, history: usize) -> Server {
        let mut t = test_api(&format!("limits-{name}"), history, &["n1"]).await;
        Server {
            app: router(t.api.clone()),
            api: t.api,
            admin: t.admin,
            node: t.nodes.remove(0),
            _dir: t.dir,
        }
    }

    async fn send_as(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        ct: &str,
        body: Vec<u8>,
    ) -> Answer {
        answer(&self.app, request(token, method, uri, ct, body)).await
    }

    async fn send(&self, method: Method, uri: &str, ct: &str, body: Vec<u8>) -> Answer {
        self.send_as(&self.admin, method, uri, ct, body).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, "application/json", Vec::new())
            .await
    }

    async fn post(&self, uri: &str, body: &Value) -> Answer {
        self.send(
            Method::POST,
            uri,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    /// A watch's response, its body not read yet.
    async fn open(&self, uri: &str) -> axum::response::Response {
        let req = request(
            &self.admin,
            Method::GET,
            uri,
            "application/json",
            Vec::new(),
        );
        self.app.clone().oneshot(req).await.unwrap()
    }
}

const EVENTS: &str = "/api/v1/namespaces/default/events";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

fn event(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Test",
        "message": "x".repeat(100),
    })
}

fn lease(name: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": "a"},
    })
}

/// Checks a Status answer's code and reason.
fn assert_status(a: &Answer, code: StatusCode, reason: &str) {
    assert_eq!(a.code, code, "{}", a.body);
    assert_eq!(a.body["kind"], "Status", "{}", a.body);
    assert_eq!(a.body["reason"], reason, "{}", a.body);
}

#[tokio::test]
async fn json_patch_bombs_are_refused_quickly() {
    let s = Server::new("patch-bomb", 1000).await;
    let created = s.post(EVENTS, &event("e1")).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    let uri = format!("{EVENTS}/e1");
    let json_patch = |ops: &Vec<Value>| serde_json::to_vec(ops).unwrap();

    // 40 copies of the whole object into itself: 2^40 Events if they were made.
    let doubling: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
        .collect();
    let started = Instant::now();
    let bomb = s
        .send(
            Method::PATCH,
            &uri,
            "application/json-patch+json",
            json_patch(&doubling),
        )
        .await;
    let took = started.elapsed();
    assert_status(&bomb, StatusCode::UNPROCESSABLE_ENTITY, "Invalid");
    assert!(bomb.message().contains("copy"), "{}", bomb.body);
    assert!(took < Duration::from_secs(1), "{took:?}");

    // More operations than Kubernetes allows: 413, as kube-apiserver answers.
    let tests = vec![json!({"op": "test", "path": "/reason", "value": "Test"}); 10_001];
    let many = s
        .send(
            Method::PATCH,
            &uri,
            "application/json-patch+json",
            json_patch(&tests),
        )
        .await;
    assert_status(
        &many,
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
    );
    assert_eq!(
        many.message(),
        "The allowed maximum operations in a JSON patch is 10000, got 10001"
    );

    // The object is untouched, and ordinary patches still apply.
    let got = s.get(&uri).await;
    assert_eq!(
        got.body["metadata"]["resourceVersion"],
        created.body["metadata"]["resourceVersion"]
    );
    let ok = s
        .send(
            Method::PATCH,
            &uri,
            "application/json-patch+json",
            json_patch(&vec![
                json!({"op": "copy", "from": "/reason", "path": "/action"}),
            ]),
        )
        .await;
    assert_eq!(ok.code, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["action"], "Test");
}

#[tokio::test]
async fn merge_patches_grow_only_by_their_body() {
    // Merge and strategic merge patches add nothing the body does not hold, so the body limit
    // bounds them.
    let s = Server::new("merge-bound", 1000).await;
    assert_eq!(s.post(EVENTS, &event("e1")).await.code, StatusCode::CREATED);
    let big = json!({"message": "x".repeat(crate::context::MAX_BODY)}).to_string();
    for ct in [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        let a = s
            .send(
                Method::PATCH,
                &format!("{EVENTS}/e1"),
                ct,
                big.clone().into_bytes(),
            )
            .await;
        assert_status(&a, StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge");
    }
}

/// An Event in YAML whose `b` is 20,000 references to a 20,000-element list: 400 million nodes
/// once expanded.
fn yaml_bomb() -> Vec<u8> {
    let items = vec!["x"; 20_000].join(",");
    let refs = vec!["*a"; 20_000].join(",");
    format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: bomb\n\
         involvedObject: {{kind: Pod, name: p, namespace: default}}\n\
         a: &a [{items}]\nb: [{refs}]\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn yaml_bombs_are_bad_requests() {
    let s = Server::new("yaml-bomb", 1000).await;
    // As a create, a server-side apply, and a create by a node (whose create bodies are read
    // before authorization, for the object's name).
    let applied = format!("{EVENTS}/bomb?fieldManager=t");
    let cases = [
        (&s.admin, Method::POST, EVENTS, "application/yaml"),
        (
            &s.admin,
            Method::PATCH,
            applied.as_str(),
            "application/apply-patch+yaml",
        ),
        (&s.node, Method::POST, EVENTS, "application/yaml"),
    ];
    for (token, method, uri, ct) in cases {
        let started = Instant::now();
        let a = s.send_as(token, method.clone(), uri, ct, yaml_bomb()).await;
        let took = started.elapsed();
        assert_status(&a, StatusCode::BAD_REQUEST, "BadRequest");
        assert!(a.message().contains("YAML"), "{method} {ct}: {}", a.body);
        assert!(a.message().contains("alias"), "{method} {ct}: {}", a.body);
        // A debug build; a release build refuses it in a few milliseconds.
        assert!(took < Duration::from_secs(3), "{method} {ct}: {took:?}");
    }
    assert_eq!(
        s.get(&format!("{EVENTS}/bomb")).await.code,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn watch_timeouts_that_overflow_are_bad_requests() {
    let s = Server::new("watch-timeout", 1000).await;
    for t in ["99999999999999", "18446744073709551615", "-1", "x"] {
        let a = s.get(&format!("{LEASES}?watch=1&timeoutSeconds={t}")).await;
        assert_status(&a, StatusCode::BAD_REQUEST, "BadRequest");
        assert!(a.message().contains("timeoutSeconds"), "{}", a.body);
    }
    // An ordinary timeout ends the stream.
    let started = Instant::now();
    let a = s.get(&format!("{LEASES}?watch=1&timeoutSeconds=1")).await;
    assert_eq!(a.code, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn selectors_have_a_bounded_number_of_requirements() {
    let s = Server::new("selector-size", 1000).await;
    assert_eq!(s.post(LEASES, &lease("l1")).await.code, StatusCode::CREATED);
    let labels = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}!%3Dv"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let fields = |n: usize| {
        (0..n)
            .map(|i| format!("metadata.name!%3Dx{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for query in [
        format!("labelSelector={}", labels(100)),
        format!("fieldSelector={}", fields(100)),
    ] {
        let a = s.get(&format!("{LEASES}?{query}")).await;
        assert_eq!(a.code, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["items"].as_array().unwrap().len(), 1);
    }
    for query in [
        format!("labelSelector={}", labels(101)),
        format!("fieldSelector={}", fields(101)),
        format!("watch=1&labelSelector={}", labels(101)),
    ] {
        let a = s.get(&format!("{LEASES}?{query}")).await;
        assert_status(&a, StatusCode::BAD_REQUEST, "BadRequest");
        assert!(a.message().contains("at most 100"), "{}", a.body);
    }
}

/// The `{"type": ..}` lines of a watch body read until it ends or `quiet` passes without one.
async fn watch_lines(resp: axum::response::Response, quiet: Duration) -> Vec<Value> {
    let mut body = resp.into_body().into_data_stream();
    let mut text = Vec::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(quiet, body.next()).await {
        text.extend_from_slice(&chunk);
    }
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[tokio::test]
async fn watch_initial_events_come_from_the_store_a_page_at_a_time() {
    // A watch without a resourceVersion starts with the collection as ADDED events. They are
    // read from the store's snapshot a page at a time as the client takes them, so a watcher
    // whose client stalls holds one page, not a copy of the whole collection: if the snapshot
    // leaves the history meanwhile, the watch ends with a 410 for the client to re-list.
    let s = Server::new("watch-pages", 100).await;
    for i in 0..400 {
        let c = s.post(LEASES, &lease(&format!("l{i:03}"))).await;
        assert_eq!(c.code, StatusCode::CREATED, "{}", c.body);
    }
    // A watcher that reads everything gets all of them in key order, then live events.
    let resp = s.open(&format!("{LEASES}?watch=1")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let reader = tokio::spawn(watch_lines(resp, Duration::from_millis(500)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.post(LEASES, &lease("m")).await.code, StatusCode::CREATED);
    let lines = reader.await.unwrap();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    let mut want: Vec<String> = (0..400).map(|i| format!("l{i:03}")).collect();
    want.push("m".into());
    assert_eq!(names, want);
    assert!(lines.iter().all(|l| l["type"] == "ADDED"));

    // A stalled watcher: its body is not read while the history moves on.
    let stalled = s.open(&format!("{LEASES}?watch=1")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = &s.api.store;
    for i in 0..150 {
        let key = format!("/registry/coordination.k8s.io/leases/default/l{i:03}");
        let cur = store.get(&key).await.unwrap().unwrap();
        store
            .update(&key, cur.value.clone(), Some(cur.mod_revision))
            .await
            .unwrap();
    }
    let lines = watch_lines(stalled, Duration::from_millis(500)).await;
    let added = lines.iter().filter(|l| l["type"] == "ADDED").count();
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "ERROR", "{last}");
    assert_eq!(last["object"]["code"], 410, "{last}");
    assert!(
        added < 400,
        "the whole collection was held for the watcher: {added}"
    );
}
