//! Field ownership on every write (`metadata.managedFields`) and server-side apply, over
//! kproxy-apimachinery's field sets: who the manager of a request is, what an apply's
//! configuration is, and how a create or an update records its fields.

use axum::http::{StatusCode, header};
use kproxy_apimachinery::fields::{self, Diff, FieldSet};
use kproxy_apimachinery::managed::{self, Conflicts, ManagedFields, Manager, Operation};
use serde_json::{Map, Value, json};

use crate::context::{Req, Target};
use crate::object::{self, meta, meta_mut};
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// Kubernetes' limit on fieldManager.
const MAX_MANAGER_LEN: usize = 128;

/// Who Kubernetes credits the fields of a never-applied object to on its first apply.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The manager of a write and, for an apply, its configuration.
pub struct Writer {
    pub manager: Manager,
    pub apply: Option<Applied>,
}

pub struct Applied {
    /// The configuration, checked (apiVersion, kind, name) and, for `/scale`, turned into the
    /// parent's `spec.replicas`.
    pub config: Value,
    /// What the configuration sets, within what the endpoint may own.
    pub fields: FieldSet,
    pub force: bool,
}

fn invalid_option(kind: &str, field: &str, detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {detail}"),
    )
}

/// `?fieldManager=`, else the User-Agent up to its first '/' (Kubernetes' default).
fn manager_name(req: &Req, options: &str) -> ApiResult<Option<String>> {
    if let Some(m) = req.q("fieldManager") {
        if m.len() > MAX_MANAGER_LEN {
            return Err(invalid_option(
                options,
                "fieldManager",
                &format!("Too long: may not be more than {MAX_MANAGER_LEN} bytes"),
            ));
        }
        if m.chars().any(char::is_control) {
            return Err(invalid_option(
                options,
                "fieldManager",
                &format!("Invalid value: {m:?}: must only contain printable characters"),
            ));
        }
        return Ok(Some(m.to_string()));
    }
    let ua = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let name: String = ua
        .split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_MANAGER_LEN)
        .collect();
    Ok((!name.is_empty()).then_some(name))
}

/// Which part of an object an endpoint's writers can own: status through `/status` only,
/// everything else through the object (for kinds with a status subresource).
fn in_scope(res: &Resource, rules: Option<&str>, top: &str) -> bool {
    if rules == Some("status") {
        top == "f:status"
    } else {
        !res.sub.status || top != "f:status"
    }
}

fn scope(res: &Resource, rules: Option<&str>, mut set: FieldSet) -> FieldSet {
    set.retain_top(|k| in_scope(res, rules, k));
    set
}

fn scoped_diff(res: &Resource, rules: Option<&str>, d: Diff) -> Diff {
    Diff {
        changed: scope(res, rules, d.changed),
        removed: scope(res, rules, d.removed),
    }
}

impl Writer {
    /// Create, update, non-apply patch: an `Update` entry. `sub` is the request's subresource.
    pub fn update(req: &Req, res: &Resource, sub: Option<&str>) -> ApiResult<Writer> {
        let options = match req.method.as_str() {
            "POST" => "CreateOptions",
            "PATCH" => "PatchOptions",
            _ => "UpdateOptions",
        };
        let name = manager_name(req, options)?.unwrap_or_default();
        Ok(Writer {
            manager: Manager {
                name,
                operation: Operation::Update,
                api_version: res.api_version(),
                subresource: sub.unwrap_or_default().to_string(),
            },
            apply: None,
        })
    }

