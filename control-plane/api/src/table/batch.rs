//! batch/v1 Jobs (printJob).

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS_DESC, Column, IMAGES_DESC, NAME, age, col, container_cells, human_duration,
    wide,
};
use crate::labels;

pub(super) fn job_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Status", "Status of the job."),
        col(
            "Completions",
            "The number of pods which reached phase Succeeded. The value increases monotonically \
             for a given spec. However, it may decrease in reaction to scale down of elastic \
             indexed jobs.",
        ),
        col("Duration", "Time required to complete the job."),
        AGE,
        wide("Containers", CONTAINERS_DESC),
        wide("Images", IMAGES_DESC),
        wide(
            "Selector",
            "A label query over pods that should match the pod count. Normally, the system sets \
             this field for you. More info: \
             https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
        ),
    ]
}

fn has_condition(conditions: &[JobCondition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

pub(super) fn job_row(job: &Job, now: Timestamp) -> Vec<Value> {
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let succeeded = status.succeeded.unwrap_or(0);
    let completions = match spec.completions {
        Some(c) => format!("{succeeded}/{c}"),
        None if spec.parallelism.unwrap_or(0) > 1 => {
            format!("{succeeded}/1 of {}", spec.parallelism.unwrap_or(0))
        }
        None => format!("{succeeded}/1"),
    };
    let duration = match (&status.start_time, &status.completion_time) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.duration_since(start.0).unsigned_abs()),
        (Some(start), Some(end)) => human_duration(end.0.duration_since(start.0).unsigned_abs()),
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let state = if has_condition(conditions, "Complete") {
        "Complete"
    } else if has_condition(conditions, "Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if has_condition(conditions, "Suspended") {
        "Suspended"
    } else if has_condition(conditions, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(
        spec.template
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default(),
    );
    let selector = match spec.selector.as_ref().map(labels::selector_string) {
        None => "<none>".to_string(),
        Some(None) => "<error>".to_string(),
        Some(Some(s)) if s.is_empty() => "<none>".to_string(),
        Some(Some(s)) => s,
    };
    vec![
        json!(job.metadata.name.clone().unwrap_or_default()),
        json!(state),
        json!(completions),
        json!(duration),
        age(&job.metadata, now),
        names,
        images,
        json!(selector),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(spec: &Value, status: &Value, now: &str) -> Vec<Value> {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "pi", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec, "status": status,
        }))
        .unwrap();
        job_row(&job, now.parse().unwrap())
    }

    #[test]
    fn status_completions_and_duration_as_kubectl_prints_them() {
        let now = "2026-01-01T00:05:00Z";
        let r = row(&json!({"completions": 3, "template": {}}), &json!({}), now);
        assert_eq!(
            &r[..5],
            [
                json!("pi"),
                json!("Running"),
                json!("0/3"),
                json!(""),
                json!("5m")
            ]
        );
        let done = json!({
            "succeeded": 3, "startTime": "2026-01-01T00:00:02Z",
            "completionTime": "2026-01-01T00:00:40Z",
            "conditions": [{"type": "Complete", "status": "True"}]
        });
        let r = row(&json!({"completions": 3, "template": {}}), &done, now);
        assert_eq!(&r[1..4], [json!("Complete"), json!("3/3"), json!("38s")]);
        let failed = json!({"startTime": "2026-01-01T00:04:00Z",
            "conditions": [{"type": "FailureTarget", "status": "True"}]});
        let r = row(&json!({"parallelism": 2, "template": {}}), &failed, now);
        assert_eq!(
            &r[1..4],
            [json!("FailureTarget"), json!("0/1 of 2"), json!("60s")]
        );
        let r = row(
            &json!({"template": {}}),
            &json!({"conditions": [{"type": "Failed", "status": "True"}]}),
            now,
        );
        assert_eq!(&r[1..3], [json!("Failed"), json!("0/1")]);
    }
}
