//! Deployment controller, as kube-controller-manager's: one ReplicaSet per pod template
//! (`<deployment>-<pod-template-hash>`), rolled by RollingUpdate (maxSurge / maxUnavailable /
//! minReadySeconds through the sets' availability) or Recreate, resized proportionally,
//! revisions in `deployment.kubernetes.io/revision` (a set whose template comes back becomes
//! the new one with a new revision: that is a rollback), old sets pruned to
//! `revisionHistoryLimit`, `paused` honoured, status with the Progressing / Available
//! conditions and progressDeadlineSeconds. `plan` decides, this module executes.
//!
//! Runs kube-runtime's controller engine (`applier`) over watch caches of Deployments and
//! ReplicaSets (see `replicaset::informer`); Recreate reads the old pods in the process' pod
//! cache.

pub mod hash;
pub mod plan;
pub mod status;

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use futures::{StreamExt as _, channel::mpsc};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_apimachinery::selector::LabelSelector;
use kube::{
    Api, Resource as _, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::{self, Action, ReconcileRequest},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::{
    SyncError as Error, api_err, drop_managed_fields,
    events::{Recorder, Type},
    podcache::PodCache,
    replicaset::{
        claim::{self, Claim, controller_of, key},
        informer::{self, Change},
    },
};

const RESYNC: Duration = Duration::from_mins(5);
/// Recreate waits for the old pods to be gone (in the pod cache); their deletion does not
/// trigger us.
const RECREATE_POLL: Duration = Duration::from_secs(1);

pub struct Ctx {
    client: kube::Client,
    sets: Store<ReplicaSet>,
    pods: PodCache,
    recorder: Recorder,
}

pub async fn run(client: kube::Client, pods: PodCache) -> crate::error::Result<()> {
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Deployment>>();
    let deployments = informer::spawn(
        Api::<Deployment>::all(client.clone()),
        drop_managed_fields,
        {
            let tx = tx.clone();
            move |c: Change<'_, Deployment>| {
                if let Change::Applied { obj, .. } = c {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(obj));
                }
            }
        },
    );
    let sets = informer::spawn(
        Api::<ReplicaSet>::all(client.clone()),
        drop_managed_fields,
        {
            let (tx, deployments) = (tx.clone(), deployments.clone());
            move |c: Change<'_, ReplicaSet>| match c {
                Change::Applied { obj, .. } | Change::Deleted(obj) => {
                    for r in owners_of(obj, &deployments) {
                        let _ = tx.unbounded_send(r);
                    }
                }
                Change::Relisted => {
                    for d in deployments.state() {
                        let _ = tx.unbounded_send(ObjectRef::from_obj(&*d));
                    }
                }
            }
        },
    );
    sets.wait_until_ready()
        .await
        .map_err(|_| crate::error::Error::CacheStopped("deployment"))?;
    // Recreate must not see old pods as gone because the cache has not listed them yet.
    pods.wait_until_ready().await;
    info!("deployment controller started");
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), "deployment-controller"),
        client,
        sets,
        pods,
    });
    let queue = rx.map(|r| Ok::<_, Infallible>(ReconcileRequest::from(r)));
    crate::drain(
        "deployment",
        controller::applier(
            |d, ctx| Box::pin(reconcile(d, ctx)),
            error_policy,
            ctx,
            deployments,
            queue,
            controller::Config::default(),
        ),
    )
    .await
}

