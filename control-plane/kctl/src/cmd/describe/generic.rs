//! `describe` for kinds without a dedicated report: kubectl's generic form, the object's
//! fields as nested `Title Case:` sections.

use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use super::{Clock, Writer, events_section, header, str_of};

/// Metadata fields already shown in the header or of no use to a reader.
const SKIPPED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "managedFields",
];

pub(super) fn render(obj: &Value, events: Option<&[Event]>, clock: &Clock) -> String {
    let mut w = Writer::new();
    let namespaced = !str_of(&obj["metadata"]["namespace"]).is_empty();
    header(&mut w, obj, namespaced);
    if let Some(map) = obj.as_object() {
        // Every top-level field in key order, apiVersion and kind included (as kubectl).
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            let value = if key == "metadata" {
                without(&map[key], SKIPPED_METADATA)
            } else {
                map[key].clone()
            };
            if is_empty(&value) {
                continue;
            }
            field(&mut w, 0, key, &value);
        }
    }
    events_section(&mut w, events, clock);
    w.finish()
}

fn without(v: &Value, skip: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !skip.contains(&k.as_str()));
    }
    v
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn field(w: &mut Writer, level: usize, key: &str, value: &Value) {
    let label = smart_label(key);
    match value {
        Value::Object(m) => {
            put!(w, level, "{label}:\n");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                field(w, level + 1, k, &m[k]);
            }
        }
        Value::Array(items) => {
            put!(w, level, "{label}:\n");
            for item in items {
                match item {
                    Value::Object(m) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        for k in keys {
                            field(w, level + 1, k, &m[k]);
                        }
                    }
                    other => put!(w, level + 1, "{}\n", scalar(other)),
                }
            }
        }
        other => put!(w, level, "{label}:\t{}\n", scalar(other)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// kubectl's smart labels: camel-case words title-cased, a few acronyms upper-cased
/// (`holderIdentity` → `Holder Identity`, `apiVersion` → `API Version`); names with
/// characters other than letters and `-` stay as they are.
pub(super) fn smart_label(key: &str) -> String {
    const ACRONYMS: &[&str] = &["API", "URL", "UID", "OSB", "GUID"];
    if key.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return key.to_string();
    }
    camel_case_split(key)
        .into_iter()
        .map(|part| {
            let upper = part.to_uppercase();
            if ACRONYMS.contains(&upper.as_str()) {
                upper
            } else {
                let mut cs = part.chars();
                cs.next()
                    .map(|f| f.to_uppercase().chain(cs).collect())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits at changes of character class; in `ABc` the `B` starts the next word (`podIPs` →
/// `pod`, `I`, `Ps`, exactly as the Go library kubectl uses).
fn camel_case_split(s: &str) -> Vec<String> {
    fn class(c: char) -> u8 {
        if c.is_lowercase() {
            1
        } else if c.is_uppercase() {
            2
        } else if c.is_numeric() {
            3
        } else {
            4
        }
    }
    let mut runs: Vec<Vec<char>> = Vec::new();
    let mut last = 0;
    for c in s.chars() {
        let k = class(c);
        match runs.last_mut() {
            Some(run) if k == last => run.push(c),
            _ => runs.push(vec![c]),
        }
        last = k;
    }
    for i in 0..runs.len().saturating_sub(1) {
        let upper_then_lower = runs[i].first().is_some_and(|c| c.is_uppercase())
            && runs[i + 1].first().is_some_and(|c| c.is_lowercase());
        if upper_then_lower && let Some(moved) = runs[i].pop() {
            runs[i + 1].insert(0, moved);
        }
    }
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.into_iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::clock;
    use super::*;
    use serde_json::json;

    #[test]
    fn smart_labels() {
        assert_eq!(smart_label("holderIdentity"), "Holder Identity");
        assert_eq!(smart_label("podIP"), "Pod IP");
        assert_eq!(smart_label("podIPs"), "Pod I Ps");
        assert_eq!(smart_label("apiVersion"), "API Version");
        assert_eq!(
            smart_label("leaseDurationSeconds"),
            "Lease Duration Seconds"
        );
        assert_eq!(smart_label("clusterIP"), "Cluster IP");
        assert_eq!(smart_label("PDFLoader"), "PDF Loader");
        assert_eq!(smart_label("ipv4"), "ipv4");
        assert_eq!(smart_label("uid"), "UID");
        assert_eq!(smart_label("spec"), "Spec");
    }

    #[test]
    fn renders_any_object() {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "node-a", "namespace": "kube-node-lease", "uid": "u1", "managedFields": [{"x": 1}]},
            "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40},
        });
        let out = render(&lease, Some(&[]), &clock());
        assert_eq!(
            out,
            "Name:         node-a\nNamespace:    kube-node-lease\nLabels:       <none>\nAnnotations:  <none>\nAPI Version:  coordination.k8s.io/v1\nKind:         Lease\nMetadata:\n  UID:  u1\nSpec:\n  Holder Identity:         node-a\n  Lease Duration Seconds:  40\nEvents:                    <none>\n"
        );
        let with_list = json!({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "t"}, "items": [{"a": 1, "b": {"c": 2}}, "x"]});
        let out = render(&with_list, None, &clock());
        assert!(
            out.contains("Items:\n  A:  1\n  B:\n    C:  2\n  x\n"),
            "{out}"
        );
    }
}
