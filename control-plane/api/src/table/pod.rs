//! Pods: READY, STATUS and RESTARTS computed the way kubectl's printPod does.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodCondition};
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, age_since, col, wide};

pub(super) fn columns() -> Vec<Column> {
    vec![
        NAME,
        col(
            "Ready",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container \
             in this pod has restarted.",
        ),
        AGE,
        wide(
            "IP",
            "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet \
             allocated.",
        ),
        wide(
            "Node",
            "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for \
             scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this \
             node becomes responsible for the lifecycle of this pod. This field should not be used to express a \
             desire for the pod to be scheduled on a specific node. \
             https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
        ),
        wide(
            "Nominated Node",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be \
             scheduled right away as preemption victims receive their graceful termination periods. This field \
             does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the \
             pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the \
             resources on this node to a higher priority pod that is created after preemption. As a result, \
             this field may be different than PodSpec.nodeName when the pod is scheduled.",
        ),
        wide(
            "Readiness Gates",
            "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its \
             containers are ready AND all conditions specified in the readiness gates have status equal to \
             \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
        ),
    ]
}

fn condition_true(conditions: &[PodCondition], ty: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == ty && c.status == "True")
}

fn last_finished(cs: &ContainerStatus) -> Option<Timestamp> {
    cs.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

fn non_empty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

pub(super) fn row(pod: &Pod, now: Timestamp) -> Vec<Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();

    let mut reason = non_empty(status.reason.as_ref())
        .unwrap_or(&phase)
        .to_string();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }

    // Sidecars (init containers that keep running) count as containers of the pod.
    let sidecars: HashMap<&str, bool> = init_specs
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.restart_policy.as_deref() == Some("Always"),
            )
        })
        .collect();
    let is_sidecar = |name: &str| sidecars.get(name).copied().unwrap_or(false);
    let total = spec.containers.len() + sidecars.values().filter(|s| **s).count();
    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut initializing = false;
    for (i, cs) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += i64::from(cs.restart_count);
        let finished = last_finished(cs);
        last_restart = last_restart.max(finished);
        let sidecar = is_sidecar(&cs.name);
        if sidecar {
            sidecar_restarts += i64::from(cs.restart_count);
            last_sidecar_restart = last_sidecar_restart.max(finished);
        }
        let state = cs.state.clone().unwrap_or_default();
        let terminated = state.terminated.as_ref();
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && cs.started == Some(true) {
            if cs.ready {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        let waiting = non_empty(state.waiting.as_ref().and_then(|w| w.reason.as_ref()));
        reason = if let Some(t) = terminated {
            match (non_empty(t.reason.as_ref()), t.signal.filter(|s| *s != 0)) {
                (Some(r), _) => format!("Init:{r}"),
                (None, Some(sig)) => format!("Init:Signal:{sig}"),
                (None, None) => format!("Init:ExitCode:{}", t.exit_code),
            }
        } else if let Some(w) = waiting.filter(|w| *w != "PodInitializing") {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Reverse order: the first container's state wins, as in kubectl.
        for cs in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(cs.restart_count);
            last_restart = last_restart.max(last_finished(cs));
            let state: ContainerState = cs.state.clone().unwrap_or_default();
            let waiting = non_empty(state.waiting.as_ref().and_then(|w| w.reason.as_ref()));
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = &state.terminated {
                reason = match (non_empty(t.reason.as_ref()), t.signal.filter(|s| *s != 0)) {
                    (Some(r), _) => r.to_string(),
                    (None, Some(sig)) => format!("Signal:{sig}"),
                    (None, None) => format!("ExitCode:{}", t.exit_code),
                };
            } else if cs.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose main container completed but with a sidecar still up is running.
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.reason.as_deref() == Some("NodeLost") {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", age_since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = status
        .pod_ips
        .as_deref()
        .and_then(<[_]>::first)
        .map(|p| p.ip.clone())
        .or(status.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let or_none = |s: Option<String>| {
        s.filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into())
    };
    let gates = spec.readiness_gates.as_deref().unwrap_or_default();
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let passed = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| c.type_ == g.condition_type)
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };
    vec![
        json!(pod.metadata.name.clone().unwrap_or_default()),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(&pod.metadata, now),
        json!(pod_ip),
        json!(or_none(spec.node_name.clone())),
        json!(or_none(status.nominated_node_name.clone())),
        json!(readiness_gates),
    ]
}
