//! The verbs: get, list, create, update, patch, delete (and the status, scale and binding
//! subresources), identical for every resource in the registry.

use axum::http::StatusCode;
use axum::response::Response;
use kproxy_api::validate::Invalid;
use kproxy_apimachinery::patch::{self, PatchType};
use kproxy_apimachinery::selector::{FieldSelector, LabelSelector};
use kproxy_store::{Op, StoreError};
use serde_json::{Value, json};

use crate::handler::{Api, Req, Target, json as json_resp};
use crate::managed;
use crate::object::{self, from_kv, meta, meta_mut, set_rv, str_at, to_stored};
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult, success};

/// Attempts for writes that lose a race they can safely retry (no explicit resourceVersion,
/// or a randomly picked address taken meanwhile).
const RETRIES: usize = 8;

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
        ("list", None) => list(api, req, t).await,
        ("watch", None) => crate::watch::serve(api, req, t).await,
        ("get", None | Some("status")) if !req.wants_table() => {
            // The hot path: stored bytes with the resourceVersion spliced in, no parse.
            Ok(raw_json(object::with_rv(&get_kv(api, t).await?)?))
        }
        ("get", None | Some("status")) => {
            let obj = get(api, t).await?;
            if req.wants_table() {
                let rev = object::field_value(&obj, "metadata.resourceVersion")
                    .parse()
                    .ok();
                return Ok(ok(&crate::table::table(
                    t.res,
                    &[obj],
                    rev,
                    req.q("includeObject"),
                )));
            }
            Ok(ok(&obj))
        }
        ("get", Some("scale")) => Ok(ok(&scale_of(&get(api, t).await?)?)),
        ("create", None) => {
            let obj = create(api, req, t).await?;
            Ok(json_resp(StatusCode::CREATED, &obj))
        }
        ("create", Some("binding")) => bind(api, req, t).await,
        ("update" | "patch", sub) => {
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
                        scale_of(&obj)?
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
                return Ok(ok(&scale_of(&obj)?));
            }
            let obj = update(api, req, t, sub, bound_to, Some(&w), &|cur| {
                body.apply(t.res.kind, cur)
            })
            .await?;
            Ok(ok(&obj))
        }
        ("delete", None) => {
            let opts = DeleteOptions::from_req(req)?;
            let key = t
                .res
                .key(t.ns.as_deref(), t.name.as_deref().unwrap_or_default());
            let obj = delete(api, t.res, &key, &opts, bound_to.as_deref()).await?;
            Ok(ok(&obj))
        }
        ("deletecollection", None) => {
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
            Ok(ok(&list_doc(t.res, deleted, api.store.revision())))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

pub fn selectors(req: &Req, res: &Resource) -> ApiResult<(LabelSelector, FieldSelector)> {
    let ls = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fs = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &res.field_allowed())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((ls, fs))
}

pub fn matches(obj: &Value, ls: &LabelSelector, fs: &FieldSelector) -> bool {
    (ls.is_empty() || ls.matches(&object::labels(obj)))
        && (fs.is_empty() || fs.matches(|f| object::field_value(obj, f)))
}

/// The objects a list request selects, and the revision of the read.
async fn select(api: &Api, req: &Req, t: &Target) -> ApiResult<(Vec<Value>, u64)> {
    let (ls, fs) = selectors(req, t.res)?;
    let (kvs, rev) = api.store.list(&t.res.ns_prefix(t.ns.as_deref())).await?;
    let mut items = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        let o = from_kv(kv)?;
        if matches(&o, &ls, &fs) {
            items.push(o);
        }
    }
    Ok((items, rev))
}

fn list_doc(res: &Resource, items: Vec<Value>, rev: u64) -> Value {
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rev.to_string()},
        "items": items,
    })
}

async fn list(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
    let (ls, fs) = selectors(req, t.res)?;
    let filtered = !(ls.is_empty() && fs.is_empty());
    let keep = |kv: &kproxy_store::KeyValue| Ok(matches(&from_kv(kv)?, &ls, &fs));
    let prefix = t.res.ns_prefix(t.ns.as_deref());
    // With a limit only one page is ever held (see `paging`); without one, the whole list.
    let (kvs, list_meta) = if let Some(paging) = crate::paging::Paging::from_req(req)? {
        let selector: Option<crate::paging::Keep<'_>> = filtered.then_some(&keep);
        let page = crate::paging::read(&*api.store, &prefix, &paging, selector).await?;
        let meta = page.list_meta();
        (page.kvs, meta)
    } else {
        let (all, rev) = api.store.list(&prefix).await?;
        let mut kvs = Vec::with_capacity(all.len());
        for kv in all {
            if !filtered || keep(&kv)? {
                kvs.push(kv);
            }
        }
        (kvs, json!({"resourceVersion": rev.to_string()}))
    };
    if req.wants_table() {
        let items = kvs.iter().map(from_kv).collect::<ApiResult<Vec<_>>>()?;
        let mut doc = crate::table::table(t.res, &items, None, req.q("includeObject"));
        doc["metadata"] = list_meta;
        return Ok(json_resp(StatusCode::OK, &doc));
    }
    // Items go out as stored (resourceVersion spliced in); objects are parsed only to
    // evaluate selectors.
    let mut body = serde_json::to_vec(&json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": list_meta,
    }))
    .expect("serialisable");
    body.pop(); // the closing brace: items follow
    body.extend_from_slice(b",\"items\":[");
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&object::with_rv(kv)?);
    }
    body.extend_from_slice(b"]}");
    Ok(raw_json(body))
}

