//! In-memory engine: a sorted map behind an RwLock (readers never wait for the writer's
//! precondition checks, only for the short in-memory apply).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use crate::engine::{Change, Engine};
use crate::error::EngineError;
use crate::types::{KeyValue, Revision};

#[derive(Default)]
pub(crate) struct MemoryEngine {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
}

impl Engine for MemoryEngine {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, EngineError> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent
        // because commit never panics halfway through an update.
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(state.kvs.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &str,
        start: &str,
        visit: &mut dyn FnMut(&KeyValue) -> bool,
    ) -> Result<Revision, EngineError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let from = start.max(prefix);
        for (_, kv) in state
            .kvs
            .range::<str, _>((Bound::Included(from), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if !visit(kv) {
                break;
            }
        }
        Ok(state.revision)
    }

    fn revision(&self) -> Result<Revision, EngineError> {
        Ok(self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision)
    }

    fn commit(&self, revision: Revision, changes: &[Change]) -> Result<(), EngineError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for (key, kv) in changes {
            match kv {
                Some(kv) => state.kvs.insert(key.clone(), kv.clone()),
                None => state.kvs.remove(key),
            };
        }
        state.revision = revision;
        Ok(())
    }
}
