//! What to scale where: the Deployment controller's arithmetic, as kube-controller-manager's
//! `rolling.go`, `recreate.go`, `sync.go` and `deployment_util.go` do it, over the
//! ReplicaSets of one Deployment. Pure; the reconcile executes the results.
//!
//! One deliberate difference: pods still present count against maxSurge
//! (`max(spec.replicas, status.replicas)`) and a set's availability counts at most its
//! spec.replicas, so a cache that has not yet seen an old set's pods go cannot make the
//! rollout overshoot `replicas + maxSurge` pods or undershoot `replicas - maxUnavailable`
//! available ones.

use std::{cmp::Ordering, collections::BTreeMap};

use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::hash;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

// === accessors ===

pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Pods a set has or is about to have (see the module note).
fn pod_count(rs: &ReplicaSet) -> i32 {
    spec_replicas(rs).max(status_replicas(rs))
}

/// Available pods a set will keep (see the module note).
fn kept_available(rs: &ReplicaSet) -> i32 {
    available(rs).min(spec_replicas(rs))
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

// === maxSurge / maxUnavailable ===

/// `GetScaledValueFromIntOrPercent`: a percent of `total`, rounded up or down.
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool, default_pct: i64) -> i32 {
    let pct = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(0),
        None => default_pct,
    };
    let num = pct * i64::from(total);
    let v = if round_up {
        (num + 99).div_euclid(100)
    } else {
        num.div_euclid(100)
    };
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// `ResolveFenceposts`: (surge, unavailable); both zero becomes unavailable 1 so a rollout
/// can make progress.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let total = desired(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), total, true, 25);
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        total,
        false,
        25,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || desired(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired(d))
}

// === which set is new ===

/// `FindNewReplicaSet`: the oldest set whose template is the Deployment's.
pub fn find_new<'a>(d: &Deployment, sets: &[&'a ReplicaSet]) -> Option<&'a ReplicaSet> {
    // `hash::equal_ignore_hash`, with the Deployment's side computed once.
    let template = hash::canonical(&d.spec.as_ref()?.template);
    let mut sorted = sets.to_vec();
    sorted.sort_by(|a, b| by_creation(a, b));
    sorted.into_iter().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| hash::canonical(t) == template)
    })
}