fn owners_of(rs: &ReplicaSet, deployments: &Store<Deployment>) -> Vec<ObjectRef<Deployment>> {
    claim::owners_to_sync(
        rs.metadata.namespace.as_deref().unwrap_or_default(),
        claim::Child::of(&rs.metadata),
        deployments,
        |d| d.spec.as_ref().map(|s| &s.selector),
    )
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(d: Arc<Deployment>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    // Conflicts are expected (our cache behind our own writes): retry soon, quietly.
    let conflict = matches!(error, Error::Api { source: kube::Error::Api(s), .. } if s.code == 409);
    if conflict {
        debug!(deployment = %key(&d.metadata), error = %error, "conflict; retrying");
        return Action::requeue(Duration::from_millis(50));
    }
    warn!(deployment = %key(&d.metadata), error = %error, cause = ?std::error::Error::source(error), "deployment sync failed");
    Action::requeue(Duration::from_millis(500))
}

#[instrument(skip_all, fields(deployment = %key(&d.metadata)))]
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = d.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = d.uid().ok_or(Error::MissingMetadata("uid"))?;
    let selector = d.spec.as_ref().map(|s| &s.selector);
    let selector = claim::matcher(
        selector
            .unwrap_or(&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default()),
    )
    .map_err(Error::Selector)?;
    let deleting = d.metadata.deletion_timestamp.is_some();

    let mut sets = Vec::new();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    for rs in ctx.sets.state() {
        if rs.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        match claim::claim(&uid, deleting, &rs.metadata, selector.as_ref()) {
            Claim::Keep => sets.push((*rs).clone()),
            Claim::Adopt => adopt.push(rs),
            Claim::Release => release.push(rs),
            Claim::Ignore => {}
        }
    }
    let mut sync = Sync {
        api: Api::namespaced(ctx.client.clone(), &ns),
        ctx: &ctx,
        d: &d,
        stored: d.status.clone().unwrap_or_default(),
        status: d.status.clone().unwrap_or_default(),
        now: status::now(),
    };
    sets.extend(sync.change_owners(adopt, true).await);
    sync.change_owners(release, false).await;

    if deleting {
        return sync.status_only(&sets).await;
    }
    status::paused_condition(&d, &mut sync.status, sync.now);
    if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return sync.scale_only(sets).await;
    }
    let (new, old) = split(&d, &sets);
    let active: Vec<&ReplicaSet> = new
        .into_iter()
        .chain(old)
        .filter(|rs| plan::spec_replicas(rs) > 0)
        .collect();
    if plan::is_scaling_event(&d, &active) {
        return sync.scale_only(sets).await;
    }
    if plan::is_rolling(&d) {
        sync.rolling(sets).await
    } else {
        sync.recreate(sets).await
    }
}

/// (the new set, the old sets).
fn split<'a>(
    d: &Deployment,
    sets: &'a [ReplicaSet],
) -> (Option<&'a ReplicaSet>, Vec<&'a ReplicaSet>) {
    let refs: Vec<&ReplicaSet> = sets.iter().collect();
    let new = plan::find_new(d, &refs);
    let old = refs
        .into_iter()
        .filter(|rs| new.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .collect();
    (new, old)
}

/// One sync of one Deployment: its sets' API, and the status being built.
struct Sync<'a> {
    api: Api<ReplicaSet>,
    ctx: &'a Ctx,
    d: &'a Deployment,
    /// As stored; progress is measured against it and a write happens only if it differs.
    stored: DeploymentStatus,
    status: DeploymentStatus,
    now: Timestamp,
}

