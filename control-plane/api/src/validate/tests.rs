use serde_json::{Value, json};

use super::*;
use crate::defaults::apply_defaults;

fn defaulted(kind: &str, mut obj: Value) -> Value {
    apply_defaults(kind, &mut obj);
    obj
}

/// The field errors of a create (after defaulting, as the server runs it).
fn errors(kind: &str, obj: Value) -> Vec<FieldError> {
    match validate(kind, &defaulted(kind, obj), None) {
        Err(Invalid::Fields(errs)) => errs,
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn messages(kind: &str, obj: Value) -> Vec<String> {
    errors(kind, obj).iter().map(ToString::to_string).collect()
}

#[track_caller]
fn assert_has(kind: &str, obj: Value, expected: &str) {
    let msgs = messages(kind, obj);
    assert!(
        msgs.iter().any(|m| m == expected),
        "expected {expected:?} among {msgs:#?}"
    );
}

#[track_caller]
fn assert_valid(kind: &str, obj: Value) {
    let obj = defaulted(kind, obj);
    if let Err(e) = validate(kind, &obj, None) {
        panic!("{kind} should be valid: {e}");
    }
}

#[track_caller]
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the object inline as a json! literal"
)]
fn assert_decode(kind: &str, obj: Value, expected: &str) {
    match validate(kind, &obj, None) {
        Err(Invalid::Decode(msg)) => assert!(msg.contains(expected), "{msg:?} lacks {expected:?}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// `kubectl run nginx --image=nginx --dry-run=client -o json`
fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"run": "nginx"}},
        "spec": {
            "containers": [{"name": "nginx", "image": "nginx", "resources": {}}],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always"
        },
        "status": {}
    })
}

/// `kubectl create deployment nginx --image=nginx --dry-run=client -o json`
fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "default", "creationTimestamp": null, "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
            }
        },
        "status": {}
    })
}

fn replica_set() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": "nginx-7c5ddbdf54", "namespace": "default",
            "labels": {"app": "nginx", "pod-template-hash": "7c5ddbdf54"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx",
                "uid": "2f0b6c55-0d0e-4b8c-9d51-6d1c4f1d1a11", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx", "pod-template-hash": "7c5ddbdf54"}},
            "template": {
                "metadata": {"labels": {"app": "nginx", "pod-template-hash": "7c5ddbdf54"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}
            }
        }
    })
}

/// `kubectl expose deployment nginx --port=80 --target-port=8080 --dry-run=client -o json`
fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"}},
        "spec": {
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": "nginx"}
        },
        "status": {"loadBalancer": {}}
    })
}

fn with(mut obj: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let target = obj
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent} missing"));
    match target {
        Value::Array(a) => {
            let i: usize = key.parse().expect("array index");
            a[i] = value;
        }
        Value::Object(m) => {
            m.insert(key.to_string(), value);
        }
        _ => panic!("{parent} is not a container"),
    }
    obj
}

fn without(mut obj: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    if let Some(m) = obj.pointer_mut(parent).and_then(Value::as_object_mut) {
        m.remove(key);
    }
    obj
}

// ---- error rendering ----------------------------------------------------------------------

#[test]
fn renders_like_kubernetes() {
    let p = Path::root("spec").child("ports").index(0).child("port");
    assert_eq!(
        FieldError::invalid(&p, 0, PORT_RANGE_MSG).to_string(),
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    );
    assert_eq!(
        FieldError::required(
            &Path::root("metadata").child("name"),
            "name or generateName is required"
        )
        .to_string(),
        "metadata.name: Required value: name or generateName is required"
    );
    assert_eq!(
        FieldError::not_supported(
            &Path::root("spec").child("type"),
            "Foo",
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
        )
        .to_string(),
        "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
    );
    assert_eq!(
        FieldError::duplicate(&Path::root("a").child("name"), "http").to_string(),
        "a.name: Duplicate value: \"http\""
    );
    assert_eq!(
        FieldError::required(&Path::root("spec").child("containers"), "").to_string(),
        "spec.containers: Required value"
    );
    assert_eq!(
        FieldError::forbidden(&Path::root("x"), "nope").to_string(),
        "x: Forbidden: nope"
    );
    assert_eq!(
        FieldError::too_long(&Path::root("metadata").child("annotations"), 262_144).to_string(),
        "metadata.annotations: Too long: must have at most 262144 bytes"
    );
    assert_eq!(
        Path::root("r").child("limits").key("cpu").to_string(),
        "r.limits[cpu]"
    );
}

#[test]
fn reasons_and_quoting() {
    let p = Path::root("f");
    let cases = [
        (FieldError::required(&p, ""), "FieldValueRequired"),
        (FieldError::invalid(&p, "x", ""), "FieldValueInvalid"),
        (
            FieldError::not_supported(&p, "x", &["y"]),
            "FieldValueNotSupported",
        ),
        (FieldError::duplicate(&p, "x"), "FieldValueDuplicate"),
        (FieldError::too_long(&p, 1), "FieldValueTooLong"),
        (FieldError::forbidden(&p, ""), "FieldValueForbidden"),
    ];
    for (e, reason) in cases {
        assert_eq!(e.reason(), reason);
    }
    assert_eq!(go_quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\x01\"");
}

#[test]
fn aggregate_message() {
    let p = Path::root("f");
    let one = Invalid::Fields(vec![FieldError::required(&p, "")]);
    assert_eq!(one.to_string(), "f: Required value");
    let two = Invalid::Fields(vec![
        FieldError::required(&p, ""),
        FieldError::forbidden(&p, "no"),
    ]);
    assert_eq!(two.to_string(), "[f: Required value, f: Forbidden: no]");
}

