//! update: read-modify-write of one object with optimistic concurrency, for PUT, PATCH,
//! `/status`, `/scale` and binding; [`Edit`] is what a PUT or PATCH makes of the object.

use axum::http::StatusCode;
use kproxy_apimachinery::patch::{self, PatchType};
use kproxy_store::{Op, StoreError};
use serde_json::{Value, json};

use super::{
    RETRIES, admit, allocate, check_type, invalid, is_alloc_conflict, strict_fields, without_rv,
};
use crate::context::{Api, Req, Target};
use crate::managed;
use crate::object::{self, from_kv, meta, meta_mut, set_rv, str_at, to_stored};
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// A replacement (PUT) or a patch.
pub enum Edit {
    Replace(Value),
    Patch(PatchType, bytes::Bytes),
}

impl Edit {
    /// The candidate object: the body for PUT, the patched current object for PATCH. A
    /// resourceVersion in the result is one the client asked for (a precondition): the
    /// current one is removed unless the patch set another. (It stays in the patched base, as
    /// JSON patches may `test` or `replace` it, like kubectl's managed-fields migration.)
    pub fn apply(&self, kind: &str, cur: &Value) -> ApiResult<Value> {
        match self {
            Edit::Replace(v) => Ok(v.clone()),
            Edit::Patch(ty, body) => {
                let r = match ty {
                    PatchType::Json => patch::json_patch(cur, body),
                    PatchType::Merge => patch::merge_patch(cur, body),
                    PatchType::StrategicMerge => patch::strategic_merge_patch(kind, cur, body),
                    PatchType::Apply => {
                        return Err(ApiError::bad_request(
                            "server-side apply is not a patch of the current object",
                        ));
                    }
                };
                let mut v = r.map_err(|e| match e.status_code() {
                    400 => ApiError::bad_request(e.to_string()),
                    413 => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        e.to_string(),
                    ),
                    _ => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string()),
                })?;
                if !v.is_object() {
                    return Err(ApiError::bad_request("the patch did not produce an object"));
                }
                let cur_rv = &meta(cur)["resourceVersion"];
                if !cur_rv.is_null() && meta(&v).get("resourceVersion") == Some(cur_rv) {
                    meta_mut(&mut v).remove("resourceVersion");
                }
                Ok(v)
            }
        }
    }
}

/// Rules for an update: which parts the caller may change.
fn merge_update(res: &Resource, sub: Option<&str>, cur: &Value, mut cand: Value) -> Value {
    if sub == Some("status") {
        let mut new = cur.clone();
        new["status"] = cand["status"].take();
        return new;
    }
    if sub == Some(crate::registry::ephemeral::SUBRESOURCE) {
        return crate::registry::ephemeral::merge(cur, &cand);
    }
    let cm = meta(cur).clone();
    let m = meta_mut(&mut cand);
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cm.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    if res.sub.status {
        match cur.get("status") {
            Some(s) => cand["status"] = s.clone(),
            None => {
                cand.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    cand
}

/// Read-modify-write with optimistic concurrency. `edit` turns the current object into the
/// candidate; a resourceVersion in the candidate is a precondition (409 when stale), without
/// one the write is retried against the newer object.
///
/// The first attempt starts from the store's possibly lagging copy ([`Store::get_cached`]: the
/// watch cache on etcd, no etcd round trip): the write's compare on that copy's mod_revision
/// fails if it was stale, and whatever was decided from it without writing (an error, a no-op,
/// a dry run) is decided again on a consistent read, as kube-apiserver's GuaranteedUpdate does
/// with its cached object.
///
/// [`Store::get_cached`]: kproxy_store::Store::get_cached
pub async fn update(
    api: &Api,
    req: &Req,
    t: &Target,
    sub: Option<&str>,
    bound_to: Option<String>,
    writer: Option<&managed::Writer>,
    edit: &(dyn Fn(&Value) -> ApiResult<Value> + Sync),
) -> ApiResult<Value> {
    let name = t.name.as_deref().unwrap_or_default();
    let key = t.res.key(t.ns.as_deref(), name);
    let gr = t.res.group_resource();
    let mut fresh = false;
    for _ in 0..RETRIES {
        let read = if fresh {
            api.store.get(&key).await?
        } else {
            api.store.get_cached(&key).await?
        };
        let Some(kv) = read else {
            if fresh {
                return Err(ApiError::not_found(&gr, name));
            }
            fresh = true;
            continue;
        };
        let at = Attempt {
            api,
            req,
            t,
            sub,
            bound_to: bound_to.as_deref(),
            writer,
        };
        let (mut new, ops, want_rv) = match at.prepare(&key, &kv, edit).await {
            Ok(Step::Write { new, ops, want_rv }) => (new, ops, want_rv),
            Ok(Step::Unchanged(v) | Step::DryRun(v)) if fresh => return Ok(v),
            Err(e) if fresh => return Err(e),
            Ok(_) | Err(_) => {
                fresh = true;
                continue;
            }
        };
        match api.store.txn(ops).await {
            Ok(kvs) => {
                set_rv(&mut new, kvs[0].mod_revision);
                return Ok(new);
            }
            Err(StoreError::Conflict { .. }) if want_rv.is_none() || !fresh => {}
            Err(StoreError::Conflict { .. }) => return Err(ApiError::conflict(&gr, name)),
            Err(StoreError::NotFound(_)) if !fresh => {}
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&gr, name)),
            Err(e) if is_alloc_conflict(t.res, &e) => {}
            Err(e) => return Err(e.into()),
        }
        fresh = true;
    }
    Err(ApiError::conflict(&gr, name))
}

/// What one attempt of [`update`] makes of the object it read, before writing.
enum Step {
    /// Nothing changes: the object as it is.
    Unchanged(Value),
    /// A dry run's answer.
    DryRun(Value),
    /// The new object and the txn that writes it; `want_rv` is the client's precondition.
    Write {
        new: Value,
        ops: Vec<Op>,
        want_rv: Option<String>,
    },
}

/// The request one [`update`] serves.
struct Attempt<'a> {
    api: &'a Api,
    req: &'a Req,
    t: &'a Target,
    sub: Option<&'a str>,
    bound_to: Option<&'a str>,
    writer: Option<&'a managed::Writer>,
}

