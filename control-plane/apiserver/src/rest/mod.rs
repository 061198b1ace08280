//! The verbs: get, list, watch, create, update, patch, delete (and the status, scale and
//! binding subresources), identical for every resource in the registry; per-kind rules come
//! from the resource's hooks (`registry::Hooks`).

mod apply;
mod binding;
mod create;
mod delete;
mod list;
mod patch;
mod scale;
mod select;
mod update;
mod watch;

use axum::http::StatusCode;
use axum::response::Response;
use kproxy_api::validate::Invalid;
use kproxy_store::{Op, StoreError};
use serde_json::{Value, json};

use crate::context::{Api, Req, Target, json as json_resp, raw_json};
use crate::object::{self, from_kv, meta_mut};
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// Attempts for writes that lose a race they can safely retry (no explicit resourceVersion,
/// or a randomly picked address taken meanwhile).
const RETRIES: usize = 8;

/// Serves `verb` on `t`; `bound_to` is the node a node's pod write must stay on.
pub async fn serve(
    api: &Api,
    req: &Req,
    t: &Target,
    verb: &str,
    bound_to: Option<String>,
) -> ApiResult<Response> {
    if t.res.namespaced && t.ns.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::no_route());
    }
    let ok = |v: &Value| json_resp(StatusCode::OK, v);
    match (verb, t.sub.as_deref()) {
        ("list", None) => list::serve(api, req, t).await,
        ("watch", None) => watch::serve(api, req, t).await,
        ("get", None | Some("status" | "ephemeralcontainers")) if !req.wants_table() => {
            // The hot path: stored bytes with the resourceVersion spliced in, no parse.
            Ok(raw_json(
                StatusCode::OK,
                object::with_rv(&get_kv_as_asked(api, req, t).await?)?,
            ))
        }
        ("get", None | Some("status" | "ephemeralcontainers")) => {
            let obj = from_kv(&get_kv_as_asked(api, req, t).await?)?;
            let rev = object::field_value(&obj, "metadata.resourceVersion")
                .parse()
                .ok();
            Ok(ok(&crate::table::table(
                t.res,
                &[obj],
                rev,
                req.q("includeObject"),
            )))
        }
        ("get", Some("scale")) => Ok(ok(&scale::scale_of(&get(api, t).await?))),
        // As in Kubernetes, objects are created by POSTing to their collection; a name in the
        // path would be one more name to keep equal to the body's.
        ("create", None) if t.name.is_some() => Err(ApiError::method_not_allowed()),
        ("create", None) => create::create(api, req, t).await,
        ("create", Some("binding")) => binding::bind(api, req, t).await,
        ("update" | "patch", sub) => patch::serve(api, req, t, verb, sub, bound_to).await,
        ("delete", None) => delete::serve(api, req, t, bound_to.as_deref()).await,
        ("deletecollection", None) => delete::serve_collection(api, req, t).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The object `t` names, read as `at_least` asks with Kubernetes' GET semantics: None is the
/// current state (a consistent read); Some(0) any state (from the watch cache without asking
/// etcd, as kube-apiserver serves it); Some(N) a state not older than N, and N beyond the
/// store's revision is 504 "Too large resource version", as the real server answers once its
/// cache cannot get there.
async fn get_kv(
    api: &Api,
    t: &Target,
    at_least: Option<kproxy_store::Revision>,
) -> ApiResult<kproxy_store::KeyValue> {
    let name = t.name.as_deref().unwrap_or_default();
    let key = t.res.key(t.ns.as_deref(), name);
    let kv = match at_least {
        None => api.store.get(&key).await?,
        Some(want) => {
            let kv = api.store.get_not_older_than(&key, want).await?;
            let current = api.store.revision();
            if want > current {
                return Err(ApiError::too_large_resource_version(want, current));
            }
            kv
        }
    };
    kv.ok_or_else(|| ApiError::not_found(&t.res.group_resource(), name))
}

/// A GET's read as its `resourceVersion` asks (see [`get_kv`]); not a number is 400.
async fn get_kv_as_asked(api: &Api, req: &Req, t: &Target) -> ApiResult<kproxy_store::KeyValue> {
    let at_least = req
        .q("resourceVersion")
        .map(|rv| {
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
        })
        .transpose()?;
    get_kv(api, t, at_least).await
}

async fn get(api: &Api, t: &Target) -> ApiResult<Value> {
    from_kv(&get_kv(api, t, None).await?)
}

/// Checks (or fills in) apiVersion and kind of a request body.
fn check_type(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    match obj["apiVersion"].as_str() {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj["kind"].as_str() {
        None | Some("") => obj["kind"] = json!(res.kind),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    Ok(())
}

/// fieldValidation=Strict (kubectl's default): fields the schema lacks are an error instead of
/// being dropped. (Unset or Warn/Ignore: dropped, as Kubernetes does with Ignore.)
fn strict_fields(req: &Req, res: &Resource, obj: &Value) -> ApiResult<()> {
    if req.q("fieldValidation") != Some("Strict") {
        return Ok(());
    }
    let unknown = kproxy_api::strict::unknown_fields(res.kind, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

fn invalid(res: &Resource, name: &str, e: Invalid) -> ApiError {
    match e {
        Invalid::Decode(msg) => {
            ApiError::bad_request(format!("error decoding {}: {msg}", res.kind))
        }
        Invalid::Fields(errs) => ApiError::invalid(res.kind, res.group, name, &errs),
    }
}

/// A node's write of `new` (`old`: the stored object) through NodeRestriction admission.
fn admit(req: &Req, t: &Target, new: &Value, old: Option<&Value>) -> ApiResult<()> {
    crate::auth::admit(&req.id, t.res, t.ns.as_deref(), new, old).map_err(|why| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{}\" is forbidden: {why}",
                t.res.group_resource(),
                object::name(new).unwrap_or_default()
            ),
        )
    })
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    meta_mut(&mut v).remove("resourceVersion");
    v
}

/// The kind's allocations for `obj` (see `registry::Allocator`): the store ops that claim
/// and release them. Their field errors are the request's 422.
async fn allocate(
    api: &Api,
    res: &Resource,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
    key: &str,
) -> ApiResult<Vec<Op>> {
    let Some(alloc) = res.hooks.allocator else {
        return Ok(Vec::new());
    };
    (alloc.assign)(&api.ranges, api.store.as_ref(), obj, old, key)
        .await?
        .map_err(|errs| ApiError::invalid(res.kind, res.group, name, &errs))
}

/// A write that lost the race for one of the kind's allocations (an address another write
/// claimed meanwhile): worth a retry with another.
fn is_alloc_conflict(res: &Resource, e: &StoreError) -> bool {
    matches!(e, StoreError::AlreadyExists(k)
        if res.hooks.allocator.is_some_and(|a| (a.owns_key)(k)))
}
