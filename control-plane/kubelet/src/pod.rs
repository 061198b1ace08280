//! One worker per pod: observes the pod's containers, asks [`plan`](crate::plan) what to do,
//! carries the plan out (containers through [`PodRuntime`], the network, the API), runs the
//! probes that are due and writes the pod's status. Everything it needs to remember across
//! kubelet restarts is in Docker's labels and the IPAM file.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use kube::{
    Api,
    api::{DeleteParams, PostParams, Preconditions},
};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, instrument, warn};

use crate::{
    create::{self, Failure, Pulls},
    events::Recorder,
    plan::{self, Now, Observation, Plan, Run, Sandbox, Waiting},
    probe::{self, Probes, Verdict},
    runtime::{Namespaces, Observed, PodRuntime, RunState, Runtime},
    shared::Shared,
    status::{self, StatusInput},
};

pub struct Worker<R = Runtime> {
    shared: Arc<Shared<R>>,
    uid: String,
    /// `namespace/name`, the worker's span names the pod with it.
    key: String,
    /// Probe state per running container (Docker id): a new attempt starts over.
    probes: HashMap<String, Probes>,
    /// Exited attempts already announced with a BackOff event.
    backoff_reported: HashSet<(String, u32)>,
    pulls: Pulls,
    /// The last status written (or read) for this pod.
    written: Option<PodStatus>,
    /// The pod IP once the network was set up by this worker.
    ip: Option<Ipv4Addr>,
    /// When the pod's configMap and secret volumes were last compared with the API.
    configs_synced: Option<Instant>,
}

/// Until when a worker may sleep.
enum Next {
    After(Duration),
    Finished,
}

/// What one pass learns while it carries out a plan.
struct Pass {
    /// The pod's containers, updated with the attempts this pass started.
    observed: Vec<Observed>,
    waiting: HashMap<String, Waiting>,
    wake: Instant,
}

/// After a failed pass, the worker tries again this soon.
const RETRY: Duration = Duration::from_secs(2);

fn recorder<'a, R: PodRuntime>(shared: &'a Shared<R>, pod: &'a Pod) -> Recorder<'a> {
    Recorder {
        client: &shared.client,
        pod,
        node: shared.runtime.node(),
    }
}

impl<R: PodRuntime> Worker<R> {
    pub fn new(shared: Arc<Shared<R>>, uid: String, key: String) -> Self {
        Self {
            shared,
            uid,
            key,
            probes: HashMap::new(),
            backoff_reported: HashSet::new(),
            pulls: Pulls::default(),
            written: None,
            ip: None,
            configs_synced: None,
        }
    }

