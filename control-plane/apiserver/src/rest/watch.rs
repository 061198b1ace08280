//! Watch streams: newline-delimited JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR),
//! resumed from a resourceVersion out of the store's bounded history. A watch without one
//! starts with the current state, read from the store's snapshot a page at a time as the
//! client takes it, so a slow or stalled client never holds the whole collection.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kproxy_apimachinery::selector::{FieldSelector, LabelSelector};
use kproxy_store::{EventKind, KeyValue, Page, Store, StoreError, Watch};
use serde_json::{Value, json};

use super::select::{matches, selectors};
use crate::context::{Api, Req, Target};
use crate::object::{from_kv, set_rv};
use crate::registry::Resource;
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

/// Most objects read from the store at once for a watch's initial events. A watcher holds at
/// most this page (unparsed), however large the collection and however slowly its client reads.
const INITIAL_PAGE: usize = 100;

/// Largest `timeoutSeconds` accepted (about 68 years): a larger one is a client's mistake, and
/// one past the clock's range would overflow the deadline.
const MAX_TIMEOUT_SECONDS: u64 = i32::MAX as u64;

/// What a watch stream sends and how: its selection and rendering.
struct Stream {
    prefix: String,
    ls: LabelSelector,
    fs: FieldSelector,
    /// Server-side printing (Tables), and its `includeObject`.
    table: bool,
    include: Option<String>,
    res: &'static Resource,
    bookmarks: bool,
}

impl Stream {
    /// No selector and no Table: objects go out as stored, never parsed.
    fn raw(&self) -> bool {
        !self.table && self.ls.is_empty() && self.fs.is_empty()
    }

    fn render(&self, o: &Value) -> Value {
        if self.table {
            crate::table::table(
                self.res,
                std::slice::from_ref(o),
                None,
                self.include.as_deref(),
            )
        } else {
            o.clone()
        }
    }

    /// The ADDED line of an object of the initial state, if it is selected.
    fn initial_line(&self, kv: &KeyValue) -> Option<bytes::Bytes> {
        if self.raw() {
            return crate::object::with_rv(kv)
                .ok()
                .map(|obj| raw_line("ADDED", &obj));
        }
        let obj = from_kv(kv).ok()?;
        matches(&obj, &self.ls, &self.fs).then(|| line("ADDED", &self.render(&obj)))
    }

    /// The line of a change, if the watcher sees it.
    fn event_line(&self, ev: &kproxy_store::Event) -> Option<bytes::Bytes> {
        if self.raw() {
            // Every event goes out as stored, resourceVersion spliced in: no parse.
            let kind = match (ev.kind, &ev.prev) {
                (EventKind::Delete, _) => "DELETED",
                (EventKind::Put, None) => "ADDED",
                (EventKind::Put, Some(_)) => "MODIFIED",
            };
            let obj = crate::object::with_rv(&ev.kv).ok()?;
            return Some(raw_line(kind, &obj));
        }
        let mut obj = from_kv(&ev.kv).ok()?;
        let prev = ev.prev.as_ref().and_then(|p| from_kv(p).ok());
        set_rv(&mut obj, ev.kv.mod_revision);
        let now_in = matches(&obj, &self.ls, &self.fs);
        let was_in = prev
            .as_ref()
            .is_some_and(|p| matches(p, &self.ls, &self.fs));
        // A change that moves an object in or out of the selection is an ADDED or DELETED for
        // this watcher, as in Kubernetes.
        let kind = match ev.kind {
            EventKind::Delete if was_in || now_in => "DELETED",
            EventKind::Delete => return None,
            EventKind::Put => match (was_in, now_in) {
                (_, true) if prev.is_none() => "ADDED",
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            },
        };
        Some(line(kind, &self.render(&obj)))
    }
}

type Tx = tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>;

