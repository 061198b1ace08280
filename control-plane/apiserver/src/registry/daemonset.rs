//! DaemonSets (apps/v1): they start with the status Kubernetes' `PrepareForCreate` gives
//! them, whose four required counts are zero (the controller fills in the rest).

use serde_json::{Value, json};

use super::Hooks;

pub const HOOKS: Hooks = Hooks {
    initial_status: Some(initial_status),
    ..Hooks::NONE
};

fn initial_status(_: &Value) -> Value {
    json!({
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    })
}
