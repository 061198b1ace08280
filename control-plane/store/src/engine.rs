//! The small synchronous engine interface the shared store implementation runs on.

use crate::error::EngineError;
use crate::types::{KeyValue, Revision};

/// The final state of one key after a committed batch: `Some` to write, `None` to delete.
pub type Change = (String, Option<KeyValue>);

/// Synchronous storage engine. Only the store's single writer calls [`Engine::commit`], so
/// implementations need no write-write coordination; reads may run concurrently with a commit.
pub trait Engine: Send + Sync + 'static {
    /// The current value of `key`.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, EngineError>;

    /// All keys starting with `prefix`, sorted by key, and the revision of that same snapshot.
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), EngineError> {
        let mut kvs = Vec::new();
        let revision = self.scan(prefix, prefix, &mut |kv| {
            kvs.push(kv.clone());
            true
        })?;
        Ok((kvs, revision))
    }

    /// Visits the keys under `prefix` that are `>= start`, in key order, until `visit` returns
    /// false, and returns the revision of the snapshot visited (in place, on the ordered
    /// index).
    fn scan(
        &self,
        prefix: &str,
        start: &str,
        visit: &mut dyn FnMut(&KeyValue) -> bool,
    ) -> Result<Revision, EngineError>;

    /// The latest committed revision.
    fn revision(&self) -> Result<Revision, EngineError>;

    /// Atomically (and durably, if the engine is durable) applies `changes` and records
    /// `revision` as the current revision: after a crash either all of it is visible or none.
    /// A failed commit changes nothing readers see; the writer calls [`Engine::recover`] before
    /// committing again.
    fn commit(&self, revision: Revision, changes: &[Change]) -> Result<(), EngineError>;

    /// Makes the engine writable again after a failed commit (e.g. the disk was full), with its
    /// durable state equal to what it reported committed. An error means it is still not
    /// writable; the writer tries again later.
    fn recover(&self) -> Result<(), EngineError> {
        Ok(())
    }
}
