//! Deployment status and its conditions, as kube-controller-manager computes them
//! (`calculateStatus`, `syncRolloutStatus`, `checkPausedConditions`). Pure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::apps::v1::{
        Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::plan;

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";

/// Condition times have second precision, as Kubernetes' metav1.Time.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub fn get<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_)
}

pub fn remove(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = &mut s.conditions {
        cs.retain(|c| c.type_ != type_);
    }
}

/// `SetDeploymentCondition`: nothing changes when status and reason are the same; the
/// transition time is kept when only the reason changes.
pub fn set(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time.clone_from(&cur.last_transition_time);
        }
    }
    remove(s, &c.type_);
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|p| p != i32::MAX)
}

fn deadline(d: &Deployment) -> i64 {
    i64::from(
        d.spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600),
    )
}

/// `calculateStatus`: the counts over all sets, and the Available condition. `base` carries
/// the conditions and collisionCount this sync starts from.
pub fn calculate(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    base: &DeploymentStatus,
    now: Timestamp,
) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let st = |rs: &ReplicaSet, f: fn(&ReplicaSetStatus) -> i32| rs.status.as_ref().map_or(0, f);
    let available = sum(&|rs| st(rs, |s| s.available_replicas.unwrap_or(0)));
    let total = sum(&plan::spec_replicas);
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(&|rs| st(rs, |s| s.replicas))),
        updated_replicas: Some(new.map_or(0, |n| st(n, |s| s.replicas))),
        ready_replicas: Some(sum(&|rs| st(rs, |s| s.ready_replicas.unwrap_or(0)))),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: base.collision_count,
        conditions: base.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= plan::desired(d) - plan::max_unavailable(d) {
        set(
            &mut s,
            condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set(
            &mut s,
            condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    s
}

/// `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = plan::desired(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// `DeploymentProgressing`: more updated, fewer old, more ready or more available pods than
/// the stored status says.
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let z = |v: Option<i32>| v.unwrap_or(0);
    let old_old = z(old.replicas) - z(old.updated_replicas);
    let new_old = z(new.replicas) - z(new.updated_replicas);
    z(new.updated_replicas) > z(old.updated_replicas)
        || new_old < old_old
        || z(new.ready_replicas) > z(old.ready_replicas)
        || z(new.available_replicas) > z(old.available_replicas)
}

fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(c) = get(s, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| {
            t.0.checked_add(SignedDuration::from_secs(deadline(d)))
                .is_ok_and(|end| end < now)
        }),
    }
}

/// `syncRolloutStatus`'s Progressing condition on top of [`calculate`]. `stored` is the
/// status as last written (progress is measured against it).
pub fn rollout(
    d: &Deployment,
    stored: &DeploymentStatus,
    mut s: DeploymentStatus,
    new_rs: Option<&str>,
    now: Timestamp,
) -> DeploymentStatus {
    if !has_progress_deadline(d) {
        remove(&mut s, PROGRESSING);
        return s;
    }
    let cur = get(&s, PROGRESSING).cloned();
    let already_complete = s.replicas == s.updated_replicas
        && cur
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if already_complete {
        return s;
    }
    let what = |verb: &str| match new_rs {
        Some(n) => format!("ReplicaSet \"{n}\" {verb}"),
        None => format!(
            "Deployment \"{}\" {verb}",
            d.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    if complete(d, &s) {
        set(
            &mut s,
            condition(
                PROGRESSING,
                "True",
                NEW_RS_AVAILABLE,
                what("has successfully progressed."),
                now,
            ),
        );
    } else if progressing(stored, &s) {
        let mut c = condition(
            PROGRESSING,
            "True",
            RS_UPDATED,
            what("is progressing."),
            now,
        );
        // Every sign of progress moves lastUpdateTime (the deadline counts from it).
        if let Some(cur) = cur.filter(|c| c.status == "True") {
            c.last_transition_time = cur.last_transition_time;
        }
        remove(&mut s, PROGRESSING);
        set(&mut s, c);
    } else if timed_out(d, &s, now) {
        set(
            &mut s,
            condition(
                PROGRESSING,
                "False",
                TIMED_OUT,
                what("has timed out progressing."),
                now,
            ),
        );
    }
    s
}

/// `checkPausedConditions`: Progressing Unknown while paused (a timed-out rollout keeps its
/// condition).
pub fn paused_condition(d: &Deployment, s: &mut DeploymentStatus, now: Timestamp) {
    if !has_progress_deadline(d) {
        return;
    }
    let cur = get(s, PROGRESSING);
    if cur.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
        return;
    }
    let paused_cond = cur.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    if paused && !paused_cond {
        set(
            s,
            condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                now,
            ),
        );
    } else if !paused && paused_cond {
        set(
            s,
            condition(
                PROGRESSING,
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                now,
            ),
        );
    }
}

