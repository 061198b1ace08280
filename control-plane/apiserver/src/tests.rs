//! Handler-level tests: requests through `handler::router` in-process (`tower::ServiceExt`),
//! over the memory store, with no TLS, sockets or processes.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::handler::router;
use crate::test_api::{Answer, TempDir, answer, request, test_api};

/// A router over a fresh memory store, and the admin token it accepts.
struct Server {
    app: Router,
    token: String,
    _dir: TempDir,
}

impl Server {
    async fn new(name: &str) -> Server {
        let t = test_api(name, 1000, &[]).await;
        Server {
            app: router(t.api),
            token: t.admin,
            _dir: t.dir,
        }
    }

    async fn send(&self, method: Method, uri: &str, content_type: &str, body: Vec<u8>) -> Answer {
        answer(
            &self.app,
            request(&self.token, method, uri, content_type, body),
        )
        .await
    }

    async fn call(&self, method: Method, uri: &str, body: Option<&Value>) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, uri, "application/json", bytes).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, body: &Value) -> Answer {
        self.call(Method::POST, uri, Some(body)).await
    }

    async fn put(&self, uri: &str, body: &Value) -> Answer {
        self.call(Method::PUT, uri, Some(body)).await
    }

    async fn delete(&self, uri: &str) -> Answer {
        self.call(Method::DELETE, uri, None).await
    }

    /// Polls `uri` until it answers `code` (background work such as namespace cleanup).
    async fn wait_for(&self, uri: &str, code: StatusCode) {
        for _ in 0..200 {
            if self.get(uri).await.code == code {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{uri} never answered {code}");
    }
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";

fn lease(name: &str, holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10},
    })
}

fn pod(name: &str, labels: &Value, resources: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
    })
}