pub fn max_revision(sets: &[&ReplicaSet]) -> i64 {
    sets.iter().map(|rs| revision(rs)).max().unwrap_or(0)
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// `SetReplicasAnnotations`: true when something changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// `SetNewReplicaSetAnnotations`: the Deployment's own annotations copied, the revision
/// raised to `new_revision` (a set that comes back, as in a rollback, keeps its older
/// revisions in `revision-history`), and for a set being created the replica annotations.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(REVISION).cloned();
    let old_int: i64 = old.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    if old_int < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = match a.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            a.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists && set_replicas_annotations(rs, desired(d), desired(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

// === rolling update ===

/// `NewRSNewReplicas`: the new set's size for this step.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let want = desired(d);
    if !is_rolling(d) {
        return want;
    }
    let current: i32 = all.iter().map(|rs| pod_count(rs)).sum();
    let max_total = want + max_surge(d);
    if current >= max_total {
        return spec_replicas(new);
    }
    let up = (max_total - current).min(want - spec_replicas(new)).max(0);
    spec_replicas(new) + up
}

/// `reconcileNewReplicaSet`: the new set's target, if it must change.
pub fn reconcile_new(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> Option<i32> {
    let want = desired(d);
    let cur = spec_replicas(new);
    let to = match cur.cmp(&want) {
        Ordering::Equal => return None,
        Ordering::Greater => want,
        Ordering::Less => new_rs_new_replicas(d, all, new),
    };
    (to != cur).then_some(to)
}

/// `reconcileOldReplicaSets`: (set name, new size) for old sets to scale down now — first
/// the unhealthy pods of old sets, then as far as availability allows.
pub fn reconcile_old(
    d: &Deployment,
    all: &[&ReplicaSet],
    old: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
) -> Vec<(String, i32)> {
    let old_pods: i32 = old.iter().map(|rs| pod_count(rs)).sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let all_pods: i32 = all.iter().map(|rs| pod_count(rs)).sum();
    let min_available = desired(d) - max_unavailable(d);
    let new_unavailable = new.map_or(0, |n| spec_replicas(n) - kept_available(n));
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sizes: Vec<(&ReplicaSet, i32)> =
        old.iter().map(|rs| (*rs, spec_replicas(rs))).collect();
    sizes.sort_by(|a, b| by_creation(a.0, b.0));

    // cleanupUnhealthyReplicas: pods that are not available cost no availability.
    let mut cleaned = 0;
    for (rs, size) in &mut sizes {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = *size - available(rs).min(*size);
        if *size == 0 || unhealthy <= 0 {
            continue;
        }
        let n = unhealthy.min(max_scaled_down - cleaned);
        *size -= n;
        cleaned += n;
    }

    // scaleDownOldReplicaSetsForRollingUpdate, on the sizes after the cleanup.
    let available_now: i32 = new.map_or(0, kept_available)
        + sizes
            .iter()
            .map(|(rs, size)| available(rs).min(*size))
            .sum::<i32>();
    if available_now > min_available {
        let total = available_now - min_available;
        let mut done = 0;
        for (_, size) in &mut sizes {
            if done >= total {
                break;
            }
            if *size == 0 {
                continue;
            }
            let n = (*size).min(total - done);
            *size -= n;
            done += n;
        }
    }
    sizes
        .into_iter()
        .filter(|(rs, size)| *size != spec_replicas(rs))
        .map(|(rs, size)| (rs.metadata.name.clone().unwrap_or_default(), size))
        .collect()
}

// === scaling (replicas changed, or paused) ===

/// `isScalingEvent`: an active set was sized for another replica count.
pub fn is_scaling_event(d: &Deployment, active: &[&ReplicaSet]) -> bool {
    active
        .iter()
        .any(|rs| int_annotation(rs, DESIRED_REPLICAS).is_some_and(|want| want != desired(d)))
}

fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    int_annotation(rs, DESIRED_REPLICAS) == Some(desired(d))
        && spec_replicas(rs) == desired(d)
        && available(rs) == desired(d)
}

/// `getReplicaSetFraction`: this set's share of a resize.
fn fraction(rs: &ReplicaSet, d: &Deployment, deployment_status_replicas: i32) -> i32 {
    if desired(d) == 0 {
        return -spec_replicas(rs);
    }
    let total = desired(d) + max_surge(d);
    let annotated = int_annotation(rs, MAX_REPLICAS).unwrap_or(deployment_status_replicas);
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(spec_replicas(rs)) * f64::from(total) / f64::from(annotated);
    #[expect(clippy::cast_possible_truncation, reason = "a replica count, rounded")]
    let size = size.round() as i32;
    size - spec_replicas(rs)
}

/// `scale()`: resize for a changed replica count. One active set (or none) takes it all; a
/// saturated new set means the old ones go to 0; otherwise the sets share it in proportion
/// (rolling updates only), leftovers going to the largest.
pub fn proportional_scale(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
    deployment_status_replicas: i32,
) -> Vec<(String, i32)> {
    let name = |rs: &ReplicaSet| rs.metadata.name.clone().unwrap_or_default();
    let want = desired(d);
    let mut active: Vec<&ReplicaSet> = new
        .into_iter()
        .chain(old.iter().copied())
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    // FindActiveOrLatest
    if active.len() <= 1 {
        let target = active.first().copied().or(new).or_else(|| {
            let mut o = old.to_vec();
            o.sort_by(|a, b| by_creation(b, a));
            o.first().copied()
        });
        return match target {
            Some(rs) if spec_replicas(rs) != want => vec![(name(rs), want)],
            _ => Vec::new(),
        };
    }
    if let Some(n) = new.filter(|n| is_saturated(d, n)) {
        return old
            .iter()
            .filter(|rs| spec_replicas(rs) > 0 && rs.metadata.name != n.metadata.name)
            .map(|rs| (name(rs), 0))
            .collect();
    }
    if !is_rolling(d) {
        return Vec::new();
    }
    let current: i32 = active.iter().map(|rs| spec_replicas(rs)).sum();
    let allowed = if want > 0 { want + max_surge(d) } else { want };
    let to_add = allowed - current;
    match to_add.cmp(&0) {
        // Larger first; among equals the newer (scaling up) or the older (down) first.
        Ordering::Greater => active.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then_with(|| by_creation(b, a))
        }),
        Ordering::Less => active.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then_with(|| by_creation(a, b))
        }),
        Ordering::Equal => {}
    }
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
    for rs in &active {
        let mut proportion = 0;
        if to_add != 0 && spec_replicas(rs) != 0 && to_add != added {
            let f = fraction(rs, d, deployment_status_replicas);
            let allowed = to_add - added;
            proportion = if to_add > 0 {
                f.min(allowed)
            } else {
                f.max(allowed)
            };
        }
        sizes.push(spec_replicas(rs) + proportion);
        added += proportion;
    }
    if to_add != 0 && !sizes.is_empty() {
        sizes[0] = (sizes[0] + to_add - added).max(0);
    }
    active
        .iter()
        .zip(sizes)
        .filter(|(rs, size)| spec_replicas(rs) != *size)
        .map(|(rs, size)| (name(rs), size))
        .collect()
}

