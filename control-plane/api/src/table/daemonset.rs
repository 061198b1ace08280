//! DaemonSets (printDaemonSet): the status counts, the template's node selector, and with
//! `-o wide` the containers, images and selector.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS_DESC, Column, IMAGES_DESC, NAME, age, col, container_cells, int_col, wide,
};
use crate::labels;

pub(super) fn daemon_set_columns() -> Vec<Column> {
    vec![
        NAME,
        int_col(
            "Desired",
            "The total number of nodes that should be running the daemon pod (including nodes correctly \
             running the daemon pod). More info: \
             https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
        ),
        int_col(
            "Current",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon \
             pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
        ),
        int_col(
            "Ready",
            "numberReady is the number of nodes that should be running the daemon pod and have one or more \
             of the daemon pod running with a Ready Condition.",
        ),
        int_col(
            "Up-to-date",
            "The total number of nodes that are running updated daemon pod",
        ),
        int_col(
            "Available",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon \
             pod running and available (ready for at least spec.minReadySeconds)",
        ),
        col(
            "Node Selector",
            "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which \
             must match a node's labels for the pod to be scheduled on that node. More info: \
             https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
        ),
        AGE,
        wide("Containers", CONTAINERS_DESC),
        wide("Images", IMAGES_DESC),
        wide(
            "Selector",
            "A label query over pods that are managed by the daemon set. Must match in order to be \
             controlled. It must match the pod template's labels. More info: \
             https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        ),
    ]
}

pub(super) fn daemon_set_row(ds: &DaemonSet, now: Timestamp) -> Vec<Value> {
    let spec = ds.spec.clone().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();
    let pod_spec = spec.template.spec.unwrap_or_default();
    let (names, images) = container_cells(&pod_spec.containers);
    // metav1.FormatLabelSelector.
    let selector = match labels::selector_string(&spec.selector) {
        None => "<error>".to_string(),
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
    };
    vec![
        json!(ds.metadata.name.clone().unwrap_or_default()),
        json!(status.desired_number_scheduled),
        json!(status.current_number_scheduled),
        json!(status.number_ready),
        json!(status.updated_number_scheduled.unwrap_or(0)),
        json!(status.number_available.unwrap_or(0)),
        json!(labels::format_labels(pod_spec.node_selector.as_ref())),
        age(&ds.metadata, now),
        names,
        images,
        json!(selector),
    ]
}
