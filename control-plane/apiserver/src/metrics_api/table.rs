//! `kubectl get nodemetrics|podmetrics` asks for a Table: metrics-server's columns (Name, cpu,
//! memory, Window), a pod's usage summed over its containers.

use kproxy_apimachinery::quantity::Quantity;
use serde_json::{Value, json};

use super::WINDOW;

/// The sum of `quantities` in canonical form (unparseable ones count as nothing).
fn sum<'a>(quantities: impl Iterator<Item = &'a str>) -> String {
    quantities
        .filter_map(|q| Quantity::parse(q).ok())
        .reduce(Quantity::add)
        .map_or_else(|| "0".to_string(), |q| q.to_string())
}

/// The usage of a NodeMetrics, or of a PodMetrics summed over its containers.
fn usage(item: &Value, resource: &str) -> String {
    match item["containers"].as_array() {
        Some(cs) => sum(cs.iter().filter_map(|c| c["usage"][resource].as_str())),
        None => item["usage"][resource]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A meta.k8s.io/v1 Table of NodeMetrics or PodMetrics `items`.
pub fn table(items: &[Value]) -> Value {
    let column = |name: &str, format: &str| json!({"name": name, "type": "string", "format": format, "description": "", "priority": 0});
    let mut name = column("Name", "name");
    name["description"] = json!("Name of the resource");
    let rows: Vec<Value> = items
        .iter()
        .map(|m| {
            json!({
                "cells": [m["metadata"]["name"], usage(m, "cpu"), usage(m, "memory"), WINDOW],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": m["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [name, column("cpu", "quantity"), column("memory", "quantity"),
                              column("Window", "duration")],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_summed_nodes_shown_as_they_are() {
        let pod = json!({"metadata": {"name": "web"}, "containers": [
            {"name": "a", "usage": {"cpu": "250m", "memory": "1Mi"}},
            {"name": "b", "usage": {"cpu": "1500000n", "memory": "512Ki"}},
        ]});
        let node = json!({"metadata": {"name": "n1"}, "usage": {"cpu": "2", "memory": "3Gi"}});
        let t = table(&[pod, node]);
        assert_eq!(t["columnDefinitions"][1]["name"], "cpu");
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "251500u", "1536Ki", "10s"])
        );
        assert_eq!(t["rows"][1]["cells"], json!(["n1", "2", "3Gi", "10s"]));
        assert_eq!(t["rows"][1]["object"]["metadata"]["name"], "n1");
    }
}
