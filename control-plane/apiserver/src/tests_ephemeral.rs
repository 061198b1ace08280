//! `pods/ephemeralcontainers` through `handler::router` in-process: what `kubectl debug`
//! sends, what the subresource leaves alone, and the 422s of Kubernetes' validation.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::test_api::{Answer, OneNode as Server};

const POD: &str = "/api/v1/namespaces/default/pods/web";
const EPH: &str = "/api/v1/namespaces/default/pods/web/ephemeralcontainers";
const SMP: &str = "application/strategic-merge-patch+json";

impl Server {
    /// The router with pod `web` on node n1.
    async fn with_web(name: &str) -> Server {
        let s = Server::new(&format!("ephemeral-{name}")).await;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "kproxy/httpd:1"}]},
        });
        let r = s.create(&pod).await;
        assert_eq!(r.code, StatusCode::CREATED, "{}", r.body);
        s
    }

    /// Creates `pod` in namespace default, as the admin.
    async fn create(&self, pod: &Value) -> Answer {
        let uri = "/api/v1/namespaces/default/pods";
        self.send(&self.admin, Method::POST, uri, "application/json", pod)
            .await
    }

    async fn patch(&self, body: &Value) -> Answer {
        self.send(&self.admin, Method::PATCH, EPH, SMP, body).await
    }
}

/// What kubectl 1.33's `debug pod/web -i --image=kproxy/busybox:1 --target=main` patches.
fn debugger(name: &str) -> Value {
    json!({"spec": {"ephemeralContainers": [{
        "name": name, "image": "kproxy/busybox:1", "stdin": true,
        "terminationMessagePolicy": "File", "targetContainerName": "main", "resources": {},
    }]}})
}

#[tokio::test]
async fn kubectl_debug_adds_a_container_and_nothing_else() {
    let s = Server::with_web("add").await;
    let r = s.patch(&debugger("debugger-a")).await;
    assert_eq!(r.code, StatusCode::OK, "{}", r.body);
    let ec = &r.body["spec"]["ephemeralContainers"][0];
    assert_eq!(ec["name"], "debugger-a");
    assert_eq!(ec["targetContainerName"], "main");
    assert_eq!(
        ec["imagePullPolicy"], "IfNotPresent",
        "defaulted like a container"
    );
    // A second debug container merges by name: both stay (kubectl's two-way patch orders
    // them).
    let mut second = debugger("debugger-b");
    second["spec"]["$setElementOrder/ephemeralContainers"] =
        json!([{"name": "debugger-a"}, {"name": "debugger-b"}]);
    let r = s.patch(&second).await;
    assert_eq!(r.code, StatusCode::OK, "{}", r.body);
    let names: Vec<&str> = r.body["spec"]["ephemeralContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["debugger-a", "debugger-b"]);
    // GET on the subresource is the pod.
    let got = s.send(&s.admin, Method::GET, EPH, "", &Value::Null).await;
    assert_eq!(got.code, StatusCode::OK);
    assert_eq!(got.body["kind"], "Pod");
    assert_eq!(
        got.body["spec"]["ephemeralContainers"],
        r.body["spec"]["ephemeralContainers"]
    );

    // Through the subresource the rest of the spec does not change.
    let mut put = got.body.clone();
    put["spec"]["containers"][0]["image"] = json!("other");
    put["metadata"]["labels"] = json!({"x": "y"});
    let r = s
        .send(&s.admin, Method::PUT, EPH, "application/json", &put)
        .await;
    assert_eq!(r.code, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["containers"][0]["image"], "kproxy/httpd:1");
    assert!(r.body["metadata"].get("labels").is_none());
}

#[tokio::test]
async fn invalid_ephemeral_containers_are_422_naming_the_field() {
    let s = Server::with_web("invalid").await;
    let mut ports = debugger("d");
    ports["spec"]["ephemeralContainers"][0]["ports"] = json!([{"containerPort": 80}]);
    let r = s.patch(&ports).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "Pod \"web\" is invalid: spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container"
    );
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.ephemeralContainers[0].ports"
    );
    // The cause without its field: kubectl prints `field: message`.
    assert_eq!(
        r.body["details"]["causes"][0]["message"],
        "Forbidden: cannot be set for an Ephemeral Container"
    );

    let r = s.patch(&debugger("main")).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["message"],
        "Pod \"web\" is invalid: spec.ephemeralContainers[0].name: Duplicate value: \"main\""
    );
    let mut target = debugger("d");
    target["spec"]["ephemeralContainers"][0]["targetContainerName"] = json!("nope");
    let r = s.patch(&target).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["message"],
        "Pod \"web\" is invalid: spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\""
    );

    // Existing ones may be neither changed nor removed.
    assert_eq!(s.patch(&debugger("d")).await.code, StatusCode::OK);
    let mut changed = debugger("d");
    changed["spec"]["ephemeralContainers"][0]["image"] = json!("kproxy/httpd:1");
    let r = s.patch(&changed).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.ephemeralContainers[d]"
    );
    let r = s
        .send(
            &s.admin,
            Method::PATCH,
            EPH,
            "application/merge-patch+json",
            &json!({"spec": {"ephemeralContainers": null}}),
        )
        .await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("existing ephemeral containers \"d\" may not be removed"),
        "{}",
        r.body
    );
    // Not on create either.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other"},
        "spec": {"containers": [{"name": "c", "image": "x"}],
                 "ephemeralContainers": [{"name": "d", "image": "x"}]},
    });
    let r = s.create(&pod).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.ephemeralContainers"
    );
}

#[tokio::test]
async fn the_pods_node_may_not_add_one() {
    let s = Server::with_web("node").await;
    let r = s.send(&s.n1, Method::PATCH, EPH, SMP, &debugger("d")).await;
    assert_eq!(r.code, StatusCode::FORBIDDEN, "{}", r.body);
    let r = s.send(&s.admin, Method::GET, POD, "", &Value::Null).await;
    assert!(r.body["spec"].get("ephemeralContainers").is_none());
    // Served in discovery, as kubectl checks.
    let r = s
        .send(&s.admin, Method::GET, "/api/v1", "", &Value::Null)
        .await;
    let names: Vec<&str> = r.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(names.contains(&"pods/ephemeralcontainers") && names.contains(&"pods/attach"));
}
