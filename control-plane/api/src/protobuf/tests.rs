//! Hand-built bodies: each special mapping, Go's zero-value rules, packed and unpacked
//! repeated scalars, maps, inline and nested messages, and every kind of bad input.

use serde_json::{Value, json};

use super::{ProtobufError, decode};

// A minimal protobuf encoder for building bodies.

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Field `num` as a varint.
fn int(num: u64, v: u64) -> Vec<u8> {
    [varint(num << 3), varint(v)].concat()
}

/// Field `num` as length-delimited bytes.
fn bytes(num: u64, payload: &[u8]) -> Vec<u8> {
    [
        varint((num << 3) | 2),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

fn string(num: u64, s: &str) -> Vec<u8> {
    bytes(num, s.as_bytes())
}

/// Field `num` as a message made of `fields`.
fn msg(num: u64, fields: &[Vec<u8>]) -> Vec<u8> {
    bytes(num, &fields.concat())
}

/// A map entry {1: key, 2: value}.
fn entry(num: u64, key: &str, value: Vec<u8>) -> Vec<u8> {
    msg(num, &[string(1, key), value])
}

/// A whole body: magic, then runtime.Unknown {typeMeta, raw}.
fn body(api_version: &str, kind: &str, object: &[Vec<u8>]) -> Vec<u8> {
    [
        b"k8s\0".to_vec(),
        msg(1, &[string(1, api_version), string(2, kind)]),
        bytes(2, &object.concat()),
    ]
    .concat()
}

fn ok(body: &[u8]) -> Value {
    decode(body).unwrap_or_else(|e| panic!("{e}"))
}

fn err(body: &[u8]) -> ProtobufError {
    match decode(body) {
        Ok(v) => panic!("decoded to {v}"),
        Err(e) => e,
    }
}

const META_ZERO: &str = "creationTimestamp";

#[test]
fn missing_fields_get_what_go_json_shows_for_zero() {
    let got = ok(&body("v1", "Pod", &[msg(1, &[string(1, "p")])]));
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", META_ZERO: null},
            "spec": {"containers": null},
            "status": {},
        })
    );
    // A Service's zero status keeps its non-pointer loadBalancer struct.
    let got = ok(&body("v1", "Service", &[]));
    assert_eq!(got["status"], json!({"loadBalancer": {}}));
    assert_eq!(got["spec"], json!({}));
}

#[test]
fn pointer_zeros_are_kept_and_omitempty_zeros_dropped() {
    // Deployment spec: replicas 0 and revisionHistoryLimit 0 are pointers (kept);
    // minReadySeconds 0 and paused false are omitempty values (dropped).
    let spec = msg(2, &[int(1, 0), int(5, 0), int(6, 0), int(7, 0)]);
    let got = ok(&body("apps/v1", "Deployment", &[spec]));
    assert_eq!(
        got["spec"],
        json!({
            "replicas": 0,
            "revisionHistoryLimit": 0,
            "selector": null,
            "template": {"metadata": {META_ZERO: null}, "spec": {"containers": null}},
            "strategy": {},
        })
    );
    // kubectl delete --grace-period=0: the zero is the point.
    let got = ok(&body("v1", "DeleteOptions", &[int(1, 0)]));
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
    );
    // Values without omitempty stay at zero, on the wire or not.
    let got = ok(&body(
        "policy/v1",
        "PodDisruptionBudget",
        &[msg(3, &[int(3, 0)])],
    ));
    assert_eq!(
        got["status"],
        json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})
    );
    // Empty strings of omitempty fields go, as kubectl's bodies carry them for every field.
    let meta = msg(
        1,
        &[string(1, "n"), string(2, ""), string(3, ""), int(7, 0)],
    );
    assert_eq!(
        ok(&body("v1", "Namespace", &[meta]))["metadata"],
        json!({"name": "n", META_ZERO: null})
    );
}

#[test]
fn times_and_micro_times() {
    let meta = msg(
        1,
        &[
            string(1, "p"),
            msg(8, &[int(1, 1_704_164_645), int(2, 999)]),
            msg(9, &[]),
        ],
    );
    let got = ok(&body("v1", "Pod", &[meta]));
    assert_eq!(got["metadata"][META_ZERO], "2024-01-02T03:04:05Z");
    // A set pointer to the zero time is still null in JSON.
    assert_eq!(got["metadata"]["deletionTimestamp"], Value::Null);
    assert!(
        got["metadata"]
            .as_object()
            .unwrap()
            .contains_key("deletionTimestamp")
    );

    let spec = msg(
        2,
        &[
            msg(3, &[int(1, 1_704_164_645), int(2, 123_456_789)]),
            msg(4, &[int(1, 0)]),
        ],
    );
    let got = ok(&body("coordination.k8s.io/v1", "Lease", &[spec]));
    assert_eq!(
        got,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {META_ZERO: null},
            "spec": {
                "acquireTime": "2024-01-02T03:04:05.123456Z",
                "renewTime": "1970-01-01T00:00:00.000000Z",
            },
        })
    );

    let far = msg(1, &[msg(8, &[int(1, 1 << 40)])]);
    let e = err(&body("v1", "Pod", &[far]));
    assert!(matches!(e, ProtobufError::InvalidValue { .. }), "{e}");
    assert!(
        e.to_string().starts_with("metadata.creationTimestamp: "),
        "{e}"
    );
}