fn raw_json(body: Vec<u8>) -> Response {
    use axum::response::IntoResponse as _;
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn get_kv(api: &Api, t: &Target) -> ApiResult<kproxy_store::KeyValue> {
    let name = t.name.as_deref().unwrap_or_default();
    api.store
        .get(&t.res.key(t.ns.as_deref(), name))
        .await?
        .ok_or_else(|| ApiError::not_found(&t.res.group_resource(), name))
}

async fn get(api: &Api, t: &Target) -> ApiResult<Value> {
    from_kv(&get_kv(api, t).await?)
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

/// What status a new object starts with (the status subresource owns it afterwards).
fn initial_status(res: &Resource, obj: &mut Value) {
    match res.kind {
        "Pod" => obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(obj)}),
        "Service" => obj["status"] = json!({"loadBalancer": {}}),
        "Deployment" | "ReplicaSet" => obj["status"] = json!({}),
        _ => {}
    }
}

/// The pod's QoS class as Kubernetes derives it from requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (q, l) = (&req[r], &lim[r]);
            if !q.is_null() || !l.is_null() {
                any = true;
            }
            // Requests default to limits; Guaranteed needs both resources limited and equal.
            if l.is_null() || (!q.is_null() && q != l) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

async fn check_namespace(api: &Api, ns: &str) -> ApiResult<()> {
    let key = crate::registry::by_kind("Namespace")
        .expect("registered")
        .key(None, ns);
    match api.store.get(&key).await? {
        None => Err(ApiError::not_found("namespaces", ns)),
        Some(kv) if object::is_deleting(&from_kv(&kv)?) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn is_alloc_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::AlreadyExists(k) if crate::alloc::is_alloc_key(k))
}

pub async fn create(api: &Api, req: &Req, t: &Target) -> ApiResult<Value> {
    let obj = object::parse_body(req.content_type(), &req.body)?;
    let w = managed::Writer::update(req, t.res, None)?;
    create_object(api, req, t, obj, &w).await
}

/// Server-side apply: the configuration merged into the object with field ownership and
/// conflicts, or the object created from it when there is none (and the caller may create).
/// Returns the object and whether it was created.
async fn apply(
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

async fn create_object(
    api: &Api,
    req: &Req,
    t: &Target,
    mut obj: Value,
    w: &managed::Writer,
) -> ApiResult<Value> {
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
    if let Some(ns) = t.ns.as_deref().filter(|_| t.res.namespaced) {
        check_namespace(api, ns).await?;
    }
    let named = object::name(&obj).is_some();
    for _ in 0..RETRIES {
        let mut o = obj.clone();
        if !named {
            let g = generate.as_deref().unwrap_or_default();
            meta_mut(&mut o).insert(
                "name".into(),
                json!(format!("{g}{}", object::random_suffix(5))),
            );
        }
        let name = object::name(&o).unwrap_or_default().to_string();
        {
            let m = meta_mut(&mut o);
            m.insert("uid".into(), json!(object::new_uid()));
            m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
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
        initial_status(t.res, &mut o);
        kproxy_api::defaults::apply_defaults(t.res.kind, &mut o);
        kproxy_api::validate::validate(t.res.kind, &o, None)
            .map_err(|e| invalid(t.res, &name, e))?;
        managed::on_create(t.res, w, &mut o);
        let key = t.res.key(t.ns.as_deref(), &name);
        let mut ops = Vec::new();
        if t.res.kind == "Service" {
            match api
                .ranges
                .assign(api.store.as_ref(), &mut o, None, &key)
                .await?
            {
                Ok(a) => ops = a,
                Err(errs) => return Err(ApiError::invalid(t.res.kind, t.res.group, &name, &errs)),
            }
        }
        if req.dry_run() {
            return Ok(o);
        }
        ops.insert(
            0,
            Op::Create {
                key: key.clone(),
                value: to_stored(&o),
            },
        );
        match api.store.txn(ops).await {
            Ok(kvs) => {
                set_rv(&mut o, kvs[0].mod_revision);
                crate::gc::spawn_collect_if_orphaned(api, t.res, &key, &o);
                return Ok(o);
            }
            Err(StoreError::AlreadyExists(k)) if k == key && !named => continue,
            Err(StoreError::AlreadyExists(k)) if k == key => {
                return Err(ApiError::already_exists(&t.res.group_resource(), &name));
            }
            Err(e) if is_alloc_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "AlreadyExists",
        "could not find a free name or address after several attempts; try again",
    ))
}

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
    fn apply(&self, kind: &str, cur: &Value) -> ApiResult<Value> {
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

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    meta_mut(&mut v).remove("resourceVersion");
    v
}

/// Read-modify-write with optimistic concurrency. `edit` turns the current object into the
/// candidate; a resourceVersion in the candidate is a precondition (409 when stale), without
/// one the write is retried against the newer object.
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
    for _ in 0..RETRIES {
        let kv = api
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(&gr, name))?;
        let cur = from_kv(&kv)?;
        if let Some(node) = &bound_to
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
        if t.res.kind == "Service" {
            crate::alloc::drop_type_dependent_fields(&cur, &mut new);
        }
        kproxy_api::defaults::apply_defaults(t.res.kind, &mut new);
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
            return Ok(cur);
        }
        let mut ops = Vec::new();
        if object::is_deleting(&new)
            && object::finalizers(&new).is_empty()
            && t.res.kind != "Pod"
            && t.res.kind != "Namespace"
        {
            // The last finalizer is gone: the pending delete completes now.
            ops.push(Op::Delete {
                key: key.clone(),
                expected: Some(kv.mod_revision),
            });
            if t.res.kind == "Service" {
                ops.extend(crate::alloc::release(&cur));
            }
        } else {
            if t.res.kind == "Service" {
                match api
                    .ranges
                    .assign(api.store.as_ref(), &mut new, Some(&cur), &key)
                    .await?
                {
                    Ok(a) => ops = a,
                    Err(errs) => {
                        return Err(ApiError::invalid(t.res.kind, t.res.group, name, &errs));
                    }
                }
            }
            ops.insert(
                0,
                Op::Update {
                    key: key.clone(),
                    value: to_stored(&new),
                    expected: Some(kv.mod_revision),
                },
            );
        }
        if req.dry_run() {
            return Ok(new);
        }
        match api.store.txn(ops).await {
            Ok(kvs) => {
                set_rv(&mut new, kvs[0].mod_revision);
                return Ok(new);
            }
            Err(StoreError::Conflict { .. }) if want_rv.is_none() => continue,
            Err(StoreError::Conflict { .. }) => return Err(ApiError::conflict(&gr, name)),
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&gr, name)),
            Err(e) if is_alloc_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(&gr, name))
}

