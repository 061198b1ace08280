//! Node lifecycle: Lease heartbeats (and the Ready condition's) tell whether a node is alive.
//! A node not heard from for `node_monitor_grace` gets its conditions set to Unknown and the
//! `node.kubernetes.io/unreachable` taints; a node reporting Ready=False gets the `not-ready`
//! ones; they go when it is Ready again. Pods on a node with a NoExecute taint are deleted
//! once their toleration for it runs out (`pod_eviction_timeout` without one), so their
//! owners replace them elsewhere. Timers are `requeue_after`, not polling.
//!
//! Liveness is judged by when *we* saw the heartbeat change (as kube-controller-manager's
//! probe timestamps), not by the times the kubelet wrote, so clocks need not agree.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt as _, channel::mpsc, stream::BoxStream};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, NodeCondition, Pod, Taint, Toleration},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource as _, ResourceExt as _,
    api::{DeleteParams, Patch},
    runtime::{
        WatchStreamExt as _, applier,
        controller::{Action, Config as ApplierConfig},
        reflector::{self, ObjectRef, Store},
        watcher::{self, Event},
    },
};
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{
    Config, SyncError as Error, api_err as kube_err,
    events::{Recorder, Type},
    placement::tolerates,
    podcache::{self, CachedPod, PodCache},
};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const NO_EXECUTE: &str = "NoExecute";
const NO_SCHEDULE: &str = "NoSchedule";

// === decisions (pure) ===

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The Ready condition's status, if the node has one.
#[must_use]
pub fn ready_status(node: &Node) -> Option<&str> {
    ready_condition(node).map(|c| c.status.as_str())
}

/// The conditions of a node the kubelet stopped reporting for: all Unknown.
#[must_use]
pub fn unknown_conditions(current: &[NodeCondition], now: Timestamp) -> Vec<NodeCondition> {
    let mut out: Vec<NodeCondition> = current
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.status != "Unknown" {
                c.status = "Unknown".into();
                c.last_transition_time = Some(Time(now));
            }
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c
        })
        .collect();
    if !out.iter().any(|c| c.type_ == "Ready") {
        out.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: None,
        });
    }
    out
}

/// The node's taints with ours brought in line with its Ready status (`None`: unchanged).
/// A NoExecute taint keeps the time it was added; eviction counts from it.
#[must_use]
pub fn taints_for(current: &[Taint], ready: Option<&str>, now: Timestamp) -> Option<Vec<Taint>> {
    let key = match ready {
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        Some("False") => Some(TAINT_NOT_READY),
        _ => None,
    };
    let ours = |t: &Taint| {
        (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY)
            && (t.effect == NO_EXECUTE || t.effect == NO_SCHEDULE)
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !ours(t) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in [NO_SCHEDULE, NO_EXECUTE] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == NO_EXECUTE).then_some(Time(now)),
                });
            }
        }
    }
    (out != current).then_some(out)
}

/// How long a pod may stay on a node with this NoExecute taint: `None` for ever (a matching
/// toleration without `tolerationSeconds`); without a matching toleration, the default for
/// the node-health taints and zero for any other.
#[must_use]
pub fn allowed_for(
    tolerations: &[Toleration],
    taint: &Taint,
    default: Duration,
) -> Option<Duration> {
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        let health = taint.key == TAINT_UNREACHABLE || taint.key == TAINT_NOT_READY;
        return Some(if health { default } else { Duration::ZERO });
    }
    if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// When the pod must leave a node with these taints (`None`: it may stay).
#[must_use]
pub fn eviction_time(
    pod: &CachedPod,
    taints: &[Taint],
    default: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let tolerations = &pod.tolerations[..];
    taints
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .filter_map(|t| {
            let allowed = allowed_for(tolerations, t, default)?;
            let since = t.time_added.as_ref().map_or(now, |a| a.0);
            Some(since + SignedDuration::try_from(allowed).unwrap_or(SignedDuration::MAX))
        })
        .min()
}

// === controller ===

/// The last heartbeat seen from a node and when we saw it change.
struct Probe {
    renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    seen: Instant,
}

struct Ctx {
    client: Client,
    config: Arc<Config>,
    leases: Store<Lease>,
    pods: PodCache,
    probes: Mutex<HashMap<String, Probe>>,
    recorder: Recorder,
}

fn heartbeat(node: &Node) -> Option<Timestamp> {
    ready_condition(node)?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
}

impl Ctx {
    /// How long since the node was last heard from.
    fn silence(&self, node: &Node) -> Duration {
        let name = node.name_any();
        let renew = self
            .leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let hb = heartbeat(node);
        let now = Instant::now();
        let mut probes = self.probes.lock().expect("probes lock");
        let p = probes.entry(name).or_insert(Probe {
            renew,
            heartbeat: hb,
            seen: now,
        });
        if p.renew != renew || p.heartbeat != hb {
            p.renew = renew;
            p.heartbeat = hb;
            p.seen = now;
        }
        now - p.seen
    }
}

