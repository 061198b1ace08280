//! ReplicaSet controller, as kube-controller-manager's: keeps `spec.replicas` pods of the
//! template, each with a controller ownerReference and `generateName: <rs>-`; deletes the
//! surplus in Kubernetes' order; adopts matching orphans and releases pods that stopped
//! matching; never acts twice on a cache that is behind its own writes (expectations);
//! writes replicas / fullyLabeled / ready / available / observedGeneration to status.
//!
//! Runs kube-runtime's controller engine (`applier`, what `Controller::run` drives) over its
//! ReplicaSet cache and the process' shared pod cache, so that a pod event updates the cache
//! and the expectations before it triggers its ReplicaSet.

pub(crate) mod claim;
pub(crate) mod informer;
pub mod pods;

use std::{convert::Infallible, sync::Arc, time::Duration};

use futures::{StreamExt as _, channel::mpsc};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{ReplicaSet, ReplicaSetSpec},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kproxy_apimachinery::selector::LabelSelector;
use kube::{
    Api, Resource, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::{self, Action, ReconcileRequest},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use self::claim::{Child, Claim, controller_of, key};
use self::informer::Change;
use crate::{
    SyncError as Error, api_err, drop_managed_fields,
    events::{Recorder, Type},
    expectations::Expectations,
    podcache::{self, CachedPod, PodCache},
};

/// The owner this controller's pods name (expectations are keyed by it).
const OWNER: (&str, &str) = ("apps/v1", "ReplicaSet");

/// Most pods created or deleted per sync (kube-controller-manager's `burstReplicas`).
const BURST_REPLICAS: usize = 500;
/// Most API calls of one batch in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Periodic resync; also lets expired expectations (lost events) resume a stuck set.
const RESYNC: Duration = Duration::from_mins(5);

/// What the reconciles share.
pub struct Ctx {
    client: kube::Client,
    pods: PodCache,
    sets: Store<ReplicaSet>,
    expectations: Arc<Expectations>,
    recorder: Recorder,
}

pub async fn run(client: kube::Client, pods: PodCache) -> crate::error::Result<()> {
    let expectations = Arc::new(Expectations::default());
    let (tx, rx) = mpsc::unbounded::<ObjectRef<ReplicaSet>>();

    let sets = informer::spawn(
        Api::<ReplicaSet>::all(client.clone()),
        drop_managed_fields,
        {
            let (tx, exp) = (tx.clone(), Arc::clone(&expectations));
            move |c: Change<'_, ReplicaSet>| match c {
                Change::Applied { obj, .. } => {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(obj));
                }
                Change::Deleted(obj) => exp.forget(&key(&obj.metadata)),
                Change::Relisted => {}
            }
        },
    );
    pods.subscribe({
        let (tx, exp, sets) = (tx.clone(), Arc::clone(&expectations), sets.clone());
        move |c: podcache::Change<'_>| match c {
            podcache::Change::Applied {
                pod,
                is_new,
                relisted,
            } => {
                exp.observe_pod(pod, OWNER, is_new, false);
                // A relist ends with `Relisted`, which looks at every set.
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
            // Pods may have changed while the watch was down: look at every set again.
            podcache::Change::Relisted => {
                for rs in sets.state() {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(&*rs));
                }
            }
        }
    });
    // A sync on a partial pod cache would create pods that already exist.
    pods.wait_until_ready().await;
    info!("replicaset controller started");

    let ctx = Arc::new(Ctx {
        // Throttled: a 1,000-pod scale-up would otherwise write 1,000 SuccessfulCreate events.
        recorder: Recorder::throttled(client.clone(), "replicaset-controller"),
        client,
        pods,
        sets: sets.clone(),
        expectations,
    });
    let queue = rx.map(|r| Ok::<_, Infallible>(ReconcileRequest::from(r)));
    crate::drain(
        "replicaset",
        controller::applier(
            |rs, ctx| Box::pin(reconcile(rs, ctx)),
            error_policy,
            ctx,
            sets,
            queue,
            controller::Config::default(),
        ),
    )
    .await
}

