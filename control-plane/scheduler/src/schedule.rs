//! One decision: filter every node, score the feasible ones (least allocated, plus spreading
//! the pods of one owner, weighted 1 and 2 like kube-scheduler's NodeResourcesFit and
//! PodTopologySpread), take the best, ties broken at random so equal nodes fill evenly.
//! When no node fits, the error counts the reasons over all nodes in kube-scheduler's words.

use std::{collections::BTreeMap, fmt::Display};

use rand::Rng;

use crate::{
    cache::{Cache, NodeFacts, NodeInfo, PodFacts},
    filter::{self, PodInfo, Reason},
};

pub const MAX_SCORE: i64 = 100;
const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_SPREAD: i64 = 2;

/// No node fits: how many nodes there are and how many failed for each reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", message(*.nodes, .reasons))]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<Reason, usize>,
}

/// kube-scheduler's `FitError` message: "0/3 nodes are available: 1 Insufficient cpu,
/// 2 node(s) had untolerated taint {k: v}." (entries sorted as strings, as it does).
#[must_use]
pub fn message(nodes: usize, reasons: &BTreeMap<impl Display, usize>) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

/// NodeResourcesFit's LeastAllocated: the mean over CPU and memory of the share left free
/// after placing the pod (scored with non-zero requests, so request-less pods spread too).
#[must_use]
pub fn least_allocated(pod: &PodFacts, node: &NodeFacts, info: &NodeInfo) -> i64 {
    let alloc = node.allocatable.resources;
    let used = info.non_zero_requested.plus(pod.requests.non_zero);
    let share = |cap: i64, used: i64| {
        if cap <= 0 || used > cap {
            0
        } else {
            // i128: memory in bytes times 100 fits, but not with room to spare.
            i64::try_from(i128::from(cap - used) * i128::from(MAX_SCORE) / i128::from(cap))
                .unwrap_or(0)
        }
    };
    i64::midpoint(
        share(alloc.milli_cpu, used.milli_cpu),
        share(alloc.memory, used.memory),
    )
}

/// Spreading one owner's pods: a node with fewer of them scores higher, normalized by the
/// feasible node that has the most (kube-scheduler's default spreading).
#[must_use]
pub fn spread(count_on_node: u32, max_count: u32) -> i64 {
    if max_count == 0 {
        MAX_SCORE
    } else {
        MAX_SCORE * i64::from(max_count - count_on_node.min(max_count)) / i64::from(max_count)
    }
}

