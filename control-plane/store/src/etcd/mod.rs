//! The etcd engine: the [`Store`] trait over an etcd v3 cluster, so several API servers can
//! share one replicated store (kube-apiserver's model).
//!
//! - etcd's revision is the store revision (an object's resourceVersion); a fresh etcd starts at
//!   revision 1, not 0.
//! - [`Store::txn`] is ONE etcd Txn: a compare per op (create-only: `create_revision == 0`;
//!   expected revision: `mod_revision == r`; must exist: `create_revision > 0`), the puts and
//!   deletes as its success branch (all at one revision), and a read of every key as its failure
//!   branch, from which the first failing op's error is rebuilt. etcd refuses two ops on one key
//!   in a txn, so does this engine ([`StoreError::Backend`]).
//! - History is etcd's MVCC: reads at a revision and watches from a revision are etcd's, and
//!   compaction is etcd's ([`Store::compact`] compacts etcd, for every client). A watch is never
//!   [`StoreError::WatcherLagged`]; it ends with [`StoreError::Compacted`] if etcd compacted past
//!   it.
//! - Unreachable etcd (or no quorum) is [`StoreError::Unavailable`]; the gRPC channel reconnects
//!   by itself, watches re-establish themselves with back-off from the last delivered revision.
//!   Requests go to one member at a time; one that failed before etcd could apply it (connection
//!   refused, member without a leader) moves the store to the next member and is retried there.
//!   Any other failure is returned, since a write may or may not have applied.

mod convert;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};
use tokio::sync::watch as signal;

use crate::Store;
use crate::error::StoreError;
use crate::history::Watch;
use crate::types::{KeyValue, Op, Page, Revision};

use self::convert::{Keys, etcd_rev, store_kv};

/// How long one etcd request may take before it counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest etcd answer accepted (a list of every pod is one message); kube-apiserver's limit.
pub(crate) const MAX_MESSAGE: usize = 0x7fff_ffff;
/// How long [`Store::ready`] waits for etcd.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the etcd cluster is and how to talk to it (kube-apiserver's `--etcd-*` flags).
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379` (`https://` with the TLS files below).
    pub endpoints: Vec<String>,
    /// CA bundle that signed the etcd servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for etcd's client-cert authentication.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Prepended to every store key in etcd (kube-apiserver's `--etcd-prefix`), so several
    /// clusters can share one etcd.
    pub prefix: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: "/registry".to_owned(),
        }
    }
}

/// A [`Store`] on an etcd cluster. Create it with [`EtcdStore::connect`].
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// Tells this store's watches that the store is gone, with its last revision.
    closing: signal::Sender<Option<Revision>>,
}

/// What the store and its watches share.
pub(crate) struct Shared {
    /// One client per member; `current` picks the one in use.
    clients: Vec<Client>,
    /// Each member's KV client, made once: a request clones this rather than the whole client.
    kvs: Vec<KvClient>,
    current: AtomicUsize,
    keys: Keys,
    /// For error messages: which etcd this is.
    endpoints: String,
    endpoint_list: Vec<String>,
    /// The newest revision any response showed.
    revision: AtomicU64,
    /// The newest compaction revision seen (reads below it fail).
    compacted: AtomicU64,
}

impl Shared {
    fn saw_revision(&self, rev: i64) {
        self.revision
            .fetch_max(u64::try_from(rev).unwrap_or(0), Ordering::AcqRel);
    }

    fn saw_compaction(&self, rev: Revision) {
        self.compacted.fetch_max(rev, Ordering::AcqRel);
    }

    fn compacted(&self) -> Revision {
        self.compacted.load(Ordering::Acquire)
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }
}

impl EtcdStore {
    /// Connects to the cluster. An unreachable etcd is not an error here (the API server starts
    /// and reports unready until etcd answers); bad endpoints or unreadable TLS files are.
    pub async fn connect(cfg: EtcdConfig) -> Result<EtcdStore, StoreError> {
        if cfg.endpoints.is_empty() {
            return Err(convert::config_error(
                "no etcd endpoints given",
                "at least one --etcd-servers URL is needed",
            ));
        }
        let options = convert::connect_options(&cfg)?
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_require_leader(true);
        // One client per member, used one at a time (as etcd's Go client pins one endpoint):
        // a balanced channel would keep sending a share of requests to a dead member.
        let mut clients = Vec::with_capacity(cfg.endpoints.len());
        for endpoint in &cfg.endpoints {
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .map_err(|e| convert::config_error("connecting to etcd", e))?;
            clients.push(client);
        }
        let kvs = clients
            .iter()
            .map(|c| c.kv_client().max_decoding_message_size(MAX_MESSAGE))
            .collect();
        let shared = Arc::new(Shared {
            clients,
            kvs,
            current: AtomicUsize::new(0),
            keys: Keys::new(cfg.prefix),
            endpoints: cfg.endpoints.join(","),
            endpoint_list: cfg.endpoints,
            revision: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
        });
        match tokio::time::timeout(READY_TIMEOUT, find_compacted(&shared)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(
                endpoints = %shared.endpoints,
                error = %err,
                "etcd not reachable yet; the store reports unready until it is"
            ),
            Err(_) => tracing::warn!(
                endpoints = %shared.endpoints,
                "etcd did not answer within 3s; the store reports unready until it does"
            ),
        }
        let (closing, _) = signal::channel(None);
        Ok(EtcdStore { shared, closing })
    }
}

