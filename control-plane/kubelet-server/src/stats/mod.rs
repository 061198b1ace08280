//! `GET /stats/summary`: the node's and its pods' CPU and memory, for the API server's Metrics
//! API. A background sampler reads Docker's stats of every running pod container of this
//! node and /proc for the node, and keeps the last two readings of each cumulative CPU
//! counter: the served CPU rate is the one between them, as the kubelet's own summary does
//! with cAdvisor's samples.
//!
//! The sampler reads every [`INTERVAL`]; after a round that saw a counter for the first time
//! it reads again after [`QUICK`], so a new container (and the node, at start) has a rate
//! within about a second of being seen.

mod sample;
mod summary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use tokio::sync::watch;

use kproxy_pod_labels as labels;

use self::sample::{ContainerReading, CpuReading, MemoryReading};
pub use self::summary::Summary;
use self::summary::{ContainerStats, Entry, NodeStats, PodReference};
use crate::AppState;

/// How often the figures are read.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How soon a counter seen for the first time is read again.
pub const QUICK: Duration = Duration::from_secs(1);
/// Docker stats requests in flight at once.
const PARALLEL: usize = 8;

/// The last two readings of a cumulative CPU counter.
#[derive(Debug, Clone, Copy)]
struct Pair {
    older: Option<CpuReading>,
    newer: CpuReading,
}

impl Pair {
    fn new(r: CpuReading) -> Self {
        Self {
            older: None,
            newer: r,
        }
    }

    /// Keeps `r` as the newest; a reading no newer than the last is ignored.
    fn push(&mut self, r: CpuReading) {
        if r.time > self.newer.time {
            self.older = Some(self.newer);
            self.newer = r;
        }
    }
}

/// A running pod container and its readings.
#[derive(Debug, Clone)]
struct Tracked {
    pod: PodReference,
    container: String,
    attempt: u32,
    cpu: Pair,
    memory: MemoryReading,
}

#[derive(Debug, Default)]
struct Readings {
    /// By Docker container id: a restarted container is a new one with fresh readings.
    containers: HashMap<String, Tracked>,
    node_cpu: Option<Pair>,
    node_memory: Option<MemoryReading>,
}

/// Reads and keeps the figures of one node.
pub struct Sampler {
    node: String,
    docker: Docker,
    state: Mutex<Readings>,
}

/// A running app container of this node, as its labels describe it.
struct Found {
    id: String,
    pod: PodReference,
    container: String,
    attempt: u32,
}

impl Found {
    fn from_summary(c: &ContainerSummary) -> Option<Self> {
        let l = c.labels.as_ref()?;
        let parsed = labels::parse(l);
        if parsed.sandbox || parsed.container.is_empty() {
            return None;
        }
        Some(Self {
            id: c.id.clone()?,
            pod: PodReference {
                name: l.get(labels::POD_NAME)?.clone(),
                namespace: l.get(labels::POD_NAMESPACE)?.clone(),
                uid: parsed.uid?.to_string(),
            },
            container: parsed.container.to_string(),
            attempt: parsed.attempt,
        })
    }
}

