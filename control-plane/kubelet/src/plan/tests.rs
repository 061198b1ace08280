//! The worker's decisions without Docker: pods and container states in, plans out.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::status;

const BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(10),
    max: Duration::from_mins(5),
};

fn at() -> Now {
    Now {
        instant: Instant::now(),
        wall: Timestamp::from_second(1_000_000).unwrap(),
    }
}

/// Pod `default/web` (uid u1) with `spec`.
fn pod(spec: &Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": spec,
    }))
    .unwrap()
}

/// A pod with app containers `names` and restart policy `policy`.
fn app_pod(policy: &str, names: &[&str]) -> Pod {
    let containers: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "image": "img"}))
        .collect();
    pod(&json!({"restartPolicy": policy, "containers": containers}))
}

fn sandbox(state: RunState) -> Observed {
    Observed {
        id: "sandbox".into(),
        sandbox: true,
        name: String::new(),
        attempt: 0,
        image: "kproxy/pause:1".into(),
        image_id: "sha256:p".into(),
        state,
    }
}

fn running() -> RunState {
    RunState::Running {
        started: Timestamp::from_second(1).unwrap(),
        pid: 42,
    }
}

/// Exited with `code` `ago` before [`at`], after running for one second.
fn exited(code: i32, ago: Duration, now: Now) -> RunState {
    let finished = now.wall - ago;
    RunState::Exited {
        code,
        reason: if code == 0 { "Completed" } else { "Error" },
        started: Some(finished - Duration::from_secs(1)),
        finished,
    }
}

/// Exited long enough ago that any back-off is over.
fn exited_long_ago(code: i32, now: Now) -> RunState {
    exited(code, Duration::from_hours(1), now)
}

fn plan_of<'p>(pod: &'p Pod, observed: &[Observed], plumbed: bool, now: Now) -> Plan<'p> {
    let seen = Observation {
        containers: observed,
        plumbed,
    };
    plan(pod, &seen, now, &BACKOFF)
}

fn run_of<'p>(pod: &'p Pod, observed: &[Observed], now: Now) -> Run<'p> {
    match plan_of(pod, observed, true, now) {
        Plan::Run(r) => r,
        other => panic!("expected a run, got {other:?}"),
    }
}

/// (container name, attempt) of every start.
fn starts(run: &Run) -> Vec<(String, u32)> {
    run.start
        .iter()
        .map(|s| (s.container.name.clone(), s.attempt))
        .collect()
}

fn waiting_reason<'a>(run: &'a Run, name: &str) -> Option<&'a str> {
    run.waiting.get(name).map(|(r, _)| r.as_str())
}

#[test]
fn a_new_pod_gets_a_sandbox_and_every_container() {
    let now = at();
    let p = app_pod("Always", &["a", "b"]);
    let run = run_of(&p, &[], now);
    assert_eq!(run.sandbox, Sandbox::Create { plumb: true });
    assert_eq!(starts(&run), [("a".into(), 0), ("b".into(), 0)]);
    assert!(run.initialized && !run.init_failed);
    assert!(run.waiting.is_empty() && run.back_off.is_empty());
    assert_eq!(run.wake, now.instant + RESYNC, "nothing due earlier");
    let host = pod(&json!({"hostNetwork": true, "containers": [{"name": "a"}]}));
    assert_eq!(
        run_of(&host, &[], now).sandbox,
        Sandbox::Create { plumb: false },
        "host-network pods have no veth"
    );
}

#[test]
fn a_running_pod_is_left_alone_and_replumbed_after_a_kubelet_restart() {
    let now = at();
    let p = app_pod("Always", &["a"]);
    let observed = [Observed::container("a", 0, running()), sandbox(running())];
    let Plan::Run(run) = plan_of(&p, &observed, true, now) else {
        panic!("a run");
    };
    assert!(run.start.is_empty());
    assert_eq!(
        run.sandbox,
        Sandbox::Keep {
            id: "sandbox".into(),
            plumb: false
        }
    );
    let Plan::Run(restarted) = plan_of(&p, &observed, false, now) else {
        panic!("a run");
    };
    assert_eq!(
        restarted.sandbox,
        Sandbox::Keep {
            id: "sandbox".into(),
            plumb: true
        },
        "a worker that did not plumb the sandbox connects it again"
    );
}

