//! The API server over real HTTPS (curl): CRUD, conflicts, selectors, watch resume and 410,
//! the three patch kinds, validation errors, authentication and authorization, service address
//! allocation. Unprivileged: loopback only.
#![forbid(unsafe_code)]

use kproxy_tests::apiserver::{ApiServer, Http, TempDir};
use serde_json::{Value, json};

fn server(extra: &[&str]) -> (TempDir, ApiServer, Http) {
    let dir = TempDir::new("kpt-api");
    let s = ApiServer::start(dir.path(), extra);
    let h = s.http();
    (dir, s, h)
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the JSON inline as json! literals"
)]
fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "web", "image": "httpd", "ports": [{"containerPort": 80}]}]}
    })
}

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[test]
fn crud_conflicts_and_generate_name() {
    let (_d, _s, h) = server(&[]);
    let r = h.post(PODS, &pod("web-1", json!({"app": "web"})));
    assert_eq!(r.code, 201, "{}", r.body);
    let created = r.json();
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!created["metadata"]["uid"].as_str().unwrap().is_empty());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(
        created["spec"]["restartPolicy"], "Always",
        "defaults applied"
    );

    // Same name again: 409 AlreadyExists.
    let r = h.post(PODS, &pod("web-1", json!({})));
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    // generateName.
    let mut g = pod("", json!({}));
    g["metadata"] = json!({"generateName": "gen-"});
    let r = h.post(PODS, &g);
    assert_eq!(r.code, 201, "{}", r.body);
    let gen_name = r.json()["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        gen_name.starts_with("gen-") && gen_name.len() == 9,
        "{gen_name}"
    );

    // Get, then update with the current resourceVersion.
    let mut cur = h.get(&format!("{PODS}/web-1")).json();
    assert_eq!(cur["metadata"]["resourceVersion"], rv.as_str());
    cur["metadata"]["labels"]["tier"] = json!("front");
    let r = h.put(&format!("{PODS}/web-1"), &cur);
    assert_eq!(r.code, 200, "{}", r.body);
    let rv2 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rv, rv2);

    // A stale resourceVersion: 409 Conflict and nothing changes.
    cur["metadata"]["labels"]["tier"] = json!("back");
    let r = h.put(&format!("{PODS}/web-1"), &cur);
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (409, Some("Conflict")),
        "{}",
        r.body
    );
    let now = h.get(&format!("{PODS}/web-1")).json();
    assert_eq!(now["metadata"]["labels"]["tier"], "front");
    assert_eq!(now["metadata"]["resourceVersion"], rv2.as_str());

    // The status subresource changes only status; the main resource ignores status.
    let mut st = now.clone();
    st["status"]["phase"] = json!("Running");
    st["metadata"]["labels"]["tier"] = json!("ignored");
    let r = h.put(&format!("{PODS}/web-1/status"), &st);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["status"]["phase"], "Running");
    assert_eq!(r.json()["metadata"]["labels"]["tier"], "front");

    // List and delete.
    assert_eq!(
        names(&h.get(PODS).json()),
        vec![gen_name.clone(), "web-1".to_string()]
    );
    let r = h.delete(&format!("{PODS}/web-1"));
    assert_eq!(r.code, 200, "{}", r.body);
    let r = h.get(&format!("{PODS}/web-1"));
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    assert_eq!(r.json()["message"], "pods \"web-1\" not found");
    assert_eq!(h.delete(&format!("{PODS}/web-1")).code, 404);

    // System namespaces stay; others terminate and take their contents with them.
    let r = h.delete("/api/v1/namespaces/default");
    assert_eq!(r.code, 403, "{}", r.body);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}});
    assert_eq!(h.post("/api/v1/namespaces", &ns).code, 201);
    assert_eq!(
        h.post(
            "/api/v1/namespaces/scratch/pods",
            &pod("in-scratch", json!({}))
        )
        .code,
        201
    );
    let r = h.delete("/api/v1/namespaces/scratch");
    assert_eq!(
        (r.code, r.json()["status"]["phase"].as_str()),
        (200, Some("Terminating")),
        "{}",
        r.body
    );
    kproxy_tests::eventually("namespace scratch and its pod are gone", || {
        h.get("/api/v1/namespaces/scratch").code == 404
            && h.get("/api/v1/namespaces/scratch/pods/in-scratch").code == 404
    });

    // Namespaces must exist.
    let r = h.post("/api/v1/namespaces/nope/pods", &pod("x", json!({})));
    assert_eq!(r.code, 404, "{}", r.body);
}

