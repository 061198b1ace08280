//! list: the objects under a prefix, selected, maybe a page at a time (see `paging`), as a
//! List or a Table.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::select::{matches, selectors};
use crate::context::{Api, Req, Target, json as json_resp, raw_json};
use crate::object::{self, from_kv};
use crate::status::ApiResult;

pub async fn serve(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
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
    Ok(raw_json(StatusCode::OK, body))
}
