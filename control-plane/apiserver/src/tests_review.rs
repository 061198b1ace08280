//! The review APIs (`kubectl auth can-i`, `auth can-i --list`, `auth whoami`) through
//! `handler::router` in-process, as the admin and as nodes; each answer checked against what
//! the real request does.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::test_api::{Answer, OneNode as Server, pod};

const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
const SSRR: &str = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
const SSR: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

impl Server {
    async fn call(&self, token: &str, method: Method, uri: &str, body: &Value) -> Answer {
        self.send(token, method, uri, "application/json", body)
            .await
    }

    /// Posts a review to `uri` (created, as Kubernetes answers); returns the answer's body.
    async fn review(&self, token: &str, uri: &str, body: &Value) -> Value {
        let a = self.call(token, Method::POST, uri, body).await;
        assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
        a.body
    }

    /// Posts a SelfSubjectAccessReview of these resource attributes; returns its status.
    async fn can_i(&self, token: &str, attrs: Value) -> Value {
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        });
        let a = self.review(token, SSAR, &body).await;
        assert_eq!(a["kind"], "SelfSubjectAccessReview");
        a["status"].clone()
    }

    async fn can_get_path(&self, token: &str, path: &str) -> bool {
        let body = json!({"spec": {"nonResourceAttributes": {"path": path, "verb": "get"}}});
        let a = self.review(token, SSAR, &body).await;
        a["status"]["allowed"].as_bool().unwrap()
    }

    async fn rules(&self, token: &str, ns: &str) -> Value {
        let body = json!({"apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview", "spec": {"namespace": ns}});
        self.review(token, SSRR, &body).await["status"].clone()
    }
}

/// The first rule for `resource` of `group` that `also` accepts.
fn rule_where<'a>(
    status: &'a Value,
    group: &str,
    resource: &str,
    also: impl Fn(&Value) -> bool,
) -> Option<&'a Value> {
    let has =
        |r: &Value, key: &str, want: &str| r[key].as_array().unwrap().iter().any(|x| x == want);
    status["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| also(r) && has(r, "apiGroups", group) && has(r, "resources", resource))
}

/// The rule listing `resource` (with its group's rules), if any.
fn rule_for<'a>(status: &'a Value, group: &str, resource: &str) -> Option<&'a Value> {
    rule_where(status, group, resource, |_| true)
}

/// The rule that names objects of `resource`, if any.
fn named_rule<'a>(status: &'a Value, group: &str, resource: &str) -> Option<&'a Value> {
    rule_where(status, group, resource, |r| {
        r.get("resourceNames").is_some()
    })
}

#[tokio::test]
async fn admin_may_do_everything() {
    let s = Server::new("review-admin").await;
    let st = s
        .can_i(
            &s.admin,
            json!({"namespace": "default", "verb": "create", "resource": "pods"}),
        )
        .await;
    assert_eq!(st["allowed"], true);
    let st = s
        .can_i(
            &s.admin,
            json!({"verb": "delete", "resource": "nodes", "name": "other"}),
        )
        .await;
    assert_eq!(st["allowed"], true);
    assert!(s.can_get_path(&s.admin, "/metrics").await);

    let rules = s.rules(&s.admin, "default").await;
    assert_eq!(
        rules["resourceRules"],
        json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
    );
    assert_eq!(
        rules["nonResourceRules"],
        json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}])
    );
    assert_eq!(rules["incomplete"], false);

    let who = s.call(&s.admin, Method::POST, SSR, &json!({})).await;
    assert_eq!(who.code, StatusCode::CREATED, "{}", who.body);
    assert_eq!(who.body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(who.body["kind"], "SelfSubjectReview");
    assert_eq!(
        who.body["status"]["userInfo"],
        json!({"username": "kproxy-admin", "groups": ["system:masters", "system:authenticated"]})
    );
}

