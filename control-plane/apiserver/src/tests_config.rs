//! ConfigMaps and Secrets through `handler::router` in-process, over the memory store:
//! validation and its messages, the 1 MiB limit, stringData, immutability, the table
//! columns kubectl prints, and what a node may read.

use axum::http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::test_api::{Answer, OneNode, answer, pod, request};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

fn cm(name: &str, data: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn secret(name: &str, extra: &Value) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        s[k] = v.clone();
    }
    s
}

fn message(a: &Answer) -> &str {
    a.body["message"].as_str().unwrap_or_default()
}

impl OneNode {
    async fn admin(&self, method: Method, uri: &str, body: &Value) -> Answer {
        let ct = if method == Method::PATCH { MERGE } else { JSON };
        self.send(&self.admin, method, uri, ct, body).await
    }

    async fn table(&self, uri: &str) -> Value {
        let mut req = request(&self.admin, Method::GET, uri, JSON, Vec::new());
        req.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
        );
        let a = answer(&self.app, req).await;
        assert_eq!(a.code, StatusCode::OK, "{}", a.body);
        a.body
    }
}

fn column_names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn config_maps_are_validated_as_kubernetes_does() {
    let s = OneNode::new("cm-validate").await;
    let a = s
        .admin(
            Method::POST,
            CMS,
            &cm("app", &json!({"a.conf": "x=1", "MODE": "fast"})),
        )
        .await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    assert!(a.body["metadata"].get("generation").is_none());

    let a = s
        .admin(Method::POST, CMS, &cm("bad", &json!({"bad key": "1"})))
        .await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&a),
        "ConfigMap \"bad\" is invalid: data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
    );
    let a = s
        .admin(Method::POST, CMS, &cm("dots", &json!({"..": "1"})))
        .await;
    assert!(
        message(&a).ends_with("data[..]: Invalid value: \"..\": must not be '..'"),
        "{}",
        message(&a)
    );
    let mut both = cm("both", &json!({"k": "1"}));
    both["binaryData"] = json!({"k": "AQI="});
    let a = s.admin(Method::POST, CMS, &both).await;
    assert_eq!(
        message(&a),
        "ConfigMap \"both\" is invalid: [data[k]: Invalid value: \"k\": duplicate of key present in binaryData, binaryData[k]: Invalid value: \"k\": duplicate of key present in data]"
    );

    // 1 MiB of data is the most: data and binaryData count together.
    let mut full = cm("full", &json!({"a": "x".repeat(1024 * 1024 - 2)}));
    full["binaryData"] = json!({"b": "AQI="});
    assert_eq!(
        s.admin(Method::POST, CMS, &full).await.code,
        StatusCode::CREATED
    );
    let a = s
        .admin(
            Method::POST,
            CMS,
            &cm("big", &json!({"a": "x".repeat(1024 * 1024 + 1)})),
        )
        .await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&a),
        "ConfigMap \"big\" is invalid: : Too long: must have at most 1048576 bytes"
    );
    assert_eq!(
        a.body["details"]["causes"][0]["reason"],
        "FieldValueTooLong"
    );

    let t = s.table(CMS).await;
    assert_eq!(column_names(&t), ["Name", "Data", "Age"]);
    let row = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "app")
        .unwrap();
    assert_eq!(row["cells"][1], 2);
    let cm_short = s.admin(Method::GET, "/api/v1", &Value::Null).await;
    let res = cm_short.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "configmaps")
        .expect("configmaps in discovery")
        .clone();
    assert_eq!(res["shortNames"], json!(["cm"]));
}

