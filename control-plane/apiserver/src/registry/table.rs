//! The served resources, in discovery order.

use super::{Hooks, Resource, Subresources, daemonset, namespace, pod, service};

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];

/// Workloads start with an empty status their controller fills in.
const EMPTY_STATUS: Hooks = Hooks {
    initial_status: Some(empty_status),
    ..Hooks::NONE
};

fn empty_status(_: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({})
}

const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: NONE,
        categories: NONE,
        sub: Subresources {
            status: false,
            scale: false,
            pod: false,
        },
        fields: NONE,
        has_spec: true,
        hooks: Hooks::NONE,
    }
}

pub static RESOURCES: &[Resource] = &[
    Resource {
        short_names: &["ns"],
        sub: Subresources {
            status: true,
            scale: false,
            pod: false,
        },
        fields: &["status.phase"],
        hooks: namespace::HOOKS,
        ..res("", "v1", "Namespace", "namespaces", "namespace", false)
    },
    Resource {
        short_names: &["po"],
        categories: ALL,
        sub: Subresources {
            status: true,
            scale: false,
            pod: true,
        },
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        hooks: pod::HOOKS,
        ..res("", "v1", "Pod", "pods", "pod", true)
    },
    Resource {
        short_names: &["svc"],
        categories: ALL,
        sub: Subresources {
            status: true,
            scale: false,
            pod: false,
        },
        fields: &["spec.clusterIP", "spec.type"],
        hooks: service::HOOKS,
        ..res("", "v1", "Service", "services", "service", true)
    },
    Resource {
        short_names: &["ep"],
        has_spec: false,
        ..res("", "v1", "Endpoints", "endpoints", "endpoints", true)
    },
    Resource {
        short_names: &["cm"],
        has_spec: false,
        ..res("", "v1", "ConfigMap", "configmaps", "configmap", true)
    },
    Resource {
        has_spec: false,
        fields: &["type"],
        ..res("", "v1", "Secret", "secrets", "secret", true)
    },
    Resource {
        short_names: &["no"],
        sub: Subresources {
            status: true,
            scale: false,
            pod: false,
        },
        fields: &["spec.unschedulable"],
        ..res("", "v1", "Node", "nodes", "node", false)
    },
    Resource {
        short_names: &["sa"],
        has_spec: false,
        ..res(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    Resource {
        short_names: &["ev"],
        has_spec: false,
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ..res("", "v1", "Event", "events", "event", true)
    },
    Resource {
        has_spec: false,
        ..res(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
        )
    },
    res(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
    ),
    Resource {
        short_names: &["deploy"],
        categories: ALL,
        sub: Subresources {
            status: true,
            scale: true,
            pod: false,
        },
        hooks: EMPTY_STATUS,
        ..res(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            true,
        )
    },
    Resource {
        short_names: &["rs"],
        categories: ALL,
        sub: Subresources {
            status: true,
            scale: true,
            pod: false,
        },
        hooks: EMPTY_STATUS,
        ..res(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        )
    },
    Resource {
        short_names: &["ds"],
        categories: ALL,
        sub: Subresources {
            status: true,
            scale: false,
            pod: false,
        },
        hooks: daemonset::HOOKS,
        ..res("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true)
    },
    Resource {
        categories: ALL,
        sub: Subresources {
            status: true,
            scale: false,
            pod: false,
        },
        hooks: EMPTY_STATUS,
        ..res("batch", "v1", "Job", "jobs", "job", true)
    },
];
