//! Reading a kubelet's Summary API (`GET /stats/summary`) over the mutual-TLS kubelet client,
//! with a short timeout: the figures the Metrics API serves.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use crate::context::Api;
use crate::proxy::kubelet_endpoint;

/// A kubelet that has not answered in this time is left out of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Larger summaries are refused (a node with thousands of pods stays well below).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The part of the kubelet's `stats/v1alpha1` Summary the Metrics API reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ContainerStats {
    pub name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CpuStats {
    pub time: Option<String>,
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: Option<String>,
    pub working_set_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
}

/// Whether a Node reports condition Ready=True (only those kubelets are asked).
pub fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The summary of `node`'s kubelet; the error says why there is none (for the log).
pub async fn summary(api: &Api, node: &Value) -> Result<Summary, String> {
    match tokio::time::timeout(TIMEOUT, fetch(api, node)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer in {TIMEOUT:?}")),
    }
}

async fn fetch(api: &Api, node: &Value) -> Result<Summary, String> {
    let ep = kubelet_endpoint(node).map_err(|e| e.message)?;
    let mut sender = api.kubelet.connect(&ep).await.map_err(|e| e.message)?;
    let req = Request::get("/stats/summary?only_cpu_and_memory=true")
        .header(header::HOST, ep.authority())
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request to {}: {e}", ep.authority()))?;
    let status = resp.status();
    let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_BODY)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "the kubelet answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("decoding the summary: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_a_summary_and_readiness() {
        let s: Summary = serde_json::from_value(json!({
            "node": {"nodeName": "n1", "cpu": {"time": "2026-01-01T00:00:00Z",
                "usageNanoCores": 5, "usageCoreNanoSeconds": 9}},
            "pods": [{"podRef": {"name": "web", "namespace": "d", "uid": "u"},
                "containers": [{"name": "c", "memory": {"workingSetBytes": 4096}}],
                "cpu": {"usageNanoCores": 1}}],
        }))
        .unwrap();
        assert_eq!(s.node.node_name, "n1");
        assert_eq!(s.node.cpu.unwrap().usage_nano_cores, Some(5));
        assert!(s.node.memory.is_none());
        let c = &s.pods[0].containers[0];
        assert!(c.cpu.is_none());
        assert_eq!(c.memory.as_ref().unwrap().working_set_bytes, Some(4096));

        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert!(is_ready(&ready));
        assert!(!is_ready(&not_ready));
        assert!(!is_ready(&json!({})));
    }
}
