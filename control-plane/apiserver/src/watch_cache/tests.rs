use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use kproxy_store::StoreOptions;

use super::*;

/// A store that counts the reads reaching it, so a test can tell the cache answered.
struct Counting {
    inner: Arc<dyn Store>,
    reads: AtomicUsize,
    watches: AtomicUsize,
}

impl Counting {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.read();
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.read();
        self.inner.list(prefix).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        // The revision probe reads an empty prefix: not an object read.
        if prefix != PROBE {
            self.read();
        }
        self.inner
            .list_page(prefix, start, limit, revision, count)
            .await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.txn(ops).await
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.watches.fetch_add(1, Ordering::Relaxed);
        self.inner.watch(prefix, after)
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.inner.compact(rev).await
    }
}

async fn setup(keys: usize) -> (Arc<dyn Store>, Arc<Counting>, Arc<WatchCache>) {
    setup_with_window(keys, WINDOW).await
}

async fn setup_with_window(
    keys: usize,
    window: usize,
) -> (Arc<dyn Store>, Arc<Counting>, Arc<WatchCache>) {
    let store = kproxy_store::memory(StoreOptions::default());
    for i in 0..keys {
        store
            .create(&format!("/registry/pods/ns/p{i:04}"), Bytes::from("v0"))
            .await
            .unwrap();
    }
    let counting = Arc::new(Counting {
        inner: store.clone(),
        reads: AtomicUsize::new(0),
        watches: AtomicUsize::new(0),
    });
    let cache = WatchCache::with_window(counting.clone(), window);
    let mut rx = cache.revision.clone();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some))
        .await
        .expect("the cache syncs")
        .unwrap();
    (store, counting, cache)
}

#[tokio::test]
async fn reads_come_from_memory_and_see_every_write() {
    let (store, counting, cache) = setup(2500).await;
    let listed = counting.reads();
    assert!(listed >= 3, "the initial list is paged: {listed} reads");

    // A write through the cache, then one made by another server straight on the store:
    // each is seen by the very next read.
    cache
        .update("/registry/pods/ns/p0001", Bytes::from("v1"), None)
        .await
        .unwrap();
    let got = cache.get("/registry/pods/ns/p0001").await.unwrap().unwrap();
    assert_eq!(got.value, "v1");
    store
        .create("/registry/pods/ns/q", Bytes::from("other"))
        .await
        .unwrap();
    assert_eq!(
        cache
            .get("/registry/pods/ns/q")
            .await
            .unwrap()
            .unwrap()
            .value,
        "other"
    );
    store.delete("/registry/pods/ns/p0002", None).await.unwrap();
    assert_eq!(cache.get("/registry/pods/ns/p0002").await.unwrap(), None);

    let (all, rev) = cache.list("/registry/pods/ns/").await.unwrap();
    let (want, want_rev) = store.list("/registry/pods/ns/").await.unwrap();
    assert_eq!(all, want);
    assert_eq!(rev, want_rev);
    assert_eq!(counting.reads(), listed, "no read reached the store");
}

#[tokio::test]
async fn pages_match_the_store() {
    let (store, counting, cache) = setup(30).await;
    let listed = counting.reads();
    for (start, limit, count) in [
        ("/registry/pods/", 10, true),
        ("/registry/pods/ns/p0025", 10, true),
        ("/registry/pods/ns/p0025", 10, false),
        ("/registry/pods/ns/p0009\0", 5, false),
    ] {
        let got = cache
            .list_page("/registry/pods/", start, limit, 0, count)
            .await
            .unwrap();
        let want = store
            .list_page("/registry/pods/", start, limit, 0, count)
            .await
            .unwrap();
        assert_eq!(got, want, "{start} {limit} {count}");
    }
    assert_eq!(counting.reads(), listed);
    // A later page at the first page's revision is the store's history.
    let rev = store.revision();
    store
        .create("/registry/pods/ns/z", Bytes::from("z"))
        .await
        .unwrap();
    let old = cache
        .list_page("/registry/pods/", "/registry/pods/ns/p0029", 10, rev, false)
        .await
        .unwrap();
    assert_eq!(old.kvs.len(), 1);
    assert_eq!(counting.reads(), listed + 1);
}

