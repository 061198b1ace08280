//! apps/v1 Deployments and ReplicaSets.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{self, NameRule, Scope};
use super::{FieldError, Invalid, Json, Path, Raw, non_negative, one_of, pod};
use crate::labels;

const STRATEGY_TYPES: &[&str] = &["Recreate", "RollingUpdate"];
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. \
                           '1%',  or '93%', regex used for validation is '[0-9]+%')";

pub(crate) fn deployment(
    d: &Deployment,
    old: Option<&Deployment>,
    has_selector: bool,
) -> Result<Vec<FieldError>, Invalid> {
    let mut errs = meta::object_meta(&d.metadata, Scope::Namespaced, NameRule::Subdomain);
    let spec = d.spec.clone().unwrap_or_default();
    let path = Path::root("spec");
    errs.extend(non_negative(
        &path.child("replicas"),
        spec.replicas.map(i64::from),
    ));
    errs.extend(selector_and_template(
        &spec.selector,
        has_selector,
        &spec.template,
        &path,
    )?);
    if let Some(strategy) = &spec.strategy {
        errs.extend(deployment_strategy(strategy, &path.child("strategy")));
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    errs.extend(non_negative(
        &path.child("minReadySeconds"),
        Some(i64::from(min_ready)),
    ));
    errs.extend(non_negative(
        &path.child("revisionHistoryLimit"),
        spec.revision_history_limit.map(i64::from),
    ));
    if let Some(deadline) = spec.progress_deadline_seconds {
        errs.extend(non_negative(
            &path.child("progressDeadlineSeconds"),
            Some(i64::from(deadline)),
        ));
        if deadline <= min_ready {
            errs.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&d.metadata, &old.metadata));
        let old_sel = old.spec.as_ref().map(|s| &s.selector);
        errs.extend(selector_immutable(&spec.selector, old_sel, &path));
    }
    Ok(errs)
}

pub(crate) fn replica_set(
    rs: &ReplicaSet,
    old: Option<&ReplicaSet>,
    has_selector: bool,
) -> Result<Vec<FieldError>, Invalid> {
    let mut errs = meta::object_meta(&rs.metadata, Scope::Namespaced, NameRule::Subdomain);
    let spec = rs.spec.clone().unwrap_or_default();
    let path = Path::root("spec");
    errs.extend(non_negative(
        &path.child("replicas"),
        spec.replicas.map(i64::from),
    ));
    errs.extend(non_negative(
        &path.child("minReadySeconds"),
        spec.min_ready_seconds.map(i64::from),
    ));
    let template = spec.template.clone().unwrap_or_default();
    errs.extend(selector_and_template(
        &spec.selector,
        has_selector,
        &template,
        &path,
    )?);
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&rs.metadata, &old.metadata));
        let old_sel = old.spec.as_ref().map(|s| &s.selector);
        errs.extend(selector_immutable(&spec.selector, old_sel, &path));
    }
    Ok(errs)
}