#[tokio::test]
async fn node_answers_match_its_requests() {
    let s = Server::new("review-node").await;
    let pods = "/api/v1/namespaces/default/pods";
    for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
        let a = s.call(&s.admin, Method::POST, pods, &pod(name, node)).await;
        assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    }
    let yes = |st: &Value| st["allowed"] == true;

    // Its own Node, not another.
    let own = s
        .can_i(
            &s.n1,
            json!({"namespace": "default", "verb": "update", "resource": "nodes", "name": "n1"}),
        )
        .await;
    assert!(yes(&own), "{own}");
    let other = s
        .can_i(
            &s.n1,
            json!({"verb": "delete", "resource": "nodes", "name": "other"}),
        )
        .await;
    assert!(!yes(&other));
    let deploy = s
        .can_i(
            &s.n1,
            json!({"namespace": "default", "verb": "create", "group": "apps", "resource": "deployments"}),
        )
        .await;
    assert!(!yes(&deploy));
    let read = s
        .can_i(
            &s.n1,
            json!({"namespace": "default", "verb": "list", "group": "apps", "resource": "deployments"}),
        )
        .await;
    assert!(yes(&read));
    // Logs and commands reach kubelets: only the admin.
    let logs = s
        .can_i(
            &s.n1,
            json!({"namespace": "default", "verb": "get", "resource": "pods", "subresource": "log", "name": "mine"}),
        )
        .await;
    assert!(!yes(&logs));

    // The rules list: reads, its Node and its pods by name, its Lease only in kube-node-lease.
    let rules = s.rules(&s.n1, "default").await;
    assert_eq!(rules["incomplete"], false);
    let named = |status: &Value, group: &str, resource: &str| {
        named_rule(status, group, resource)
            .map(|r| (r["verbs"].clone(), r["resourceNames"].clone()))
    };
    assert_eq!(
        named(&rules, "", "nodes"),
        Some((
            json!(["create", "update", "patch", "delete"]),
            json!(["n1"])
        ))
    );
    assert_eq!(
        named(&rules, "", "pods/status"),
        Some((json!(["update", "patch"]), json!(["mine"])))
    );
    assert_eq!(named(&rules, "coordination.k8s.io", "leases"), None);
    let reads = rule_for(&rules, "apps", "deployments").unwrap();
    assert_eq!(reads["verbs"], json!(["get", "list", "watch"]));
    assert!(rule_for(&rules, "", "pods/log").is_none());
    let in_lease_ns = s.rules(&s.n1, "kube-node-lease").await;
    assert_eq!(
        named(&in_lease_ns, "coordination.k8s.io", "leases"),
        Some((
            json!(["create", "update", "patch", "delete"]),
            json!(["n1"])
        ))
    );
    assert_eq!(
        named(&in_lease_ns, "", "pods/status"),
        None,
        "no pod of n1 in kube-node-lease"
    );

    // Pods: resolved against the stored pod, like the request itself.
    let status = |name: &str| json!({"namespace": "default", "verb": "patch", "resource": "pods", "subresource": "status", "name": name});
    assert!(yes(&s.can_i(&s.n1, status("mine")).await));
    let theirs = s.can_i(&s.n1, status("theirs")).await;
    assert!(!yes(&theirs));
    assert_eq!(
        theirs["reason"],
        "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    );
    let missing = s.can_i(&s.n1, status("missing")).await;
    assert!(!yes(&missing));
    assert_eq!(missing["reason"], "pods \"missing\" not found");
    let delete = |name: &str| json!({"namespace": "default", "verb": "delete", "resource": "pods", "name": name});
    assert!(!yes(&s.can_i(&s.n1, delete("theirs")).await));
    let real = s
        .call(
            &s.n1,
            Method::DELETE,
            &format!("{pods}/theirs"),
            &Value::Null,
        )
        .await;
    assert_eq!(real.code, StatusCode::FORBIDDEN, "{}", real.body);
    assert!(yes(&s.can_i(&s.n1, delete("mine")).await));
    let real = s
        .call(&s.n1, Method::DELETE, &format!("{pods}/mine"), &Value::Null)
        .await;
    assert!(real.code.is_success(), "{}", real.body);

    // Non-resource URLs: discovery yes, /metrics no (and the real request is refused).
    assert!(s.can_get_path(&s.n1, "/apis/apps/v1").await);
    assert!(!s.can_get_path(&s.n1, "/metrics").await);
    let metrics = s.call(&s.n1, Method::GET, "/metrics", &Value::Null).await;
    assert_eq!(metrics.code, StatusCode::FORBIDDEN);

    let who = s.call(&s.n1, Method::POST, SSR, &json!({})).await;
    assert_eq!(
        who.body["status"]["userInfo"],
        json!({"username": "system:node:n1", "groups": ["system:nodes", "system:authenticated"]})
    );
}

