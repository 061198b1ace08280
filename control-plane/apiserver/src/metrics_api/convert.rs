//! Kubelet summaries to `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics, as
//! metrics-server builds them: CPU is the kubelet's rate in nanocores, memory the working
//! set, both as canonical quantities.

use kproxy_apimachinery::quantity::Quantity;
use serde_json::{Map, Value, json};

use super::scrape::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodStats};
use super::{API_VERSION, WINDOW};
use crate::object;

/// CPU in nanocores as a canonical decimal quantity (`250m`, `12345n`, `1`).
pub fn cpu_quantity(nano_cores: u64) -> String {
    Quantity::parse(&format!("{nano_cores}n"))
        .map_or_else(|_| format!("{nano_cores}n"), |q| q.to_string())
}

/// Bytes as a canonical binary quantity (`1234Ki`, `64Mi`; bytes when not whole KiB).
pub fn memory_quantity(bytes: u64) -> String {
    if !bytes.is_multiple_of(1024) {
        return bytes.to_string();
    }
    Quantity::parse(&format!("{}Ki", bytes / 1024))
        .map_or_else(|_| bytes.to_string(), |q| q.to_string())
}

/// `{cpu, memory}` when both the CPU rate and the working set are known, with the CPU
/// reading's time.
fn usage(cpu: Option<&CpuStats>, memory: Option<&MemoryStats>) -> Option<(Value, Option<String>)> {
    let cpu = cpu?;
    let nano_cores = cpu.usage_nano_cores?;
    let working_set = memory?.working_set_bytes?;
    Some((
        json!({"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(working_set)}),
        cpu.time.clone(),
    ))
}

/// metadata {name, [namespace], creationTimestamp (now, as metrics-server sets it), labels}.
fn metadata(obj: &Value, now: &str) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(object::name(obj).unwrap_or_default()));
    if let Some(ns) = object::namespace(obj) {
        m.insert("namespace".into(), json!(ns));
    }
    m.insert("creationTimestamp".into(), json!(now));
    let labels = object::labels(obj);
    if !labels.is_empty() {
        m.insert("labels".into(), json!(labels));
    }
    Value::Object(m)
}

/// The NodeMetrics of Node `node` from its kubelet's node figures; None while they lack a
/// CPU rate or a working set.
pub fn node_metrics(node: &Value, stats: &NodeStats, now: &str) -> Option<Value> {
    let (usage, time) = usage(stats.cpu.as_ref(), stats.memory.as_ref())?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(node, now),
        "timestamp": time.unwrap_or_else(|| now.to_string()),
        "window": WINDOW,
        "usage": usage,
    }))
}