/// The set a pod event concerns: its controller, or for an orphan every set of its namespace
/// whose selector matches (one of them may adopt it).
fn owners_of(pod: &CachedPod, sets: &Store<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    claim::owners_to_sync(&pod.namespace, child(pod), sets, |rs| {
        rs.spec.as_ref().map(|s| &s.selector)
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(rs: Arc<ReplicaSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(rs = %key(&rs.metadata), error = %error, cause = ?std::error::Error::source(error), "replicaset sync failed");
    Action::requeue(Duration::from_millis(500))
}

#[instrument(skip_all, fields(rs = %key(&rs.metadata)))]
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let rs_key = key(&rs.metadata);
    let ns = rs.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = rs.uid().ok_or(Error::MissingMetadata("uid"))?;
    // Checked before reading the cache: satisfied means the cache has what we did.
    let needs_sync = ctx.expectations.satisfied(&rs_key);
    let no_spec;
    let spec = if let Some(s) = &rs.spec {
        s
    } else {
        no_spec = ReplicaSetSpec::default();
        &no_spec
    };
    let selector = claim::matcher(&spec.selector).map_err(Error::Selector)?;
    let deleting = rs.metadata.deletion_timestamp.is_some();

    let mut owned: Vec<Arc<CachedPod>> = Vec::new();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    // The namespace's active pods (a scale-down also ranks against its siblings' among them).
    let active: Vec<Arc<CachedPod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| pods::is_active(p))
        .collect();
    for pod in &active {
        match claim::claim_child(&uid, deleting, child(pod), selector.as_ref()) {
            Claim::Keep => owned.push(Arc::clone(pod)),
            Claim::Adopt => adopt.push(Arc::clone(pod)),
            Claim::Release => release.push(Arc::clone(pod)),
            Claim::Ignore => {}
        }
    }
    let our_ref = claim::controller_ref(&*rs).ok_or(Error::MissingMetadata("name or uid"))?;
    owned.extend(change_owners(&ctx, &ns, &our_ref, adopt, true).await);
    change_owners(&ctx, &ns, &our_ref, release, false).await;

    let mut create_failure = None;
    let mut manage_err = None;
    if needs_sync
        && !deleting
        && let Err(e) = manage(&rs, &rs_key, &ns, &owned, &active, &ctx).await
    {
        if matches!(e, Manage::Create(_)) {
            create_failure = Some(e.to_string());
        }
        manage_err = Some(e);
    }

    let now = Timestamp::now();
    let template_sel = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| LabelSelector::from_map(l).ok());
    let refs: Vec<&CachedPod> = owned.iter().map(|p| &**p).collect();
    let counts = pods::counts(
        &refs,
        template_sel.as_ref(),
        spec.min_ready_seconds.unwrap_or(0),
        now,
    );
    let status = pods::status(&rs, &counts, create_failure.as_deref(), now);
    if !pods::status_unchanged(rs.status.as_ref(), &status) {
        write_status(&ctx.client, &ns, &rs.name_any(), &status).await?;
    }
    if let Some(e) = manage_err {
        return Err(e.into_error());
    }
    // A ready pod turns available after minReadySeconds without any event: look again then.
    if let Some(at) = counts.next_available {
        let wait = now.duration_until(at).unsigned_abs() + Duration::from_millis(50);
        return Ok(Action::requeue(wait.min(RESYNC)));
    }
    Ok(Action::requeue(RESYNC))
}

/// Why managing replicas failed (creates are reported in the status' ReplicaFailure).
#[derive(Debug, thiserror::Error)]
enum Manage {
    #[error("{0}")]
    Create(kube::Error),
    #[error("{0}")]
    Delete(kube::Error),
}

impl Manage {
    fn into_error(self) -> Error {
        match self {
            Manage::Create(e) => api_err("creating pods")(e),
            Manage::Delete(e) => api_err("deleting pods")(e),
        }
    }
}

