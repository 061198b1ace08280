//! Ephemeral containers (`kubectl debug`): each is started once, while the pod runs, and
//! never restarted; one naming a `targetContainerName` joins that running container's
//! process namespace. They do not count for the pod's phase, readiness or restarts.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer};

use super::Waiting;
use crate::runtime::{self, Observed, RunState};

/// Create and start attempt `attempt` of ephemeral container `container`.
#[derive(Debug, PartialEq)]
pub struct EphemeralStart<'p> {
    pub container: &'p EphemeralContainer,
    pub attempt: u32,
    /// The Docker id of the running target container whose process namespace it joins.
    pub pid_target: Option<String>,
}

/// The ephemeral containers to start now; those that cannot start yet get a waiting reason.
pub fn starts<'p>(
    ephemeral: &'p [EphemeralContainer],
    observed: &[Observed],
    waiting: &mut HashMap<String, Waiting>,
) -> Vec<EphemeralStart<'p>> {
    let mut out = Vec::new();
    for ec in ephemeral {
        let attempt = match runtime::current(observed, &ec.name).map(|o| (&o.state, o.attempt)) {
            None => 0,
            // Created but never started (the kubelet stopped in between): this attempt again.
            Some((RunState::Created, a)) => a,
            // Running, or ran: never again.
            Some(_) => continue,
        };
        let target = ec
            .target_container_name
            .as_deref()
            .filter(|t| !t.is_empty());
        let running = |t| runtime::current(observed, t).filter(|o| o.state.is_running());
        let pid_target = match target.map(|t| (t, running(t))) {
            None => None,
            Some((_, Some(o))) => Some(o.id.clone()),
            Some((t, None)) => {
                // The kubelet's words (getTargetID); tried again on the next pass.
                waiting.insert(
                    ec.name.clone(),
                    (
                        "CreateContainerConfigError".into(),
                        format!("unable to find target container {t}"),
                    ),
                );
                continue;
            }
        };
        out.push(EphemeralStart {
            container: ec,
            attempt,
            pid_target,
        });
    }
    out
}

/// The Container an ephemeral container's fields make (EphemeralContainerCommon is
/// Container's fields), for creating it and reporting its status like any container.
pub fn as_container(ec: &EphemeralContainer) -> Container {
    Container {
        name: ec.name.clone(),
        image: ec.image.clone(),
        command: ec.command.clone(),
        args: ec.args.clone(),
        working_dir: ec.working_dir.clone(),
        env: ec.env.clone(),
        env_from: ec.env_from.clone(),
        volume_mounts: ec.volume_mounts.clone(),
        volume_devices: ec.volume_devices.clone(),
        image_pull_policy: ec.image_pull_policy.clone(),
        security_context: ec.security_context.clone(),
        stdin: ec.stdin,
        stdin_once: ec.stdin_once,
        tty: ec.tty,
        termination_message_path: ec.termination_message_path.clone(),
        termination_message_policy: ec.termination_message_policy.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;

    fn ec(name: &str, target: Option<&str>) -> EphemeralContainer {
        serde_json::from_value(json!({
            "name": name, "image": "kproxy/busybox:1", "stdin": true, "tty": false,
            "targetContainerName": target,
        }))
        .unwrap()
    }

    fn running() -> RunState {
        RunState::Running {
            started: Timestamp::UNIX_EPOCH,
            pid: 7,
        }
    }

    fn exited(code: i32) -> RunState {
        RunState::Exited {
            code,
            reason: "Completed",
            started: Some(Timestamp::UNIX_EPOCH),
            finished: Timestamp::UNIX_EPOCH,
        }
    }

    /// (name, attempt, pid target) of each start.
    type Starts = Vec<(String, u32, Option<String>)>;

    fn plan(
        eph: &[EphemeralContainer],
        observed: &[Observed],
    ) -> (Starts, HashMap<String, Waiting>) {
        let mut waiting = HashMap::new();
        let s = starts(eph, observed, &mut waiting)
            .into_iter()
            .map(|s| (s.container.name.clone(), s.attempt, s.pid_target))
            .collect();
        (s, waiting)
    }

    #[test]
    fn started_once_in_the_targets_process_namespace() {
        let eph = [ec("debugger", Some("main")), ec("plain", None)];
        let main = Observed::container("main", 2, running());
        let (s, w) = plan(&eph, std::slice::from_ref(&main));
        assert_eq!(
            s,
            [
                ("debugger".into(), 0, Some("main-2".into())),
                ("plain".into(), 0, None)
            ]
        );
        assert!(w.is_empty());
        // Running or exited (whatever the code): left alone, never restarted.
        for state in [running(), exited(0), exited(137)] {
            let seen = [
                main.clone(),
                Observed::container("debugger", 0, state),
                Observed::container("plain", 0, exited(1)),
            ];
            assert_eq!(plan(&eph, &seen).0, []);
        }
        // Created and never started: that attempt again.
        let seen = [
            main.clone(),
            Observed::container("debugger", 0, RunState::Created),
            Observed::container("plain", 0, exited(0)),
        ];
        assert_eq!(
            plan(&eph, &seen).0,
            [("debugger".into(), 0, Some("main-2".into()))]
        );
    }

    #[test]
    fn waits_for_its_target_to_run() {
        let eph = [ec("debugger", Some("main"))];
        for seen in [vec![], vec![Observed::container("main", 0, exited(1))]] {
            let (s, w) = plan(&eph, &seen);
            assert_eq!(s, []);
            assert_eq!(
                w["debugger"],
                (
                    "CreateContainerConfigError".to_string(),
                    "unable to find target container main".to_string()
                )
            );
        }
    }

    #[test]
    fn keeps_the_stdio_settings() {
        let mut e = ec("d", None);
        e.tty = Some(true);
        e.stdin_once = Some(true);
        e.command = Some(vec!["sh".into()]);
        let c = as_container(&e);
        assert_eq!(
            (c.stdin, c.stdin_once, c.tty),
            (Some(true), Some(true), Some(true))
        );
        assert_eq!(c.command, Some(vec!["sh".to_string()]));
        assert_eq!(c.image.as_deref(), Some("kproxy/busybox:1"));
    }
}