#[tokio::test]
async fn a_txn_is_seen_whole() {
    let (store, _, cache) = setup(0).await;
    // Many writers at once while readers check both keys of each txn together.
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .txn(vec![
                        Op::Create {
                            key: format!("/registry/a/{i}"),
                            value: Bytes::from("x"),
                        },
                        Op::Create {
                            key: format!("/registry/b/{i}"),
                            value: Bytes::from("x"),
                        },
                    ])
                    .await
                    .unwrap();
            })
        })
        .collect();
    for _ in 0..50 {
        let (all, _) = cache.list("/registry/").await.unwrap();
        let a = all
            .iter()
            .filter(|kv| kv.key.starts_with("/registry/a/"))
            .count();
        let b = all
            .iter()
            .filter(|kv| kv.key.starts_with("/registry/b/"))
            .count();
        assert_eq!(a, b, "half a txn visible");
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(cache.list("/registry/a/").await.unwrap().0.len(), 20);
}

async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an event in time")
        .expect("the watch is open")
        .expect("not an error")
}

#[tokio::test]
async fn watches_are_served_from_the_window() {
    let (store, counting, cache) = setup_with_window(0, 4).await;
    let mut revs = Vec::new();
    for i in 0..6 {
        let kv = store
            .create(&format!("/registry/pods/ns/p{i}"), Bytes::from("v0"))
            .await
            .unwrap();
        revs.push(kv.mod_revision);
    }
    // A consistent read: the cache (and its window) has every write now.
    cache.get("/registry/pods/ns/p5").await.unwrap().unwrap();

    // Resumed inside the window: the rest, in order, then live changes with their previous
    // values rebuilt from the cache.
    let mut w = cache.watch("/registry/pods/", revs[2]).unwrap();
    for (i, rev) in revs.iter().enumerate().skip(3) {
        let ev = next(&mut w).await;
        assert_eq!(ev.kv.key, format!("/registry/pods/ns/p{i}"));
        assert_eq!(
            (ev.kind, ev.revision(), ev.prev.is_none()),
            (EventKind::Put, *rev, true)
        );
    }
    let updated = store
        .update("/registry/pods/ns/p3", Bytes::from("v1"), None)
        .await
        .unwrap();
    let ev = next(&mut w).await;
    assert_eq!(ev.kv, updated);
    assert_eq!(ev.prev.map(|p| p.value), Some(Bytes::from("v0")));
    let deleted = store.delete("/registry/pods/ns/p3", None).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!(ev.kv, deleted, "the last value at the delete's revision");

    // Older than the window (4 events: p4, p5, the update, the delete): too old.
    let err = cache.watch("/registry/pods/", revs[1]).unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    // Only the feed watches the store.
    assert_eq!(counting.watches.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_relist_ends_the_old_windows_watches() {
    let (_store, _, cache) = setup_with_window(1, 10).await;
    let mut w = cache.watch("/registry/", 0).unwrap();
    // As after a failed feed: the window goes with the old snapshot.
    let feed_window = cache
        .snapshot
        .write()
        .unwrap()
        .window
        .take()
        .expect("a window while in sync");
    drop(feed_window);
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the watch ends");
    assert!(end.is_none());
}

/// The lines of a watch answer (it ends with the watch's `timeoutSeconds`).
async fn watch_lines(app: &axum::Router, token: &str, uri: &str) -> Vec<serde_json::Value> {
    use tower::ServiceExt as _;
    let req = crate::test_api::request(token, axum::http::Method::GET, uri, "", Vec::new());
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), axum::http::StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a watch event"))
        .collect()
}

#[tokio::test]
async fn api_watches_resume_inside_the_window_and_get_410_outside() {
    use serde_json::json;

    use crate::test_api::{answer, json_body, request, test_api_on};

    const EPS: &str = "/api/v1/namespaces/default/endpoints";
    let memory = kproxy_store::memory(StoreOptions::default());
    let counting = Arc::new(Counting {
        inner: memory,
        reads: AtomicUsize::new(0),
        watches: AtomicUsize::new(0),
    });
    let window = WatchCache::with_window(counting.clone(), 5);
    // In sync (its window open) before any watch: until then watches go to the store.
    let mut synced = window.revision.clone();
    tokio::time::timeout(Duration::from_secs(30), synced.wait_for(Option::is_some))
        .await
        .expect("the cache syncs")
        .expect("the cache runs");
    let cache: Arc<dyn Store> = window;
    let t = test_api_on("watch-cache-window", cache, &[]).await;
    let (app, admin) = (crate::handler::router(t.api), t.admin.clone());
    let send = |method: axum::http::Method, uri: String, body: serde_json::Value| {
        let (app, admin) = (app.clone(), admin.clone());
        async move {
            let ct = if method == axum::http::Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            answer(&app, request(&admin, method, &uri, ct, json_body(&body))).await
        }
    };
    let mut rvs = Vec::new();
    for i in 0..8 {
        let a = send(
            axum::http::Method::POST,
            EPS.into(),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": format!("e{i}")}}),
        )
        .await;
        assert_eq!(a.code, axum::http::StatusCode::CREATED, "{}", a.body);
        rvs.push(
            a.body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // A GET waits until the cache has every write.
    let got = send(axum::http::Method::GET, format!("{EPS}/e7"), json!(null)).await;
    assert_eq!(got.code, axum::http::StatusCode::OK);

    // Inside the window (e3..e7): the events after e4, in order.
    let lines = watch_lines(
        &app,
        &admin,
        &format!("{EPS}?watch=1&resourceVersion={}&timeoutSeconds=1", rvs[4]),
    )
    .await;
    let seen: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap(),
                l["object"]["metadata"]["name"].as_str().unwrap(),
                l["object"]["metadata"]["resourceVersion"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [5, 6, 7].map(|i| ("ADDED", ["e5", "e6", "e7"][i - 5], rvs[i].as_str()))
    );

    // Older than the window: 200 and one ERROR event carrying 410 Gone, as Kubernetes.
    let lines = watch_lines(
        &app,
        &admin,
        &format!("{EPS}?watch=1&resourceVersion={}&timeoutSeconds=1", rvs[0]),
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    let message = lines[0]["object"]["message"].as_str().unwrap();
    assert!(message.contains("too old resource version"), "{message}");

    // Selectors as before: a label change moving an object in and out of the selection is an
    // ADDED and a DELETED (the previous value comes from the cache).
    for app_label in ["x", "y"] {
        let a = send(
            axum::http::Method::PATCH,
            format!("{EPS}/e6"),
            json!({"metadata": {"labels": {"app": app_label}}}),
        )
        .await;
        assert_eq!(a.code, axum::http::StatusCode::OK, "{}", a.body);
    }
    let lines = watch_lines(
        &app,
        &admin,
        &format!(
            "{EPS}?watch=1&resourceVersion={}&labelSelector=app%3Dx&timeoutSeconds=1",
            rvs[7]
        ),
    )
    .await;
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "DELETED"], "{lines:?}");

    // Without a resourceVersion: the current state, then changes, as before.
    let lines = watch_lines(&app, &admin, &format!("{EPS}?watch=1&timeoutSeconds=1")).await;
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(lines.iter().all(|l| l["type"] == "ADDED"));
    // Every API watch came from the window: the store saw only the feed's.
    assert_eq!(counting.watches.load(Ordering::Relaxed), 1);
}

/// A store whose [`Store::get_cached`] answers from copies frozen by the test (None for keys
/// never frozen), as a watch cache that has fallen behind would.
struct Lagging {
    inner: Arc<dyn Store>,
    frozen: std::sync::Mutex<std::collections::HashMap<String, KeyValue>>,
}

impl Lagging {
    async fn freeze(&self, key: &str) {
        let kv = self.inner.get(key).await.unwrap().unwrap();
        self.frozen.lock().unwrap().insert(key.to_owned(), kv);
    }
}

#[async_trait::async_trait]
impl Store for Lagging {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_cached(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.frozen.lock().unwrap().get(key).cloned())
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.inner.list(prefix).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        self.inner
            .list_page(prefix, start, limit, revision, count)
            .await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.txn(ops).await
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.inner.watch(prefix, after)
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.inner.compact(rev).await
    }
}

/// An API server on a [`Lagging`] store, asked as its admin.
struct LaggingApi {
    lagging: Arc<Lagging>,
    app: axum::Router,
    admin: String,
    _dir: crate::test_api::TempDir,
}

impl LaggingApi {
    async fn new(name: &str) -> Self {
        let lagging = Arc::new(Lagging {
            inner: kproxy_store::memory(StoreOptions::default()),
            frozen: std::sync::Mutex::default(),
        });
        let t = crate::test_api::test_api_on(name, lagging.clone(), &[]).await;
        Self {
            lagging,
            app: crate::handler::router(t.api),
            admin: t.admin,
            _dir: t.dir,
        }
    }

    async fn send(
        &self,
        method: axum::http::Method,
        uri: &str,
        ct: &str,
        body: serde_json::Value,
    ) -> crate::test_api::Answer {
        use crate::test_api::{answer, json_body, request};
        let req = request(&self.admin, method, uri, ct, json_body(&body));
        answer(&self.app, req).await
    }

    /// Creates namespace `name` and freezes the copy's view of it.
    async fn frozen_namespace(&self, name: &str) {
        let a = self
            .send(
                axum::http::Method::POST,
                "/api/v1/namespaces",
                "application/json",
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .await;
        assert_eq!(a.code, axum::http::StatusCode::CREATED, "{}", a.body);
        let key = crate::registry::by_kind("Namespace")
            .unwrap()
            .key(None, name);
        self.lagging.freeze(&key).await;
    }
}

#[tokio::test]
async fn writes_from_a_lagging_copy_answer_as_from_the_store() {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    const EPS: &str = "/api/v1/namespaces/default/endpoints";
    let api = LaggingApi::new("watch-cache-lagging").await;
    let lagging = &api.lagging;
    let send = |method: Method, uri: String, ct: &'static str, body: serde_json::Value| {
        let api = &api;
        async move { api.send(method, &uri, ct, body).await }
    };
    let merge = "application/merge-patch+json";
    // The namespace is missing from the copy: the create confirms it with a consistent read.
    let a = send(
        Method::POST,
        EPS.into(),
        "application/json",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
    let eps = crate::registry::by_kind("Endpoints").unwrap();
    let key = &eps.key(Some("default"), "e");
    lagging.freeze(key).await;
    let a = send(
        Method::PATCH,
        format!("{EPS}/e"),
        merge,
        json!({"metadata": {"labels": {"a": "1"}}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    let current = a.body["metadata"]["resourceVersion"].clone();
    let stale = {
        let frozen = lagging.frozen.lock().unwrap();
        frozen[key.as_str()].mod_revision.to_string()
    };

    // The copy is one write behind now. A patch applies to the object as it is...
    let a = send(
        Method::PATCH,
        format!("{EPS}/e"),
        merge,
        json!({"metadata": {"labels": {"b": "2"}}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    let current_after = a.body["metadata"]["resourceVersion"].clone();
    assert_ne!(current_after, current);
    // ...a PUT with the current resourceVersion succeeds, one with the stale one is a 409...
    let mut obj = a.body.clone();
    obj["metadata"]["labels"] = json!({"c": "3"});
    obj["metadata"]["resourceVersion"] = json!(stale);
    let a = send(
        Method::PUT,
        format!("{EPS}/e"),
        "application/json",
        obj.clone(),
    )
    .await;
    assert_eq!(a.code, StatusCode::CONFLICT, "{}", a.body);
    obj["metadata"]["resourceVersion"] = current_after;
    let a = send(Method::PUT, format!("{EPS}/e"), "application/json", obj).await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["metadata"]["labels"], json!({"c": "3"}));
    // ...and a no-op patch answers the current object, not the copy.
    let a = send(
        Method::PATCH,
        format!("{EPS}/e"),
        merge,
        json!({"metadata": {"labels": {"c": "3"}}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["metadata"]["labels"], json!({"c": "3"}));

    // A namespace terminating since the copy was taken takes no new object.
    api.frozen_namespace("team").await;
    let a = send(
        Method::DELETE,
        "/api/v1/namespaces/team".into(),
        "application/json",
        json!(null),
    )
    .await;
    assert!(a.code.is_success(), "{}", a.body);
    let a = send(
        Method::POST,
        "/api/v1/namespaces/team/endpoints".into(),
        "application/json",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "late"}}),
    )
    .await;
    assert!(
        [StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&a.code),
        "{}: {}",
        a.code,
        a.body
    );
    assert_eq!(
        lagging
            .inner
            .get(&eps.key(Some("team"), "late"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn reads_not_older_than_a_revision_come_from_memory() {
    let (store, counting, cache) = setup(10).await;
    let key = "/registry/pods/ns/p0003";
    let kv = cache.update(key, Bytes::from("v1"), None).await.unwrap();
    let mut rx = cache.revision.clone();
    rx.wait_for(|r| r.is_some_and(|r| r >= kv.mod_revision))
        .await
        .unwrap();
    let before = counting.reads();

    // "0" (any) and a revision the cache holds: answered from memory, no store read.
    for rev in [0, kv.mod_revision] {
        let got = cache.get_not_older_than(key, rev).await.unwrap().unwrap();
        assert_eq!(got.value, "v1");
    }
    assert_eq!(counting.reads(), before);

    // A revision beyond the cache: a consistent read of the store's current state.
    store.update(key, Bytes::from("v2"), None).await.unwrap();
    let beyond = store.revision() + 5;
    let got = cache
        .get_not_older_than(key, beyond)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.value, "v2");
}

#[tokio::test]
async fn creates_in_a_namespace_changed_since_its_copy_retry_and_land_once() {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    let api = LaggingApi::new("watch-cache-stale-ns").await;
    let send = |method: Method, uri: &'static str, ct: &'static str, body: serde_json::Value| {
        let api = &api;
        async move { api.send(method, uri, ct, body).await }
    };
    api.frozen_namespace("moving").await;
    // The namespace changes (a label) after its copy was taken: every create's namespace
    // check fails once and is retried with a consistent read.
    let a = send(
        Method::PATCH,
        "/api/v1/namespaces/moving",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"team": "a"}}}),
    )
    .await;
    assert_eq!(a.code, StatusCode::OK, "{}", a.body);
    let eps = "/api/v1/namespaces/moving/endpoints";
    // Named: the object built for the first attempt is sent again; generateName: built
    // again from the request.
    let mut answers = Vec::new();
    for meta in [json!({"name": "named"}), json!({"generateName": "gen-"})] {
        let body = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta});
        let a = send(Method::POST, eps, "application/json", body).await;
        assert_eq!(a.code, StatusCode::CREATED, "{}", a.body);
        answers.push(a.body);
    }
    let (a, b) = (&answers[0], &answers[1]);
    let gen_name = b["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(gen_name.starts_with("gen-"), "{gen_name}");
    // Each landed once, as answered: the stored bytes are the answer's, uid and all.
    let list = send(Method::GET, eps, "application/json", json!(null)).await;
    let items = list.body["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [gen_name.as_str(), "named"]);
    for (answered, stored) in [(b, &items[0]), (a, &items[1])] {
        assert_eq!(answered["metadata"]["uid"], stored["metadata"]["uid"]);
        assert_eq!(
            answered["metadata"]["resourceVersion"],
            stored["metadata"]["resourceVersion"]
        );
    }
}
