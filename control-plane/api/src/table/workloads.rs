//! Deployments and ReplicaSets.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS_DESC, Column, IMAGES_DESC, NAME, age, col, container_cells, int_col, wide,
};
use crate::labels;

pub(super) fn deployment_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Ready", "Number of the pod with ready state"),
        col(
            "Up-to-date",
            "Total number of non-terminating pods targeted by this deployment that have the desired template \
             spec.",
        ),
        col(
            "Available",
            "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by \
             this deployment.",
        ),
        AGE,
        wide("Containers", CONTAINERS_DESC),
        wide("Images", IMAGES_DESC),
        wide(
            "Selector",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones \
             affected by this deployment. It must match the pod template's labels.",
        ),
    ]
}

pub(super) fn deployment_row(d: &Deployment, now: Timestamp) -> Vec<Value> {
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let containers = spec.template.spec.map(|s| s.containers).unwrap_or_default();
    let (names, images) = container_cells(&containers);
    // An empty selector prints as nothing here (printDeployment), unlike for ReplicaSets.
    let selector = labels::selector_string(&spec.selector).unwrap_or_else(|| "<invalid>".into());
    vec![
        json!(d.metadata.name.clone().unwrap_or_default()),
        json!(format!("{ready}/{desired}")),
        json!(status.updated_replicas.unwrap_or(0)),
        json!(status.available_replicas.unwrap_or(0)),
        age(&d.metadata, now),
        names,
        images,
        json!(selector),
    ]
}

pub(super) fn replica_set_columns() -> Vec<Column> {
    vec![
        NAME,
        int_col(
            "Desired",
            "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and \
             unspecified. Defaults to 1. More info: \
             https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
        ),
        int_col(
            "Current",
            "Replicas is the most recently observed number of non-terminating pods. More info: \
             https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
        ),
        int_col(
            "Ready",
            "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
        ),
        AGE,
        wide("Containers", CONTAINERS_DESC),
        wide("Images", IMAGES_DESC),
        wide(
            "Selector",
            "Selector is a label query over pods that should match the replica count. Label keys and values that \
             must match in order to be controlled by this replica set. It must match the pod template's labels. \
             More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        ),
    ]
}

pub(super) fn replica_set_row(rs: &ReplicaSet, now: Timestamp) -> Vec<Value> {
    let spec = rs.spec.clone().unwrap_or_default();
    let status = rs.status.clone().unwrap_or_default();
    let containers = spec
        .template
        .and_then(|t| t.spec)
        .map(|s| s.containers)
        .unwrap_or_default();
    let (names, images) = container_cells(&containers);
    // metav1.FormatLabelSelector.
    let selector = match labels::selector_string(&spec.selector) {
        None => "<error>".to_string(),
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
    };
    vec![
        json!(rs.metadata.name.clone().unwrap_or_default()),
        json!(spec.replicas.unwrap_or(0)),
        json!(status.replicas),
        json!(status.ready_replicas.unwrap_or(0)),
        age(&rs.metadata, now),
        names,
        images,
        json!(selector),
    ]
}
