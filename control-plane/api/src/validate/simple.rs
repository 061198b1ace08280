//! Kinds with few rules: Namespace, Node, Event, Lease, and the generic fallback.

use std::collections::HashSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_apimachinery::names;
use serde::Deserialize;

use super::meta::{self, NameRule, Scope};
use super::{FieldError, Json, Path, ip, name_errors, one_of};

const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
const LEASE_STRATEGIES: &[&str] = &["OldestEmulationVersion"];
/// Length limits of the fields series-style Events must carry.
const EVENT_FIELD_LIMIT: usize = 128;
const EVENT_NOTE_LIMIT: usize = 1024;

pub(crate) fn namespace(ns: &Namespace, old: Option<&Namespace>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&ns.metadata, Scope::Cluster, NameRule::Label);
    let fin_path = Path::root("spec").child("finalizers");
    for f in ns.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
        errs.extend(meta::finalizer_name(f, &fin_path));
    }
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&ns.metadata, &old.metadata));
    }
    errs
}

pub(crate) fn node(node: &Node, old: Option<&Node>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&node.metadata, Scope::Cluster, NameRule::Subdomain);
    let default = NodeSpec::default();
    let spec = node.spec.as_ref().unwrap_or(&default);
    let path = Path::root("spec");
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        errs.extend(ip::cidr(&path.child("podCIDR"), cidr));
    }
    for (i, cidr) in spec.pod_cidrs.iter().flatten().enumerate() {
        errs.extend(ip::cidr(&path.child("podCIDRs").index(i), cidr));
    }
    let mut seen = HashSet::new();
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        let p = path.child("taints").index(i);
        errs.extend(name_errors(
            &p.child("key"),
            &taint.key,
            names::qualified_name(&taint.key),
        ));
        if let Some(v) = taint.value.as_deref() {
            errs.extend(name_errors(&p.child("value"), v, names::label_value(v)));
        }
        if taint.effect.is_empty() {
            errs.push(FieldError::required(&p.child("effect"), ""));
        } else {
            errs.extend(one_of(
                &p.child("effect"),
                Some(&taint.effect),
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            errs.push(FieldError::duplicate(&p, Json(taint)));
        }
    }
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&node.metadata, &old.metadata));
        let old_spec = old.spec.as_ref().unwrap_or(&default);
        // Routes and the provider's bookkeeping hang off these: set once, then fixed.
        let cidrs = |s: &k8s_openapi::api::core::v1::NodeSpec| {
            let mut v = s.pod_cidrs.clone().unwrap_or_default();
            if v.is_empty() {
                v.extend(s.pod_cidr.clone().filter(|c| !c.is_empty()));
            }
            v
        };
        let (old_cidrs, new_cidrs) = (cidrs(old_spec), cidrs(spec));
        if !old_cidrs.is_empty() && old_cidrs != new_cidrs {
            errs.push(FieldError::forbidden(
                &path.child("podCIDRs"),
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let old_provider = old_spec.provider_id.as_deref().unwrap_or_default();
        if !old_provider.is_empty()
            && spec.provider_id.as_deref().unwrap_or_default() != old_provider
        {
            errs.push(FieldError::forbidden(
                &path.child("providerID"),
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    errs
}

/// core/v1 Events (legacyValidateEvent): the namespace must agree with the involved object;
/// series-style events (with eventTime) must say who reported them.
pub(crate) fn event(ev: &Event, old: Option<&Event>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&ev.metadata, Scope::Namespaced, NameRule::Subdomain);
    let ns = ev.metadata.namespace.as_deref().unwrap_or_default();
    let involved_ns = ev.involved_object.namespace.as_deref().unwrap_or_default();
    let ns_path = Path::root("involvedObject").child("namespace");
    let mismatch = || FieldError::invalid(&ns_path, involved_ns, "does not match event.namespace");
    if ev.event_time.is_none() {
        // Cluster-scoped objects' events live in "default" (or nowhere, from old clients).
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        let controller = ev.reporting_component.as_deref().unwrap_or_default();
        let cpath = Path::root("reportingComponent");
        if controller.is_empty() {
            errs.push(FieldError::required(&cpath, ""));
        }
        errs.extend(name_errors(
            &cpath,
            controller,
            names::qualified_name(controller),
        ));
        let limited = [
            (
                "reportingInstance",
                ev.reporting_instance.as_deref(),
                EVENT_FIELD_LIMIT,
                true,
            ),
            ("action", ev.action.as_deref(), EVENT_FIELD_LIMIT, true),
            ("reason", ev.reason.as_deref(), EVENT_FIELD_LIMIT, true),
            ("message", ev.message.as_deref(), EVENT_NOTE_LIMIT, false),
        ];
        for (field, value, limit, required) in limited {
            let value = value.unwrap_or_default();
            if required && value.is_empty() {
                errs.push(FieldError::required(&Path::root(field), ""));
            }
            if value.len() > limit {
                errs.push(FieldError::invalid(
                    &Path::root(field),
                    "",
                    format!("can have at most {limit} characters"),
                ));
            }
        }
    }
    if !ns.is_empty() {
        errs.extend(name_errors(
            &Path::root("namespace"),
            ns,
            names::dns1123_subdomain(ns),
        ));
    }
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&ev.metadata, &old.metadata));
    }
    errs
}

pub(crate) fn lease(lease: &Lease, old: Option<&Lease>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&lease.metadata, Scope::Namespaced, NameRule::Subdomain);
    if let Some(spec) = &lease.spec {
        let path = Path::root("spec");
        if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(FieldError::invalid(
                &path.child("leaseDurationSeconds"),
                d,
                "must be greater than 0",
            ));
        }
        errs.extend(super::non_negative(
            &path.child("leaseTransitions"),
            spec.lease_transitions.map(i64::from),
        ));
        let strategy = spec.strategy.as_deref().filter(|s| !s.is_empty());
        errs.extend(one_of(&path.child("strategy"), strategy, LEASE_STRATEGIES));
        if spec
            .preferred_holder
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            && strategy.is_none()
        {
            errs.push(FieldError::forbidden(
                &path.child("preferredHolder"),
                "may only be specified if `strategy` is defined",
            ));
        }
    }
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&lease.metadata, &old.metadata));
    }
    errs
}

/// Any other object: metadata only, names as DNS subdomains.
#[derive(Deserialize)]
pub(crate) struct AnyObject {
    #[serde(default)]
    metadata: ObjectMeta,
}

pub(crate) fn generic(obj: &AnyObject, old: Option<&AnyObject>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&obj.metadata, Scope::Namespaced, NameRule::Subdomain);
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&obj.metadata, &old.metadata));
    }
    errs
}
