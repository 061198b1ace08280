//! DaemonSet controller, as kube-controller-manager's: one pod of the template per eligible
//! node (nodeSelector, required node affinity, taints against the pod's tolerations plus the
//! daemon tolerations Kubernetes adds), pods removed from nodes that stop qualifying or go
//! away, failed pods replaced, and on a template change a rolling update that replaces pods
//! node by node within `maxUnavailable` (or nothing, for `OnDelete`).
//!
//! Pods are placed through the default scheduler, as Kubernetes does since 1.12: each gets
//! a required node affinity `matchFields metadata.name In [node]`, which the scheduler's
//! NodeAffinity filter honours. Template revisions are told apart by the
//! `controller-revision-hash` pod label (the template's hash); ControllerRevision objects are
//! not served, so `kubectl rollout history/undo ds` have nothing to read.
//!
//! Runs kube-runtime's controller engine over caches of DaemonSets and Nodes and the
//! process' shared pod cache; expectations keep a sync from acting on a cache that is behind
//! its own writes.

pub mod plan;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::{StreamExt as _, channel::mpsc};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Resource, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::{self, Action, ReconcileRequest},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::{Value, json};
use tracing::{debug, info, instrument, warn};

use self::plan::{Doom, GENERATION_LABEL, Inputs, REVISION_LABEL};
use crate::{
    SyncError as Error, api_err,
    deployment::hash::pod_template_hash,
    events::{Recorder, Type},
    expectations::Expectations,
    podcache::{self, CachedPod, PodCache},
    replicaset::{
        claim::{self, Child, Claim, key},
        informer::{self, Change},
        pods::slow_start_batches,
    },
};

/// The owner this controller's pods name (expectations are keyed by it).
const OWNER: (&str, &str) = ("apps/v1", "DaemonSet");

/// Most API calls of one batch in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Periodic resync; also lets expired expectations resume a stuck set.
const RESYNC: Duration = Duration::from_mins(5);

/// What the reconciles share.
pub struct Ctx {
    client: kube::Client,
    pods: PodCache,
    nodes: Store<Node>,
    expectations: Arc<Expectations>,
    recorder: Recorder,
}

/// What of a node decides placement: a heartbeat or status write changes none of it, so
/// it need not look at every DaemonSet again.
fn placement_facts(n: &Node) -> Value {
    let spec = n.spec.as_ref().map(|s| json!([s.taints, s.unschedulable]));
    json!([n.metadata.labels, spec])
}

/// Nodes are cached without their status (images, conditions): placement reads only
/// labels, taints and the name.
fn slim_node(n: &mut Node) {
    n.metadata.managed_fields = None;
    n.metadata.annotations = None;
    n.status = None;
}

pub async fn run(client: kube::Client, pods: PodCache) -> crate::error::Result<()> {
    let expectations = Arc::new(Expectations::default());
    let (tx, rx) = mpsc::unbounded::<ObjectRef<DaemonSet>>();

    let sets = informer::spawn(
        Api::<DaemonSet>::all(client.clone()),
        crate::drop_managed_fields,
        {
            let (tx, exp) = (tx.clone(), Arc::clone(&expectations));
            move |c: Change<'_, DaemonSet>| match c {
                Change::Applied { obj } => {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(obj));
                }
                Change::Deleted(obj) => exp.forget(&key(&obj.metadata)),
                Change::Relisted => {}
            }
        },
    );
    // Every DaemonSet looks again when a node comes, goes or changes labels or taints.
    let seen: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let nodes = informer::spawn(Api::<Node>::all(client.clone()), slim_node, {
        let (tx, sets) = (tx.clone(), sets.clone());
        move |c: Change<'_, Node>| {
            let changed = match c {
                Change::Applied { obj } => {
                    let facts = placement_facts(obj);
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.insert(obj.name_any(), facts.clone()) != Some(facts)
                }
                Change::Deleted(obj) => {
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.remove(&obj.name_any());
                    true
                }
                Change::Relisted => true,
            };
            if changed {
                for ds in sets.state() {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(&*ds));
                }
            }
        }
    });
    pods.subscribe({
        let (tx, exp, sets) = (tx.clone(), Arc::clone(&expectations), sets.clone());
        move |c: podcache::Change<'_>| match c {
            podcache::Change::Applied {
                pod,
                is_new,
                relisted,
            } => {
                exp.observe_pod(pod, OWNER, is_new, false);
                if !relisted {
                    for r in owners_of(pod, &sets) {
                        let _ = tx.unbounded_send(r);
                    }
                }
            }
            podcache::Change::Deleted(pod) => {
                exp.observe_pod(pod, OWNER, false, true);
                for r in owners_of(pod, &sets) {
                    let _ = tx.unbounded_send(r);
                }
            }
            podcache::Change::Relisted => {
                for ds in sets.state() {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(&*ds));
                }
            }
        }
    });
    // A sync on a partial cache would create pods that exist or delete pods of live nodes.
    pods.wait_until_ready().await;
    nodes
        .wait_until_ready()
        .await
        .map_err(|_| crate::error::Error::CacheStopped("daemonset"))?;
    info!("daemonset controller started");

    let ctx = Arc::new(Ctx {
        recorder: Recorder::throttled(client.clone(), "daemonset-controller"),
        client,
        pods,
        nodes,
        expectations,
    });
    let queue = rx.map(|r| Ok::<_, Infallible>(ReconcileRequest::from(r)));
    crate::drain(
        "daemonset",
        controller::applier(
            |ds, ctx| Box::pin(reconcile(ds, ctx)),
            error_policy,
            ctx,
            sets,
            queue,
            controller::Config::default(),
        ),
    )
    .await
}

