//! Watch streams: newline-delimited JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR),
//! resumed from a resourceVersion out of the store's bounded history.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kproxy_store::{EventKind, StoreError};
use serde_json::{Value, json};

use super::select::{matches, selectors};
use crate::context::{Api, Req, Target};
use crate::object::{from_kv, set_rv};
use crate::status::{ApiError, ApiResult};

/// How often a watch that asked for bookmarks gets one (Kubernetes: about a minute; shorter
/// keeps resuming clients close to the head of history).
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

fn line(kind: &str, object: &Value) -> bytes::Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialisable");
    v.push(b'\n');
    bytes::Bytes::from(v)
}

/// `{"type":KIND,"object":OBJ}\n` around already-encoded object bytes.
fn raw_line(kind: &str, object: &[u8]) -> bytes::Bytes {
    let mut v = Vec::with_capacity(object.len() + 32);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(kind.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    v.extend_from_slice(object);
    v.extend_from_slice(b"}\n");
    bytes::Bytes::from(v)
}

/// Holds the open-watchers gauge up for as long as the stream lives.
struct Registered(prometheus_client::metrics::gauge::Gauge);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub async fn serve(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
    let (ls, fs) = selectors(req, t.res)?;
    let prefix = t.res.ns_prefix(t.ns.as_deref());
    let bookmarks = req.flag("allowWatchBookmarks");
    let timeout = req
        .q("timeoutSeconds")
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))
        })
        .transpose()?
        .map(Duration::from_secs);
    let table = req.wants_table();
    let unfiltered = !table && ls.is_empty() && fs.is_empty();
    let include = req.q("includeObject").map(String::from);
    let res = t.res;
    let kind = res.kind;
    let api_version = res.api_version();

    // No resourceVersion (or "0"): the current state as ADDED events first, then changes.
    let mut initial = Vec::new();
    let start = match req.q("resourceVersion") {
        None | Some("0") => {
            let (kvs, rev) = api.store.list(&prefix).await?;
            for kv in &kvs {
                let o = from_kv(kv)?;
                if matches(&o, &ls, &fs) {
                    initial.push(o);
                }
            }
            rev
        }
        Some(rv) => rv
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    let render = move |o: &Value| -> Value {
        if table {
            crate::table::table(res, std::slice::from_ref(o), None, include.as_deref())
        } else {
            o.clone()
        }
    };
    let watch = match api.store.watch(&prefix, start) {
        Ok(w) => Some(w),
        // Too old: Kubernetes answers 200 and an ERROR event carrying a 410 Status.
        Err(e @ StoreError::Compacted { .. }) => {
            let status = ApiError::from(e).to_status();
            let _ = tx.send(Ok(line("ERROR", &status))).await;
            None
        }
        Err(e) => return Err(e.into()),
    };
    let gauge = api.metrics.watchers.clone();
    gauge.inc();
    let guard = Registered(gauge);
    tokio::spawn(async move {
        let _guard = guard;
        let Some(mut watch) = watch else { return };
        for o in &initial {
            if tx.send(Ok(line("ADDED", &render(o)))).await.is_err() {
                return;
            }
        }
        drop(initial);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut last_rev = start;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            let ev = tokio::select! {
                ev = watch.next() => ev,
                _ = tick.tick(), if bookmarks => {
                    let b = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rev.to_string()}});
                    if tx.send(Ok(line("BOOKMARK", &b))).await.is_err() { return; }
                    continue;
                }
                () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                () = tx.closed() => return,
            };
            let ev = match ev {
                None => return,
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    // Fell behind the history: tell the client to re-list.
                    let status = ApiError::gone(format!("watch fell behind: {e}")).to_status();
                    let _ = tx.send(Ok(line("ERROR", &status))).await;
                    return;
                }
            };
            last_rev = ev.kv.mod_revision;
            if unfiltered {
                // Every event goes out as stored, resourceVersion spliced in: no parse.
                let kind = match (ev.kind, &ev.prev) {
                    (EventKind::Delete, _) => "DELETED",
                    (EventKind::Put, None) => "ADDED",
                    (EventKind::Put, Some(_)) => "MODIFIED",
                };
                let Ok(obj) = crate::object::with_rv(&ev.kv) else {
                    continue;
                };
                if tx.send(Ok(raw_line(kind, &obj))).await.is_err() {
                    return;
                }
                continue;
            }
            let (Ok(mut obj), prev) = (
                from_kv(&ev.kv),
                ev.prev.as_ref().and_then(|p| from_kv(p).ok()),
            ) else {
                continue;
            };
            set_rv(&mut obj, ev.kv.mod_revision);
            let now_in = matches(&obj, &ls, &fs);
            let was_in = prev.as_ref().is_some_and(|p| matches(p, &ls, &fs));
            // A change that moves an object in or out of the selection is an ADDED or DELETED
            // for this watcher, as in Kubernetes.
            let kind = match ev.kind {
                EventKind::Delete if was_in || now_in => "DELETED",
                EventKind::Delete => continue,
                EventKind::Put => match (was_in, now_in) {
                    (_, true) if prev.is_none() => "ADDED",
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => continue,
                },
            };
            if tx.send(Ok(line(kind, &render(&obj)))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response())
}
