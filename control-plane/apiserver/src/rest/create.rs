//! create: a new object from a request body (or an apply's configuration), named, defaulted,
//! validated and given its kind's initial status and allocations.

use axum::http::StatusCode;
use axum::response::Response;
use kproxy_store::{KeyValue, Op, StoreError};
use serde_json::{Value, json};

use super::delete::spawn_collect_if_orphaned;
use super::{RETRIES, admit, allocate, check_type, invalid, is_alloc_conflict, strict_fields};
use crate::context::{Api, Req, Target, json as json_resp, raw_json};
use crate::managed;
use crate::object::{self, meta_mut, set_rv, str_at, to_stored};
use crate::status::{ApiError, ApiResult};

/// Checks that namespace `ns` exists and is not terminating, and returns the op that makes the
/// create's txn assert it is still that version: so the namespace may be read from the watch
/// cache without first learning etcd's revision (one etcd read less per create) and still no
/// object lands in a namespace deleted or marked terminating meanwhile (the txn then fails and
/// the create re-checks with `fresh`, a consistent read). Only a live namespace is taken from
/// the cache; a missing or terminating one is confirmed by a consistent read.
async fn check_namespace(api: &Api, ns: &str, fresh: bool) -> ApiResult<Op> {
    let key = crate::registry::by_kind("Namespace")
        .expect("registered")
        .key(None, ns);
    let cached = if fresh {
        None
    } else {
        api.store.get_cached(&key).await?
    };
    let kv = match cached {
        Some(kv) if !object::stored_is_deleting(&kv)? => kv,
        _ => match api.store.get(&key).await? {
            None => return Err(ApiError::not_found("namespaces", ns)),
            Some(kv) if object::stored_is_deleting(&kv)? => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "unable to create new content in namespace {ns} because it is being \
                         terminated"
                    ),
                ));
            }
            Some(kv) => kv,
        },
    };
    Ok(Op::Check {
        key,
        expected: kv.mod_revision,
    })
}

/// POST: creates the object in the body; the answer is the stored bytes with their
/// resourceVersion (no second serialisation), or the object itself on a dry run.
pub async fn create(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
    let obj = object::parse_body(req.content_type(), &req.body)?;
    let w = managed::Writer::update(req, t.res, None)?;
    Ok(match create_stored(api, req, t, obj, &w).await? {
        (_, Some(kv)) => raw_json(StatusCode::CREATED, object::with_rv(&kv)?),
        (obj, None) => json_resp(StatusCode::CREATED, &obj),
    })
}

pub async fn create_object(
    api: &Api,
    req: &Req,
    t: &Target,
    obj: Value,
    w: &managed::Writer,
) -> ApiResult<Value> {
    let (mut obj, written) = create_stored(api, req, t, obj, w).await?;
    if let Some(kv) = written {
        set_rv(&mut obj, kv.mod_revision);
    }
    Ok(obj)
}

/// One attempt's object, ready to write: its key, stored bytes and its kind's allocations.
struct Built {
    obj: Value,
    key: String,
    value: bytes::Bytes,
    allocations: Vec<Op>,
}

