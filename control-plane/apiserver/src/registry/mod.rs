//! The resource registry: everything the generic verbs need to know about a resource.
//! Adding a resource kind is one entry in `table.rs` plus its hooks (a module here, like
//! `pod.rs`), and its defaults/validation/columns in kproxy-api; the verbs have no per-kind
//! code paths beyond the flags and hooks below.

mod daemonset;
pub mod ephemeral;
mod namespace;
mod pod;
mod service;
mod serviceaccount;
mod table;

use futures::future::BoxFuture;
use kproxy_api::validate::FieldError;
use kproxy_store::{Op, Store};
use serde_json::Value;

pub use self::table::RESOURCES;
use crate::alloc::Ranges;
use crate::status::ApiResult;

/// The namespaces the cluster itself lives in: created at start, never deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Subresources a resource offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subresources {
    /// `/status`: writes there change only `.status`; writes to the main resource keep it.
    pub status: bool,
    /// `/scale` (autoscaling/v1 Scale over `.spec.replicas`).
    pub scale: bool,
    /// Pods only: `/binding`, `/log`, `/exec`, `/attach`, `/ephemeralcontainers`.
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
    /// The kind's own rules on create, update and delete.
    pub hooks: Hooks,
}

/// Per-kind rules the verbs call at fixed points; [`Hooks::NONE`] for a kind without any.
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// The status a new object starts with (the status subresource owns it afterwards);
    /// called with the object as the client sent it.
    pub initial_status: Option<fn(&Value) -> Value>,
    /// On update, before defaults and validation: what the change from `cur` makes `new`
    /// drop (a Service's type-dependent fields).
    pub prepare_update: Option<fn(cur: &Value, new: &mut Value)>,
    /// Store-held allocations claimed with the object and released with it.
    pub allocator: Option<Allocator>,
    /// On create, after defaults and before validation: admission that reads the store and
    /// may fill in the object (a Pod's service account); an error refuses the create.
    pub admit_create: Option<AdmitFn>,
    /// How a delete request treats the object (`None`: [`Deletion::Remove`]).
    pub delete: Option<DeleteHook>,
    /// Edits the object when it is marked for deletion (a Namespace turns `Terminating`).
    pub on_mark: Option<fn(&mut Value)>,
    /// Whether an update that removes the last finalizer of an object marked for deletion
    /// deletes it. Not where someone else removes it: the kubelet a pod, the namespace
    /// cleanup its namespace.
    pub last_finalizer_deletes: bool,
}

impl Hooks {
    pub const NONE: Hooks = Hooks {
        initial_status: None,
        prepare_update: None,
        allocator: None,
        admit_create: None,
        delete: None,
        on_mark: None,
        last_finalizer_deletes: true,
    };
}

/// Decides how a delete treats `cur`, given the request's gracePeriodSeconds; an error
/// refuses the delete.
pub type DeleteHook = fn(cur: &Value, grace: Option<i64>) -> ApiResult<Deletion>;

/// What a delete does with an object (finalizers aside, which always mark it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Removed now.
    Remove,
    /// Marked with a deletionTimestamp `grace` seconds ahead; its runner (the node's kubelet)
    /// removes it.
    Graceful { grace: i64 },
    /// Marked; the server deletes everything in it, then it (a Namespace).
    Contents,
}

/// Claims what an object needs (e.g. a Service's ClusterIP and NodePorts) as store keys, in
/// the same transaction as the object's write.
#[derive(Debug, Clone, Copy)]
pub struct Allocator {
    /// Fills in what `obj` lacks (keeping what `old` held on update) and returns the ops that
    /// claim new keys and release dropped ones; field errors are the request's 422.
    pub assign: AssignFn,
    /// The ops that release everything a deleted object held.
    pub release: fn(&Value) -> Vec<Op>,
    /// Whether a store key is one of this allocator's (a conflict on it is a lost race for
    /// an address, worth a retry).
    pub owns_key: fn(&str) -> bool,
}

/// See [`Hooks::admit_create`]: (store, object).
pub type AdmitFn = for<'a> fn(&'a dyn Store, &'a mut Value) -> BoxFuture<'a, ApiResult<()>>;

/// See [`Allocator::assign`]: (ranges, store, object, old object, the object's key).
pub type AssignFn = for<'a> fn(
    &'a Ranges,
    &'a dyn Store,
    &'a mut Value,
    Option<&'a Value>,
    &'a str,
) -> BoxFuture<'a, ApiResult<Result<Vec<Op>, Vec<FieldError>>>>;

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
