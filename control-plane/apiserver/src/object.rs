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

/// The bytes stored for an object: without resourceVersion (the store revision is the truth).
pub fn to_stored(obj: &Value) -> bytes::Bytes {
    let mut o = obj.clone();
    meta_mut(&mut o).remove("resourceVersion");
    bytes::Bytes::from(serde_json::to_vec(&o).expect("a Value always serialises"))
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
    if !(content_type.contains("json") || content_type.contains("yaml")) {
        // Protobuf and CBOR are not served; client-go falls back to JSON on a 415.
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type})"
            ),
        ));
    }
    let v: Value = if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
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
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    // Version 4 layout, as Kubernetes' uids are.
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (u8::from_str_radix(&h[16..17], 16).unwrap_or(0) & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
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
    fn uids_and_suffixes() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uid(), u);
        assert_eq!(random_suffix(5).len(), 5);
    }
}
