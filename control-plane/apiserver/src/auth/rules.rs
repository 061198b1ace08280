//! What each identity may do, as data: one table of rules per identity that both the
//! authorizer ([`decide`], behind `auth::authorize`) and the rules review
//! ([`resource_rules`], SelfSubjectRulesReview) read, so the two cannot disagree.
//!
//! The rules read like RBAC PolicyRules (verbs × API groups × resources, `*` for any), plus
//! the two name conditions of Kubernetes' Node authorizer: "the object named after the node"
//! and "pods bound to the node".

use super::{Access, Identity, L2_LEASE_NAMESPACE, NODE_LEASE_NAMESPACE};
use crate::registry::RESOURCES;

/// The resources a rule covers.
#[derive(Debug, Clone, Copy)]
pub enum Resources {
    /// Everything, subresources included (RBAC's `*` in every group).
    All,
    /// Every served resource and its status and scale subresources, but no other
    /// subresource (not pods/log, pods/exec or nodes/proxy, which reach kubelets).
    Served,
    /// [`Resources::Served`] without these core resources (plurals).
    ServedExcept(&'static [&'static str]),
    /// These resources (`pods`, `pods/status`) of one API group.
    Listed {
        group: &'static str,
        resources: &'static [&'static str],
    },
}

/// Which objects of those resources a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Any,
    /// Only the object named after the node (its Node, its Lease). A create names its object
    /// in the body, which NodeRestriction admission checks, so a create whose name is not
    /// known here passes (as in Kubernetes' Node authorizer).
    Own,
    /// Only pods whose spec.nodeName is the node; the caller decides with the stored pod.
    BoundPods,
    /// Only objects a pod bound to the node references (its ConfigMaps and Secrets); the
    /// caller decides with the stored pods ([`super::graph`]).
    Referenced,
}

#[derive(Debug)]
pub struct Rule {
    /// `*`: any verb.
    pub verbs: &'static [&'static str],
    pub resources: Resources,
    /// `Some`: only in this namespace.
    pub namespace: Option<&'static str>,
    pub names: Names,
}

/// A rule over non-resource URLs; a URL ending in `*` covers every path it prefixes.
#[derive(Debug)]
pub struct PathRule {
    pub verbs: &'static [&'static str],
    pub urls: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &["*"];
const READ: &[&str] = &["get", "list", "watch"];
/// What a node does to its own objects (reads come from the read rule).
const WRITE_OWN: &[&str] = &["create", "update", "patch", "delete"];

/// The admin (group system:masters) may do everything.
pub const ADMIN_RULES: &[Rule] = &[Rule {
    verbs: ALL_VERBS,
    resources: Resources::All,
    namespace: None,
    names: Names::Any,
}];

pub const ADMIN_PATHS: &[PathRule] = &[PathRule {
    verbs: ALL_VERBS,
    urls: &["*"],
}];

/// A node (Kubernetes' Node authorizer and NodeRestriction): it reads everything but
/// ConfigMaps and Secrets, of which it may get those its pods use (the authorizer's graph),
/// writes its own Node and Lease, the status of the pods bound to it, deletes those pods (when
/// they are gone from the node) and records events.
pub const NODE_RULES: &[Rule] = &[
    Rule {
        verbs: READ,
        resources: Resources::ServedExcept(super::graph::GUARDED),
        namespace: None,
        names: Names::Any,
    },
    Rule {
        verbs: &["get"],
        resources: Resources::Listed {
            group: "",
            resources: super::graph::GUARDED,
        },
        namespace: None,
        names: Names::Referenced,
    },
    Rule {
        verbs: WRITE_OWN,
        resources: Resources::Listed {
            group: "",
            resources: &["nodes"],
        },
        namespace: None,
        names: Names::Own,
    },
    Rule {
        verbs: &["update", "patch"],
        resources: Resources::Listed {
            group: "",
            resources: &["nodes/status"],
        },
        namespace: None,
        names: Names::Own,
    },
    Rule {
        verbs: WRITE_OWN,
        resources: Resources::Listed {
            group: "coordination.k8s.io",
            resources: &["leases"],
        },
        namespace: Some(NODE_LEASE_NAMESPACE),
        names: Names::Own,
    },
    // The L2 announcement Leases: any node may hold one (admission keeps nodes to those).
    Rule {
        verbs: &["create", "update", "patch"],
        resources: Resources::Listed {
            group: "coordination.k8s.io",
            resources: &["leases"],
        },
        namespace: Some(L2_LEASE_NAMESPACE),
        names: Names::Any,
    },
    Rule {
        verbs: &["update", "patch"],
        resources: Resources::Listed {
            group: "",
            resources: &["pods/status"],
        },
        namespace: None,
        names: Names::BoundPods,
    },
    Rule {
        verbs: &["delete"],
        resources: Resources::Listed {
            group: "",
            resources: &["pods"],
        },
        namespace: None,
        names: Names::BoundPods,
    },
    Rule {
        verbs: &["create", "patch"],
        resources: Resources::Listed {
            group: "",
            resources: &["events"],
        },
        namespace: None,
        names: Names::Any,
    },
    // Asking what one may do, and who one is (Kubernetes' system:basic-user).
    Rule {
        verbs: &["create"],
        resources: Resources::Listed {
            group: "authorization.k8s.io",
            resources: &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        },
        namespace: None,
        names: Names::Any,
    },
    Rule {
        verbs: &["create"],
        resources: Resources::Listed {
            group: "authentication.k8s.io",
            resources: &["selfsubjectreviews"],
        },
        namespace: None,
        names: Names::Any,
    },
];

