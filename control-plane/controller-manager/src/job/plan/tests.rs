use serde_json::{Value, json};

use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ts(secs: i64) -> String {
    t(secs).to_string()
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the JSON inline as json! literals"
)]
fn job(spec: Value, status: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    serde_json::from_value(json!({
        "metadata": {"name": "j", "namespace": "ns", "uid": "u1"},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

/// A pod of the Job created at `created`, in `phase`, its last condition change at `changed`.
fn pod(name: &str, phase: &str, created: i64, changed: i64) -> CachedPod {
    CachedPod::from_pod(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": ts(created)},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if phase == "Running" { "True" } else { "False" },
                 "lastTransitionTime": ts(changed)}
            ]},
        }))
        .unwrap(),
    )
}

fn deleting(mut p: CachedPod) -> CachedPod {
    p.deletion = Some(t(0));
    p
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.delete.iter().map(|n| &**n).collect()
}

fn cond<'a>(plan: &'a Plan, type_: &str) -> Option<&'a JobCondition> {
    plan.status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

#[test]
fn runs_parallelism_pods_until_completions_succeeded() {
    let j = job(json!({"completions": 3, "parallelism": 2}), json!({}));
    let out = plan(&j, &[], true, t(0));
    assert_eq!(out.create, 2);
    assert_eq!(out.status.active, Some(2));
    assert_eq!(out.status.start_time, Some(Time(t(0))));
    assert!(out.status.conditions.is_none());

    let (a, b) = (pod("a", "Running", 0, 1), pod("b", "Running", 0, 1));
    let j = job(
        json!({"completions": 3, "parallelism": 2}),
        json!({"startTime": ts(0)}),
    );
    let out = plan(&j, &[&a, &b], true, t(5));
    assert_eq!(
        (out.create, out.status.active, out.status.ready),
        (0, Some(2), Some(2))
    );

    // One done: one more to run, still two at a time.
    let a = pod("a", "Succeeded", 0, 6);
    let out = plan(&j, &[&a, &b], true, t(7));
    assert_eq!((out.create, out.status.succeeded), (1, Some(1)));
    // Two done, one running: the last completion needs no more pods.
    let c = pod("c", "Running", 7, 8);
    let b = pod("b", "Succeeded", 0, 9);
    let out = plan(&j, &[&a, &b, &c], true, t(10));
    assert_eq!((out.create, out.status.active), (0, Some(1)));

    let c = pod("c", "Succeeded", 7, 11);
    let out = plan(&j, &[&a, &b, &c], true, t(12));
    assert_eq!(out.status.succeeded, Some(3));
    assert_eq!(
        cond(&out, "SuccessCriteriaMet").and_then(|c| c.reason.as_deref()),
        Some("CompletionsReached")
    );
    assert!(cond(&out, "Complete").is_some());
    assert_eq!(out.status.completion_time, Some(Time(t(12))));
    assert_eq!(
        out.events,
        vec![(Type::Normal, "Completed", "Job completed")]
    );
}

#[test]
fn success_stops_remaining_pods_before_completing() {
    let j = job(
        json!({"completions": 1, "parallelism": 2}),
        json!({"startTime": ts(0)}),
    );
    let (a, b) = (pod("a", "Succeeded", 0, 5), pod("b", "Running", 0, 1));
    let p = plan(&j, &[&a, &b], true, t(6));
    assert!(cond(&p, "SuccessCriteriaMet").is_some());
    assert!(cond(&p, "Complete").is_none());
    assert_eq!(names(&p), ["b"]);
    assert_eq!(p.status.terminating, Some(1));
    // Once it is gone the Job completes.
    let j = Job {
        status: Some(p.status),
        ..j
    };
    let p = plan(&j, &[&a, &deleting(b)], true, t(7));
    assert!(cond(&p, "Complete").is_none(), "a pod still terminating");
    let p = plan(&j, &[&a], true, t(8));
    assert!(cond(&p, "Complete").is_some());
}

#[test]
fn without_completions_one_success_ends_the_job_once_the_rest_end() {
    let j = job(json!({"parallelism": 2}), json!({"startTime": ts(0)}));
    assert_eq!(plan(&j, &[], true, t(1)).create, 2);
    let (a, b) = (pod("a", "Succeeded", 0, 5), pod("b", "Running", 0, 1));
    let p = plan(&j, &[&a, &b], true, t(6));
    assert_eq!((p.create, p.delete.len()), (0, 0));
    assert!(cond(&p, "Complete").is_none());
    let b = pod("b", "Succeeded", 0, 7);
    assert!(cond(&plan(&j, &[&a, &b], true, t(8)), "Complete").is_some());
}

#[test]
fn failed_pods_are_replaced_after_an_exponential_backoff() {
    let j = job(
        json!({"completions": 1, "backoffLimit": 6}),
        json!({"startTime": ts(0)}),
    );
    let a = pod("a", "Failed", 0, 100);
    let p = plan(&j, &[&a], true, t(103));
    assert_eq!((p.create, p.status.failed), (0, Some(1)));
    let wait = p.requeue.unwrap();
    assert!(
        wait > Duration::from_secs(6) && wait <= Duration::from_secs(8),
        "{wait:?}"
    );
    assert_eq!(plan(&j, &[&a], true, t(110)).create, 1);
    // The second failure waits twice as long.
    let b = pod("b", "Failed", 110, 120);
    assert_eq!(plan(&j, &[&a, &b], true, t(135)).create, 0);
    assert_eq!(plan(&j, &[&a, &b], true, t(140)).create, 1);
}