    /// PATCH with application/apply-patch+yaml: checks the configuration (YAML or JSON) and
    /// computes the fields it sets.
    pub fn apply(req: &Req, t: &Target) -> ApiResult<Writer> {
        if req.q("fieldManager").is_none() {
            return Err(invalid_option(
                "PatchOptions",
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
        let name = manager_name(req, "PatchOptions")?.unwrap_or_default();
        let mut config = object::parse_body(req.content_type(), &req.body)?;
        let url_name = t.name.as_deref().unwrap_or_default();
        let (want_av, want_kind) = if t.sub.as_deref() == Some("scale") {
            ("autoscaling/v1".to_string(), "Scale")
        } else {
            (t.res.api_version(), t.res.kind)
        };
        match config["apiVersion"].as_str() {
            Some(av) if av == want_av => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "Incorrect version specified in apply patch. Specified patch version: {}, expected: {want_av}",
                    other.unwrap_or_default()
                )));
            }
        }
        match config["kind"].as_str() {
            Some(k) if k == want_kind => {}
            None | Some("") => {
                return Err(ApiError::bad_request(
                    "Object 'Kind' is missing in the apply patch",
                ));
            }
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({want_kind})"
                )));
            }
        }
        match object::name(&config) {
            None => {
                meta_mut(&mut config).insert("name".into(), json!(url_name));
            }
            Some(n) if n != url_name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )));
            }
            Some(_) => {}
        }
        if meta(&config)
            .get("managedFields")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let rules = match t.sub.as_deref() {
            Some("scale") => {
                // Scale's spec.replicas is the parent's; the entry says "scale".
                let mut parent = json!({
                    "apiVersion": t.res.api_version(),
                    "kind": t.res.kind,
                    "metadata": {"name": url_name},
                });
                if let Some(r) = config["spec"].get("replicas") {
                    parent["spec"] = json!({"replicas": r});
                }
                if let Some(rv) = meta(&config).get("resourceVersion") {
                    meta_mut(&mut parent).insert("resourceVersion".into(), rv.clone());
                }
                config = parent;
                None
            }
            sub => sub,
        };
        let fields = scope(t.res, rules, fields::applied_set(t.res.kind, &config));
        Ok(Writer {
            manager: Manager {
                name,
                operation: Operation::Apply,
                api_version: t.res.api_version(),
                subresource: t.sub.clone().unwrap_or_default(),
            },
            apply: Some(Applied {
                config,
                fields,
                force: req.flag("force"),
            }),
        })
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn set_managed(obj: &mut Value, mf: &ManagedFields) {
    match mf.encode() {
        Some(v) => meta_mut(obj).insert("managedFields".into(), v),
        None => meta_mut(obj).remove("managedFields"),
    };
}

/// The stored entries (unreadable ones are reset, as Kubernetes does).
fn live_entries(cur: &Value) -> ManagedFields {
    ManagedFields::decode(meta(cur).get("managedFields")).unwrap_or_else(|e| {
        tracing::warn!(error = %e, name = object::name(cur), "resetting unreadable managedFields");
        ManagedFields::default()
    })
}

/// The entries an apply starts from: the stored ones, or for an object nobody has managed yet
/// everything it has credited to `before-first-apply`, so an apply cannot silently take over
/// fields set before field management existed.
fn entries_for_apply(res: &Resource, cur: &Value) -> ManagedFields {
    let mut mf = live_entries(cur);
    if mf.is_empty() {
        let d = scoped_diff(res, None, fields::diff(res.kind, &empty_object(), cur));
        let m = Manager {
            name: BEFORE_FIRST_APPLY.into(),
            operation: Operation::Update,
            api_version: res.api_version(),
            subresource: String::new(),
        };
        mf.update(&m, &d, &object::now_rfc3339());
    }
    mf
}

/// Apply's edit of the current object: the configuration merged in, and the fields the
/// applier set last time but no longer does removed unless someone else owns them.
pub fn apply_edit(res: &Resource, w: &Writer, cur: &Value) -> ApiResult<Value> {
    let a = w.apply.as_ref().expect("apply_edit needs an apply writer");
    let mut base = cur.clone();
    meta_mut(&mut base).remove("resourceVersion");
    let mut merged = fields::merge(res.kind, &base, &a.config);
    let mf = entries_for_apply(res, cur);
    if let Some(last) = mf.fields_of(&w.manager) {
        let dropped = last.difference(&a.fields);
        if !dropped.is_empty() {
            let mut keep = mf.owned_by_others(&w.manager);
            keep.union_with(&a.fields);
            fields::prune(res.kind, &mut merged, &dropped, &keep);
        }
    }
    Ok(merged)
}