fn child(pod: &CachedPod) -> Child<'_> {
    Child {
        owners: &pod.owners,
        labels: Some(&pod.labels),
        deleting: pod.deletion.is_some(),
    }
}

fn owners_of(pod: &CachedPod, sets: &Store<DaemonSet>) -> Vec<ObjectRef<DaemonSet>> {
    claim::owners_to_sync(&pod.namespace, child(pod), sets, |ds| {
        ds.spec.as_ref().map(|s| &s.selector)
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(ds: Arc<DaemonSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(ds = %key(&ds.metadata), error = %error, cause = ?std::error::Error::source(error), "daemonset sync failed");
    Action::requeue(Duration::from_millis(500))
}

#[instrument(skip_all, fields(ds = %key(&ds.metadata)))]
async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ds_key = key(&ds.metadata);
    let ns = ds.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = ds.uid().ok_or(Error::MissingMetadata("uid"))?;
    let our_ref = claim::controller_ref(&*ds).ok_or(Error::MissingMetadata("name or uid"))?;
    // Checked before reading the cache: satisfied means the cache has what we did.
    let needs_sync = ctx.expectations.satisfied(&ds_key);
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::requeue(RESYNC));
    };
    let selector = claim::matcher(&spec.selector).map_err(Error::Selector)?;
    let deleting = ds.metadata.deletion_timestamp.is_some();

    let mut owned = Vec::new();
    let (mut adopt, mut release) = (Vec::new(), Vec::new());
    for pod in ctx.pods.in_namespace(&ns) {
        match claim::claim_child(&uid, deleting, child(&pod), selector.as_ref()) {
            Claim::Keep => owned.push(pod),
            Claim::Adopt => adopt.push(pod),
            Claim::Release => release.push(pod),
            Claim::Ignore => {}
        }
    }
    owned.extend(change_owners(&ctx, &ns, &our_ref, adopt, true).await);
    change_owners(&ctx, &ns, &our_ref, release, false).await;

    let template = spec.template.clone();
    let hash = pod_template_hash(
        &template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    let pod_spec = plan::with_daemon_tolerations(&template.spec.clone().unwrap_or_default());
    let nodes = ctx.nodes.state();
    let node_refs: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    let pod_refs: Vec<&CachedPod> = owned.iter().map(|p| &**p).collect();
    let inputs = Inputs {
        ds: &ds,
        spec: &pod_spec,
        nodes: &node_refs,
        pods: &pod_refs,
        hash: &hash,
        now: Timestamp::now(),
    };

    let mut failure = None;
    if needs_sync && !deleting {
        let actions = plan::plan(&inputs);
        if !actions.is_empty() {
            debug!(
                create = actions.create_on.len(),
                delete = actions.delete.len(),
                "syncing nodes"
            );
        }
        failure = sync_nodes(&ds, &ds_key, &ns, &hash, &pod_spec, actions, &ctx)
            .await
            .err();
    }

    let counts = plan::status(&inputs);
    let generation = ds.metadata.generation.unwrap_or(0);
    let body = status_body(&counts, generation);
    if status_changed(ds.status.as_ref(), &body) {
        write_status(&ctx.client, &ns, &ds.name_any(), &body).await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // A ready pod turns available after minReadySeconds without any event: look again then.
    if let Some(at) = counts.next_available {
        let wait = inputs.now.duration_until(at).unsigned_abs() + Duration::from_millis(50);
        return Ok(Action::requeue(wait.min(RESYNC)));
    }
    Ok(Action::requeue(RESYNC))
}

/// The status as `storeDaemonSetStatus` writes it; the `omitempty` counts are null (removed
/// by the merge patch) when zero, as Kubernetes leaves them out.
fn status_body(c: &plan::Counts, generation: i64) -> Value {
    let opt = |n: i32| if n == 0 { Value::Null } else { json!(n) };
    json!({
        "observedGeneration": generation,
        "desiredNumberScheduled": c.desired_number_scheduled,
        "currentNumberScheduled": c.current_number_scheduled,
        "numberMisscheduled": c.number_misscheduled,
        "numberReady": c.number_ready,
        "updatedNumberScheduled": opt(c.updated_number_scheduled),
        "numberAvailable": opt(c.number_available),
        "numberUnavailable": opt(c.number_unavailable()),
    })
}

fn status_changed(old: Option<&k8s_openapi::api::apps::v1::DaemonSetStatus>, body: &Value) -> bool {
    let Some(old) = old else { return true };
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    body.as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| old.get(k).unwrap_or(&Value::Null) != v)
}

/// `syncNodes`: deletes, then creates in slow-start batches (a quota or admission failure
/// stops after the first pods instead of hundreds).
async fn sync_nodes(
    ds: &DaemonSet,
    ds_key: &str,
    ns: &str,
    hash: &str,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    actions: plan::Actions,
    ctx: &Ctx,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    if !actions.delete.is_empty() {
        ctx.expectations
            .expect_deletions(ds_key, actions.delete.iter().map(|(n, _)| n.clone()));
    }
    let results: Vec<_> = futures::stream::iter(actions.delete)
        .map(|(name, why)| {
            let api = api.clone();
            async move {
                let r = api.delete(&name, &DeleteParams::default()).await;
                (name, why, r)
            }
        })
        .buffer_unordered(MAX_IN_FLIGHT)
        .collect()
        .await;
    let mut failure = None;
    for (name, why, r) in results {
        match r {
            Ok(_) => {
                if why == Doom::Failed {
                    let msg = format!("Found failed daemon pod {ns}/{name}, will try to kill it");
                    ctx.event(ds, Type::Warning, "FailedDaemonPod", &msg);
                }
                ctx.event(
                    ds,
                    Type::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                );
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.expectations.deletion_observed(ds_key, &name);
            }
            Err(e) => {
                ctx.expectations.deletion_observed(ds_key, &name);
                ctx.event(
                    ds,
                    Type::Warning,
                    "FailedDelete",
                    &format!("Error deleting: {e}"),
                );
                failure.get_or_insert(api_err("deleting pods")(e));
            }
        }
    }

    let n = actions.create_on.len();
    if n == 0 {
        return failure.map_or(Ok(()), Err);
    }
    ctx.expectations.expect_creations(ds_key, n);
    let mut nodes = actions.create_on.into_iter();
    let mut created = 0;
    for batch in slow_start_batches(n, 1) {
        let pods: Vec<Pod> = nodes
            .by_ref()
            .take(batch)
            .filter_map(|node| daemon_pod(ds, hash, spec, &node))
            .collect();
        let results: Vec<_> = futures::stream::iter(pods)
            .map(|pod| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        let mut batch_failed = false;
        for r in results {
            match r {
                Ok(p) => {
                    created += 1;
                    ctx.event(
                        ds,
                        Type::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "cannot create daemon pod");
                    ctx.event(
                        ds,
                        Type::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    );
                    batch_failed = true;
                    failure.get_or_insert(api_err("creating pods")(e));
                }
            }
        }
        if batch_failed {
            break;
        }
    }
    // Creates that failed or were never tried will not be observed.
    for _ in created..n {
        ctx.expectations.creation_observed(ds_key);
    }
    failure.map_or(Ok(()), Err)
}

/// `NewPod` + `CreatePodTemplate` for one node: the template's metadata with the revision
/// labels, the daemon tolerations, pinned to `node` by node affinity, controlled by the set.
fn daemon_pod(
    ds: &DaemonSet,
    hash: &str,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    node: &str,
) -> Option<Pod> {
    let tm = ds
        .spec
        .as_ref()?
        .template
        .metadata
        .clone()
        .unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(
        GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut spec = spec.clone();
    spec.affinity = Some(plan::pinned_to(spec.affinity.take(), node));
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref()?)),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![claim::controller_ref(ds)?]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

async fn write_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": body })),
    )
    .await
    .map_err(api_err("writing status"))?;
    Ok(())
}

/// Adopts or releases pods by rewriting their ownerReferences, with the pod's
/// resourceVersion as precondition. Returns the pods whose write succeeded.
async fn change_owners(
    ctx: &Ctx,
    ns: &str,
    ours: &OwnerReference,
    pods: Vec<Arc<CachedPod>>,
    adopt: bool,
) -> Vec<Arc<CachedPod>> {
    if pods.is_empty() {
        return pods;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut done = Vec::new();
    for pod in pods {
        let refs = claim::refs_after(&pod.owners, ours, adopt);
        let body = json!({"metadata": {
            "ownerReferences": refs,
            "resourceVersion": &*pod.resource_version,
        }});
        match api
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                info!(pod = %pod.name, adopt, "changed pod owner");
                done.push(pod);
            }
            Err(e) => debug!(pod = %pod.name, error = %e, adopt, "cannot change pod owner"),
        }
    }
    done
}

impl Ctx {
    fn event(&self, ds: &DaemonSet, type_: Type, reason: &str, message: &str) {
        self.recorder
            .publish(&ds.object_ref(&()), type_, reason, message);
    }
}

#[cfg(test)]
mod tests;