impl EtcdStore {
    fn open_watch(&self, prefix: &str, after: Revision, prev: bool) -> Result<Watch, StoreError> {
        let compacted = self.shared.compacted();
        if after != 0 && after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: compacted,
            });
        }
        // "From now" is the newest revision this store has seen: every write it acknowledged.
        let after = if after == 0 {
            self.shared.revision()
        } else {
            after
        };
        Ok(Watch::from_stream(watch::stream(
            self.shared.clone(),
            prefix,
            after,
            prev,
            self.closing.subscribe(),
        )))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.closing.send_replace(Some(self.shared.revision()));
    }
}

/// Learns etcd's current revision and its compaction revision: the oldest revision a range read
/// still works at (etcd does not report it directly), by bisection.
async fn find_compacted(shared: &Shared) -> Result<(), StoreError> {
    let head = etcd_rev(shared.revision_now().await?);
    let (mut lo, mut hi) = (etcd_rev(shared.compacted()).max(1), head);
    // Invariant: reading at `hi` works; below `lo` it does not.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let probe = GetOptions::new().with_revision(mid).with_count_only();
        let key = shared.keys.probe_key();
        match shared
            .call("reading etcd's compaction revision", |mut c| {
                let (key, opts) = (key.clone(), probe.clone());
                async move { c.get(key, Some(opts)).await }
            })
            .await
        {
            Ok(_) => hi = mid,
            Err(StoreError::Compacted { .. }) => lo = mid + 1,
            Err(e) => return Err(e),
        }
    }
    // etcd keeps the state at the compaction revision itself, so reads at `lo` work; a fresh
    // etcd (lo == 1) has compacted nothing.
    if lo > 1 {
        shared.saw_compaction(u64::try_from(lo).unwrap_or(0));
    }
    Ok(())
}

impl Shared {
    /// The client of the member requests go to now, and its index.
    pub(crate) fn client(&self) -> (usize, Client) {
        let i = self.member();
        (i, self.clients[i].clone())
    }

    /// The index of the member requests go to now.
    fn member(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.clients.len()
    }

    /// Moves on from member `failed` (if no other request did already).
    fn fail_over(&self, failed: usize) {
        let next = (failed + 1) % self.clients.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && self.clients.len() > 1
        {
            tracing::warn!(
                failed = %self.endpoint_list[failed],
                next = %self.endpoint_list[next],
                "etcd member unreachable; using the next one"
            );
        }
    }

    /// Runs one etcd request on the current member; if it was refused before reaching etcd
    /// (so it cannot have applied), moves to the next member and retries, once around them all
    /// and once more. Maps the error.
    async fn call<T, F, Fut>(&self, action: &'static str, f: F) -> Result<T, StoreError>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = self.clients.len() + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let member = self.member();
            match f(self.kvs[member].clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < attempts && convert::not_applied(&e) => {
                    tracing::debug!(action, attempt, error = %e, "etcd member refused; retrying");
                    self.fail_over(member);
                    if attempt >= self.clients.len() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => return Err(self.map_err(action, e)),
            }
        }
    }

    fn map_err(&self, action: &'static str, err: etcd_client::Error) -> StoreError {
        convert::map_err(
            action,
            &self.endpoints,
            self.revision(),
            self.compacted(),
            err,
        )
    }

