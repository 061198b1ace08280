//! The single writer: drains queued txns, applies them in order against the committed state plus
//! the earlier txns of the same batch, commits the batch as ONE engine transaction, publishes the
//! events and answers the callers (group commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::{Change, Engine};
use crate::error::{EngineError, StoreError};
use crate::history::Shared;
use crate::types::{Event, EventKind, KeyValue, Op, Revision};

/// Upper bound on txns per batch, so one huge burst cannot delay its first callers for long.
const MAX_BATCH: usize = 1024;

/// After a failed commit, how often the writer tries to make the engine writable again; in
/// between, writes fail at once with the last cause (a full disk stays full for a while, and
/// reopening a large file is not free).
const RECOVER_EVERY: Duration = Duration::from_millis(500);

pub(crate) type Reply = oneshot::Sender<Result<Vec<KeyValue>, StoreError>>;

/// A txn; empty `ops` is a readiness probe (the store never queues an empty txn).
pub(crate) struct Request {
    pub ops: Vec<Op>,
    pub reply: Reply,
}

/// What a txn produced: its write ops' results, its events, and its writes (in op order).
#[derive(Debug)]
pub(crate) struct Applied {
    pub results: Vec<KeyValue>,
    pub events: Vec<Event>,
    pub writes: Vec<Change>,
}

/// Applies `ops` at `revision` on top of the state `lookup` returns. Pure: nothing is written;
/// ops see the effect of earlier ops of the same txn.
pub(crate) fn apply_txn(
    ops: Vec<Op>,
    revision: Revision,
    lookup: &dyn Fn(&str) -> Result<Option<KeyValue>, EngineError>,
) -> Result<Applied, StoreError> {
    let mut staged: HashMap<String, Option<KeyValue>> = HashMap::new();
    let mut applied = Applied {
        results: Vec::with_capacity(ops.len()),
        events: Vec::with_capacity(ops.len()),
        writes: Vec::with_capacity(ops.len()),
    };
    for op in ops {
        let current = match staged.get(op.key()) {
            Some(v) => v.clone(),
            None => lookup(op.key())
                .map_err(|e| StoreError::backend("reading key for txn precondition", e))?,
        };
        let (key, kind, kv, new_state) = match op {
            Op::Check { key, expected } => {
                check(&key, current.as_ref(), Some(expected))?;
                continue;
            }
            Op::Create { key, value } => {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists(key));
                }
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                };
                (key, EventKind::Put, kv.clone(), Some(kv))
            }
            Op::Update {
                key,
                value,
                expected,
            } => {
                let old = check(&key, current.as_ref(), expected)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: old.create_revision,
                    mod_revision: revision,
                };
                (key, EventKind::Put, kv.clone(), Some(kv))
            }
            Op::Delete { key, expected } => {
                let old = check(&key, current.as_ref(), expected)?;
                let kv = KeyValue {
                    mod_revision: revision,
                    ..old.clone()
                };
                (key, EventKind::Delete, kv, None)
            }
        };
        applied.results.push(kv.clone());
        applied.events.push(Event {
            kind,
            kv,
            prev: current,
        });
        applied.writes.push((key.clone(), new_state.clone()));
        staged.insert(key, new_state);
    }
    Ok(applied)
}

/// The precondition shared by Update and Delete: the key exists and matches `expected`.
fn check<'a>(
    key: &str,
    current: Option<&'a KeyValue>,
    expected: Option<Revision>,
) -> Result<&'a KeyValue, StoreError> {
    let old = current.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
    match expected {
        Some(expected) if expected != old.mod_revision => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual: old.mod_revision,
        }),
        _ => Ok(old),
    }
}

pub(crate) struct Writer<E> {
    pub engine: Arc<E>,
    pub shared: Arc<Shared>,
    pub requests: mpsc::UnboundedReceiver<Request>,
    pub notify: watch::Sender<u64>,
    /// Last committed revision (the writer is its only author).
    pub revision: Revision,
    /// False from a failed commit until the engine recovered (the store's readiness).
    pub healthy: Arc<AtomicBool>,
    /// When recovery was last tried, and the failure it is still recovering from.
    pub failure: Option<(Instant, Arc<EngineError>)>,
}

impl<E: Engine> Writer<E> {
    /// Runs until every request sender is gone (the store was dropped).
    pub(crate) fn run(mut self) {
        let mut batch = Vec::new();
        while let Some(first) = self.requests.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
        tracing::debug!(revision = self.revision, "store writer stopped");
    }

