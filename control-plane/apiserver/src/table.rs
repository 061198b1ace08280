//! meta.k8s.io/v1 Table responses (server-side printing for `kubectl get`), built from the
//! per-kind columns in kproxy-api.

use serde_json::{Value, json};

use crate::registry::Resource;

/// `include`: the includeObject parameter (None, Metadata — the default — or Object).
pub fn table(res: &Resource, items: &[Value], rev: Option<u64>, include: Option<&str>) -> Value {
    let now = jiff::Timestamp::now();
    let columns: Vec<Value> = kproxy_api::table::columns(res.kind)
        .into_iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include {
                Some("None") => Value::Null,
                Some("Object") => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }),
            };
            json!({"cells": kproxy_api::table::row(res.kind, o, now), "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rev) = rev {
        meta["resourceVersion"] = json!(rev.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
