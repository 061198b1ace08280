//! The kubelet's Summary API document (`stats/v1alpha1` `Summary`, the CPU and memory part):
//! node figures and, per pod, its containers' figures and their sums.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::sample::{CpuReading, MemoryReading, nano_cores};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStats {
    pub name: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When the newer of the two readings was taken.
    pub time: String,
    /// The rate between the last two readings; absent until there are two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
}

/// Kubernetes' `metav1.Time`: RFC 3339 in whole seconds, UTC.
fn time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// CPU figures from the last readings of a counter (`older` is the one before `newer`).
pub fn cpu(older: Option<&CpuReading>, newer: &CpuReading) -> CpuStats {
    CpuStats {
        time: time(newer.time),
        usage_nano_cores: older.and_then(|o| nano_cores(o, newer)),
        usage_core_nano_seconds: newer.usage_core_nanos,
    }
}

pub fn memory(m: &MemoryReading) -> MemoryStats {
    MemoryStats {
        time: time(m.time),
        available_bytes: m.available,
        usage_bytes: m.usage,
        working_set_bytes: m.working_set,
        rss_bytes: m.rss,
    }
}

/// One running container's figures, with the pod it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pod: PodReference,
    pub stats: ContainerStats,
}

/// Groups container figures by pod (sorted by namespace, name), summing each pod's CPU and
/// memory over its containers. A pod's CPU rate is there only when every container has one.
pub fn pods(entries: Vec<Entry>) -> Vec<PodStats> {
    let mut by_pod: BTreeMap<(String, String, String), Vec<ContainerStats>> = BTreeMap::new();
    for e in entries {
        by_pod
            .entry((e.pod.namespace, e.pod.name, e.pod.uid))
            .or_default()
            .push(e.stats);
    }
    by_pod
        .into_iter()
        .map(|((namespace, name, uid), mut containers)| {
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            PodStats {
                pod_ref: PodReference {
                    name,
                    namespace,
                    uid,
                },
                cpu: sum_cpu(&containers),
                memory: sum_memory(&containers),
                containers,
            }
        })
        .collect()
}

fn sum_cpu(cs: &[ContainerStats]) -> Option<CpuStats> {
    let latest = cs.iter().map(|c| &c.cpu.time).max()?.clone();
    Some(CpuStats {
        time: latest,
        usage_nano_cores: cs.iter().map(|c| c.cpu.usage_nano_cores).sum(),
        usage_core_nano_seconds: cs.iter().map(|c| c.cpu.usage_core_nano_seconds).sum(),
    })
}

fn sum_memory(cs: &[ContainerStats]) -> Option<MemoryStats> {
    let latest = cs.iter().map(|c| &c.memory.time).max()?.clone();
    Some(MemoryStats {
        time: latest,
        available_bytes: None,
        usage_bytes: cs.iter().map(|c| c.memory.usage_bytes).sum(),
        working_set_bytes: cs.iter().map(|c| c.memory.working_set_bytes).sum(),
        rss_bytes: cs.iter().map(|c| c.memory.rss_bytes).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(secs: i64, used: u64) -> CpuReading {
        CpuReading {
            time: Timestamp::new(secs, 250_000_000).unwrap(),
            usage_core_nanos: used,
        }
    }

    fn entry(ns: &str, pod: &str, container: &str, rate: Option<u64>, ws: u64) -> Entry {
        let older = rate.map(|r| reading(90, 1000 - r.min(1000)));
        let newer = reading(100, 1000 + rate.unwrap_or(0) * 9);
        let mem = MemoryReading {
            time: newer.time,
            usage: ws + 10,
            working_set: ws,
            rss: 1,
            available: None,
        };
        Entry {
            pod: PodReference {
                name: pod.into(),
                namespace: ns.into(),
                uid: format!("uid-{pod}"),
            },
            stats: ContainerStats {
                name: container.into(),
                cpu: cpu(older.as_ref(), &newer),
                memory: memory(&mem),
            },
        }
    }

    #[test]
    fn cpu_and_times() {
        let c = cpu(Some(&reading(90, 0)), &reading(100, 5_000_000_000));
        assert_eq!(c.usage_nano_cores, Some(500_000_000));
        assert_eq!(c.time, "1970-01-01T00:01:40Z", "whole seconds");
        assert_eq!(
            cpu(None, &reading(100, 7)).usage_nano_cores,
            None,
            "one reading gives no rate"
        );
    }

    #[test]
    fn pods_group_and_sum_their_containers() {
        let ps = pods(vec![
            entry("default", "web", "b", Some(100), 2048),
            entry("default", "api", "main", Some(7), 10),
            entry("default", "web", "a", Some(300), 1024),
            entry("kube-system", "dns", "c", None, 5),
        ]);
        let names: Vec<_> = ps
            .iter()
            .map(|p| format!("{}/{}", p.pod_ref.namespace, p.pod_ref.name))
            .collect();
        assert_eq!(names, ["default/api", "default/web", "kube-system/dns"]);
        let web = &ps[1];
        assert_eq!(web.pod_ref.uid, "uid-web");
        assert_eq!(
            web.containers
                .iter()
                .map(|c| &c.name[..])
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let cpu = web.cpu.as_ref().unwrap();
        assert_eq!(
            cpu.usage_nano_cores,
            Some(
                web.containers[0].cpu.usage_nano_cores.unwrap()
                    + web.containers[1].cpu.usage_nano_cores.unwrap()
            )
        );
        assert_eq!(web.memory.as_ref().unwrap().working_set_bytes, 3072);
        assert_eq!(ps[2].cpu.as_ref().unwrap().usage_nano_cores, None);
        let doc = serde_json::to_value(web).unwrap();
        assert_eq!(doc["podRef"]["name"], "web");
        assert_eq!(doc["containers"][0]["memory"]["workingSetBytes"], 1024);
        assert!(doc["containers"][0]["cpu"]["usageCoreNanoSeconds"].is_u64());
        assert!(doc["memory"].get("availableBytes").is_none());
    }
}
