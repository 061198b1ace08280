//! Helpers over objects in their wire form (serde_json::Value). The store holds objects without
//! a resourceVersion; it is the store revision and is filled in when an object is read.

use std::collections::BTreeMap;

use kproxy_store::KeyValue;
use serde_json::{Map, Value, json};

use crate::status::{ApiError, ApiResult};

pub fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = obj;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

pub fn name(obj: &Value) -> Option<&str> {
    str_at(obj, &["metadata", "name"]).filter(|s| !s.is_empty())
}

pub fn namespace(obj: &Value) -> Option<&str> {
    str_at(obj, &["metadata", "namespace"]).filter(|s| !s.is_empty())
}

pub fn uid(obj: &Value) -> Option<&str> {
    str_at(obj, &["metadata", "uid"])
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta(obj)["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a field selector path like `spec.nodeName` ("" when absent).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for p in path.split('.') {
        match v.get(p) {
            Some(x) => v = x,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    !meta(obj)["deletionTimestamp"].is_null()
}

/// Decodes a stored object and fills in its resourceVersion.
pub fn from_kv(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    set_rv(&mut v, kv.mod_revision);
    Ok(v)
}

pub fn set_rv(obj: &mut Value, rev: u64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

/// The stored form of an object: its JSON with `metadata` as the first key and without a
/// resourceVersion (the store revision is the truth). Metadata first lets reads fill the
/// resourceVersion in by splicing bytes instead of parsing and re-serialising (see `with_rv`).
pub fn to_stored(obj: &Value) -> bytes::Bytes {
    // Written member by member: no copy of the metadata just to leave one key out.
    fn member(out: &mut Vec<u8>, k: &str, v: &Value) {
        serde_json::to_writer(&mut *out, k).expect("a string always serialises");
        out.push(b':');
        serde_json::to_writer(&mut *out, v).expect("a Value always serialises");
    }
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"metadata\":{");
    let meta = obj["metadata"].as_object().into_iter().flatten();
    for (i, (k, v)) in meta.filter(|(k, _)| *k != "resourceVersion").enumerate() {
        if i > 0 {
            out.push(b',');
        }
        member(&mut out, k, v);
    }
    out.push(b'}');
    let rest = obj.as_object().into_iter().flatten();
    for (k, v) in rest.filter(|(k, _)| *k != "metadata") {
        out.push(b',');
        member(&mut out, k, v);
    }
    out.push(b'}');
    bytes::Bytes::from(out)
}

/// Whether a stored object is being deleted. Most are not, and most do not hold the word at
/// all: those are answered from the bytes without a parse (the create path asks this of its
/// namespace every time).
pub fn stored_is_deleting(kv: &KeyValue) -> ApiResult<bool> {
    const KEY: &[u8] = b"\"deletionTimestamp\"";
    if !kv.value.windows(KEY.len()).any(|w| w == KEY) {
        return Ok(false);
    }
    Ok(is_deleting(&from_kv(kv)?))
}

const STORED_PREFIX: &[u8] = b"{\"metadata\":{";

/// The stored object as wire JSON with its resourceVersion, without a parse when the stored
/// bytes have the `to_stored` layout (they always do; anything else is parsed).
pub fn with_rv(kv: &KeyValue) -> ApiResult<Vec<u8>> {
    let v = &kv.value;
    if v.starts_with(STORED_PREFIX) && v.len() > STORED_PREFIX.len() {
        let mut out = Vec::with_capacity(v.len() + 32);
        out.extend_from_slice(STORED_PREFIX);
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(kv.mod_revision.to_string().as_bytes());
        out.push(b'"');
        if v[STORED_PREFIX.len()] != b'}' {
            out.push(b',');
        }
        out.extend_from_slice(&v[STORED_PREFIX.len()..]);
        return Ok(out);
    }
    Ok(serde_json::to_vec(&from_kv(kv)?).expect("a Value always serialises"))
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses a request body as JSON, or YAML when the content type says so.
pub fn parse_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if content_type.contains("protobuf") {
        // kubectl's typed clients (create deployment, ...) send protobuf and do not fall back.
        return kproxy_api::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")));
    }
    if !(content_type.contains("json") || content_type.contains("yaml")) {
        // CBOR and others: not served.
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type})"
            ),
        ));
    }
    let v: Value = if content_type.contains("yaml") {
        kproxy_apimachinery::yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json, application/yaml: {e}"
            ))
        })?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Five characters as Kubernetes' generateName uses (no vowels, no confusable digits).