// ---- decoding -----------------------------------------------------------------------------

#[test]
fn wrong_types_are_decode_errors() {
    assert_decode(
        "Service",
        with(service(), "/spec/ports/0/port", json!("80")),
        "spec.ports[0].port: invalid type: string \"80\"",
    );
    assert_decode(
        "Pod",
        with(pod(), "/spec/containers", json!({"name": "x"})),
        "spec.containers",
    );
    assert_decode(
        "Deployment",
        with(deployment(), "/spec/replicas", json!("one")),
        "spec.replicas",
    );
    assert_decode(
        "Namespace",
        json!({"metadata": {"name": 5}}),
        "metadata.name",
    );
    assert_decode("Pod", json!(["not", "an", "object"]), "invalid type");
    assert_decode(
        "Pod",
        with(pod(), "/apiVersion", json!("v2")),
        "the API version in the data (v2) does not match the expected API version (v1)",
    );
    assert_decode(
        "Deployment",
        with(deployment(), "/kind", json!("StatefulSet")),
        "the kind in the data (StatefulSet) does not match the expected kind (Deployment)",
    );
    // Empty type fields are filled from the URL, as in Kubernetes.
    let blank = with(with(pod(), "/apiVersion", json!("")), "/kind", Value::Null);
    assert!(validate("Pod", &blank, None).is_ok());
    assert!(
        validate(
            "Pod",
            &without(without(pod(), "/apiVersion"), "/kind"),
            None
        )
        .is_ok()
    );
}

#[test]
fn malformed_quantities_are_decode_errors() {
    let bad = with(
        pod(),
        "/spec/containers/0/resources",
        json!({"limits": {"cpu": "lots"}}),
    );
    assert_decode(
        "Pod",
        bad,
        "spec.containers[0].resources.limits[cpu]: quantities must match the regular expression",
    );
    let bad = with(
        deployment(),
        "/spec/template/spec/containers/0/resources",
        json!({"requests": {"memory": "64MB"}}),
    );
    assert_decode(
        "Deployment",
        bad,
        "spec.template.spec.containers[0].resources.requests[memory]",
    );
}

// ---- metadata -----------------------------------------------------------------------------

#[test]
fn realistic_objects_pass() {
    assert_valid("Pod", pod());
    assert_valid("Deployment", deployment());
    assert_valid("ReplicaSet", replica_set());
    assert_valid("Service", service());
    // Validation does not depend on defaulting having run.
    for (kind, obj) in [
        ("Pod", pod()),
        ("Deployment", deployment()),
        ("Service", service()),
        ("ReplicaSet", replica_set()),
    ] {
        assert!(
            validate(kind, &obj, None).is_ok(),
            "{kind} without defaults"
        );
    }
}

#[test]
fn name_rules_per_kind() {
    assert_has(
        "Pod",
        without(pod(), "/metadata/name"),
        "metadata.name: Required value: name or generateName is required",
    );
    let generated = with(
        without(pod(), "/metadata/name"),
        "/metadata/generateName",
        json!("nginx-"),
    );
    assert_valid("Pod", generated);
    assert_has(
        "Pod",
        with(pod(), "/metadata/generateName", json!("Bad_")),
        "metadata.generateName: Invalid value: \"Bad_\": a lowercase RFC 1123 subdomain must consist of lower case \
         alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
         'example.com')",
    );
    // Subdomains allow dots; labels and DNS-1035 labels do not.
    assert_valid("Pod", with(pod(), "/metadata/name", json!("web.v1")));
    assert_has(
        "Pod",
        with(pod(), "/metadata/name", json!("Web")),
        "metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain must consist of lower case \
         alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
         'example.com')",
    );
    assert!(!messages("Service", with(service(), "/metadata/name", json!("1web"))).is_empty());
    assert!(
        !messages(
            "Service",
            with(service(), "/metadata/name", json!("web.v1"))
        )
        .is_empty()
    );
    assert_valid("Service", with(service(), "/metadata/name", json!("web-1")));
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}});
    assert!(
        messages("Namespace", ns)[0]
            .starts_with("metadata.name: Invalid value: \"team.a\": a lowercase RFC 1123 label")
    );
    for kind in [
        "Deployment",
        "ReplicaSet",
        "Node",
        "Lease",
        "Endpoints",
        "EndpointSlice",
        "Event",
    ] {
        let obj = json!({"metadata": {"name": "UPPER"}});
        let msgs = match validate(kind, &obj, None) {
            Err(Invalid::Fields(e)) => e,
            other => panic!("{kind}: {other:?}"),
        };
        assert!(
            msgs.iter()
                .any(|e| e.field == "metadata.name" && e.detail.contains("subdomain")),
            "{kind}"
        );
    }
}

#[test]
fn namespaces_on_cluster_scoped_objects_are_forbidden() {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "default"}});
    assert_has(
        "Node",
        node,
        "metadata.namespace: Forbidden: not allowed on this type",
    );
    assert_has(
        "Pod",
        with(pod(), "/metadata/namespace", json!("Team")),
        "metadata.namespace: Invalid value: \"Team\": a lowercase RFC 1123 label must consist of lower case \
         alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
         or '123-abc')",
    );
}

