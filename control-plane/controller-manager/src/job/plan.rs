//! What one Job sync does, decided from the Job and its pods alone (pure, unit-tested): pods
//! to create and delete, the new status, the events to tell, when to look again, and
//! whether the Job's time to live is over. kube-controller-manager's syncJob in NonIndexed
//! completion mode.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::{
    events::Type,
    podcache::{CachedPod, Phase},
};

/// The first replacement of a failed pod waits this long, doubled per failure
/// (DefaultJobPodFailureBackOff) up to [`MAX_BACKOFF`].
pub const BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_mins(10);

pub const BACKOFF_LIMIT_EXCEEDED: (&str, &str) = (
    "BackoffLimitExceeded",
    "Job has reached the specified backoff limit",
);
pub const DEADLINE_EXCEEDED: (&str, &str) = (
    "DeadlineExceeded",
    "Job was active longer than specified deadline",
);
const COMPLETIONS_REACHED: (&str, &str) = (
    "CompletionsReached",
    "Reached expected number of succeeded pods",
);

/// The outcome of one sync.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: usize,
    /// Pods to delete, by name.
    pub delete: Vec<Arc<str>>,
    pub status: JobStatus,
    /// Events about the Job: (type, reason, message).
    pub events: Vec<(Type, &'static str, &'static str)>,
    /// ttlSecondsAfterFinished has passed: delete the Job (its pods go with it).
    pub delete_job: bool,
    /// Look again after this long (a backoff, deadline or TTL falling due).
    pub requeue: Option<Duration>,
}

fn condition_true(conds: &[JobCondition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// Sets condition `type_` to `status` (a new transition time only when it changes).
fn set_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    (reason, message): (&str, &str),
    now: Timestamp,
) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status {
            return false;
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        c.last_transition_time = Some(Time(now));
        return true;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// When a finished Job finished: its completion time, else when its final condition came.
fn finished_at(status: &JobStatus) -> Option<Timestamp> {
    if let Some(t) = &status.completion_time {
        return Some(t.0);
    }
    status
        .conditions
        .iter()
        .flatten()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .find_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    // A little after the moment, so the next sync sees it passed.
    now.duration_until(at).unsigned_abs() + Duration::from_millis(50)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What the pods of a Job are doing.
struct Pods<'a> {
    /// Running or about to: not finished, not being deleted.
    active: Vec<&'a CachedPod>,
    terminating: usize,
    ready: usize,
    succeeded: i32,
    failed: i32,
    /// When the newest failure happened (the pod's last condition change).
    last_failure: Option<Timestamp>,
}

fn classify<'a>(pods: &[&'a CachedPod], old: &JobStatus) -> Pods<'a> {
    let mut p = Pods {
        active: Vec::new(),
        terminating: 0,
        ready: 0,
        succeeded: 0,
        failed: 0,
        last_failure: None,
    };
    for pod in pods {
        match pod.phase {
            Phase::Succeeded => p.succeeded += 1,
            Phase::Failed => {
                p.failed += 1;
                let at = pod.conditions_changed.or(pod.created);
                p.last_failure = p.last_failure.max(at);
            }
            _ if pod.deletion.is_some() => p.terminating += 1,
            _ => {
                if pod.ready {
                    p.ready += 1;
                }
                p.active.push(pod);
            }
        }
    }
    // Counted from the pods there are (no tracking finalizers): a finished pod deleted by
    // someone else must not make the counts go back.
    p.succeeded = p.succeeded.max(old.succeeded.unwrap_or(0));
    p.failed = p.failed.max(old.failed.unwrap_or(0));
    p
}

/// pastBackoffLimitOnFailure: under `restartPolicy: OnFailure` the kubelet restarts failed
/// containers in place, so their restarts in running and pending pods count as failures.
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[&CachedPod]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(p.phase, Phase::Running | Phase::Pending))
        .map(|p| p.restarts)
        .fold(0, i32::saturating_add);
    match spec.backoff_limit.unwrap_or(6) {
        0 => restarts > 0,
        limit => restarts >= limit,
    }
}