#[test]
fn more_failures_than_the_backoff_limit_fail_the_job() {
    let j = job(
        json!({"completions": 1, "backoffLimit": 1}),
        json!({"startTime": ts(0)}),
    );
    let (a, b) = (pod("a", "Failed", 0, 5), pod("b", "Failed", 20, 25));
    let out = plan(&j, &[&a, &b], true, t(26));
    for type_ in ["FailureTarget", "Failed"] {
        let c = cond(&out, type_).unwrap();
        assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(
            c.message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
    }
    assert_eq!(out.status.failed, Some(2));
    assert_eq!(out.create, 0);
    assert!(out.status.completion_time.is_none());
    assert_eq!(
        out.events,
        vec![(
            Type::Warning,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit"
        )]
    );
    // One failure is within the limit.
    assert!(cond(&plan(&j, &[&a], true, t(26)), "FailureTarget").is_none());
}

#[test]
fn the_active_deadline_stops_the_pods_then_fails_the_job() {
    let j = job(
        json!({"completions": 2, "parallelism": 2, "activeDeadlineSeconds": 30}),
        json!({"startTime": ts(0)}),
    );
    let (a, b) = (pod("a", "Running", 0, 1), pod("b", "Running", 0, 1));
    let out = plan(&j, &[&a, &b], true, t(10));
    assert!(out.delete.is_empty());
    let wait = out.requeue.unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(21),
        "{wait:?}"
    );

    let out = plan(&j, &[&a, &b], true, t(30));
    assert_eq!(names(&out).len(), 2);
    assert_eq!(
        cond(&out, "FailureTarget").and_then(|c| c.reason.as_deref()),
        Some("DeadlineExceeded")
    );
    assert!(cond(&out, "Failed").is_none(), "pods are still stopping");
    let j = Job {
        status: Some(out.status),
        ..j
    };
    let out = plan(&j, &[&deleting(a.clone())], true, t(31));
    assert!(cond(&out, "Failed").is_none());
    assert!(out.delete.is_empty() && out.create == 0);
    let out = plan(&j, &[], true, t(32));
    let failed = cond(&out, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
}

#[test]
fn a_finished_job_is_deleted_after_its_ttl() {
    let status = json!({
        "startTime": ts(0), "completionTime": ts(10), "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": ts(10)}]
    });
    let j = job(
        json!({"completions": 1, "ttlSecondsAfterFinished": 5}),
        status,
    );
    let p = plan(&j, &[], true, t(12));
    assert!(!p.delete_job);
    let wait = p.requeue.unwrap();
    assert!(
        wait > Duration::from_secs(2) && wait <= Duration::from_secs(4),
        "{wait:?}"
    );
    assert_eq!(
        p.status,
        j.status.clone().unwrap(),
        "a finished job's status stays"
    );
    assert!(plan(&j, &[], true, t(15)).delete_job);
    // Without a TTL it stays.
    let j = job(
        json!({"completions": 1}),
        serde_json::to_value(&j.status).unwrap(),
    );
    let p = plan(&j, &[], true, t(1000));
    assert!(!p.delete_job && p.requeue.is_none());
    // A failed one counts from its Failed condition.
    let j = job(
        json!({"ttlSecondsAfterFinished": 0}),
        json!({"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": ts(20)}]}),
    );
    assert!(!plan(&j, &[], true, t(19)).delete_job);
    assert!(plan(&j, &[], true, t(20)).delete_job);
}

#[test]
fn suspend_stops_pods_and_resume_restarts_the_clock() {
    let j = job(
        json!({"completions": 1, "suspend": true}),
        json!({"startTime": ts(0)}),
    );
    let a = pod("a", "Running", 0, 1);
    let p = plan(&j, &[&a], true, t(5));
    assert_eq!(names(&p), ["a"]);
    assert_eq!(p.create, 0);
    assert!(p.status.start_time.is_none());
    assert_eq!(
        cond(&p, "Suspended").and_then(|c| c.reason.as_deref()),
        Some("JobSuspended")
    );
    let mut j = Job {
        status: Some(p.status),
        ..j
    };
    j.spec.as_mut().unwrap().suspend = Some(false);
    let p = plan(&j, &[], true, t(50));
    assert_eq!(p.create, 1);
    assert_eq!(p.status.start_time, Some(Time(t(50))));
    assert!(cond(&p, "Suspended").is_none());
    assert_eq!(p.events, vec![(Type::Normal, "Resumed", "Job resumed")]);
}

#[test]
fn nothing_is_created_or_scaled_down_while_the_cache_is_behind() {
    let j = job(json!({"completions": 2, "parallelism": 2}), json!({}));
    assert_eq!(plan(&j, &[], false, t(0)).create, 0);
    let j = job(json!({"completions": 5, "parallelism": 1}), json!({}));
    let (a, b) = (pod("a", "Running", 0, 1), pod("b", "Running", 3, 4));
    assert!(plan(&j, &[&a, &b], false, t(5)).delete.is_empty());
    // Too many (parallelism lowered): the newest goes.
    assert_eq!(names(&plan(&j, &[&a, &b], true, t(5))), ["b"]);
}

#[test]
fn container_restarts_count_against_the_limit_under_on_failure() {
    let mut j = job(
        json!({"completions": 1, "backoffLimit": 2}),
        json!({"startTime": ts(0)}),
    );
    let mut a = pod("a", "Running", 0, 1);
    a.restarts = 1;
    assert!(cond(&plan(&j, &[&a], true, t(5)), "FailureTarget").is_none());
    a.restarts = 2;
    // Never: restarts do not happen, so they do not count.
    assert!(cond(&plan(&j, &[&a], true, t(5)), "FailureTarget").is_none());
    let template = j.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    template.restart_policy = Some("OnFailure".into());
    let out = plan(&j, &[&a], true, t(5));
    assert_eq!(
        cond(&out, "FailureTarget").and_then(|c| c.reason.as_deref()),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(names(&out), ["a"]);
}
