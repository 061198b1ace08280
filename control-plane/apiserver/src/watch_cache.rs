//! The watch cache: an in-memory copy of the store fed by the store's own watch, so GETs and
//! LISTs on etcd do not each cost an etcd range read (kube-apiserver's cacher does the same).
//!
//! Reads stay linearizable, as on etcd itself: a read first learns etcd's current revision
//! (one range read shared by every read that arrived while the previous one was in flight,
//! kube-apiserver's "consistent reads from cache"), then waits until the cache has applied
//! that revision. A cache that is not in sync (starting, re-listing after an error) or does
//! not catch up soon (writes outside the watched keys also move etcd's revision) sends the read
//! to the store instead, so the cache only ever makes reads faster, never staler.
//! Writes and reads at an older revision go to the store.
//!
//! Watches are served from the cache too, as kube-apiserver's cacher serves them: the feed's one
//! store watch (on every key, without etcd's per-event previous value: the snapshot has it)
//! fills a window of recent events ([`EventLog`]) that every API watch reads by cursor, so 100
//! watchers cost one etcd watch, not 100. A watch from a resourceVersion inside the window
//! replays from there; one older than the window is `Compacted` (410 Gone "too old resource
//! version", as Kubernetes); a watcher overtaken by the window's bound gets `WatcherLagged`
//! (410 as well). A re-list (after the feed failed) starts a new window and ends the watches of
//! the old one, whose clients resume from their last resourceVersion. While the cache is not in
//! sync, watches go to the store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::FutureExt as _;
use kproxy_store::{
    Event, EventKind, EventLog, KeyValue, Op, Page, Revision, Store, StoreError, Watch,
};
use tokio::sync::{mpsc, oneshot, watch};

/// Every key the API server writes starts with this.
const ROOT: &str = "/";
/// A prefix holding no key: reading it tells the store's current revision.
const PROBE: &str = "/kproxy.io/revision-probe/";
/// How long a read waits for the cache to reach the store's revision before asking the store.
const CATCH_UP: Duration = Duration::from_millis(250);
/// Events applied before the cache publishes a revision while more are ready.
const BATCH: usize = 1024;
/// Keys read per page while listing (bounds each store response).
const LIST_PAGE: usize = 1000;
/// Events the watch window keeps by default (the in-process stores' history bound). Creates
/// share their value with the cached object; an update or delete also keeps the previous value.
pub const WINDOW: usize = 100_000;
/// First and longest wait before re-listing after the store failed.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The cached objects and the revision they are complete up to.
#[derive(Default)]
struct Snapshot {
    kvs: BTreeMap<String, KeyValue>,
    /// False while (re)listing: reads go to the store.
    synced: bool,
    /// Recent events for API watches (None while not in sync); replaced on every re-list.
    window: Option<Arc<EventLog>>,
}

/// A [`Store`] answering current reads from memory (see the module docs).
pub struct WatchCache {
    inner: Arc<dyn Store>,
    snapshot: Arc<RwLock<Snapshot>>,
    /// The revision the snapshot is complete up to (None while not in sync).
    revision: watch::Receiver<Option<Revision>>,
    /// Reads waiting for the store's current revision (see [`probe`]); dropping it stops
    /// the prober.
    probes: mpsc::UnboundedSender<oneshot::Sender<Option<Revision>>>,
}

impl WatchCache {
    /// Wraps `inner` and starts filling the cache on the current runtime, keeping [`WINDOW`]
    /// events for watches; the feed stops when the cache is dropped.
    pub fn start(inner: Arc<dyn Store>) -> Arc<Self> {
        Self::with_window(inner, WINDOW)
    }