/// Discovery, health and version, as Kubernetes' system:discovery and
/// system:public-info-viewer roles give every authenticated user (not /metrics).
pub const NODE_PATHS: &[PathRule] = &[PathRule {
    verbs: &["get"],
    urls: &[
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ],
}];

pub fn rules(id: &Identity) -> &'static [Rule] {
    match id {
        Identity::Admin => ADMIN_RULES,
        Identity::Node(_) => NODE_RULES,
    }
}

pub fn path_rules(id: &Identity) -> &'static [PathRule] {
    match id {
        Identity::Admin => ADMIN_PATHS,
        Identity::Node(_) => NODE_PATHS,
    }
}

/// A request on a resource, as the authorizer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// The plural (`pods`).
    pub resource: &'a str,
    pub sub: Option<&'a str>,
    pub ns: Option<&'a str>,
    /// The object's name (for create, the name in the body) if known.
    pub name: Option<&'a str>,
}

fn verb_matches(verbs: &[&str], verb: &str) -> bool {
    verbs.iter().any(|v| *v == "*" || *v == verb)
}

impl Resources {
    fn matches(self, group: &str, resource: &str, sub: Option<&str>) -> bool {
        match self {
            Resources::All => true,
            Resources::ServedExcept(except) if group.is_empty() && except.contains(&resource) => {
                false
            }
            Resources::Served | Resources::ServedExcept(_) => RESOURCES.iter().any(|r| {
                r.group == group
                    && r.plural == resource
                    && match sub {
                        None => true,
                        Some("status") => r.sub.status,
                        Some("scale") => r.sub.scale,
                        Some(_) => false,
                    }
            }),
            Resources::Listed {
                group: g,
                resources,
            } => {
                g == group
                    && resources.iter().any(|r| match sub {
                        None => *r == resource,
                        Some(s) => r.split_once('/') == Some((resource, s)),
                    })
            }
        }
    }