/// The watch's `timeoutSeconds`, if any; 400 for one that is not a count of seconds or is
/// past [`MAX_TIMEOUT_SECONDS`].
fn timeout(req: &Req) -> ApiResult<Option<Duration>> {
    let Some(s) = req.q("timeoutSeconds") else {
        return Ok(None);
    };
    match s.parse::<u64>() {
        Ok(t) if t <= MAX_TIMEOUT_SECONDS => Ok(Some(Duration::from_secs(t))),
        _ => Err(ApiError::bad_request(format!(
            "timeoutSeconds: Invalid value: {s:?}: must be a number of seconds from 0 to \
             {MAX_TIMEOUT_SECONDS}"
        ))),
    }
}

pub async fn serve(api: &Api, req: &Req, t: &Target) -> ApiResult<Response> {
    let (ls, fs) = selectors(req, t.res)?;
    let timeout = timeout(req)?;
    // The deadline covers the whole stream, initial events included.
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let stream = Stream {
        prefix: t.res.ns_prefix(t.ns.as_deref()),
        ls,
        fs,
        table: req.wants_table(),
        include: req.q("includeObject").map(String::from),
        res: t.res,
        bookmarks: req.flag("allowWatchBookmarks"),
    };

    // No resourceVersion (or "0"): the current state as ADDED events first, then changes. The
    // first page is read now (its errors are the request's), the rest as the client reads.
    let (start, first) = match req.q("resourceVersion") {
        None | Some("0") => {
            let page = api
                .store
                .list_page(&stream.prefix, &stream.prefix, INITIAL_PAGE, 0, false)
                .await?;
            (page.revision, Some(page))
        }
        Some(rv) => {
            let rv = rv
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            (rv, None)
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    let watch = match api.store.watch(&stream.prefix, start) {
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
    let store = api.store.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let Some(watch) = watch else { return };
        let run = async {
            if let Some(first) = first
                && !send_initial(&*store, &stream, first, start, &tx).await
            {
                return;
            }
            send_changes(&stream, watch, start, &tx).await;
        };
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(d, run).await;
            }
            None => run.await,
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

/// The initial state as ADDED events, read a page at a time at the snapshot `rev` (starting
/// with `page`). False when the stream is over: the client went away, or the snapshot left the
/// history meanwhile (then an ERROR 410 tells the client to re-list).
async fn send_initial(
    store: &dyn Store,
    stream: &Stream,
    mut page: Page,
    rev: u64,
    tx: &Tx,
) -> bool {
    loop {
        for kv in &page.kvs {
            if let Some(l) = stream.initial_line(kv)
                && tx.send(Ok(l)).await.is_err()
            {
                return false;
            }
        }
        let Some(last) = page.kvs.last().filter(|_| page.more) else {
            return true;
        };
        let next = format!("{}\0", last.key);
        page = match store
            .list_page(&stream.prefix, &next, INITIAL_PAGE, rev, false)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let status = match e {
                    StoreError::Compacted { .. } => ApiError::gone(format!(
                        "the watch's initial state is gone from the history: {e}"
                    )),
                    e => ApiError::from(e),
                };
                let _ = tx.send(Ok(line("ERROR", &status.to_status()))).await;
                return false;
            }
        };
    }
}

/// Changes after `start` until the client goes away or the watch falls behind the history.
async fn send_changes(stream: &Stream, mut watch: Watch, start: u64, tx: &Tx) {
    let mut last_rev = start;
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        let ev = tokio::select! {
            ev = watch.next() => ev,
            _ = tick.tick(), if stream.bookmarks => {
                let b = json!({
                    "kind": stream.res.kind,
                    "apiVersion": stream.res.api_version(),
                    "metadata": {"resourceVersion": last_rev.to_string()},
                });
                if tx.send(Ok(line("BOOKMARK", &b))).await.is_err() {
                    return;
                }
                continue;
            }
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
        if let Some(l) = stream.event_line(&ev)
            && tx.send(Ok(l)).await.is_err()
        {
            return;
        }
    }
}
