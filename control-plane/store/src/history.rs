//! The shared, bounded event history and the cursor-based [`Watch`] that reads it.
//!
//! Every event gets a sequence number (its position in the stream of all events ever
//! published). The history keeps a window of them; a watch is just a cursor into that stream, so
//! watchers copy nothing until they read, and registering a watch is a single look-up under the
//! same lock the writer publishes under (no gap, no duplicate between replay and live).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::types::{Event, Revision};

pub(crate) struct History {
    events: VecDeque<Arc<Event>>,
    /// Sequence number of `events[0]`.
    first_seq: u64,
    /// Every event with revision > `compacted` is retained.
    compacted: Revision,
    bound: usize,
}

impl History {
    pub(crate) fn new(revision: Revision, bound: usize) -> Self {
        Self {
            events: VecDeque::new(),
            first_seq: 0,
            compacted: revision,
            bound: bound.max(1),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }

    pub(crate) fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Appends events (already in revision order) and trims to the bound.
    pub(crate) fn push(&mut self, events: impl IntoIterator<Item = Event>) {
        self.events.extend(events.into_iter().map(Arc::new));
        while self.events.len() > self.bound {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(ev) = self.events.pop_front() {
            self.first_seq += 1;
            // Other events of the same revision may remain, but a resume "after rev - 1" would
            // now miss this one, so the whole revision counts as compacted.
            self.compacted = self.compacted.max(ev.revision());
        }
    }

    /// Drops every event with revision <= `rev`.
    pub(crate) fn compact(&mut self, rev: Revision) {
        while self.events.front().is_some_and(|ev| ev.revision() <= rev) {
            self.pop_front();
        }
        self.compacted = self.compacted.max(rev);
    }

    /// The sequence number a watch resuming after `after` starts at.
    pub(crate) fn start_seq(&self, after: Revision) -> Result<u64, StoreError> {
        if after == 0 {
            return Ok(self.next_seq());
        }
        if after < self.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: self.compacted,
            });
        }
        let skip = self.events.partition_point(|ev| ev.revision() <= after);
        Ok(self.first_seq + skip as u64)
    }

    /// The retained events with revision > `after`, oldest first.
    pub(crate) fn events_after(&self, after: Revision) -> impl Iterator<Item = &Event> {
        let skip = self.events.partition_point(|ev| ev.revision() <= after);
        self.events.range(skip..).map(|ev| &**ev)
    }

    fn get(&self, seq: u64) -> Option<&Arc<Event>> {
        let idx = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.events.get(idx)
    }
}

/// History plus the published revision, shared by the store, its writer and all watches.
pub(crate) struct Shared {
    history: RwLock<History>,
    /// Latest committed revision; only changed while holding the history write lock.
    revision: AtomicU64,
}

impl Shared {
    pub(crate) fn new(revision: Revision, bound: usize) -> Self {
        Self {
            history: RwLock::new(History::new(revision, bound)),
            revision: AtomicU64::new(revision),
        }
    }

    // A poisoned lock can only come from a panic in this module's short, non-panicking
    // critical sections; the data stays consistent, so keep serving it.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, History> {
        self.history.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// Publishes a committed batch: revision and events become visible together.
    pub(crate) fn publish(&self, revision: Revision, events: Vec<Event>) -> u64 {
        let mut history = self.write();
        self.revision.store(revision, Ordering::Release);
        history.push(events);
        history.next_seq()
    }
}

/// A bounded window of events fed by its owner rather than by a store's writer: the API
/// server's watch cache serves every API watch from one such window instead of opening one
/// backend watch per client. Watches read it by cursor, exactly like a store's own history
/// ([`crate::Store::watch`] semantics: resuming before the window is `Compacted`, a watcher
/// overtaken by the bound gets `WatcherLagged`); dropping the log ends them once they have
/// read what was published.
pub struct EventLog {
    shared: Arc<Shared>,
    notify: watch::Sender<u64>,
}

