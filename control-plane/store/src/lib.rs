//! Versioned key-value store with etcd-like semantics.
//!
//! - Every successful [`Store::txn`] commits all of its ops at ONE new global revision; revisions
//!   are strictly increasing and never reused (they persist in the redb backend). Failed txns
//!   change nothing and consume no revision. Ops inside one txn apply in order, each seeing the
//!   effect of the earlier ones.
//! - Each key carries `create_revision` (the revision that created it) and `mod_revision` (the
//!   revision of its last write); optimistic concurrency compares `mod_revision`.
//! - A single writer thread applies queued txns in batches and commits each batch as one durable
//!   backend transaction (group commit); a txn returns `Ok` only once it is on disk.
//! - Reads ([`Store::get`], [`Store::list`]) never wait for the writer; `list` reports the revision
//!   of the snapshot it read, and `watch(prefix, that_revision)` continues exactly after it.
//! - [`Store::list_page`] reads a prefix in key-ordered pages, each at a chosen revision: the
//!   engines keep only the latest state, so an older revision is rebuilt by undoing the retained
//!   history on top of it; a revision older than the history gives [`StoreError::Compacted`].
//! - Watches read a single bounded in-memory history by cursor. Resuming before the retained
//!   history gives [`StoreError::Compacted`]; a watcher overtaken by the bound gets
//!   [`StoreError::WatcherLagged`] once and must re-list. History is not persisted: after a
//!   restart `compacted_revision() == revision()`.
//! - A failed commit (a full disk, an I/O error) fails its batch and changes nothing; until the
//!   engine recovers (the redb engine reopens its file, at most every 500 ms, on the next write
//!   or [`Store::ready`]) writes fail at once and `ready` reports the cause.
//! - [`EtcdStore`] is the same trait on an etcd cluster: etcd's revisions, history and
//!   compaction instead of the in-process ones (see the `etcd` module).
#![forbid(unsafe_code)]

mod catch;
mod core;
mod engine;
mod error;
pub mod etcd;
mod history;
mod memory;
mod redb_engine;
mod types;
mod writer;

#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

#[cfg(test)]
mod etcd_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use engine::{Change, Engine};
pub use error::{EngineError, StoreError};
pub use etcd::{EtcdConfig, EtcdStore};
pub use history::{EventLog, Watch};
pub use types::{Event, EventKind, KeyValue, Op, Page, Revision};

/// Tuning for a store instance.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Number of events retained for watches (at least 1 is kept).
    pub history: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { history: 100_000 }
    }
}

/// The versioned store used by the API server.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// All keys starting with `prefix`, sorted by key, and the store revision the read saw.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Up to `limit` keys under `prefix` that are `>= start` (pass `prefix` or "" to start at
    /// the beginning), sorted by key, as they were at `revision` (0 = the current revision), so
    /// that paging with the first page's revision reads one consistent snapshot. Only the page
    /// (not the whole prefix) is held in memory. With `count` the keys after the page are
    /// counted (a walk, no copies) into [`Page::remaining`].
    /// Errors: `revision` older than the retained history → Compacted; newer than the current
    /// revision → FutureRevision.
    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError>;

    /// Atomic multi-key transaction: either every op applies (all at ONE new revision, as in etcd)
    /// or none does. Returns one KeyValue per write op, in order (for Delete: the deleted kv
    /// with mod_revision = the new revision; an [`Op::Check`] has none). Durable before it
    /// returns Ok. An empty `ops` is a no-op.
    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError>;

    /// Events on keys under `prefix` with revision > `after`, in revision order (ops within one
    /// txn in op order), first from retained history, then live. `after` older than the retained
    /// history → Err(Compacted). `after == 0` means "from now" (only live events).
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError>;

    /// [`Store::watch`] whose events may lack `prev` (and a delete's value: its `kv` may be
    /// the bare tombstone), for a caller that keeps the previous values itself (the API
    /// server's watch cache). On etcd this spares etcd a read of the previous revision per
    /// event. By default the same as `watch`.
    fn watch_without_prev(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.watch(prefix, after)
    }

    /// [`Store::get`], possibly from a copy that may lag the store (the API server's watch
    /// cache answers without first learning etcd's revision). For a read whose result a
    /// txn then asserts ([`Op::Check`]), as the namespace of a create. By default `get`.
    async fn get_cached(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.get(key).await
    }

    /// [`Store::get`] of a state at least as new as `revision` (a GET's resourceVersion in
    /// Kubernetes: "not older than"; 0 is any state), so a store keeping a copy may answer from
    /// it without first learning the current revision, as kube-apiserver's watch cache does.
    /// By default `get`: the current state is never older. The caller tells a `revision`
    /// beyond [`Store::revision`] apart afterwards.
    async fn get_not_older_than(
        &self,
        key: &str,
        revision: Revision,
    ) -> Result<Option<KeyValue>, StoreError> {
        let _ = revision;
        self.get(key).await
    }

    /// Whether writes commit. After a failed commit (a full disk, an I/O error) this is the
    /// cause until the store has made its storage writable again; asking retries that, as the
    /// next write does. Reads keep working meanwhile.
    async fn ready(&self) -> Result<(), StoreError>;

    /// The latest committed revision.
    fn revision(&self) -> Revision;

    /// The oldest revision a watch can still resume after.
    fn compacted_revision(&self) -> Revision;

    /// Drop history up to and including `rev` (clamped to the current revision). It also happens
    /// automatically when history exceeds its bound.
    async fn compact(&self, rev: Revision) -> Result<(), StoreError>;

    /// Creates `key`; fails with AlreadyExists if it exists.
    async fn create(&self, key: &str, value: bytes::Bytes) -> Result<KeyValue, StoreError> {
        let op = Op::Create {
            key: key.to_owned(),
            value,
        };
        single(self.txn(vec![op]).await?)
    }

    /// Replaces `key`; NotFound if missing, Conflict if `expected` differs from its mod_revision.
    async fn update(
        &self,
        key: &str,
        value: bytes::Bytes,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        let op = Op::Update {
            key: key.to_owned(),
            value,
            expected,
        };
        single(self.txn(vec![op]).await?)
    }

    /// Deletes `key` and returns its last value (mod_revision = the delete's revision).
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let op = Op::Delete {
            key: key.to_owned(),
            expected,
        };
        single(self.txn(vec![op]).await?)
    }
}

fn single(mut kvs: Vec<KeyValue>) -> Result<KeyValue, StoreError> {
    match (kvs.pop(), kvs.is_empty()) {
        (Some(kv), true) => Ok(kv),
        (last, _) => Err(StoreError::UnexpectedResults {
            count: kvs.len() + usize::from(last.is_some()),
        }),
    }
}

/// An in-memory store (nothing survives the process); meant for tests.
pub fn memory(opts: StoreOptions) -> Arc<dyn Store> {
    Arc::new(core::EngineStore::start(
        memory::MemoryEngine::default(),
        0,
        opts,
    ))
}

/// Opens (or creates) a durable store in the redb file at `path`. A damaged file (or one that
/// is not a store) is [`EngineError::CorruptFile`].
pub fn open_redb(path: &Path, opts: StoreOptions) -> Result<Arc<dyn Store>, EngineError> {
    with_engine(redb_engine::RedbEngine::open(path)?, opts)
}

/// Builds a store over any [`Engine`]; the history starts empty at the engine's revision.
pub fn with_engine<E: Engine>(
    engine: E,
    opts: StoreOptions,
) -> Result<Arc<dyn Store>, EngineError> {
    let revision = engine.revision()?;
    Ok(Arc::new(core::EngineStore::start(engine, revision, opts)))
}