/// `requeueStuckDeployment`: when a rollout in progress would cross its deadline.
pub fn deadline_check_in(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    if !has_progress_deadline(d) || complete(d, s) {
        return None;
    }
    let c = get(s, PROGRESSING)
        .filter(|c| c.status == "True" && c.reason.as_deref() != Some(NEW_RS_AVAILABLE))?;
    let from = c.last_update_time.as_ref()?.0;
    let end = from
        .checked_add(SignedDuration::from_secs(deadline(d)))
        .ok()?;
    Some(now.duration_until(end).unsigned_abs() + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deploy(replicas: i32, generation: i64) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "progressDeadlineSeconds": 60,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                     "template": {}}
        }))
        .unwrap()
    }

    fn rs(spec: i32, status: i32, ready: i32, avail: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x"},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": status, "readyReplicas": ready, "availableReplicas": avail}
        }))
        .unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn counts_and_availability() {
        let d = deploy(4, 2);
        let old = rs(2, 3, 3, 3);
        let new = rs(3, 2, 1, 0);
        let s = calculate(
            &d,
            &[&old, &new],
            Some(&new),
            &DeploymentStatus::default(),
            t(0),
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (Some(5), Some(2), Some(4), Some(3), Some(2))
        );
        let a = get(&s, AVAILABLE).unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("True", Some("MinimumReplicasAvailable"))
        );
        let s = calculate(
            &d,
            &[&rs(4, 4, 2, 2)],
            None,
            &DeploymentStatus::default(),
            t(0),
        );
        let a = get(&s, AVAILABLE).unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("False", Some("MinimumReplicasUnavailable"))
        );
    }

    #[test]
    fn progressing_then_complete_then_quiet() {
        let d = deploy(2, 1);
        let stored = DeploymentStatus::default();
        let new = rs(2, 2, 1, 1);
        let s = calculate(&d, &[&new], Some(&new), &stored, t(10));
        let s = rollout(&d, &stored, s, Some("web-x"), t(10));
        let p = get(&s, PROGRESSING).unwrap();
        assert_eq!(p.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-x\" is progressing.")
        );
        assert_eq!(
            deadline_check_in(&d, &s, t(10)),
            Some(Duration::from_secs(61))
        );

        let done = rs(2, 2, 2, 2);
        let s2 = calculate(&d, &[&done], Some(&done), &s, t(20));
        let s2 = rollout(&d, &s, s2, Some("web-x"), t(20));
        let p = get(&s2, PROGRESSING).unwrap();
        assert_eq!(p.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(
            p.last_transition_time,
            Some(Time(t(10))),
            "still True: transition kept"
        );
        assert!(complete(&d, &s2));
        assert_eq!(deadline_check_in(&d, &s2, t(20)), None);
        // A resync of a complete deployment changes nothing.
        let s3 = calculate(&d, &[&done], Some(&done), &s2, t(30));
        assert_eq!(rollout(&d, &s2, s3, Some("web-x"), t(30)), s2);
    }

    #[test]
    fn no_progress_past_the_deadline_times_out() {
        let d = deploy(2, 1);
        let mut stored = DeploymentStatus::default();
        set(
            &mut stored,
            condition(PROGRESSING, "True", RS_UPDATED, "x".into(), t(0)),
        );
        let stuck = rs(2, 2, 0, 0);
        stored.replicas = Some(2);
        stored.updated_replicas = Some(2);
        let s = calculate(&d, &[&stuck], Some(&stuck), &stored, t(30));
        let s = rollout(&d, &stored, s, Some("web-x"), t(30));
        assert_eq!(
            get(&s, PROGRESSING).unwrap().reason.as_deref(),
            Some(RS_UPDATED)
        );
        let s = calculate(&d, &[&stuck], Some(&stuck), &stored, t(61));
        let s = rollout(&d, &stored, s, Some("web-x"), t(61));
        let p = get(&s, PROGRESSING).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some(TIMED_OUT))
        );
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-x\" has timed out progressing.")
        );
    }

    #[test]
    fn pausing_sets_unknown_and_resuming_says_so() {
        let mut d = deploy(2, 1);
        d.spec.as_mut().unwrap().paused = Some(true);
        let mut s = DeploymentStatus::default();
        paused_condition(&d, &mut s, t(0));
        assert_eq!(
            get(&s, PROGRESSING).unwrap().reason.as_deref(),
            Some("DeploymentPaused")
        );
        d.spec.as_mut().unwrap().paused = Some(false);
        paused_condition(&d, &mut s, t(1));
        let p = get(&s, PROGRESSING).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("Unknown", Some("DeploymentResumed"))
        );
    }

    #[test]
    fn setting_the_same_condition_keeps_its_times() {
        let mut s = DeploymentStatus::default();
        set(&mut s, condition(AVAILABLE, "True", "A", "m".into(), t(1)));
        set(&mut s, condition(AVAILABLE, "True", "A", "m2".into(), t(5)));
        assert_eq!(
            get(&s, AVAILABLE).unwrap().last_update_time,
            Some(Time(t(1)))
        );
        set(&mut s, condition(AVAILABLE, "True", "B", "m".into(), t(5)));
        let c = get(&s, AVAILABLE).unwrap();
        assert_eq!(
            (c.last_transition_time.clone(), c.last_update_time.clone()),
            (Some(Time(t(1))), Some(Time(t(5))))
        );
        assert_eq!(s.conditions.as_ref().unwrap().len(), 1);
    }
}
