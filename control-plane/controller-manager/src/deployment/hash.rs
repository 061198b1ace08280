//! The `pod-template-hash`: a stable FNV-32a hash of the pod template (without the hash label
//! itself), plus the Deployment's collisionCount when set, rendered as Kubernetes renders it:
//! the decimal digits mapped through `rand.SafeEncodeString`'s alphabet (no vowels, no
//! confusable characters), so names look like `web-7d4b9c8f6`.
//!
//! Kubernetes hashes Go's in-memory dump of the struct; we hash a canonical JSON form of the
//! stored template (keys sorted, nulls and empty maps/lists dropped), which is what makes two
//! templates equal here too ([`equal_ignore_hash`]).

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

pub const LABEL: &str = "pod-template-hash";
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The template as compared and hashed: no hash label, no empty values.
pub fn canonical(template: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(LABEL);
    }
    prune(&mut v);
    v
}

/// Drops nulls, empty objects and empty arrays, recursively (a field left out and a field
/// set to its empty value mean the same in a template).
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => {
            m.retain(|_, x| prune(x));
            !m.is_empty()
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                if !prune(x) {
                    *x = Value::Null;
                }
            }
            !a.is_empty()
        }
        _ => true,
    }
}

/// JSON with object keys sorted, whatever the map type serde_json was built with.
fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                write_sorted(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(x, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn fnv32a(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `controller.ComputeHash(template, collisionCount)`.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    write_sorted(&canonical(template), &mut text);
    let mut h = fnv32a(text.as_bytes(), 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv32a(&c.to_le_bytes(), h);
    }
    safe_encode(&h.to_string())
}

/// `EqualIgnoreHash`: the same template apart from the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn safe_encoding_is_kubernetes_alphabet() {
        // '0' is 48: 48 % 27 = 21 -> '4'; '9' is 57 -> 3 -> 'f'.
        assert_eq!(safe_encode("09"), "4f");
        assert_eq!(safe_encode("1234567890").len(), 10);
        assert!(
            safe_encode("4294967295")
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b"", 0x811c_9dc5), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a", 0x811c_9dc5), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar", 0x811c_9dc5), 0xbf9c_f968);
    }

    #[test]
    fn hash_is_stable_and_ignores_its_own_label_and_empty_fields() {
        let a = template(json!({
            "metadata": {"labels": {"app": "web", "tier": "x"}},
            "spec": {"containers": [{"name": "c", "image": "httpd", "env": []}]}
        }));
        let b = template(json!({
            "metadata": {"labels": {"tier": "x", "app": "web", "pod-template-hash": "abc"}, "annotations": {}},
            "spec": {"containers": [{"name": "c", "image": "httpd"}]}
        }));
        let h = pod_template_hash(&a, None);
        assert_eq!(h, pod_template_hash(&b, None));
        assert!(equal_ignore_hash(&a, &b));
        assert!((6..=10).contains(&h.len()), "{h}");
        let c = template(json!({
            "metadata": {"labels": {"app": "web", "tier": "x"}},
            "spec": {"containers": [{"name": "c", "image": "httpd:2"}]}
        }));
        assert_ne!(pod_template_hash(&c, None), h);
        assert!(!equal_ignore_hash(&a, &c));
        // A collision count gives another name for the same template.
        assert_ne!(pod_template_hash(&a, Some(1)), h);
        assert_eq!(
            pod_template_hash(&a, Some(1)),
            pod_template_hash(&b, Some(1))
        );
    }

    #[test]
    fn restart_annotation_changes_the_hash() {
        let a = template(
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}),
        );
        let b = template(json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}},
            "spec": {"containers": [{"name": "c"}]}
        }));
        assert_ne!(pod_template_hash(&a, None), pod_template_hash(&b, None));
    }
}