#[test]
fn a_created_but_never_started_attempt_is_started_as_it_is() {
    let now = at();
    let p = app_pod("Always", &["a"]);
    let observed = [
        Observed::container("a", 3, RunState::Created),
        sandbox(running()),
    ];
    assert_eq!(starts(&run_of(&p, &observed, now)), [("a".into(), 3)]);
}

#[test]
fn restart_policy_decides_which_exits_restart() {
    let now = at();
    // (policy, exit code, restarted)
    let cases = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ];
    for (policy, code, restarted) in cases {
        let p = app_pod(policy, &["a"]);
        let observed = [
            Observed::container("a", 2, exited_long_ago(code, now)),
            sandbox(running()),
        ];
        let run = run_of(&p, &observed, now);
        if restarted {
            assert_eq!(starts(&run), [("a".into(), 3)], "{policy} exit {code}");
            assert!(matches!(run.sandbox, Sandbox::Keep { .. }));
        } else {
            assert!(run.start.is_empty(), "{policy} exit {code}");
            assert_eq!(
                run.sandbox,
                Sandbox::Release {
                    stop: Some("sandbox".into())
                },
                "{policy} exit {code}: nothing runs again, the network goes"
            );
        }
    }
}

#[test]
fn a_pod_is_finished_only_when_every_container_is() {
    let now = at();
    let p = app_pod("Never", &["a", "b"]);
    let observed = [
        Observed::container("a", 0, exited_long_ago(0, now)),
        Observed::container("b", 0, running()),
        sandbox(running()),
    ];
    assert!(matches!(
        run_of(&p, &observed, now).sandbox,
        Sandbox::Keep { .. }
    ));
}

#[test]
fn crash_back_off_grows_per_restart_and_is_capped() {
    let now = at();
    let p = app_pod("Always", &["a"]);
    let mut delays = Vec::new();
    for n in 0..8 {
        // Just exited: the whole back-off is ahead.
        let observed = [
            Observed::container("a", n, exited(1, Duration::ZERO, now)),
            sandbox(running()),
        ];
        let run = run_of(&p, &observed, now);
        assert!(run.start.is_empty(), "attempt {n} waits");
        assert_eq!(waiting_reason(&run, "a"), Some("CrashLoopBackOff"));
        assert_eq!(
            run.back_off,
            [BackOff {
                container: "a".into(),
                attempt: n
            }]
        );
        // The wake itself is capped by the resync.
        assert_eq!(run.wake - now.instant, RESYNC);
        let message = &run.waiting["a"].1;
        let secs = message
            .strip_prefix("back-off ")
            .and_then(|m| m.split_once('s'))
            .map(|(n, _)| n.parse::<u64>().unwrap());
        delays.push(secs.unwrap());
    }
    assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    let observed = [
        Observed::container("a", 2, exited(1, Duration::from_secs(15), now)),
        sandbox(running()),
    ];
    let run = run_of(&p, &observed, now);
    assert_eq!(
        run.waiting["a"].1,
        "back-off 40s restarting failed container=a pod=web_default(u1)"
    );
    assert_eq!(run.wake, now.instant + RESYNC, "the rest of it is longer");
    let observed = [
        Observed::container("a", 0, exited(1, Duration::from_secs(4), now)),
        sandbox(running()),
    ];
    let run = run_of(&p, &observed, now);
    assert_eq!(
        run.wake - now.instant,
        Duration::from_secs(6),
        "the rest of it"
    );
    let observed = [
        Observed::container("a", 2, exited(1, Duration::from_secs(40), now)),
        sandbox(running()),
    ];
    assert_eq!(
        starts(&run_of(&p, &observed, now)),
        [("a".into(), 3)],
        "back-off over"
    );
}

