//! Translation between the store's types and etcd's: keys under the prefix, revisions, txn
//! results and errors.

use std::collections::HashSet;
use std::sync::Arc;

use etcd_client::{ConnectOptions, TxnOpResponse, TxnResponse};

use super::{EtcdConfig, bytes_of};
use crate::error::{EngineError, StoreError};
use crate::types::{KeyValue, Op, Revision};

/// Store keys ↔ etcd keys: etcd key = prefix + store key.
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    pub(crate) fn full(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len());
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(key.as_bytes());
        out
    }

    /// The etcd range `[from, end)` of the keys under `prefix` that are `>= start`.
    pub(crate) fn range(&self, prefix: &str, start: &str) -> (Vec<u8>, Vec<u8>) {
        let first = self.full(prefix);
        let end = prefix_end(&first);
        let from = if start > prefix {
            self.full(start)
        } else {
            first
        };
        (from, end)
    }

    /// A key no object uses, for reads that only want a response header.
    pub(crate) fn probe_key(&self) -> Vec<u8> {
        self.full("\0kproxy-probe")
    }

    /// The store key of an etcd key, or None if it is not under the prefix.
    pub(crate) fn store_key(&self, full: &[u8]) -> Result<String, StoreError> {
        let rest = full
            .strip_prefix(self.prefix.as_bytes())
            .ok_or_else(|| corrupt(full, "outside the configured etcd prefix"))?;
        String::from_utf8(rest.to_vec()).map_err(|_| corrupt(full, "key is not UTF-8"))
    }
}

/// The first key after every key starting with `prefix` ("\0" = no end: all keys).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn corrupt(full: &[u8], reason: &str) -> StoreError {
    StoreError::backend(
        "reading etcd",
        EngineError::Corrupt {
            key: String::from_utf8_lossy(full).into_owned(),
            reason: reason.to_owned(),
        },
    )
}

/// A store revision as etcd's signed one.
pub(crate) fn etcd_rev(rev: Revision) -> i64 {
    i64::try_from(rev).unwrap_or(i64::MAX)
}

fn store_rev(rev: i64) -> Revision {
    u64::try_from(rev).unwrap_or(0)
}

pub(crate) fn store_kv(keys: &Keys, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: keys.store_key(kv.key())?,
        value: bytes_of(kv.value()),
        create_revision: store_rev(kv.create_revision()),
        mod_revision: store_rev(kv.mod_revision()),
    })
}

pub(crate) fn config_error(
    what: &'static str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::backend(what, EngineError::storage("etcd configuration", cause))
}

/// Client options with the TLS files of `cfg`.
pub(crate) fn connect_options(cfg: &EtcdConfig) -> Result<ConnectOptions, StoreError> {
    let options = ConnectOptions::new();
    if cfg.ca_file.is_none() && cfg.cert_file.is_none() && cfg.key_file.is_none() {
        return Ok(options);
    }
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|e| {
            StoreError::backend(
                "reading etcd TLS files",
                EngineError::storage(format!("reading {}", path.display()), e),
            )
        })
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &cfg.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(config_error(
                "etcd client certificate",
                "--etcd-certfile and --etcd-keyfile must be given together",
            ));
        }
    }
    Ok(options.with_tls(tls))
}

/// Whether the request certainly did not apply: it never reached etcd (connection refused), or
/// the member refused it for having no leader (`require_leader`).
pub(crate) fn not_applied(err: &etcd_client::Error) -> bool {
    let text = chain(err);
    text.contains("tcp connect error")
        || text.contains("error trying to connect")
        || text.contains("etcdserver: no leader")
}

