//! The pod worker's decisions, without effects: from the pod and what the runtime shows, what
//! to start, stop and wait for, and when to look again. `pod::Worker` carries a plan out
//! (Docker, the network, the API) and runs the probes the plan says are due.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};

mod ephemeral;

pub use self::ephemeral::{EphemeralStart, as_container};
use crate::{
    backoff::Backoff,
    probe::{self, Probes, Verdict},
    runtime::{self, Observed, RunState},
};

/// How long a worker sleeps when nothing is due earlier (container events wake it sooner).
pub const RESYNC: Duration = Duration::from_secs(10);

/// The moment a plan is made: monotonic for deadlines, wall clock to compare with Docker's
/// exit times.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: Timestamp,
}

impl Now {
    pub fn current() -> Self {
        Self {
            instant: Instant::now(),
            wall: Timestamp::now(),
        }
    }
}

/// What the worker sees before it plans.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The pod's containers as the runtime lists them (sandbox included), oldest attempt
    /// first.
    pub containers: &'a [Observed],
    /// This worker connected the running sandbox to the node bridge. After a kubelet restart
    /// it does not know, so it connects it again (which is idempotent).
    pub plumbed: bool,
}

/// Why a container is not running when the kubelet knows better than Docker:
/// (reason, message), such as ("CrashLoopBackOff", "back-off 40s restarting ...").
pub type Waiting = (String, String);

#[derive(Debug, PartialEq)]
pub enum Plan<'p> {
    /// The pod is being deleted: stop every container (SIGTERM, SIGKILL after `grace`),
    /// remove them and the network, then delete the Pod object. `running` names the app
    /// containers being stopped (for the Killing events).
    Delete {
        grace: Duration,
        running: Vec<String>,
    },
    /// The sandbox died while containers are still wanted, and took the network with it:
    /// stop the app containers in it at once, remove it, then observe again and plan anew
    /// (everything comes back in a new sandbox).
    Repair { stop: Vec<String>, sandbox: String },
    /// Run the pod.
    Run(Run<'p>),
}

/// The steps of one pass over a pod that is not being deleted.
#[derive(Debug, PartialEq)]
pub struct Run<'p> {
    pub restart_policy: &'p str,
    pub host_network: bool,
    pub sandbox: Sandbox,
    /// Attempts to create and start, in order (at most one init container).
    pub start: Vec<Start<'p>>,
    /// Ephemeral containers to create and start (each once).
    pub ephemeral: Vec<EphemeralStart<'p>>,
    /// Per spec container name.
    pub waiting: HashMap<String, Waiting>,
    /// Crash-looping attempts to announce with a BackOff event (once per attempt).
    pub back_off: Vec<BackOff>,
    /// Every init container completed successfully.
    pub initialized: bool,
    /// An init container failed and will not be retried (restartPolicy Never).
    pub init_failed: bool,
    /// When to look again at the latest, before probes and failed starts are counted.
    pub wake: Instant,
}

/// What becomes of the pod's sandbox and network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Nothing will run again: stop the sandbox (if there is one) and free the network. The
    /// exited containers stay for their logs.
    Release { stop: Option<String> },
    /// Use the running sandbox `id`; `plumb`: connect it to the node bridge.
    Keep { id: String, plumb: bool },
    /// Create and start a new sandbox; `plumb`: connect it (not for host-network pods).
    Create { plumb: bool },
}

/// Create and start attempt `attempt` of `container`.
#[derive(Debug, PartialEq)]
pub struct Start<'p> {
    pub container: &'p Container,
    pub attempt: u32,
}

/// Attempt `attempt` of `container` exited and waits out its restart back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackOff {
    pub container: String,
    pub attempt: u32,
}

/// The probes of one running container that are due now.
#[derive(Debug, PartialEq)]
pub struct ProbeRun<'p> {
    pub container: &'p Container,
    /// The running attempt (its Docker id).
    pub id: String,
    pub kinds: Vec<probe::Kind>,
}

/// `namespace/name` of a pod, for logs.
pub fn key(pod: &Pod) -> String {
    let (ns, name) = meta(pod);
    format!("{ns}/{name}")
}

