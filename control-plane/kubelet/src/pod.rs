//! One worker per pod: compares the pod's spec with what Docker runs, starts, restarts and
//! stops containers, runs the probes, and writes the pod's status. Everything it needs to
//! remember across kubelet restarts is in Docker's labels and the IPAM file.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use kube::{
    Api,
    api::{DeleteParams, Preconditions},
};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    events::{
        self,
        Kind::{Normal, Warning},
    },
    probe::{self, Probes, Verdict},
    runtime::{Observed, RunState, Runtime},
    status::{self, ContainerView, StatusInput},
};

/// The node bridge and its pod addresses.
pub struct Net {
    pub bridge: String,
    pub cidr: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ipam: Mutex<kproxy_podnet::Ipam>,
}

impl Net {
    /// The pod's address: the one it has, or a new one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr> {
        self.ipam
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allocate(uid)
            .context("allocating the pod IP")
    }

    /// Gives the sandbox (process `pid`) its eth0 with `ip` on the bridge.
    pub async fn plumb(&self, uid: &str, ip: Ipv4Addr, pid: i64) -> Result<()> {
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        kproxy_podnet::attach(
            &netns,
            &self.bridge,
            &kproxy_podnet::host_ifname(uid),
            ip,
            self.cidr.prefix_len(),
            self.gateway,
        )
        .await
        .context("connecting the pod to the node bridge")
    }

    /// Removes the pod's veth and frees its address. Idempotent.
    pub async fn release(&self, uid: &str) -> Result<()> {
        kproxy_podnet::detach(&kproxy_podnet::host_ifname(uid))
            .await
            .context("removing the pod's veth")?;
        self.ipam
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .release(uid)
            .context("releasing the pod IP")?;
        Ok(())
    }
}

/// What all pod workers share.
pub struct Shared {
    pub runtime: Runtime,
    pub client: kube::Client,
    pub net: Net,
    pub node_ip: String,
    pub backoff: Backoff,
    /// The kubelet's state directory (pods' emptyDir volumes live under it).
    pub state_dir: PathBuf,
}

/// Failed pulls of one image reference.
struct PullFailure {
    failures: u32,
    retry_at: Instant,
    message: String,
}

pub struct Worker {
    shared: Arc<Shared>,
    uid: String,
    /// Probe state per running container (Docker id): a new attempt starts over.
    probes: HashMap<String, Probes>,
    /// Exited attempts already announced with a BackOff event.
    backoff_reported: HashSet<(String, u32)>,
    pulls: HashMap<String, PullFailure>,
    /// The last status written (or read) for this pod.
    written: Option<PodStatus>,
    /// The pod IP once the network was set up by this worker.
    ip: Option<Ipv4Addr>,
}

/// The attempts of spec container `name`, oldest first (as the runtime lists them).
fn attempts<'a>(observed: &'a [Observed], name: &str) -> Vec<&'a Observed> {
    observed
        .iter()
        .filter(|o| !o.sandbox && o.name == name)
        .collect()
}

/// Whether an app container that exited with `code` is started again under `policy`.
fn restarts_after(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// What one container needs.
enum Decision {
    /// Create and start this attempt.
    Start(u32),
    /// Running: leave it.
    Keep,
    /// Exited and not to be restarted.
    Done,
    /// Exited; restarted after the back-off, at this time.
    Wait(Instant),
}

/// Until when a worker may sleep.
enum Next {
    After(Duration),
    Finished,
}

const RESYNC: Duration = Duration::from_secs(10);

fn meta(pod: &Pod) -> (&str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod.metadata.deletion_grace_period_seconds.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
    });
    Duration::from_secs(secs.unwrap_or(30).max(0) as u64)
}

impl Worker {
    pub fn new(shared: Arc<Shared>, uid: String) -> Self {
        Self {
            shared,
            uid,
            probes: HashMap::new(),
            backoff_reported: HashSet::new(),
            pulls: HashMap::new(),
            written: None,
            ip: None,
        }
    }

