//! Nodes, Namespaces, Leases and Events.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node};
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, age_since, col, wide};

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";
const ADDRESSES_DESC: &str = "List of addresses reachable to the node. Queried from cloud provider, if \
    available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses";

pub(super) fn node_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Status", "The status of the node"),
        col("Roles", "The roles of the node"),
        AGE,
        col("Version", "Kubelet Version reported by the node."),
        wide("Internal-IP", ADDRESSES_DESC),
        wide("External-IP", ADDRESSES_DESC),
        wide(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        wide(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        wide(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ]
}

pub(super) fn node_row(node: &Node, now: Timestamp) -> Vec<Value> {
    let status = node.status.clone().unwrap_or_default();
    let mut states: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.type_ == "Ready")
        .take(1)
        .map(|c| {
            if c.status == "True" {
                "Ready".into()
            } else {
                "NotReady".into()
            }
        })
        .collect();
    if states.is_empty() {
        states.push("Unknown".into());
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        states.push("SchedulingDisabled".into());
    }
    let roles: BTreeSet<String> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix(NODE_ROLE_PREFIX) {
            Some(role) if !role.is_empty() => Some(role.to_string()),
            Some(_) => None,
            None => (k == NODE_ROLE_LABEL && !v.is_empty()).then(|| v.clone()),
        })
        .collect();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |ty: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == ty)
            .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
    };
    let info = status.node_info.clone().unwrap_or_default();
    let or_unknown = |s: String| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s
        }
    };
    vec![
        json!(node.metadata.name.clone().unwrap_or_default()),
        json!(states.join(",")),
        json!(roles),
        age(&node.metadata, now),
        json!(info.kubelet_version),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_unknown(info.os_image)),
        json!(or_unknown(info.kernel_version)),
        json!(or_unknown(info.container_runtime_version)),
    ]
}

pub(super) fn namespace_columns() -> Vec<Column> {
    vec![NAME, col("Status", "The status of the namespace"), AGE]
}

pub(super) fn namespace_row(ns: &Namespace, now: Timestamp) -> Vec<Value> {
    let phase = ns
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    vec![
        json!(ns.metadata.name.clone().unwrap_or_default()),
        json!(phase),
        age(&ns.metadata, now),
    ]
}

pub(super) fn lease_columns() -> Vec<Column> {
    vec![
        NAME,
        col(
            "Holder",
            "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader \
             Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name \
             field.",
        ),
        AGE,
    ]
}

pub(super) fn lease_row(lease: &Lease, now: Timestamp) -> Vec<Value> {
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    vec![
        json!(lease.metadata.name.clone().unwrap_or_default()),
        json!(holder),
        age(&lease.metadata, now),
    ]
}

pub(super) fn event_columns() -> Vec<Column> {
    vec![
        col(
            "Last Seen",
            "The time at which the most recent occurrence of this event was recorded.",
        ),
        col(
            "Type",
            "Type of this event (Normal, Warning), new types could be added in the future",
        ),
        col(
            "Reason",
            "This should be a short, machine understandable string that gives the reason for the transition \
             into the object's current status.",
        ),
        col("Object", "The object that this event is about."),
        wide(
            "Subobject",
            "If referring to a piece of an object instead of an entire object, this string should contain a \
             valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
        ),
        wide(
            "Source",
            "The component reporting this event. Should be a short machine understandable string.",
        ),
        col(
            "Message",
            "A human-readable description of the status of this operation.",
        ),
        wide(
            "First Seen",
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        ),
        wide("Count", "The number of times this event has occurred."),
        Column {
            priority: 1,
            ..NAME
        },
    ]
}

fn first_non_empty(a: Option<&String>, b: Option<&String>) -> String {
    a.filter(|s| !s.is_empty())
        .or(b.filter(|s| !s.is_empty()))
        .cloned()
        .unwrap_or_default()
}

pub(super) fn event_row(ev: &Event, now: Timestamp) -> Vec<Value> {
    let first = match &ev.first_timestamp {
        Some(t) => age_since(Some(t.0), now),
        None => age_since(ev.event_time.as_ref().map(|t| t.0), now),
    };
    let mut last = match &ev.last_timestamp {
        Some(t) => age_since(Some(t.0), now),
        None => first.clone(),
    };
    let mut count = ev.count.unwrap_or(0);
    if let Some(series) = &ev.series {
        last = age_since(series.last_observed_time.as_ref().map(|t| t.0), now);
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        // Events of the events.k8s.io API happen once unless they form a series.
        count = 1;
    }
    let obj = &ev.involved_object;
    let kind = obj.kind.clone().unwrap_or_default().to_lowercase();
    let target = match obj.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };
    let source = ev.source.clone().unwrap_or_default();
    let component = first_non_empty(source.component.as_ref(), ev.reporting_component.as_ref());
    let instance = first_non_empty(source.host.as_ref(), ev.reporting_instance.as_ref());
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(ev.type_.clone().unwrap_or_default()),
        json!(ev.reason.clone().unwrap_or_default()),
        json!(target),
        json!(obj.field_path.clone().unwrap_or_default()),
        json!(source),
        json!(ev.message.clone().unwrap_or_default().trim()),
        json!(first),
        json!(count),
        json!(ev.metadata.name.clone().unwrap_or_default()),
    ]
}
