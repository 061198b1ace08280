//! Job controller (batch/v1, NonIndexed completion mode), as kube-controller-manager's: runs
//! pods from the template until `completions` of them succeeded, at most `parallelism` at a
//! time; replaces failed pods after an exponential back-off (10 s doubling, 10 min at most)
//! until more than `backoffLimit` failed; fails the Job past `activeDeadlineSeconds`; stops
//! and starts on `suspend`; deletes a finished Job `ttlSecondsAfterFinished` later (the
//! TTL-after-finished controller's part), its pods with it. What to do is decided by
//! [`plan::plan`] from the Job and its pods alone.
//!
//! Pods are counted from the shared pod cache by phase; under `restartPolicy: OnFailure`
//! (containers restarted in place by the kubelet) the restarts of running pods count against
//! `backoffLimit` too, as Kubernetes' pastBackoffLimitOnFailure. There are no tracking
//! finalizers, so a finished pod deleted before a sync counted it is not counted.

pub mod plan;

use std::{convert::Infallible, sync::Arc, time::Duration};

use futures::{StreamExt as _, channel::mpsc};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobStatus},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource as _, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy},
    runtime::{
        controller::{self, Action, ReconcileRequest},
        reflector::ObjectRef,
    },
};
use serde_json::{Value, json};
use tracing::{debug, info, instrument, warn};

use crate::{
    SyncError as Error, api_err, drop_managed_fields,
    events::{Recorder, Type},
    expectations::Expectations,
    podcache::{self, CachedPod, PodCache},
    replicaset::{
        claim::{controller_ref, key},
        informer::{self, Change},
    },
};

/// The owner this controller's pods name (expectations are keyed by it).
const OWNER: (&str, &str) = ("batch/v1", "Job");

/// Most API calls of one batch in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Periodic resync (expired expectations resume a Job whose pod events were lost).
const RESYNC: Duration = Duration::from_mins(5);

pub struct Ctx {
    client: kube::Client,
    pods: PodCache,
    expectations: Arc<Expectations>,
    recorder: Recorder,
}

pub async fn run(client: kube::Client, pods: PodCache) -> crate::error::Result<()> {
    let expectations = Arc::new(Expectations::default());
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Job>>();
    let jobs = informer::spawn(Api::<Job>::all(client.clone()), drop_managed_fields, {
        let (tx, exp) = (tx.clone(), Arc::clone(&expectations));
        move |c: Change<'_, Job>| match c {
            Change::Applied { obj } => {
                let _ = tx.unbounded_send(ObjectRef::from_obj(obj));
            }
            Change::Deleted(obj) => exp.forget(&key(&obj.metadata)),
            Change::Relisted => {}
        }
    });
    pods.subscribe({
        let (tx, exp, jobs) = (tx.clone(), Arc::clone(&expectations), jobs.clone());
        move |c: podcache::Change<'_>| match c {
            podcache::Change::Applied { pod, is_new, .. } => {
                if let Some(r) = owner(pod) {
                    exp.observe_pod(pod, OWNER, is_new, false);
                    let _ = tx.unbounded_send(r);
                }
            }
            podcache::Change::Deleted(pod) => {
                if let Some(r) = owner(pod) {
                    exp.observe_pod(pod, OWNER, false, true);
                    let _ = tx.unbounded_send(r);
                }
            }
            podcache::Change::Relisted => {
                for job in jobs.state() {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(&*job));
                }
            }
        }
    });
    // A sync on a partial pod cache would create pods that already exist.
    pods.wait_until_ready().await;
    info!("job controller started");
    let ctx = Arc::new(Ctx {
        recorder: Recorder::throttled(client.clone(), "job-controller"),
        client,
        pods,
        expectations,
    });
    let queue = rx.map(|r| Ok::<_, Infallible>(ReconcileRequest::from(r)));
    crate::drain(
        "job",
        controller::applier(
            |job, ctx| Box::pin(reconcile(job, ctx)),
            error_policy,
            ctx,
            jobs,
            queue,
            controller::Config::default(),
        ),
    )
    .await
}

/// The Job controlling a pod, if a Job does.
fn owner(pod: &CachedPod) -> Option<ObjectRef<Job>> {
    pod.controller()
        .filter(|r| r.kind == "Job" && r.api_version == "batch/v1")
        .map(|r| ObjectRef::new(&r.name).within(&pod.namespace))
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's applier hands error_policy owned Arcs"
)]
fn error_policy(job: Arc<Job>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(job = %key(&job.metadata), error = %error, cause = ?std::error::Error::source(error), "job sync failed");
    Action::requeue(Duration::from_millis(500))
}