#[test]
fn quantities_and_int_or_strings() {
    let resources = msg(
        8,
        &[
            entry(1, "cpu", msg(2, &[string(1, "500m")])),
            entry(2, "memory", msg(2, &[])),
        ],
    );
    let spec = msg(2, &[msg(2, &[string(1, "c"), resources])]);
    let got = ok(&body("v1", "Pod", &[spec]));
    assert_eq!(
        got["spec"]["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m"}, "requests": {"memory": "0"}})
    );

    let ports = [
        msg(1, &[int(3, 80), msg(4, &[int(1, 0), int(2, 8080)])]),
        msg(
            1,
            &[
                string(1, "h"),
                int(3, 81),
                msg(4, &[int(1, 1), string(3, "http")]),
            ],
        ),
        msg(1, &[int(3, 82)]),
    ];
    let got = ok(&body("v1", "Service", &[msg(2, &ports)]));
    assert_eq!(
        got["spec"]["ports"],
        json!([
            {"port": 80, "targetPort": 8080},
            {"name": "h", "port": 81, "targetPort": "http"},
            // Go's JSON shows an unset (value) IntOrString as 0.
            {"port": 82, "targetPort": 0},
        ])
    );

    let bad = msg(2, &[msg(1, &[int(3, 80), msg(4, &[int(1, 2)])])]);
    let e = err(&body("v1", "Service", &[bad]));
    assert!(matches!(e, ProtobufError::InvalidValue { .. }), "{e}");
    assert!(e.to_string().contains("spec.ports[0].targetPort"), "{e}");
}

#[test]
fn raw_extensions_hold_json_or_nested_protobuf() {
    let raw = |payload: &[u8]| msg(2, &[bytes(1, payload)]);
    let got = ok(&body(
        "apps/v1",
        "ControllerRevision",
        &[raw(br#"{"a":[1,"x"]}"#)],
    ));
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {META_ZERO: null},
            "data": {"a": [1, "x"]},
            "revision": 0,
        })
    );
    let nested = body("v1", "Namespace", &[msg(1, &[string(1, "n")])]);
    let got = ok(&body("apps/v1", "ControllerRevision", &[raw(&nested)]));
    assert_eq!(got["data"]["kind"], "Namespace");
    assert_eq!(got["data"]["metadata"]["name"], "n");
    assert_eq!(
        ok(&body("apps/v1", "ControllerRevision", &[]))["data"],
        Value::Null
    );

    let e = err(&body("apps/v1", "ControllerRevision", &[raw(b"{nope")]));
    assert!(matches!(e, ProtobufError::InvalidValue { .. }), "{e}");
    assert!(e.to_string().starts_with("data: "), "{e}");
}

