//! apps/v1 DaemonSets (pkg/apis/apps/validation: ValidateDaemonSet, ValidateDaemonSetSpec,
//! ValidateDaemonSetUpdateStrategy, ValidateDaemonSetUpdate).

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetUpdateStrategy};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::apps::{int_or_percent, int_or_percent_value, percent_value, selector_immutable};
use super::meta::{self, NameRule, Scope};
use super::{ErrorType, FieldError, Invalid, Json, Path, Raw, go_quote, non_negative, one_of, pod};
use crate::labels;

const STRATEGY_TYPES: &[&str] = &["RollingUpdate", "OnDelete"];

pub(crate) fn daemon_set(
    ds: &DaemonSet,
    old: Option<&DaemonSet>,
    has_selector: bool,
) -> Result<Vec<FieldError>, Invalid> {
    let mut errs = meta::object_meta(&ds.metadata, Scope::Namespaced, NameRule::Subdomain);
    let spec = ds.spec.clone().unwrap_or_default();
    let path = Path::root("spec");

    let sel_path = path.child("selector");
    let selector = &spec.selector;
    let sel_errs = if has_selector {
        meta::label_selector(selector, &sel_path)
    } else {
        Vec::new()
    };
    let selector_ok = sel_errs.is_empty();
    errs.extend(sel_errs);
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(std::collections::BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    let template = &spec.template;
    let tmeta = template.metadata.clone().unwrap_or_default();
    let tlabels = tmeta.labels.clone().unwrap_or_default();
    let tpath = path.child("template");
    // No selector selects nothing (LabelSelectorAsSelector(nil)); an empty one everything.
    let matches = has_selector && (empty || labels::matches(selector, &tlabels));
    if selector_ok && !matches {
        errs.push(FieldError::invalid(
            &tpath.child("metadata").child("labels"),
            Json(&tlabels),
            "`selector` does not match template `labels`",
        ));
    }
    if has_selector && empty {
        errs.push(FieldError::invalid(
            &sel_path,
            Json(selector),
            "empty selector is invalid for daemonset",
        ));
    }

    // ValidatePodTemplateSpec names these without "metadata" (the internal type embeds it).
    errs.extend(meta::labels(tmeta.labels.as_ref(), &tpath.child("labels")));
    errs.extend(meta::annotations(
        tmeta.annotations.as_ref(),
        &tpath.child("annotations"),
    ));
    let pod_spec = template.spec.clone().unwrap_or_default();
    let pod_path = tpath.child("spec");
    pod::check_quantities(&pod_spec, &pod_path)?;
    errs.extend(pod::pod_spec(&pod_spec, &pod_path));
    // The controller restarts nothing itself: a daemon pod's containers always restart.
    if let Some(policy) = pod_spec
        .restart_policy
        .as_deref()
        .filter(|p| *p != "Always")
    {
        errs.extend(one_of(
            &pod_path.child("restartPolicy"),
            Some(policy),
            &["Always"],
        ));
    }
    if pod_spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            &pod_path.child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    errs.extend(non_negative(
        &path.child("minReadySeconds"),
        spec.min_ready_seconds.map(i64::from),
    ));
    errs.extend(update_strategy(
        spec.update_strategy.as_ref(),
        &path.child("updateStrategy"),
    ));
    errs.extend(non_negative(
        &path.child("revisionHistoryLimit"),
        spec.revision_history_limit.map(i64::from),
    ));

    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&ds.metadata, &old.metadata));
        let old_sel = old.spec.as_ref().map(|s| &s.selector);
        errs.extend(selector_immutable(selector, old_sel, &path));
    }
    Ok(errs)
}

/// ValidateDaemonSetUpdateStrategy (after defaulting, which fills in the type and, for
/// RollingUpdate, both bounds).
fn update_strategy(strategy: Option<&DaemonSetUpdateStrategy>, path: &Path) -> Vec<FieldError> {
    let Some(strategy) = strategy else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    match strategy.type_.as_deref() {
        Some("OnDelete") => {}
        None | Some("RollingUpdate") => {
            let rp = path.child("rollingUpdate");
            let Some(ru) = &strategy.rolling_update else {
                errs.push(FieldError::required(&rp, ""));
                return errs;
            };
            for (name, v) in [
                ("maxUnavailable", &ru.max_unavailable),
                ("maxSurge", &ru.max_surge),
            ] {
                let Some(v) = v else { continue };
                errs.extend(int_or_percent(v, &rp.child(name)).into_iter().map(|mut e| {
                    e.value = Some(intstr_value(v));
                    e
                }));
                if percent_value(v).is_some_and(|p| p > 100) {
                    errs.push(FieldError::invalid(
                        &rp.child(name),
                        Raw(intstr_value(v)),
                        "must not be greater than 100%",
                    ));
                }
            }
            let has_unavailable = ru
                .max_unavailable
                .as_ref()
                .is_some_and(|v| int_or_percent_value(v) != 0);
            let has_surge = ru
                .max_surge
                .as_ref()
                .is_some_and(|v| int_or_percent_value(v) != 0);
            match (has_unavailable, has_surge) {
                (true, true) => errs.push(FieldError::invalid(
                    &rp.child("maxSurge"),
                    Raw(ru.max_surge.as_ref().map(intstr_value).unwrap_or_default()),
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => errs.push(FieldError::required(
                    &rp.child("maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                )),
                _ => {}
            }
        }
        Some(other) => {
            // Kubernetes prints the internal struct as JSON: Go field names, intstr bare.
            let ru = strategy
                .rolling_update
                .as_ref()
                .map_or("null".into(), |ru| {
                    let v = |x: &Option<IntOrString>| match x {
                        Some(IntOrString::String(s)) => json!(s),
                        Some(IntOrString::Int(n)) => json!(n),
                        None => json!(0),
                    };
                    format!(
                        "{{\"MaxUnavailable\":{},\"MaxSurge\":{}}}",
                        v(&ru.max_unavailable),
                        v(&ru.max_surge)
                    )
                });
            let supported: Vec<String> = STRATEGY_TYPES.iter().map(|s| go_quote(s)).collect();
            errs.push(FieldError::new(
                path,
                ErrorType::NotSupported,
                // Go marshals struct fields in declaration order.
                Some(format!(
                    "{{\"Type\":{},\"RollingUpdate\":{ru}}}",
                    json!(other)
                )),
                format!("supported values: {}", supported.join(", ")),
            ));
        }
    }
    errs
}

/// An IntOrString as Kubernetes prints it in these errors: a number bare, a string quoted.
fn intstr_value(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => go_quote(s),
    }
}