    /// The current revision, asked of etcd (a linearizable read).
    async fn revision_now(&self) -> Result<Revision, StoreError> {
        let resp = self
            .call("reading the etcd revision", |mut c| {
                let key = self.keys.probe_key();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        let rev = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        self.saw_revision(rev);
        Ok(u64::try_from(rev).unwrap_or(0))
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let s = &*self.shared;
        let full = s.keys.full(key);
        let mut resp = s
            .call("reading a key from etcd", |mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await?;
        s.saw_revision(
            resp.header()
                .map_or(0, etcd_client::ResponseHeader::revision),
        );
        resp.take_kvs()
            .into_iter()
            .next()
            .map(|kv| store_kv(&s.keys, &kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let s = &*self.shared;
        let (start, end) = s.keys.range(prefix, "");
        let mut resp = s
            .call("listing keys in etcd", |mut c| {
                let (start, end) = (start.clone(), end.clone());
                async move { c.get(start, Some(GetOptions::new().with_range(end))).await }
            })
            .await?;
        let rev = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        s.saw_revision(rev);
        let kvs = resp
            .take_kvs()
            .iter()
            .map(|kv| store_kv(&s.keys, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((kvs, u64::try_from(rev).unwrap_or(0)))
    }

    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        let s = &*self.shared;
        let (from, end) = s.keys.range(prefix, start);
        let mut opts = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if revision != 0 {
            opts = opts.with_revision(etcd_rev(revision));
        }
        let result = s
            .call("reading a page of keys from etcd", |mut c| {
                let (from, opts) = (from.clone(), opts.clone());
                async move { c.get(from, Some(opts)).await }
            })
            .await;
        let mut resp = match result {
            Err(StoreError::Compacted { .. }) => {
                // Compacted by someone else (another API server): learn how far.
                if let Err(e) = find_compacted(s).await {
                    tracing::debug!(error = %e, "re-reading etcd's compaction revision failed");
                }
                return Err(StoreError::Compacted {
                    requested: revision,
                    oldest: s.compacted(),
                });
            }
            Err(StoreError::FutureRevision { current, .. }) => {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current,
                });
            }
            other => other?,
        };
        let head = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        s.saw_revision(head);
        let kvs = resp
            .take_kvs()
            .iter()
            .map(|kv| store_kv(&s.keys, kv))
            .collect::<Result<Vec<_>, _>>()?;
        let total = u64::try_from(resp.count()).unwrap_or(0);
        Ok(Page {
            revision: if revision == 0 {
                u64::try_from(head).unwrap_or(0)
            } else {
                revision
            },
            more: resp.more(),
            remaining: count.then(|| total.saturating_sub(kvs.len() as u64)),
            kvs,
        })
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let s = &*self.shared;
        convert::check_distinct_keys(&ops)?;
        let resp = s
            .call("committing a transaction to etcd", |mut c| {
                // Built per attempt: one copy of the values, none kept for a retry.
                let txn = build_txn(&s.keys, &ops);
                async move { c.txn(txn).await }
            })
            .await?;
        let rev = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        s.saw_revision(rev);
        convert::txn_result(&s.keys, &ops, &resp, u64::try_from(rev).unwrap_or(0))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.open_watch(prefix, after, true)
    }

    fn watch_without_prev(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.open_watch(prefix, after, false)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(READY_TIMEOUT, self.shared.revision_now()).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(StoreError::Unavailable {
                what: format!(
                    "etcd at {} did not answer within {}s (down, or no quorum)",
                    self.shared.endpoints,
                    READY_TIMEOUT.as_secs()
                ),
                source: None,
            }),
        }
    }

    fn revision(&self) -> Revision {
        self.shared.revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted()
    }

    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        let s = &*self.shared;
        let rev = rev.min(s.revision_now().await?);
        if rev <= s.compacted() {
            return Ok(());
        }
        let result = s
            .call("compacting etcd", |mut c| async move {
                c.compact(etcd_rev(rev), None).await
            })
            .await;
        match result {
            // Someone (another API server) compacted further already.
            Ok(_) | Err(StoreError::Compacted { .. }) => {
                s.saw_compaction(rev);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The etcd Txn for `ops` (see the module docs).
fn build_txn(keys: &Keys, ops: &[Op]) -> Txn {
    let mut when = Vec::with_capacity(ops.len());
    let mut then = Vec::with_capacity(ops.len());
    let mut otherwise = Vec::with_capacity(ops.len());
    for op in ops {
        let full = keys.full(op.key());
        match op {
            Op::Create { value, .. } => {
                when.push(Compare::create_revision(full.clone(), CompareOp::Equal, 0));
                then.push(TxnOp::put(full.clone(), value.to_vec(), None));
            }
            Op::Update {
                value, expected, ..
            } => {
                when.push(exists_at(full.clone(), *expected));
                then.push(TxnOp::put(
                    full.clone(),
                    value.to_vec(),
                    Some(etcd_client::PutOptions::new().with_prev_key()),
                ));
            }
            Op::Delete { expected, .. } => {
                when.push(exists_at(full.clone(), *expected));
                then.push(TxnOp::delete(
                    full.clone(),
                    Some(etcd_client::DeleteOptions::new().with_prev_key()),
                ));
            }
            // Only a compare: nothing to read back when it holds.
            Op::Check { expected, .. } => {
                when.push(exists_at(full.clone(), Some(*expected)));
            }
        }
        otherwise.push(TxnOp::get(full, None));
    }
    Txn::new().when(when).and_then(then).or_else(otherwise)
}

fn exists_at(full: Vec<u8>, expected: Option<Revision>) -> Compare {
    match expected {
        Some(rev) => Compare::mod_revision(full, CompareOp::Equal, etcd_rev(rev)),
        None => Compare::create_revision(full, CompareOp::Greater, 0),
    }
}

/// The value of a put as the store reports it.
pub(crate) fn bytes_of(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}