/// Checks a Status body: its code, reason and (if given) the message's start.
fn assert_status(a: &Answer, code: StatusCode, reason: &str) {
    assert_eq!(a.code, code, "{}", a.body);
    assert_eq!(a.body["kind"], "Status", "{}", a.body);
    assert_eq!(a.body["status"], "Failure", "{}", a.body);
    assert_eq!(a.body["code"], code.as_u16(), "{}", a.body);
    assert_eq!(a.body["reason"], reason, "{}", a.body);
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let s = Server::new("crud").await;
    let created = s.post(LEASES, &lease("l1", "a")).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    let meta = &created.body["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let rv = meta["resourceVersion"].as_str().unwrap().to_string();

    let got = s.get(&format!("{LEASES}/l1")).await;
    assert_eq!(got.code, StatusCode::OK);
    assert_eq!(got.body["metadata"]["uid"], meta["uid"]);
    assert_eq!(got.body["spec"]["holderIdentity"], "a");

    s.post(LEASES, &lease("l2", "b")).await;
    let list = s.get(LEASES).await;
    assert_eq!(list.code, StatusCode::OK);
    assert_eq!(list.body["kind"], "LeaseList");
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["l1", "l2"]);

    let mut changed = got.body.clone();
    changed["spec"]["holderIdentity"] = json!("c");
    let updated = s.put(&format!("{LEASES}/l1"), &changed).await;
    assert_eq!(updated.code, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["spec"]["holderIdentity"], "c");
    assert_eq!(updated.body["metadata"]["generation"], 2);
    assert_ne!(updated.body["metadata"]["resourceVersion"], rv.as_str());

    let deleted = s.delete(&format!("{LEASES}/l1")).await;
    assert_eq!(deleted.code, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["metadata"]["name"], "l1");
    assert_eq!(
        s.get(&format!("{LEASES}/l1")).await.code,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(LEASES).await.body["items"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn get_honours_resource_version() {
    let s = Server::new("get-rv").await;
    let created = s.post(LEASES, &lease("l1", "a")).await;
    let rv: u64 = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let l1 = format!("{LEASES}/l1");
    // "0" (any), the object's own and an older one: all "not older than", answered.
    for asked in ["0".to_string(), rv.to_string(), (rv - 1).to_string()] {
        let got = s.get(&format!("{l1}?resourceVersion={asked}")).await;
        assert_eq!(got.code, StatusCode::OK, "rv {asked}: {}", got.body);
        assert_eq!(got.body["spec"]["holderIdentity"], "a");
    }
    assert_eq!(
        s.get(&format!("{LEASES}/nope?resourceVersion=0"))
            .await
            .code,
        StatusCode::NOT_FOUND
    );
    // Not a number: 400; beyond the store's revision: 504 "Too large resource version".
    let bad = s.get(&format!("{l1}?resourceVersion=abc")).await;
    assert_status(&bad, StatusCode::BAD_REQUEST, "BadRequest");
    let future = s.get(&format!("{l1}?resourceVersion={}", rv + 1000)).await;
    assert_status(&future, StatusCode::GATEWAY_TIMEOUT, "Timeout");
    assert_eq!(
        future.body["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
        "{}",
        future.body
    );
}

#[tokio::test]
async fn errors_are_status_objects() {
    let s = Server::new("errors").await;
    let missing = s.get(&format!("{LEASES}/nope")).await;
    assert_status(&missing, StatusCode::NOT_FOUND, "NotFound");
    assert_eq!(
        missing.body["message"],
        "leases.coordination.k8s.io \"nope\" not found"
    );
    assert_eq!(
        missing.body["details"],
        json!({"name": "nope", "kind": "leases", "group": "coordination.k8s.io"})
    );
    assert_status(
        &s.get("/api/v1/widgets").await,
        StatusCode::NOT_FOUND,
        "NotFound",
    );

    let first = s.post(LEASES, &lease("l", "a")).await;
    assert_eq!(first.code, StatusCode::CREATED);
    let again = s.post(LEASES, &lease("l", "a")).await;
    assert_status(&again, StatusCode::CONFLICT, "AlreadyExists");

    // A stale resourceVersion is a precondition that fails.
    let mut stale = first.body.clone();
    s.put(&format!("{LEASES}/l"), &first.body).await;
    let mut newer = s.get(&format!("{LEASES}/l")).await.body;
    newer["spec"]["holderIdentity"] = json!("b");
    assert_eq!(
        s.put(&format!("{LEASES}/l"), &newer).await.code,
        StatusCode::OK
    );
    stale["spec"]["holderIdentity"] = json!("z");
    let conflict = s.put(&format!("{LEASES}/l"), &stale).await;
    assert_status(&conflict, StatusCode::CONFLICT, "Conflict");

    let mut bad = lease("bad", "a");
    bad["spec"]["leaseDurationSeconds"] = json!(0);
    let invalid = s.post(LEASES, &bad).await;
    assert_status(&invalid, StatusCode::UNPROCESSABLE_ENTITY, "Invalid");
    assert_eq!(invalid.body["details"]["kind"], "Lease");
    assert_eq!(
        invalid.body["details"]["causes"][0]["field"],
        "spec.leaseDurationSeconds"
    );

    let garbled = s
        .send(
            Method::POST,
            LEASES,
            "application/json",
            b"{\"metadata\": ".to_vec(),
        )
        .await;
    assert_status(&garbled, StatusCode::BAD_REQUEST, "BadRequest");

    let anonymous = s
        .app
        .clone()
        .oneshot(Request::get(LEASES).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn services_get_addresses_from_the_allocator() {
    let s = Server::new("services").await;
    let svc = |name: &str, ty: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": ty, "selector": {"app": "a"}, "ports": [{"port": 80}]},
        })
    };
    let created = s.post(SERVICES, &svc("web", "ClusterIP")).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    let ip: std::net::Ipv4Addr = created.body["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        crate::alloc::Ranges::default().service_cidr.contains(&ip),
        "{ip}"
    );
    assert_eq!(created.body["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(created.body["status"], json!({"loadBalancer": {}}));

    let np = s.post(SERVICES, &svc("np", "NodePort")).await;
    assert_eq!(np.code, StatusCode::CREATED, "{}", np.body);
    let port = np.body["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");

    // An address is held once: asking for it again is a 422, until its Service is gone.
    let mut same = svc("copy", "ClusterIP");
    same["spec"]["clusterIP"] = json!(ip.to_string());
    let taken = s.post(SERVICES, &same).await;
    assert_status(&taken, StatusCode::UNPROCESSABLE_ENTITY, "Invalid");
    assert_eq!(
        s.delete(&format!("{SERVICES}/web")).await.code,
        StatusCode::OK
    );
    let reused = s.post(SERVICES, &same).await;
    assert_eq!(reused.code, StatusCode::CREATED, "{}", reused.body);
    assert_eq!(reused.body["spec"]["clusterIP"], ip.to_string());
}

#[tokio::test]
async fn local_load_balancers_get_a_health_check_node_port() {
    let s = Server::new("hcport").await;
    let svc = |name: &str, ty: &str, etp: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": ty, "externalTrafficPolicy": etp, "selector": {"app": "a"},
                     "ports": [{"port": 80}]},
        })
    };
    let lb = s.post(SERVICES, &svc("lb", "LoadBalancer", "Local")).await;
    assert_eq!(lb.code, StatusCode::CREATED, "{}", lb.body);
    let hc = lb.body["spec"]["healthCheckNodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&hc), "{hc}");
    assert_ne!(Some(hc), lb.body["spec"]["ports"][0]["nodePort"].as_u64());

    // Cluster policy or a NodePort Service: none, and asking for one is a 422.
    let cluster = s.post(SERVICES, &svc("c", "LoadBalancer", "Cluster")).await;
    assert_eq!(cluster.code, StatusCode::CREATED, "{}", cluster.body);
    assert!(cluster.body["spec"].get("healthCheckNodePort").is_none());
    let mut np = svc("np", "NodePort", "Local");
    np["spec"]["healthCheckNodePort"] = json!(31999);
    assert_status(
        &s.post(SERVICES, &np).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
    );

    // A port already held (by lb) is refused; one out of range too.
    let mut taken = svc("taken", "LoadBalancer", "Local");
    taken["spec"]["healthCheckNodePort"] = json!(hc);
    assert_status(
        &s.post(SERVICES, &taken).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
    );
    taken["spec"]["healthCheckNodePort"] = json!(80);
    assert_status(
        &s.post(SERVICES, &taken).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
    );

    // An update keeps it; switching to Cluster releases it for another Service.
    let mut kept = lb.body.clone();
    kept["spec"]
        .as_object_mut()
        .unwrap()
        .remove("healthCheckNodePort");
    let kept = s.put(&format!("{SERVICES}/lb"), &kept).await;
    assert_eq!(kept.code, StatusCode::OK, "{}", kept.body);
    assert_eq!(kept.body["spec"]["healthCheckNodePort"].as_u64(), Some(hc));
    let mut to_cluster = kept.body.clone();
    to_cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
    let switched = s.put(&format!("{SERVICES}/lb"), &to_cluster).await;
    assert_eq!(switched.code, StatusCode::OK, "{}", switched.body);
    assert!(switched.body["spec"].get("healthCheckNodePort").is_none());
    let mut again = svc("again", "LoadBalancer", "Local");
    again["spec"]["healthCheckNodePort"] = json!(hc);
    let again = s.post(SERVICES, &again).await;
    assert_eq!(again.code, StatusCode::CREATED, "{}", again.body);
}

#[tokio::test]
async fn pods_start_pending_with_their_qos_class() {
    let s = Server::new("pods").await;
    for (name, resources, class) in [
        ("best", json!({}), "BestEffort"),
        (
            "guaranteed",
            json!({"limits": {"cpu": "1", "memory": "1Gi"}}),
            "Guaranteed",
        ),
        (
            "burstable",
            json!({"requests": {"cpu": "100m"}}),
            "Burstable",
        ),
    ] {
        let created = s.post(PODS, &pod(name, &json!({}), &resources)).await;
        assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
        assert_eq!(
            created.body["status"],
            json!({"phase": "Pending", "qosClass": class}),
            "{name}"
        );
    }
    // A client cannot pick the status of a new pod.
    let mut running = pod("sneaky", &json!({}), &json!({}));
    running["status"] = json!({"phase": "Running"});
    let created = s.post(PODS, &running).await;
    assert_eq!(created.body["status"]["phase"], "Pending");
}

#[tokio::test]
async fn pods_on_a_node_are_deleted_gracefully() {
    let s = Server::new("graceful").await;
    let mut bound = pod("bound", &json!({}), &json!({}));
    bound["spec"]["nodeName"] = json!("n1");
    assert_eq!(s.post(PODS, &bound).await.code, StatusCode::CREATED);
    let marked = s.delete(&format!("{PODS}/bound")).await;
    assert_eq!(marked.code, StatusCode::OK, "{}", marked.body);
    assert_eq!(marked.body["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(marked.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(s.get(&format!("{PODS}/bound")).await.code, StatusCode::OK);
    // The kubelet's final delete.
    let gone = s
        .delete(&format!("{PODS}/bound?gracePeriodSeconds=0"))
        .await;
    assert_eq!(gone.code, StatusCode::OK, "{}", gone.body);
    assert_eq!(
        s.get(&format!("{PODS}/bound")).await.code,
        StatusCode::NOT_FOUND
    );
    // Not on a node: gone at once.
    assert_eq!(
        s.post(PODS, &pod("unbound", &json!({}), &json!({})))
            .await
            .code,
        StatusCode::CREATED
    );
    assert_eq!(
        s.delete(&format!("{PODS}/unbound")).await.code,
        StatusCode::OK
    );
    assert_eq!(
        s.get(&format!("{PODS}/unbound")).await.code,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let s = Server::new("namespaces").await;
    let system = s.delete("/api/v1/namespaces/kube-system").await;
    assert_status(&system, StatusCode::FORBIDDEN, "Forbidden");

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    assert_eq!(
        s.post("/api/v1/namespaces", &ns).await.code,
        StatusCode::CREATED
    );
    let team_leases = "/apis/coordination.k8s.io/v1/namespaces/team/leases";
    assert_eq!(
        s.post(team_leases, &lease("l", "a")).await.code,
        StatusCode::CREATED
    );
    let marked = s.delete("/api/v1/namespaces/team").await;
    assert_eq!(marked.code, StatusCode::OK, "{}", marked.body);
    assert_eq!(marked.body["status"]["phase"], "Terminating");
    assert!(marked.body["metadata"]["deletionTimestamp"].is_string());
    s.wait_for("/api/v1/namespaces/team", StatusCode::NOT_FOUND)
        .await;
    assert_eq!(
        s.get(&format!("{team_leases}/l")).await.code,
        StatusCode::NOT_FOUND
    );
    // Nothing is created in a namespace that does not exist.
    let orphan = s.post(team_leases, &lease("m", "a")).await;
    assert_status(&orphan, StatusCode::NOT_FOUND, "NotFound");
}

#[tokio::test]
async fn selectors_come_from_the_query_string() {
    let s = Server::new("selectors").await;
    for (name, app) in [("p1", "a"), ("p2", "b"), ("p3", "c")] {
        let created = s
            .post(PODS, &pod(name, &json!({"app": app}), &json!({})))
            .await;
        assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    }
    let names = |a: &Answer| -> Vec<String> {
        assert_eq!(a.code, StatusCode::OK, "{}", a.body);
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&s.get(&format!("{PODS}?labelSelector=app%3Da")).await),
        ["p1"]
    );
    assert_eq!(
        names(
            &s.get(&format!("{PODS}?labelSelector=app+in+%28a%2Cc%29"))
                .await
        ),
        ["p1", "p3"]
    );
    assert_eq!(
        names(
            &s.get(&format!("{PODS}?fieldSelector=metadata.name%3Dp2"))
                .await
        ),
        ["p2"]
    );
    assert_eq!(
        names(
            &s.get("/api/v1/pods?fieldSelector=status.phase%3DPending&labelSelector=app%21%3Db")
                .await
        ),
        ["p1", "p3"]
    );
    let unknown = s.get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx")).await;
    assert_status(&unknown, StatusCode::BAD_REQUEST, "BadRequest");

    // deletecollection takes the same selectors.
    let deleted = s
        .call(
            Method::DELETE,
            &format!("{PODS}?labelSelector=app%3Db"),
            None,
        )
        .await;
    assert_eq!(names(&deleted), ["p2"]);
    assert_eq!(names(&s.get(PODS).await), ["p1", "p3"]);
}