/// The PodMetrics of Pod `pod` from its kubelet's pod figures; None unless every container
/// has figures (as metrics-server leaves out a pod with a container it cannot account for),
/// or when the figures are of another pod of the same name (another uid).
pub fn pod_metrics(pod: &Value, stats: &PodStats, now: &str) -> Option<Value> {
    let uid = object::uid(pod).unwrap_or_default();
    if !stats.pod_ref.uid.is_empty() && !uid.is_empty() && stats.pod_ref.uid != uid {
        return None;
    }
    if stats.containers.is_empty() {
        return None;
    }
    let mut containers = Vec::with_capacity(stats.containers.len());
    // The earliest reading: the pod's figures are at least that fresh.
    let mut earliest: Option<String> = None;
    for c in &stats.containers {
        let ContainerStats { name, cpu, memory } = c;
        let (usage, time) = usage(cpu.as_ref(), memory.as_ref())?;
        if let Some(t) = time
            && earliest.as_ref().is_none_or(|e| t < *e)
        {
            earliest = Some(t);
        }
        containers.push(json!({"name": name, "usage": usage}));
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(pod, now),
        "timestamp": earliest.unwrap_or_else(|| now.to_string()),
        "window": WINDOW,
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::scrape::PodReference;
    use super::*;

    fn cpu(n: Option<u64>, time: &str) -> CpuStats {
        CpuStats {
            time: Some(time.into()),
            usage_nano_cores: n,
            usage_core_nano_seconds: Some(1),
        }
    }

    fn mem(ws: u64) -> MemoryStats {
        MemoryStats {
            time: None,
            working_set_bytes: Some(ws),
            usage_bytes: Some(ws + 1),
        }
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(12_345), "12345n");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(1_000_000_000), "1");
        assert_eq!(cpu_quantity(1_003_456_789), "1003456789n");
        assert_eq!(memory_quantity(647_168), "632Ki");
        assert_eq!(memory_quantity(64 * 1024 * 1024), "64Mi");
        assert_eq!(memory_quantity(1000), "1000");
        // kubectl reads them back to the same values.
        assert_eq!(Quantity::parse("632Ki").unwrap().value(), 647_168);
        assert_eq!(
            Quantity::parse(&cpu_quantity(1_003_456_789))
                .unwrap()
                .milli_value(),
            1004
        );
    }

    #[test]
    fn node_metrics_need_cpu_rate_and_working_set() {
        let node = json!({"metadata": {"name": "n1", "labels": {"role": "x"}}});
        let stats = NodeStats {
            node_name: "n1".into(),
            cpu: Some(cpu(Some(500_000_000), "2026-01-01T00:00:10Z")),
            memory: Some(mem(2 * 1024 * 1024)),
        };
        let m = node_metrics(&node, &stats, "2026-01-01T00:00:11Z").unwrap();
        assert_eq!(m["kind"], "NodeMetrics");
        assert_eq!(m["metadata"]["name"], "n1");
        assert_eq!(m["metadata"]["labels"]["role"], "x");
        assert_eq!(m["metadata"]["creationTimestamp"], "2026-01-01T00:00:11Z");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:10Z");
        assert_eq!(m["window"], WINDOW);
        assert_eq!(m["usage"], json!({"cpu": "500m", "memory": "2Mi"}));
        let first_reading = NodeStats {
            cpu: Some(cpu(None, "2026-01-01T00:00:10Z")),
            ..stats
        };
        assert!(node_metrics(&node, &first_reading, "x").is_none());
    }

    #[test]
    fn pod_metrics_need_every_container() {
        let pod = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u1",
            "labels": {"app": "web"}}});
        let c = |name: &str, n: Option<u64>, t: &str| ContainerStats {
            name: name.into(),
            cpu: Some(cpu(n, t)),
            memory: Some(mem(4096)),
        };
        let mut stats = PodStats {
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "d".into(),
                uid: "u1".into(),
            },
            containers: vec![
                c("a", Some(1_000_000), "2026-01-01T00:00:12Z"),
                c("b", Some(7), "2026-01-01T00:00:10Z"),
            ],
        };
        let m = pod_metrics(&pod, &stats, "now").unwrap();
        assert_eq!(m["metadata"]["namespace"], "d");
        assert_eq!(m["metadata"]["labels"]["app"], "web");
        assert_eq!(
            m["timestamp"], "2026-01-01T00:00:10Z",
            "the earliest reading"
        );
        assert_eq!(
            m["containers"],
            json!([
                {"name": "a", "usage": {"cpu": "1m", "memory": "4Ki"}},
                {"name": "b", "usage": {"cpu": "7n", "memory": "4Ki"}},
            ])
        );
        stats.pod_ref.uid = "old".into();
        assert!(
            pod_metrics(&pod, &stats, "now").is_none(),
            "another pod's figures"
        );
        stats.pod_ref.uid = "u1".into();
        stats.containers[1].cpu = Some(cpu(None, "2026-01-01T00:00:10Z"));
        assert!(
            pod_metrics(&pod, &stats, "now").is_none(),
            "a container without a rate"
        );
        stats.containers.clear();
        assert!(pod_metrics(&pod, &stats, "now").is_none());
    }
}