#[tracing::instrument(skip_all, fields(node = %node.name_any()))]
async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.leases.wait_until_ready().await?;
    ctx.pods.wait_until_ready().await;
    let name = node.name_any();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let grace = ctx.config.node_monitor_grace;
    let silence = ctx.silence(&node);
    let now = Timestamp::now();
    let mut ready = ready_status(&node).map(String::from);
    let mut next: Option<Duration> = None;

    if silence >= grace {
        if ready.as_deref() != Some("Unknown") {
            let conds = node.status.as_ref().and_then(|s| s.conditions.as_deref());
            let new = unknown_conditions(conds.unwrap_or_default(), now);
            api.patch_status(
                &name,
                &crate::patch_params(),
                &Patch::Merge(json!({"status": {"conditions": new}})),
            )
            .await
            .map_err(kube_err(format!("marking node {name} Unknown")))?;
            warn!(silent_for = ?silence, "node stopped posting status: Unknown");
            ctx.recorder.publish(
                &node.object_ref(&()),
                Type::Normal,
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            );
            ready = Some("Unknown".into());
        }
    } else {
        next = Some(grace.checked_sub(silence).unwrap());
    }

    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let taints = match taints_for(&current, ready.as_deref(), now) {
        Some(t) => {
            api.patch(
                &name,
                &crate::patch_params(),
                &Patch::Merge(json!({"spec": {"taints": t}})),
            )
            .await
            .map_err(kube_err(format!("tainting node {name}")))?;
            info!(ready = ?ready, taints = ?t.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node taints updated");
            t
        }
        None => current,
    };

    if taints.iter().any(|t| t.effect == NO_EXECUTE) {
        let default = ctx.config.pod_eviction_timeout;
        let pods = ctx
            .pods
            .filter(|p| p.node_name.as_deref() == Some(name.as_str()) && p.deletion.is_none());
        for pod in pods {
            let Some(at) = eviction_time(&pod, &taints, default, now) else {
                continue;
            };
            if at > now {
                let wait = Duration::try_from(at - now).unwrap_or_default();
                next = Some(next.map_or(wait, |n| n.min(wait)));
                continue;
            }
            evict(&ctx, &pod).await?;
        }
    }
    // A little past the deadline, so the next look finds it passed.
    Ok(next.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(20))
    }))
}

async fn evict(ctx: &Ctx, pod: &CachedPod) -> Result<(), Error> {
    let (ns, name) = (&*pod.namespace, &*pod.name);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(kube_err(format!("evicting pod {ns}/{name}"))(e)),
    }
    info!(pod = %format!("{ns}/{name}"), "pod evicted from a tainted node");
    ctx.recorder.publish(
        &pod.object_ref(),
        Type::Normal,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{name}"),
    );
    Ok(())
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(node: Arc<Node>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(node = %node.name_any(), error = %err, "node lifecycle failed, retrying");
    Action::requeue(Duration::from_millis(500))
}

type Queue = BoxStream<'static, Result<ObjectRef<Node>, watcher::Error>>;

/// Whether the node has a NoExecute taint (then its pods may have to go).
fn has_no_execute(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.effect == NO_EXECUTE))
}