impl Attempt<'_> {
    /// The edit applied to `kv` (the object at `key`), checked, as the write to make.
    async fn prepare(
        &self,
        key: &str,
        kv: &kproxy_store::KeyValue,
        edit: &(dyn Fn(&Value) -> ApiResult<Value> + Sync),
    ) -> ApiResult<Step> {
        let Attempt {
            api,
            req,
            t,
            sub,
            bound_to,
            writer,
        } = *self;
        let name = t.name.as_deref().unwrap_or_default();
        let gr = t.res.group_resource();
        let cur = from_kv(kv)?;
        if let Some(node) = bound_to
            && object::field_value(&cur, "spec.nodeName") != *node
        {
            return Err(ApiError::forbidden(
                &req.id.user(),
                "update",
                &gr,
                t.ns.as_deref(),
            ));
        }
        let mut cand = edit(&cur)?;
        check_type(t.res, &mut cand)?;
        strict_fields(req, t.res, &cand)?;
        kproxy_api::strict::prune_unknown(t.res.kind, &mut cand);
        if let Some(n) = object::name(&cand)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(ns), Some(ons)) = (t.ns.as_deref(), object::namespace(&cand))
            && ns != ons
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let want_rv = str_at(&cand, &["metadata", "resourceVersion"])
            .filter(|s| !s.is_empty())
            .map(String::from);
        if let Some(rv) = &want_rv
            && *rv != kv.mod_revision.to_string()
        {
            return Err(ApiError::conflict(&gr, name));
        }
        let mut new = merge_update(t.res, sub, &cur, cand);
        let sent_managed = meta_mut(&mut new).remove("managedFields");
        if let Some(prepare) = t.res.hooks.prepare_update {
            prepare(&cur, &mut new);
        }
        kproxy_api::defaults::apply_defaults(t.res.kind, &mut new);
        admit(req, t, &new, Some(&cur))?;
        kproxy_api::validate::validate(t.res.kind, &new, Some(&cur))
            .map_err(|e| invalid(t.res, name, e))?;
        if t.res.has_spec && new["spec"] != cur["spec"] {
            let g = meta(&cur)["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(g));
        }
        match writer {
            Some(w) => managed::on_update(t.res, sub, w, &cur, sent_managed, &mut new)?,
            None => managed::keep(&cur, &mut new),
        }
        if without_rv(&new) == without_rv(&cur) {
            // Kubernetes does not write no-op updates; the resourceVersion stays.
            return Ok(Step::Unchanged(cur));
        }
        let mut ops = Vec::new();
        if object::is_deleting(&new)
            && object::finalizers(&new).is_empty()
            && t.res.hooks.last_finalizer_deletes
        {
            // The last finalizer is gone: the pending delete completes now.
            ops.push(Op::Delete {
                key: key.to_owned(),
                expected: Some(kv.mod_revision),
            });
            if let Some(alloc) = t.res.hooks.allocator {
                ops.extend((alloc.release)(&cur));
            }
        } else {
            ops = allocate(api, t.res, name, &mut new, Some(&cur), key).await?;
            ops.insert(
                0,
                Op::Update {
                    key: key.to_owned(),
                    value: to_stored(&new),
                    expected: Some(kv.mod_revision),
                },
            );
        }
        if req.dry_run() {
            return Ok(Step::DryRun(new));
        }
        Ok(Step::Write { new, ops, want_rv })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_metadata_are_kept_on_update() {
        let pods = crate::registry::lookup("", "v1", "pods").unwrap();
        let cur = json!({"metadata": {"name": "a", "uid": "u", "generation": 2}, "spec": {"x": 1}, "status": {"phase": "Running"}});
        let cand = json!({"metadata": {"name": "a", "uid": "evil", "labels": {"a": "b"}}, "spec": {"x": 2}, "status": {"phase": "Failed"}});
        let new = merge_update(pods, None, &cur, cand.clone());
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(new["status"]["phase"], "Running");
        let st = merge_update(pods, Some("status"), &cur, cand);
        assert_eq!(st["status"]["phase"], "Failed");
        assert_eq!(st["spec"]["x"], 1);
        assert!(st["metadata"]["labels"].is_null());
    }
}
