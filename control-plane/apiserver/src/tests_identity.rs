//! Identity and garbage-collection hardening (issue 14: node restriction, owner cycles, token
//! revocation): requests through `handler::router` in-process, as nodes and as the admin.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::context::Shared;
use crate::handler::router;
use crate::test_api::{Answer, TempDir, answer, json_body, pod, request, test_api};

/// A router over a fresh memory store, with the admin's and two nodes' tokens.
struct Server {
    app: Router,
    api: Shared,
    admin: String,
    n1: String,
    n2: String,
    dir: TempDir,
}

impl Server {
    async fn new(name: &str) -> Server {
        let t = test_api(&format!("identity-{name}"), 1000, &["n1", "n2"]).await;
        let [n1, n2] = <[String; 2]>::try_from(t.nodes).unwrap();
        Server {
            app: router(t.api.clone()),
            api: t.api,
            admin: t.admin,
            n1,
            n2,
            dir: t.dir,
        }
    }

    async fn send(&self, token: &str, method: Method, uri: &str, ct: &str, body: &Value) -> Answer {
        answer(&self.app, request(token, method, uri, ct, json_body(body))).await
    }

    async fn call(&self, token: &str, method: Method, uri: &str, body: &Value) -> Answer {
        self.send(token, method, uri, "application/json", body)
            .await
    }

    async fn merge(&self, token: &str, uri: &str, body: &Value) -> Answer {
        self.send(
            token,
            Method::PATCH,
            uri,
            "application/merge-patch+json",
            body,
        )
        .await
    }
}

const NODES: &str = "/api/v1/nodes";
const NODE_LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn node(name: &str, cidr: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    })
}

fn lease(name: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40},
    })
}

fn is_refused(a: &Answer) -> bool {
    a.code.is_client_error() && a.code != StatusCode::NOT_FOUND
}

// === node restriction ===