#[test]
fn labels_and_annotations() {
    let obj = with(
        pod(),
        "/metadata/labels",
        json!({"bad key": "x", "app": "bad value", "ok.io/x": ""}),
    );
    let errs = errors("Pod", obj);
    assert!(errs.iter().all(|e| e.field == "metadata.labels"));
    assert!(
        errs.iter()
            .any(|e| e.value.as_deref() == Some("\"bad key\""))
    );
    assert!(
        errs.iter()
            .any(|e| e.value.as_deref() == Some("\"bad value\""))
    );
    assert_eq!(errs.len(), 2);

    let obj = with(
        pod(),
        "/metadata/annotations",
        json!({"-x": "1", "Example.COM/Upper": "fine"}),
    );
    let errs = errors("Pod", obj);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "metadata.annotations");

    let big = "x".repeat(256 * 1024);
    assert_has(
        "Pod",
        with(pod(), "/metadata/annotations", json!({"k": big})),
        "metadata.annotations: Too long: must have at most 262144 bytes",
    );
}

#[test]
fn owner_references_and_finalizers() {
    let refs = json!([
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
        {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": true}
    ]);
    let msgs = messages("Pod", with(pod(), "/metadata/ownerReferences", refs));
    for expected in [
        "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
        "metadata.ownerReferences.kind: Invalid value: \"\": kind must not be empty",
        "metadata.ownerReferences.name: Invalid value: \"\": name must not be empty",
        "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    assert!(
        msgs.iter()
            .any(|m| m.contains("Only one reference can have Controller set to true"))
    );

    let mut own = with(pod(), "/metadata/uid", json!("u-1"));
    own = with(
        own,
        "/metadata/ownerReferences",
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "nginx", "uid": "u-1"}]),
    );
    assert_has(
        "Pod",
        own,
        "metadata.ownerReferences.uid: Invalid value: \"u-1\": an object cannot be its own owner",
    );

    let fin = with(
        pod(),
        "/metadata/finalizers",
        json!(["example.com/cleanup", "foregroundDeletion", "mine"]),
    );
    assert_eq!(
        messages("Pod", fin),
        [
            "metadata.finalizers: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified"
        ]
    );
}

#[test]
fn metadata_update_rules() {
    let old = defaulted("Pod", pod());
    let renamed = with(old.clone(), "/metadata/name", json!("other"));
    match validate("Pod", &renamed, Some(&old)) {
        Err(Invalid::Fields(e)) => assert_eq!(
            e[0].to_string(),
            "metadata.name: Invalid value: \"other\": field is immutable"
        ),
        other => panic!("{other:?}"),
    }
    assert!(validate("Pod", &old, Some(&old)).is_ok());
    // A stored object that no longer decodes does not block updates.
    assert!(validate("Pod", &old, Some(&json!({"spec": 5}))).is_ok());
}

// ---- pods ---------------------------------------------------------------------------------

#[test]
fn pod_needs_containers_with_unique_names_and_images() {
    assert_has(
        "Pod",
        with(pod(), "/spec/containers", json!([])),
        "spec.containers: Required value",
    );
    assert_has(
        "Pod",
        without(pod(), "/spec"),
        "spec.containers: Required value",
    );
    let spec = json!({
        "initContainers": [{"name": "setup", "image": "busybox"}],
        "containers": [{"name": "setup", "image": "nginx"}, {"name": "Web", "image": "nginx"}, {"name": "", "image": ""}]
    });
    let msgs = messages("Pod", with(pod(), "/spec", spec));
    for expected in [
        "spec.containers[0].name: Duplicate value: \"setup\"",
        "spec.containers[2].name: Required value",
        "spec.containers[2].image: Required value",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    assert!(msgs.iter().any(|m| m.starts_with(
        "spec.containers[1].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
    )));
}

#[test]
fn container_ports() {
    let ports = json!([
        {"containerPort": 0},
        {"containerPort": 70000, "name": "http"},
        {"containerPort": 8080, "name": "http", "protocol": "ICMP"},
        {"containerPort": 8443, "name": "8443"},
        {"containerPort": 9000, "hostPort": -1}
    ]);
    let msgs = messages("Pod", with(pod(), "/spec/containers/0/ports", ports));
    for expected in [
        "spec.containers[0].ports[0].containerPort: Required value",
        "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.containers[0].ports[2].name: Duplicate value: \"http\"",
        "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "spec.containers[0].ports[3].name: Invalid value: \"8443\": must contain at least one letter (a-z)",
        "spec.containers[0].ports[4].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    assert_valid(
        "Pod",
        with(
            pod(),
            "/spec/containers/0/ports",
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]),
        ),
    );
    let host = with(
        with(pod(), "/spec/hostNetwork", json!(true)),
        "/spec/containers/0/ports",
        json!([{"containerPort": 80, "hostPort": 8080}]),
    );
    assert_has(
        "Pod",
        host,
        "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true",
    );
}

#[test]
fn pod_enums_and_node_name() {
    assert_has(
        "Pod",
        with(pod(), "/spec/restartPolicy", json!("Sometimes")),
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
    );
    assert_has(
        "Pod",
        with(pod(), "/spec/dnsPolicy", json!("Google")),
        "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
    );
    assert_has(
        "Pod",
        with(
            pod(),
            "/spec/containers/0/imagePullPolicy",
            json!("Sometimes"),
        ),
        "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
    );
    assert_valid(
        "Pod",
        with(pod(), "/spec/nodeName", json!("node-1.example")),
    );
    let msgs = messages("Pod", with(pod(), "/spec/nodeName", json!("Node_1")));
    assert!(
        msgs[0].starts_with(
            "spec.nodeName: Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain"
        ),
        "{msgs:?}"
    );
    assert_has(
        "Pod",
        with(pod(), "/spec/activeDeadlineSeconds", json!(0)),
        "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
    );
}