    /// Makes the engine writable again after a failed commit, at most every [`RECOVER_EVERY`].
    fn recover(&mut self) -> Result<(), Arc<EngineError>> {
        let Some((tried, cause)) = &self.failure else {
            return Ok(());
        };
        if tried.elapsed() < RECOVER_EVERY {
            return Err(Arc::clone(cause));
        }
        match self.engine.recover() {
            Ok(()) => {
                tracing::info!(revision = self.revision, "store writable again");
                self.failure = None;
                self.healthy.store(true, Ordering::Release);
                Ok(())
            }
            Err(err) => {
                let err = Arc::new(err);
                self.failure = Some((Instant::now(), Arc::clone(&err)));
                Err(err)
            }
        }
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        if let Err(cause) = self.recover() {
            for Request { reply, .. } in batch.drain(..) {
                let _ = reply.send(Err(StoreError::Backend {
                    action: "recovering storage after a failed commit",
                    source: Arc::clone(&cause),
                }));
            }
            return;
        }
        let mut overlay: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut revision = self.revision;
        let mut outcomes = Vec::with_capacity(batch.len());
        for Request { ops, reply } in batch.drain(..) {
            if ops.is_empty() {
                // A probe: reaching here means the engine takes writes.
                outcomes.push((reply, Ok((Vec::new(), Vec::new()))));
                continue;
            }
            let engine = &self.engine;
            let lookup = |key: &str| match overlay.get(key) {
                Some(v) => Ok(v.clone()),
                None => engine.get(key),
            };
            match apply_txn(ops, revision + 1, &lookup) {
                Ok(Applied {
                    results,
                    events,
                    writes,
                }) => {
                    // Only checks: nothing changed, no revision consumed (as in etcd).
                    if !writes.is_empty() {
                        revision += 1;
                    }
                    overlay.extend(writes);
                    outcomes.push((reply, Ok((results, events))));
                }
                Err(err) => outcomes.push((reply, Err(err))),
            }
        }

        let mut events = Vec::new();
        if revision > self.revision {
            let changes: Vec<Change> = overlay.into_iter().collect();
            match self.engine.commit(revision, &changes) {
                Ok(()) => {
                    self.revision = revision;
                    for (_, outcome) in &mut outcomes {
                        if let Ok((_, evs)) = outcome {
                            events.append(evs);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(
                        error = &err as &dyn std::error::Error,
                        "store commit failed"
                    );
                    // Nothing of the batch is in the engine; every txn that would have
                    // committed fails with the cause, and later ones until it recovers.
                    let err = Arc::new(err);
                    self.healthy.store(false, Ordering::Release);
                    self.failure = Some((Instant::now(), Arc::clone(&err)));
                    for (_, outcome) in &mut outcomes {
                        if outcome.is_ok() {
                            *outcome = Err(StoreError::Backend {
                                action: "committing batch",
                                source: Arc::clone(&err),
                            });
                        }
                    }
                }
            }
        }

        // Publish before answering, so a caller that watches right after its write can replay it.
        if !events.is_empty() {
            let seq = self.shared.publish(self.revision, events);
            self.notify.send_replace(seq);
        }
        for (reply, outcome) in outcomes {
            // A caller that gave up (dropped its future) just does not hear the answer.
            let _ = reply.send(outcome.map(|(results, _)| results));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(key: &str, value: &str, create: Revision, modr: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modr,
        }
    }

    fn state(entries: Vec<KeyValue>) -> impl Fn(&str) -> Result<Option<KeyValue>, EngineError> {
        move |key| Ok(entries.iter().find(|kv| kv.key == key).cloned())
    }

    #[test]
    fn ops_see_earlier_ops_of_same_txn() {
        let lookup = state(vec![]);
        let ops = vec![
            Op::Create {
                key: "/k".into(),
                value: Bytes::from_static(b"1"),
            },
            Op::Update {
                key: "/k".into(),
                value: Bytes::from_static(b"2"),
                expected: Some(7),
            },
            Op::Delete {
                key: "/k".into(),
                expected: None,
            },
        ];
        let applied = apply_txn(ops, 7, &lookup).expect("txn applies");
        assert_eq!(applied.results[1], kv("/k", "2", 7, 7));
        assert_eq!(applied.results[2], kv("/k", "2", 7, 7));
        assert_eq!(applied.events[2].kind, EventKind::Delete);
        assert_eq!(applied.events[2].prev, Some(kv("/k", "2", 7, 7)));
        assert_eq!(applied.writes.last(), Some(&("/k".to_owned(), None)));
    }

    #[test]
    fn update_keeps_create_revision_and_reports_prev() {
        let lookup = state(vec![kv("/k", "old", 2, 4)]);
        let ops = vec![Op::Update {
            key: "/k".into(),
            value: Bytes::from_static(b"new"),
            expected: Some(4),
        }];
        let applied = apply_txn(ops, 9, &lookup).expect("txn applies");
        assert_eq!(applied.results, vec![kv("/k", "new", 2, 9)]);
        assert_eq!(applied.events[0].prev, Some(kv("/k", "old", 2, 4)));
    }

    #[test]
    fn precondition_failures() {
        let lookup = state(vec![kv("/k", "v", 2, 4)]);
        let create = vec![Op::Create {
            key: "/k".into(),
            value: Bytes::new(),
        }];
        assert!(matches!(
            apply_txn(create, 5, &lookup),
            Err(StoreError::AlreadyExists(k)) if k == "/k"
        ));
        let stale = vec![Op::Delete {
            key: "/k".into(),
            expected: Some(3),
        }];
        assert!(matches!(
            apply_txn(stale, 5, &lookup),
            Err(StoreError::Conflict {
                expected: 3,
                actual: 4,
                ..
            })
        ));
        let missing = vec![Op::Update {
            key: "/nope".into(),
            value: Bytes::new(),
            expected: None,
        }];
        assert!(matches!(
            apply_txn(missing, 5, &lookup),
            Err(StoreError::NotFound(k)) if k == "/nope"
        ));
    }

    #[test]
    fn lookup_failure_is_backend_error() {
        let failing = |_: &str| -> Result<Option<KeyValue>, EngineError> {
            Err(EngineError::storage("reading", "disk gone"))
        };
        let ops = vec![Op::Delete {
            key: "/k".into(),
            expected: None,
        }];
        let err = apply_txn(ops, 1, &failing).expect_err("lookup failure propagates");
        assert!(matches!(err, StoreError::Backend { .. }));
        assert_eq!(
            crate::tests::chain(&err),
            [
                "storage backend error: reading key for txn precondition",
                "reading",
                "disk gone"
            ]
        );
    }
}