/// A new object's entries: client-sent ones when readable, plus the creator's, at `now` (the
/// create's time, its creationTimestamp).
pub fn on_create(res: &Resource, w: &Writer, obj: &mut Value, now: &str) {
    let sent = meta_mut(obj).remove("managedFields");
    if w.apply.is_none() && sent.is_none() {
        // The common create: one entry, its fieldsV1 built straight from the object.
        let created = fields::created_fields_v1(res.kind, obj, |k| in_scope(res, None, k));
        if let Some(f) = created {
            let e = managed::encode_entry(&w.manager, Some(now), f);
            // Not `json!([e])`: that copies the entry through serde's Value serializer.
            meta_mut(obj).insert("managedFields".into(), Value::Array(vec![e]));
        }
        return;
    }
    let mut mf = ManagedFields::decode(sent.as_ref()).unwrap_or_default();
    match &w.apply {
        None => {
            let d = scoped_diff(res, None, fields::diff(res.kind, &empty_object(), obj));
            mf.update(&w.manager, &d, now);
        }
        Some(a) => {
            // Nothing to conflict with: the object is new.
            let _ = mf.apply(&w.manager, a.fields.clone(), &Diff::default(), true, now);
        }
    }
    set_managed(obj, &mf);
}

/// Records an update of `cur` into `new` (whose managedFields, as the client left them, are
/// `sent`). Client-sent entries are honoured when they differ from the stored ones and can
/// be read; unreadable ones (such as `[{}]`) reset them; absent or `[]` keeps the stored ones,
/// as in Kubernetes. `rules` is the subresource whose update rules apply (`None` for scale).
///
/// # Errors
/// 409 with the conflicting managers and fields when an apply without force changes fields
/// others own.
pub fn on_update(
    res: &Resource,
    rules: Option<&str>,
    w: &Writer,
    cur: &Value,
    sent: Option<Value>,
    new: &mut Value,
) -> ApiResult<()> {
    let live = meta(cur).get("managedFields");
    let reset_or_sent = match &sent {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(s) if Some(s) == live => None,
        Some(s) => Some(ManagedFields::decode(Some(s)).unwrap_or_default()),
    };
    let d = scoped_diff(res, rules, fields::diff(res.kind, cur, new));
    let now = object::now_rfc3339();
    let mf = match &w.apply {
        None => {
            let Some(mut mf) = reset_or_sent else {
                // The usual update: the stored entries, edited in place (only those the
                // write touches are decoded); `sent` is usually an owned copy of them.
                let mut items = match (sent, live) {
                    (Some(Value::Array(a)), _) if !a.is_empty() => a,
                    (_, Some(Value::Array(l))) => l.clone(),
                    _ => Vec::new(),
                };
                if managed::update_encoded(&mut items, &w.manager, &d, &now).is_ok() {
                    if !items.is_empty() {
                        meta_mut(new).insert("managedFields".into(), Value::Array(items));
                    }
                    return Ok(());
                }
                let mut mf = live_entries(cur);
                mf.update(&w.manager, &d, &now);
                set_managed(new, &mf);
                return Ok(());
            };
            mf.update(&w.manager, &d, &now);
            mf
        }
        Some(a) => {
            let mut mf = entries_for_apply(res, cur);
            mf.apply(&w.manager, a.fields.clone(), &d, a.force, &now)
                .map_err(|c| conflict_error(&c))?;
            mf
        }
    };
    set_managed(new, &mf);
    Ok(())
}

/// Writes that do not track fields (binding) keep the stored entries.
pub fn keep(cur: &Value, new: &mut Value) {
    match meta(cur).get("managedFields") {
        Some(l) => meta_mut(new).insert("managedFields".into(), l.clone()),
        None => meta_mut(new).remove("managedFields"),
    };
}

/// 409 as Kubernetes words it, with one FieldManagerConflict cause per field.
fn conflict_error(c: &Conflicts) -> ApiError {
    let causes: Vec<Value> =
        c.0.iter()
            .map(|x| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", x.manager.describe()),
                    "field": x.field,
                })
            })
            .collect();
    let mut e = ApiError::new(StatusCode::CONFLICT, "Conflict", c.message());
    e.details = Some(json!({"causes": causes}));
    e
}