#[tokio::test]
async fn immutable_config_maps_keep_their_data() {
    let s = OneNode::new("cm-immutable").await;
    let mut frozen = cm("frozen", &json!({"k": "1"}));
    frozen["immutable"] = json!(true);
    assert_eq!(
        s.admin(Method::POST, CMS, &frozen).await.code,
        StatusCode::CREATED
    );
    let uri = format!("{CMS}/frozen");
    let a = s
        .admin(Method::PATCH, &uri, &json!({"data": {"k": "2"}}))
        .await;
    assert_eq!(a.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        message(&a),
        "ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let a = s
        .admin(Method::PATCH, &uri, &json!({"immutable": false}))
        .await;
    assert!(
        message(&a).contains("immutable: Forbidden: field is immutable when `immutable` is set"),
        "{}",
        message(&a)
    );
    let a = s
        .admin(Method::PATCH, &uri, &json!({"binaryData": {"b": "AQI="}}))
        .await;
    assert!(
        message(&a).contains("binaryData: Forbidden"),
        "{}",
        message(&a)
    );
    // Metadata may change.
    let a = s
        .admin(
            Method::PATCH,
            &uri,
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    // A mutable one changes, and may become immutable.
    assert_eq!(
        s.admin(Method::POST, CMS, &cm("live", &json!({"k": "1"})))
            .await
            .code,
        StatusCode::CREATED
    );
    let a = s
        .admin(
            Method::PATCH,
            &format!("{CMS}/live"),
            &json!({"data": {"k": "2"}, "immutable": true}),
        )
        .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["data"]["k"], "2");
}

#[tokio::test]
async fn secrets_take_string_data_and_default_to_opaque() {
    let s = OneNode::new("secret-write").await;
    let body = secret(
        "creds",
        &json!({"data": {"user": "YWRtaW4=", "password": "b2xk"}, "stringData": {"password": "hunter2", "token": "t"}}),
    );
    let a = s.admin(Method::POST, SECRETS, &body).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let got = s
        .admin(Method::GET, &format!("{SECRETS}/creds"), &Value::Null)
        .await
        .body;
    assert_eq!(got["type"], "Opaque");
    assert!(got.get("stringData").is_none(), "stringData is write-only");
    // stringData wins over data for the same key; data is base64 on the wire.
    assert_eq!(
        got["data"],
        json!({"user": "YWRtaW4=", "password": "aHVudGVyMg==", "token": "dA=="})
    );
    // stringData on update too.
    let a = s
        .admin(
            Method::PATCH,
            &format!("{SECRETS}/creds"),
            &json!({"stringData": {"token": "u"}}),
        )
        .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["data"]["token"], "dQ==");
    assert_eq!(a.body["data"]["user"], "YWRtaW4=");

    let a = s
        .admin(
            Method::POST,
            SECRETS,
            &secret("b64", &json!({"data": {"k": "not base64!"}})),
        )
        .await;
    assert_eq!(a.code, StatusCode::BAD_REQUEST, "{}", a.body);

    let big = "x".repeat(1024 * 1024 + 1);
    let a = s
        .admin(
            Method::POST,
            SECRETS,
            &secret("big", &json!({"stringData": {"k": big}})),
        )
        .await;
    assert_eq!(
        message(&a),
        "Secret \"big\" is invalid: data: Too long: must have at most 1048576 bytes"
    );

    let t = s.table(SECRETS).await;
    assert_eq!(column_names(&t), ["Name", "Type", "Data", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "creds");
    assert_eq!(t["rows"][0]["cells"][1], "Opaque");
    assert_eq!(t["rows"][0]["cells"][2], 3);

    let by_type = s
        .admin(
            Method::GET,
            &format!("{SECRETS}?fieldSelector=type%3DOpaque"),
            &Value::Null,
        )
        .await;
    assert_eq!(by_type.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn secret_types_need_their_keys() {
    let server = OneNode::new("secret-types").await;
    let s = &server;
    let post = |name: &str, extra: Value| {
        let body = secret(name, &extra);
        async move { s.admin(Method::POST, SECRETS, &body).await }
    };
    let a = post(
        "tls",
        json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "c"}}),
    )
    .await;
    assert_eq!(
        message(&a),
        "Secret \"tls\" is invalid: data[tls.key]: Required value"
    );
    let a = post(
        "tls2",
        json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "c", "tls.key": "k"}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let a = post("docker", json!({"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "nope"}})).await;
    assert!(
        message(&a).starts_with("Secret \"docker\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": "),
        "{}",
        message(&a)
    );
    assert!(!message(&a).contains("nope"), "the value is not echoed");
    let a = post("docker2", json!({"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{\"auths\": {}}"}})).await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let a = post("basic", json!({"type": "kubernetes.io/basic-auth"})).await;
    assert_eq!(
        message(&a),
        "Secret \"basic\" is invalid: [data[username]: Required value, data[password]: Required value]"
    );
    let a = post(
        "basic2",
        json!({"type": "kubernetes.io/basic-auth", "stringData": {"password": ""}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let a = post(
        "ssh",
        json!({"type": "kubernetes.io/ssh-auth", "stringData": {"ssh-privatekey": ""}}),
    )
    .await;
    assert_eq!(
        message(&a),
        "Secret \"ssh\" is invalid: data[ssh-privatekey]: Required value"
    );
    let a = post("sa", json!({"type": "kubernetes.io/service-account-token"})).await;
    assert_eq!(
        message(&a),
        "Secret \"sa\" is invalid: metadata.annotations[kubernetes.io/service-account.name]: Required value"
    );

    // The type is fixed; an immutable secret keeps its data (stringData included).
    let a = post(
        "frozen",
        json!({"immutable": true, "stringData": {"k": "1"}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::CREATED);
    let uri = format!("{SECRETS}/frozen");
    let a = s
        .admin(Method::PATCH, &uri, &json!({"type": "kubernetes.io/tls"}))
        .await;
    assert!(
        message(&a).contains("type: Invalid value: \"kubernetes.io/tls\": field is immutable"),
        "{}",
        message(&a)
    );
    let a = s
        .admin(Method::PATCH, &uri, &json!({"stringData": {"k": "2"}}))
        .await;
    assert_eq!(
        message(&a),
        "Secret \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
}

#[tokio::test]
async fn a_node_reads_only_what_its_pods_use() {
    let server = OneNode::new("secret-node").await;
    let s = &server;
    for name in ["used", "unused"] {
        let a = s
            .admin(
                Method::POST,
                SECRETS,
                &secret(name, &json!({"stringData": {"k": "v"}})),
            )
            .await;
        assert_eq!(a.code, StatusCode::CREATED);
        let a = s
            .admin(Method::POST, CMS, &cm(name, &json!({"k": "v"})))
            .await;
        assert_eq!(a.code, StatusCode::CREATED);
    }
    let mut p = pod("web", "n1");
    p["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "used"}}]);
    p["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "used"}}]);
    assert_eq!(
        s.admin(Method::POST, "/api/v1/namespaces/default/pods", &p)
            .await
            .code,
        StatusCode::CREATED
    );
    let mut other = pod("elsewhere", "n2");
    other["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "unused"}}]);
    assert_eq!(
        s.admin(Method::POST, "/api/v1/namespaces/default/pods", &other)
            .await
            .code,
        StatusCode::CREATED
    );

    let get =
        |uri: String| async move { s.send(&s.n1, Method::GET, &uri, JSON, &Value::Null).await };
    assert_eq!(get(format!("{SECRETS}/used")).await.code, StatusCode::OK);
    assert_eq!(get(format!("{CMS}/used")).await.code, StatusCode::OK);
    let a = get(format!("{SECRETS}/unused")).await;
    assert_eq!(a.code, StatusCode::FORBIDDEN);
    assert_eq!(
        message(&a),
        "secrets \"unused\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
    );
    assert_eq!(
        get(format!("{CMS}/unused")).await.code,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(SECRETS.to_string()).await.code,
        StatusCode::FORBIDDEN,
        "no listing"
    );
    assert_eq!(
        get(format!("{SECRETS}?watch=true")).await.code,
        StatusCode::FORBIDDEN
    );
    // A referenced object that does not exist (yet) is a 404, so the kubelet can wait for it.
    let mut waiting = pod("waiting", "n1");
    waiting["spec"]["volumes"] = json!([{"name": "c", "configMap": {"name": "later"}}]);
    assert_eq!(
        s.admin(Method::POST, "/api/v1/namespaces/default/pods", &waiting)
            .await
            .code,
        StatusCode::CREATED
    );
    assert_eq!(
        get(format!("{CMS}/later")).await.code,
        StatusCode::NOT_FOUND
    );
    // Nodes still read everything else.
    assert_eq!(
        get("/api/v1/namespaces/default/pods".into()).await.code,
        StatusCode::OK
    );
}