#[tokio::test]
async fn a_node_creates_only_its_own_node() {
    let s = Server::new("own-node").await;
    let other = s
        .call(&s.n1, Method::POST, NODES, &node("n2", "10.99.0.0/16"))
        .await;
    assert_eq!(other.code, StatusCode::FORBIDDEN, "{}", other.body);
    // The name in the path is the node's own, the one in the body is not.
    let smuggled = s
        .call(
            &s.n1,
            Method::POST,
            &format!("{NODES}/n1"),
            &node("n2", "10.99.0.0/16"),
        )
        .await;
    assert!(is_refused(&smuggled), "{} {}", smuggled.code, smuggled.body);
    let applied = s
        .send(
            &s.n1,
            Method::PATCH,
            &format!("{NODES}/n1?fieldManager=kubelet"),
            "application/apply-patch+yaml",
            &node("n2", "10.99.0.0/16"),
        )
        .await;
    assert!(is_refused(&applied), "{} {}", applied.code, applied.body);
    let n2 = s
        .call(&s.admin, Method::GET, &format!("{NODES}/n2"), &Value::Null)
        .await;
    assert_eq!(
        n2.code,
        StatusCode::NOT_FOUND,
        "n2 was created: {}",
        n2.body
    );

    let own = s
        .call(&s.n1, Method::POST, NODES, &node("n1", "10.244.1.0/24"))
        .await;
    assert_eq!(own.code, StatusCode::CREATED, "{}", own.body);
    let status = s
        .merge(
            &s.n1,
            &format!("{NODES}/n1/status"),
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await;
    assert_eq!(status.code, StatusCode::OK, "{}", status.body);
    let theirs = s
        .call(&s.admin, Method::POST, NODES, &node("n2", "10.244.2.0/24"))
        .await;
    assert_eq!(theirs.code, StatusCode::CREATED, "{}", theirs.body);
    let other_status = s
        .merge(
            &s.n1,
            &format!("{NODES}/n2/status"),
            &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        )
        .await;
    assert_eq!(
        other_status.code,
        StatusCode::FORBIDDEN,
        "{}",
        other_status.body
    );
    // podCIDR, once set, stays (for everyone).
    let moved = s
        .merge(
            &s.n1,
            &format!("{NODES}/n1"),
            &json!({"spec": {"podCIDR": "10.99.0.0/16", "podCIDRs": ["10.99.0.0/16"]}}),
        )
        .await;
    assert_eq!(
        moved.code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        moved.body
    );
}

#[tokio::test]
async fn a_node_writes_only_its_own_lease() {
    let s = Server::new("own-lease").await;
    let own = s.call(&s.n1, Method::POST, NODE_LEASES, &lease("n1")).await;
    assert_eq!(own.code, StatusCode::CREATED, "{}", own.body);
    let other = s.call(&s.n1, Method::POST, NODE_LEASES, &lease("n2")).await;
    assert_eq!(other.code, StatusCode::FORBIDDEN, "{}", other.body);
    let smuggled = s
        .call(
            &s.n1,
            Method::POST,
            &format!("{NODE_LEASES}/n1"),
            &lease("n2"),
        )
        .await;
    assert!(is_refused(&smuggled), "{} {}", smuggled.code, smuggled.body);
    let elsewhere = s.call(&s.n1, Method::POST, LEASES, &lease("n1")).await;
    assert_eq!(elsewhere.code, StatusCode::FORBIDDEN, "{}", elsewhere.body);
    let n2 = s
        .call(
            &s.admin,
            Method::GET,
            &format!("{NODE_LEASES}/n2"),
            &Value::Null,
        )
        .await;
    assert_eq!(
        n2.code,
        StatusCode::NOT_FOUND,
        "n2's lease was created: {}",
        n2.body
    );
    let renew = s
        .merge(
            &s.n1,
            &format!("{NODE_LEASES}/n1"),
            &json!({"spec": {"leaseDurationSeconds": 41}}),
        )
        .await;
    assert_eq!(renew.code, StatusCode::OK, "{}", renew.body);
}

#[tokio::test]
async fn a_node_may_not_set_restricted_labels_or_change_its_taints() {
    let s = Server::new("labels").await;
    let mut labelled = node("n1", "10.244.1.0/24");
    labelled["metadata"]["labels"]["node-restriction.kubernetes.io/secure"] = json!("true");
    let refused = s.call(&s.n1, Method::POST, NODES, &labelled).await;
    assert_eq!(refused.code, StatusCode::FORBIDDEN, "{}", refused.body);
    // The admin may; the node then may neither change nor remove the label.
    let mut tainted = labelled.clone();
    tainted["spec"]["taints"] =
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
    let created = s.call(&s.admin, Method::POST, NODES, &tainted).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    for labels in [
        json!({"node-restriction.kubernetes.io/secure": "false"}),
        json!({"node-restriction.kubernetes.io/secure": null}),
        json!({"team.node-restriction.kubernetes.io/x": "y"}),
    ] {
        let a = s
            .merge(
                &s.n1,
                &format!("{NODES}/n1"),
                &json!({"metadata": {"labels": labels}}),
            )
            .await;
        assert_eq!(a.code, StatusCode::FORBIDDEN, "{labels}: {}", a.body);
    }
    let untaint = s
        .merge(
            &s.n1,
            &format!("{NODES}/n1"),
            &json!({"spec": {"taints": null}}),
        )
        .await;
    assert_eq!(untaint.code, StatusCode::FORBIDDEN, "{}", untaint.body);
    // Other labels are the node's own business.
    let other = s
        .merge(
            &s.n1,
            &format!("{NODES}/n1"),
            &json!({"metadata": {"labels": {"example.com/rack": "r1"}}}),
        )
        .await;
    assert_eq!(other.code, StatusCode::OK, "{}", other.body);
    let got = s
        .call(&s.admin, Method::GET, &format!("{NODES}/n1"), &Value::Null)
        .await;
    assert_eq!(
        got.body["metadata"]["labels"]["node-restriction.kubernetes.io/secure"],
        "true"
    );
    assert_eq!(got.body["spec"]["taints"][0]["key"], "dedicated");
}

#[tokio::test]
async fn a_node_writes_only_the_status_of_its_own_pods_and_creates_none() {
    let s = Server::new("pods").await;
    let created = s.call(&s.n1, Method::POST, PODS, &pod("p0", "n1")).await;
    assert_eq!(created.code, StatusCode::FORBIDDEN, "{}", created.body);
    for (name, on) in [("mine", "n1"), ("theirs", "n2")] {
        let a = s.call(&s.admin, Method::POST, PODS, &pod(name, on)).await;
        assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    }
    let running = json!({"status": {"phase": "Running"}});
    let mine = s
        .merge(&s.n1, &format!("{PODS}/mine/status"), &running)
        .await;
    assert_eq!(mine.code, StatusCode::OK, "{}", mine.body);
    let theirs = s
        .merge(&s.n1, &format!("{PODS}/theirs/status"), &running)
        .await;
    assert_eq!(theirs.code, StatusCode::FORBIDDEN, "{}", theirs.body);
    let spec = s
        .merge(
            &s.n1,
            &format!("{PODS}/mine"),
            &json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert_eq!(spec.code, StatusCode::FORBIDDEN, "{}", spec.body);
    let gone = s
        .call(&s.n2, Method::DELETE, &format!("{PODS}/mine"), &Value::Null)
        .await;
    assert_eq!(gone.code, StatusCode::FORBIDDEN, "{}", gone.body);
}

// === garbage-collection cycles ===

/// Sends `req` as the admin on a task of its own and gives up after `limit` (a delete that
/// recursed without end used to take the whole process down with a stack overflow).
async fn within(s: &Server, limit: Duration, method: Method, uri: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", s.admin))
        .body(Body::empty())
        .unwrap();
    let app = s.app.clone();
    let task = tokio::spawn(async move { answer(&app, req).await });
    tokio::time::timeout(limit, task)
        .await
        .unwrap_or_else(|_| panic!("{uri} did not answer within {limit:?}"))
        .unwrap()
}

fn owner_ref(kind: &str, o: &Value) -> Value {
    json!({
        "apiVersion": o["apiVersion"],
        "kind": kind,
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
    })
}

/// Stores `obj` as is, bypassing validation (an object written before a rule existed).
async fn store_raw(s: &Server, key: &str, obj: &Value) {
    let kv = s.api.store.get(key).await.unwrap().unwrap();
    s.api
        .store
        .txn(vec![kproxy_store::Op::Update {
            key: key.into(),
            value: crate::object::to_stored(obj),
            expected: Some(kv.mod_revision),
        }])
        .await
        .unwrap();
}

#[tokio::test]
async fn self_ownership_is_refused() {
    let s = Server::new("self-owner").await;
    let a = s.call(&s.admin, Method::POST, LEASES, &lease("a")).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let mut own = a.body.clone();
    own["metadata"]["ownerReferences"] = json!([owner_ref("Lease", &a.body)]);
    let put = s
        .call(&s.admin, Method::PUT, &format!("{LEASES}/a"), &own)
        .await;
    assert_eq!(put.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", put.body);
    assert_eq!(
        put.body["details"]["causes"][0]["field"], "metadata.ownerReferences.uid",
        "{}",
        put.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_of_a_self_owned_object_finishes() {
    let s = Server::new("self-fg").await;
    let a = s.call(&s.admin, Method::POST, LEASES, &lease("a")).await;
    let mut own = a.body.clone();
    own["metadata"]["ownerReferences"] = json!([owner_ref("Lease", &a.body)]);
    store_raw(&s, "/registry/coordination.k8s.io/leases/default/a", &own).await;
    let start = Instant::now();
    let del = within(
        &s,
        Duration::from_secs(3),
        Method::DELETE,
        &format!("{LEASES}/a?propagationPolicy=Foreground"),
    )
    .await;
    assert_eq!(del.code, StatusCode::OK, "{}", del.body);
    let got = s
        .call(&s.admin, Method::GET, &format!("{LEASES}/a"), &Value::Null)
        .await;
    assert_eq!(got.code, StatusCode::NOT_FOUND);
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_of_an_owner_cycle_finishes() {
    let s = Server::new("cycle-fg").await;
    for policy in ["Foreground", "Background"] {
        let a = s
            .call(&s.admin, Method::POST, LEASES, &lease("a"))
            .await
            .body;
        let b = s
            .call(&s.admin, Method::POST, LEASES, &lease("b"))
            .await
            .body;
        for (this, owner) in [(&a, &b), (&b, &a)] {
            let mut o = s
                .call(
                    &s.admin,
                    Method::GET,
                    &format!("{LEASES}/{}", this["metadata"]["name"].as_str().unwrap()),
                    &Value::Null,
                )
                .await
                .body;
            o["metadata"]["ownerReferences"] = json!([owner_ref("Lease", owner)]);
            let name = o["metadata"]["name"].as_str().unwrap().to_string();
            let put = s
                .call(&s.admin, Method::PUT, &format!("{LEASES}/{name}"), &o)
                .await;
            assert_eq!(put.code, StatusCode::OK, "{}", put.body);
        }
        let del = within(
            &s,
            Duration::from_secs(3),
            Method::DELETE,
            &format!("{LEASES}/a?propagationPolicy={policy}"),
        )
        .await;
        assert_eq!(del.code, StatusCode::OK, "{policy}: {}", del.body);
        // b goes with a (in the background for Background).
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = s.call(&s.admin, Method::GET, LEASES, &Value::Null).await;
            let n = left.body["items"].as_array().map_or(0, Vec::len);
            if n == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{policy}: {}", left.body);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// === tokens ===

#[tokio::test]
async fn a_revoked_token_is_refused_within_seconds() {
    let s = Server::new("revoke").await;
    let path = s.dir.join("tokens.json");
    let nodes = async |token: &str| s.call(token, Method::GET, NODES, &Value::Null).await.code;
    assert_eq!(nodes(&s.n1).await, StatusCode::OK);
    assert_eq!(nodes(&s.n2).await, StatusCode::OK);
    // The operator removes n1's token by rewriting the file (an editor's new inode).
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["nodes"].as_object_mut().unwrap().remove("n1");
    let tmp = s.dir.join("tokens.json.new");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let start = Instant::now();
    while nodes(&s.n1).await != StatusCode::UNAUTHORIZED {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "n1's revoked token still works after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes(&s.n2).await, StatusCode::OK);
    assert_eq!(nodes(&s.admin).await, StatusCode::OK);

    // A broken file keeps the last good set (and logs), rather than locking everyone out.
    std::fs::write(&path, "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(nodes(&s.admin).await, StatusCode::OK);
    assert_eq!(nodes(&s.n2).await, StatusCode::OK);
    assert_eq!(nodes(&s.n1).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_of_a_long_owner_chain_finishes() {
    let s = Server::new("chain-fg").await;
    let mut owner = s
        .call(&s.admin, Method::POST, LEASES, &lease("l0"))
        .await
        .body;
    for i in 1..100 {
        let mut l = lease(&format!("l{i}"));
        l["metadata"]["ownerReferences"] = json!([owner_ref("Lease", &owner)]);
        owner = s.call(&s.admin, Method::POST, LEASES, &l).await.body;
        assert!(owner["metadata"]["uid"].is_string(), "{owner}");
    }
    let del = within(
        &s,
        Duration::from_secs(10),
        Method::DELETE,
        &format!("{LEASES}/l0?propagationPolicy=Foreground"),
    )
    .await;
    assert_eq!(del.code, StatusCode::OK, "{}", del.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = s.call(&s.admin, Method::GET, LEASES, &Value::Null).await;
        if left.body["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            left.body["items"].as_array().map_or(0, Vec::len)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
