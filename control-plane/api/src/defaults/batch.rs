//! batch/v1 Jobs: SetDefaults_Job and the selector the API server generates for them
//! (pkg/registry/batch/job/strategy.go `generateSelector`).

use serde_json::{Value, json};

use super::{Obj, child, set, template};

/// The label keys of a generated selector: the prefixed ones (Kubernetes ≥ 1.27) and the
/// legacy ones, both put on the template; the selector names the prefixed uid.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
pub const LEGACY_JOB_NAME: &str = "job-name";

/// SetDefaults_Job plus, unless `manualSelector`, the generated selector and template
/// labels (Kubernetes does this in PrepareForCreate; here it needs the uid the server
/// assigned before defaulting, and leaves labels already there alone, so an update
/// re-running it changes nothing).
pub(super) fn job(root: &mut Obj) {
    let (name, uid) = {
        let meta = root.get("metadata");
        let s = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        (s("name"), s("uid"))
    };
    let Some(spec) = child(root, "spec") else {
        return;
    };
    let unset = |spec: &Obj, k: &str| spec.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set(spec, "parallelism", json!(1));
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    set(spec, "manualSelector", json!(false));
    template(spec);
    if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) && !uid.is_empty() {
        generate_selector(spec, &name, &uid);
    }
    // Template labels become the Job's when it has none (on every decode in Kubernetes, so
    // a Job read back carries the generated ones too).
    let labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.as_object().is_some_and(|o| !o.is_empty()))
        .cloned();
    if let (Some(labels), Some(meta)) = (labels, child(root, "metadata")) {
        let empty = meta
            .get("labels")
            .is_none_or(|l| l.as_object().is_none_or(serde_json::Map::is_empty));
        if empty {
            meta.insert("labels".into(), labels);
        }
    }
}

fn generate_selector(spec: &mut Obj, name: &str, uid: &str) {
    let labels = child(spec, "template")
        .and_then(|t| child(t, "metadata"))
        .and_then(|m| child(m, "labels"));
    if let Some(labels) = labels {
        for (k, v) in [
            (LEGACY_JOB_NAME, name),
            (JOB_NAME, name),
            (LEGACY_CONTROLLER_UID, uid),
            (CONTROLLER_UID, uid),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
    if let Some(match_labels) = child(spec, "selector").and_then(|s| child(s, "matchLabels")) {
        match_labels
            .entry(CONTROLLER_UID)
            .or_insert_with(|| json!(uid));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::apply_defaults;

    #[test]
    fn generated_selector_keeps_what_the_user_set() {
        let mut j = json!({
            "metadata": {"name": "pi", "uid": "u1", "labels": {"team": "a"}},
            "spec": {"template": {"metadata": {"labels": {"job-name": "mine"}}}}
        });
        apply_defaults("Job", &mut j);
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            labels["job-name"], "mine",
            "a conflicting label is left for validation"
        );
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u1");
        assert_eq!(
            j["metadata"]["labels"],
            json!({"team": "a"}),
            "the Job's own labels stay"
        );
        let once = j.clone();
        apply_defaults("Job", &mut j);
        assert_eq!(j, once, "idempotent");
        // A manual selector is not touched.
        let mut m = json!({"metadata": {"name": "m", "uid": "u2"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        apply_defaults("Job", &mut m);
        assert_eq!(m["spec"]["selector"], json!({"matchLabels": {"a": "b"}}));
        assert!(m["spec"]["template"]["metadata"].is_null());
    }
}