#[test]
fn env_vars() {
    let env = json!([
        {"name": "GOOD_NAME", "value": "1"},
        {"name": ""},
        {"name": "A=B"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "BAD", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}},
        {"name": "NONE", "valueFrom": {}},
        {"name": "BOTH", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "TWO", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}},
        {"name": "NOKEY", "valueFrom": {"configMapKeyRef": {"name": "c", "key": ""}}}
    ]);
    let msgs = messages("Pod", with(pod(), "/spec/containers/0/env", env));
    let p = "spec.containers[0].env";
    for expected in [
        format!("{p}[1].name: Required value"),
        format!(
            "{p}[2].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"
        ),
        format!(
            "{p}[6].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
        ),
        format!(
            "{p}[7].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"
        ),
        format!(
            "{p}[8].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"
        ),
        format!("{p}[9].valueFrom.configMapKeyRef.key: Required value"),
    ] {
        assert!(msgs.contains(&expected), "{expected} in {msgs:#?}");
    }
    assert!(msgs.iter().any(|m| m.starts_with(&format!(
        "{p}[5].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.containers\""
    ))));
    assert_eq!(msgs.len(), 7, "{msgs:#?}");
}

#[test]
fn probes() {
    let c = "/spec/containers/0";
    let none = with(
        pod(),
        &format!("{c}/livenessProbe"),
        json!({"periodSeconds": 5}),
    );
    assert_has(
        "Pod",
        none,
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
    );
    let two = with(
        pod(),
        &format!("{c}/readinessProbe"),
        json!({"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}),
    );
    assert_has(
        "Pod",
        two,
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    );
    let bad_port = with(
        pod(),
        &format!("{c}/readinessProbe"),
        json!({"httpGet": {"port": 0, "scheme": "FTP"}}),
    );
    let msgs = messages("Pod", bad_port);
    assert!(msgs.contains(&"spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive".to_string()));
    assert!(msgs.contains(&"spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"".to_string()));
    let named = with(
        pod(),
        &format!("{c}/livenessProbe"),
        json!({"tcpSocket": {"port": "not--valid"}}),
    );
    assert_has(
        "Pod",
        named,
        "spec.containers[0].livenessProbe.tcpSocket.port: Invalid value: \"not--valid\": must not contain consecutive hyphens",
    );
    let threshold = with(
        pod(),
        &format!("{c}/livenessProbe"),
        json!({"exec": {"command": ["true"]}, "successThreshold": 2, "failureThreshold": -1}),
    );
    let msgs = messages("Pod", threshold);
    assert!(
        msgs.contains(
            &"spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
                .to_string()
        )
    );
    assert!(msgs.contains(&"spec.containers[0].livenessProbe.failureThreshold: Invalid value: -1: must be greater than or equal to 0".to_string()));
    let empty_exec = with(pod(), &format!("{c}/startupProbe"), json!({"exec": {}}));
    assert_has(
        "Pod",
        empty_exec,
        "spec.containers[0].startupProbe.exec.command: Required value",
    );
    assert_valid(
        "Pod",
        with(
            pod(),
            &format!("{c}/readinessProbe"),
            json!({"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 3}),
        ),
    );
    let init = with(
        pod(),
        "/spec/initContainers",
        json!([{"name": "init", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}}]),
    );
    assert_has(
        "Pod",
        init,
        "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
    );
    let hook = with(pod(), &format!("{c}/lifecycle"), json!({"preStop": {}}));
    assert_has(
        "Pod",
        hook,
        "spec.containers[0].lifecycle.preStop: Required value: must specify a handler type",
    );
}

#[test]
fn resources() {
    let res = |r: Value| with(pod(), "/spec/containers/0/resources", r);
    assert_valid(
        "Pod",
        res(
            json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}),
        ),
    );
    assert_valid(
        "Pod",
        res(json!({"requests": {"cpu": "0.5"}, "limits": {"cpu": "500m"}})),
    );
    assert_valid(
        "Pod",
        res(json!({"limits": {"cpu": 2, "example.com/gpu": "1"}})),
    );
    assert_has(
        "Pod",
        res(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})),
        "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
    );
    assert_has(
        "Pod",
        res(json!({"requests": {"memory": "-1Mi"}})),
        "spec.containers[0].resources.requests[memory]: Invalid value: \"-1Mi\": must be greater than or equal to 0",
    );
    assert_has(
        "Pod",
        res(json!({"limits": {"gpu": "1"}})),
        "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
    );
    assert_has(
        "Pod",
        res(json!({"requests": {"example.com/gpu": "1"}})),
        "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
    );
    assert_has(
        "Pod",
        res(json!({"limits": {"example.com/gpu": "500m"}})),
        "spec.containers[0].resources.limits[example.com/gpu]: Invalid value: \"500m\": must be an integer",
    );
}

#[test]
fn volumes() {
    let spec = with(
        pod(),
        "/spec/volumes",
        json!([
            {"name": "data", "emptyDir": {}},
            {"name": "data", "configMap": {"name": "cfg"}},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/tmp"}}
        ]),
    );
    let msgs = messages("Pod", spec);
    assert!(
        msgs.contains(&"spec.volumes[1].name: Duplicate value: \"data\"".to_string()),
        "{msgs:#?}"
    );
    assert!(
        msgs.contains(
            &"spec.volumes[2].hostPath: Forbidden: may not specify more than 1 volume type"
                .to_string()
        ),
        "{msgs:#?}"
    );
    let mounts = with(
        pod(),
        "/spec/containers/0/volumeMounts",
        json!([{"name": "", "mountPath": ""}]),
    );
    let msgs = messages("Pod", mounts);
    assert!(msgs.contains(&"spec.containers[0].volumeMounts[0].name: Required value".to_string()));
    assert!(
        msgs.contains(&"spec.containers[0].volumeMounts[0].mountPath: Required value".to_string())
    );
    // Before defaulting, a volume without a source is an error.
    let bare = with(pod(), "/spec/volumes", json!([{"name": "scratch"}]));
    match validate("Pod", &bare, None) {
        Err(Invalid::Fields(e)) => assert_eq!(
            e[0].to_string(),
            "spec.volumes[0]: Required value: must specify a volume type"
        ),
        other => panic!("{other:?}"),
    }
    assert_valid("Pod", bare);
}

#[test]
fn tolerations() {
    let t = with(
        pod(),
        "/spec/tolerations",
        json!([
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
            {"operator": "Exists"},
            {"key": "a", "operator": "Exists", "value": "x"},
            {"key": "a", "operator": "Maybe"},
            {"key": "a", "value": "b", "effect": "Sometimes"}
        ]),
    );
    let msgs = messages("Pod", t);
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(msgs.contains(&"spec.tolerations[2].operator: Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'".to_string()));
    assert!(msgs.contains(&"spec.tolerations[3].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\"".to_string()));
}

// ---- services -----------------------------------------------------------------------------

#[test]
fn service_ports() {
    assert_has(
        "Service",
        with(service(), "/spec/ports", json!([])),
        "spec.ports: Required value",
    );
    assert_valid(
        "Service",
        with(
            with(service(), "/spec/ports", json!([])),
            "/spec/clusterIP",
            json!("None"),
        ),
    );
    let ports = json!([
        {"port": 0, "targetPort": 0},
        {"name": "http", "port": 80, "targetPort": "http-web-long-name"},
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "Bad", "port": 443, "protocol": "HTTP", "targetPort": 70000}
    ]);
    let msgs = messages("Service", with(service(), "/spec/ports", ports));
    for expected in [
        "spec.ports[0].name: Required value",
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.ports[1].targetPort: Invalid value: \"http-web-long-name\": must be no more than 15 characters",
        "spec.ports[2].name: Duplicate value: \"http\"",
        "spec.ports[2]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}",
        "spec.ports[3].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "spec.ports[3].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("spec.ports[3].name: Invalid value: \"Bad\""))
    );
    // One port needs no name; TCP and UDP may share a number.
    let dns = json!([{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]);
    assert_valid("Service", with(service(), "/spec/ports", dns));
}

