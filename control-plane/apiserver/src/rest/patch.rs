//! PUT and PATCH of an object, its `/status` or its `/scale`: a replacement, a JSON, merge or
//! strategic-merge patch, or a server-side apply.

use axum::http::StatusCode;
use axum::response::Response;
use kproxy_apimachinery::patch::PatchType;
use serde_json::Value;

use super::apply::apply;
use super::scale::{edit_scale, scale_of};
use super::update::{Edit, update};
use crate::context::{Api, Req, Target, json as json_resp};
use crate::managed;
use crate::object;
use crate::status::{ApiError, ApiResult};

/// Serves `verb` ("update" or "patch") on `t` and its subresource `sub`.
pub async fn serve(
    api: &Api,
    req: &Req,
    t: &Target,
    verb: &str,
    sub: Option<&str>,
    bound_to: Option<String>,
) -> ApiResult<Response> {
    let ok = |v: &Value| json_resp(StatusCode::OK, v);
    let body = if verb == "update" {
        Edit::Replace(object::parse_body(req.content_type(), &req.body)?)
    } else {
        let ty = PatchType::from_content_type(req.content_type()).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the content type {} is not a supported patch type",
                    req.content_type()
                ),
            )
        })?;
        if matches!(ty, PatchType::Apply) {
            let (obj, created) = apply(api, req, t, bound_to).await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let out = if sub == Some("scale") {
                scale_of(&obj)
            } else {
                obj
            };
            return Ok(json_resp(code, &out));
        }
        if req.flag("force") {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        Edit::Patch(ty, req.body.clone())
    };
    let w = managed::Writer::update(req, t.res, sub)?;
    if sub == Some("scale") {
        let obj = update(api, req, t, None, bound_to, Some(&w), &|cur| {
            edit_scale(cur, &body)
        })
        .await?;
        return Ok(ok(&scale_of(&obj)));
    }
    let obj = update(api, req, t, sub, bound_to, Some(&w), &|cur| {
        body.apply(t.res.kind, cur)
    })
    .await?;
    Ok(ok(&obj))
}