#[test]
fn label_and_field_selectors() {
    let (_d, _s, h) = server(&[]);
    for (n, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
    ] {
        assert_eq!(h.post(PODS, &pod(n, labels)).code, 201);
    }
    let sel = |q: &str| names(&h.get(&format!("{PODS}?labelSelector={q}")).json());
    assert_eq!(sel("app%3Dweb"), ["a", "b"]);
    assert_eq!(sel("app!%3Dweb"), ["c"]);
    assert_eq!(sel("tier%20in%20(front,middle)"), ["a"]);
    assert_eq!(sel("tier%20notin%20(front)"), ["b", "c"]);
    assert_eq!(sel("tier"), ["a", "b"]);
    assert_eq!(sel("!tier"), ["c"]);
    assert_eq!(sel("app%3Dweb,tier%3Dback"), ["b"]);
    let r = h.get(&format!("{PODS}?labelSelector=app%20in%20(web"));
    assert_eq!(r.code, 400, "{}", r.body);

    // Bind one pod to a node, mark another Running.
    let r = h.post(
        &format!("{PODS}/a/binding"),
        &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "a"}, "target": {"kind": "Node", "name": "n1"}}),
    );
    assert_eq!(r.code, 201, "{}", r.body);
    let r = h.post(
        &format!("{PODS}/a/binding"),
        &json!({"target": {"kind": "Node", "name": "n2"}}),
    );
    assert_eq!(r.code, 409, "binding twice: {}", r.body);
    let r = h.patch(
        &format!("{PODS}/b/status"),
        "application/merge-patch+json",
        r#"{"status":{"phase":"Running"}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    let f = |q: &str| names(&h.get(&format!("/api/v1/pods?fieldSelector={q}")).json());
    assert_eq!(f("spec.nodeName%3Dn1"), ["a"]);
    assert_eq!(f("spec.nodeName%3D"), ["b", "c"]);
    assert_eq!(f("status.phase%3DRunning"), ["b"]);
    assert_eq!(f("status.phase!%3DRunning,metadata.name!%3Dc"), ["a"]);
    assert_eq!(f("metadata.namespace%3Ddefault").len(), 3);
    assert_eq!(f("metadata.namespace%3Dkube-system").len(), 0);
    let r = h.get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx"));
    assert_eq!(r.code, 400, "{}", r.body);
}