#[test]
fn service_types_and_node_ports() {
    assert_has(
        "Service",
        with(service(), "/spec/type", json!("Foo")),
        "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
    );
    let np = with(service(), "/spec/ports/0/nodePort", json!(30080));
    assert_has(
        "Service",
        np.clone(),
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
    );
    assert_valid("Service", with(np.clone(), "/spec/type", json!("NodePort")));
    assert_valid("Service", with(np, "/spec/type", json!("LoadBalancer")));
    let out = with(
        with(service(), "/spec/type", json!("NodePort")),
        "/spec/ports/0/nodePort",
        json!(8080),
    );
    assert_has(
        "Service",
        out,
        "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767",
    );
    let ext = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com."}});
    assert_valid("Service", ext.clone());
    assert_has(
        "Service",
        without(ext.clone(), "/spec/externalName"),
        "spec.externalName: Required value",
    );
    assert_has(
        "Service",
        with(ext, "/spec/clusterIP", json!("10.96.0.5")),
        "spec.clusterIP: Forbidden: may not be set for ExternalName services",
    );
}

#[test]
fn service_addresses() {
    assert_valid(
        "Service",
        with(service(), "/spec/clusterIP", json!("10.96.0.10")),
    );
    assert_valid("Service", with(service(), "/spec/clusterIP", json!("")));
    assert_has(
        "Service",
        with(service(), "/spec/clusterIP", json!("10.96.0.300")),
        "spec.clusterIP: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    );
    assert_has(
        "Service",
        with(service(), "/spec/clusterIP", json!("fd00::10")),
        "spec.clusterIP: Invalid value: \"fd00::10\": must be an IPv4 address: this cluster is IPv4 single-stack",
    );
    let headless_np = with(
        with(service(), "/spec/clusterIP", json!("None")),
        "/spec/type",
        json!("NodePort"),
    );
    assert_has(
        "Service",
        headless_np,
        "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort services",
    );
    let mismatch = with(
        with(service(), "/spec/clusterIP", json!("10.96.0.10")),
        "/spec/clusterIPs",
        json!(["10.96.0.11"]),
    );
    assert_has(
        "Service",
        mismatch,
        "spec.clusterIPs: Invalid value: [\"10.96.0.11\"]: first value must match `clusterIP`",
    );
    let ext = with(
        service(),
        "/spec/externalIPs",
        json!(["192.0.2.10", "127.0.0.1", "nope"]),
    );
    let msgs = messages("Service", ext);
    assert_eq!(
        msgs,
        [
            "spec.externalIPs[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "spec.externalIPs[2]: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ]
    );
    assert!(
        messages(
            "Service",
            with(service(), "/spec/selector", json!({"app": "not valid"}))
        )[0]
        .starts_with("spec.selector: Invalid value: \"not valid\"")
    );
}

#[test]
fn service_source_ranges() {
    let lb = with(service(), "/spec/type", json!("LoadBalancer"));
    let ok = with(
        lb.clone(),
        "/spec/loadBalancerSourceRanges",
        json!([" 10.0.0.0/8", "fd00::/8"]),
    );
    assert_valid("Service", ok);
    let bad = with(
        lb,
        "/spec/loadBalancerSourceRanges",
        json!(["10.0.0.0/8", "10.0.0.0/33", "nope"]),
    );
    assert_eq!(
        messages("Service", bad),
        [
            "spec.LoadBalancerSourceRanges[1]: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.LoadBalancerSourceRanges[2]: Invalid value: \"nope\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ]
    );
    let cluster_ip = with(
        service(),
        "/spec/loadBalancerSourceRanges",
        json!(["10.0.0.0/8"]),
    );
    assert_has(
        "Service",
        cluster_ip,
        "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
    );
}

#[test]
fn service_affinity_and_policies() {
    assert_has(
        "Service",
        with(service(), "/spec/sessionAffinity", json!("Sticky")),
        "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
    );
    let sticky = with(service(), "/spec/sessionAffinity", json!("ClientIP"));
    assert_valid("Service", sticky.clone());
    assert_has(
        "Service",
        with(
            sticky,
            "/spec/sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 0}}),
        ),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400",
    );
    assert_has(
        "Service",
        with(service(), "/spec/externalTrafficPolicy", json!("Local")),
        "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'",
    );
    assert_valid(
        "Service",
        with(
            with(service(), "/spec/type", json!("NodePort")),
            "/spec/externalTrafficPolicy",
            json!("Local"),
        ),
    );
    assert_has(
        "Service",
        with(service(), "/spec/ipFamilies", json!(["IPv5"])),
        "spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
    );
}

#[test]
fn cluster_ip_is_immutable() {
    let old = with(
        defaulted("Service", service()),
        "/spec/clusterIP",
        json!("10.96.0.10"),
    );
    let old = with(old, "/spec/clusterIPs", json!(["10.96.0.10"]));
    assert!(validate("Service", &old, Some(&old)).is_ok());
    let changed = with(
        with(old.clone(), "/spec/clusterIP", json!("10.96.0.11")),
        "/spec/clusterIPs",
        json!(["10.96.0.11"]),
    );
    match validate("Service", &changed, Some(&old)) {
        Err(Invalid::Fields(e)) => {
            let msgs: Vec<String> = e.iter().map(ToString::to_string).collect();
            assert!(msgs.contains(
                &"spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable".to_string()
            ));
            assert!(
                msgs.contains(
                    &"spec.clusterIPs[0]: Invalid value: \"10.96.0.11\": may not change once set"
                        .to_string()
                )
            );
        }
        other => panic!("{other:?}"),
    }
    // Left out on update (kubectl replace): the server keeps the assigned address.
    let omitted = without(without(old.clone(), "/spec/clusterIP"), "/spec/clusterIPs");
    assert!(validate("Service", &omitted, Some(&old)).is_ok());
    // Changing to ExternalName drops the address.
    let ext = json!({"metadata": {"name": "nginx", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "x.example"}});
    assert!(validate("Service", &ext, Some(&old)).is_ok());
}

// ---- workloads ----------------------------------------------------------------------------

#[test]
fn workload_selectors() {
    assert_has(
        "Deployment",
        without(deployment(), "/spec/selector"),
        "spec.selector: Required value",
    );
    assert_has(
        "Deployment",
        without(deployment(), "/spec/selector"),
        "spec.template.metadata.labels: Invalid value: {\"app\":\"nginx\"}: `selector` does not match template `labels`",
    );
    assert_has(
        "Deployment",
        with(deployment(), "/spec/selector", json!({})),
        "spec.selector: Invalid value: {}: empty selector is invalid for deployment",
    );
    assert_has(
        "ReplicaSet",
        with(replica_set(), "/spec/selector", json!({"matchLabels": {}})),
        "spec.selector: Invalid value: {\"matchLabels\":{}}: empty selector is invalid for deployment",
    );
    let mismatch = with(
        deployment(),
        "/spec/template/metadata/labels",
        json!({"app": "web"}),
    );
    assert_eq!(
        messages("Deployment", mismatch),
        [
            "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
        ]
    );
    let exprs = with(
        deployment(),
        "/spec/selector",
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["nginx", "web"]}]}),
    );
    assert_valid("Deployment", exprs);
    let bad = with(
        deployment(),
        "/spec/selector",
        json!({"matchExpressions": [
            {"key": "app", "operator": "In"},
            {"key": "x", "operator": "Exists", "values": ["y"]},
            {"key": "z", "operator": "Near", "values": ["y"]}
        ]}),
    );
    let msgs = messages("Deployment", bad);
    for expected in [
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
        "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        "spec.selector.matchExpressions[2].operator: Invalid value: \"Near\": not a valid selector operator",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    assert!(msgs.iter().any(|m| m.ends_with("invalid label selector")));
}

