//! [`Store`] over any [`Engine`]: reads go straight to the engine, writes through the single
//! writer thread, watches to the shared history.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::Engine;
use crate::error::StoreError;
use crate::history::{Shared, Watch};
use crate::types::{KeyValue, Op, Revision};
use crate::writer::{Request, Writer};
use crate::{Store, StoreOptions};

pub(crate) struct EngineStore<E> {
    engine: Arc<E>,
    shared: Arc<Shared>,
    /// `None` only while dropping (closing it stops the writer).
    requests: Option<mpsc::UnboundedSender<Request>>,
    notify: watch::Receiver<u64>,
    writer: Option<JoinHandle<()>>,
}

impl<E: Engine> EngineStore<E> {
    pub(crate) fn start(engine: E, revision: Revision, opts: StoreOptions) -> Self {
        let engine = Arc::new(engine);
        let shared = Arc::new(Shared::new(revision, opts.history));
        let (tx, rx) = mpsc::unbounded_channel();
        let (notify_tx, notify_rx) = watch::channel(0);
        let writer = Writer {
            engine: engine.clone(),
            shared: shared.clone(),
            requests: rx,
            notify: notify_tx,
            revision,
        };
        // A plain thread: commits block on fsync, and the store may be built outside a runtime.
        let handle = std::thread::Builder::new()
            .name("kproxy-store-writer".into())
            .spawn(move || writer.run());
        let writer = match handle {
            Ok(h) => Some(h),
            Err(err) => {
                // Without a writer every txn fails with a Backend error (channel closed), which
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
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Backend(anyhow::anyhow!("store writer is not running"))
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

    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Request { ops, reply })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
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
