use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use kproxy_store::StoreOptions;

use super::*;

/// A store that counts the reads reaching it, so a test can tell the cache answered.
struct Counting {
    inner: Arc<dyn Store>,
    reads: AtomicUsize,
}

impl Counting {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.read();
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.read();
        self.inner.list(prefix).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        // The revision probe reads an empty prefix: not an object read.
        if prefix != PROBE {
            self.read();
        }
        self.inner
            .list_page(prefix, start, limit, revision, count)
            .await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.txn(ops).await
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.inner.watch(prefix, after)
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.inner.compact(rev).await
    }
}

async fn setup(keys: usize) -> (Arc<dyn Store>, Arc<Counting>, Arc<WatchCache>) {
    let store = kproxy_store::memory(StoreOptions::default());
    for i in 0..keys {
        store
            .create(&format!("/registry/pods/ns/p{i:04}"), Bytes::from("v0"))
            .await
            .unwrap();
    }
    let counting = Arc::new(Counting {
        inner: store.clone(),
        reads: AtomicUsize::new(0),
    });
    let cache = WatchCache::start(counting.clone());
    let mut rx = cache.revision.clone();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some))
        .await
        .expect("the cache syncs")
        .unwrap();
    (store, counting, cache)
}

#[tokio::test]
async fn reads_come_from_memory_and_see_every_write() {
    let (store, counting, cache) = setup(2500).await;
    let listed = counting.reads();
    assert!(listed >= 3, "the initial list is paged: {listed} reads");

    // A write through the cache, then one made by another server straight on the store:
    // each is seen by the very next read.
    cache
        .update("/registry/pods/ns/p0001", Bytes::from("v1"), None)
        .await
        .unwrap();
    let got = cache.get("/registry/pods/ns/p0001").await.unwrap().unwrap();
    assert_eq!(got.value, "v1");
    store
        .create("/registry/pods/ns/q", Bytes::from("other"))
        .await
        .unwrap();
    assert_eq!(
        cache
            .get("/registry/pods/ns/q")
            .await
            .unwrap()
            .unwrap()
            .value,
        "other"
    );
    store.delete("/registry/pods/ns/p0002", None).await.unwrap();
    assert_eq!(cache.get("/registry/pods/ns/p0002").await.unwrap(), None);

    let (all, rev) = cache.list("/registry/pods/ns/").await.unwrap();
    let (want, want_rev) = store.list("/registry/pods/ns/").await.unwrap();
    assert_eq!(all, want);
    assert_eq!(rev, want_rev);
    assert_eq!(counting.reads(), listed, "no read reached the store");
}

#[tokio::test]
async fn pages_match_the_store() {
    let (store, counting, cache) = setup(30).await;
    let listed = counting.reads();
    for (start, limit, count) in [
        ("/registry/pods/", 10, true),
        ("/registry/pods/ns/p0025", 10, true),
        ("/registry/pods/ns/p0025", 10, false),
        ("/registry/pods/ns/p0009\0", 5, false),
    ] {
        let got = cache
            .list_page("/registry/pods/", start, limit, 0, count)
            .await
            .unwrap();
        let want = store
            .list_page("/registry/pods/", start, limit, 0, count)
            .await
            .unwrap();
        assert_eq!(got, want, "{start} {limit} {count}");
    }
    assert_eq!(counting.reads(), listed);
    // A later page at the first page's revision is the store's history.
    let rev = store.revision();
    store
        .create("/registry/pods/ns/z", Bytes::from("z"))
        .await
        .unwrap();
    let old = cache
        .list_page("/registry/pods/", "/registry/pods/ns/p0029", 10, rev, false)
        .await
        .unwrap();
    assert_eq!(old.kvs.len(), 1);
    assert_eq!(counting.reads(), listed + 1);
}

#[tokio::test]
async fn a_txn_is_seen_whole() {
    let (store, _, cache) = setup(0).await;
    // Many writers at once while readers check both keys of each txn together.
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .txn(vec![
                        Op::Create {
                            key: format!("/registry/a/{i}"),
                            value: Bytes::from("x"),
                        },
                        Op::Create {
                            key: format!("/registry/b/{i}"),
                            value: Bytes::from("x"),
                        },
                    ])
                    .await
                    .unwrap();
            })
        })
        .collect();
    for _ in 0..50 {
        let (all, _) = cache.list("/registry/").await.unwrap();
        let a = all
            .iter()
            .filter(|kv| kv.key.starts_with("/registry/a/"))
            .count();
        let b = all
            .iter()
            .filter(|kv| kv.key.starts_with("/registry/b/"))
            .count();
        assert_eq!(a, b, "half a txn visible");
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(cache.list("/registry/a/").await.unwrap().0.len(), 20);
}