#[test]
fn patches_of_all_three_kinds() {
    let (_d, _s, h) = server(&[]);
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "httpd:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "side", "image": "kecho:1"}
                ]}
            }
        }
    });
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let r = h.post(path, &deploy);
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.json()["metadata"]["generation"], 1);
    let web = format!("{path}/web");

    // Strategic merge: the container list merges by name (kubectl set image).
    let r = h.patch(
        &web,
        "application/strategic-merge-patch+json",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"httpd:2"}]}}}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    let c = &r.json()["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().unwrap().len(), 2);
    assert_eq!(c[0]["image"], "httpd:2");
    assert_eq!(
        c[0]["env"][0]["name"], "A",
        "fields not in the patch are kept"
    );
    assert_eq!(c[1]["name"], "side");
    assert_eq!(
        r.json()["metadata"]["generation"],
        2,
        "spec change bumps generation"
    );

    // JSON merge patch replaces lists and deletes with null.
    let r = h.patch(
        &web,
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":"y"}},"spec":{"replicas":5}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        (
            r.json()["spec"]["replicas"].as_i64(),
            r.json()["metadata"]["labels"]["x"].as_str()
        ),
        (Some(5), Some("y"))
    );
    let r = h.patch(
        &web,
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":null}}}"#,
    );
    assert!(
        r.json()["metadata"]["labels"].get("x").is_none(),
        "{}",
        r.body
    );

    // JSON patch, including a failing test op that changes nothing.
    let r = h.patch(
        &web,
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    );
    assert_eq!(
        (r.code, r.json()["spec"]["replicas"].as_i64()),
        (200, Some(3)),
        "{}",
        r.body
    );
    let r = h.patch(&web, "application/json-patch+json", r#"[{"op":"test","path":"/spec/replicas","value":9},{"op":"replace","path":"/spec/replicas","value":7}]"#);
    assert!(r.code >= 400, "{}", r.body);
    assert_eq!(h.get(&web).json()["spec"]["replicas"], 3);

    // Malformed patch bodies and unknown patch types.
    assert_eq!(
        h.patch(&web, "application/merge-patch+json", "{nope").code,
        400
    );
    assert_eq!(
        h.patch(&web, "application/json-patch+json", r#"{"op":"add"}"#)
            .code,
        400
    );
    assert_eq!(h.patch(&web, "text/plain", "{}").code, 415);

    // A patch that makes the object invalid: 422, nothing stored.
    let r = h.patch(
        &web,
        "application/merge-patch+json",
        r#"{"spec":{"replicas":-1}}"#,
    );
    assert_eq!(r.code, 422, "{}", r.body);
    assert_eq!(h.get(&web).json()["spec"]["replicas"], 3);

    // Scale subresource.
    let r = h.get(&format!("{web}/scale"));
    assert_eq!(
        (
            r.json()["kind"].as_str(),
            r.json()["spec"]["replicas"].as_i64()
        ),
        (Some("Scale"), Some(3))
    );
    assert_eq!(r.json()["status"]["selector"], "app=web");
    let r = h.patch(
        &format!("{web}/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":6}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(h.get(&web).json()["spec"]["replicas"], 6);
    let r = h.patch(
        &format!("{web}/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":-2}}"#,
    );
    assert_eq!(r.code, 422, "{}", r.body);
}

#[test]
fn validation_errors_store_nothing() {
    let (_d, _s, h) = server(&[]);
    let before = h.get(PODS).json()["metadata"]["resourceVersion"].clone();

    let r = h.req("POST", PODS, "application/json", Some(b"{\"metadata\": "));
    assert_eq!(
        (r.code, r.json()["kind"].as_str()),
        (400, Some("Status")),
        "{}",
        r.body
    );
    let r = h.req("POST", PODS, "application/yaml", Some(b"metadata: [\n"));
    assert_eq!(r.code, 400, "{}", r.body);
    let r = h.req("POST", PODS, "application/json", Some(b"[]"));
    assert_eq!(r.code, 400, "{}", r.body);

    let r = h.post(PODS, &pod("Bad_Name", json!({})));
    assert_eq!(r.code, 422, "{}", r.body);
    assert_eq!(r.json()["reason"], "Invalid");
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.name");

    let r = h.post(PODS, &pod("ok", json!({"bad key!": "v"})));
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(
        r.json()["details"]["causes"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("metadata.labels")
    );

    let mut p = pod("ok", json!({}));
    p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(70000);
    let r = h.post(PODS, &p);
    assert_eq!(r.code, 422, "{}", r.body);
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        "spec.containers[0].ports[0].containerPort"
    );

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 0}], "selector": {"app": "web"}}});
    let r = h.post("/api/v1/namespaces/default/services", &svc);
    assert_eq!(r.code, 422, "{}", r.body);
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        "spec.ports[0].port"
    );

    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let r = h.post("/apis/apps/v1/namespaces/default/deployments", &deploy);
    assert_eq!(r.code, 422, "selector must match template: {}", r.body);

    // Wrong kind for the URL, wrong types.
    let mut wrong = pod("ok", json!({}));
    wrong["kind"] = json!("Service");
    assert_eq!(h.post(PODS, &wrong).code, 400);
    let mut typed = pod("ok", json!({}));
    typed["spec"]["containers"] = json!("not a list");
    assert_eq!(h.post(PODS, &typed).code, 400);

    // fieldValidation=Strict (kubectl's default) rejects unknown fields; without it they are dropped.
    let mut typo = pod("typo", json!({}));
    typo["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let r = h.post(&format!("{PODS}?fieldValidation=Strict"), &typo);
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.containers[0].imagePullPolicyy\""),
        "{}",
        r.body
    );

    // Unknown resources and paths.
    assert_eq!(h.get("/api/v1/namespaces/default/widgets").code, 404);
    assert_eq!(h.get("/apis/nope.example.com/v1/things").code, 404);
    assert_eq!(h.get("/api/v1/namespaces/default/pods/x/bogus").code, 404);

    // Oversized body: 413.
    let mut big = pod("big", json!({}));
    big["metadata"]["annotations"] = json!({"a": "x".repeat(4 * 1024 * 1024)});
    let r = h.post(PODS, &big);
    assert_eq!(r.code, 413, "{}", &r.body[..r.body.len().min(300)]);

    let after = h.get(PODS).json();
    assert_eq!(
        after["metadata"]["resourceVersion"], before,
        "nothing was written"
    );
    assert!(after["items"].as_array().unwrap().is_empty());

    let r = h.post(PODS, &typo);
    assert_eq!(r.code, 201, "{}", r.body);
    assert!(
        r.json()["spec"]["containers"][0]
            .get("imagePullPolicyy")
            .is_none()
    );
}