#[test]
fn workload_numbers_and_template() {
    assert_has(
        "Deployment",
        with(deployment(), "/spec/replicas", json!(-1)),
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        "ReplicaSet",
        with(replica_set(), "/spec/replicas", json!(-2)),
        "spec.replicas: Invalid value: -2: must be greater than or equal to 0",
    );
    assert_valid("Deployment", with(deployment(), "/spec/replicas", json!(0)));
    assert_has(
        "Deployment",
        with(
            deployment(),
            "/spec/template/spec/restartPolicy",
            json!("Never"),
        ),
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
    );
    assert_has(
        "Deployment",
        with(
            deployment(),
            "/spec/template/spec/containers/0/ports",
            json!([{"containerPort": 0}]),
        ),
        "spec.template.spec.containers[0].ports[0].containerPort: Required value",
    );
    assert_has(
        "ReplicaSet",
        with(replica_set(), "/spec/template/spec/containers", json!([])),
        "spec.template.spec.containers: Required value",
    );
    let deadline = with(
        with(deployment(), "/spec/minReadySeconds", json!(30)),
        "/spec/progressDeadlineSeconds",
        json!(10),
    );
    assert_has(
        "Deployment",
        deadline,
        "spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds",
    );
    assert_has(
        "Deployment",
        with(deployment(), "/spec/revisionHistoryLimit", json!(-1)),
        "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
    );
}