    /// The RBAC form: (API group, resources) pairs.
    fn listed(self) -> Vec<(&'static str, Vec<String>)> {
        match self {
            Resources::All => vec![("*", vec!["*".into()])],
            Resources::Served | Resources::ServedExcept(_) => {
                let except = match self {
                    Resources::ServedExcept(e) => e,
                    _ => &[][..],
                };
                let mut out: Vec<(&'static str, Vec<String>)> = Vec::new();
                for r in RESOURCES {
                    if r.group.is_empty() && except.contains(&r.plural) {
                        continue;
                    }
                    let i = if let Some(i) = out.iter().position(|(g, _)| *g == r.group) {
                        i
                    } else {
                        out.push((r.group, Vec::new()));
                        out.len() - 1
                    };
                    let list = &mut out[i].1;
                    if list.iter().any(|p| p == r.plural) {
                        // Served in several versions: listed once.
                        continue;
                    }
                    list.push(r.plural.to_string());
                    if r.sub.status {
                        list.push(format!("{}/status", r.plural));
                    }
                    if r.sub.scale {
                        list.push(format!("{}/scale", r.plural));
                    }
                }
                out
            }
            Resources::Listed { group, resources } => {
                vec![(group, resources.iter().map(|r| (*r).to_string()).collect())]
            }
        }
    }
}

/// The authorizer: the first rule that covers the request decides; a rule over bound pods
/// leaves the answer to whoever has the stored pod, unless a later rule allows outright.
pub fn decide(id: &Identity, a: &Attributes) -> Access {
    let node = match id {
        Identity::Admin => "",
        Identity::Node(n) => n.as_str(),
    };
    let mut bound = false;
    let mut referenced = false;
    for rule in rules(id) {
        let covered = verb_matches(rule.verbs, a.verb)
            && rule.resources.matches(a.group, a.resource, a.sub)
            && rule.namespace.is_none_or(|ns| a.ns == Some(ns));
        if !covered {
            continue;
        }
        match rule.names {
            Names::Any => return Access::Allowed,
            Names::Own if a.name == Some(node) || (a.name.is_none() && a.verb == "create") => {
                return Access::Allowed;
            }
            Names::Own => {}
            Names::BoundPods => bound = true,
            // Without a name and namespace there is no object to look up (a list).
            Names::Referenced => referenced = a.name.is_some() && a.ns.is_some(),
        }
    }
    if bound {
        Access::PodBoundTo(node.to_string())
    } else if referenced {
        Access::ReferencedBy(node.to_string())
    } else {
        Access::Denied
    }
}

/// Whether `id` may `verb` the non-resource `path` (`/metrics`, `/healthz`).
pub fn allows_path(id: &Identity, verb: &str, path: &str) -> bool {
    path_rules(id).iter().any(|r| {
        verb_matches(r.verbs, verb)
            && r.urls.iter().any(|u| match u.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => *u == path,
            })
    })
}

/// A rule as the rules review lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub verbs: Vec<&'static str>,
    pub api_groups: Vec<&'static str>,
    pub resources: Vec<String>,
    /// Empty: any name.
    pub resource_names: Vec<String>,
}

/// The resource rules of `id` that apply in `namespace` ("": cluster-wide), in RBAC form.
/// `bound_pods` names the pods bound to the node in `namespace`; `None` when they cannot be
/// listed (no namespace). Returns the rules and whether the list is incomplete.
pub fn resource_rules(
    id: &Identity,
    namespace: &str,
    bound_pods: Option<&[String]>,
) -> (Vec<Listed>, bool) {
    resource_rules_with(id, namespace, bound_pods, None)
}

/// [`resource_rules`] with the (plural, name) objects the node's pods in `namespace`
/// reference (`None`: not known, so the list is incomplete).
pub fn resource_rules_with(
    id: &Identity,
    namespace: &str,
    bound_pods: Option<&[String]>,
    referenced: Option<&[(&'static str, String)]>,
) -> (Vec<Listed>, bool) {
    let node = match id {
        Identity::Admin => "",
        Identity::Node(n) => n.as_str(),
    };
    let mut incomplete = false;
    let mut out = Vec::new();
    for rule in rules(id) {
        if rule.namespace.is_some_and(|ns| ns != namespace) {
            continue;
        }
        let names = match rule.names {
            Names::Any => Vec::new(),
            Names::Own => vec![node.to_string()],
            Names::Referenced => {
                let Some(refs) = referenced else {
                    incomplete = true;
                    continue;
                };
                // One rule per resource: a name list shared by ConfigMaps and Secrets would
                // grant a Secret named like a referenced ConfigMap.
                for (group, resources) in rule.resources.listed() {
                    for resource in resources {
                        let mut names: Vec<String> = refs
                            .iter()
                            .filter(|(p, _)| *p == resource)
                            .map(|(_, n)| n.clone())
                            .collect();
                        names.sort();
                        names.dedup();
                        if names.is_empty() {
                            continue;
                        }
                        out.push(Listed {
                            verbs: rule.verbs.to_vec(),
                            api_groups: vec![group],
                            resources: vec![resource],
                            resource_names: names,
                        });
                    }
                }
                continue;
            }
            Names::BoundPods => match bound_pods {
                // No pod bound: no rule (an empty name list would mean every pod).
                Some([]) => continue,
                Some(pods) => pods.to_vec(),
                None => {
                    incomplete = true;
                    continue;
                }
            },
        };
        for (group, resources) in rule.resources.listed() {
            out.push(Listed {
                verbs: rule.verbs.to_vec(),
                api_groups: vec![group],
                resources,
                resource_names: names.clone(),
            });
        }
    }
    (out, incomplete)
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
