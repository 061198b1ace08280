//! Secrets: the type defaults to Opaque (SetDefaults_Secret), and `stringData` is merged into
//! `data` on every write, as Kubernetes' v1 → internal conversion does: a write-only
//! convenience field, never stored or returned.

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::{Obj, child, set};

pub(super) fn secret(root: &mut Obj) {
    set(root, "type", json!("Opaque"));
    let Some(strings) = root.get("stringData").and_then(Value::as_object) else {
        return;
    };
    // A stringData that is not all strings is left for decoding to reject (a 400).
    let Some(strings): Option<Vec<(String, String)>> = strings
        .iter()
        .map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
    else {
        return;
    };
    root.remove("stringData");
    let Some(data) = child(root, "data") else {
        return;
    };
    for (k, v) in strings {
        // Base64, as `data` is on the wire; stringData wins over data for the same key.
        let encoded = serde_json::to_value(ByteString(v.into_bytes())).unwrap_or(Value::Null);
        data.insert(k, encoded);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::defaults::apply_defaults;

    #[test]
    fn string_data_is_merged_into_data_once() {
        let mut s = json!({"data": {"a": "YQ==", "b": "Yg=="}, "stringData": {"b": "B", "c": "c"}});
        apply_defaults("Secret", &mut s);
        assert_eq!(
            s,
            json!({"type": "Opaque", "data": {"a": "YQ==", "b": "Qg==", "c": "Yw=="}})
        );
        let again = s.clone();
        apply_defaults("Secret", &mut s);
        assert_eq!(s, again, "idempotent");
        let mut typed = json!({"type": "kubernetes.io/tls", "stringData": {"tls.key": "k"}});
        apply_defaults("Secret", &mut typed);
        assert_eq!(typed["type"], "kubernetes.io/tls");
        assert_eq!(typed["data"], json!({"tls.key": "aw=="}));
        // Not all strings: left for decoding to refuse.
        let mut odd = json!({"stringData": {"n": 1}});
        apply_defaults("Secret", &mut odd);
        assert_eq!(odd["stringData"], json!({"n": 1}));
    }
}