#[test]
fn deployment_strategy() {
    let strat = |s: Value| with(deployment(), "/spec/strategy", s);
    assert_valid("Deployment", strat(json!({"type": "Recreate"})));
    assert_valid(
        "Deployment",
        strat(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        ),
    );
    assert_has(
        "Deployment",
        strat(json!({"type": "BlueGreen"})),
        "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"",
    );
    assert_has(
        "Deployment",
        strat(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})),
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
    );
    assert_has(
        "Deployment",
        strat(json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0%: may not be 0 when `maxSurge` is 0",
    );
    assert_has(
        "Deployment",
        strat(json!({"rollingUpdate": {"maxUnavailable": "150%"}})),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 150%: must not be greater than 100%",
    );
    let msgs = messages(
        "Deployment",
        strat(json!({"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": -1}})),
    );
    assert!(msgs.iter().any(|m| m.starts_with(
        "spec.strategy.rollingUpdate.maxSurge: Invalid value: lots: a valid percent string"
    )));
    assert!(msgs.contains(&"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: -1: must be greater than or equal to 0".to_string()));
}

#[test]
fn workload_selector_is_immutable() {
    let old = defaulted("Deployment", deployment());
    assert!(validate("Deployment", &old, Some(&old)).is_ok());
    let scaled = with(old.clone(), "/spec/replicas", json!(5));
    assert!(validate("Deployment", &scaled, Some(&old)).is_ok());
    let moved = with(
        with(
            old.clone(),
            "/spec/selector",
            json!({"matchLabels": {"app": "web"}}),
        ),
        "/spec/template/metadata/labels",
        json!({"app": "web"}),
    );
    match validate("Deployment", &moved, Some(&old)) {
        Err(Invalid::Fields(e)) => assert_eq!(
            e[0].to_string(),
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\"}}: field is immutable"
        ),
        other => panic!("{other:?}"),
    }
    let old_rs = defaulted("ReplicaSet", replica_set());
    let moved = with(
        old_rs.clone(),
        "/spec/selector/matchLabels/app",
        json!("other"),
    );
    assert!(matches!(
        validate("ReplicaSet", &moved, Some(&old_rs)),
        Err(Invalid::Fields(_))
    ));
}

// ---- nodes, endpoints, slices, namespaces, leases, events ----------------------------------

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1", "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": "node-1"}],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.6.0",
                         "containerRuntimeVersion": "containerd://1.7.0", "architecture": "amd64", "operatingSystem": "linux",
                         "bootID": "", "machineID": "", "systemUUID": "", "kubeProxyVersion": ""}
        }
    })
}

#[test]
fn nodes() {
    assert_valid("Node", node());
    assert_has(
        "Node",
        with(node(), "/spec/podCIDR", json!("10.244.1.0")),
        "spec.podCIDR: Invalid value: \"10.244.1.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
    );
    assert_has(
        "Node",
        with(node(), "/spec/podCIDRs/0", json!("bogus")),
        "spec.podCIDRs[0]: Invalid value: \"bogus\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
    );
    assert_has(
        "Node",
        with(node(), "/spec/taints/0/effect", json!("Evict")),
        "spec.taints[0].effect: Unsupported value: \"Evict\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
    );
    let old = node();
    let moved = with(
        with(old.clone(), "/spec/podCIDR", json!("10.244.2.0/24")),
        "/spec/podCIDRs",
        json!(["10.244.2.0/24"]),
    );
    match validate("Node", &moved, Some(&old)) {
        Err(Invalid::Fields(e)) => assert_eq!(
            e[0].to_string(),
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        ),
        other => panic!("{other:?}"),
    }
    let unassigned = without(without(old.clone(), "/spec/podCIDR"), "/spec/podCIDRs");
    assert!(validate("Node", &old, Some(&unassigned)).is_ok());
}

fn endpoints() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "nginx", "namespace": "default"},
        "subsets": [{
            "addresses": [{"ip": "10.244.1.2", "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": "nginx-1", "namespace": "default"}}],
            "notReadyAddresses": [{"ip": "10.244.1.3"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }]
    })
}