#[test]
fn authentication_and_node_authorization() {
    let (_d, s, h) = server(&[]);
    assert_eq!(h.with_token(None).get(PODS).code, 401);
    let r = h.with_token(Some("wrong")).get(PODS);
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    assert_eq!(
        h.with_token(None).get("/version").code,
        200,
        "version is public"
    );
    assert_eq!(h.with_token(None).get("/healthz").code, 200);

    let t1 = s.node_token("n1");
    let n1 = h.with_token(Some(&t1));
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"capacity": {"cpu": "2"}}});
    assert_eq!(n1.post("/api/v1/nodes", &node("n1")).code, 201);
    assert_eq!(n1.post("/api/v1/nodes", &node("n2")).code, 403);
    let r = n1.patch(
        "/api/v1/nodes/n1/status",
        "application/merge-patch+json",
        r#"{"status":{"capacity":{"cpu":"4"}}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(n1.get("/api/v1/pods").code, 200, "nodes read");
    let r = n1.post(
        "/api/v1/namespaces/default/services",
        &json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
    );
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (403, Some("Forbidden"))
    );
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}});
    assert_eq!(
        n1.post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            &lease
        )
        .code,
        201
    );
    let mut other = lease.clone();
    other["metadata"]["name"] = json!("n2");
    assert_eq!(
        n1.post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            &other
        )
        .code,
        403
    );

    // Pod status only for pods bound to this node.
    for (name, nodename) in [("on-n1", "n1"), ("on-n2", "n2")] {
        let mut p = pod(name, json!({}));
        p["spec"]["nodeName"] = json!(nodename);
        assert_eq!(h.post(PODS, &p).code, 201);
    }
    let st = r#"{"status":{"phase":"Running"}}"#;
    assert_eq!(
        n1.patch(
            &format!("{PODS}/on-n1/status"),
            "application/merge-patch+json",
            st
        )
        .code,
        200
    );
    assert_eq!(
        n1.patch(
            &format!("{PODS}/on-n2/status"),
            "application/merge-patch+json",
            st
        )
        .code,
        403
    );
    assert_eq!(
        n1.patch(
            &format!("{PODS}/on-n1"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"a":"b"}}}"#
        )
        .code,
        403
    );
    assert_eq!(n1.get("/metrics").code, 403);
    let m = h.get("/metrics");
    assert!(
        m.code == 200 && m.body.contains("apiserver_request_total"),
        "{}",
        m.body
    );
}