#[test]
fn managed_fields_carry_raw_json() {
    let managed = msg(
        17,
        &[
            string(1, "kubectl"),
            msg(7, &[bytes(1, br#"{"f:metadata":{}}"#)]),
        ],
    );
    let got = ok(&body("v1", "Namespace", &[msg(1, &[managed])]));
    assert_eq!(
        got["metadata"]["managedFields"],
        json!([{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}])
    );
}

#[test]
fn bytes_are_base64_and_maps_are_objects() {
    let secret = [
        entry(2, "k", bytes(2, &[0x00, 0xff])),
        entry(2, "e", bytes(2, b"")),
        entry(2, "missing", vec![]),
        string(3, "Opaque"),
    ];
    let got = ok(&body("v1", "Secret", &secret));
    assert_eq!(got["data"], json!({"k": "AP8=", "e": "", "missing": ""}));
    assert_eq!(got["type"], "Opaque");

    // Duplicate keys: the last one wins, as in a Go map.
    let labels = [
        entry(11, "a", string(2, "1")),
        entry(11, "b", string(2, "2")),
        entry(11, "a", string(2, "3")),
    ];
    let got = ok(&body(
        "v1",
        "ConfigMap",
        &[msg(1, &labels), entry(3, "bin", bytes(2, b"hi"))],
    ));
    assert_eq!(got["metadata"]["labels"], json!({"a": "3", "b": "2"}));
    assert_eq!(got["binaryData"], json!({"bin": "aGk="}));
}

#[test]
fn repeated_scalars_packed_and_unpacked() {
    let packed = bytes(4, &[varint(3), varint(300), varint(u64::MAX)].concat());
    let security = msg(14, &[int(4, 1), int(4, 2), packed, bytes(4, &[])]);
    let command = [string(3, "sh"), string(3, "-c"), string(3, "")];
    let spec = msg(2, &[security, msg(2, &[string(1, "c"), command.concat()])]);
    let got = ok(&body("v1", "Pod", &[spec]));
    assert_eq!(
        got["spec"]["securityContext"],
        json!({"supplementalGroups": [1, 2, 3, 300, -1]})
    );
    assert_eq!(
        got["spec"]["containers"][0]["command"],
        json!(["sh", "-c", ""])
    );

    // Only an empty packed run: the Go slice stays nil, and omitempty drops it.
    let spec = msg(2, &[msg(14, &[bytes(4, &[])])]);
    assert_eq!(
        ok(&body("v1", "Pod", &[spec]))["spec"]["securityContext"],
        json!({})
    );

    let truncated = msg(2, &[msg(14, &[bytes(4, &[0x80])])]);
    let e = err(&body("v1", "Pod", &[truncated]));
    assert!(matches!(e, ProtobufError::Truncated { .. }), "{e}");
}

#[test]
fn inline_members_sit_in_the_parent() {
    let volume = msg(1, &[string(1, "v"), msg(2, &[msg(2, &[])])]);
    let probe = msg(10, &[msg(1, &[msg(1, &[string(1, "true")])]), int(2, 5)]);
    let env = msg(
        7,
        &[
            string(1, "E"),
            msg(
                3,
                &[msg(3, &[msg(1, &[string(1, "cm")]), string(2, "key")])],
            ),
        ],
    );
    let spec = msg(2, &[volume, msg(2, &[string(1, "c"), probe, env])]);
    let got = ok(&body("v1", "Pod", &[spec]));
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "v", "emptyDir": {}}])
    );
    assert_eq!(
        got["spec"]["containers"][0]["livenessProbe"],
        json!({"exec": {"command": ["true"]}, "initialDelaySeconds": 5})
    );
    assert_eq!(
        got["spec"]["containers"][0]["env"],
        json!([{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "key"}}}])
    );
}

#[test]
fn a_message_seen_twice_is_merged() {
    let first = msg(1, &[string(1, "a"), entry(11, "x", string(2, "1"))]);
    let second = msg(
        1,
        &[
            string(1, "b"),
            string(3, "ns"),
            entry(11, "y", string(2, "2")),
        ],
    );
    let got = ok(&body("v1", "ConfigMap", &[first, second]));
    assert_eq!(
        got["metadata"],
        json!({"name": "b", "namespace": "ns", "labels": {"x": "1", "y": "2"}, META_ZERO: null})
    );
}

#[test]
fn discovery_scale_and_eviction_roots() {
    let slice = [
        string(4, "IPv4"),
        msg(2, &[string(1, "10.0.0.1"), msg(2, &[int(1, 1)])]),
        msg(3, &[string(1, "http"), int(3, 80)]),
    ];
    let got = ok(&body("discovery.k8s.io/v1", "EndpointSlice", &slice));
    assert_eq!(got["addressType"], "IPv4");
    assert_eq!(
        got["endpoints"],
        json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}])
    );
    assert_eq!(got["ports"], json!([{"name": "http", "port": 80}]));

    let got = ok(&body("autoscaling/v1", "Scale", &[msg(2, &[int(1, 0)])]));
    assert_eq!(got["spec"], json!({}));
    assert_eq!(got["status"], json!({"replicas": 0}));

    let eviction = [msg(1, &[string(1, "p")]), msg(2, &[int(1, 0)])];
    let got = ok(&body("policy/v1", "Eviction", &eviction));
    assert_eq!(got["deleteOptions"], json!({"gracePeriodSeconds": 0}));
}

#[test]
fn bad_magic() {
    for b in [&b""[..], b"k8s", b"k8s\x01\x0a\x00", b"{\"kind\":\"Pod\"}"] {
        assert!(matches!(err(b), ProtobufError::BadMagic));
    }
}

