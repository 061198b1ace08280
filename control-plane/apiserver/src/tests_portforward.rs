//! pods/portforward through the router, before anything reaches a kubelet: who may ask,
//! which requests are refused, and discovery.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::handler::router;
use crate::test_api::test_api;

async fn call(
    app: &axum::Router,
    token: &str,
    method: Method,
    uri: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

const SPDY: [(&str, &str); 3] = [
    ("connection", "Upgrade"),
    ("upgrade", "SPDY/3.1"),
    ("x-stream-protocol-version", "portforward.k8s.io"),
];

#[tokio::test]
async fn portforward_is_the_admins_and_needs_an_upgrade() {
    let t = test_api("portforward", 100, &["n1"]).await;
    let app = router(t.api.clone());
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    let req = Request::post("/api/v1/namespaces/default/pods")
        .header(header::AUTHORIZATION, format!("Bearer {}", t.admin))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(pod.to_string()))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let uri = "/api/v1/namespaces/default/pods/web/portforward?ports=80";

    // A node may read pods but not reach into them.
    let (code, body) = call(&app, &t.nodes[0], Method::POST, uri, &SPDY).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot create resource \"pods/portforward\""),
        "{body}"
    );
    // No upgrade asked: refused before the pod is looked at.
    let (code, body) = call(&app, &t.admin, Method::POST, uri, &[]).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, _) = call(&app, &t.admin, Method::DELETE, uri, &SPDY).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, body) = call(
        &app,
        &t.admin,
        Method::POST,
        "/api/v1/namespaces/default/pods/web/portforward?ports=0",
        &SPDY,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    // A missing pod is the API's 404, in kubectl's words.
    let (code, body) = call(
        &app,
        &t.admin,
        Method::POST,
        "/api/v1/namespaces/default/pods/nope/portforward?ports=80",
        &SPDY,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "pods \"nope\" not found");
    // The node "n1" has no Node object here: nothing to forward to.
    let (code, _) = call(&app, &t.admin, Method::POST, uri, &SPDY).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    // Only pods have it.
    let (code, _) = call(
        &app,
        &t.admin,
        Method::POST,
        "/api/v1/namespaces/default/services/web/portforward",
        &SPDY,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let (code, list) = call(&app, &t.admin, Method::GET, "/api/v1", &[]).await;
    assert_eq!(code, StatusCode::OK);
    let pf = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/portforward")
        .expect("pods/portforward in discovery");
    assert_eq!(pf["kind"], "PodPortForwardOptions");
    assert_eq!(pf["verbs"], json!(["create", "get"]));
}