#[instrument(skip_all, fields(job = %key(&job.metadata)))]
async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Being deleted: the API server's garbage collection takes the pods.
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let job_key = key(&job.metadata);
    let ns = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = job.uid().ok_or(Error::MissingMetadata("uid"))?;
    // Checked before reading the cache: satisfied means the cache has what we did.
    let may_manage = ctx.expectations.satisfied(&job_key);
    let pods: Vec<Arc<CachedPod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| p.controller().is_some_and(|r| r.uid == uid))
        .collect();
    let refs: Vec<&CachedPod> = pods.iter().map(|p| &**p).collect();
    let plan = plan::plan(&job, &refs, may_manage, Timestamp::now());

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if plan.delete_job {
        info!("ttlSecondsAfterFinished passed: deleting the job");
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        return match jobs.delete(&job.name_any(), &dp).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                Ok(Action::await_change())
            }
            Err(e) => Err(api_err("deleting the finished job")(e)),
        };
    }
    if !plan.delete.is_empty() {
        delete_pods(&job, &job_key, &ns, &plan.delete, &ctx).await?;
    }
    if plan.create > 0 {
        create_pods(&job, &job_key, &ns, plan.create, &ctx).await?;
    }
    if job.status.as_ref() != Some(&plan.status) {
        write_status(&jobs, &job.name_any(), &plan.status).await?;
    }
    for (type_, reason, message) in &plan.events {
        ctx.event(&job, *type_, reason, message);
    }
    Ok(Action::requeue(plan.requeue.unwrap_or(RESYNC).min(RESYNC)))
}

async fn create_pods(job: &Job, job_key: &str, ns: &str, n: usize, ctx: &Ctx) -> Result<(), Error> {
    let pod = pod_from_template(job).ok_or(Error::MissingMetadata("name or uid"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    ctx.expectations.expect_creations(job_key, n);
    let pp = PostParams::default();
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| api.create(&pp, &pod))
        .buffer_unordered(MAX_IN_FLIGHT)
        .collect()
        .await;
    let mut failure = None;
    for r in results {
        match r {
            Ok(p) => ctx.event(
                job,
                Type::Normal,
                "SuccessfulCreate",
                &format!("Created pod: {}", p.name_any()),
            ),
            Err(e) => {
                // Never observed: do not wait for it.
                ctx.expectations.creation_observed(job_key);
                ctx.event(
                    job,
                    Type::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                );
                failure.get_or_insert(e);
            }
        }
    }
    debug!(wanted = n, "created pods");
    failure.map_or(Ok(()), |e| Err(api_err("creating pods")(e)))
}

async fn delete_pods(
    job: &Job,
    job_key: &str,
    ns: &str,
    names: &[Arc<str>],
    ctx: &Ctx,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    ctx.expectations
        .expect_deletions(job_key, names.iter().map(ToString::to_string));
    let results: Vec<_> = futures::stream::iter(names.iter().cloned())
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
                job,
                Type::Normal,
                "SuccessfulDelete",
                &format!("Deleted pod: {name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.expectations.deletion_observed(job_key, &name);
            }
            Err(e) => {
                ctx.expectations.deletion_observed(job_key, &name);
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), |e| Err(api_err("deleting pods")(e)))
}

/// The template's labels, annotations, finalizers and spec, named `<job>-<random>` by the
/// API server, controlled by the Job.
fn pod_from_template(job: &Job) -> Option<Pod> {
    let template = job.spec.as_ref()?.template.clone();
    let tm = template.metadata.unwrap_or_default();
    let owner = controller_ref(job)?;
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", job.metadata.name.as_deref()?)),
            namespace: job.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// A merge patch of the whole status; fields now unset are nulled (a merge patch would keep
/// them otherwise).
async fn write_status(jobs: &Api<Job>, name: &str, status: &JobStatus) -> Result<(), Error> {
    let mut body = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(m) = body.as_object_mut() {
        for k in [
            "active",
            "succeeded",
            "failed",
            "startTime",
            "completionTime",
            "conditions",
        ] {
            m.entry(k).or_insert(Value::Null);
        }
    }
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": body })),
    )
    .await
    .map_err(api_err("writing status"))?;
    Ok(())
}

impl Ctx {
    fn event(&self, job: &Job, type_: Type, reason: &str, message: &str) {
        self.recorder
            .publish(&job.object_ref(&()), type_, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_come_from_the_template_controlled_by_the_job() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "ns1", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"job-name": "pi"}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        let p = pod_from_template(&job).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        assert_eq!(p.metadata.labels.unwrap()["job-name"], "pi");
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.uid.as_str()),
            ("batch/v1", "Job", "u1")
        );
        assert_eq!(r.controller, Some(true));
        assert_eq!(p.spec.unwrap().restart_policy.as_deref(), Some("Never"));
    }
}