#[test]
fn a_long_run_resets_the_back_off() {
    let now = at();
    let p = app_pod("Always", &["a"]);
    let finished = now.wall;
    let long = RunState::Exited {
        code: 1,
        reason: "Error",
        started: Some(finished - Duration::from_mins(11)),
        finished,
    };
    let run = run_of(
        &p,
        &[Observed::container("a", 6, long), sandbox(running())],
        now,
    );
    assert!(run.waiting["a"].1.starts_with("back-off 10s "), "not 300s");
}

fn init_pod(policy: &str) -> Pod {
    pod(&json!({
        "restartPolicy": policy,
        "initContainers": [{"name": "one"}, {"name": "two"}],
        "containers": [{"name": "app"}],
    }))
}

#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let now = at();
    let p = init_pod("Always");
    let run = run_of(&p, &[], now);
    assert_eq!(starts(&run), [("one".into(), 0)]);
    assert!(!run.initialized);
    assert_eq!(waiting_reason(&run, "app"), Some("PodInitializing"));

    let first_running = [Observed::container("one", 0, running()), sandbox(running())];
    let run = run_of(&p, &first_running, now);
    assert!(run.start.is_empty(), "the second waits for the first");
    assert!(!run.initialized);

    let first_done = [
        Observed::container("one", 0, exited(0, Duration::ZERO, now)),
        sandbox(running()),
    ];
    assert_eq!(starts(&run_of(&p, &first_done, now)), [("two".into(), 0)]);

    let both_done = [
        Observed::container("one", 0, exited(0, Duration::ZERO, now)),
        Observed::container("two", 0, exited(0, Duration::ZERO, now)),
        sandbox(running()),
    ];
    let run = run_of(&p, &both_done, now);
    assert!(run.initialized);
    assert_eq!(starts(&run), [("app".into(), 0)]);
    assert!(run.waiting.is_empty());
}

#[test]
fn a_failed_init_container_is_retried_unless_the_policy_is_never() {
    let now = at();
    for policy in ["Always", "OnFailure"] {
        let p = init_pod(policy);
        let crashed = [
            Observed::container("one", 0, exited(1, Duration::ZERO, now)),
            sandbox(running()),
        ];
        let run = run_of(&p, &crashed, now);
        assert!(run.start.is_empty(), "{policy}: backs off first");
        assert_eq!(waiting_reason(&run, "one"), Some("CrashLoopBackOff"));
        assert!(!run.initialized && !run.init_failed);
        let later = [
            Observed::container("one", 0, exited_long_ago(1, now)),
            sandbox(running()),
        ];
        assert_eq!(starts(&run_of(&p, &later, now)), [("one".into(), 1)]);
    }
    let p = init_pod("Never");
    let failed = [
        Observed::container("one", 0, exited_long_ago(1, now)),
        sandbox(running()),
    ];
    let run = run_of(&p, &failed, now);
    assert!(run.init_failed && !run.initialized);
    assert!(run.start.is_empty(), "neither the next init nor the app");
    assert_eq!(waiting_reason(&run, "app"), None, "not PodInitializing");
    assert_eq!(
        run.sandbox,
        Sandbox::Release {
            stop: Some("sandbox".into())
        }
    );
}

#[test]
fn deletion_stops_everything_within_the_grace_period() {
    let now = at();
    let mut p = app_pod("Always", &["a", "b"]);
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        now.wall,
    ));
    let observed = [
        Observed::container("a", 0, running()),
        Observed::container("b", 1, exited_long_ago(1, now)),
        sandbox(running()),
    ];
    assert_eq!(
        plan_of(&p, &observed, true, now),
        Plan::Delete {
            grace: Duration::from_secs(30),
            running: vec!["a".into()],
        },
        "default grace; only running app containers are announced"
    );
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(7);
    let Plan::Delete { grace, .. } = plan_of(&p, &observed, true, now) else {
        panic!("a deletion");
    };
    assert_eq!(grace, Duration::from_secs(7), "the pod's grace");
    p.metadata.deletion_grace_period_seconds = Some(2);
    let Plan::Delete { grace, .. } = plan_of(&p, &[], true, now) else {
        panic!("a deletion");
    };
    assert_eq!(grace, Duration::from_secs(2), "the deletion's grace wins");
}