    /// Runs until the pod is gone from the node. `rx` carries the newest version of the pod
    /// (`None` once it was deleted from the API); `wake` is poked on container events.
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Pod>>, wake: Arc<Notify>) {
        loop {
            let pod = rx.borrow_and_update().clone();
            let next = match pod {
                None => match self.teardown(Duration::ZERO).await {
                    Ok(()) => Next::Finished,
                    Err(e) => {
                        warn!(uid = %self.uid, "tearing down a deleted pod: {e:#}");
                        Next::After(Duration::from_secs(2))
                    }
                },
                Some(pod) => match self.sync(&pod).await {
                    Ok(n) => n,
                    Err(e) => {
                        let (ns, name) = meta(&pod);
                        warn!(pod = %format!("{ns}/{name}"), "sync failed: {e:#}");
                        Next::After(Duration::from_secs(2))
                    }
                },
            };
            let wait = match next {
                Next::Finished => return,
                Next::After(d) => d,
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    // The manager dropped us: the pod left this node.
                    if let Err(e) = self.teardown(Duration::ZERO).await {
                        warn!(uid = %self.uid, "tearing down: {e:#}");
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

    async fn sync(&mut self, pod: &Pod) -> Result<Next> {
        if self.written.is_none() {
            self.written = pod.status.clone();
        }
        let (ns, name) = meta(pod);
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = grace_of(pod);
            info!(pod = %format!("{ns}/{name}"), ?grace, "stopping the pod's containers");
            for o in self.shared.runtime.pod_containers(&self.uid).await? {
                if !o.sandbox && o.state.is_running() {
                    Self::event(
                        &self.shared,
                        pod,
                        Some(&o.name),
                        Normal,
                        "Killing",
                        &format!("Stopping container {}", o.name),
                    );
                }
            }
            self.teardown(grace).await?;
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => info!(pod = %format!("{ns}/{name}"), "pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e).context("deleting the pod object"),
            }
            return Ok(Next::Finished);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let restart_policy = spec
            .restart_policy
            .as_deref()
            .unwrap_or("Always")
            .to_string();
        let now = Instant::now();
        let mut wake = now + RESYNC;

        let mut observed = self.shared.runtime.pod_containers(&self.uid).await?;
        let mut sandbox = observed.iter().find(|o| o.sandbox).cloned();

        // A dead sandbox took the network with it: its app containers go too and come back
        // in a new one.
        if sandbox.as_ref().is_some_and(|s| !s.state.is_running()) {
            let wanted = self.any_wanted(&spec.containers, &observed, &restart_policy);
            if wanted {
                for o in observed
                    .iter()
                    .filter(|o| !o.sandbox && o.state.is_running())
                {
                    self.shared.runtime.stop(&o.id, Duration::ZERO).await?;
                }
                if let Some(s) = sandbox.take() {
                    self.shared.runtime.remove(&s.id).await?;
                }
                self.ip = None;
                observed = self.shared.runtime.pod_containers(&self.uid).await?;
            }
        }

        // Decide per container: init containers one after another to success, then the
        // app containers.
        let newest = |name: &str| attempts(&observed, name).last().map(|o| (*o).clone());
        let mut waiting: HashMap<String, (String, String)> = HashMap::new();
        let mut to_start: Vec<(&Container, u32)> = Vec::new();
        let init_containers = spec.init_containers.clone().unwrap_or_default();
        let mut initialized = true;
        let mut init_failed = false;
        for c in &init_containers {
            let cur = newest(&c.name);
            let never = restart_policy == "Never";
            let d = self.decide(
                pod,
                c,
                cur.as_ref(),
                |code| code != 0 && !never,
                &mut waiting,
            );
            match d {
                Decision::Done => {
                    if cur.as_ref().is_some_and(
                        |o| matches!(o.state, RunState::Exited { code, .. } if code != 0),
                    ) {
                        init_failed = true;
                        initialized = false;
                        break;
                    }
                    continue;
                }
                Decision::Start(attempt) => to_start.push((c, attempt)),
                Decision::Wait(at) => wake = wake.min(at),
                Decision::Keep => {}
            }
            initialized = false;
            break;
        }
        let mut done = 0;
        for c in &spec.containers {
            if !initialized {
                if !init_failed {
                    waiting.insert(c.name.clone(), ("PodInitializing".into(), String::new()));
                }
                continue;
            }
            let cur = newest(&c.name);
            let policy = restart_policy.clone();
            let restart = move |code: i32| restarts_after(&policy, code);
            match self.decide(pod, c, cur.as_ref(), restart, &mut waiting) {
                Decision::Done => done += 1,
                Decision::Start(attempt) => to_start.push((c, attempt)),
                Decision::Wait(at) => wake = wake.min(at),
                Decision::Keep => {}
            }
        }
        let terminal =
            init_failed || (done == spec.containers.len() && !spec.containers.is_empty());

        let mut sandbox_ready = false;
        if terminal {
            // Nothing will run again: free the network, keep the exited containers for logs.
            if let Some(s) = &sandbox {
                self.shared.runtime.stop(&s.id, Duration::ZERO).await?;
            }
            if !host_network {
                self.shared.net.release(&self.uid).await?;
            }
            self.ip = None;
        } else {
            let new_sandbox = !sandbox.as_ref().is_some_and(|s| s.state.is_running());
            if new_sandbox {
                self.ip = None;
            }
            // The address is known before the network exists (IPAM is keyed by uid), so the
            // containers' environment (status.podIP) does not wait for the plumbing.
            let ip = if host_network {
                self.shared.node_ip.parse().unwrap_or(Ipv4Addr::LOCALHOST)
            } else {
                self.shared.net.allocate(&self.uid)?
            };
            let sandbox_id = match &sandbox {
                Some(s) if !new_sandbox => s.id.clone(),
                _ => {
                    info!(pod = %format!("{ns}/{name}"), "creating the pod sandbox");
                    self.shared
                        .runtime
                        .create_sandbox(pod, host_network)
                        .await?
                }
            };
            // The sandbox starting and getting its network, and the app containers being
            // created, are independent: do them at the same time.
            let plumb = {
                let shared = self.shared.clone();
                let (uid, sid) = (self.uid.clone(), sandbox_id.clone());
                let needed = self.ip.is_none() && !host_network;
                async move {
                    if new_sandbox {
                        shared
                            .runtime
                            .start(&sid)
                            .await
                            .context("starting the pod sandbox")?;
                    }
                    if needed {
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
            let create = async {
                let mut created = Vec::new();
                for (c, attempt) in &to_start {
                    created.push((*c, self.create(pod, c, *attempt, &sandbox_id, ip).await));
                }
                created
            };
            let (plumbed, created) = tokio::join!(plumb, create);
            plumbed?;
            self.ip = Some(ip);
            sandbox_ready = true;
            let mut started = Vec::new();
            for (c, r) in created {
                let r = match r {
                    Ok(id) => self.shared.runtime.start(&id).await.map(|()| id).map_err(|e| {
                        warn!(pod = %format!("{ns}/{name}"), container = %c.name, "start failed: {e:#}");
                        (
                            "RunContainerError".to_string(),
                            format!("{e:#}"),
                            Some(Instant::now() + self.shared.backoff.base),
                        )
                    }),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(id) => {
                        Self::event(
                            &self.shared,
                            pod,
                            Some(&c.name),
                            Normal,
                            "Started",
                            &format!("Started container {}", c.name),
                        );
                        started.push(id);
                    }
                    Err((reason, message, retry)) => {
                        if reason != "ImagePullBackOff" {
                            Self::event(
                                &self.shared,
                                pod,
                                Some(&c.name),
                                Warning,
                                "Failed",
                                &format!("Error: {reason}: {message}"),
                            );
                        }
                        if let Some(at) = retry {
                            wake = wake.min(at);
                        }
                        waiting.insert(c.name.clone(), (reason, message));
                    }
                }
            }
            if !started.is_empty() {
                for id in started {
                    if let Some(o) = self.shared.runtime.inspect(&id).await? {
                        observed.retain(|x| x.id != o.id);
                        observed.push(o);
                    }
                }
                observed.sort_by_key(|o| (o.sandbox, o.name.clone(), o.attempt));
                self.remove_old_attempts(&observed).await;
            }
        }

        // Probes for running containers.
        let pod_ip = self.ip.map(|ip| ip.to_string());
        self.probes
            .retain(|id, _| observed.iter().any(|o| &o.id == id && o.state.is_running()));
        let mut kills = Vec::new();
        for c in &spec.containers {
            let Some(cur) = attempts(&observed, &c.name)
                .last()
                .copied()
                .filter(|o| o.state.is_running())
            else {
                continue;
            };
            let probes = self
                .probes
                .entry(cur.id.clone())
                .or_insert_with(|| Probes::new(c, now));
            let due = probes.due(Instant::now());
            for kind in due {
                let Some(p) = probe::spec(c, kind) else {
                    continue;
                };
                let result = probe::check(
                    p,
                    c,
                    pod_ip.as_deref().unwrap_or("127.0.0.1"),
                    &self.shared.runtime,
                    &cur.id,
                )
                .await;
                if let Err(why) = &result {
                    debug!(pod = %format!("{ns}/{name}"), container = %c.name, ?kind, "probe failed: {why}");
                }
                let verdict = probes.state_mut(kind).map_or(Verdict::Unchanged, |s| {
                    s.record(p, result.is_ok(), Instant::now())
                });
                if verdict == Verdict::Failed {
                    let why = result.as_ref().err().cloned().unwrap_or_default();
                    Self::event(
                        &self.shared,
                        pod,
                        Some(&c.name),
                        Warning,
                        "Unhealthy",
                        &format!("{kind:?} probe failed: {why}"),
                    );
                }
                if verdict == Verdict::Failed && kind != probe::Kind::Readiness {
                    let why = result.err().unwrap_or_default();
                    Self::event(
                        &self.shared,
                        pod,
                        Some(&c.name),
                        Normal,
                        "Killing",
                        &format!(
                            "Container {} failed {} probe, will be restarted",
                            c.name,
                            format!("{kind:?}").to_lowercase()
                        ),
                    );
                    info!(pod = %format!("{ns}/{name}"), container = %c.name, ?kind, "probe failed, restarting the container: {why}");
                    let grace = p
                        .termination_grace_period_seconds
                        .map_or_else(|| grace_of(pod), |s| Duration::from_secs(s.max(0) as u64));
                    kills.push((cur.id.clone(), grace));
                }
            }
            if let Some(at) = probes.next_due() {
                wake = wake.min(at);
            }
        }
        if !kills.is_empty() {
            for (id, grace) in kills {
                self.shared.runtime.stop(&id, grace).await?;
                self.probes.remove(&id);
            }
            // Restart decisions come with the next pass.
            wake = Instant::now();
        }

        // Status.
        let status_of = |c: &Container| {
            let attempts = attempts(&observed, &c.name);
            let cur = attempts.last().copied();
            // Only running app containers have probes; without any, started and ready.
            let probes = cur.and_then(|o| self.probes.get(&o.id));
            status::container_status(&ContainerView {
                spec: c,
                current: cur,
                previous: attempts.len().checked_sub(2).map(|i| attempts[i]),
                waiting: waiting.get(&c.name).cloned(),
                started: probes.is_none_or(super::probe::Probes::started),
                ready: probes.is_none_or(super::probe::Probes::ready),
            })
        };
        let init_statuses = init_containers
            .iter()
            .map(|c| {
                let mut st = status_of(c);
                // An init container is "ready" once it completed successfully.
                st.ready = attempts(&observed, &c.name)
                    .last()
                    .is_some_and(|o| matches!(o.state, RunState::Exited { code: 0, .. }));
                st
            })
            .collect();
        let statuses = spec.containers.iter().map(status_of).collect();
        let pod_ip = pod_ip.or_else(|| {
            // A finished pod keeps reporting the address it had.
            self.written.as_ref().and_then(|s| s.pod_ip.clone())
        });
        let new = status::pod_status(StatusInput {
            old: self.written.as_ref(),
            containers: statuses,
            init_containers: init_statuses,
            initialized,
            init_failed,
            restart_policy: &restart_policy,
            sandbox_ready,
            pod_ip,
            host_ip: self.shared.node_ip.clone(),
            now: Timestamp::now(),
        });
        self.write_status(pod, new).await?;
        let wait = wake.saturating_duration_since(Instant::now());
        Ok(Next::After(wait.max(Duration::from_millis(50))))
    }

    /// What to do with container `c` whose newest attempt is `cur`; `restart(code)` says
    /// whether an exit with that code is restarted. A wait is recorded in `waiting`.
    fn decide(
        &mut self,
        pod: &Pod,
        c: &Container,
        cur: Option<&Observed>,
        restart: impl Fn(i32) -> bool,
        waiting: &mut HashMap<String, (String, String)>,
    ) -> Decision {
        let Some(o) = cur else {
            return Decision::Start(0);
        };
        let (code, started, finished) = match &o.state {
            RunState::Created => return Decision::Start(o.attempt),
            RunState::Running { .. } => return Decision::Keep,
            RunState::Exited {
                code,
                started,
                finished,
                ..
            } => (*code, *started, *finished),
        };
        if !restart(code) {
            return Decision::Done;
        }
        let ran = started
            .map(|s| finished.duration_since(s).unsigned_abs())
            .unwrap_or_default();
        let delay = self.shared.backoff.delay(o.attempt, ran);
        let since = Timestamp::now().duration_since(finished).unsigned_abs();
        if since >= delay {
            return Decision::Start(o.attempt + 1);
        }
        let (ns, name) = meta(pod);
        if self.backoff_reported.insert((c.name.clone(), o.attempt)) {
            Self::event(
                &self.shared,
                pod,
                Some(&c.name),
                Warning,
                "BackOff",
                &format!(
                    "Back-off restarting failed container {} in pod {name}_{ns}({})",
                    c.name, self.uid
                ),
            );
        }
        waiting.insert(
            c.name.clone(),
            (
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={name}_{ns}({})",
                    delay.as_secs(),
                    c.name,
                    self.uid
                ),
            ),
        );
        Decision::Wait(Instant::now() + delay.checked_sub(since).unwrap())
    }

    /// Whether any container is running or will be (re)started.
    fn any_wanted(&self, containers: &[Container], observed: &[Observed], policy: &str) -> bool {
        containers.iter().any(
            |c| match attempts(observed, &c.name).last().map(|o| &o.state) {
                Some(RunState::Exited { code, .. }) => restarts_after(policy, *code),
                _ => true,
            },
        )
    }

    /// Creates one attempt (image, environment, container); on failure returns the waiting
    /// reason, message and retry time.
    async fn create(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox_id: &str,
        ip: Ipv4Addr,
    ) -> std::result::Result<String, (String, String, Option<Instant>)> {
        let image = c.image.clone().unwrap_or_default();
        self.ensure_image(pod, &c.name, &image, c.image_pull_policy.as_deref())
            .await?;
        let env = crate::env::build(pod, c, Some(ip.to_string()), &self.shared.node_ip)
            .map_err(|e| ("CreateContainerConfigError".to_string(), e, None))?;
        let pod_dir = crate::volumes::pod_dir(&self.shared.state_dir, &self.uid);
        let binds = crate::volumes::binds(pod, c, &pod_dir)
            .and_then(|b| crate::volumes::prepare(&b))
            .map_err(|e| ("CreateContainerConfigError".to_string(), e, None))?;
        let (ns, name) = meta(pod);
        info!(pod = %format!("{ns}/{name}"), container = %c.name, attempt, "starting container");
        let created = self
            .shared
            .runtime
            .create_container(pod, c, attempt, sandbox_id, env, binds)
            .await;
        if created.is_ok() {
            Self::event(
                &self.shared,
                pod,
                Some(&c.name),
                Normal,
                "Created",
                &format!("Created container: {}", c.name),
            );
        }
        created.map_err(|e| {
            warn!(pod = %format!("{ns}/{name}"), container = %c.name, "create failed: {e:#}");
            (
                "CreateContainerError".to_string(),
                format!("{e:#}"),
                Some(Instant::now() + self.shared.backoff.base),
            )
        })
    }

    /// Makes the image present: locally built images (no registry digest) are used as they
    /// are even with `Always`, since no registry has them; otherwise pulls as the policy says,
    /// backing off between failed pulls.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        container: &str,
        image: &str,
        policy: Option<&str>,
    ) -> std::result::Result<(), (String, String, Option<Instant>)> {
        let err = |r: &str, m: String| (r.to_string(), m, None);
        let local = self
            .shared
            .runtime
            .image_origin(image)
            .await
            .map_err(|e| err("ErrImageInspect", format!("{e:#}")))?;
        let pull = match (policy.unwrap_or("IfNotPresent"), local) {
            (_, Some(crate::runtime::Origin::Local)) => false,
            ("Never", None) => {
                return Err(err(
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                ));
            }
            ("Never", Some(_)) => false,
            ("Always", _) => true,
            (_, present) => present.is_none(),
        };
        if !pull {
            Self::event(
                &self.shared,
                pod,
                Some(container),
                Normal,
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(());
        }
        let now = Instant::now();
        if let Some(f) = self.pulls.get(image)
            && f.retry_at > now
        {
            return Err((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image \"{image}\": {}", f.message),
                Some(f.retry_at),
            ));
        }
        info!(%image, "pulling image");
        Self::event(
            &self.shared,
            pod,
            Some(container),
            Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        match self.shared.runtime.pull(image).await {
            Ok(()) => {
                self.pulls.remove(image);
                Self::event(
                    &self.shared,
                    pod,
                    Some(container),
                    Normal,
                    "Pulled",
                    &format!("Successfully pulled image \"{image}\""),
                );
                Ok(())
            }
            Err(message) => {
                warn!(%image, "pull failed: {message}");
                let failures = self.pulls.get(image).map_or(0, |f| f.failures) + 1;
                let retry_at = now + self.shared.backoff.delay(failures - 1, Duration::ZERO);
                self.pulls.insert(
                    image.to_string(),
                    PullFailure {
                        failures,
                        retry_at,
                        message: message.clone(),
                    },
                );
                Err((
                    "ErrImagePull".into(),
                    format!("failed to pull image \"{image}\": {message}"),
                    Some(retry_at),
                ))
            }
        }
    }

    fn event(
        shared: &Shared,
        pod: &Pod,
        container: Option<&str>,
        kind: events::Kind,
        reason: &str,
        message: &str,
    ) {
        events::record(
            &shared.client,
            pod,
            &shared.runtime.node,
            container,
            kind,
            reason,
            message,
        );
    }

    /// Keeps the current and the previous attempt of each container (for `logs --previous`).
    async fn remove_old_attempts(&self, observed: &[Observed]) {
        let mut by_name: HashMap<&str, Vec<&Observed>> = HashMap::new();
        for o in observed.iter().filter(|o| !o.sandbox) {
            by_name.entry(&o.name).or_default().push(o);
        }
        for attempts in by_name.values() {
            if attempts.len() > 2 {
                for o in &attempts[..attempts.len() - 2] {
                    if !o.state.is_running()
                        && let Err(e) = self.shared.runtime.remove(&o.id).await
                    {
                        warn!("removing an old container: {e:#}");
                    }
                }
            }
        }
    }

    async fn write_status(&mut self, pod: &Pod, new: PodStatus) -> Result<()> {
        if self.written.as_ref() == Some(&new) {
            return Ok(());
        }
        let (ns, name) = meta(pod);
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), ns);
        let mut latest = pod.clone();
        for _ in 0..5 {
            latest.status = Some(new.clone());
            match api.replace_status(name, &Default::default(), &latest).await {
                Ok(_) => {
                    debug!(pod = %format!("{ns}/{name}"), phase = ?new.phase, "status written");
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

/// Stops (SIGTERM, then SIGKILL after `grace`) and removes all containers of pod `uid`, then
/// removes its veth and frees its address.
pub async fn teardown(shared: &Shared, uid: &str, grace: Duration) -> Result<()> {
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
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}