/// Names (from `generate` when the object has no name), stamps, defaults, admits, validates
/// and allocates the object of one attempt.
async fn build(
    api: &Api,
    req: &Req,
    t: &Target,
    mut o: Value,
    w: &managed::Writer,
    generate: Option<&str>,
) -> ApiResult<Built> {
    if object::name(&o).is_none() {
        let g = generate.unwrap_or_default();
        meta_mut(&mut o).insert(
            "name".into(),
            json!(format!("{g}{}", object::random_suffix(5))),
        );
    }
    let name = object::name(&o).unwrap_or_default().to_string();
    // One clock read: the creationTimestamp and the creator's managedFields entry share it.
    let now = object::now_rfc3339();
    {
        let m = meta_mut(&mut o);
        m.insert("uid".into(), json!(object::new_uid()));
        m.insert("creationTimestamp".into(), json!(now));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            m.remove(k);
        }
        if t.res.has_spec {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if let Some(status) = t.res.hooks.initial_status {
        o["status"] = status(&o);
    }
    kproxy_api::defaults::apply_defaults(t.res.kind, &mut o);
    admit(req, t, &o, None)?;
    if let Some(admit_create) = t.res.hooks.admit_create {
        admit_create(api.store.as_ref(), &mut o).await?;
    }
    kproxy_api::validate::validate(t.res.kind, &o, None).map_err(|e| invalid(t.res, &name, e))?;
    managed::on_create(t.res, w, &mut o, &now);
    let key = t.res.key(t.ns.as_deref(), &name);
    let allocations = allocate(api, t.res, &name, &mut o, None, &key).await?;
    let value = to_stored(&o);
    Ok(Built {
        obj: o,
        key,
        value,
        allocations,
    })
}

/// The create itself: the object, and what the store wrote (None on a dry run).
async fn create_stored(
    api: &Api,
    req: &Req,
    t: &Target,
    mut obj: Value,
    w: &managed::Writer,
) -> ApiResult<(Value, Option<KeyValue>)> {
    check_type(t.res, &mut obj)?;
    strict_fields(req, t.res, &obj)?;
    kproxy_api::strict::prune_unknown(t.res.kind, &mut obj);
    if t.res.namespaced {
        let ns = t.ns.as_deref().unwrap_or("default");
        match object::namespace(&obj) {
            Some(o) if o != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta_mut(&mut obj).remove("namespace");
    }
    if str_at(&obj, &["metadata", "resourceVersion"]).is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    // A server-side apply that creates: the configuration names the object in the path.
    if let (Some(path), Some(body)) = (t.name.as_deref(), object::name(&obj))
        && path != body
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body}) does not match the name on the URL ({path})"
        )));
    }
    let generate = str_at(&obj, &["metadata", "generateName"]).map(String::from);
    if object::name(&obj).is_none() && generate.is_none() {
        let errs = vec![kproxy_api::validate::FieldError {
            field: "metadata.name".into(),
            error_type: kproxy_api::validate::ErrorType::Required,
            value: None,
            detail: "name or generateName is required".into(),
        }];
        return Err(ApiError::invalid(t.res.kind, t.res.group, "", &errs));
    }
    let ns = t.ns.as_deref().filter(|_| t.res.namespaced);
    let mut ns_check = match ns {
        Some(ns) => Some(check_namespace(api, ns, false).await?),
        None => None,
    };
    let named = object::name(&obj).is_some();
    // A retry after another generated name or address was taken starts again from the
    // request's object, so only those creates keep a copy of it; a retry after the namespace
    // changed resends the object as built. So a named object of a kind without allocations,
    // the common create, is never copied.
    let rebuild = !named || t.res.hooks.allocator.is_some();
    let mut request = Some(obj);
    let mut built: Option<Built> = None;
    for _ in 0..RETRIES {
        let b = if let Some(b) = built.take() {
            b
        } else {
            let o = if rebuild {
                request.clone()
            } else {
                request.take()
            };
            let o = o.expect("the request's object is kept while a retry may rebuild");
            let b = build(api, req, t, o, w, generate.as_deref()).await?;
            if req.dry_run() {
                return Ok((b.obj, None));
            }
            b
        };
        let mut ops = Vec::with_capacity(b.allocations.len() + 2);
        ops.push(Op::Create {
            key: b.key.clone(),
            value: b.value.clone(),
        });
        ops.extend(b.allocations.iter().cloned());
        ops.extend(ns_check.clone());
        match api.store.txn(ops).await {
            Ok(mut kvs) => {
                // The first op's result is the object as written.
                let created = kvs.swap_remove(0);
                spawn_collect_if_orphaned(api, t.res, &b.key, &b.obj);
                return Ok((b.obj, Some(created)));
            }
            Err(StoreError::AlreadyExists(k)) if k == b.key && !named => {}
            Err(StoreError::AlreadyExists(k)) if k == b.key => {
                let name = object::name(&b.obj).unwrap_or_default();
                return Err(ApiError::already_exists(&t.res.group_resource(), name));
            }
            Err(e) if is_alloc_conflict(t.res, &e) => {}
            // The namespace changed since it was checked (or the cached copy was behind).
            Err(StoreError::Conflict { key: k, .. } | StoreError::NotFound(k))
                if ns_check.as_ref().is_some_and(|c| c.key() == k) =>
            {
                let ns = ns.unwrap_or_default();
                ns_check = Some(check_namespace(api, ns, true).await?);
                built = Some(b);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "AlreadyExists",
        "could not find a free name or address after several attempts; try again",
    ))
}
