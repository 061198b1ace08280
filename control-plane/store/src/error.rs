//! The store's error types: [`StoreError`] for callers of the store, [`EngineError`] for the
//! storage engines under it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::types::Revision;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("conflict on key {key:?}: expected mod_revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// A watch asked for history that is no longer kept (the API answers 410 Gone).
    #[error("revision {requested} has been compacted; the oldest resumable revision is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// A read asked for a revision this store has not reached (e.g. a token from before a
    /// restart of an in-memory store).
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The watcher fell too far behind; it must re-list.
    #[error("watcher fell behind the retained history and must re-list")]
    WatcherLagged,
    /// The engine failed while the store was doing `action`. One failed commit fails every txn
    /// of its batch, hence the shared source.
    #[error("storage backend error: {action}")]
    Backend {
        action: &'static str,
        #[source]
        source: Arc<EngineError>,
    },
    /// The writer thread is gone (the store is shutting down).
    #[error("storage backend error: store writer is not running")]
    WriterStopped,
    /// A paged read waited in vain for the writer to publish a batch it had committed.
    #[error(
        "storage backend error: listing {prefix:?}: the writer did not publish its committed \
         batch within a second"
    )]
    PageTimeout { prefix: String },
    /// The store's backend cannot be reached (etcd down or not reached yet): the request may
    /// succeed once it is back, so the API answers 503 rather than 500.
    #[error("storage is unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A single-op txn did not return exactly one result (a bug in the store).
    #[error("storage backend error: single-op txn returned {count} results")]
    UnexpectedResults { count: usize },
}

impl StoreError {
    /// Wraps a backend failure with a short description of what was being done.
    pub(crate) fn backend(action: &'static str, err: EngineError) -> Self {
        StoreError::Backend {
            action,
            source: Arc::new(err),
        }
    }
}

/// Why an [`Engine`](crate::Engine) operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The storage under the engine failed while the engine was doing `action`.
    #[error("{action}")]
    Storage {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record does not decode.
    #[error("corrupt record for key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The store file cannot be read as a store (damaged, or not a store at all).
    #[error(
        "store file {} is corrupt; restore it from a backup, or move it away to start with an \
         empty store",
        path.display()
    )]
    CorruptFile {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl EngineError {
    /// A failure of the storage layer while doing `action` (e.g. "opening table kv").
    pub fn storage(
        action: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        EngineError::Storage {
            action: action.into(),
            source: source.into(),
        }
    }
}