fn svc(name: &str, ty: &str, cluster_ip: Option<&str>, node_port: Option<u16>) -> Value {
    let mut port = json!({"port": 80, "targetPort": 8080});
    if let Some(np) = node_port {
        port["nodePort"] = json!(np);
    }
    let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": ty, "selector": {"app": name}, "ports": [port]}});
    if let Some(ip) = cluster_ip {
        s["spec"]["clusterIP"] = json!(ip);
    }
    s
}

const SVCS: &str = "/api/v1/namespaces/default/services";

#[test]
fn service_addresses_are_allocated_once_and_released() {
    let dir = TempDir::new("kpt-api");
    let mut s = ApiServer::start(dir.path(), &[]);
    let h = s.http();

    let r = h.post(SVCS, &svc("auto", "ClusterIP", None, None));
    assert_eq!(r.code, 201, "{}", r.body);
    let ip: std::net::Ipv4Addr = r.json()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ip.octets()[0], 10);
    assert!((96..112).contains(&ip.octets()[1]), "{ip} in 10.96.0.0/12");
    assert_eq!(r.json()["spec"]["clusterIPs"][0], ip.to_string());
    assert!(r.json()["spec"]["ports"][0].get("nodePort").is_none());

    let r = h.post(SVCS, &svc("fixed", "ClusterIP", Some("10.96.7.7"), None));
    assert_eq!(
        (r.code, r.json()["spec"]["clusterIP"].as_str()),
        (201, Some("10.96.7.7")),
        "{}",
        r.body
    );
    let r = h.post(SVCS, &svc("dup", "ClusterIP", Some("10.96.7.7"), None));
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(r.body.contains("already allocated"), "{}", r.body);
    let r = h.post(
        SVCS,
        &svc("outside", "ClusterIP", Some("192.168.1.1"), None),
    );
    assert_eq!(r.code, 422, "{}", r.body);

    let r = h.post(SVCS, &svc("np", "NodePort", None, None));
    assert_eq!(r.code, 201, "{}", r.body);
    let np = r.json()["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&np));
    let r = h.post(
        SVCS,
        &svc(
            "np2",
            "LoadBalancer",
            None,
            Some(u16::try_from(np).unwrap()),
        ),
    );
    assert_eq!(r.code, 422, "node port taken: {}", r.body);
    // A fixed port for the rest of the test, one the random allocation above did not take.
    let fixed: u16 = if np == 31999 { 31998 } else { 31999 };
    let r = h.post(SVCS, &svc("np3", "NodePort", None, Some(fixed)));
    assert_eq!(
        (r.code, r.json()["spec"]["ports"][0]["nodePort"].as_u64()),
        (201, Some(u64::from(fixed))),
        "{}",
        r.body
    );
    let r = h.post(SVCS, &svc("np4", "NodePort", None, Some(40000)));
    assert_eq!(r.code, 422, "{}", r.body);

    // Survives a restart: the same addresses stay taken.
    s.daemon.terminate();
    drop(s);
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    assert_eq!(
        h.post(SVCS, &svc("dup", "ClusterIP", Some("10.96.7.7"), None))
            .code,
        422
    );
    assert_eq!(
        h.post(SVCS, &svc("np5", "NodePort", None, Some(fixed)))
            .code,
        422
    );

    // Released on delete.
    assert_eq!(h.delete(&format!("{SVCS}/fixed")).code, 200);
    assert_eq!(h.delete(&format!("{SVCS}/np3")).code, 200);
    let r = h.post(
        SVCS,
        &svc("again", "NodePort", Some("10.96.7.7"), Some(fixed)),
    );
    assert_eq!(r.code, 201, "{}", r.body);

    // Type change NodePort -> ClusterIP releases the port; the ClusterIP is immutable.
    let r = h.patch(
        &format!("{SVCS}/again"),
        "application/merge-patch+json",
        r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"targetPort":8080}]}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["spec"]["clusterIP"], "10.96.7.7");
    assert_eq!(
        h.post(SVCS, &svc("np6", "NodePort", None, Some(fixed)))
            .code,
        201
    );
    let r = h.patch(
        &format!("{SVCS}/again"),
        "application/merge-patch+json",
        r#"{"spec":{"clusterIP":"10.96.8.8"}}"#,
    );
    assert_eq!(r.code, 422, "{}", r.body);

    // Many services: every ClusterIP distinct.
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let r = h.post(SVCS, &svc(&format!("many-{i}"), "NodePort", None, None));
        assert_eq!(r.code, 201, "{}", r.body);
        assert!(seen.insert(r.json()["spec"]["clusterIP"].as_str().unwrap().to_string()));
        assert!(seen.insert(r.json()["spec"]["ports"][0]["nodePort"].to_string()));
    }
}

