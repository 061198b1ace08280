//! The `/scale` subresource: autoscaling/v1 Scale over a workload's `spec.replicas`.

use kproxy_apimachinery::selector::LabelSelector;
use serde_json::{Value, json};

use super::update::Edit;
use crate::object::{self, meta, meta_mut, str_at};
use crate::status::{ApiError, ApiResult};

/// autoscaling/v1 Scale view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let selector = match serde_json::from_value(obj["spec"]["selector"].clone()) {
        Ok(sel) => LabelSelector::from_api(&sel)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let m = meta(obj);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// The workload with the replicas a PUT or PATCH of its Scale asks for.
pub fn edit_scale(cur: &Value, edit: &Edit) -> ApiResult<Value> {
    let mut scale = scale_of(cur);
    // Without the current resourceVersion, any resourceVersion in the result came from the
    // client: a precondition on the parent, as for the object itself.
    meta_mut(&mut scale).remove("resourceVersion");
    let new_scale = match edit {
        Edit::Replace(v) => v.clone(),
        Edit::Patch(..) => edit.apply("Scale", &scale)?,
    };
    let replicas = &new_scale["spec"]["replicas"];
    let n = match replicas.as_i64() {
        Some(n) if n >= 0 => n,
        _ => {
            let errs = vec![kproxy_api::validate::FieldError {
                field: "spec.replicas".into(),
                error_type: kproxy_api::validate::ErrorType::Invalid,
                value: Some(replicas.to_string()),
                detail: "must be greater than or equal to 0".into(),
            }];
            let name = object::name(cur).unwrap_or_default();
            return Err(ApiError::invalid("Scale", "autoscaling", name, &errs));
        }
    };
    let mut out = cur.clone();
    out["spec"]["replicas"] = json!(n);
    match str_at(&new_scale, &["metadata", "resourceVersion"]).filter(|rv| !rv.is_empty()) {
        Some(rv) => meta_mut(&mut out).insert("resourceVersion".into(), json!(rv)),
        None => meta_mut(&mut out).remove("resourceVersion"),
    };
    Ok(out)
}