/// manageReplicas: create or delete the difference, at most a burst at a time.
async fn manage(
    rs: &ReplicaSet,
    rs_key: &str,
    ns: &str,
    owned: &[Arc<CachedPod>],
    active: &[Arc<CachedPod>],
    ctx: &Ctx,
) -> Result<(), Manage> {
    let want = usize::try_from(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
    let have = owned.len();
    match have.cmp(&want) {
        std::cmp::Ordering::Less => {
            let n = (want - have).min(BURST_REPLICAS);
            create_pods(rs, rs_key, ns, n, ctx).await
        }
        std::cmp::Ordering::Greater => {
            let n = (have - want).min(BURST_REPLICAS);
            let related = related_pods(rs, active, ctx);
            let candidates: Vec<&CachedPod> = owned.iter().map(|p| &**p).collect();
            let doomed: Vec<String> = pods::pods_to_delete(&candidates, &related, n)
                .into_iter()
                .map(|p| p.name.to_string())
                .collect();
            delete_pods(rs, rs_key, ns, doomed, ctx).await
        }
        std::cmp::Ordering::Equal => Ok(()),
    }
}

async fn create_pods(
    rs: &ReplicaSet,
    rs_key: &str,
    ns: &str,
    n: usize,
    ctx: &Ctx,
) -> Result<(), Manage> {
    let pod = pod_from_template(rs).ok_or_else(|| {
        Manage::Create(kube::Error::Api(
            kube::core::Status::failure("the ReplicaSet has no name or uid", "Invalid").boxed(),
        ))
    })?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    ctx.expectations.expect_creations(rs_key, n);
    let mut created = 0;
    let mut failure = None;
    for batch in pods::slow_start_batches(n, 1) {
        let results: Vec<_> = futures::stream::iter(0..batch)
            .map(|_| create_pod(&api, &pod))
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(p) => {
                    created += 1;
                    ctx.event(
                        rs,
                        Type::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "cannot create pod");
                    ctx.event(
                        rs,
                        Type::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    );
                    failure.get_or_insert(e);
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    // Creates that failed or were never tried will not be observed.
    for _ in created..n {
        ctx.expectations.creation_observed(rs_key);
    }
    debug!(created, wanted = n, "created pods");
    failure.map_or(Ok(()), |e| Err(Manage::Create(e)))
}

async fn delete_pods(
    rs: &ReplicaSet,
    rs_key: &str,
    ns: &str,
    doomed: Vec<String>,
    ctx: &Ctx,
) -> Result<(), Manage> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    ctx.expectations
        .expect_deletions(rs_key, doomed.iter().cloned());
    let results: Vec<_> = futures::stream::iter(doomed)
        .map(|name| {
            let api = api.clone();
            async move {
                let r = api.delete(&name, &DeleteParams::default()).await;
                (name, r)
            }
        })
        .buffer_unordered(MAX_IN_FLIGHT)
        .collect()
        .await;
    let mut failure = None;
    for (name, r) in results {
        match r {
            Ok(_) => ctx.event(
                rs,
                Type::Normal,
                "SuccessfulDelete",
                &format!("Deleted pod: {name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.expectations.deletion_observed(rs_key, &name);
            }
            Err(e) => {
                ctx.expectations.deletion_observed(rs_key, &name);
                ctx.event(
                    rs,
                    Type::Warning,
                    "FailedDelete",
                    &format!("Error deleting: {e}"),
                );
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), |e| Err(Manage::Delete(e)))
}

/// Among the namespace's `active` pods, those of every set sharing this set's controller (a
/// Deployment's old and new sets): spreading them evenly decides which node loses a pod first.
fn related_pods<'a>(
    rs: &ReplicaSet,
    active: &'a [Arc<CachedPod>],
    ctx: &Ctx,
) -> Vec<&'a CachedPod> {
    let Some(owner) = controller_of(&rs.metadata) else {
        return Vec::new();
    };
    let siblings: Vec<String> = ctx
        .sets
        .state()
        .iter()
        .filter(|s| controller_of(&s.metadata).is_some_and(|o| o.uid == owner.uid))
        .filter_map(|s| s.uid())
        .collect();
    active
        .iter()
        .filter(|p| p.controller().is_some_and(|o| siblings.contains(&o.uid)))
        .map(|p| &**p)
        .collect()
}

/// A cached pod as a candidate for [`claim::claim_child`].
fn child(pod: &CachedPod) -> Child<'_> {
    Child {
        owners: &pod.owners,
        labels: Some(&pod.labels),
        deleting: pod.deletion.is_some(),
    }
}

/// GetPodFromTemplate: the template's labels, annotations, finalizers and spec, named
/// `<rs>-<random>` by the API server, controlled by the set.
fn pod_from_template(rs: &ReplicaSet) -> Option<Pod> {
    let template = rs.spec.as_ref()?.template.clone().unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref()?)),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![claim::controller_ref(rs)?]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