#[test]
fn watch_resume_bookmarks_and_gone() {
    // The window is the store's history on redb and the watch cache's on etcd.
    let (_d, _s, h) = server(&["--history", "20", "--watch-cache-events", "20"]);
    let start = h.get(PODS).json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        assert_eq!(h.post(PODS, &pod(&format!("w{i}"), json!({}))).code, 201);
    }
    assert_eq!(h.delete(&format!("{PODS}/w1")).code, 200);
    // Resume from the list's revision: exactly the four changes, in order; then the watch ends
    // at its timeout.
    let r = h.get(&format!(
        "{PODS}?watch=true&resourceVersion={start}&timeoutSeconds=1"
    ));
    assert_eq!(r.code, 200);
    let events: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ADDED", "w0"),
            ("ADDED", "w1"),
            ("ADDED", "w2"),
            ("DELETED", "w1")
        ]
    );
    let rvs = kproxy_tests::apiserver::resource_versions(&events);
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");

    // From the middle: only what came after.
    let r = h.get(&format!(
        "{PODS}?watch=1&resourceVersion={}&timeoutSeconds=1",
        rvs[1]
    ));
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);

    // Without a resourceVersion: current state as ADDED; label selectors apply.
    let r = h.get(&format!(
        "{PODS}?watch=1&timeoutSeconds=1&labelSelector=none%3Dx"
    ));
    assert_eq!(r.body.lines().count(), 0, "{}", r.body);
    let r = h.get(&format!("{PODS}?watch=1&timeoutSeconds=1"));
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);

    // Bookmarks when asked for.
    let r = h.get(&format!(
        "{PODS}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=7",
        rvs[3]
    ));
    assert!(
        r.body.lines().any(|l| l.contains("\"BOOKMARK\"")),
        "{}",
        r.body
    );

    // Push the start out of the 20-event history: 410 Gone as an ERROR event.
    for i in 0..30 {
        let r = h.patch(
            &format!("{PODS}/w0"),
            "application/merge-patch+json",
            &format!(r#"{{"metadata":{{"labels":{{"i":"{i}"}}}}}}"#),
        );
        assert_eq!(r.code, 200, "{}", r.body);
    }
    let r = h.get(&format!(
        "{PODS}?watch=1&resourceVersion={start}&timeoutSeconds=1"
    ));
    let first: Value = serde_json::from_str(r.body.lines().next().expect("an event")).unwrap();
    assert_eq!(first["type"], "ERROR");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");

    // A modification that moves an object out of a label selection is a DELETED for that watch.
    let cur = h.get(PODS).json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let relabel = h.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        relabel.patch(
            &format!("{PODS}/w2"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"sel":"yes"}}}"#,
        );
        relabel.patch(
            &format!("{PODS}/w2"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"sel":"no"}}}"#,
        );
    });
    let r = h.get(&format!(
        "{PODS}?watch=1&resourceVersion={cur}&timeoutSeconds=2&labelSelector=sel%3Dyes"
    ));
    t.join().unwrap();
    let types: Vec<String> = r
        .body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["ADDED", "DELETED"], "{}", r.body);
}

