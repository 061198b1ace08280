//! `describe configmap` and `describe secret` (kubectl's describeConfigMap/describeSecret): a
//! ConfigMap's values in full, a Secret's only as sizes.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use super::{Clock, Writer, events_section, header, str_of};

/// The decoded length of a base64 value (0 when it does not decode).
fn decoded_len(v: &Value) -> usize {
    serde_json::from_value::<ByteString>(v.clone()).map_or(0, |b| b.0.len())
}

pub(super) fn render_config_map(cm: &Value, events: Option<&[Event]>, clock: &Clock) -> String {
    let mut w = Writer::new();
    header(&mut w, cm, true);
    w.write(0, "\nData\n====\n");
    for (k, v) in cm["data"].as_object().into_iter().flatten() {
        put!(w, 0, "{k}:\n----\n");
        put!(w, 0, "{}\n", str_of(v));
    }
    w.write(0, "\nBinaryData\n====\n");
    for (k, v) in cm["binaryData"].as_object().into_iter().flatten() {
        put!(w, 0, "{k}: {} bytes\n", decoded_len(v));
    }
    w.write(0, "\n");
    events_section(&mut w, events, clock);
    w.finish()
}

pub(super) fn render_secret(secret: &Value) -> String {
    let mut w = Writer::new();
    header(&mut w, secret, true);
    let ty = str_of(&secret["type"]);
    put!(w, 0, "\nType:\t{ty}\n");
    w.write(0, "\nData\n====\n");
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        // A service account token is shown, as kubectl does; every other value only by size.
        if k == "token" && ty == "kubernetes.io/service-account-token" {
            let token = serde_json::from_value::<ByteString>(v.clone()).unwrap_or_default();
            put!(w, 0, "{k}:\t{}\n", String::from_utf8_lossy(&token.0));
        } else {
            put!(w, 0, "{k}:\t{} bytes\n", decoded_len(v));
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::clock;
    use super::*;

    #[test]
    fn secrets_show_sizes_only() {
        let s = json!({"metadata": {"name": "creds", "namespace": "default"}, "type": "Opaque",
                       "data": {"password": "aHVudGVyMg==", "token": "dA=="}});
        let out = render_secret(&s);
        assert_eq!(
            out,
            "Name:         creds\nNamespace:    default\nLabels:       <none>\nAnnotations:  <none>\n\nType:  Opaque\n\nData\n====\npassword:  7 bytes\ntoken:     1 bytes\n"
        );
        assert!(!out.contains("hunter2"));
    }

    #[test]
    fn config_maps_show_their_values() {
        let cm = json!({"metadata": {"name": "app", "namespace": "default"},
                        "data": {"MODE": "fast"}, "binaryData": {"b": "AQI="}});
        let out = render_config_map(&cm, None, &clock());
        assert!(
            out.contains("\nData\n====\nMODE:\n----\nfast\n\nBinaryData\n====\nb: 2 bytes\n"),
            "{out}"
        );
    }
}
