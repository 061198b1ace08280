//! etcd's history is compacted by the API servers, as kube-apiserver does it
//! (`--etcd-compaction-interval`, default 5 minutes): every interval, etcd is compacted to the
//! revision it had one interval earlier, so a watch can resume from anything newer than that.
//! Several API servers on one etcd take turns through a compare-and-swap on one key: only the
//! server whose write of that key succeeds compacts in a round.

use std::sync::Arc;
use std::time::Duration;

use kproxy_store::{Op, Revision, Store, StoreError};

/// The key the API servers compare-and-swap to decide who compacts (kube-apiserver's
/// `compact_rev_key`).
const KEY: &str = "/registry/compact_rev_key";

/// Compacts `store` every `every` (zero: never) on the current runtime.
pub fn spawn(store: Arc<dyn Store>, every: Duration) {
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut round = Round::default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match round.step(store.as_ref()).await {
                Ok(Some(rev)) => tracing::info!(revision = rev, "compacted etcd"),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "compacting etcd");
                }
            }
        }
    });
}

/// What one server remembers between rounds.
#[derive(Debug, Default)]
pub struct Round {
    /// The key's mod revision when this server last saw it (None: not seen yet).
    seen: Option<Revision>,
    /// The store's revision one round ago: what the next winner compacts to.
    previous: Revision,
}

impl Round {
    /// One round: claims the turn; the winner compacts to the previous round's revision.
    /// Returns the revision compacted to, if this server did.
    pub async fn step(&mut self, store: &dyn Store) -> Result<Option<Revision>, StoreError> {
        let value = bytes::Bytes::from_static(b"");
        let op = match self.seen {
            None => Op::Create {
                key: KEY.into(),
                value,
            },
            Some(rev) => Op::Update {
                key: KEY.into(),
                value,
                expected: Some(rev),
            },
        };
        match store.txn(vec![op]).await {
            Ok(kvs) => {
                let now = kvs.first().map_or(0, |kv| kv.mod_revision);
                self.seen = Some(now);
                let target = std::mem::replace(&mut self.previous, now);
                if target == 0 {
                    return Ok(None);
                }
                store.compact(target).await?;
                Ok(Some(target))
            }
            // Another server took this round: learn where the key is now and wait a round.
            Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => {
                let kv = store.get(KEY).await?;
                self.seen = kv.as_ref().map(|kv| kv.mod_revision);
                self.previous = kv.map_or(0, |kv| kv.mod_revision);
                Ok(None)
            }
            Err(StoreError::NotFound(_)) => {
                self.seen = None;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use kproxy_store::StoreOptions;

    use super::*;

    #[tokio::test]
    async fn one_server_compacts_per_round_to_the_previous_revision() {
        let store = kproxy_store::memory(StoreOptions::default());
        let (mut a, mut b) = (Round::default(), Round::default());
        // First round: A claims the key; nothing to compact to yet. B learns it lost.
        assert_eq!(a.step(store.as_ref()).await.unwrap(), None);
        assert_eq!(b.step(store.as_ref()).await.unwrap(), None);
        store.create("/registry/x", "1".into()).await.unwrap();
        let before = store.revision();
        // Second round: B's view of the key is current, A's stale: B compacts, A does not.
        let b_rev = b.step(store.as_ref()).await.unwrap();
        assert_eq!(a.step(store.as_ref()).await.unwrap(), None);
        let b_rev = b_rev.expect("B compacts");
        assert!(b_rev < before, "to the revision of a round ago");
        assert_eq!(store.compacted_revision(), b_rev);
        // Third round: A caught up and compacts to what B claimed at.
        store.create("/registry/y", "1".into()).await.unwrap();
        let a_rev = a.step(store.as_ref()).await.unwrap();
        assert_eq!(b.step(store.as_ref()).await.unwrap(), None);
        assert!(a_rev.expect("A compacts") > b_rev);
    }
}