/// One sync of `job` whose pods (those it controls) are `pods`. `may_manage` is false while
/// the cache has not caught up with this controller's own creates and deletes: then it
/// neither creates nor scales down.
#[must_use]
pub fn plan(job: &Job, pods: &[&CachedPod], may_manage: bool, now: Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut conds = old.conditions.clone().unwrap_or_default();
    let mut plan = Plan::default();

    if condition_true(&conds, "Complete") || condition_true(&conds, "Failed") {
        plan.status = old.clone();
        // Pods that still run after the end (created on a stale cache) are stopped.
        plan.delete = classify(pods, &old)
            .active
            .iter()
            .map(|p| Arc::clone(&p.name))
            .collect();
        if let (Some(ttl), Some(done)) = (spec.ttl_seconds_after_finished, finished_at(&old)) {
            let expires = done
                .checked_add(jiff::SignedDuration::from_secs(i64::from(ttl)))
                .unwrap_or(done);
            if now >= expires {
                plan.delete_job = true;
            } else {
                plan.requeue = Some(until(now, expires));
            }
        }
        return plan;
    }

    let p = classify(pods, &old);
    let all_active: Vec<Arc<str>> = p.active.iter().map(|p| Arc::clone(&p.name)).collect();
    let mut status = JobStatus {
        active: None,
        ready: Some(count(p.ready)),
        succeeded: (p.succeeded > 0).then_some(p.succeeded),
        failed: (p.failed > 0).then_some(p.failed),
        terminating: Some(count(p.terminating)),
        start_time: old.start_time.clone(),
        completion_time: None,
        uncounted_terminated_pods: Some(UncountedTerminatedPods::default()),
        ..old.clone()
    };
    let mut active = p.active.len();

    // Suspended: no pods, no clock (the deadline counts from the resume).
    if spec.suspend == Some(true) {
        if set_condition(
            &mut conds,
            "Suspended",
            "True",
            ("JobSuspended", "Job suspended"),
            now,
        ) {
            plan.events
                .push((Type::Normal, "Suspended", "Job suspended"));
        }
        plan.delete = all_active;
        status.terminating = Some(count(p.terminating + active));
        status.start_time = None;
        status.conditions = Some(conds);
        plan.status = status;
        return plan;
    }
    if condition_true(&conds, "Suspended") {
        set_condition(
            &mut conds,
            "Suspended",
            "False",
            ("JobResumed", "Job resumed"),
            now,
        );
        plan.events.push((Type::Normal, "Resumed", "Job resumed"));
        status.start_time = None;
    }
    let start = status.start_time.as_ref().map_or(now, |t| t.0);
    status.start_time = Some(Time(start));

    // Failure: too many failed pods, or past the deadline; running pods are stopped and the
    // Job fails once none is left.
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec
        .active_deadline_seconds
        .and_then(|d| start.checked_add(jiff::SignedDuration::from_secs(d)).ok());
    let failure = conds
        .iter()
        .find(|c| c.type_ == "FailureTarget" && c.status == "True")
        .map(|c| {
            if c.reason.as_deref() == Some(DEADLINE_EXCEEDED.0) {
                DEADLINE_EXCEEDED
            } else {
                BACKOFF_LIMIT_EXCEEDED
            }
        })
        .or_else(|| (p.failed > backoff_limit).then_some(BACKOFF_LIMIT_EXCEEDED))
        .or_else(|| past_backoff_limit_on_failure(&spec, pods).then_some(BACKOFF_LIMIT_EXCEEDED))
        .or_else(|| deadline.filter(|d| now >= *d).map(|_| DEADLINE_EXCEEDED));
    if let Some(why) = failure {
        set_condition(&mut conds, "FailureTarget", "True", why, now);
        plan.delete = all_active;
        status.terminating = Some(count(p.terminating + active));
        if active == 0 && p.terminating == 0 {
            set_condition(&mut conds, "Failed", "True", why, now);
            plan.events.push((Type::Warning, why.0, why.1));
        }
        status.conditions = Some(conds);
        plan.status = status;
        return plan;
    }

    // Success: enough pods succeeded (any one, without completions, once the rest ended).
    let done = match spec.completions {
        Some(c) => p.succeeded >= c,
        None => p.succeeded >= 1 && active == 0,
    } || condition_true(&conds, "SuccessCriteriaMet");
    if done {
        set_condition(
            &mut conds,
            "SuccessCriteriaMet",
            "True",
            COMPLETIONS_REACHED,
            now,
        );
        plan.delete = all_active;
        status.terminating = Some(count(p.terminating + active));
        if active == 0 && p.terminating == 0 {
            set_condition(&mut conds, "Complete", "True", COMPLETIONS_REACHED, now);
            status.completion_time = Some(Time(now));
            plan.events
                .push((Type::Normal, "Completed", "Job completed"));
        }
        status.conditions = (!conds.is_empty()).then_some(conds);
        plan.status = status;
        return plan;
    }

    // Running: keep min(parallelism, completions left) pods.
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
    let want = match spec.completions {
        Some(c) => parallelism.min(usize::try_from(c - p.succeeded).unwrap_or(0)),
        None if p.succeeded > 0 => active,
        None => parallelism,
    };
    if may_manage && active > want {
        // The newest go first.
        let mut newest = p.active.clone();
        newest.sort_by_key(|p| std::cmp::Reverse(p.created));
        plan.delete = newest[..active - want]
            .iter()
            .map(|p| Arc::clone(&p.name))
            .collect();
        active = want;
    } else if may_manage && active < want {
        let wait_until = p.last_failure.filter(|_| p.failed > 0).map(|at| {
            let exp = u32::try_from(p.failed - 1).unwrap_or(u32::MAX).min(16);
            let delay = BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF);
            at.checked_add(delay).unwrap_or(at)
        });
        match wait_until {
            Some(at) if now < at => plan.requeue = Some(until(now, at)),
            _ => {
                plan.create = want - active;
                active = want;
            }
        }
    }
    status.active = (active > 0).then(|| count(active));
    if let Some(d) = deadline {
        let left = until(now, d);
        plan.requeue = Some(plan.requeue.map_or(left, |r| r.min(left)));
    }
    status.conditions = (!conds.is_empty()).then_some(conds);
    plan.status = status;
    plan
}

#[cfg(test)]
mod tests;