/// The selector rules and ValidatePodTemplateSpecForReplicaSet.
fn selector_and_template(
    selector: &LabelSelector,
    has_selector: bool,
    template: &PodTemplateSpec,
    spec_path: &Path,
) -> Result<Vec<FieldError>, Invalid> {
    let mut errs = Vec::new();
    let sel_path = spec_path.child("selector");
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(std::collections::BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(std::vec::Vec::is_empty);
    let mut selector_ok = true;
    if has_selector {
        let sel_errs = meta::label_selector(selector, &sel_path);
        selector_ok = sel_errs.is_empty();
        errs.extend(sel_errs);
        if !selector_ok {
            errs.push(FieldError::invalid(
                &sel_path,
                Json(selector),
                "invalid label selector",
            ));
        }
        if empty {
            errs.push(FieldError::invalid(
                &sel_path,
                Json(selector),
                "empty selector is invalid for deployment",
            ));
        }
    } else {
        errs.push(FieldError::required(&sel_path, ""));
    }

    let tpath = spec_path.child("template");
    let tmeta = template.metadata.clone().unwrap_or_default();
    let tlabels = tmeta.labels.clone().unwrap_or_default();
    // A missing selector selects nothing, so it does not match any template either.
    let matches = has_selector && (empty || labels::matches(selector, &tlabels));
    if selector_ok && !matches {
        errs.push(FieldError::invalid(
            &tpath.child("metadata").child("labels"),
            Json(&tlabels),
            "`selector` does not match template `labels`",
        ));
    }
    // ValidatePodTemplateSpec names these without "metadata" (the internal type embeds it).
    errs.extend(meta::labels(tmeta.labels.as_ref(), &tpath.child("labels")));
    errs.extend(meta::annotations(
        tmeta.annotations.as_ref(),
        &tpath.child("annotations"),
    ));

    let pod_spec = template.spec.clone().unwrap_or_default();
    let spec_path = tpath.child("spec");
    pod::check_quantities(&pod_spec, &spec_path)?;
    errs.extend(pod::pod_spec(&pod_spec, &spec_path));
    // Controllers restart their pods themselves by replacing them.
    if let Some(policy) = pod_spec
        .restart_policy
        .as_deref()
        .filter(|p| *p != "Always")
    {
        errs.extend(one_of(
            &spec_path.child("restartPolicy"),
            Some(policy),
            &["Always"],
        ));
    }
    if pod_spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            &spec_path.child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    Ok(errs)
}

/// apps/v1 selectors may not change: the controller would orphan its pods.
pub(super) fn selector_immutable(
    new: &LabelSelector,
    old: Option<&LabelSelector>,
    spec_path: &Path,
) -> Option<FieldError> {
    let old = old?;
    (normalized(new) != normalized(old)).then(|| {
        FieldError::invalid(
            &spec_path.child("selector"),
            Json(new),
            "field is immutable",
        )
    })
}

/// `matchLabels: {}` and no matchLabels are the same selector.
fn normalized(s: &LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone().filter(|m| !m.is_empty()),
        match_expressions: s.match_expressions.clone().filter(|e| !e.is_empty()),
    }
}

fn deployment_strategy(strategy: &DeploymentStrategy, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ty = strategy.type_.as_deref();
    errs.extend(one_of(&path.child("type"), ty, STRATEGY_TYPES));
    match (ty, &strategy.rolling_update) {
        (Some("Recreate"), Some(_)) => errs.push(FieldError::forbidden(
            &path.child("rollingUpdate"),
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        (Some("RollingUpdate") | None, Some(ru)) => {
            let rp = path.child("rollingUpdate");
            let unavailable = ru.max_unavailable.as_ref();
            let surge = ru.max_surge.as_ref();
            if let Some(v) = unavailable {
                errs.extend(int_or_percent(v, &rp.child("maxUnavailable")));
                if percent_value(v).is_some_and(|p| p > 100) {
                    errs.push(FieldError::invalid(
                        &rp.child("maxUnavailable"),
                        Raw(int_or_string(v)),
                        "must not be greater than 100%",
                    ));
                }
            }
            if let Some(v) = surge {
                errs.extend(int_or_percent(v, &rp.child("maxSurge")));
            }
            // Unset values default to 25%, so only two explicit zeros stall a rollout.
            if let (Some(u), Some(s)) = (unavailable, surge)
                && int_or_percent_value(u) == 0
                && int_or_percent_value(s) == 0
            {
                errs.push(FieldError::invalid(
                    &rp.child("maxUnavailable"),
                    Raw(int_or_string(u)),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        _ => {}
    }
    errs
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// ValidatePositiveIntOrPercent.
pub(super) fn int_or_percent(v: &IntOrString, path: &Path) -> Vec<FieldError> {
    match v {
        IntOrString::Int(n) => non_negative(path, Some(i64::from(*n)))
            .into_iter()
            .collect(),
        IntOrString::String(s) if percent_value(v).is_none() => {
            vec![FieldError::invalid(path, Raw(s.clone()), PERCENT_MSG)]
        }
        IntOrString::String(_) => Vec::new(),
    }
}

/// The number of a `NN%` string.
pub(super) fn percent_value(v: &IntOrString) -> Option<u64> {
    match v {
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        }
        IntOrString::Int(_) => None,
    }
}

/// The number in either form (malformed percentages count as 0, as in Kubernetes).
pub(super) fn int_or_percent_value(v: &IntOrString) -> i64 {
    match v {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(_) => {
            percent_value(v).map_or(0, |p| i64::try_from(p).unwrap_or(i64::MAX))
        }
    }
}