pub fn random_suffix(n: usize) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn new_uid() -> String {
    use rand::Rng as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::rng().random();
    // Version 4 layout (version nibble 4, variant bits 10), as Kubernetes' uids are.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_labels() {
        let o = json!({"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"nodeName": "n1", "unschedulable": true}});
        assert_eq!(field_value(&o, "spec.nodeName"), "n1");
        assert_eq!(field_value(&o, "spec.unschedulable"), "true");
        assert_eq!(field_value(&o, "status.phase"), "");
        assert_eq!(labels(&o)["app"], "web");
        assert_eq!(name(&o), Some("a"));
    }

    #[test]
    fn bodies() {
        assert!(parse_body("application/json", b"{").is_err());
        assert!(parse_body("application/json", b"[1]").is_err());
        assert!(parse_body("application/json", b"  ").is_err());
        assert_eq!(
            parse_body("application/yaml", b"a: 1\n").unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn stored_layout_splices_the_resource_version() {
        let o = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "resourceVersion": "9"}, "spec": {"x": [1]}});
        let kv = KeyValue {
            key: "k".into(),
            value: to_stored(&o),
            create_revision: 3,
            mod_revision: 7,
        };
        assert!(kv.value.starts_with(STORED_PREFIX));
        let mut want = o.clone();
        want["metadata"]["resourceVersion"] = json!("7");
        let got: Value = serde_json::from_slice(&with_rv(&kv).unwrap()).unwrap();
        assert_eq!(got, want);
        assert_eq!(from_kv(&kv).unwrap(), want);
        // Empty metadata, and bytes in another layout.
        let e = KeyValue {
            value: to_stored(&json!({"kind": "X"})),
            ..kv.clone()
        };
        let got: Value = serde_json::from_slice(&with_rv(&e).unwrap()).unwrap();
        assert_eq!(
            got,
            json!({"kind": "X", "metadata": {"resourceVersion": "7"}})
        );
        let other = KeyValue {
            value: bytes::Bytes::from_static(br#"{"kind":"Y"}"#),
            ..kv
        };
        let got: Value = serde_json::from_slice(&with_rv(&other).unwrap()).unwrap();
        assert_eq!(got["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn deletion_is_seen_in_stored_bytes() {
        let kv = |o: Value| KeyValue {
            key: "k".into(),
            value: to_stored(&o),
            create_revision: 1,
            mod_revision: 1,
        };
        let live = json!({"metadata": {"name": "a", "resourceVersion": "4"}});
        assert!(!stored_is_deleting(&kv(live)).unwrap());
        let gone = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert!(stored_is_deleting(&kv(gone)).unwrap());
        // The word elsewhere (an annotation's key) is parsed, and is not a deletion.
        let named = json!({"metadata": {"name": "a", "annotations": {"deletionTimestamp": "x"}}});
        assert!(!stored_is_deleting(&kv(named)).unwrap());
        // Metadata that held only the resourceVersion is stored as an empty object.
        let only_rv = kv(json!({"metadata": {"resourceVersion": "4"}, "kind": "X"}));
        let back: Value = serde_json::from_slice(&only_rv.value).unwrap();
        assert_eq!(back, json!({"metadata": {}, "kind": "X"}));
    }

    #[test]
    fn uids_and_suffixes() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        for (i, c) in u.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{u}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{u}");
            }
        }
        assert!("89ab".contains(&u[19..20]), "variant bits 10: {u}");
        assert_ne!(new_uid(), u);
        assert_eq!(random_suffix(5).len(), 5);
    }
}
