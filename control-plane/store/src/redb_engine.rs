//! Durable engine on redb.
//!
//! Layout: table `kv` maps the key to a 16-byte header (create_revision, mod_revision; both
//! little-endian u64) followed by the value; table `meta` holds the current revision under
//! `revision`. The revision is written in the same write transaction as the data, so a crash
//! leaves either the whole batch (and its revision) or nothing.
//!
//! Reads are served from an in-memory copy (the memory engine), loaded at open and updated
//! after each durable commit — the role the watch cache plays in Kubernetes: a read never
//! pays for a redb transaction, and the working set of a small cluster fits in memory.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use redb::{Database, Durability, ReadTransaction, TableDefinition};

use crate::engine::{Change, Engine};
use crate::memory::MemoryEngine;
use crate::types::{KeyValue, Revision};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
const HEADER_LEN: usize = 16;
const REDB_CACHE_BYTES: usize = 8 * 1024 * 1024;

pub(crate) struct RedbEngine {
    db: Database,
    cache: MemoryEngine,
}

impl RedbEngine {
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        // redb's default page cache may grow to 1 GiB; the API server's memory budget is tens of
        // MB, and the OS page cache already holds the file.
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
            .with_context(|| format!("opening redb database {}", path.display()))?;
        // Create both tables up front so readers never see a missing table.
        let mut txn = db
            .begin_write()
            .context("starting initial write transaction")?;
        txn.set_durability(Durability::Immediate);
        txn.open_table(KV).context("creating table kv")?;
        txn.open_table(META).context("creating table meta")?;
        txn.commit().context("committing initial tables")?;
        let engine = Self {
            db,
            cache: MemoryEngine::default(),
        };
        let (all, revision) = engine.load("")?;
        let changes: Vec<Change> = all
            .into_iter()
            .map(|kv| (kv.key.clone(), Some(kv)))
            .collect();
        engine.cache.commit(revision, &changes)?;
        Ok(engine)
    }

    /// Keys under `prefix` and the revision, read from the database itself.
    fn load(&self, prefix: &str) -> anyhow::Result<(Vec<KeyValue>, Revision)> {
        // One read transaction for both, so the revision matches the listed snapshot.
        let txn = self.read()?;
        let revision = read_revision(&txn)?;
        let table = txn.open_table(KV).context("opening table kv")?;
        let mut out = Vec::new();
        for entry in table
            .range::<&str>(prefix..)
            .with_context(|| format!("listing {prefix:?}"))?
        {
            let (k, v) = entry.with_context(|| format!("listing {prefix:?}"))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(decode(key, v.value())?);
        }
        Ok((out, revision))
    }

    fn read(&self) -> anyhow::Result<ReadTransaction> {
        self.db.begin_read().context("starting read transaction")
    }
}

fn read_revision(txn: &ReadTransaction) -> anyhow::Result<Revision> {
    let meta = txn.open_table(META).context("opening table meta")?;
    let rev = meta.get(REVISION_KEY).context("reading revision")?;
    Ok(rev.map_or(0, |g| g.value()))
}

pub(crate) fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

pub(crate) fn decode(key: &str, raw: &[u8]) -> anyhow::Result<KeyValue> {
    if raw.len() < HEADER_LEN {
        bail!(
            "corrupt record for key {key:?}: {} bytes, shorter than the {HEADER_LEN}-byte header",
            raw.len()
        );
    }
    let (create, rest) = raw.split_at(8);
    let (modr, value) = rest.split_at(8);
    let word = |b: &[u8]| -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(
            b.try_into().context("header word is not 8 bytes")?,
        ))
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        create_revision: word(create)?,
        mod_revision: word(modr)?,
    })
}

impl Engine for RedbEngine {
    fn get(&self, key: &str) -> anyhow::Result<Option<KeyValue>> {
        self.cache.get(key)
    }

    fn scan(
        &self,
        prefix: &str,
        start: &str,
        visit: &mut dyn FnMut(&KeyValue) -> bool,
    ) -> anyhow::Result<Revision> {
        self.cache.scan(prefix, start, visit)
    }

    fn revision(&self) -> anyhow::Result<Revision> {
        self.cache.revision()
    }

    fn commit(&self, revision: Revision, changes: &[Change]) -> anyhow::Result<()> {
        let mut txn = self
            .db
            .begin_write()
            .context("starting write transaction")?;
        txn.set_durability(Durability::Immediate);
        {
            let mut kv = txn.open_table(KV).context("opening table kv")?;
            for (key, change) in changes {
                match change {
                    Some(value) => {
                        kv.insert(key.as_str(), encode(value).as_slice())
                            .with_context(|| format!("writing {key:?}"))?;
                    }
                    None => {
                        kv.remove(key.as_str())
                            .with_context(|| format!("deleting {key:?}"))?;
                    }
                }
            }
            let mut meta = txn.open_table(META).context("opening table meta")?;
            meta.insert(REVISION_KEY, revision)
                .context("writing revision")?;
        }
        txn.commit().context("committing write transaction")?;
        // Visible to readers only once durable.
        self.cache.commit(revision, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip() {
        let kv = KeyValue {
            key: "/a".into(),
            value: Bytes::from_static(b"{\"x\":1}"),
            create_revision: 3,
            mod_revision: 0x0102_0304_0506_0708,
        };
        let raw = encode(&kv);
        assert_eq!(raw.len(), HEADER_LEN + kv.value.len());
        assert_eq!(&raw[..8], &3u64.to_le_bytes());
        assert_eq!(decode("/a", &raw).expect("decode"), kv);
    }

    #[test]
    fn decode_empty_value() {
        let kv = KeyValue {
            key: "/e".into(),
            value: Bytes::new(),
            create_revision: 1,
            mod_revision: 1,
        };
        assert_eq!(decode("/e", &encode(&kv)).expect("decode"), kv);
    }

    #[test]
    fn decode_rejects_short_record() {
        let err = decode("/bad", &[1, 2, 3]).expect_err("short record must fail");
        assert!(err.to_string().contains("corrupt record"), "{err}");
        assert!(decode("/bad", &[]).is_err());
        assert!(decode("/bad", &[0; HEADER_LEN - 1]).is_err());
    }
}
