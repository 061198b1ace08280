//! The store's error type.

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
    #[error("storage backend error: {0:#}")]
    Backend(anyhow::Error),
}

impl StoreError {
    /// Wraps a backend failure with a short description of what was being done.
    pub(crate) fn backend(context: &str, err: anyhow::Error) -> Self {
        StoreError::Backend(err.context(context.to_owned()))
    }
}
