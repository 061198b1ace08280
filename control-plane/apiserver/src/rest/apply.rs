//! Server-side apply (PATCH with application/apply-patch+yaml).

use axum::http::StatusCode;
use serde_json::Value;

use super::RETRIES;
use super::create::create_object;
use super::update::update;
use crate::context::{Api, Req, Target};
use crate::managed;
use crate::status::{ApiError, ApiResult};

/// Server-side apply: the configuration merged into the object with field ownership and
/// conflicts, or the object created from it when there is none (and the caller may create).
/// Returns the object and whether it was created.
pub async fn apply(
    api: &Api,
    req: &Req,
    t: &Target,
    bound_to: Option<String>,
) -> ApiResult<(Value, bool)> {
    let sub = t.sub.as_deref();
    let w = managed::Writer::apply(req, t)?;
    let config = &w.apply.as_ref().expect("an apply writer").config;
    // Scale's rules are the object's: it edits spec.replicas.
    let rules = if sub == Some("scale") { None } else { sub };
    let may_create = sub.is_none()
        && matches!(
            crate::auth::authorize(
                &req.id,
                "create",
                t.res,
                t.ns.as_deref(),
                t.name.as_deref(),
                None
            ),
            crate::auth::Access::Allowed
        );
    let edit = |cur: &Value| managed::apply_edit(t.res, &w, cur);
    for _ in 0..RETRIES {
        match update(api, req, t, rules, bound_to.clone(), Some(&w), &edit).await {
            Err(e) if e.code == StatusCode::NOT_FOUND && may_create => {}
            r => return r.map(|o| (o, false)),
        }
        match create_object(api, req, t, config.clone(), &w).await {
            // Created by someone else meanwhile: apply to it.
            Err(e) if e.reason == "AlreadyExists" => {}
            r => return r.map(|o| (o, true)),
        }
    }
    Err(ApiError::conflict(
        &t.res.group_resource(),
        t.name.as_deref().unwrap_or_default(),
    ))
}
