//! The resource registry: everything the generic handler needs to know about a resource.
//! Adding a resource kind is one entry here (plus its defaults/validation/columns in
//! kproxy-api); the handler has no per-kind code paths beyond the flags below.

/// Subresources a resource offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subresources {
    /// `/status`: writes there change only `.status`; writes to the main resource keep it.
    pub status: bool,
    /// `/scale` (autoscaling/v1 Scale over `.spec.replicas`).
    pub scale: bool,
    /// Pods only: `/binding`, `/log`, `/exec`.
    pub pod: bool,
}

#[derive(Debug)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub sub: Subresources,
    /// Field selectors beyond metadata.name / metadata.namespace.
    pub fields: &'static [&'static str],
    /// Whether `.spec` changes bump metadata.generation.
    pub has_spec: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Store key prefix for all objects of this resource (ends with '/').
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Store key prefix for one namespace (or the whole resource when `ns` is None).
    pub fn ns_prefix(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.ns_prefix(ns))
    }

    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn field_allowed(&self) -> Vec<&'static str> {
        let mut f = vec!["metadata.name"];
        if self.namespaced {
            f.push("metadata.namespace");
        }
        f.extend_from_slice(self.fields);
        f
    }
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];

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
        ..res("", "v1", "Service", "services", "service", true)
    },
    Resource {
        short_names: &["ep"],
        has_spec: false,
        ..res("", "v1", "Endpoints", "endpoints", "endpoints", true)
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
        ..res(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        )
    },
];

/// The resource served at `group`/`version` under `plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resources served under one group-version (empty if it is not served).
pub fn in_group_version(group: &str, version: &str) -> Vec<&'static Resource> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The API groups (other than core) in discovery order, each with its single version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_lookup() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.ns_prefix(None), "/registry/core/pods/");
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/core/nodes/n1");
        assert_eq!(
            lookup("apps", "v1", "deployments").unwrap().api_version(),
            "apps/v1"
        );
        assert!(lookup("apps", "v1", "pods").is_none());
        assert_eq!(groups()[0], ("discovery.k8s.io", "v1"));
    }

    #[test]
    fn plural_and_kind_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(a.kind != b.kind && (a.group, a.plural) != (b.group, b.plural));
                // Store prefixes must not nest, or a list of one would include the other.
                assert!(
                    !a.prefix().starts_with(&b.prefix()) && !b.prefix().starts_with(&a.prefix())
                );
            }
        }
    }
}