    /// Runs until the pod is gone from the node. `rx` carries the newest version of the pod
    /// (`None` once it was deleted from the API); `wake` is poked on container events.
    #[instrument(name = "pod", skip_all, fields(pod = %self.key, uid = %self.uid))]
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Pod>>, wake: Arc<Notify>) {
        loop {
            let pod = rx.borrow_and_update().clone();
            let next = match pod {
                None => match self.teardown(Duration::ZERO).await {
                    Ok(()) => Next::Finished,
                    Err(e) => {
                        warn!(error = %format_args!("{e:#}"), "tearing down a deleted pod");
                        Next::After(RETRY)
                    }
                },
                Some(pod) => self.sync(&pod).await.unwrap_or_else(|e| {
                    warn!(error = %format_args!("{e:#}"), "sync failed");
                    Next::After(RETRY)
                }),
            };
            let wait = match next {
                Next::Finished => return,
                Next::After(d) => d,
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    // The manager dropped us: the pod left this node.
                    if let Err(e) = self.teardown(Duration::ZERO).await {
                        warn!(error = %format_args!("{e:#}"), "tearing down");
                    }
                    return;
                },
                () = wake.notified() => {},
                () = tokio::time::sleep(wait) => {},
            }
        }
    }

    /// Stops and removes every container of the pod, then its network. Idempotent.
    pub async fn teardown(&mut self, grace: Duration) -> Result<()> {
        teardown(&self.shared, &self.uid, grace).await?;
        self.ip = None;
        self.probes.clear();
        Ok(())
    }

    /// One pass: observe, plan, carry the plan out.
    async fn sync(&mut self, pod: &Pod) -> Result<Next> {
        if self.written.is_none() {
            self.written.clone_from(&pod.status);
        }
        let mut repaired = false;
        loop {
            let observed = self.shared.runtime.pod_containers(&self.uid).await?;
            let now = Now::current();
            let seen = Observation {
                containers: &observed,
                plumbed: self.ip.is_some(),
            };
            match plan::plan(pod, &seen, now, &self.shared.backoff) {
                Plan::Delete { grace, running } => return self.delete(pod, grace, &running).await,
                Plan::Repair { stop, sandbox } => {
                    anyhow::ensure!(!repaired, "the dead pod sandbox {sandbox} came back");
                    info!(%sandbox, "the pod sandbox died: starting the pod over in a new one");
                    for id in &stop {
                        self.shared.runtime.stop(id, Duration::ZERO).await?;
                    }
                    self.shared.runtime.remove(&sandbox).await?;
                    self.ip = None;
                    repaired = true;
                }
                Plan::Run(run) => return self.apply(pod, run, observed).await,
            }
        }
    }

    /// Stops the containers of a pod being deleted (Killing events), removes them and the
    /// network, then deletes the Pod object.
    async fn delete(&mut self, pod: &Pod, grace: Duration, running: &[String]) -> Result<Next> {
        info!(?grace, "stopping the pod's containers");
        let shared = self.shared.clone();
        let events = recorder(&shared, pod);
        for name in running {
            events.normal(Some(name), "Killing", &format!("Stopping container {name}"));
        }
        self.teardown(grace).await?;
        let (ns, name) = plan::meta(pod);
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => info!("pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e).context("deleting the pod object"),
        }
        Ok(Next::Finished)
    }

    /// Carries out `run`, probes, and writes the status.
    async fn apply(
        &mut self,
        pod: &Pod,
        mut run: Run<'_>,
        observed: Vec<Observed>,
    ) -> Result<Next> {
        let shared = self.shared.clone();
        let events = recorder(&shared, pod);
        let (ns, name) = plan::meta(pod);
        for b in &run.back_off {
            if self
                .backoff_reported
                .insert((b.container.clone(), b.attempt))
            {
                events.warning(
                    Some(&b.container),
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {name}_{ns}({})",
                        b.container, self.uid
                    ),
                );
            }
        }
        let mut pass = Pass {
            observed,
            waiting: std::mem::take(&mut run.waiting),
            wake: run.wake,
        };
        let sandbox_ready = match run.sandbox {
            Sandbox::Release { stop } => {
                // Nothing will run again: free the network, keep the exited containers.
                if let Some(id) = stop {
                    shared.runtime.stop(&id, Duration::ZERO).await?;
                }
                if !run.host_network {
                    shared.net.release(&self.uid).await?;
                }
                self.ip = None;
                false
            }
            Sandbox::Keep { ref id, plumb } => {
                let id = Some(id.clone());
                self.bring_up(&events, id, plumb, &run, &mut pass).await?;
                true
            }
            Sandbox::Create { plumb } => {
                self.ip = None;
                self.bring_up(&events, None, plumb, &run, &mut pass).await?;
                true
            }
        };
        let spec = pod.spec.as_ref();
        let app = spec.map_or(&[][..], |s| s.containers.as_slice());
        let init = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        self.probe(&events, app, &mut pass).await?;
        if sandbox_ready {
            self.sync_configs(pod, &mut pass).await;
        }

        let (init_statuses, statuses) =
            status::containers(init, app, &pass.observed, &pass.waiting, &self.probes);
        let ephemeral: Vec<Container> = spec
            .and_then(|s| s.ephemeral_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .map(plan::as_container)
            .collect();
        let ephemeral_statuses = status::ephemeral(&ephemeral, &pass.observed, &pass.waiting);
        let pod_ip = self.ip.map(|ip| ip.to_string()).or_else(|| {
            // A finished pod keeps reporting the address it had.
            self.written.as_ref().and_then(|s| s.pod_ip.clone())
        });
        let new = status::pod_status(StatusInput {
            old: self.written.as_ref(),
            containers: statuses,
            init_containers: init_statuses,
            ephemeral_containers: ephemeral_statuses,
            initialized: run.initialized,
            init_failed: run.init_failed,
            restart_policy: run.restart_policy,
            sandbox_ready,
            pod_ip,
            host_ip: self.shared.node_ip.clone(),
            now: Timestamp::now(),
        });
        self.write_status(pod, new).await?;
        let wait = pass.wake.saturating_duration_since(Instant::now());
        Ok(Next::After(wait.max(Duration::from_millis(50))))
    }

    /// Makes the sandbox run (`sandbox`: the running one; `None`: create one) with its
    /// network (`plumb`: connect it), and creates and starts the run's attempts meanwhile.
    async fn bring_up(
        &mut self,
        events: &Recorder<'_>,
        sandbox: Option<String>,
        plumb: bool,
        run: &Run<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let host_network = run.host_network;
        let shared = self.shared.clone();
        // The address is known before the network exists (IPAM is keyed by uid), so the
        // containers' environment (status.podIP) does not wait for the plumbing.
        let ip = if host_network {
            shared.node_ip.parse().unwrap_or(Ipv4Addr::LOCALHOST)
        } else {
            shared.net.allocate(&self.uid)?
        };
        let new_sandbox = sandbox.is_none();
        let sandbox_id = if let Some(id) = sandbox {
            id
        } else {
            info!("creating the pod sandbox");
            shared
                .runtime
                .create_sandbox(events.pod, host_network)
                .await?
        };
        // The sandbox starting and getting its network, and the app containers being
        // created, are independent: do them at the same time.
        let plumbing = {
            let (shared, uid, sid) = (shared.clone(), self.uid.clone(), sandbox_id.clone());
            async move {
                if new_sandbox {
                    shared
                        .runtime
                        .start(&sid)
                        .await
                        .context("starting the pod sandbox")?;
                }
                if plumb {
                    let s = shared
                        .runtime
                        .inspect(&sid)
                        .await?
                        .context("the sandbox vanished")?;
                    let RunState::Running { pid, .. } = s.state else {
                        anyhow::bail!("the sandbox is not running");
                    };
                    shared.net.plumb(&uid, ip, pid).await?;
                }
                anyhow::Ok(())
            }
        };
        let pulls = &mut self.pulls;
        let creating = async {
            let mut created = Vec::new();
            let sandbox = |pid_target| Namespaces {
                sandbox: &sandbox_id,
                pid_target,
            };
            for s in &run.start {
                let c = s.container;
                let r = create::create(&shared, pulls, events, c, s.attempt, sandbox(None), ip);
                created.push((c.name.clone(), r.await));
            }
            for e in &run.ephemeral {
                let c = plan::as_container(e.container);
                let ns = sandbox(e.pid_target.as_deref());
                let r = create::create(&shared, pulls, events, &c, e.attempt, ns, ip).await;
                created.push((c.name, r));
            }
            created
        };
        let (plumbed, created) = tokio::join!(plumbing, creating);
        plumbed?;
        self.ip = Some(ip);
        let mut started = Vec::new();
        for (name, r) in created {
            let r = match r {
                Ok(id) => shared.runtime.start(&id).await.map(|()| id).map_err(|e| {
                    warn!(container = %name, error = %format_args!("{e:#}"), "start failed");
                    Failure::new(
                        "RunContainerError",
                        format!("{e:#}"),
                        Some(Instant::now() + shared.backoff.base),
                    )
                }),
                Err(e) => Err(e),
            };
            match r {
                Ok(id) => {
                    events.normal(Some(&name), "Started", &format!("Started container {name}"));
                    started.push(id);
                }
                Err(f) => {
                    if f.reason != "ImagePullBackOff" {
                        events.warning(
                            Some(&name),
                            "Failed",
                            &format!("Error: {}: {}", f.reason, f.message),
                        );
                    }
                    if let Some(at) = f.retry {
                        pass.wake = pass.wake.min(at);
                    }
                    pass.waiting.insert(name, (f.reason, f.message));
                }
            }
        }
        if !started.is_empty() {
            for id in started {
                if let Some(o) = shared.runtime.inspect(&id).await? {
                    pass.observed.retain(|x| x.id != o.id);
                    pass.observed.push(o);
                }
            }
            pass.observed
                .sort_by_key(|o| (o.sandbox, o.name.clone(), o.attempt));
            for id in plan::old_attempts(&pass.observed) {
                if let Err(e) = shared.runtime.remove(id).await {
                    warn!(error = %format_args!("{e:#}"), "removing an old container");
                }
            }
        }
        Ok(())
    }

    /// Runs the probes that are due; restarts containers whose startup or liveness probe
    /// failed.
    async fn probe(
        &mut self,
        events: &Recorder<'_>,
        app: &[Container],
        pass: &mut Pass,
    ) -> Result<()> {
        let pod_ip = self.ip.map(|ip| ip.to_string());
        let due = plan::probes_due(app, &pass.observed, &mut self.probes, Instant::now());
        let mut kills = Vec::new();
        for run in due {
            let c = run.container;
            for kind in run.kinds {
                let Some(p) = probe::spec(c, kind) else {
                    continue;
                };
                let host = pod_ip.as_deref().unwrap_or("127.0.0.1");
                let result = probe::check(p, c, host, &self.shared.runtime, &run.id).await;
                if let Err(why) = &result {
                    debug!(container = %c.name, ?kind, reason = %why, "probe failed");
                }
                let verdict = self
                    .probes
                    .get_mut(&run.id)
                    .and_then(|s| s.state_mut(kind))
                    .map_or(Verdict::Unchanged, |s| {
                        s.record(p, result.is_ok(), Instant::now())
                    });
                let why = result.err().unwrap_or_default();
                if verdict == Verdict::Failed {
                    events.warning(
                        Some(&c.name),
                        "Unhealthy",
                        &format!("{kind:?} probe failed: {why}"),
                    );
                }
                if let Some(grace) = plan::kill_after(events.pod, c, kind, verdict) {
                    let kind_name = format!("{kind:?}").to_lowercase();
                    events.normal(
                        Some(&c.name),
                        "Killing",
                        &format!(
                            "Container {} failed {kind_name} probe, will be restarted",
                            c.name
                        ),
                    );
                    info!(container = %c.name, ?kind, reason = %why, "probe failed, restarting the container");
                    kills.push((run.id.clone(), grace));
                }
            }
        }
        if let Some(at) = self.probes.values().filter_map(Probes::next_due).min() {
            pass.wake = pass.wake.min(at);
        }
        if !kills.is_empty() {
            for (id, grace) in kills {
                self.shared.runtime.stop(&id, grace).await?;
                self.probes.remove(&id);
            }
            // Restart decisions come with the next pass.
            pass.wake = Instant::now();
        }
        Ok(())
    }

    /// Brings the pod's configMap and secret volumes up to date once per sync period, as the
    /// kubelet's periodic pod sync does; a failure keeps the files and is retried then.
    async fn sync_configs(&mut self, pod: &Pod, pass: &mut Pass) {
        if crate::configs::volume_references(pod).is_empty() {
            return;
        }
        let now = Instant::now();
        let due = self
            .configs_synced
            .is_none_or(|t| now.duration_since(t) >= plan::RESYNC);
        if due {
            let dir = crate::volumes::pod_dir(&self.shared.state_dir, &self.uid);
            match crate::configs::refresh(&self.shared.client, pod, &dir).await {
                Ok(changed) if !changed.is_empty() => {
                    info!(volumes = ?changed, "configMap/secret volumes updated");
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "re-reading the pod's configMaps and secrets"),
            }
            self.configs_synced = Some(now);
        }
        if let Some(t) = self.configs_synced {
            pass.wake = pass.wake.min(t + plan::RESYNC);
        }
    }

    async fn write_status(&mut self, pod: &Pod, new: PodStatus) -> Result<()> {
        if self.written.as_ref() == Some(&new) {
            return Ok(());
        }
        let (ns, name) = plan::meta(pod);
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), ns);
        let mut latest = pod.clone();
        for _ in 0..5 {
            latest.status = Some(new.clone());
            match api
                .replace_status(name, &PostParams::default(), &latest)
                .await
            {
                Ok(_) => {
                    debug!(phase = ?new.phase, "status written");
                    self.written = Some(new);
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    latest = api.get(name).await.context("re-reading the pod")?;
                    if latest.metadata.uid.as_deref() != Some(&self.uid) {
                        return Ok(());
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(e).context("writing the pod status"),
            }
        }
        anyhow::bail!("writing the pod status: still conflicting after 5 tries")
    }
}

pub async fn teardown<R: PodRuntime>(shared: &Shared<R>, uid: &str, grace: Duration) -> Result<()> {
    let observed = shared.runtime.pod_containers(uid).await?;
    let stops = observed
        .iter()
        .filter(|o| !o.sandbox && o.state.is_running())
        .map(|o| shared.runtime.stop(&o.id, grace));
    for r in futures::future::join_all(stops).await {
        r?;
    }
    for o in observed.iter().filter(|o| o.sandbox) {
        shared.runtime.stop(&o.id, Duration::ZERO).await?;
    }
    for o in &observed {
        shared.runtime.remove(&o.id).await?;
    }
    shared.net.release(uid).await?;
    let dir = crate::volumes::pod_dir(&shared.state_dir, uid);
    // Unmounted first: removing recursively across a subPath mount would delete the volume's
    // (for hostPath, the host's) files.
    if let Err(e) = crate::subpath::clean(&dir) {
        error!(error = %format_args!("{e:#}"), "unmounting the pod's subPaths: its directory stays");
        return Err(e.context("unmounting the pod's subPaths"));
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}
