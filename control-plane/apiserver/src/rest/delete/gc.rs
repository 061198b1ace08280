//! Garbage collection the API server does itself: dependents of a deleted owner (by
//! ownerReferences uid, per propagationPolicy) and the contents of a terminating namespace.
//! Kubernetes runs these as controllers; here they are small tasks next to the delete.

use std::sync::Arc;

use kproxy_store::KeyValue;
use serde_json::Value;

use super::{DeleteOptions, delete};
use crate::context::Api;
use crate::object::{self, from_kv};
use crate::registry::{RESOURCES, Resource};
use crate::status::{ApiError, ApiResult};

/// Objects (same namespace) that name `uid` among their owners.
async fn dependents(
    api: &Api,
    ns: Option<&str>,
    uid: &str,
) -> ApiResult<Vec<(&'static Resource, KeyValue, Value)>> {
    let mut out = Vec::new();
    if uid.is_empty() {
        return Ok(out);
    }
    for res in RESOURCES.iter().filter(|r| r.namespaced == ns.is_some()) {
        let (kvs, _) = api.store.list(&res.ns_prefix(ns)).await?;
        for kv in kvs {
            let o = from_kv(&kv)?;
            let owned = o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
            if owned {
                out.push((res, kv, o));
            }
        }
    }
    Ok(out)
}

/// Deletes the dependents of `uid` (and theirs, each in the foreground). `chain` holds the
/// uids being deleted in the foreground down to `uid` itself: those are not deleted again
/// (an object that owns itself, an owner cycle), as Kubernetes' collector deletes an object
/// whose owners are all waiting for their dependents.
pub async fn delete_dependents(
    api: &Api,
    ns: Option<&str>,
    uid: &str,
    chain: &[String],
) -> ApiResult<()> {
    let opts = DeleteOptions {
        propagation: Some("Foreground".into()),
        deleting: chain.to_vec(),
        ..Default::default()
    };
    for (res, kv, dep) in dependents(api, ns, uid).await? {
        if object::uid(&dep).is_some_and(|u| chain.iter().any(|c| c == u)) {
            continue;
        }
        match Box::pin(delete(api, res, &kv.key, &opts, None)).await {
            Ok(_) => {}
            Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`delete_dependents`] on a task of its own.
pub fn spawn_delete_dependents(api: &Api, ns: Option<String>, uid: String, chain: Vec<String>) {
    let Some(api) = api.me.upgrade() else { return };
    tokio::spawn(async move {
        if let Err(e) = delete_dependents(&api, ns.as_deref(), &uid, &chain).await {
            tracing::warn!(uid, error = e.message, "deleting dependents");
        }
    });
}

/// After `obj` (just created at `key`) names owners: deletes it when none of them exists any
/// more, as Kubernetes' garbage collector does with dependents whose owners are gone. This
/// closes the race of a controller acting on a stale cache, which creates a child of an
/// owner deleted a moment before: either the dependents sweep that follows the owner's
/// deletion (`delete`, Background and Foreground) finds the child (it was stored
/// first), or this check finds the owner gone.
pub fn spawn_collect_if_orphaned(api: &Api, res: &'static Resource, key: &str, obj: &Value) {
    let Some(refs) = obj["metadata"]["ownerReferences"].as_array() else {
        return;
    };
    if refs.is_empty() {
        return;
    }
    let owners: Vec<Owner> = refs
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            Owner {
                kind: s("kind"),
                name: s("name"),
                uid: s("uid"),
            }
        })
        .collect();
    let ns = object::namespace(obj).map(String::from);
    let (key, uid) = (
        key.to_string(),
        object::uid(obj).unwrap_or_default().to_string(),
    );
    let Some(api) = api.me.upgrade() else { return };
    tokio::spawn(async move {
        match any_owner_exists(&api, ns.as_deref(), &owners).await {
            Ok(true) => {}
            Ok(false) => {
                let opts = DeleteOptions {
                    uid: Some(uid),
                    ..Default::default()
                };
                tracing::info!(key, "deleting a new object whose owners are gone");
                if let Err(e) = delete(&api, res, &key, &opts, None).await
                    && e.code != axum::http::StatusCode::NOT_FOUND
                {
                    tracing::warn!(key, error = e.message, "collecting an orphan");
                }
            }
            Err(e) => tracing::warn!(key, error = e.message, "checking owners"),
        }
    });
}

/// An ownerReference, as far as finding its object goes.
struct Owner {
    kind: String,
    name: String,
    uid: String,
}

/// Whether any of `owners` exists in `ns` (or cluster-wide for cluster-scoped kinds): an
/// object of the kind with the uid. Unknown kinds count as existing: this server cannot judge
/// them. An owner is looked up by its name first, so the usual check (the owner is there) is
/// one read per reference; only when no owner is found that way are the kinds' objects
/// searched by uid (for a reference whose name is not its owner's).
async fn any_owner_exists(api: &Api, ns: Option<&str>, owners: &[Owner]) -> ApiResult<bool> {
    let mut known = Vec::with_capacity(owners.len());
    for o in owners {
        let Some(res) = crate::registry::by_kind(&o.kind) else {
            return Ok(true);
        };
        let scope = if res.namespaced { ns } else { None };
        if let Some(kv) = api.store.get(&res.key(scope, &o.name)).await?
            && object::uid(&from_kv(&kv)?) == Some(o.uid.as_str())
        {
            return Ok(true);
        }
        known.push((res, scope, o.uid.as_str()));
    }
    for (res, scope, uid) in known {
        let (kvs, _) = api.store.list(&res.ns_prefix(scope)).await?;
        for kv in kvs {
            if object::uid(&from_kv(&kv)?) == Some(uid) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Removes the owner reference to `uid` from its dependents (propagationPolicy=Orphan).
pub async fn orphan(api: &Api, ns: Option<&str>, uid: &str) -> ApiResult<()> {
    for (_, kv, mut new) in dependents(api, ns, uid).await? {
        if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"] != uid);
        }
        // A concurrent writer wins; its write keeps the reference, which the next orphaning fixes.
        let _ = api
            .store
            .txn(vec![kproxy_store::Op::Update {
                key: kv.key,
                value: object::to_stored(&new),
                expected: Some(kv.mod_revision),
            }])
            .await;
    }
    Ok(())
}

/// Deletes everything in a terminating namespace, then the namespace itself.
pub fn spawn_namespace_cleanup(api: &Api, ns: String) {
    let Some(api) = api.me.upgrade() else { return };
    tokio::spawn(async move {
        if let Err(e) = namespace_cleanup(&api, &ns).await {
            tracing::warn!(namespace = ns, error = e.message, "namespace cleanup");
        }
    });
}

async fn namespace_cleanup(api: &Arc<Api>, ns: &str) -> ApiResult<()> {
    let opts = DeleteOptions {
        grace: Some(0),
        propagation: Some("Background".into()),
        ..Default::default()
    };
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let (kvs, _) = api.store.list(&res.ns_prefix(Some(ns))).await?;
        for kv in kvs {
            match delete(api, res, &kv.key, &opts, None).await {
                Ok(_) => {}
                Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
    }
    let ns_res = crate::registry::by_kind("Namespace").expect("registered");
    let key = ns_res.key(None, ns);
    if let Some(kv) = api.store.get(&key).await? {
        api.store
            .txn(vec![kproxy_store::Op::Delete {
                key,
                expected: Some(kv.mod_revision),
            }])
            .await
            .map_err(ApiError::from)?;
    }
    Ok(())
}