#[test]
fn discovery_version_and_tables() {
    let (_d, _s, h) = server(&[]);
    let v = h.get("/version").json();
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("33"))
    );
    let core = h.get("/api/v1").json();
    assert!(
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods" && r["shortNames"][0] == "po")
    );
    let groups = h.get("/apis").json();
    for g in ["apps", "discovery.k8s.io", "coordination.k8s.io"] {
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == g),
            "{g}"
        );
    }
    assert_eq!(h.get("/apis/apps/v1").json()["groupVersion"], "apps/v1");
    assert_eq!(h.get("/apis/apps/v9").code, 404);
    let ns = h.get("/api/v1/namespaces").json();
    assert_eq!(
        names(&ns),
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    assert_eq!(
        h.post(
            SVCS,
            &svc("web", "NodePort", Some("10.96.0.50"), Some(30080))
        )
        .code,
        201
    );
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--cacert"])
        .arg(&h.ca)
        .args([
            "-H",
            &format!("Authorization: Bearer {}", h.token.as_deref().unwrap()),
        ])
        .args([
            "-H",
            "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ])
        .arg(format!("{}{SVCS}", h.url));
    let t: Value = serde_json::from_str(&kproxy_tests::sh(&mut cmd)).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &cols[..6],
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age"
        ]
    );
    let cells = &t["rows"][0]["cells"];
    assert_eq!(
        (cells[0].as_str(), cells[1].as_str(), cells[2].as_str()),
        (Some("web"), Some("NodePort"), Some("10.96.0.50"))
    );
    assert_eq!(cells[4], "80:30080/TCP");
}

#[test]
fn deletion_propagates_along_owner_references() {
    let (_d, _s, h) = server(&[]);
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let owner = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    };
    let owned = |name: &str, owner: &Value| {
        let mut p = pod(name, json!({}));
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true}]);
        p
    };
    for (mode, query) in [
        ("background", ""),
        ("foreground", "?propagationPolicy=Foreground"),
        ("orphan", "?propagationPolicy=Orphan"),
    ] {
        let o = h.post(deploys, &owner(mode)).json();
        let child = format!("{mode}-child");
        assert_eq!(h.post(PODS, &owned(&child, &o)).code, 201);
        let r = h.delete(&format!("{deploys}/{mode}{query}"));
        assert_eq!(r.code, 200, "{}", r.body);
        if mode == "orphan" {
            let p = h.get(&format!("{PODS}/{child}"));
            assert_eq!(p.code, 200, "orphans stay: {}", p.body);
            assert!(
                p.json()["metadata"]
                    .get("ownerReferences")
                    .is_none_or(|r| r.as_array().unwrap().is_empty()),
                "{}",
                p.body
            );
        } else {
            kproxy_tests::eventually(&format!("{mode}: dependent deleted"), || {
                h.get(&format!("{PODS}/{child}")).code == 404
            });
        }
    }
    let r = h.delete(&format!("{deploys}/x?propagationPolicy=Sideways"));
    assert_eq!(r.code, 422, "{}", r.body);

    // A child created after its owner is gone (a controller acting on a stale cache) is
    // collected, as Kubernetes' garbage collector does; one with a live owner stays.
    let gone = json!({"metadata": {"name": "gone", "uid": "no-such-uid"}});
    assert_eq!(h.post(PODS, &owned("late-child", &gone)).code, 201);
    let live = h.post(deploys, &owner("live")).json();
    assert_eq!(h.post(PODS, &owned("live-child", &live)).code, 201);
    kproxy_tests::eventually("a child without owners is collected", || {
        h.get(&format!("{PODS}/late-child")).code == 404
    });
    assert_eq!(h.get(&format!("{PODS}/live-child")).code, 200);
}
