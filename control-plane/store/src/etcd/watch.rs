//! Store watches on etcd watches: one etcd watch stream per store watch, re-established with
//! back-off from the last delivered revision when the connection to etcd breaks, so a member
//! failure or an etcd restart costs no event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use futures::stream::BoxStream;
use tokio::sync::watch as signal;

use super::Shared;
use super::convert::{etcd_rev, store_kv};
use crate::error::StoreError;
use crate::types::{Event, EventKind, Revision};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After the store is dropped, a watch ends once etcd has sent nothing for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// Events under `prefix` with revision > `after`, as a stream that ends after `Compacted`,
/// a cancellation by etcd, or once the store is dropped (after delivering the events up to the
/// store's last revision, or what etcd still sends before it falls quiet). With `prev` the
/// events carry etcd's previous value (`prev_kv`, one read of the previous revision per event
/// inside etcd).
pub(crate) fn stream(
    shared: Arc<Shared>,
    prefix: &str,
    after: Revision,
    prev: bool,
    closing: signal::Receiver<Option<Revision>>,
) -> BoxStream<'static, Result<Event, StoreError>> {
    let (key, end) = shared.keys.range(prefix, "");
    let state = State {
        shared,
        key,
        end,
        after,
        prev,
        stream: None,
        pending: VecDeque::new(),
        closing,
        last: None,
        done: false,
        backoff: BACKOFF_MIN,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        s.next().await.map(|item| (item, s))
    }))
}

struct State {
    shared: Arc<Shared>,
    key: Vec<u8>,
    end: Vec<u8>,
    /// Every event at or below this revision has been delivered (or was not asked for).
    after: Revision,
    /// Whether to ask etcd for each event's previous value.
    prev: bool,
    stream: Option<WatchStream>,
    /// Events received from etcd, not yet handed out.
    pending: VecDeque<Event>,
    closing: signal::Receiver<Option<Revision>>,
    /// Set once the store is gone: deliver up to this revision, then end.
    last: Option<Revision>,
    done: bool,
    backoff: Duration,
}

impl State {
    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            if self.done || self.last.is_some_and(|last| self.after >= last) {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                self.open().await;
                continue;
            };
            let message = if self.last.is_some() {
                // The store is gone: deliver what etcd still sends; quiet means done (etcd 3.4's
                // progress reports come before a catching-up watch's events, so they cannot
                // tell).
                match tokio::time::timeout(DRAIN_QUIET, stream.message()).await {
                    Ok(m) => m,
                    Err(_) => return None,
                }
            } else {
                tokio::select! {
                    m = stream.message() => m,
                    changed = self.closing.changed() => {
                        let last = changed.ok().and_then(|()| *self.closing.borrow());
                        self.last = Some(last.unwrap_or_else(|| self.shared.revision()));
                        continue;
                    }
                }
            };
            if let Ok(Some(resp)) = message {
                self.backoff = BACKOFF_MIN;
                if let Some(err) = self.take(&resp) {
                    self.done = true;
                    return Some(Err(err));
                }
            } else {
                // etcd went away (member killed, restarted, connection reset): resume.
                tracing::warn!(after = self.after, "etcd watch broke; re-establishing");
                self.stream = None;
                if self.last.is_some() {
                    return None;
                }
                self.pause().await;
            }
        }
    }

    /// Opens the etcd watch from `after + 1`, retrying with back-off while etcd is unreachable
    /// (the watch stays open, quiet); gives up only once the store is gone.
    async fn open(&mut self) {
        loop {
            let mut opts = WatchOptions::new().with_range(self.end.clone());
            if self.prev {
                opts = opts.with_prev_key();
            }
            if self.after > 0 {
                opts = opts.with_start_revision(etcd_rev(self.after + 1));
            }
            let (member, client) = self.shared.client();
            let mut watcher = client
                .watch_client()
                .max_decoding_message_size(super::MAX_MESSAGE);
            match watcher.watch(self.key.clone(), Some(opts)).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    return;
                }
                Err(e) => {
                    if super::convert::not_applied(&e) {
                        self.shared.fail_over(member);
                    }
                    tracing::warn!(error = %e, after = self.after, "etcd watch failed; retrying");
                    if self.last.is_some() {
                        self.done = true;
                        return;
                    }
                    self.pause().await;
                }
            }
        }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Queues the events of one response; an error ends the watch.
    fn take(&mut self, resp: &WatchResponse) -> Option<StoreError> {
        let head = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        self.shared.saw_revision(head);
        if resp.compact_revision() > 0 {
            let oldest = u64::try_from(resp.compact_revision()).unwrap_or(0);
            self.shared.saw_compaction(oldest);
            return Some(StoreError::Compacted {
                requested: self.after,
                oldest,
            });
        }
        if resp.canceled()
            && resp
                .cancel_reason()
                .contains("required revision has been compacted")
        {
            return Some(StoreError::Compacted {
                requested: self.after,
                oldest: self.shared.compacted(),
            });
        }
        if resp.canceled() {
            return Some(StoreError::Unavailable {
                what: format!("etcd cancelled the watch: {}", resp.cancel_reason()),
                source: None,
            });
        }
        if resp.events().is_empty() {
            // The creation answer or a progress report.
            return None;
        }
        for ev in resp.events() {
            match convert_event(&self.shared, ev) {
                Ok(ev) => {
                    self.after = self.after.max(ev.revision());
                    self.pending.push_back(ev);
                }
                Err(e) => return Some(e),
            }
        }
        None
    }
}

fn convert_event(shared: &Shared, ev: &etcd_client::Event) -> Result<Event, StoreError> {
    let missing = || StoreError::Unavailable {
        what: "etcd sent a watch event without its key".to_owned(),
        source: None,
    };
    let kv = store_kv(&shared.keys, ev.kv().ok_or_else(missing)?)?;
    let prev = ev
        .prev_kv()
        .map(|p| store_kv(&shared.keys, p))
        .transpose()?;
    Ok(match ev.event_type() {
        EventType::Put => Event {
            kind: EventKind::Put,
            kv,
            prev,
        },
        EventType::Delete => Event {
            kind: EventKind::Delete,
            // The last value, at the delete's revision (etcd's tombstone has no value).
            kv: prev.clone().map_or(kv.clone(), |p| crate::types::KeyValue {
                mod_revision: kv.mod_revision,
                ..p
            }),
            prev,
        },
    })
}