impl Sampler {
    pub fn new(node: String, docker: Docker) -> Self {
        Self {
            node,
            docker,
            state: Mutex::new(Readings::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Readings> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads until `stop`'s sender is dropped.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<()>) {
        loop {
            let wait = if self.sample().await { QUICK } else { INTERVAL };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One round: the node, then every running pod container of this node. True when some
    /// counter has a single reading (read again soon).
    pub async fn sample(&self) -> bool {
        let node = sample::read_node().await;
        if let Err(e) = &node {
            tracing::warn!(error = %e, "node figures");
        }
        let containers = match self.read_containers().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "container figures from Docker");
                None
            }
        };
        let mut st = self.state();
        if let Ok((cpu, memory)) = node {
            match &mut st.node_cpu {
                Some(p) => p.push(cpu),
                None => st.node_cpu = Some(Pair::new(cpu)),
            }
            st.node_memory = Some(memory);
        }
        if let Some(readings) = containers {
            let mut next = HashMap::with_capacity(readings.len());
            for (found, r) in readings {
                let mut t = st.containers.remove(&found.id).unwrap_or(Tracked {
                    pod: found.pod,
                    container: found.container,
                    attempt: found.attempt,
                    cpu: Pair::new(r.cpu),
                    memory: r.memory,
                });
                t.cpu.push(r.cpu);
                t.memory = r.memory;
                next.insert(found.id, t);
            }
            // Containers no longer running are dropped with their readings.
            st.containers = next;
        }
        st.node_cpu.is_some_and(|p| p.older.is_none())
            || st.containers.values().any(|t| t.cpu.older.is_none())
    }

    /// Every running app container of this node with a reading (one Docker stats call each).
    async fn read_containers(
        &self,
    ) -> Result<Vec<(Found, ContainerReading)>, bollard::errors::Error> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                labels::node_filter(&self.node),
                labels::filter(labels::KIND, labels::KIND_CONTAINER),
            ],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        let found: Vec<Found> = list.iter().filter_map(Found::from_summary).collect();
        let readings = futures::stream::iter(found)
            .map(|f| async move {
                let opts = StatsOptions {
                    stream: false,
                    one_shot: true,
                };
                match self.docker.stats(&f.id, Some(opts)).try_next().await {
                    Ok(Some(s)) => sample::from_docker(&s, Timestamp::now()).map(|r| (f, r)),
                    Ok(None) => None,
                    Err(e) => {
                        // Stopped between the listing and the stats call, usually.
                        tracing::debug!(container = f.id, error = %e, "docker stats");
                        None
                    }
                }
            })
            .buffer_unordered(PARALLEL)
            .filter_map(std::future::ready)
            .collect()
            .await;
        Ok(readings)
    }

    /// The Summary API document from the last readings.
    pub fn summary(&self) -> Summary {
        let st = self.state();
        // One entry per pod container: during a restart two attempts may both run briefly.
        let mut newest: HashMap<(&str, &str), &Tracked> = HashMap::new();
        for t in st.containers.values() {
            let slot = newest
                .entry((t.pod.uid.as_str(), t.container.as_str()))
                .or_insert(t);
            if t.attempt > slot.attempt {
                *slot = t;
            }
        }
        let entries = newest
            .into_values()
            .map(|t| Entry {
                pod: t.pod.clone(),
                stats: ContainerStats {
                    name: t.container.clone(),
                    cpu: summary::cpu(t.cpu.older.as_ref(), &t.cpu.newer),
                    memory: summary::memory(&t.memory),
                },
            })
            .collect();
        Summary {
            node: NodeStats {
                node_name: self.node.clone(),
                cpu: st
                    .node_cpu
                    .map(|p| summary::cpu(p.older.as_ref(), &p.newer)),
                memory: st.node_memory.as_ref().map(summary::memory),
            },
            pods: summary::pods(entries),
        }
    }
}

/// `GET /stats/summary` (query parameters such as `only_cpu_and_memory` change nothing:
/// only CPU and memory are kept).
pub async fn handle(State(st): State<AppState>) -> Response {
    let body = serde_json::to_vec(&st.stats.summary()).expect("a summary always serialises");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(secs: i64, used: u64) -> CpuReading {
        CpuReading {
            time: Timestamp::from_second(secs).unwrap(),
            usage_core_nanos: used,
        }
    }

    #[test]
    fn a_pair_keeps_the_last_two_readings() {
        let mut p = Pair::new(reading(10, 100));
        assert!(p.older.is_none());
        p.push(reading(20, 200));
        p.push(reading(20, 999));
        assert_eq!(
            (p.older.unwrap().usage_core_nanos, p.newer.usage_core_nanos),
            (100, 200),
            "a reading no newer than the last is ignored"
        );
        p.push(reading(30, 450));
        assert_eq!(
            (p.older.unwrap().usage_core_nanos, p.newer.usage_core_nanos),
            (200, 450)
        );
    }

    #[test]
    fn containers_are_found_by_the_kubelets_labels() {
        let pod = labels::Pod {
            node: "n1",
            uid: "u1",
            name: "web",
            namespace: "default",
        };
        let c = ContainerSummary {
            id: Some("abc".into()),
            labels: Some(pod.container("app", 2)),
            ..Default::default()
        };
        let f = Found::from_summary(&c).unwrap();
        assert_eq!(
            (f.id.as_str(), f.pod.name.as_str(), f.pod.namespace.as_str()),
            ("abc", "web", "default")
        );
        assert_eq!((f.container.as_str(), f.attempt), ("app", 2));
        let sandbox = ContainerSummary {
            id: Some("def".into()),
            labels: Some(pod.sandbox()),
            ..Default::default()
        };
        assert!(Found::from_summary(&sandbox).is_none());
    }

    #[test]
    fn the_newest_attempt_is_summarised() {
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let s = Sampler::new("n1".into(), docker);
        let track = |attempt: u32, used: u64| Tracked {
            pod: PodReference {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
            },
            container: "app".into(),
            attempt,
            cpu: Pair {
                older: Some(reading(10, 0)),
                newer: reading(20, used),
            },
            memory: MemoryReading {
                time: Timestamp::from_second(20).unwrap(),
                usage: 10,
                working_set: 8,
                rss: 4,
                available: None,
            },
        };
        {
            let mut st = s.state();
            st.containers.insert("old".into(), track(0, 1_000_000_000));
            st.containers.insert("new".into(), track(1, 5_000_000_000));
        }
        let doc = s.summary();
        assert_eq!(doc.node.node_name, "n1");
        assert!(doc.node.cpu.is_none());
        assert_eq!(doc.pods.len(), 1);
        let c = &doc.pods[0].containers;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].cpu.usage_nano_cores, Some(500_000_000));
    }
}