pub fn meta(pod: &Pod) -> (&str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0).unsigned_abs())
}

/// How long the pod's containers get between SIGTERM and SIGKILL.
pub fn grace_of(pod: &Pod) -> Duration {
    let s = pod.metadata.deletion_grace_period_seconds.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
    });
    secs(s.unwrap_or(30))
}

/// Whether an app container that exited with `code` is started again under `policy`.
fn restarts_after(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// Whether any app container is running or will be (re)started.
fn any_wanted(containers: &[Container], observed: &[Observed], policy: &str) -> bool {
    containers.iter().any(
        |c| match runtime::current(observed, &c.name).map(|o| &o.state) {
            Some(RunState::Exited { code, .. }) => restarts_after(policy, *code),
            _ => true,
        },
    )
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

/// Decides per container; collects starts, waits and back-offs into the run.
struct Planner<'a, 'p> {
    pod: &'p Pod,
    backoff: &'a Backoff,
    now: Now,
    run: Run<'p>,
}

impl<'p> Planner<'_, 'p> {
    /// What to do with container `c` whose newest attempt is `cur`; `restart(code)` says
    /// whether an exit with that code is restarted.
    fn decide(
        &mut self,
        c: &Container,
        cur: Option<&Observed>,
        restart: impl Fn(i32) -> bool,
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
        let delay = self.backoff.delay(o.attempt, ran);
        let since = self.now.wall.duration_since(finished).unsigned_abs();
        let Some(left) = delay.checked_sub(since).filter(|d| !d.is_zero()) else {
            return Decision::Start(o.attempt + 1);
        };
        let (ns, name) = meta(self.pod);
        let uid = self.pod.metadata.uid.as_deref().unwrap_or_default();
        self.run.back_off.push(BackOff {
            container: c.name.clone(),
            attempt: o.attempt,
        });
        self.run.waiting.insert(
            c.name.clone(),
            (
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={name}_{ns}({uid})",
                    delay.as_secs(),
                    c.name,
                ),
            ),
        );
        Decision::Wait(self.now.instant + left)
    }

    /// Init containers one after another, each to success; clears `initialized` while one
    /// has not succeeded. Returns whether one failed for good.
    fn init_containers(&mut self, init: &'p [Container], observed: &[Observed]) -> bool {
        let never = self.run.restart_policy == "Never";
        for c in init {
            let cur = runtime::current(observed, &c.name);
            match self.decide(c, cur, |code| code != 0 && !never) {
                // Succeeded: the next one.
                Decision::Done if cur.is_some_and(|o| exited_with(o, 0)) => continue,
                Decision::Done => {
                    self.run.initialized = false;
                    return true;
                }
                Decision::Start(attempt) => self.run.start.push(Start {
                    container: c,
                    attempt,
                }),
                Decision::Wait(at) => self.run.wake = self.run.wake.min(at),
                Decision::Keep => {}
            }
            self.run.initialized = false;
            return false;
        }
        false
    }

    /// App containers, once the pod is initialized. Returns how many are done for good.
    fn app_containers(&mut self, containers: &'p [Container], observed: &[Observed]) -> usize {
        let mut done = 0;
        for c in containers {
            if !self.run.initialized {
                if !self.run.init_failed {
                    self.run
                        .waiting
                        .insert(c.name.clone(), ("PodInitializing".into(), String::new()));
                }
                continue;
            }
            let policy = self.run.restart_policy;
            let cur = runtime::current(observed, &c.name);
            match self.decide(c, cur, |code| restarts_after(policy, code)) {
                Decision::Done => done += 1,
                Decision::Start(attempt) => self.run.start.push(Start {
                    container: c,
                    attempt,
                }),
                Decision::Wait(at) => self.run.wake = self.run.wake.min(at),
                Decision::Keep => {}
            }
        }
        done
    }
}

fn exited_with(o: &Observed, exit: i32) -> bool {
    matches!(o.state, RunState::Exited { code, .. } if code == exit)
}