impl EventLog {
    /// An empty window complete from `revision` on, keeping at most `bound` events (at
    /// least 1).
    pub fn new(revision: Revision, bound: usize) -> Self {
        let (notify, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared::new(revision, bound)),
            notify,
        }
    }

    /// Appends the events of revisions up to `revision` (in revision order, ops of one txn in
    /// op order, none at or below the previous publication) and wakes the watches.
    pub fn publish(&self, revision: Revision, events: Vec<Event>) {
        let seq = self.shared.publish(revision, events);
        self.notify.send_replace(seq);
    }

    /// Events under `prefix` with revision > `after` (0: from the last publication on).
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        Watch::register(
            Arc::clone(&self.shared),
            self.notify.subscribe(),
            prefix,
            after,
        )
    }

    /// The oldest revision a watch can resume after.
    pub fn compacted(&self) -> Revision {
        self.shared.read().compacted()
    }

    /// The revision of the last publication.
    pub fn revision(&self) -> Revision {
        self.shared.revision()
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("revision", &self.revision())
            .field("compacted", &self.compacted())
            .finish_non_exhaustive()
    }
}

/// Events a watch examines per history lock acquisition.
const SCAN_CHUNK: usize = 1024;

enum Scan {
    Found(Result<Event, StoreError>),
    /// The chunk ended without a match; more retained events remain.
    More,
    /// Caught up with the head of the history.
    Exhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// The writer is gone: drain what is left, then end.
    Closing,
    Done,
}

/// A stream of events under one prefix. Created by [`crate::Store::watch`].
pub struct Watch {
    inner: Inner,
}

enum Inner {
    /// A cursor into this process's history (memory and redb engines).
    Cursor(HistoryCursor),
    /// Events from elsewhere (an etcd watch), already in revision order.
    Stream(BoxStream<'static, Result<Event, StoreError>>),
}

/// A watch on the in-process history.
struct HistoryCursor {
    shared: Arc<Shared>,
    /// Ticks whenever the writer publishes; closed when the store shuts down.
    notify: watch::Receiver<u64>,
    prefix: String,
    /// Events at or below this revision are skipped (matters when resuming at a future revision).
    after: Revision,
    cursor: u64,
    state: State,
}

impl Watch {
    pub(crate) fn register(
        shared: Arc<Shared>,
        notify: watch::Receiver<u64>,
        prefix: &str,
        after: Revision,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Inner::Cursor(HistoryCursor::register(shared, notify, prefix, after)?),
        })
    }

    /// A watch over events produced elsewhere; the stream must end like [`Watch::next`].
    pub(crate) fn from_stream(stream: BoxStream<'static, Result<Event, StoreError>>) -> Self {
        Self {
            inner: Inner::Stream(stream),
        }
    }

    /// Next event; None if the store shut down. Err(WatcherLagged) once if the watcher fell
    /// behind the history bound (after that the watch ends). Cancel-safe: dropping the future
    /// loses no event.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        match &mut self.inner {
            Inner::Cursor(cursor) => cursor.next().await,
            Inner::Stream(stream) => stream.next().await,
        }
    }

    /// This watch as a `Stream` (ends like [`Watch::next`]).
    pub fn into_stream(self) -> BoxStream<'static, Result<Event, StoreError>> {
        match self.inner {
            Inner::Stream(stream) => stream,
            Inner::Cursor(cursor) => {
                Box::pin(futures::stream::unfold(cursor, |mut c| async move {
                    c.next().await.map(|item| (item, c))
                }))
            }
        }
    }
}

