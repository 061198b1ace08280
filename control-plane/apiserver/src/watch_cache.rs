//! The watch cache: an in-memory copy of the store fed by the store's own watch, so GETs and
//! LISTs on etcd do not each cost an etcd range read (kube-apiserver's cacher does the same).
//!
//! Reads stay linearizable, as on etcd itself: a read first learns etcd's current revision
//! (one range read shared by every read that arrived while the previous one was in flight,
//! kube-apiserver's "consistent reads from cache"), then waits until the cache has applied
//! that revision. A cache that is not in sync (starting, re-listing after an error) or does
//! not catch up soon (writes outside the watched keys also move etcd's revision) sends the read
//! to the store instead, so the cache only ever makes reads faster, never staler.
//! Writes, watches and reads at an older revision go to the store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::FutureExt as _;
use kproxy_store::{Event, EventKind, KeyValue, Op, Page, Revision, Store, StoreError, Watch};
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
/// First and longest wait before re-listing after the store failed.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The cached objects and the revision they are complete up to.
#[derive(Default)]
struct Snapshot {
    kvs: BTreeMap<String, KeyValue>,
    /// False while (re)listing: reads go to the store.
    synced: bool,
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
    /// Wraps `inner` and starts filling the cache on the current runtime; the feed stops when
    /// the cache is dropped.
    pub fn start(inner: Arc<dyn Store>) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        let snapshot = Arc::new(RwLock::new(Snapshot::default()));
        let feed = Feed {
            inner: Arc::clone(&inner),
            snapshot: Arc::clone(&snapshot),
            revision: tx,
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
        self.revision.send_replace(None);
    }

    /// One list + watch cycle; returns when the watch ends (Ok) or fails.
    async fn sync(&self) -> Result<(), StoreError> {
        self.unsync();
        let (kvs, listed) = self.list().await?;
        let mut watch = self.inner.watch(ROOT, listed)?;
        {
            let mut snap = self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            snap.kvs = kvs;
            snap.synced = true;
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
            for ev in batch {
                match ev.kind {
                    EventKind::Put => {
                        snap.kvs.insert(ev.kv.key.clone(), ev.kv);
                    }
                    EventKind::Delete => {
                        snap.kvs.remove(&ev.kv.key);
                    }
                }
            }
            // Under the lock: a reader sees the revision its snapshot is complete up to.
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
