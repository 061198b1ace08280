//! Pod status from what the runtime and the probes observed: container states, the phase and
//! the conditions, computed the way the Kubernetes kubelet does (pure functions).

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::{
    probe::Probes,
    runtime::{Observed, RunState, attempts},
};

/// The kubelet's view of one spec container.
#[derive(Debug, Clone)]
pub struct ContainerView<'a> {
    pub spec: &'a Container,
    /// The newest attempt, if any was created.
    pub current: Option<&'a Observed>,
    /// The attempt before it.
    pub previous: Option<&'a Observed>,
    /// Why the container is not running, when the kubelet knows better than Docker:
    /// ContainerCreating, ErrImagePull, ImagePullBackOff, CrashLoopBackOff, ...
    pub waiting: Option<(String, String)>,
    pub started: bool,
    pub ready: bool,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(o: &Observed) -> Option<ContainerStateTerminated> {
    match &o.state {
        RunState::Exited {
            code,
            reason,
            started,
            finished,
        } => Some(ContainerStateTerminated {
            exit_code: *code,
            reason: Some((*reason).to_string()),
            started_at: started.map(time),
            finished_at: Some(time(*finished)),
            container_id: Some(format!("docker://{}", o.id)),
            ..Default::default()
        }),
        _ => None,
    }
}

pub fn container_status(v: &ContainerView) -> ContainerStatus {
    let waiting = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    };
    let state = match (&v.waiting, v.current) {
        (Some((reason, message)), _) => {
            waiting(reason, (!message.is_empty()).then(|| message.clone()))
        }
        (None, Some(o)) => match &o.state {
            RunState::Running { started, .. } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(*started)),
                }),
                ..Default::default()
            },
            RunState::Exited { .. } => ContainerState {
                terminated: terminated(o),
                ..Default::default()
            },
            RunState::Created => waiting("ContainerCreating", None),
        },
        (None, None) => waiting("ContainerCreating", None),
    };
    // While the current attempt waits to be replaced, it is the last termination.
    let last = if v.waiting.is_some() {
        v.current.and_then(terminated)
    } else {
        None
    }
    .or_else(|| v.previous.and_then(terminated));
    let running = state.running.is_some();
    ContainerStatus {
        name: v.spec.name.clone(),
        image: v.spec.image.clone().unwrap_or_default(),
        image_id: v
            .current
            .map(|o| format!("docker://{}", o.image_id))
            .unwrap_or_default(),
        container_id: v.current.map(|o| format!("docker://{}", o.id)),
        restart_count: v
            .current
            .map_or(0, |o| i32::try_from(o.attempt).unwrap_or(i32::MAX)),
        ready: running && v.ready,
        started: Some(running && v.started),
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: last,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The statuses of the pod's init and app containers: their attempts as the runtime shows
/// them, the kubelet's waiting reasons (per container name) and the running attempts'
/// probes (per Docker id).
pub fn containers(
    init: &[Container],
    app: &[Container],
    observed: &[Observed],
    waiting: &HashMap<String, (String, String)>,
    probes: &HashMap<String, Probes>,
) -> (Vec<ContainerStatus>, Vec<ContainerStatus>) {
    let status_of = |c: &Container| {
        let attempts = attempts(observed, &c.name);
        let cur = attempts.last().copied();
        // Only running app containers have probes; without any, started and ready.
        let probes = cur.and_then(|o| probes.get(&o.id));
        container_status(&ContainerView {
            spec: c,
            current: cur,
            previous: attempts.len().checked_sub(2).map(|i| attempts[i]),
            waiting: waiting.get(&c.name).cloned(),
            started: probes.is_none_or(Probes::started),
            ready: probes.is_none_or(Probes::ready),
        })
    };
    let init_statuses = init
        .iter()
        .map(|c| {
            let mut st = status_of(c);
            // An init container is "ready" once it completed successfully.
            st.ready = attempts(observed, &c.name)
                .last()
                .is_some_and(|o| matches!(o.state, RunState::Exited { code: 0, .. }));
            st
        })
        .collect();
    (init_statuses, app.iter().map(status_of).collect())
}

/// The statuses of the pod's ephemeral containers (as Containers, see
/// `plan::as_container`): like app containers', but never ready (no probes, not part of the
/// pod's work) and never restarted.
pub fn ephemeral(
    ephemeral: &[Container],
    observed: &[Observed],
    waiting: &HashMap<String, (String, String)>,
) -> Vec<ContainerStatus> {
    ephemeral
        .iter()
        .map(|c| {
            let current = attempts(observed, &c.name).last().copied();
            let mut st = container_status(&ContainerView {
                spec: c,
                current,
                previous: None,
                waiting: waiting.get(&c.name).cloned(),
                started: true,
                ready: false,
            });
            st.restart_count = 0;
            st
        })
        .collect()
}

/// Kubernetes' pod phase rules (kubelet getPhase) for pods without init containers.
pub fn phase(statuses: &[ContainerStatus], restart_policy: &str) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = s.state.as_ref();
        if st.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            // Waiting to restart after a termination.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// Sets condition `kind` to `value`, keeping its transition time when the value is unchanged.
fn set_condition(
    out: &mut Vec<PodCondition>,
    old: &[PodCondition],
    kind: &str,
    value: bool,
    reason: Option<&str>,
    now: Timestamp,
) {
    let status = if value { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    out.push(PodCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        last_transition_time: Some(since),
        reason: reason.map(String::from),
        ..Default::default()
    });
}

/// The whole pod status. `old` is the status currently stored (its conditions' transition
/// times and start time carry over).
pub struct StatusInput<'a> {
    pub old: Option<&'a PodStatus>,
    pub containers: Vec<ContainerStatus>,
    pub init_containers: Vec<ContainerStatus>,
    pub ephemeral_containers: Vec<ContainerStatus>,
    /// Every init container completed successfully.
    pub initialized: bool,
    /// An init container failed and will not be retried (restartPolicy Never).
    pub init_failed: bool,
    pub restart_policy: &'a str,
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub now: Timestamp,
}