#[tokio::test]
async fn bad_requests() {
    let s = Server::new("review-bad").await;
    let none = s
        .call(&s.admin, Method::POST, SSAR, &json!({"spec": {}}))
        .await;
    assert_eq!(none.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", none.body);
    assert_eq!(
        none.body["message"],
        "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: \
         Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
    );
    let both = s
        .call(
            &s.admin,
            Method::POST,
            SSAR,
            &json!({"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/x", "verb": "get"}}}),
        )
        .await;
    assert_eq!(both.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        both.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.nonResourceAttributes: Invalid value")
    );
    let typed = s
        .call(
            &s.admin,
            Method::POST,
            SSAR,
            &json!({"spec": {"resourceAttributes": "pods"}}),
        )
        .await;
    assert_eq!(typed.code, StatusCode::BAD_REQUEST, "{}", typed.body);
    assert!(
        typed.body["message"]
            .as_str()
            .unwrap()
            .starts_with("SelfSubjectAccessReview in version \"v1\" cannot be handled"),
        "{}",
        typed.body
    );
    let garbage = s
        .raw(
            &s.admin,
            Method::POST,
            SSAR,
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(garbage.code, StatusCode::BAD_REQUEST);
    let empty = s
        .raw(&s.admin, Method::POST, SSAR, "application/json", Vec::new())
        .await;
    assert_eq!(empty.code, StatusCode::BAD_REQUEST);
    let kind = s
        .call(
            &s.admin,
            Method::POST,
            SSAR,
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview"}),
        )
        .await;
    assert_eq!(kind.code, StatusCode::BAD_REQUEST);
    let version = s
        .call(&s.admin, Method::POST, SSR, &json!({"apiVersion": "v1"}))
        .await;
    assert_eq!(version.code, StatusCode::BAD_REQUEST);
    assert_eq!(
        version.body["message"],
        "the API version in the data (v1) does not match the expected API version (authentication.k8s.io/v1)"
    );
    let no_ns = s
        .call(&s.admin, Method::POST, SSRR, &json!({"spec": {}}))
        .await;
    assert_eq!(no_ns.code, StatusCode::BAD_REQUEST);
    assert_eq!(no_ns.body["message"], "no namespace on request");

    for (method, uri) in [
        (Method::GET, SSAR),
        (Method::PUT, SSRR),
        (Method::DELETE, SSR),
    ] {
        let a = s.call(&s.admin, method, uri, &Value::Null).await;
        assert_eq!(a.code, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(a.body["reason"], "MethodNotAllowed");
    }
    let anonymous = s.call("", Method::POST, SSR, &json!({})).await;
    assert_eq!(anonymous.code, StatusCode::UNAUTHORIZED);
    let bad_token = s.call("nope", Method::POST, SSAR, &json!({})).await;
    assert_eq!(bad_token.code, StatusCode::UNAUTHORIZED);
}

/// A length-delimited protobuf field.
fn field(num: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(num << 3) | 2, u8::try_from(bytes.len()).unwrap()];
    out.extend_from_slice(bytes);
    out
}

#[tokio::test]
async fn protobuf_body() {
    // What kubectl's typed client sends: "k8s\0" + runtime.Unknown{TypeMeta, raw}.
    let s = Server::new("review-protobuf").await;
    let attrs = [field(1, b"default"), field(2, b"create"), field(5, b"pods")].concat();
    let review = [field(1, &[]), field(2, &field(1, &attrs))].concat();
    let type_meta = [
        field(1, b"authorization.k8s.io/v1"),
        field(2, b"SelfSubjectAccessReview"),
    ]
    .concat();
    let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &review)].concat();
    for (token, allowed) in [(s.admin.clone(), true), (s.n1.clone(), false)] {
        let a = s
            .raw(
                &token,
                Method::POST,
                SSAR,
                "application/vnd.kubernetes.protobuf",
                body.clone(),
            )
            .await;
        assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.body["spec"]["resourceAttributes"]["resource"], "pods");
        assert_eq!(a.body["status"]["allowed"], allowed);
    }
}

#[tokio::test]
async fn discovery_lists_the_reviews() {
    let s = Server::new("review-discovery").await;
    let apis = s.call(&s.n1, Method::GET, "/apis", &Value::Null).await;
    let names: Vec<&str> = apis.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"authorization.k8s.io") && names.contains(&"authentication.k8s.io"));
    let authz = s
        .call(
            &s.n1,
            Method::GET,
            "/apis/authorization.k8s.io/v1",
            &Value::Null,
        )
        .await;
    assert_eq!(authz.code, StatusCode::OK);
    let ssar = authz.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "selfsubjectaccessreviews")
        .unwrap();
    assert_eq!(ssar["verbs"], json!(["create"]));
    assert_eq!(ssar["namespaced"], false);
    let group = s
        .call(
            &s.n1,
            Method::GET,
            "/apis/authentication.k8s.io",
            &Value::Null,
        )
        .await;
    assert_eq!(group.body["preferredVersion"]["version"], "v1");
    // Nodes may ask too: the reviews are in their rules.
    let rules = s.rules(&s.n1, "default").await;
    assert!(rule_for(&rules, "authentication.k8s.io", "selfsubjectreviews").is_some());
}