pub async fn run(client: Client, config: Arc<Config>, pods: PodCache) -> crate::error::Result<()> {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config: Arc::clone(&config),
        leases,
        pods,
        probes: Mutex::default(),
        recorder: Recorder::new(client.clone(), "node-controller"),
    });

    let c = Arc::clone(&ctx);
    let node_events: Queue =
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(crate::drop_managed_fields)
            .reflect(node_writer)
            .filter_map(move |ev| {
                let out = match ev {
                    Ok(Event::Apply(n) | Event::InitApply(n)) => Some(Ok(ObjectRef::from_obj(&n))),
                    Ok(Event::Delete(n)) => {
                        c.probes.lock().expect("probes lock").remove(&n.name_any());
                        None
                    }
                    Ok(Event::Init | Event::InitDone) => None,
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(out)
            })
            .boxed();
    let lease_events: Queue = watcher::watcher(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(crate::drop_managed_fields)
    .reflect(lease_writer)
    .touched_objects()
    .map(|l| l.map(|l| ObjectRef::new(&l.name_any())))
    .boxed();
    // Pods only matter on nodes with a NoExecute taint (a pod that arrives there, or whose
    // tolerations change).
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Node>>();
    let tainted = nodes.clone();
    ctx.pods.subscribe(move |change| match change {
        podcache::Change::Applied {
            pod,
            relisted: false,
            ..
        } => {
            if let Some(n) = pod.node_name.as_deref()
                && tainted
                    .get(&ObjectRef::new(n))
                    .is_some_and(|node| has_no_execute(&node))
            {
                let _ = tx.unbounded_send(ObjectRef::new(n));
            }
        }
        // A (re)list may bring pods onto any tainted node.
        podcache::Change::Relisted => {
            for node in tainted.state().iter().filter(|n| has_no_execute(n)) {
                let _ = tx.unbounded_send(ObjectRef::from_obj(&**node));
            }
        }
        podcache::Change::Applied { relisted: true, .. } | podcache::Change::Deleted(_) => {}
    });
    let pod_events: Queue = rx.map(Ok).boxed();

    let queue = futures::stream::select_all([node_events, lease_events, pod_events]);
    info!(grace = ?config.node_monitor_grace, eviction = ?config.pod_eviction_timeout, "nodelifecycle controller running");
    crate::drain(
        "nodelifecycle",
        applier(
            |n, ctx| Box::pin(reconcile(n, ctx)),
            error_policy,
            ctx,
            nodes,
            queue,
            ApplierConfig::default().concurrency(16),
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|a| Time(t(a))),
        }
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn pod(tolerations: serde_json::Value) -> CachedPod {
        CachedPod::from_pod(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn taints_follow_readiness() {
        let now = t("2024-01-01T00:00:00Z");
        let user = taint("dedicated", NO_SCHEDULE, None);
        let got = taints_for(std::slice::from_ref(&user), Some("Unknown"), now).unwrap();
        let keys: Vec<(String, String)> = got
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated".into(), NO_SCHEDULE.into()),
                (TAINT_UNREACHABLE.into(), NO_SCHEDULE.into()),
                (TAINT_UNREACHABLE.into(), NO_EXECUTE.into())
            ]
        );
        assert_eq!(got[2].time_added, Some(Time(now)));
        // Already there: nothing to write, and the time added stays.
        assert_eq!(
            taints_for(&got, Some("Unknown"), t("2024-01-01T00:01:00Z")),
            None
        );
        // Ready=False swaps unreachable for not-ready.
        let nr = taints_for(&got, Some("False"), now).unwrap();
        assert!(
            nr.iter()
                .any(|t| t.key == TAINT_NOT_READY && t.effect == NO_EXECUTE)
        );
        assert!(!nr.iter().any(|t| t.key == TAINT_UNREACHABLE));
        // Recovered: only the user's taint is left.
        assert_eq!(
            taints_for(&nr, Some("True"), now).unwrap(),
            vec![user.clone()]
        );
        assert_eq!(taints_for(&[user], Some("True"), now), None);
    }

    #[test]
    fn conditions_become_unknown() {
        let now = t("2024-01-01T00:00:00Z");
        let conds: Vec<NodeCondition> = serde_json::from_value(json!([
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2023-12-31T23:59:00Z", "lastTransitionTime": "2023-12-31T00:00:00Z"},
            {"type": "MemoryPressure", "status": "False"}
        ]))
        .unwrap();
        let u = unknown_conditions(&conds, now);
        assert!(u.iter().all(|c| c.status == "Unknown"
            && c.reason.as_deref() == Some("NodeStatusUnknown")
            && c.message.as_deref() == Some("Kubelet stopped posting node status.")));
        assert_eq!(u[0].last_transition_time, Some(Time(now)));
        assert_eq!(u[0].last_heartbeat_time, conds[0].last_heartbeat_time);
        let never = unknown_conditions(&[], now);
        assert_eq!(never[0].reason.as_deref(), Some("NodeStatusNeverUpdated"));
    }

    #[test]
    fn eviction_timing() {
        let default = Duration::from_mins(5);
        let now = t("2024-01-01T00:10:00Z");
        let unreachable = [taint(
            TAINT_UNREACHABLE,
            NO_EXECUTE,
            Some("2024-01-01T00:00:00Z"),
        )];
        // No toleration: the default, from when the taint was added.
        assert_eq!(
            eviction_time(&pod(json!([])), &unreachable, default, now),
            Some(t("2024-01-01T00:05:00Z"))
        );
        // Its own tolerationSeconds.
        let own = pod(
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE, "tolerationSeconds": 30}]),
        );
        assert_eq!(
            eviction_time(&own, &unreachable, default, now),
            Some(t("2024-01-01T00:00:30Z"))
        );
        // Without tolerationSeconds: never.
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &unreachable, default, now), None);
        // A toleration for something else does not count; an untolerated other NoExecute
        // taint evicts at once.
        let other =
            pod(json!([{"key": "x", "operator": "Equal", "value": "y", "effect": NO_EXECUTE}]));
        assert_eq!(
            eviction_time(&other, &unreachable, default, now),
            Some(t("2024-01-01T00:05:00Z"))
        );
        let dedicated = [taint("dedicated", NO_EXECUTE, Some("2024-01-01T00:09:00Z"))];
        assert_eq!(
            eviction_time(&pod(json!([])), &dedicated, default, now),
            Some(t("2024-01-01T00:09:00Z"))
        );
        // NoSchedule taints never evict.
        assert_eq!(
            eviction_time(
                &pod(json!([])),
                &[taint("a", NO_SCHEDULE, None)],
                default,
                now
            ),
            None
        );
    }

    #[test]
    fn toleration_matching() {
        let tt = taint("k", NO_EXECUTE, None);
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(
            &tol(json!({"key": "k", "operator": "Exists"})),
            &tt
        ));
        assert!(tolerates(
            &tol(json!({"key": "k", "operator": "Equal", "value": ""})),
            &tt
        ));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "v"})), &tt));
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": NO_SCHEDULE})),
            &tt
        ));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &tt));
        assert!(!tolerates(
            &tol(json!({"key": "other", "operator": "Exists"})),
            &tt
        ));
    }
}
