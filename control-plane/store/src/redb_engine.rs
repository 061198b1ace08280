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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use redb::{Database, DatabaseError, Durability, ReadTransaction, StorageError, TableDefinition};

use crate::catch::catch;
use crate::engine::{Change, Engine};
use crate::error::EngineError;
use crate::memory::MemoryEngine;
use crate::types::{KeyValue, Revision};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
const HEADER_LEN: usize = 16;
const REDB_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// Opens the database file (again): at start, and to recover after a failed commit.
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send + Sync>;

pub(crate) struct RedbEngine {
    path: PathBuf,
    open_db: Opener,
    /// `None` after a failed commit until [`Engine::recover`] reopens the file: after an I/O
    /// error redb refuses every further write until the database is reopened.
    db: Mutex<Option<Database>>,
    cache: MemoryEngine,
    /// Keys of commits that failed since the last recovery. redb may have made such a batch
    /// durable before failing, so recovery puts these keys back as the cache has them.
    unsure: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoned only by a redb panic, which is caught and leaves the guarded value droppable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedbEngine {
    pub(crate) fn open(path: &Path) -> Result<Self, EngineError> {
        let file = path.to_path_buf();
        // redb's default page cache may grow to 1 GiB; the API server's memory budget is tens of
        // MB, the OS page cache already holds the file, and reads come from the engine's
        // in-memory copy, so redb's cache only serves writes: 2 MiB instead of 8 took RSS with
        // 10,000 pods from 52 to 47 MiB at the same creates/s (bench api, side by side).
        let open_db: Opener = Box::new(move || {
            redb::Builder::new()
                .set_cache_size(REDB_CACHE_BYTES)
                .create(&file)
        });
        Self::open_with(path, open_db)
    }

    /// Opens the database with `open_db` (tests pass one over a failing backend).
    pub(crate) fn open_with(path: &Path, open_db: Opener) -> Result<Self, EngineError> {
        // A damaged file can make redb panic while opening or reading it.
        catch(|| Self::open_checked(path, open_db)).unwrap_or_else(|panic| {
            Err(EngineError::CorruptFile {
                path: path.to_path_buf(),
                source: panic.into(),
            })
        })
    }

    fn open_checked(path: &Path, open_db: Opener) -> Result<Self, EngineError> {
        let db = open_db().map_err(|e| {
            if is_corruption(&e) {
                EngineError::CorruptFile {
                    path: path.to_path_buf(),
                    source: e.into(),
                }
            } else {
                EngineError::storage(format!("opening redb database {}", path.display()), e)
            }
        })?;
        // Whatever fails from here on reads pages of the file: it is damaged or unreadable.
        let (all, revision) = init_and_load(&db).map_err(|e| EngineError::CorruptFile {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let cache = MemoryEngine::default();
        let changes: Vec<Change> = all
            .into_iter()
            .map(|kv| (kv.key.clone(), Some(kv)))
            .collect();
        cache.commit(revision, &changes)?;
        Ok(Self {
            path: path.to_path_buf(),
            open_db,
            db: Mutex::new(Some(db)),
            cache,
            unsure: Mutex::new(BTreeSet::new()),
        })
    }

    /// Reopens the file and makes its content equal to the cache (what was reported committed).
    fn reopen(&self) -> Result<Database, EngineError> {
        let db = (self.open_db)().map_err(|e| {
            EngineError::storage(
                format!("reopening redb database {}", self.path.display()),
                e,
            )
        })?;
        let revision = self.cache.revision()?;
        let on_disk = read_revision(&read(&db)?)?;
        if on_disk != revision {
            let unsure = lock(&self.unsure);
            let mut changes = Vec::with_capacity(unsure.len());
            for key in unsure.iter() {
                changes.push((key.clone(), self.cache.get(key)?));
            }
            tracing::warn!(
                on_disk,
                revision,
                keys = changes.len(),
                "store file holds a batch whose commit failed; undoing it"
            );
            write(&db, revision, &changes)?;
        }
        Ok(db)
    }
}

/// Whether opening failed because the file is not a (sound) redb database.
fn is_corruption(e: &DatabaseError) -> bool {
    match e {
        DatabaseError::Storage(StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(StorageError::Io(io)) => {
            io.kind() == std::io::ErrorKind::InvalidData
        }
        _ => false,
    }
}

/// Creates both tables (so readers never see a missing table) and reads everything.
fn init_and_load(db: &Database) -> Result<(Vec<KeyValue>, Revision), EngineError> {
    let mut txn = db
        .begin_write()
        .map_err(at("starting initial write transaction"))?;
    txn.set_durability(Durability::Immediate);
    txn.open_table(KV).map_err(at("creating table kv"))?;
    txn.open_table(META).map_err(at("creating table meta"))?;
    txn.commit().map_err(at("committing initial tables"))?;
    load(db, "")
}

/// Keys under `prefix` and the revision, read from the database itself.
fn load(db: &Database, prefix: &str) -> Result<(Vec<KeyValue>, Revision), EngineError> {
    // One read transaction for both, so the revision matches the listed snapshot.
    let txn = read(db)?;
    let revision = read_revision(&txn)?;
    let table = txn.open_table(KV).map_err(at("opening table kv"))?;
    let mut out = Vec::new();
    for entry in table
        .range::<&str>(prefix..)
        .map_err(|e| EngineError::storage(format!("listing {prefix:?}"), e))?
    {
        let (k, v) = entry.map_err(|e| EngineError::storage(format!("listing {prefix:?}"), e))?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        out.push(decode(key, v.value())?);
    }
    Ok((out, revision))
}

fn read(db: &Database) -> Result<ReadTransaction, EngineError> {
    db.begin_read().map_err(at("starting read transaction"))
}

/// Writes `changes` and `revision` in one durable transaction.
fn write(db: &Database, revision: Revision, changes: &[Change]) -> Result<(), EngineError> {
    let mut txn = db.begin_write().map_err(at("starting write transaction"))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut kv = txn.open_table(KV).map_err(at("opening table kv"))?;
        for (key, change) in changes {
            match change {
                Some(value) => {
                    kv.insert(key.as_str(), encode(value).as_slice())
                        .map_err(|e| EngineError::storage(format!("writing {key:?}"), e))?;
                }
                None => {
                    kv.remove(key.as_str())
                        .map_err(|e| EngineError::storage(format!("deleting {key:?}"), e))?;
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(at("opening table meta"))?;
        meta.insert(REVISION_KEY, revision)
            .map_err(at("writing revision"))?;
    }
    txn.commit().map_err(at("committing write transaction"))
}

fn read_revision(txn: &ReadTransaction) -> Result<Revision, EngineError> {
    let meta = txn.open_table(META).map_err(at("opening table meta"))?;
    let rev = meta.get(REVISION_KEY).map_err(at("reading revision"))?;
    Ok(rev.map_or(0, |g| g.value()))
}

pub(crate) fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

pub(crate) fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, EngineError> {
    let header = raw
        .split_first_chunk::<8>()
        .and_then(|(create, rest)| Some((create, rest.split_first_chunk::<8>()?)));
    let Some((create, (modr, value))) = header else {
        return Err(EngineError::Corrupt {
            key: key.to_owned(),
            reason: format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                raw.len()
            ),
        });
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        create_revision: u64::from_le_bytes(*create),
        mod_revision: u64::from_le_bytes(*modr),
    })
}

/// A redb failure as an [`EngineError`] that says what the engine was doing.
fn at<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    action: &'static str,
) -> impl FnOnce(E) -> EngineError {
    move |e| EngineError::storage(action, e)
}

/// Closes a database that failed; its drop writes allocator state and may fail (or, on a
/// damaged file, panic) again, which changes nothing: the next open repairs the file.
fn close(db: Database) {
    let _ = catch(move || drop(db));
}

impl Engine for RedbEngine {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, EngineError> {
        self.cache.get(key)
    }

    fn scan(
        &self,
        prefix: &str,
        start: &str,
        visit: &mut dyn FnMut(&KeyValue) -> bool,
    ) -> Result<Revision, EngineError> {
        self.cache.scan(prefix, start, visit)
    }

    fn revision(&self) -> Result<Revision, EngineError> {
        self.cache.revision()
    }

    fn commit(&self, revision: Revision, changes: &[Change]) -> Result<(), EngineError> {
        let mut db = lock(&self.db);
        let Some(open) = db.as_ref() else {
            return Err(EngineError::storage(
                "committing write transaction",
                "the store file was not reopened after a failed commit",
            ));
        };
        let result = catch(|| write(open, revision, changes)).unwrap_or_else(|panic| {
            Err(EngineError::CorruptFile {
                path: self.path.clone(),
                source: panic.into(),
            })
        });
        if let Err(err) = result {
            lock(&self.unsure).extend(changes.iter().map(|(key, _)| key.clone()));
            if let Some(failed) = db.take() {
                close(failed);
            }
            return Err(err);
        }
        // Visible to readers only once durable.
        self.cache.commit(revision, changes)
    }

    fn recover(&self) -> Result<(), EngineError> {
        let mut db = lock(&self.db);
        if db.is_some() {
            return Ok(());
        }
        let reopened = catch(|| self.reopen()).unwrap_or_else(|panic| {
            Err(EngineError::CorruptFile {
                path: self.path.clone(),
                source: panic.into(),
            })
        })?;
        lock(&self.unsure).clear();
        *db = Some(reopened);
        Ok(())
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