#[test]
fn a_dead_sandbox_is_replaced_while_containers_are_wanted() {
    let now = at();
    let p = app_pod("Always", &["a", "b"]);
    let dead = sandbox(exited_long_ago(137, now));
    let observed = [
        Observed::container("a", 0, running()),
        Observed::container("b", 0, exited_long_ago(0, now)),
        dead.clone(),
    ];
    assert_eq!(
        plan_of(&p, &observed, true, now),
        Plan::Repair {
            stop: vec!["a-0".into()],
            sandbox: "sandbox".into(),
        }
    );
    // After the repair: no sandbox, so a new one, connected again.
    let after = [
        Observed::container("a", 0, exited(137, Duration::ZERO, now)),
        Observed::container("b", 0, exited_long_ago(0, now)),
    ];
    let run = run_of(&p, &after, now);
    assert_eq!(run.sandbox, Sandbox::Create { plumb: true });
    assert_eq!(starts(&run), [("b".into(), 1)]);

    // Nothing wanted: no repair, the network is released.
    let finished = app_pod("Never", &["a"]);
    let observed = [Observed::container("a", 0, exited_long_ago(0, now)), dead];
    assert_eq!(
        run_of(&finished, &observed, now).sandbox,
        Sandbox::Release {
            stop: Some("sandbox".into())
        }
    );
}

#[test]
fn a_vanished_sandbox_is_recreated_around_running_containers() {
    let now = at();
    let p = app_pod("Always", &["a"]);
    let run = run_of(&p, &[Observed::container("a", 0, running())], now);
    assert_eq!(run.sandbox, Sandbox::Create { plumb: true });
    assert!(run.start.is_empty());
}

fn probed_pod() -> Pod {
    let probe = json!({"exec": {"command": ["true"]}, "periodSeconds": 5,
                       "failureThreshold": 1, "successThreshold": 1});
    let mut liveness = probe.clone();
    liveness["terminationGracePeriodSeconds"] = json!(3);
    pod(&json!({
        "terminationGracePeriodSeconds": 20,
        "containers": [{"name": "a", "startupProbe": probe, "readinessProbe": probe,
                        "livenessProbe": liveness}],
    }))
}

#[test]
fn the_startup_probe_gates_liveness_readiness_and_ready() {
    let now = Instant::now();
    let p = probed_pod();
    let spec = &p.spec.as_ref().unwrap().containers;
    let c = &spec[0];
    let observed = vec![Observed::container("a", 0, running()), sandbox(running())];
    let mut probes = HashMap::new();
    let due = probes_due(spec, &observed, &mut probes, now);
    assert_eq!(
        due,
        [ProbeRun {
            container: c,
            id: "a-0".into(),
            kinds: vec![probe::Kind::Startup],
        }]
    );
    let ready = |probes: &HashMap<String, Probes>| {
        let (_, st) = status::containers(&[], spec, &observed, &HashMap::new(), probes);
        (st[0].started, st[0].ready)
    };
    assert_eq!(ready(&probes), (Some(false), false));

    let startup = c.startup_probe.as_ref().unwrap();
    let state = probes.get_mut("a-0").unwrap();
    state
        .state_mut(probe::Kind::Startup)
        .unwrap()
        .record(startup, true, now);
    assert_eq!(
        ready(&probes),
        (Some(true), false),
        "started, not yet ready"
    );
    let due = probes_due(spec, &observed, &mut probes, now);
    assert_eq!(
        due[0].kinds,
        [probe::Kind::Liveness, probe::Kind::Readiness]
    );

    let state = probes.get_mut("a-0").unwrap();
    for kind in [probe::Kind::Liveness, probe::Kind::Readiness] {
        let spec = probe::spec(c, kind).unwrap();
        state.state_mut(kind).unwrap().record(spec, true, now);
    }
    assert_eq!(ready(&probes), (Some(true), true));
    assert!(
        probes_due(spec, &observed, &mut probes, now).is_empty(),
        "nothing due until the period is over"
    );

    // A new attempt starts over; the stopped one is forgotten.
    let restarted = vec![
        Observed::container("a", 0, exited(1, Duration::ZERO, at())),
        Observed::container("a", 1, running()),
        sandbox(running()),
    ];
    let due = probes_due(spec, &restarted, &mut probes, now);
    assert_eq!(due[0].id, "a-1");
    assert_eq!(due[0].kinds, [probe::Kind::Startup]);
    assert_eq!(probes.keys().collect::<Vec<_>>(), ["a-1"]);
}