#[test]
fn endpoints_rules() {
    assert_valid("Endpoints", endpoints());
    assert_valid("Endpoints", without(endpoints(), "/subsets"));
    let bad = with(endpoints(), "/subsets/0/addresses/0/ip", json!("127.0.0.1"));
    assert_has(
        "Endpoints",
        bad,
        "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
    );
    assert_has(
        "Endpoints",
        with(
            endpoints(),
            "/subsets/0/notReadyAddresses/0/ip",
            json!("10.244.1"),
        ),
        "subsets[0].notReadyAddresses[0].ip: Invalid value: \"10.244.1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    );
    let ports = json!([{"port": 80}, {"name": "b", "port": 0, "protocol": "ICMP"}]);
    let msgs = messages("Endpoints", with(endpoints(), "/subsets/0/ports", ports));
    for expected in [
        "subsets[0].ports[0].name: Required value",
        "subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "subsets[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    assert_has(
        "Endpoints",
        with(endpoints(), "/subsets/0", json!({"ports": []})),
        "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
    );
}

fn slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "nginx-abc12", "namespace": "default", "labels": {"kubernetes.io/service-name": "nginx", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.2"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-1"},
            {"addresses": ["10.244.2.7"], "conditions": {"ready": false}}
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

#[test]
fn endpoint_slice_rules() {
    assert_valid("EndpointSlice", slice());
    assert_valid(
        "EndpointSlice",
        with(slice(), "/ports", json!([{"name": "http"}])),
    );
    assert_has(
        "EndpointSlice",
        with(slice(), "/addressType", json!("")),
        "addressType: Required value",
    );
    assert_has(
        "EndpointSlice",
        with(slice(), "/addressType", json!("IPv5")),
        "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
    );
    assert_has(
        "EndpointSlice",
        with(slice(), "/endpoints/0/addresses", json!(["fd00::1"])),
        "endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
    );
    assert_has(
        "EndpointSlice",
        with(slice(), "/endpoints/1/addresses", json!([])),
        "endpoints[1].addresses: Required value: must contain at least 1 address",
    );
    assert_has(
        "EndpointSlice",
        with(slice(), "/endpoints/0/addresses/0", json!("169.254.1.1")),
        "endpoints[0].addresses[0]: Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
    );
    let v6 = with(
        with(slice(), "/addressType", json!("IPv6")),
        "/endpoints",
        json!([{"addresses": ["fd00:10:244::5"]}]),
    );
    assert_valid("EndpointSlice", v6);
    let ports =
        json!([{"name": "http", "port": 80}, {"name": "http", "port": 70000, "protocol": "ICMP"}]);
    let msgs = messages("EndpointSlice", with(slice(), "/ports", ports));
    for expected in [
        "ports[1].name: Duplicate value: \"http\"",
        "ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    ] {
        assert!(
            msgs.iter().any(|m| m == expected),
            "{expected} in {msgs:#?}"
        );
    }
    let old = slice();
    let changed = with(
        with(old.clone(), "/addressType", json!("IPv6")),
        "/endpoints",
        json!([]),
    );
    match validate("EndpointSlice", &changed, Some(&old)) {
        Err(Invalid::Fields(e)) => assert_eq!(
            e[0].to_string(),
            "addressType: Invalid value: \"IPv6\": field is immutable"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn namespaces() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}, "spec": {}, "status": {}});
    assert_valid("Namespace", ns.clone());
    assert_has(
        "Namespace",
        with(ns, "/spec/finalizers", json!(["custom"])),
        "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
    );
}

#[test]
fn leases() {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2025-05-01T10:00:00.000000Z"}
    });
    assert_valid("Lease", lease.clone());
    assert_has(
        "Lease",
        with(lease.clone(), "/spec/leaseDurationSeconds", json!(0)),
        "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
    );
    assert_has(
        "Lease",
        with(lease.clone(), "/spec/leaseTransitions", json!(-1)),
        "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        "Lease",
        with(lease, "/spec/preferredHolder", json!("node-2")),
        "spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined",
    );
}

#[test]
fn events() {
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "nginx.17f0a1b2c3d4e5f6", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "nginx", "apiVersion": "v1", "fieldPath": "spec.containers{nginx}"},
        "reason": "Pulled", "message": "Container image \"nginx\" already present on machine", "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2025-05-01T10:00:00Z", "lastTimestamp": "2025-05-01T10:00:00Z", "count": 1
    });
    assert_valid("Event", event.clone());
    assert_has(
        "Event",
        with(event.clone(), "/involvedObject/namespace", json!("other")),
        "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace",
    );
    // Events about cluster-scoped objects live in "default".
    let node_event = with(
        without(event.clone(), "/involvedObject/namespace"),
        "/involvedObject/kind",
        json!("Node"),
    );
    assert_valid("Event", node_event.clone());
    assert_has(
        "Event",
        with(node_event, "/metadata/namespace", json!("kube-public")),
        "involvedObject.namespace: Invalid value: \"\": does not match event.namespace",
    );
    // Series-style events must name their reporter.
    let series = with(event, "/eventTime", json!("2025-05-01T10:00:00.000000Z"));
    let msgs = messages("Event", series.clone());
    assert!(
        msgs.contains(&"reportingComponent: Required value".to_string()),
        "{msgs:#?}"
    );
    assert!(msgs.contains(&"reportingInstance: Required value".to_string()));
    assert!(msgs.contains(&"action: Required value".to_string()));
    let complete = with(
        with(
            with(series, "/reportingComponent", json!("kubelet")),
            "/reportingInstance",
            json!("node-1"),
        ),
        "/action",
        json!("Pulling"),
    );
    assert_valid("Event", complete);
}

#[test]
fn unknown_kinds_get_metadata_checks() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}});
    assert!(validate("ConfigMap", &cm, None).is_ok());
    let bad = json!({"metadata": {"name": "Bad"}});
    assert!(matches!(
        validate("ConfigMap", &bad, None),
        Err(Invalid::Fields(_))
    ));
}