// === history ===

/// `cleanupDeployment`: the old sets beyond `revisionHistoryLimit`, oldest revision first,
/// that are fully scaled down.
pub fn history_to_delete(d: &Deployment, old: &[&ReplicaSet]) -> Vec<String> {
    let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Vec::new();
    };
    let mut cleanable: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = usize::try_from(i64::try_from(cleanable.len()).unwrap_or(0) - i64::from(limit))
        .unwrap_or(0);
    if excess == 0 {
        return Vec::new();
    }
    cleanable.sort_by(|a, b| {
        revision(a)
            .cmp(&revision(b))
            .then_with(|| by_creation(a, b))
    });
    cleanable
        .into_iter()
        .take(excess)
        .filter(|rs| {
            status_replicas(rs) == 0
                && spec_replicas(rs) == 0
                && rs.metadata.generation <= rs.status.as_ref().and_then(|s| s.observed_generation)
        })
        .map(|rs| rs.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentStatus, DeploymentStrategy};
    use serde_json::{Value, json};

    use super::*;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn deploy(replicas: i32, surge: Value, unavailable: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "revisionHistoryLimit": 2,
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}}}
        }))
        .unwrap()
    }

    /// A set named `name` created at `created` seconds, with spec / status replicas and
    /// available pods.
    fn rs(name: &str, created: i64, spec: i32, status: i32, avail: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string(),
                         "generation": 1, "annotations": {}},
            "spec": {"replicas": spec, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": status, "availableReplicas": avail, "readyReplicas": avail, "observedGeneration": 1}
        }))
        .unwrap()
    }

    #[test]
    fn percents_round_like_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&pct("25%")), 10, true, 0), 3);
        assert_eq!(scaled(Some(&pct("25%")), 10, false, 0), 2);
        assert_eq!(scaled(Some(&pct("25%")), 1, true, 0), 1);
        assert_eq!(scaled(Some(&pct("25%")), 1, false, 0), 0);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, false, 0), 2);
        assert_eq!(scaled(None, 4, true, 25), 1);
        // Both zero: one may be unavailable.
        let d = deploy(3, json!(0), json!("10%"));
        assert_eq!(fenceposts(&d), (0, 1));
        assert_eq!(max_unavailable(&d), 1);
        let d = deploy(10, json!("25%"), json!("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        assert_eq!(
            max_unavailable(&deploy(1, json!(0), json!(5))),
            1,
            "capped at replicas"
        );
    }

    #[test]
    fn rolling_update_steps_respect_surge_and_availability() {
        // 4 replicas, surge 1, unavailable 1: the canonical walk.
        let d = deploy(4, json!(1), json!(1));
        let old = rs("web-old", 1, 4, 4, 4);
        let new = rs("web-new", 2, 0, 0, 0);
        // Step 1: the new set may add one pod (4 + 1 surge).
        assert_eq!(reconcile_new(&d, &[&old, &new], &new), Some(1));
        let new = rs("web-new", 2, 1, 1, 0);
        assert_eq!(reconcile_new(&d, &[&old, &new], &new), None, "at max surge");
        // Step 2: the old set may lose one (4 available - min 3).
        assert_eq!(
            reconcile_old(&d, &[&old, &new], &[&old], Some(&new)),
            [("web-old".to_string(), 3)]
        );
        // The old set's pod is not gone yet (status 4): no more surge.
        let old = rs("web-old", 1, 3, 4, 4);
        assert_eq!(reconcile_new(&d, &[&old, &new], &new), None);
        // ... and its availability counts only up to its size: nothing more to take.
        assert!(reconcile_old(&d, &[&old, &new], &[&old], Some(&new)).is_empty());
        // Once gone, the new set grows to 2.
        let old = rs("web-old", 1, 3, 3, 3);
        assert_eq!(reconcile_new(&d, &[&old, &new], &new), Some(2));
        // New pods available: old shrinks so that 3 stay available.
        let new = rs("web-new", 2, 2, 2, 2);
        assert_eq!(
            reconcile_old(&d, &[&old, &new], &[&old], Some(&new)),
            [("web-old".to_string(), 1)]
        );
    }

    #[test]
    fn unhealthy_old_pods_go_first_and_oldest_sets_first() {
        let d = deploy(4, json!(0), json!(1));
        // Two old sets with unavailable pods: those are removed without touching availability.
        let a = rs("a", 1, 2, 2, 1);
        let b = rs("b", 2, 2, 2, 2);
        let new = rs("n", 3, 0, 0, 0);
        let steps = reconcile_old(&d, &[&a, &b, &new], &[&a, &b], Some(&new));
        // allPods 4 - min 3 - new unavailable 0 = 1: the one unhealthy pod of `a`.
        assert_eq!(steps, [("a".to_string(), 1)]);
    }

    #[test]
    fn new_set_scales_down_when_replicas_drop_and_up_when_there_is_no_old() {
        let d = deploy(2, json!(1), json!(0));
        let new = rs("n", 1, 5, 5, 5);
        assert_eq!(reconcile_new(&d, &[&new], &new), Some(2));
        let new = rs("n", 1, 0, 0, 0);
        assert_eq!(reconcile_new(&d, &[&new], &new), Some(2));
        let mut recreate = deploy(3, json!(1), json!(0));
        recreate.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy::default());
        recreate
            .spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .type_ = Some("Recreate".into());
        let old = rs("o", 0, 3, 3, 3);
        assert_eq!(new_rs_new_replicas(&recreate, &[&old, &new], &new), 3);
        assert_eq!(max_surge(&recreate), 0);
        assert_eq!(max_unavailable(&recreate), 0);
    }

    #[test]
    fn proportional_scaling_shares_a_resize() {
        // Mid-rollout (10 replicas, surge 3): old 8, new 5; scaled to 20 (max 23).
        let mut d = deploy(20, json!(3), json!(2));
        d.status = Some(DeploymentStatus::default());
        let mut old = rs("old", 1, 8, 8, 8);
        let mut new = rs("new", 2, 5, 5, 0);
        for r in [&mut old, &mut new] {
            set_replicas_annotations(r, 10, 13);
        }
        let steps = proportional_scale(&d, Some(&new), &[&old], 13);
        let total: i32 = steps.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 23, "{steps:?}");
        // 8 * 23/13 = 14.15 -> 14; 5 * 23/13 = 8.8 -> 9.
        assert!(steps.contains(&("old".to_string(), 14)), "{steps:?}");
        assert!(steps.contains(&("new".to_string(), 9)), "{steps:?}");
        assert!(is_scaling_event(&d, &[&old, &new]));
        // One active set takes everything.
        let only = rs("only", 1, 3, 3, 3);
        assert_eq!(
            proportional_scale(&d, Some(&only), &[], 3),
            [("only".to_string(), 20)]
        );
    }

    #[test]
    fn annotations_track_revisions_and_rollbacks() {
        let mut d = deploy(3, json!(1), json!(0));
        d.metadata.annotations = Some(
            [
                ("team".to_string(), "a".to_string()),
                (LAST_APPLIED.to_string(), "{}".to_string()),
            ]
            .into(),
        );
        let mut r = rs("r", 1, 0, 0, 0);
        assert!(set_new_rs_annotations(&d, &mut r, 1, false));
        let a = r.metadata.annotations.clone().unwrap();
        assert_eq!(a[REVISION], "1");
        assert_eq!(a["team"], "a");
        assert!(!a.contains_key(LAST_APPLIED));
        assert_eq!(
            (a[DESIRED_REPLICAS].as_str(), a[MAX_REPLICAS].as_str()),
            ("3", "4")
        );
        assert!(!set_new_rs_annotations(&d, &mut r, 1, true), "nothing new");
        // Rolled back to: a newer revision, the old one kept in the history.
        assert!(set_new_rs_annotations(&d, &mut r, 3, true));
        let a = r.metadata.annotations.clone().unwrap();
        assert_eq!(
            (a[REVISION].as_str(), a[REVISION_HISTORY].as_str()),
            ("3", "1")
        );
        assert_eq!(max_revision(&[&r, &rs("x", 1, 0, 0, 0)]), 3);
    }

    #[test]
    fn new_set_is_found_by_template() {
        let d = deploy(3, json!(1), json!(0));
        let mut same = rs("same", 5, 0, 0, 0);
        same.spec.as_mut().unwrap().template = Some(
            serde_json::from_value(json!({
                "metadata": {"labels": {"app": "web", "pod-template-hash": "xyz"}},
                "spec": {"containers": [{"name": "c", "image": "v2"}]}
            }))
            .unwrap(),
        );
        let mut other = rs("other", 1, 0, 0, 0);
        other.spec.as_mut().unwrap().template = Some(
            serde_json::from_value(json!({
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "v1"}]}
            }))
            .unwrap(),
        );
        assert_eq!(
            find_new(&d, &[&other, &same])
                .and_then(|r| r.metadata.name.clone())
                .as_deref(),
            Some("same")
        );
        assert!(find_new(&d, &[&other]).is_none());
    }

    #[test]
    fn history_keeps_the_newest_scaled_down_sets() {
        let d = deploy(3, json!(1), json!(0)); // limit 2
        let mut sets: Vec<ReplicaSet> = (1..=4)
            .map(|i| {
                let mut r = rs(&format!("r{i}"), i, 0, 0, 0);
                r.metadata.annotations = Some([(REVISION.to_string(), i.to_string())].into());
                r
            })
            .collect();
        // r1 still has a pod: kept even though it is the oldest.
        sets[0] = {
            let mut r = rs("r1", 1, 1, 1, 1);
            r.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
            r
        };
        let refs: Vec<&ReplicaSet> = sets.iter().collect();
        assert_eq!(history_to_delete(&d, &refs), ["r2"]);
    }
}