    /// [`WatchCache::start`] with a window of `window` events.
    pub fn with_window(inner: Arc<dyn Store>, window: usize) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        let snapshot = Arc::new(RwLock::new(Snapshot::default()));
        let feed = Feed {
            inner: Arc::clone(&inner),
            snapshot: Arc::clone(&snapshot),
            revision: tx,
            window,
        };
        tokio::spawn(feed.run());
        let (probes, asked) = mpsc::unbounded_channel();
        tokio::spawn(probe(Arc::clone(&inner), asked));
        Arc::new(Self {
            inner,
            snapshot,
            revision: rx,
            probes,
        })
    }

    /// Waits until the cache holds everything the store has committed by now; false when it
    /// is not in sync or does not get there within [`CATCH_UP`] (then the store must answer).
    async fn caught_up(&self) -> bool {
        if self.revision.borrow().is_none() {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        if self.probes.send(tx).is_err() {
            return false;
        }
        // The probe failing (etcd down) sends the read to the store, which says why.
        let Ok(Some(want)) = rx.await else {
            return false;
        };
        let mut rx = self.revision.clone();
        let reached =
            tokio::time::timeout(CATCH_UP, rx.wait_for(|r| r.is_some_and(|r| r >= want))).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// The revision the cache is complete up to (0: not in sync).
    fn at(&self) -> Revision {
        self.revision.borrow().unwrap_or(0)
    }

    fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> Option<T> {
        let snap = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        snap.synced.then(|| f(&snap))
    }
}

#[async_trait::async_trait]
impl Store for WatchCache {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if self.caught_up().await
            && let Some(kv) = self.read(|s| s.kvs.get(key).cloned())
        {
            return Ok(kv);
        }
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        if self.caught_up().await
            && let Some(listed) = self.read(|s| {
                let kvs = range(&s.kvs, prefix, prefix).cloned().collect();
                (kvs, self.at())
            })
        {
            return Ok(listed);
        }
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
        // Later pages of a paged list read at the first page's revision: the store's history.
        if revision == 0
            && self.caught_up().await
            && let Some(page) = self.read(|s| {
                let mut keys = range(&s.kvs, prefix, start);
                let kvs: Vec<KeyValue> = keys.by_ref().take(limit).cloned().collect();
                let rest = if count {
                    keys.count()
                } else {
                    keys.take(1).count()
                };
                Page {
                    kvs,
                    revision: self.at(),
                    more: rest > 0,
                    remaining: count.then(|| u64::try_from(rest).unwrap_or(u64::MAX)),
                }
            })
        {
            return Ok(page);
        }
        self.inner
            .list_page(prefix, start, limit, revision, count)
            .await
    }

    async fn get_not_older_than(
        &self,
        key: &str,
        revision: Revision,
    ) -> Result<Option<KeyValue>, StoreError> {
        // `at` only moves once the snapshot holds that revision's events.
        if self.at() >= revision.max(1)
            && let Some(kv) = self.read(|s| s.kvs.get(key).cloned())
        {
            return Ok(kv);
        }
        self.get(key).await
    }

    async fn get_cached(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if let Some(kv) = self.read(|s| s.kvs.get(key).cloned()) {
            return Ok(kv);
        }
        self.inner.get(key).await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.txn(ops).await
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let window = self
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .window
            .clone();
        let Some(window) = window else {
            return self.inner.watch(prefix, after);
        };
        // "From now" as on the store: after every write it has acknowledged, which the window
        // may not hold yet (the cursor skips what is older when it arrives).
        let after = if after == 0 {
            self.inner.revision().max(window.revision())
        } else {
            after
        };
        window.watch(prefix, after)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }

    fn revision(&self) -> Revision {
        self.inner.revision().max(self.at())
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }

    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.inner.compact(rev).await
    }
}

/// The cached keys under `prefix` from `start` on, in key order.
fn range<'a>(
    kvs: &'a BTreeMap<String, KeyValue>,
    prefix: &'a str,
    start: &str,
) -> impl Iterator<Item = &'a KeyValue> {
    let from = start.max(prefix).to_owned();
    kvs.range::<String, _>((Bound::Included(from), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(_, kv)| kv)
}

// === impl Feed ===

/// Lists the store, then applies its watch; re-lists after any failure.
struct Feed {
    inner: Arc<dyn Store>,
    snapshot: Arc<RwLock<Snapshot>>,
    revision: watch::Sender<Option<Revision>>,
    /// Bound of each window.
    window: usize,
}

