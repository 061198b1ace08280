//! The redb store under storage faults: a full disk fails writes (and readiness) without
//! losing or inventing anything, and the store recovers by itself once writes work again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redb::StorageBackend;
use redb::backends::FileBackend;

use crate::redb_engine::{Opener, RedbEngine};
use crate::tests::{TempDir, chain};
use crate::{Store, StoreError, StoreOptions};

/// The file, with switches: `full` fails every write as ENOSPC; `lie` makes the next sync
/// fail after it made everything durable (the worst case: a commit reported failed that is
/// on disk).
#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    full: Arc<AtomicBool>,
    lie: Arc<AtomicBool>,
}

fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}

impl StorageBackend for Faulty {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        self.file.sync_data(eventual)?;
        if self.lie.swap(false, Ordering::SeqCst) {
            return Err(std::io::Error::other("sync reported failure after syncing"));
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        self.file.write(offset, data)
    }
}

struct Switches {
    full: Arc<AtomicBool>,
    lie: Arc<AtomicBool>,
}

fn faulty_store(path: &Path) -> (Arc<dyn Store>, Switches) {
    let full = Arc::new(AtomicBool::new(false));
    let lie = Arc::new(AtomicBool::new(false));
    let (f, l, p) = (Arc::clone(&full), Arc::clone(&lie), path.to_path_buf());
    let opener: Opener = Box::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)?;
        redb::Builder::new().create_with_backend(Faulty {
            file: FileBackend::new(file)?,
            full: Arc::clone(&f),
            lie: Arc::clone(&l),
        })
    });
    let engine = RedbEngine::open_with(path, opener).expect("open faulty redb");
    let store = crate::with_engine(engine, StoreOptions::default()).expect("store");
    (store, Switches { full, lie })
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn keys(s: &dyn Store) -> Vec<String> {
    let (kvs, _) = s.list("/").await.expect("list");
    kvs.into_iter().map(|kv| kv.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_writes_and_readiness_then_recovers() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    {
        let (s, sw) = faulty_store(&path);
        s.create("/a", b("1")).await.expect("create a");
        s.ready().await.expect("ready");

        sw.full.store(true, Ordering::SeqCst);
        let err = s.create("/b", b("2")).await.expect_err("disk full");
        assert!(matches!(err, StoreError::Backend { .. }), "{err}");
        assert!(
            chain(&err).iter().any(|m| m.contains("No space left")),
            "{:?}",
            chain(&err)
        );
        let unready = s.ready().await.expect_err("unready while writes fail");
        eprintln!("unready: {:?}", chain(&unready));
        // Later writes fail too, and reads still answer from before the failure.
        assert!(s.create("/c", b("3")).await.is_err());
        assert_eq!(keys(s.as_ref()).await, ["/a"]);
        assert_eq!(s.revision(), 1, "failed writes take no revision");

        sw.full.store(false, Ordering::SeqCst);
        // Recovery is retried at most every half second.
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.ready().await.expect("ready once space returns");
        let d = s.create("/d", b("4")).await.expect("writes work again");
        assert_eq!(d.mod_revision, 2, "revisions continue without a gap");
        assert_eq!(keys(s.as_ref()).await, ["/a", "/d"]);
    }
    let s = crate::open_redb(&path, StoreOptions::default()).expect("reopen");
    assert_eq!(keys(s.as_ref()).await, ["/a", "/d"]);
    assert_eq!(s.revision(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_reported_failed_is_undone_on_recovery() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    {
        let (s, sw) = faulty_store(&path);
        s.create("/a", b("1")).await.expect("create a");
        sw.lie.store(true, Ordering::SeqCst);
        s.update("/a", b("lost"), None)
            .await
            .expect_err("the commit reports failure");
        s.create("/b", b("2"))
            .await
            .expect_err("the writer recovers first");
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.ready().await.expect("recovered");
        let a = s.get("/a").await.expect("get").expect("a");
        assert_eq!(a.value, b("1"), "the failed update is not visible");
        let c = s.create("/c", b("3")).await.expect("create c");
        assert_eq!(c.mod_revision, 2);
    }
    let s = crate::open_redb(&path, StoreOptions::default()).expect("reopen");
    let a = s.get("/a").await.expect("get").expect("a");
    assert_eq!((a.value, a.mod_revision), (b("1"), 1), "undone on disk too");
    assert_eq!(keys(s.as_ref()).await, ["/a", "/c"]);
}

#[tokio::test]
async fn damaged_file_is_a_corrupt_file_error_not_a_panic() {
    let dir = TempDir::new();
    let path = dir.path().join("store.redb");
    {
        let s = crate::open_redb(&path, StoreOptions::default()).expect("create");
        for i in 0..50 {
            s.create(&format!("/k{i}"), b(&"v".repeat(500)))
                .await
                .expect("create");
        }
    }
    let mut raw = std::fs::read(&path).expect("read");
    for off in (4096..raw.len()).step_by(97) {
        raw[off] ^= 0xff;
    }
    std::fs::write(&path, &raw).expect("damage");
    let err = crate::open_redb(&path, StoreOptions::default())
        .err()
        .expect("a damaged file does not open");
    let msg = err.to_string();
    assert!(
        msg.contains("is corrupt") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
}
