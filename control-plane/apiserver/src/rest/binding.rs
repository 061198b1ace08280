//! The `pods/binding` subresource: the scheduler's assignment of a pod to a node.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::update::update;
use crate::context::{Api, Req, Target, json as json_resp};
use crate::object::{self, meta_mut, str_at};
use crate::status::{ApiError, ApiResult, success};

/// POST pods/NAME/binding: assigns the pod to a node, once.
pub async fn bind(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
    let binding = object::parse_body(req.content_type(), &req.body)?;
    let node = str_at(&binding, &["target", "name"])
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding target name is required"))?
        .to_string();
    let name = t.name.clone().unwrap_or_default();
    let edit = |cur: &Value| -> ApiResult<Value> {
        if let Some(on) = str_at(cur, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{on}\""
                ),
            ));
        }
        if object::is_deleting(cur) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut new = cur.clone();
        meta_mut(&mut new).remove("resourceVersion");
        new["spec"]["nodeName"] = json!(node);
        Ok(new)
    };
    update(api, req, t, None, None, None, &edit).await?;
    Ok(json_resp(
        StatusCode::CREATED,
        &success(&json!({"name": name, "kind": "pods"})),
    ))
}
