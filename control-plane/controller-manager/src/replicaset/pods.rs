//! The ReplicaSet controller's pure decisions: which pods count, which to delete first,
//! how many to create per batch, and the status they add up to.

use std::{cmp::Ordering, collections::HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use kproxy_apimachinery::selector::LabelSelector;

use crate::podcache::{CachedPod, Phase};

/// Counted toward replicas: not finished and not being deleted (FilterActivePods).
pub fn is_active(pod: &CachedPod) -> bool {
    pod.deletion.is_none() && !pod.phase.is_terminal()
}

/// When a ready pod is (or will be) available: ready for `min_ready_seconds`.
/// `None` for a pod that is not ready.
pub fn available_since(pod: &CachedPod, min_ready_seconds: i32) -> Option<Timestamp> {
    if !pod.ready {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(Timestamp::MIN);
    }
    // A ready pod without a transition time has been ready for ever, as far as we know.
    let since = pod.ready_since.unwrap_or(Timestamp::MIN);
    Some(
        since
            .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
            .unwrap_or(Timestamp::MAX),
    )
}

/// What a ReplicaSet's status says about its pods, and when it must look again (a ready pod
/// that becomes available after minReadySeconds produces no watch event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    /// The earliest time a ready pod becomes available, if one is still waiting.
    pub next_available: Option<Timestamp>,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// calculateStatus's counts over the ReplicaSet's active pods.
pub fn counts(
    pods: &[&CachedPod],
    template_labels: Option<&LabelSelector>,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Counts {
    let mut c = Counts {
        replicas: count(pods.len()),
        fully_labeled: 0,
        ready: 0,
        available: 0,
        next_available: None,
    };
    for p in pods {
        if template_labels.is_none_or(|s| s.matches(&p.labels)) {
            c.fully_labeled += 1;
        }
        if let Some(at) = available_since(p, min_ready_seconds) {
            c.ready += 1;
            if at <= now {
                c.available += 1;
            } else {
                c.next_available = Some(c.next_available.map_or(at, |n: Timestamp| n.min(at)));
            }
        }
    }
    c
}

/// The status to write: counts, observedGeneration, and the ReplicaFailure condition while
/// creates fail (Kubernetes sets it with reason FailedCreate and clears it on success).
pub fn status(
    rs: &ReplicaSet,
    c: &Counts,
    create_failure: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut conditions: Vec<ReplicaSetCondition> = rs
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter(|c| c.type_ != "ReplicaFailure")
        .cloned()
        .collect();
    if let Some(msg) = create_failure {
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(msg.into()),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        });
    }
    ReplicaSetStatus {
        replicas: c.replicas,
        fully_labeled_replicas: Some(c.fully_labeled),
        ready_replicas: Some(c.ready),
        available_replicas: Some(c.available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// Whether the status in the object already says this (no write needed). The failure
/// condition's time is ignored so a persisting failure is not rewritten on every sync.
pub fn status_unchanged(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let Some(old) = old else { return false };
    let failure = |s: &ReplicaSetStatus| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure")
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    old.replicas == new.replicas
        && old.fully_labeled_replicas.unwrap_or(0) == new.fully_labeled_replicas.unwrap_or(0)
        && old.ready_replicas.unwrap_or(0) == new.ready_replicas.unwrap_or(0)
        && old.available_replicas.unwrap_or(0) == new.available_replicas.unwrap_or(0)
        && old.observed_generation == new.observed_generation
        && failure(old) == failure(new)
}

/// Kubernetes' slow start: batches of 1, 2, 4, ... until `n`, so a template that cannot
/// be created fails once instead of `n` times.
pub fn slow_start_batches(n: usize, initial: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = n;
    let mut size = initial.max(1).min(left);
    while size > 0 {
        out.push(size);
        left -= size;
        size = (size * 2).min(left);
    }
    out
}

fn phase_rank(pod: &CachedPod) -> u8 {
    match pod.phase {
        Phase::Pending => 0,
        Phase::Running => 2,
        _ => 1, // Unknown (and anything unexpected) between the two
    }
}

fn node(pod: &CachedPod) -> Option<&str> {
    pod.node_name.as_deref()
}

/// `ActivePodsWithRanks.Less`: true when `a` should be deleted before `b`.
/// Unscheduled < scheduled; Pending < Unknown < Running; not ready < ready; lower
/// deletion cost first; more pods of the same owner on its node first; ready for a
/// shorter time first; more restarts first; newer first.
fn delete_before(a: &CachedPod, b: &CachedPod, rank_a: usize, rank_b: usize) -> Ordering {
    node(a)
        .is_some()
        .cmp(&node(b).is_some())
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(a.ready.cmp(&b.ready))
        .then(a.deletion_cost.cmp(&b.deletion_cost))
        .then(rank_b.cmp(&rank_a))
        .then_with(|| {
            if a.ready && b.ready {
                // Newer readiness first; a missing time sorts as newest.
                opt_newest_first(a.ready_since, b.ready_since)
            } else {
                Ordering::Equal
            }
        })
        .then(b.restarts.cmp(&a.restarts))
        .then_with(|| opt_newest_first(a.created, b.created))
}

fn opt_newest_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// The `n` pods to delete, in Kubernetes' order. `related` are the active pods of all the
/// owner's ReplicaSets (a Deployment's old and new): a node with more of them loses one first.
pub fn pods_to_delete<'a>(
    pods: &[&'a CachedPod],
    related: &[&CachedPod],
    n: usize,
) -> Vec<&'a CachedPod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        if let Some(n) = node(p) {
            *on_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &CachedPod| node(p).map_or(0, |n| on_node.get(n).copied().unwrap_or(0));
    let mut ranked: Vec<(&CachedPod, usize)> = pods.iter().map(|p| (*p, rank(p))).collect();
    ranked.sort_by(|(a, ra), (b, rb)| delete_before(a, b, *ra, *rb));
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Pod, PodCondition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: Option<i64>, created: i64) -> CachedPod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"},
                         "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase}
        }))
        .unwrap();
        if let Some(t) = ready {
            p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                ..Default::default()
            }]);
        }
        CachedPod::from_pod(p)
    }

    fn names(pods: &[&CachedPod]) -> Vec<String> {
        pods.iter().map(|p| p.name.to_string()).collect()
    }

    #[test]
    fn deletes_in_kubernetes_order() {
        let unscheduled = pod("unscheduled", "", "Pending", None, 10);
        let pending = pod("pending", "n1", "Pending", None, 10);
        let unknown = pod("unknown", "n1", "Unknown", None, 10);
        let not_ready = pod("not-ready", "n1", "Running", None, 10);
        let ready_new = pod("ready-new", "n2", "Running", Some(500), 10);
        let ready_old = pod("ready-old", "n3", "Running", Some(100), 10);
        let all = [
            &ready_old,
            &ready_new,
            &not_ready,
            &unknown,
            &pending,
            &unscheduled,
        ];
        assert_eq!(
            names(&pods_to_delete(&all, &all, 6)),
            [
                "unscheduled",
                "pending",
                "unknown",
                "not-ready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(
            names(&pods_to_delete(&all, &all, 2)),
            ["unscheduled", "pending"]
        );
    }

    #[test]
    fn newer_pods_and_doubled_up_nodes_go_first() {
        let old = pod("old", "n1", "Running", None, 10);
        let new = pod("new", "n2", "Running", None, 20);
        assert_eq!(names(&pods_to_delete(&[&old, &new], &[], 1)), ["new"]);
        // `old` shares n1 with two pods of a sibling ReplicaSet: it goes first.
        let s1 = pod("s1", "n1", "Running", None, 1);
        let s2 = pod("s2", "n1", "Running", None, 1);
        assert_eq!(
            names(&pods_to_delete(&[&old, &new], &[&old, &new, &s1, &s2], 1)),
            ["old"]
        );
        // The deletion cost overrides both.
        let mut cheap = pod("cheap", "n3", "Running", None, 1);
        cheap.deletion_cost = -5;
        assert_eq!(
            names(&pods_to_delete(&[&old, &new, &cheap], &[], 1)),
            ["cheap"]
        );
    }

    #[test]
    fn slow_start_doubles_up_to_the_total() {
        assert_eq!(slow_start_batches(0, 1), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1, 1), [1]);
        assert_eq!(slow_start_batches(10, 1), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(500, 1).iter().sum::<usize>(), 500);
        assert_eq!(slow_start_batches(500, 1).len(), 9);
    }

    #[test]
    fn counts_ready_available_and_fully_labeled() {
        let now = Timestamp::from_second(1000).unwrap();
        let a = pod("a", "n", "Running", Some(100), 1);
        let b = pod("b", "n", "Running", Some(995), 1); // ready 5 s ago
        let c = pod("c", "n", "Pending", None, 1);
        let mut d = pod("d", "n", "Running", Some(100), 1);
        d.labels = std::sync::Arc::new(
            [("app", "web"), ("tier", "x")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        let tmpl = LabelSelector::parse("app=web,tier=x").unwrap();
        let c0 = counts(&[&a, &b, &c, &d], Some(&tmpl), 0, now);
        assert_eq!(
            (c0.replicas, c0.fully_labeled, c0.ready, c0.available),
            (4, 1, 3, 3)
        );
        assert_eq!(c0.next_available, None);
        let c10 = counts(&[&a, &b, &c, &d], Some(&tmpl), 10, now);
        assert_eq!((c10.ready, c10.available), (3, 2));
        assert_eq!(
            c10.next_available,
            Some(Timestamp::from_second(1005).unwrap())
        );
    }

    #[test]
    fn finished_and_terminating_pods_do_not_count() {
        let done = pod("done", "n", "Succeeded", None, 1);
        let mut going = pod("going", "n", "Running", None, 1);
        going.deletion = Some(Timestamp::UNIX_EPOCH);
        let live = pod("live", "n", "Running", None, 1);
        assert!(!is_active(&done) && !is_active(&going) && is_active(&live));
    }

    #[test]
    fn status_carries_counts_generation_and_failures() {
        let mut rs = ReplicaSet::default();
        rs.metadata.generation = Some(3);
        let c = Counts {
            replicas: 2,
            fully_labeled: 2,
            ready: 1,
            available: 1,
            next_available: None,
        };
        let now = Timestamp::UNIX_EPOCH;
        let s = status(&rs, &c, None, now);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!((s.replicas, s.ready_replicas), (2, Some(1)));
        assert!(s.conditions.is_none());
        assert!(!status_unchanged(None, &s));
        assert!(status_unchanged(Some(&s), &s));
        let failed = status(&rs, &c, Some("quota"), now);
        assert_eq!(
            failed.conditions.as_ref().unwrap()[0].reason.as_deref(),
            Some("FailedCreate")
        );
        assert!(!status_unchanged(Some(&s), &failed));
        rs.status = Some(failed);
        assert!(status(&rs, &c, None, now).conditions.is_none(), "cleared");
    }
}
