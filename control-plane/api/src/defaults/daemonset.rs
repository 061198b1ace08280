//! SetDefaults_DaemonSet (apps/v1): a RollingUpdate strategy replacing one node's pod at a
//! time without surge, ten old revisions kept, and the pod template's defaults.

use serde_json::json;

use super::{Obj, child, set, str_of, template};

pub(super) fn daemon_set(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    if let Some(strategy) = child(spec, "updateStrategy") {
        set(strategy, "type", json!("RollingUpdate"));
        if str_of(strategy, "type") == Some("RollingUpdate")
            && let Some(ru) = child(strategy, "rollingUpdate")
        {
            set(ru, "maxUnavailable", json!(1));
            set(ru, "maxSurge", json!(0));
        }
    }
    set(spec, "revisionHistoryLimit", json!(10));
    template(spec);
}
