//! delete and deletecollection: finalizers, graceful deletion and the kind's deletion rule
//! (`registry::Deletion`), then garbage collection of dependents per propagationPolicy
//! (`gc`).

mod gc;

use axum::http::StatusCode;
use axum::response::Response;
use kproxy_store::{Op, StoreError};
use serde_json::{Value, json};

pub use self::gc::spawn_collect_if_orphaned;
use super::RETRIES;
use super::select::{list_doc, select};
use super::without_rv;
use crate::context::{Api, Req, Target, json as json_resp};
use crate::object::{self, from_kv, meta_mut, set_rv, str_at, to_stored};
use crate::registry::{Deletion, Resource};
use crate::status::{ApiError, ApiResult};

/// A delete request's options (query parameters or a DeleteOptions body).
#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// Not a request option: the uids of the objects whose foreground deletion led to this
    /// one (owner first). Their deletes are under way, so as dependents they are skipped:
    /// an object owning itself, or an owner cycle, ends there instead of recursing forever.
    pub deleting: Vec<String>,
}

/// How deep foreground deletion recurses on one task; below that, dependents are left to the
/// sweep that follows the owner's deletion (a task of its own), so a long owner chain cannot
/// exhaust the stack.
const MAX_FOREGROUND_DEPTH: usize = 32;

impl DeleteOptions {
    pub fn from_req(req: &Req) -> ApiResult<Self> {
        let mut o = DeleteOptions::default();
        if !req.body.iter().all(u8::is_ascii_whitespace) {
            let v = object::parse_body(req.content_type(), &req.body)?;
            o.grace = v["gracePeriodSeconds"].as_i64();
            o.propagation = v["propagationPolicy"].as_str().map(String::from);
            if v["orphanDependents"] == json!(true) {
                o.propagation = Some("Orphan".into());
            }
            o.uid = str_at(&v, &["preconditions", "uid"]).map(String::from);
            o.resource_version =
                str_at(&v, &["preconditions", "resourceVersion"]).map(String::from);
        }
        if let Some(g) = req.q("gracePeriodSeconds") {
            o.grace =
                Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?);
        }
        if let Some(p) = req.q("propagationPolicy") {
            o.propagation = Some(p.to_string());
        }
        match o.propagation.as_deref() {
            None | Some("Orphan" | "Background" | "Foreground") => Ok(o),
            Some(p) => Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                &[kproxy_api::validate::FieldError {
                    field: "propagationPolicy".into(),
                    error_type: kproxy_api::validate::ErrorType::NotSupported,
                    value: Some(format!("{p:?}")),
                    detail: "supported values: \"Foreground\", \"Background\", \"Orphan\"".into(),
                }],
            )),
        }
    }
}

/// DELETE of one object.
pub async fn serve(
    api: &Api,
    req: &Req,
    t: &Target,
    bound_to: Option<&str>,
) -> ApiResult<Response> {
    let opts = DeleteOptions::from_req(req)?;
    let key = t
        .res
        .key(t.ns.as_deref(), t.name.as_deref().unwrap_or_default());
    let obj = delete(api, t.res, &key, &opts, bound_to).await?;
    Ok(json_resp(StatusCode::OK, &obj))
}

/// DELETE of the selected objects of a collection.
pub async fn serve_collection(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
    let opts = DeleteOptions::from_req(req)?;
    let (items, _) = select(api, req, t).await?;
    let mut deleted = Vec::new();
    for o in items {
        let key = t
            .res
            .key(object::namespace(&o), object::name(&o).unwrap_or_default());
        match delete(api, t.res, &key, &opts, None).await {
            Ok(d) => deleted.push(d),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_resp(
        StatusCode::OK,
        &list_doc(t.res, &deleted, api.store.revision()),
    ))
}

/// Deletes one object by key, honouring finalizers, graceful pod termination and the
/// propagation policy. Returns the object as deleted (or as marked for deletion).
pub async fn delete(
    api: &Api,
    res: &'static Resource,
    key: &str,
    opts: &DeleteOptions,
    bound_to: Option<&str>,
) -> ApiResult<Value> {
    let name = key.rsplit('/').next().unwrap_or_default().to_string();
    let gr = res.group_resource();
    for _ in 0..RETRIES {
        let kv = api
            .store
            .get(key)
            .await?
            .ok_or_else(|| ApiError::not_found(&gr, &name))?;
        let cur = from_kv(&kv)?;
        if let Some(node) = bound_to
            && object::field_value(&cur, "spec.nodeName") != node
        {
            return Err(ApiError::forbidden(
                &format!("system:node:{node}"),
                "delete",
                &gr,
                object::namespace(&cur),
            ));
        }
        if opts
            .uid
            .as_deref()
            .is_some_and(|u| Some(u) != object::uid(&cur))
            || opts
                .resource_version
                .as_deref()
                .is_some_and(|r| r != kv.mod_revision.to_string())
        {
            return Err(ApiError::conflict(&gr, &name));
        }
        let uid = object::uid(&cur).unwrap_or_default().to_string();
        let ns = object::namespace(&cur).map(String::from);
        let policy = opts.propagation.as_deref().unwrap_or("Background");
        let deletion = match res.hooks.delete {
            Some(hook) => hook(&cur, opts.grace)?,
            None => Deletion::Remove,
        };

        // Marking for deletion instead of deleting: graceful deletion, contents to delete
        // first, finalizers.
        if deletion != Deletion::Remove || !object::finalizers(&cur).is_empty() {
            if object::is_deleting(&cur) {
                return Ok(cur);
            }
            let grace = match deletion {
                Deletion::Graceful { grace } => grace,
                Deletion::Remove | Deletion::Contents => 0,
            };
            let mut new = without_rv(&cur);
            let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            let m = meta_mut(&mut new);
            m.insert(
                "deletionTimestamp".into(),
                json!(when.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if let Some(on_mark) = res.hooks.on_mark {
                on_mark(&mut new);
            }
            match api
                .store
                .txn(vec![Op::Update {
                    key: key.to_string(),
                    value: to_stored(&new),
                    expected: Some(kv.mod_revision),
                }])
                .await
            {
                Ok(kvs) => set_rv(&mut new, kvs[0].mod_revision),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            if deletion == Deletion::Contents {
                gc::spawn_namespace_cleanup(api, name.clone());
            }
            return Ok(new);
        }

        let mut chain = opts.deleting.clone();
        chain.push(uid.clone());
        match policy {
            "Orphan" => gc::orphan(api, ns.as_deref(), &uid).await?,
            "Foreground" if chain.len() <= MAX_FOREGROUND_DEPTH => {
                gc::delete_dependents(api, ns.as_deref(), &uid, &chain).await?;
            }
            _ => {}
        }
        let mut ops = vec![Op::Delete {
            key: key.to_string(),
            expected: Some(kv.mod_revision),
        }];
        if let Some(alloc) = res.hooks.allocator {
            ops.extend((alloc.release)(&cur));
        }
        match api.store.txn(ops).await {
            Ok(kvs) => {
                let mut gone = cur.clone();
                set_rv(&mut gone, kvs[0].mod_revision);
                // Foreground deleted the dependents it listed before this commit; a dependent
                // created after that listing (a controller on a stale cache) is found by this
                // sweep, and one created after this commit by its own owner check
                // (gc::spawn_collect_if_orphaned). Background relies on the sweep alone.
                if policy != "Orphan" {
                    gc::spawn_delete_dependents(api, ns, uid, chain);
                }
                return Ok(gone);
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&gr, &name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(&gr, &name))
}