impl HistoryCursor {
    fn register(
        shared: Arc<Shared>,
        notify: watch::Receiver<u64>,
        prefix: &str,
        after: Revision,
    ) -> Result<Self, StoreError> {
        let cursor = shared.read().start_seq(after)?;
        Ok(Self {
            shared,
            notify,
            prefix: prefix.to_owned(),
            after,
            cursor,
            state: State::Open,
        })
    }

    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if self.state == State::Done {
                return None;
            }
            // Mark the current publication as seen *before* scanning, so a publish that lands
            // after the scan still wakes `changed()` below.
            self.notify.borrow_and_update();
            match self.scan() {
                Scan::Found(item) => return Some(item),
                Scan::More => continue,
                Scan::Exhausted => {}
            }
            if self.state == State::Closing {
                self.state = State::Done;
                return None;
            }
            if self.notify.changed().await.is_err() {
                self.state = State::Closing;
            }
        }
    }

    /// Looks for the next matching retained event, advancing the cursor past everything it
    /// examined. Examines at most [`SCAN_CHUNK`] events per call so a watcher with a selective
    /// prefix does not hold the history lock (and block the writer) for a long scan.
    fn scan(&mut self) -> Scan {
        let history = self.shared.read();
        if self.cursor < history.first_seq {
            self.state = State::Done;
            return Scan::Found(Err(StoreError::WatcherLagged));
        }
        for _ in 0..SCAN_CHUNK {
            let Some(ev) = history.get(self.cursor) else {
                return Scan::Exhausted;
            };
            self.cursor += 1;
            if ev.revision() > self.after && ev.kv.key.starts_with(&self.prefix) {
                return Scan::Found(Ok(Event::clone(ev)));
            }
        }
        Scan::More
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Cursor(c) => f
                .debug_struct("Watch")
                .field("prefix", &c.prefix)
                .field("after", &c.after)
                .field("cursor", &c.cursor)
                .finish_non_exhaustive(),
            Inner::Stream(_) => f.debug_struct("Watch").finish_non_exhaustive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EventKind, KeyValue};

    fn ev(key: &str, rev: Revision) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: bytes::Bytes::new(),
                create_revision: rev,
                mod_revision: rev,
            },
            prev: None,
        }
    }

    #[test]
    fn start_seq_from_now_and_from_revision() {
        let mut h = History::new(0, 10);
        h.push([ev("a", 1), ev("b", 2), ev("c", 2), ev("d", 3)]);
        assert_eq!(h.start_seq(0).expect("now"), 4);
        assert_eq!(h.start_seq(1).expect("after 1"), 1);
        assert_eq!(h.start_seq(2).expect("after 2"), 3);
        assert_eq!(h.start_seq(3).expect("after 3"), 4);
        // A future revision starts at the end; the watch filters by revision.
        assert_eq!(h.start_seq(99).expect("future"), 4);
    }

    #[test]
    fn bound_trims_and_marks_whole_revision_compacted() {
        let mut h = History::new(0, 2);
        h.push([ev("a", 1), ev("b", 2), ev("c", 2)]);
        assert_eq!(h.first_seq, 1);
        assert_eq!(h.compacted(), 1);
        h.push([ev("d", 3)]);
        // One event of revision 2 was dropped, so resuming after 1 would miss it.
        assert_eq!(h.compacted(), 2);
        assert!(matches!(
            h.start_seq(1),
            Err(StoreError::Compacted {
                requested: 1,
                oldest: 2
            })
        ));
        assert_eq!(h.start_seq(2).expect("after 2"), 3);
    }

    #[test]
    fn compact_drops_up_to_revision() {
        let mut h = History::new(5, 10);
        assert!(h.start_seq(4).is_err());
        h.push([ev("a", 6), ev("b", 7), ev("c", 8)]);
        h.compact(7);
        assert_eq!(h.compacted(), 7);
        assert_eq!(h.first_seq, 2);
        assert_eq!(h.get(2).map(|e| e.revision()), Some(8));
        assert!(h.get(1).is_none());
        // Compacting to an older revision never moves it back.
        h.compact(3);
        assert_eq!(h.compacted(), 7);
    }

    #[test]
    fn zero_bound_keeps_one_event() {
        let mut h = History::new(0, 0);
        h.push([ev("a", 1), ev("b", 2)]);
        assert_eq!(h.events.len(), 1);
        assert_eq!(h.compacted(), 1);
    }
}
