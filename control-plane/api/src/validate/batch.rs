//! batch/v1 Jobs (pkg/apis/batch/validation: ValidateJob, ValidateGeneratedSelector,
//! ValidateJobSpecUpdate).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};

use super::meta::{self, NameRule, Scope};
use super::{FieldError, Invalid, Json, Path, non_negative, one_of, pod};
use crate::defaults::batch::{CONTROLLER_UID, JOB_NAME, LEGACY_CONTROLLER_UID, LEGACY_JOB_NAME};
use crate::labels;

const RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];
const COMPLETION_MODES: &[&str] = &["NonIndexed", "Indexed"];
const REPLACEMENT_POLICIES: &[&str] = &["TerminatingOrFailed", "Failed"];

pub(crate) fn job(
    job: &Job,
    old: Option<&Job>,
    has_selector: bool,
) -> Result<Vec<FieldError>, Invalid> {
    let mut errs = meta::object_meta(&job.metadata, Scope::Namespaced, NameRule::Subdomain);
    let spec = job.spec.clone().unwrap_or_default();
    errs.extend(generated_selector(job, &spec, has_selector));
    errs.extend(job_spec(&spec, has_selector)?);
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&job.metadata, &old.metadata));
        let old_spec = old.spec.clone().unwrap_or_default();
        let path = Path::root("spec");
        // Only the Job's scheduling fields may change (ValidateJobSpecUpdate).
        if spec.completions != old_spec.completions {
            errs.push(FieldError::invalid(
                &path.child("completions"),
                Json(&spec.completions),
                "field is immutable",
            ));
        }
        if spec.selector != old_spec.selector {
            errs.push(FieldError::invalid(
                &path.child("selector"),
                Json(&spec.selector),
                "field is immutable",
            ));
        }
        if spec.template != old_spec.template {
            errs.push(FieldError::invalid(
                &path.child("template"),
                Json(&spec.template),
                "field is immutable",
            ));
        }
    }
    Ok(errs)
}

/// ValidateGeneratedSelector: unless `manualSelector`, the template carries the generated
/// labels and the selector selects them.
fn generated_selector(job: &Job, spec: &JobSpec, has_selector: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.manual_selector == Some(true) || !has_selector {
        return errs;
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    if uid.is_empty() {
        errs.push(FieldError::required(
            &Path::root("metadata").child("uid"),
            "",
        ));
    }
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    let tlabels = tmeta.labels.clone().unwrap_or_default();
    let lpath = Path::root("spec")
        .child("template")
        .child("metadata")
        .child("labels");
    for (key, want) in [
        (LEGACY_CONTROLLER_UID, &uid),
        (LEGACY_JOB_NAME, &name),
        (CONTROLLER_UID, &uid),
        (JOB_NAME, &name),
    ] {
        match tlabels.get(key) {
            None => errs.push(FieldError::required(&lpath.key(key), want.clone())),
            Some(v) if v != want => {
                errs.push(FieldError::invalid(
                    &lpath.key(key),
                    Json(&tlabels),
                    want.clone(),
                ));
            }
            Some(_) => {}
        }
    }
    let expected = BTreeMap::from([
        (CONTROLLER_UID.to_string(), uid.clone()),
        (JOB_NAME.to_string(), name.clone()),
        (LEGACY_CONTROLLER_UID.to_string(), uid),
        (LEGACY_JOB_NAME.to_string(), name),
    ]);
    if let Some(sel) = &spec.selector
        && !labels::matches(sel, &expected)
    {
        errs.push(FieldError::invalid(
            &Path::root("spec").child("selector"),
            Json(sel),
            "`selector` not auto-generated",
        ));
    }
    errs
}

/// ValidateJobSpec.
fn job_spec(spec: &JobSpec, has_selector: bool) -> Result<Vec<FieldError>, Invalid> {
    let path = Path::root("spec");
    let mut errs = Vec::new();
    for (name, v) in [
        ("parallelism", spec.parallelism.map(i64::from)),
        ("completions", spec.completions.map(i64::from)),
        ("activeDeadlineSeconds", spec.active_deadline_seconds),
        ("backoffLimit", spec.backoff_limit.map(i64::from)),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished.map(i64::from),
        ),
    ] {
        errs.extend(non_negative(&path.child(name), v));
    }
    let mode = spec.completion_mode.as_deref();
    errs.extend(one_of(
        &path.child("completionMode"),
        mode,
        COMPLETION_MODES,
    ));
    if mode == Some("Indexed") && spec.completions.is_none() {
        errs.push(FieldError::required(
            &path.child("completions"),
            "when completion mode is Indexed",
        ));
    }
    errs.extend(one_of(
        &path.child("podReplacementPolicy"),
        spec.pod_replacement_policy.as_deref(),
        REPLACEMENT_POLICIES,
    ));

    let sel_path = path.child("selector");
    match (&spec.selector, has_selector) {
        (Some(sel), true) => {
            errs.extend(meta::label_selector(sel, &sel_path));
            let tlabels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            if labels::selector_string(sel).is_some() && !labels::matches(sel, &tlabels) {
                errs.push(FieldError::invalid(
                    &path.child("template").child("metadata").child("labels"),
                    Json(&tlabels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        _ => errs.push(FieldError::required(&sel_path, "")),
    }

    let tpath = path.child("template");
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    errs.extend(meta::labels(tmeta.labels.as_ref(), &tpath.child("labels")));
    errs.extend(meta::annotations(
        tmeta.annotations.as_ref(),
        &tpath.child("annotations"),
    ));
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    let spec_path = tpath.child("spec");
    pod::check_quantities(&pod_spec, &spec_path)?;
    errs.extend(pod::pod_spec(&pod_spec, &spec_path));
    // The pod spec check allows Always; a Job's pods must end.
    errs.extend(one_of(
        &spec_path.child("restartPolicy"),
        pod_spec.restart_policy.as_deref(),
        RESTART_POLICIES,
    ));
    Ok(errs)
}