impl Sync<'_> {
    fn name(&self) -> String {
        self.d.name_any()
    }

    fn event(&self, type_: Type, reason: &str, message: &str) {
        self.ctx
            .recorder
            .publish(&self.d.object_ref(&()), type_, reason, message);
    }

    // --- strategies ---

    /// `rolloutRolling`: grow the new set within maxSurge, else shrink old ones within
    /// maxUnavailable, else (complete) prune history.
    async fn rolling(&mut self, mut sets: Vec<ReplicaSet>) -> Result<Action, Error> {
        let new_idx = self.sync_revision(&mut sets, true).await?;
        let new_name = new_idx.map(|i| sets[i].name_any());
        if let Some(i) = new_idx {
            let all: Vec<&ReplicaSet> = sets.iter().collect();
            if let Some(to) = plan::reconcile_new(self.d, &all, &sets[i]) {
                sets[i] = self.scale(&sets[i], to).await?;
                return self.rollout_status(&sets, new_name.as_deref()).await;
            }
        }
        let steps = {
            let (new, old) = split_by_name(&sets, new_name.as_deref());
            let active: Vec<&ReplicaSet> = old
                .iter()
                .copied()
                .filter(|rs| plan::spec_replicas(rs) > 0)
                .collect();
            let all: Vec<&ReplicaSet> = sets.iter().collect();
            plan::reconcile_old(self.d, &all, &active, new)
        };
        if !steps.is_empty() {
            self.apply_steps(&mut sets, steps).await?;
            return self.rollout_status(&sets, new_name.as_deref()).await;
        }
        if status::complete(self.d, &self.status) {
            self.cleanup(&sets, new_name.as_deref()).await?;
        }
        self.rollout_status(&sets, new_name.as_deref()).await
    }

    /// `rolloutRecreate`: all old sets to 0, wait for their pods to be gone, then the new set
    /// at full size.
    async fn recreate(&mut self, mut sets: Vec<ReplicaSet>) -> Result<Action, Error> {
        let mut new_idx = self.sync_revision(&mut sets, false).await?;
        let new_name = new_idx.map(|i| sets[i].name_any());
        let steps: Vec<(String, i32)> = split_by_name(&sets, new_name.as_deref())
            .1
            .into_iter()
            .filter(|rs| plan::spec_replicas(rs) > 0)
            .map(|rs| (rs.name_any(), 0))
            .collect();
        if !steps.is_empty() {
            self.apply_steps(&mut sets, steps).await?;
            return self.rollout_status(&sets, new_name.as_deref()).await;
        }
        if self.old_pods_running(&sets, new_name.as_deref()) {
            self.rollout_status(&sets, new_name.as_deref()).await?;
            return Ok(Action::requeue(RECREATE_POLL));
        }
        if new_idx.is_none() {
            new_idx = self.sync_revision(&mut sets, true).await?;
        }
        let new_name = new_idx.map(|i| sets[i].name_any());
        if let Some(i) = new_idx {
            let want = plan::desired(self.d);
            if plan::spec_replicas(&sets[i]) != want {
                sets[i] = self.scale(&sets[i], want).await?;
            }
        }
        if status::complete(self.d, &self.status) {
            self.cleanup(&sets, new_name.as_deref()).await?;
        }
        self.rollout_status(&sets, new_name.as_deref()).await
    }

    /// `sync`: a resize (or paused): proportional scaling, no new set, status only.
    async fn scale_only(&mut self, mut sets: Vec<ReplicaSet>) -> Result<Action, Error> {
        let new_idx = self.sync_revision(&mut sets, false).await?;
        let new_name = new_idx.map(|i| sets[i].name_any());
        let steps = {
            let (new, old) = split_by_name(&sets, new_name.as_deref());
            plan::proportional_scale(self.d, new, &old, self.stored.replicas.unwrap_or(0))
        };
        self.apply_steps(&mut sets, steps).await?;
        if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(&sets, new_name.as_deref()).await?;
        }
        let (new, _) = split_by_name(&sets, new_name.as_deref());
        let all: Vec<&ReplicaSet> = sets.iter().collect();
        self.status = status::calculate(self.d, &all, new, &self.status, self.now);
        self.write_status().await?;
        Ok(Action::requeue(RESYNC))
    }

    /// `syncStatusOnly` (a Deployment being deleted).
    async fn status_only(&mut self, sets: &[ReplicaSet]) -> Result<Action, Error> {
        let (new, _) = split(self.d, sets);
        let all: Vec<&ReplicaSet> = sets.iter().collect();
        self.status = status::calculate(self.d, &all, new, &self.status, self.now);
        self.write_status().await?;
        Ok(Action::await_change())
    }

    // --- pieces ---

    /// `getAllReplicaSetsAndSyncRevision`: finds (or with `create`, creates) the new set and
    /// brings its revision annotations up to date. Returns its index in `sets`.
    async fn sync_revision(
        &mut self,
        sets: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Option<usize>, Error> {
        let (new, old) = split(self.d, sets);
        let new_revision = plan::max_revision(&old) + 1;
        let new_uid = new.and_then(|n| n.metadata.uid.clone());
        if let Some(uid) = new_uid {
            let i = sets
                .iter()
                .position(|rs| rs.metadata.uid.as_ref() == Some(&uid))
                .unwrap_or_default();
            let mut copy = sets[i].clone();
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let annotations = plan::set_new_rs_annotations(self.d, &mut copy, new_revision, true);
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                sets[i] = self.write_rs(&copy).await?;
            }
            self.set_revision(&sets[i]).await?;
            if status::has_progress_deadline(self.d)
                && status::get(&self.status, status::PROGRESSING).is_none()
            {
                let msg = format!("Found new replica set \"{}\"", sets[i].name_any());
                status::set(
                    &mut self.status,
                    status::condition(
                        status::PROGRESSING,
                        "True",
                        status::FOUND_NEW_RS,
                        msg,
                        self.now,
                    ),
                );
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        let rs = self.new_rs(sets, new_revision)?;
        let created = match self.create_rs(&rs).await {
            Ok(created) => {
                let replicas = plan::spec_replicas(&created);
                if replicas > 0 {
                    self.event(
                        Type::Normal,
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled up replica set {} from 0 to {replicas}",
                            created.name_any()
                        ),
                    );
                }
                if status::has_progress_deadline(self.d) {
                    let msg = format!("Created new replica set \"{}\"", created.name_any());
                    status::set(
                        &mut self.status,
                        status::condition(
                            status::PROGRESSING,
                            "True",
                            status::NEW_RS_CREATED,
                            msg,
                            self.now,
                        ),
                    );
                }
                created
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (our cache is behind), or a hash collision.
                let existing = self
                    .api
                    .get(&rs.name_any())
                    .await
                    .map_err(api_err("reading replica set"))?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|o| Some(&o.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .zip(self.d.spec.as_ref().map(|s| &s.template))
                    .is_some_and(|(a, b)| hash::equal_ignore_hash(a, b));
                if !(ours && same) {
                    self.status.collision_count =
                        Some(self.status.collision_count.unwrap_or(0) + 1);
                    self.write_status().await?;
                    return Err(Error::HashCollision(rs.name_any()));
                }
                existing
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{}\": {e}",
                    rs.name_any()
                );
                self.event(Type::Warning, status::FAILED_RS_CREATE, &msg);
                if status::has_progress_deadline(self.d) {
                    status::set(
                        &mut self.status,
                        status::condition(
                            status::PROGRESSING,
                            "False",
                            status::FAILED_RS_CREATE,
                            msg,
                            self.now,
                        ),
                    );
                    self.write_status().await?;
                }
                return Err(api_err("creating replica set")(e));
            }
        };
        self.set_revision(&created).await?;
        sets.push(created);
        Ok(Some(sets.len() - 1))
    }

    /// The new set for the Deployment's template: hash label on selector, labels and
    /// template; controlled by the Deployment; sized by the strategy.
    fn new_rs(&self, sets: &[ReplicaSet], revision: i64) -> Result<ReplicaSet, Error> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let hash = hash::pod_template_hash(&spec.template, self.status.collision_count);
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(ObjectMeta::default);
        tm.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(hash::LABEL.into(), hash.clone());
        let labels = tm.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(hash::LABEL.into(), hash.clone());
        let owner = claim::controller_ref(self.d).ok_or(Error::MissingMetadata("name or uid"))?;
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.name())),
                namespace: self.d.metadata.namespace.clone(),
                labels,
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all: Vec<&ReplicaSet> = sets.iter().collect();
        all.push(&rs);
        let replicas = plan::new_rs_new_replicas(self.d, &all, &rs);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(replicas);
        }
        plan::set_new_rs_annotations(self.d, &mut rs, revision, false);
        Ok(rs)
    }

    /// The Deployment carries its new set's revision (`kubectl describe` and `rollout
    /// history` read it).
    async fn set_revision(&self, new: &ReplicaSet) -> Result<(), Error> {
        let Some(rev) = new
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(plan::REVISION))
        else {
            return Ok(());
        };
        let cur = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(plan::REVISION));
        if cur == Some(rev) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let body = json!({"metadata": {"annotations": {plan::REVISION: rev}}});
        api.patch(&self.name(), &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(api_err("writing the deployment's revision"))?;
        Ok(())
    }

    /// `scaleReplicaSetAndRecordEvent`: size and replica annotations, one event per resize.
    async fn scale(&self, rs: &ReplicaSet, to: i32) -> Result<ReplicaSet, Error> {
        let from = plan::spec_replicas(rs);
        let mut copy = rs.clone();
        let want = plan::desired(self.d);
        let annotations =
            plan::set_replicas_annotations(&mut copy, want, want + plan::max_surge(self.d));
        if from == to && !annotations {
            return Ok(rs.clone());
        }
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(to);
        let updated = self.write_rs(&copy).await?;
        if from != to {
            let op = if to > from { "up" } else { "down" };
            let msg = format!(
                "Scaled {op} replica set {} from {from} to {to}",
                rs.name_any()
            );
            info!(rs = %rs.name_any(), from, to, "scaled replica set");
            self.event(Type::Normal, "ScalingReplicaSet", &msg);
        }
        Ok(updated)
    }

    async fn apply_steps(
        &self,
        sets: &mut [ReplicaSet],
        steps: Vec<(String, i32)>,
    ) -> Result<(), Error> {
        for (name, to) in steps {
            if let Some(rs) = sets
                .iter_mut()
                .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
            {
                *rs = self.scale(rs, to).await?;
            }
        }
        Ok(())
    }

    /// Recreate's `oldPodsRunning`: old sets still report pods, or pods of theirs (also
    /// terminating ones) that have not finished are still there.
    fn old_pods_running(&self, sets: &[ReplicaSet], new: Option<&str>) -> bool {
        let (_, old) = split_by_name(sets, new);
        if old
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        if old_uids.is_empty() {
            return false;
        }
        // The Deployment's selector narrows the search; an invalid one does not.
        let selector = self
            .d
            .spec
            .as_ref()
            .and_then(|s| LabelSelector::from_api(&s.selector).ok());
        self.ctx
            .pods
            .in_namespace(self.d.metadata.namespace.as_deref().unwrap_or_default())
            .iter()
            .any(|p| {
                !p.phase.is_terminal()
                    && selector.as_ref().is_none_or(|s| s.matches(&p.labels))
                    && p.controller()
                        .is_some_and(|o| old_uids.contains(&o.uid.as_str()))
            })
    }

    /// `cleanupDeployment`: delete the oldest fully scaled-down sets beyond the history limit.
    async fn cleanup(&self, sets: &[ReplicaSet], new: Option<&str>) -> Result<(), Error> {
        let (_, old) = split_by_name(sets, new);
        for name in plan::history_to_delete(self.d, &old) {
            info!(rs = %name, "deleting old replica set (revision history limit)");
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err("deleting old replica set")(e)),
            }
        }
        Ok(())
    }

    /// `syncRolloutStatus`: counts, Available, Progressing; requeues for the deadline.
    async fn rollout_status(
        &mut self,
        sets: &[ReplicaSet],
        new: Option<&str>,
    ) -> Result<Action, Error> {
        let (new_rs, _) = split_by_name(sets, new);
        let all: Vec<&ReplicaSet> = sets.iter().collect();
        let s = status::calculate(self.d, &all, new_rs, &self.status, self.now);
        self.status = status::rollout(self.d, &self.stored, s, new, self.now);
        self.write_status().await?;
        Ok(status::deadline_check_in(self.d, &self.status, self.now)
            .map_or(Action::requeue(RESYNC), |t| Action::requeue(t.min(RESYNC))))
    }

    async fn change_owners(&self, sets: Vec<Arc<ReplicaSet>>, adopt: bool) -> Vec<ReplicaSet> {
        let mut done = Vec::new();
        let Some(ours) = claim::controller_ref(self.d) else {
            return done;
        };
        for rs in sets {
            let body = json!({"metadata": {
                "ownerReferences": claim::owner_refs_after(&rs.metadata, &ours, adopt),
                "resourceVersion": rs.metadata.resource_version,
            }});
            match self
                .api
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await
            {
                Ok(mut updated) => {
                    info!(rs = %rs.name_any(), adopt, "changed replica set owner");
                    updated.metadata.managed_fields = None;
                    done.push(updated);
                }
                Err(e) => {
                    debug!(rs = %rs.name_any(), error = %e, "cannot change replica set owner");
                }
            }
        }
        done
    }

    // === writes (one place each, to switch to server-side apply later) ===

    async fn create_rs(&self, rs: &ReplicaSet) -> Result<ReplicaSet, kube::Error> {
        self.api.create(&PostParams::default(), rs).await
    }

    /// Replaces a set, with its resourceVersion as precondition: a decision made on a stale
    /// cache fails with 409 and is retried on a fresh one.
    async fn write_rs(&self, rs: &ReplicaSet) -> Result<ReplicaSet, Error> {
        let mut updated = self
            .api
            .replace(&rs.name_any(), &PostParams::default(), rs)
            .await
            .map_err(api_err(format!("updating replica set {}", rs.name_any())))?;
        updated.metadata.managed_fields = None;
        Ok(updated)
    }

    async fn write_status(&mut self) -> Result<(), Error> {
        if serde_json::to_value(&self.status).ok() == serde_json::to_value(&self.stored).ok() {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let mut body = json!({ "status": self.status });
        if self.status.conditions.is_none() {
            body["status"]["conditions"] = serde_json::Value::Null;
        }
        api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(api_err("writing deployment status"))?;
        self.stored = self.status.clone();
        Ok(())
    }
}

fn split_by_name<'a>(
    sets: &'a [ReplicaSet],
    new: Option<&str>,
) -> (Option<&'a ReplicaSet>, Vec<&'a ReplicaSet>) {
    let is_new = |rs: &ReplicaSet| new.is_some() && rs.metadata.name.as_deref() == new;
    (
        sets.iter().find(|rs| is_new(rs)),
        sets.iter().filter(|rs| !is_new(rs)).collect(),
    )
}