/// autoscaling/v1 Scale view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> ApiResult<Value> {
    let selector = match serde_json::from_value(obj["spec"]["selector"].clone()) {
        Ok(sel) => LabelSelector::from_api(&sel)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let m = meta(obj);
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    }))
}

fn edit_scale(cur: &Value, edit: &Edit) -> ApiResult<Value> {
    let mut scale = scale_of(cur)?;
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

/// POST pods/NAME/binding: assigns the pod to a node, once.
async fn bind(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
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
        &success(json!({"name": name, "kind": "pods"})),
    ))
}

#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    fn from_req(req: &Req) -> ApiResult<Self> {
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
        // As in Kubernetes: the namespaces the cluster itself lives in stay.
        if res.kind == "Namespace" && crate::server::SYSTEM_NAMESPACES.contains(&name.as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }

        // Marking for deletion instead of deleting: graceful pods, namespaces, finalizers.
        let grace = opts.grace.unwrap_or_else(|| {
            cur["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        });
        let graceful_pod = res.kind == "Pod"
            && !object::field_value(&cur, "spec.nodeName").is_empty()
            && grace > 0;
        let mark = graceful_pod || res.kind == "Namespace" || !object::finalizers(&cur).is_empty();
        if mark {
            if object::is_deleting(&cur) {
                return Ok(cur);
            }
            let mut new = without_rv(&cur);
            let when = if graceful_pod {
                jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace)
            } else {
                jiff::Timestamp::now()
            };
            let m = meta_mut(&mut new);
            m.insert(
                "deletionTimestamp".into(),
                json!(when.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
            m.insert(
                "deletionGracePeriodSeconds".into(),
                json!(if graceful_pod { grace } else { 0 }),
            );
            if res.kind == "Namespace" {
                new["status"]["phase"] = json!("Terminating");
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
            if res.kind == "Namespace" {
                crate::gc::spawn_namespace_cleanup(api, name.clone());
            }
            return Ok(new);
        }

        match policy {
            "Orphan" => crate::gc::orphan(api, ns.as_deref(), &uid).await?,
            "Foreground" => crate::gc::delete_dependents(api, ns.as_deref(), &uid).await?,
            _ => {}
        }
        let mut ops = vec![Op::Delete {
            key: key.to_string(),
            expected: Some(kv.mod_revision),
        }];
        if res.kind == "Service" {
            ops.extend(crate::alloc::release(&cur));
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
                    crate::gc::spawn_delete_dependents(api, ns, uid);
                }
                return Ok(gone);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&gr, &name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(&gr, &name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&be), "BestEffort");
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }

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