/// An error and its sources, joined with ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// Maps an etcd client error; Compacted and FutureRevision carry `requested: 0` (the caller
/// knows which revision it asked for).
pub(crate) fn map_err(
    action: &'static str,
    endpoints: &str,
    current: Revision,
    compacted: Revision,
    err: etcd_client::Error,
) -> StoreError {
    let unavailable = match &err {
        etcd_client::Error::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("required revision has been compacted") {
                return StoreError::Compacted {
                    requested: 0,
                    oldest: compacted,
                };
            }
            if msg.contains("required revision is a future revision") {
                return StoreError::FutureRevision {
                    requested: 0,
                    current,
                };
            }
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || msg.contains("no leader")
                // tonic's status for a connection broken mid-request (etcd killed).
                || msg == "transport error"
                || msg.contains("leader changed")
                || msg.contains("request timed out")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    } || not_applied(&err);
    if unavailable {
        StoreError::Unavailable {
            what: format!("{action}: etcd at {endpoints} is unavailable"),
            source: Some(Arc::new(err)),
        }
    } else {
        StoreError::backend(
            action,
            EngineError::storage(format!("etcd at {endpoints}"), err),
        )
    }
}

/// etcd refuses a txn that touches a key twice; say so before sending it.
pub(crate) fn check_distinct_keys(ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::backend(
                "committing a transaction to etcd",
                EngineError::storage(
                    format!("key {:?} appears twice in one transaction", op.key()),
                    "etcd allows one operation per key in a transaction",
                ),
            ));
        }
    }
    Ok(())
}

/// The store's result of a committed (or refused) etcd txn built by `super::build_txn`.
pub(crate) fn txn_result(
    keys: &Keys,
    ops: &[Op],
    resp: &TxnResponse,
    rev: Revision,
) -> Result<Vec<KeyValue>, StoreError> {
    let responses = resp.op_responses();
    if !resp.succeeded() {
        return Err(failed_compare(ops, &responses));
    }
    // The success branch has one response per write op (a check only compares).
    ops.iter()
        .filter(|op| !matches!(op, Op::Check { .. }))
        .zip(&responses)
        .map(|(op, r)| match (op, r) {
            (Op::Create { key, value }, _) => Ok(KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            }),
            (Op::Update { key, value, .. }, TxnOpResponse::Put(put)) => Ok(KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: put
                    .prev_key()
                    .map_or(rev, |p| store_rev(p.create_revision())),
                mod_revision: rev,
            }),
            (Op::Delete { key, .. }, TxnOpResponse::Delete(del)) => {
                let prev = del.prev_kvs().first().ok_or_else(|| unexpected(key))?;
                let mut kv = store_kv(keys, prev)?;
                kv.mod_revision = rev;
                Ok(kv)
            }
            (op, _) => Err(unexpected(op.key())),
        })
        .collect()
}

/// The error of the first op whose compare failed, from the failure branch's reads.
fn failed_compare(ops: &[Op], responses: &[TxnOpResponse]) -> StoreError {
    for (op, r) in ops.iter().zip(responses) {
        let TxnOpResponse::Get(get) = r else {
            return unexpected(op.key());
        };
        let current = get.kvs().first();
        let key = op.key().to_owned();
        match (op, current) {
            (Op::Create { .. }, Some(_)) => return StoreError::AlreadyExists(key),
            (Op::Update { .. } | Op::Delete { .. } | Op::Check { .. }, None) => {
                return StoreError::NotFound(key);
            }
            (
                Op::Update {
                    expected: Some(expected),
                    ..
                }
                | Op::Delete {
                    expected: Some(expected),
                    ..
                }
                | Op::Check { expected, .. },
                Some(kv),
            ) if store_rev(kv.mod_revision()) != *expected => {
                return StoreError::Conflict {
                    key,
                    expected: *expected,
                    actual: store_rev(kv.mod_revision()),
                };
            }
            _ => {}
        }
    }
    StoreError::backend(
        "committing a transaction to etcd",
        EngineError::storage(
            "etcd refused the transaction",
            "its compare failed, yet every key matched when read back",
        ),
    )
}

fn unexpected(key: &str) -> StoreError {
    StoreError::backend(
        "committing a transaction to etcd",
        EngineError::Corrupt {
            key: key.to_owned(),
            reason: "etcd answered with an unexpected response for this op".to_owned(),
        },
    )
}