#[test]
fn truncated_and_garbage_data() {
    // Pod.metadata claims 10 bytes, 3 follow.
    let mut b = body("v1", "Pod", &[]);
    let cut = [varint(10), b"abc".to_vec()].concat();
    b.truncate(b.len() - 2);
    b.extend(bytes(2, &[&[0x0a][..], &cut].concat()));
    let e = err(&b);
    assert!(
        matches!(&e, ProtobufError::Truncated { message, .. } if message == "k8s.io.api.core.v1.Pod"),
        "{e}"
    );

    // Wire type 7 inside ObjectMeta.
    let e = err(&body("v1", "Pod", &[bytes(1, &[0x0f, 0])]));
    assert!(matches!(e, ProtobufError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("ObjectMeta"), "{e}");

    // A string field sent as a varint.
    let e = err(&body("v1", "Pod", &[msg(1, &[int(1, 5)])]));
    assert!(matches!(e, ProtobufError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("field name"), "{e}");

    // A message field sent as a varint.
    let e = err(&body("v1", "Pod", &[int(2, 1)]));
    assert!(matches!(e, ProtobufError::Malformed { .. }), "{e}");

    // Bytes that are not UTF-8 in a string.
    let e = err(&body("v1", "Pod", &[msg(1, &[bytes(1, &[0xff, 0xfe])])]));
    assert!(matches!(e, ProtobufError::InvalidValue { .. }), "{e}");

    // The envelope itself truncated, and garbage after the magic.
    let b = body("v1", "Pod", &[msg(1, &[string(1, "p")])]);
    assert!(matches!(
        err(&b[..b.len() - 1]),
        ProtobufError::Truncated { .. }
    ));
    assert!(matches!(
        err(b"k8s\0\xff\xff\xff"),
        ProtobufError::Truncated { .. }
    ));
    assert!(matches!(err(b"k8s\0\x0c"), ProtobufError::Malformed { .. }));
}

#[test]
fn unknown_field_numbers_name_the_message() {
    let e = err(&body("v1", "Pod", &[msg(2, &[int(999, 1)])]));
    assert!(
        matches!(&e, ProtobufError::UnknownField { message, number: 999, path }
            if message == "k8s.io.api.core.v1.PodSpec" && path == "spec"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "spec: unknown field number 999 in message k8s.io.api.core.v1.PodSpec"
    );

    let containers = [
        msg(2, &[string(1, "a")]),
        msg(2, &[string(1, "b"), int(99, 1)]),
    ];
    let e = err(&body("v1", "Pod", &[msg(2, &containers)]));
    assert_eq!(
        e.to_string(),
        "spec.containers[1]: unknown field number 99 in message k8s.io.api.core.v1.Container"
    );

    let e = err(&body(
        "v1",
        "Pod",
        &[msg(1, &[msg(11, &[string(1, "k"), int(3, 1)])])],
    ));
    assert!(e.to_string().contains("ObjectMeta.labels entry"), "{e}");

    let e = err(&[b"k8s\0".to_vec(), int(5, 1)].concat());
    assert!(
        matches!(&e, ProtobufError::UnknownField { message, number: 5, .. }
            if message == "k8s.io.apimachinery.pkg.runtime.Unknown"),
        "{e}"
    );
    let e = err(&[b"k8s\0".to_vec(), msg(1, &[string(3, "x")])].concat());
    assert!(
        matches!(&e, ProtobufError::UnknownField { message, number: 3, .. }
            if message == "k8s.io.apimachinery.pkg.runtime.TypeMeta"),
        "{e}"
    );
}

#[test]
fn unknown_kinds() {
    for (api_version, kind) in [
        ("v1", "Nope"),
        ("networking.k8s.io/v1", "Ingress"),
        ("", ""),
        ("v1", "Time"),
        ("v2", "Pod"),
    ] {
        let e = err(&body(api_version, kind, &[]));
        assert!(
            matches!(&e, ProtobufError::UnknownKind { api_version: a, kind: k } if a == api_version && k == kind),
            "{e}"
        );
    }
}

#[test]
fn only_raw_protobuf_objects() {
    let mut b = body("v1", "Pod", &[]);
    b.extend(string(3, "gzip"));
    assert!(matches!(err(&b), ProtobufError::UnsupportedContent { .. }));
    let mut b = body("v1", "Pod", &[]);
    b.extend(string(4, "application/json"));
    assert!(matches!(err(&b), ProtobufError::UnsupportedContent { .. }));
    let mut b = body("v1", "Pod", &[]);
    b.extend(string(3, ""));
    b.extend(string(4, super::CONTENT_TYPE));
    assert_eq!(ok(&b)["kind"], "Pod");
}

#[test]
fn nesting_is_bounded() {
    // ControllerRevisions embedded in each other's RawExtension.
    let mut inner = body("apps/v1", "ControllerRevision", &[]);
    for _ in 0..60 {
        inner = body(
            "apps/v1",
            "ControllerRevision",
            &[msg(2, &[bytes(1, &inner)])],
        );
    }
    let e = err(&inner);
    assert!(matches!(e, ProtobufError::TooDeep { .. }), "{e}");
    assert!(e.to_string().starts_with("data.data.data"), "{e}");
}
