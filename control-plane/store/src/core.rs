//! [`Store`] over any [`Engine`]: reads go straight to the engine, writes through the single
//! writer thread, watches to the shared history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::Engine;
use crate::error::StoreError;
use crate::history::{Shared, Watch};
use crate::types::{KeyValue, Op, Page, Revision};
use crate::writer::{Request, Writer};
use crate::{Store, StoreOptions};

pub(crate) struct EngineStore<E> {
    engine: Arc<E>,
    shared: Arc<Shared>,
    /// `None` only while dropping (closing it stops the writer).
    requests: Option<mpsc::UnboundedSender<Request>>,
    notify: watch::Receiver<u64>,
    writer: Option<JoinHandle<()>>,
    /// False while commits fail (see [`Store::ready`]).
    healthy: Arc<AtomicBool>,
}

impl<E: Engine> EngineStore<E> {
    pub(crate) fn start(
        engine: E,
        revision: Revision,
        StoreOptions { history }: StoreOptions,
    ) -> Self {
        let engine = Arc::new(engine);
        let shared = Arc::new(Shared::new(revision, history));
        let (tx, rx) = mpsc::unbounded_channel();
        let (notify_tx, notify_rx) = watch::channel(0);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            engine: engine.clone(),
            shared: shared.clone(),
            requests: rx,
            notify: notify_tx,
            revision,
            healthy: Arc::clone(&healthy),
            failure: None,
        };
        // A plain thread: commits block on fsync, and the store may be built outside a runtime.
        let handle = std::thread::Builder::new()
            .name("kproxy-store-writer".into())
            .spawn(move || writer.run());
        let writer = match handle {
            Ok(h) => Some(h),
            Err(err) => {
                // Without a writer every txn fails with WriterStopped (channel closed), which
                // is the honest outcome; reads still work.
                tracing::error!(error = %err, "cannot spawn store writer thread");
                None
            }
        };
        Self {
            engine,
            shared,
            requests: Some(tx),
            notify: notify_rx,
            writer,
            healthy,
        }
    }

    /// Queues `ops` (empty: a readiness probe) for the writer and awaits its answer.
    async fn send(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Request { ops, reply })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

/// Page reads retried while the writer sits between committing a batch to the engine and
/// publishing its events (normally microseconds); the first few only yield, the rest sleep 1 ms.
const PAGE_ATTEMPTS: usize = 1000;
const PAGE_YIELDS: usize = 16;

impl<E: Engine> EngineStore<E> {
    /// One attempt at [`Store::list_page`]; `None` when the engine is ahead of the published
    /// history (the undo below would miss the unpublished batch).
    fn read_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Option<Page>, StoreError> {
        // Holding the history lock keeps the published revision (and the events up to it) fixed.
        let history = self.shared.read();
        let published = self.shared.revision();
        let at = if revision == 0 { published } else { revision };
        if at > published {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: published,
            });
        }
        if at < history.compacted() {
            return Err(StoreError::Compacted {
                requested: at,
                oldest: history.compacted(),
            });
        }
        let start = start.max(prefix);
        // The engine only has the latest state. For every key in range changed after `at`, the
        // `prev` of its first later event is its value at `at` (None: it did not exist then).
        let mut undo: BTreeMap<&str, Option<&KeyValue>> = BTreeMap::new();
        for ev in history.events_after(at) {
            let key = ev.kv.key.as_str();
            if key.starts_with(prefix) && key >= start {
                undo.entry(key).or_insert(ev.prev.as_ref());
            }
        }
        let mut pager = Pager {
            limit,
            count,
            kvs: Vec::new(),
            more: false,
            remaining: 0,
        };
        let mut undo = undo.into_iter().peekable();
        let engine_revision = self
            .engine
            .scan(prefix, start, &mut |kv| {
                // Keys deleted since `at` sort between the engine's keys.
                while let Some((_, old)) = undo.next_if(|(k, _)| *k < kv.key.as_str()) {
                    if let Some(old) = old
                        && !pager.push(old)
                    {
                        return false;
                    }
                }
                match undo.next_if(|(k, _)| *k == kv.key.as_str()) {
                    Some((_, Some(old))) => pager.push(old),
                    // Created after `at`.
                    Some((_, None)) => true,
                    None => pager.push(kv),
                }
            })
            .map_err(|e| StoreError::backend("listing prefix page", e))?;
        if engine_revision != published {
            return Ok(None);
        }
        for (_, old) in undo {
            if let Some(old) = old
                && !pager.push(old)
            {
                break;
            }
        }
        Ok(Some(Page {
            kvs: pager.kvs,
            revision: at,
            more: pager.more,
            remaining: count.then_some(pager.remaining),
        }))
    }
}

/// Collects a page from keys visited in order, then only notes (and optionally counts) the rest.
struct Pager {
    limit: usize,
    count: bool,
    kvs: Vec<KeyValue>,
    more: bool,
    remaining: u64,
}

impl Pager {
    /// Takes the next key; false once visiting further keys is pointless.
    fn push(&mut self, kv: &KeyValue) -> bool {
        if self.kvs.len() < self.limit {
            self.kvs.push(kv.clone());
            return true;
        }
        self.more = true;
        self.remaining += 1;
        self.count
    }
}

fn writer_gone() -> StoreError {
    StoreError::WriterStopped
}

#[async_trait::async_trait]
impl<E: Engine> Store for EngineStore<E> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.engine
            .get(key)
            .map_err(|e| StoreError::backend("reading key", e))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.engine
            .list(prefix)
            .map_err(|e| StoreError::backend("listing prefix", e))
    }

    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        for attempt in 0..PAGE_ATTEMPTS {
            if let Some(page) = self.read_page(prefix, start, limit, revision, count)? {
                return Ok(page);
            }
            if attempt < PAGE_YIELDS {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Err(StoreError::PageTimeout {
            prefix: prefix.to_owned(),
        })
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.send(ops).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.healthy.load(Ordering::Acquire) {
            return Ok(());
        }
        // Through the writer, which retries its storage on the way.
        self.send(Vec::new()).await.map(drop)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        Watch::register(self.shared.clone(), self.notify.clone(), prefix, after)
    }

    fn revision(&self) -> Revision {
        self.shared.revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.read().compacted()
    }

    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        let mut history = self.shared.write();
        // Read under the lock: the writer publishes revision and events together under it.
        let rev = rev.min(self.shared.revision());
        history.compact(rev);
        Ok(())
    }
}

impl<E> Drop for EngineStore<E> {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish its batch and exit; joining means the engine
        // (e.g. the redb file lock) is released when the store is gone, so it can be reopened.
        self.requests = None;
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}