/// What to do with `pod` now: see [`Plan`].
pub fn plan<'p>(pod: &'p Pod, seen: &Observation<'_>, now: Now, backoff: &Backoff) -> Plan<'p> {
    let observed = seen.containers;
    let running_apps = || {
        observed
            .iter()
            .filter(|o| !o.sandbox && o.state.is_running())
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Plan::Delete {
            grace: grace_of(pod),
            running: running_apps().map(|o| o.name.clone()).collect(),
        };
    }
    let spec = pod.spec.as_ref();
    let containers = spec.map_or(&[][..], |s| s.containers.as_slice());
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let restart_policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let sandbox = observed.iter().find(|o| o.sandbox);
    if let Some(s) = sandbox.filter(|s| !s.state.is_running())
        && any_wanted(containers, observed, restart_policy)
    {
        return Plan::Repair {
            stop: running_apps().map(|o| o.id.clone()).collect(),
            sandbox: s.id.clone(),
        };
    }
    let mut p = Planner {
        pod,
        backoff,
        now,
        run: Run {
            restart_policy,
            host_network,
            sandbox: Sandbox::Create { plumb: false },
            start: Vec::new(),
            ephemeral: Vec::new(),
            waiting: HashMap::new(),
            back_off: Vec::new(),
            initialized: true,
            init_failed: false,
            wake: now.instant + RESYNC,
        },
    };
    p.run.init_failed = p.init_containers(init, observed);
    let done = p.app_containers(containers, observed);
    let terminal = p.run.init_failed || (done == containers.len() && !containers.is_empty());
    if !terminal {
        let ephemeral = spec
            .and_then(|s| s.ephemeral_containers.as_deref())
            .unwrap_or_default();
        p.run.ephemeral = ephemeral::starts(ephemeral, observed, &mut p.run.waiting);
    }
    p.run.sandbox = match sandbox {
        _ if terminal => Sandbox::Release {
            stop: sandbox.map(|s| s.id.clone()),
        },
        Some(s) if s.state.is_running() => Sandbox::Keep {
            id: s.id.clone(),
            plumb: !seen.plumbed && !host_network,
        },
        _ => Sandbox::Create {
            plumb: !host_network,
        },
    };
    Plan::Run(p.run)
}

/// The probes due at `now` for the running app containers. Probe state follows the running
/// attempt: a new attempt starts over, a stopped one is forgotten.
pub fn probes_due<'p>(
    containers: &'p [Container],
    observed: &[Observed],
    probes: &mut HashMap<String, Probes>,
    now: Instant,
) -> Vec<ProbeRun<'p>> {
    probes.retain(|id, _| observed.iter().any(|o| &o.id == id && o.state.is_running()));
    containers
        .iter()
        .filter_map(|c| {
            let cur = runtime::current(observed, &c.name).filter(|o| o.state.is_running())?;
            let kinds = probes
                .entry(cur.id.clone())
                .or_insert_with(|| Probes::new(c, now))
                .due(now);
            (!kinds.is_empty()).then(|| ProbeRun {
                container: c,
                id: cur.id.clone(),
                kinds,
            })
        })
        .collect()
}

/// A failed startup or liveness probe restarts the container: the grace it gets (the
/// probe's own, else the pod's). A failed readiness probe only makes it unready.
pub fn kill_after(
    pod: &Pod,
    c: &Container,
    kind: probe::Kind,
    verdict: Verdict,
) -> Option<Duration> {
    if verdict != Verdict::Failed || kind == probe::Kind::Readiness {
        return None;
    }
    let p = probe::spec(c, kind)?;
    Some(
        p.termination_grace_period_seconds
            .map_or_else(|| grace_of(pod), secs),
    )
}

/// Exited attempts to remove: each container keeps its current and previous attempt (for
/// `logs --previous`).
pub fn old_attempts(observed: &[Observed]) -> Vec<&str> {
    let mut names: Vec<&str> = observed
        .iter()
        .filter(|o| !o.sandbox)
        .map(|o| o.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .flat_map(|name| {
            let attempts = runtime::attempts(observed, name);
            let old = attempts.len().saturating_sub(2);
            attempts.into_iter().take(old)
        })
        .filter(|o| !o.state.is_running())
        .map(|o| o.id.as_str())
        .collect()
}

#[cfg(test)]
mod tests;