impl Feed {
    async fn run(self) {
        let mut delay = RETRY.0;
        // Ends when the cache (the only receiver) is gone.
        while !self.revision.is_closed() {
            match self.sync().await {
                // The watch ended (the store is closing): start over, without hurry.
                Ok(()) => delay = RETRY.0,
                Err(e) => {
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        retry_in = ?delay,
                        "watch cache out of sync; re-listing"
                    );
                    delay = (delay * 2).min(RETRY.1);
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn unsync(&self) {
        let mut snap = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        snap.synced = false;
        snap.kvs.clear();
        // Ends the old window's watches (after what they were sent): events between its last
        // one and the next list are lost to it.
        snap.window = None;
        self.revision.send_replace(None);
    }

    /// One list + watch cycle; returns when the watch ends (Ok) or fails.
    async fn sync(&self) -> Result<(), StoreError> {
        self.unsync();
        let (kvs, listed) = self.list().await?;
        let mut watch = self.inner.watch_without_prev(ROOT, listed)?;
        {
            let mut snap = self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            snap.kvs = kvs;
            snap.synced = true;
            snap.window = Some(Arc::new(EventLog::new(listed, self.window)));
            self.revision.send_replace(Some(listed));
        }
        let mut carry: Option<Event> = None;
        loop {
            let first = if let Some(ev) = carry.take() {
                ev
            } else {
                let next = tokio::select! {
                    next = watch.next() => next,
                    () = self.revision.closed() => return Ok(()),
                };
                let Some(first) = next else {
                    self.unsync();
                    return Ok(());
                };
                first?
            };
            // Apply what is ready at once, publishing whole revisions only: the ops of one
            // txn share a revision, and a reader must not see half of one.
            let mut last = first.revision();
            let mut batch = vec![first];
            while let Some(Some(ev)) = watch.next().now_or_never() {
                let ev = ev?;
                if batch.len() >= BATCH && ev.revision() != last {
                    carry = Some(ev);
                    break;
                }
                last = ev.revision();
                batch.push(ev);
            }
            let mut snap = self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let events: Vec<Event> = batch
                .into_iter()
                .map(|ev| apply(&mut snap.kvs, ev))
                .collect();
            // Under the lock, window first: a watch from the revision a reader saw finds every
            // later event in the window.
            if let Some(window) = &snap.window {
                window.publish(last, events);
            }
            self.revision.send_replace(Some(last));
        }
    }

    /// Everything under [`ROOT`] at one revision, a page at a time.
    async fn list(&self) -> Result<(BTreeMap<String, KeyValue>, Revision), StoreError> {
        let mut kvs = BTreeMap::new();
        let mut page = self
            .inner
            .list_page(ROOT, ROOT, LIST_PAGE, 0, false)
            .await?;
        let at = page.revision;
        loop {
            let next = page
                .kvs
                .last()
                .filter(|_| page.more)
                .map(|kv| format!("{}\0", kv.key));
            kvs.extend(page.kvs.into_iter().map(|kv| (kv.key.clone(), kv)));
            let Some(next) = next else {
                return Ok((kvs, at));
            };
            page = self
                .inner
                .list_page(ROOT, &next, LIST_PAGE, at, false)
                .await?;
        }
    }
}

/// Applies one event of the store's watch to the cached keys and returns it as watchers get it:
/// the previous value from the cache (the feed's watch does not carry it), a delete carrying
/// the last value at the delete's revision.
fn apply(kvs: &mut BTreeMap<String, KeyValue>, ev: Event) -> Event {
    match ev.kind {
        EventKind::Put => {
            let prev = kvs.insert(ev.kv.key.clone(), ev.kv.clone());
            Event {
                kind: EventKind::Put,
                kv: ev.kv,
                prev,
            }
        }
        EventKind::Delete => {
            let prev = kvs.remove(&ev.kv.key);
            let kv = match &prev {
                Some(p) => KeyValue {
                    mod_revision: ev.kv.mod_revision,
                    ..p.clone()
                },
                None => ev.kv,
            };
            Event {
                kind: EventKind::Delete,
                kv,
                prev,
            }
        }
    }
}

// === probe ===

/// Learns the store's current revision for the reads that ask, one store read at a time: a
/// read is answered by a probe that started after it asked, so what it then sees is at least
/// as new as anything committed before the read began. None: the store did not answer.
async fn probe(
    inner: Arc<dyn Store>,
    mut asked: mpsc::UnboundedReceiver<oneshot::Sender<Option<Revision>>>,
) {
    // Ends when the cache (the only sender) is gone.
    while let Some(first) = asked.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = asked.try_recv() {
            batch.push(more);
        }
        let rev = inner
            .list_page(PROBE, PROBE, 1, 0, false)
            .await
            .ok()
            .map(|p| p.revision);
        for tx in batch {
            let _ = tx.send(rev);
        }
    }
}

#[cfg(test)]
mod tests;