/// The node for `pod`, or why none fits.
pub fn schedule(pod: &PodInfo<'_>, cache: &Cache, rng: &mut impl Rng) -> Result<String, FitError> {
    let mut feasible: Vec<(&NodeFacts, &NodeInfo)> = Vec::new();
    let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut nodes = 0;
    for (n, info) in cache.nodes() {
        nodes += 1;
        let f = filter::failures(pod, n, info);
        if f.is_empty() {
            feasible.push((n, info));
        } else {
            for r in f {
                *reasons.entry(r).or_default() += 1;
            }
        }
    }
    let owner = pod.facts.owner.as_deref();
    let max_owned = owner.map_or(0, |o| {
        feasible
            .iter()
            .map(|(_, i)| i.owned_by(o))
            .max()
            .unwrap_or(0)
    });
    let mut best: Option<(&NodeFacts, i64)> = None;
    let mut ties = 0u32;
    for (n, info) in feasible {
        let s = WEIGHT_LEAST_ALLOCATED * least_allocated(pod.facts, n, info)
            + WEIGHT_SPREAD * spread(owner.map_or(0, |o| info.owned_by(o)), max_owned);
        match best {
            Some((_, b)) if s < b => {}
            Some((_, b)) if s == b => {
                // Reservoir sampling: each of the tied nodes is equally likely.
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((n, s));
                }
            }
            _ => {
                best = Some((n, s));
                ties = 1;
            }
        }
    }
    best.map(|(n, _)| n.name.clone())
        .ok_or(FitError { nodes, reasons })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use k8s_openapi::api::core::v1::Pod;
    use rand::{SeedableRng as _, rngs::StdRng};
    use serde_json::json;

    use super::*;
    use crate::resources::{Allocatable, PodRequests, Resources};

    fn node(name: &str, cpu: i64, taint: bool) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: if taint {
                vec![
                    serde_json::from_value(
                        json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
                    )
                    .unwrap(),
                ]
            } else {
                vec![]
            },
            unschedulable: false,
            ready: Some("True".into()),
            allocatable: Allocatable {
                resources: Resources {
                    milli_cpu: cpu,
                    memory: 8 << 30,
                },
                pods: 110,
            },
        }
    }

    fn pod(cpu: &str, owner: Option<&str>) -> Pod {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": cpu}}}]}});
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true}]);
        }
        serde_json::from_value(p).unwrap()
    }

    fn place(cache: &mut Cache, p: &Pod, rng: &mut StdRng, uid: &str) -> Result<String, FitError> {
        let facts = PodFacts::from_pod(p);
        let node = schedule(&PodInfo::new(p, &facts), cache, rng)?;
        cache.assume(uid, &node, facts);
        Ok(node)
    }

    #[test]
    fn message_counts_and_sorts_like_kube_scheduler() {
        let reasons = BTreeMap::from([
            ("node(s) had untolerated taint {a: b}".to_string(), 2),
            ("Insufficient cpu".to_string(), 1),
        ]);
        assert_eq!(
            message(3, &reasons),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {a: b}."
        );
        assert_eq!(
            message(0, &BTreeMap::<String, usize>::new()),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let facts = PodFacts {
            requests: PodRequests {
                actual: Resources::default(),
                non_zero: Resources {
                    milli_cpu: 1000,
                    memory: 0,
                },
            },
            ..Default::default()
        };
        let n = node("a", 4000, false);
        let empty = NodeInfo::default();
        let busy = NodeInfo {
            non_zero_requested: Resources {
                milli_cpu: 2000,
                memory: 4 << 30,
            },
            ..Default::default()
        };
        // cpu 75 free, memory 100 free → 87.
        assert_eq!(least_allocated(&facts, &n, &empty), 87);
        // cpu 25, memory 50 → 37.
        assert_eq!(least_allocated(&facts, &n, &busy), 37);
        let over = NodeInfo {
            non_zero_requested: Resources {
                milli_cpu: 9000,
                memory: 9 << 30,
            },
            ..Default::default()
        };
        assert_eq!(least_allocated(&facts, &n, &over), 0);
    }

    #[test]
    fn spread_scores_fewer_owned_pods_higher() {
        assert_eq!(spread(0, 0), 100);
        assert_eq!(spread(0, 2), 100);
        assert_eq!(spread(1, 2), 50);
        assert_eq!(spread(2, 2), 0);
    }

    #[test]
    fn one_owners_pods_spread_evenly_and_big_nodes_take_more_of_others() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut cache = Cache::default();
        for n in ["a", "b", "c"] {
            cache.set_node(node(n, 4000, false));
        }
        let mut per_node: HashMap<String, u32> = HashMap::new();
        for i in 0..9 {
            let n = place(
                &mut cache,
                &pod("100m", Some("rs-1")),
                &mut rng,
                &format!("u{i}"),
            )
            .unwrap();
            *per_node.entry(n).or_default() += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [3, 3, 3]);

        // Without an owner, least-allocated picks the node with most room.
        cache.set_node(node("big", 64000, false));
        let n = place(&mut cache, &pod("100m", None), &mut rng, "x").unwrap();
        assert_eq!(n, "big");
    }

    #[test]
    fn ties_are_broken_across_all_equal_nodes() {
        let mut cache = Cache::default();
        for n in ["a", "b", "c", "d"] {
            cache.set_node(node(n, 4000, false));
        }
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        let p = pod("100m", None);
        let facts = PodFacts::from_pod(&p);
        let info = PodInfo::new(&p, &facts);
        for _ in 0..64 {
            seen.insert(schedule(&info, &cache, &mut rng).unwrap());
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn no_fit_names_each_nodes_reason() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut cache = Cache::default();
        cache.set_node(node("small", 500, false));
        cache.set_node(node("gpu1", 8000, true));
        cache.set_node(node("gpu2", 8000, true));
        let err = place(&mut cache, &pod("1", None), &mut rng, "u").unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}."
        );
        // Assumed pods count: two 300m pods fill a 500m node after the first.
        let mut cache = Cache::default();
        cache.set_node(node("small", 500, false));
        place(&mut cache, &pod("300m", None), &mut rng, "a").unwrap();
        let err = place(&mut cache, &pod("300m", None), &mut rng, "b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
        cache.forget("a");
        assert_eq!(
            place(&mut cache, &pod("300m", None), &mut rng, "b").unwrap(),
            "small"
        );
    }
}
