//! The API server binary over real HTTPS (curl), issue 14's identity items: a token removed
//! from the token file is refused within seconds without a restart; a node cannot create
//! another node through its own name; a foreground delete of an owner cycle finishes (it used
//! to overflow the stack and abort the server). Unprivileged: loopback only.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use kproxy_tests::apiserver::{ApiServer, TempDir};
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

#[test]
fn a_revoked_token_is_refused_within_seconds() {
    let dir = TempDir::new("kpt-revoke");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let (t1, t2) = (s.node_token("n1"), s.node_token("n2"));
    let (n1, n2) = (h.with_token(Some(&t1)), h.with_token(Some(&t2)));
    assert_eq!(n1.get("/api/v1/nodes").code, 200);
    assert_eq!(n2.get("/api/v1/nodes").code, 200);

    let path = dir.path().join("tokens.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["nodes"].as_object_mut().unwrap().remove("n1");
    std::fs::write(&path, doc.to_string()).unwrap();
    let start = Instant::now();
    loop {
        let code = n1.get("/api/v1/nodes").code;
        if code == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the revoked token still answers {code} after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("revoked after {:?}", start.elapsed());
    assert_eq!(n2.get("/api/v1/nodes").code, 200, "other tokens still work");
    assert_eq!(h.get("/api/v1/nodes").code, 200, "the admin's too");
}

#[test]
fn a_node_cannot_create_another_node_through_its_own_name() {
    let dir = TempDir::new("kpt-noderestrict");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let t1 = s.node_token("n1");
    let n1 = h.with_token(Some(&t1));
    let node = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
               "spec": {"podCIDR": "10.99.0.0/16", "podCIDRs": ["10.99.0.0/16"]}})
    };
    let r = n1.post("/api/v1/nodes/n1", &node("n2"));
    assert!((400..500).contains(&r.code), "{} {}", r.code, r.body);
    assert_eq!(h.get("/api/v1/nodes/n2").code, 404, "n2 was created");
    assert_eq!(n1.post("/api/v1/nodes", &node("n1")).code, 201);
}

#[test]
fn foreground_delete_of_an_owner_cycle_finishes() {
    let dir = TempDir::new("kpt-gccycle");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
               "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})
    };
    let first = h.post(LEASES, &lease("a")).json();
    let second = h.post(LEASES, &lease("b")).json();
    for (this, owner) in [(&first, &second), (&second, &first)] {
        let name = this["metadata"]["name"].as_str().unwrap();
        let mut o = h.get(&format!("{LEASES}/{name}")).json();
        o["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        }]);
        let put = h.put(&format!("{LEASES}/{name}"), &o);
        assert_eq!(put.code, 200, "{}", put.body);
    }
    let start = Instant::now();
    let del = h
        .try_req(
            "DELETE",
            &format!("{LEASES}/a?propagationPolicy=Foreground"),
            "application/json",
            None,
        )
        .unwrap_or_else(|e| panic!("the API server did not answer the delete: {e}"));
    assert_eq!(del.code, 200, "{}", del.body);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(h.get(&format!("{LEASES}/a")).code, 404);
    assert_eq!(h.get(&format!("{LEASES}/b")).code, 404);
    assert_eq!(h.get("/healthz").code, 200, "the server is still up");
}