// === child writes (one place each, to switch to server-side apply later) ===

async fn create_pod(api: &Api<Pod>, pod: &Pod) -> Result<Pod, kube::Error> {
    api.create(&PostParams::default(), pod).await
}

async fn write_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: &k8s_openapi::api::apps::v1::ReplicaSetStatus,
) -> Result<(), Error> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let mut body = json!({ "status": status });
    // A merge patch keeps what it does not mention: say explicitly that conditions are gone.
    if status.conditions.is_none() {
        body["status"]["conditions"] = serde_json::Value::Null;
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(api_err("writing status"))?;
    Ok(())
}

/// Adopts (`adopt`) or releases pods by rewriting their ownerReferences, with the pod's
/// resourceVersion as precondition (a pod changed meanwhile is looked at next sync).
/// Returns the pods whose write succeeded.
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
    let results: Vec<_> = futures::stream::iter(pods)
        .map(|pod| {
            let api = api.clone();
            async move {
                let refs = claim::refs_after(&pod.owners, ours, adopt);
                let body = json!({"metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": &*pod.resource_version,
                }});
                let r = api
                    .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await;
                (pod, r)
            }
        })
        .buffer_unordered(MAX_IN_FLIGHT)
        .collect()
        .await;
    let mut done = Vec::new();
    for (pod, r) in results {
        match r {
            Ok(_) => {
                info!(pod = %pod.name, adopt, "changed pod owner");
                done.push(pod);
            }
            Err(e) => debug!(pod = %pod.name, error = %e, adopt, "cannot change pod owner"),
        }
    }
    done
}

// === events ===

impl Ctx {
    fn event(&self, rs: &ReplicaSet, type_: Type, reason: &str, message: &str) {
        self.recorder
            .publish(&rs.object_ref(&()), type_, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs() -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns1", "uid": "u1"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "httpd"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let p = pod_from_template(&rs()).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns1"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        assert_eq!(p.metadata.annotations.unwrap()["a"], "b");
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
            ("ReplicaSet", "web-abc", "u1")
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("httpd")
        );
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn pod_of(owner: Option<&str>, labels: serde_json::Value) -> CachedPod {
        let refs = owner.map(|o| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": "x", "controller": true}])
        });
        CachedPod::from_pod(
            serde_json::from_value(json!({
                "metadata": {"name": "p1", "namespace": "ns1", "labels": labels, "ownerReferences": refs},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn pod_events_meet_expectations() {
        let exp = Expectations::default();
        exp.expect_creations("ns1/web-abc", 1);
        let p = pod_of(Some("web-abc"), json!({}));
        exp.observe_pod(&p, OWNER, false, false);
        assert!(!exp.satisfied("ns1/web-abc"), "an update is not a create");
        exp.observe_pod(&p, OWNER, true, false);
        assert!(exp.satisfied("ns1/web-abc"));
        exp.expect_deletions("ns1/web-abc", ["p1".to_string()]);
        let mut terminating = p.clone();
        terminating.deletion = Some(Timestamp::UNIX_EPOCH);
        exp.observe_pod(&terminating, OWNER, false, false);
        assert!(
            exp.satisfied("ns1/web-abc"),
            "terminating counts as deleted"
        );
    }
}