#[test]
fn failed_startup_and_liveness_probes_restart_but_readiness_does_not() {
    let p = probed_pod();
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        kill_after(&p, c, probe::Kind::Liveness, Verdict::Failed),
        Some(Duration::from_secs(3)),
        "the probe's own grace"
    );
    assert_eq!(
        kill_after(&p, c, probe::Kind::Startup, Verdict::Failed),
        Some(Duration::from_secs(20)),
        "the pod's grace"
    );
    assert_eq!(
        kill_after(&p, c, probe::Kind::Readiness, Verdict::Failed),
        None
    );
    assert_eq!(
        kill_after(&p, c, probe::Kind::Liveness, Verdict::Unchanged),
        None
    );
    assert_eq!(
        kill_after(&p, c, probe::Kind::Liveness, Verdict::Passed),
        None
    );
}

#[test]
fn each_container_keeps_its_current_and_previous_attempt() {
    let now = at();
    let observed = [
        Observed::container("a", 0, exited_long_ago(1, now)),
        Observed::container("a", 1, exited_long_ago(1, now)),
        Observed::container("a", 2, exited_long_ago(1, now)),
        Observed::container("a", 3, running()),
        Observed::container("b", 0, exited_long_ago(1, now)),
        Observed::container("b", 1, running()),
        sandbox(running()),
    ];
    assert_eq!(old_attempts(&observed), ["a-0", "a-1"]);
    assert!(old_attempts(&observed[4..]).is_empty());
}

#[test]
fn ephemeral_containers_start_while_the_pod_runs_and_only_then() {
    let now = at();
    let p = pod(&json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "img"}],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox", "targetContainerName": "main"}],
    }));
    let alive = [
        sandbox(running()),
        Observed::container("main", 0, running()),
    ];
    let run = run_of(&p, &alive, now);
    assert!(starts(&run).is_empty(), "app containers untouched");
    let eph: Vec<(&str, u32, Option<&str>)> = run
        .ephemeral
        .iter()
        .map(|e| {
            (
                e.container.name.as_str(),
                e.attempt,
                e.pid_target.as_deref(),
            )
        })
        .collect();
    assert_eq!(eph, [("debugger", 0, Some("main-0"))]);
    // It exited: never again, and the pod's phase ignores it.
    let ran = [
        sandbox(running()),
        Observed::container("main", 0, running()),
        Observed::container("debugger", 0, exited_long_ago(1, now)),
    ];
    let run = run_of(&p, &ran, now);
    assert!(run.ephemeral.is_empty());
    assert!(matches!(run.sandbox, Sandbox::Keep { .. }));
    // A finished pod starts none.
    let done = [
        sandbox(running()),
        Observed::container("main", 0, exited_long_ago(0, now)),
    ];
    let run = run_of(&p, &done, now);
    assert!(run.ephemeral.is_empty());
    assert!(matches!(run.sandbox, Sandbox::Release { .. }));
}
