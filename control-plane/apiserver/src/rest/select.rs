//! Label and field selectors of list, watch and deletecollection requests.

use kproxy_apimachinery::selector::{FieldSelector, LabelSelector};
use serde_json::{Value, json};

use crate::context::{Api, Req, Target};
use crate::object::{self, from_kv};
use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

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
pub async fn select(api: &Api, req: &Req, t: &Target) -> ApiResult<(Vec<Value>, u64)> {
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

/// A List of `items` read at `rev`.
pub fn list_doc(res: &Resource, items: &[Value], rev: u64) -> Value {
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rev.to_string()},
        "items": items,
    })
}