pub fn pod_status(i: StatusInput) -> PodStatus {
    let old_conditions = i.old.and_then(|s| s.conditions.clone()).unwrap_or_default();
    let phase = if i.init_failed {
        "Failed"
    } else if !i.initialized {
        "Pending"
    } else {
        phase(&i.containers, i.restart_policy)
    };
    let all_ready = !i.containers.is_empty() && i.containers.iter().all(|c| c.ready);
    let not_ready: Vec<&str> = i
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let reason = if terminal {
        Some("PodCompleted")
    } else if all_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let mut conditions = Vec::new();
    set_condition(
        &mut conditions,
        &old_conditions,
        "PodReadyToStartContainers",
        i.sandbox_ready,
        None,
        i.now,
    );
    set_condition(
        &mut conditions,
        &old_conditions,
        "Initialized",
        i.initialized,
        (!i.initialized).then_some("ContainersNotInitialized"),
        i.now,
    );
    if !i.initialized {
        let incomplete: Vec<&str> = i
            .init_containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "Initialized") {
            c.message = Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            ));
        }
    }
    set_condition(
        &mut conditions,
        &old_conditions,
        "Ready",
        all_ready && !terminal,
        reason,
        i.now,
    );
    set_condition(
        &mut conditions,
        &old_conditions,
        "ContainersReady",
        all_ready && !terminal,
        reason,
        i.now,
    );
    set_condition(
        &mut conditions,
        &old_conditions,
        "PodScheduled",
        true,
        None,
        i.now,
    );
    // Both conditions name the unready containers, as Kubernetes' do.
    for c in conditions.iter_mut().filter(|c| {
        (c.type_ == "Ready" || c.type_ == "ContainersReady")
            && c.status == "False"
            && !terminal
            && !not_ready.is_empty()
    }) {
        c.message = Some(format!(
            "containers with unready status: [{}]",
            not_ready.join(" ")
        ));
    }
    let start_time = i
        .old
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(i.now));
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(i.host_ip.clone()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: i.host_ip }]),
        pod_ip: i.pod_ip.clone(),
        pod_ips: i
            .pod_ip
            .map(|ip| vec![k8s_openapi::api::core::v1::PodIP { ip }]),
        start_time: Some(start_time),
        container_statuses: Some(i.containers),
        init_container_statuses: (!i.init_containers.is_empty()).then_some(i.init_containers),
        ephemeral_container_statuses: (!i.ephemeral_containers.is_empty())
            .then_some(i.ephemeral_containers),
        qos_class: i.old.and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> RunState {
        RunState::Exited {
            code,
            reason: if code == 0 { "Completed" } else { "Error" },
            started: Some(Timestamp::UNIX_EPOCH),
            finished: Timestamp::UNIX_EPOCH,
        }
    }

    fn running() -> RunState {
        RunState::Running {
            started: Timestamp::UNIX_EPOCH,
            pid: 1,
        }
    }

    fn spec(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("img".into()),
            ..Default::default()
        }
    }

    #[test]
    fn running_container_reports_ready_only_when_probed_ready() {
        let s = spec("web");
        let cur = Observed::container("web", 2, running());
        let prev = Observed::container("web", 1, exited(137));
        let mut v = ContainerView {
            spec: &s,
            current: Some(&cur),
            previous: Some(&prev),
            waiting: None,
            started: true,
            ready: false,
        };
        let st = container_status(&v);
        assert!(!st.ready);
        assert_eq!(st.restart_count, 2);
        assert!(st.state.as_ref().unwrap().running.is_some());
        let last = st.last_state.unwrap().terminated.unwrap();
        assert_eq!(last.exit_code, 137);
        assert_eq!(last.container_id.as_deref(), Some("docker://web-1"));
        v.ready = true;
        assert!(container_status(&v).ready);
    }

    #[test]
    fn crash_loop_waits_with_the_crashed_attempt_as_last_state() {
        let s = spec("app");
        let cur = Observed::container("app", 3, exited(1));
        let v = ContainerView {
            spec: &s,
            current: Some(&cur),
            previous: None,
            waiting: Some(("CrashLoopBackOff".into(), "back-off 40s".into())),
            started: false,
            ready: true,
        };
        let st = container_status(&v);
        let w = st.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(w.message.as_deref(), Some("back-off 40s"));
        assert_eq!(st.last_state.unwrap().terminated.unwrap().exit_code, 1);
        assert!(!st.ready, "a waiting container is never ready");
        assert_eq!(phase(&[container_status(&v)], "Always"), "Running");
    }

    #[test]
    fn phases_follow_restart_policy() {
        let s = spec("a");
        let ok = Observed::container("a", 0, exited(0));
        let bad = Observed::container("a", 0, exited(2));
        let run = Observed::container("a", 0, running());
        let st = |o: Option<&Observed>| {
            container_status(&ContainerView {
                spec: &s,
                current: o,
                previous: None,
                waiting: None,
                started: true,
                ready: true,
            })
        };
        assert_eq!(phase(&[st(None)], "Always"), "Pending");
        assert_eq!(phase(&[st(Some(&run))], "Never"), "Running");
        assert_eq!(phase(&[st(Some(&ok))], "Never"), "Succeeded");
        assert_eq!(phase(&[st(Some(&ok))], "OnFailure"), "Succeeded");
        assert_eq!(phase(&[st(Some(&ok))], "Always"), "Running");
        assert_eq!(phase(&[st(Some(&bad))], "Never"), "Failed");
        assert_eq!(phase(&[st(Some(&bad))], "OnFailure"), "Running");
        assert_eq!(phase(&[st(Some(&ok)), st(Some(&bad))], "Never"), "Failed");
        assert_eq!(phase(&[st(Some(&run)), st(None)], "Always"), "Pending");
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let s = spec("a");
        let run = Observed::container("a", 0, running());
        let cs = || {
            vec![container_status(&ContainerView {
                spec: &s,
                current: Some(&run),
                previous: None,
                waiting: None,
                started: true,
                ready: true,
            })]
        };
        let t0 = Timestamp::from_second(1000).unwrap();
        let t1 = Timestamp::from_second(2000).unwrap();
        let first = pod_status(StatusInput {
            old: None,
            containers: cs(),
            init_containers: Vec::new(),
            ephemeral_containers: Vec::new(),
            initialized: true,
            init_failed: false,
            restart_policy: "Always",
            sandbox_ready: true,
            pod_ip: Some("10.244.0.5".into()),
            host_ip: "192.0.2.1".into(),
            now: t0,
        });
        let second = pod_status(StatusInput {
            old: Some(&first),
            containers: cs(),
            init_containers: Vec::new(),
            ephemeral_containers: Vec::new(),
            initialized: true,
            init_failed: false,
            restart_policy: "Always",
            sandbox_ready: true,
            pod_ip: Some("10.244.0.5".into()),
            host_ip: "192.0.2.1".into(),
            now: t1,
        });
        assert_eq!(first, second, "nothing changed, so nothing to write");
        let ready = second
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, Some(Time(t0)));
        assert_eq!(second.phase.as_deref(), Some("Running"));
        assert_eq!(second.pod_ip.as_deref(), Some("10.244.0.5"));
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let init = spec("setup");
        let app = spec("app");
        let running_init = Observed::container("setup", 0, running());
        let init_st = container_status(&ContainerView {
            spec: &init,
            current: Some(&running_init),
            previous: None,
            waiting: None,
            started: true,
            ready: false,
        });
        let app_st = container_status(&ContainerView {
            spec: &app,
            current: None,
            previous: None,
            waiting: Some(("PodInitializing".into(), String::new())),
            started: false,
            ready: false,
        });
        let input = |initialized, init_failed| StatusInput {
            old: None,
            containers: vec![app_st.clone()],
            init_containers: vec![init_st.clone()],
            ephemeral_containers: Vec::new(),
            initialized,
            init_failed,
            restart_policy: "Never",
            sandbox_ready: true,
            pod_ip: None,
            host_ip: "192.0.2.1".into(),
            now: Timestamp::UNIX_EPOCH,
        };
        let st = pod_status(input(false, false));
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let cond = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(cond.status, "False");
        assert_eq!(cond.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(
            cond.message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
        assert_eq!(st.init_container_statuses.unwrap().len(), 1);
        let failed = pod_status(input(false, true));
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn unready_containers_are_named() {
        let s = spec("web");
        let run = Observed::container("web", 0, running());
        let st = pod_status(StatusInput {
            old: None,
            containers: vec![container_status(&ContainerView {
                spec: &s,
                current: Some(&run),
                previous: None,
                waiting: None,
                started: true,
                ready: false,
            })],
            init_containers: Vec::new(),
            ephemeral_containers: Vec::new(),
            initialized: true,
            init_failed: false,
            restart_policy: "Always",
            sandbox_ready: true,
            pod_ip: None,
            host_ip: "192.0.2.1".into(),
            now: Timestamp::UNIX_EPOCH,
        });
        let conditions = st.conditions.unwrap();
        let find = |kind: &str| conditions.iter().find(|c| c.type_ == kind).unwrap();
        let ready = find("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [web]")
        );
        assert_eq!(find("ContainersReady").message, ready.message);
    }

    #[test]
    fn ephemeral_statuses_are_never_ready_nor_restarted() {
        let (d, w) = (spec("debugger"), spec("waiting"));
        let observed = [Observed::container("debugger", 0, exited(0))];
        let waiting = HashMap::from([(
            "waiting".to_string(),
            (
                "CreateContainerConfigError".to_string(),
                "unable to find target container main".to_string(),
            ),
        )]);
        let st = ephemeral(&[d, w], &observed, &waiting);
        let term = st[0].state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (0, Some("Completed"))
        );
        assert!(!st[0].ready);
        assert_eq!(st[0].restart_count, 0);
        let wait = st[1].state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(wait.reason.as_deref(), Some("CreateContainerConfigError"));
        let running = ephemeral(
            &[spec("debugger")],
            &[Observed::container("debugger", 0, running())],
            &HashMap::new(),
        );
        assert!(running[0].state.as_ref().unwrap().running.is_some());
        assert!(!running[0].ready && running[0].started == Some(true));
    }
}
