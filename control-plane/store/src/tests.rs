//! Behaviour tests: one body per scenario, run against the memory, the redb and the etcd backend
//! (a real etcd per test; its revisions are shifted by the fresh etcd's revision 1, see
//! [`crate::etcd_tests::Offset`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{
    EngineError, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, StoreOptions, Watch,
};

/// A unique directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "kproxy-store-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Backend {
    Memory,
    Redb(TempDir),
    Etcd(crate::testutil::EtcdCluster),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redb(_) => "redb",
            Backend::Etcd(_) => "etcd",
        }
    }

    /// A store; `history` bounds the in-process history (etcd keeps its own).
    async fn open(&self, history: usize) -> Arc<dyn Store> {
        let opts = StoreOptions { history };
        match self {
            Backend::Memory => crate::memory(opts),
            Backend::Redb(dir) => {
                crate::open_redb(&dir.path().join("store.redb"), opts).expect("open redb store")
            }
            Backend::Etcd(cluster) => crate::etcd_tests::Offset::fresh(cluster.store().await),
        }
    }

    async fn store(&self) -> Arc<dyn Store> {
        self.open(StoreOptions::default().history).await
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut Watch) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch produced nothing within 10s")
}

async fn expect_event(w: &mut Watch) -> Event {
    match next_event(w).await {
        Some(Ok(ev)) => ev,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Asserts that nothing is pending on the watch right now.
async fn expect_quiet(w: &mut Watch) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), w.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

async fn create_get_list(be: &Backend) {
    let s = be.store().await;
    assert_eq!(s.revision(), 0);
    for key in [
        "/registry/pods/default/web-2",
        "/registry/pods/default/web-1",
        "/registry/pods/default-x/a",
        "/registry/pods/kube-system/dns",
        "/registry/services/default/web",
    ] {
        s.create(key, b(key)).await.expect("create");
    }
    assert_eq!(s.revision(), 5);

    let kv = s
        .get("/registry/pods/default/web-1")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(kv.value, b("/registry/pods/default/web-1"));
    assert_eq!((kv.create_revision, kv.mod_revision), (2, 2));
    assert_eq!(
        s.get("/registry/pods/default/nope").await.expect("get"),
        None
    );

    let (pods, rev) = s.list("/registry/pods/").await.expect("list");
    assert_eq!(rev, 5);
    assert_eq!(
        keys(&pods),
        [
            "/registry/pods/default-x/a",
            "/registry/pods/default/web-1",
            "/registry/pods/default/web-2",
            "/registry/pods/kube-system/dns",
        ]
    );
    let (default, _) = s.list("/registry/pods/default/").await.expect("list");
    assert_eq!(
        keys(&default),
        [
            "/registry/pods/default/web-1",
            "/registry/pods/default/web-2"
        ]
    );
    let (all, _) = s.list("").await.expect("list all");
    assert_eq!(all.len(), 5);
    let (none, rev) = s.list("/registry/nodes/").await.expect("list empty");
    assert!(none.is_empty());
    assert_eq!(rev, 5);
}

async fn create_twice_already_exists(be: &Backend) {
    let s = be.store().await;
    let first = s.create("/a", b("1")).await.expect("create");
    let err = s
        .create("/a", b("2"))
        .await
        .expect_err("second create fails");
    assert!(
        matches!(&err, StoreError::AlreadyExists(k) if k == "/a"),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(s.revision(), 1, "a failed txn consumes no revision");
    assert_eq!(s.get("/a").await.expect("get"), Some(first));
}

async fn update_semantics(be: &Backend) {
    let s = be.store().await;
    let created = s.create("/a", b("v1")).await.expect("create");
    let updated = s
        .update("/a", b("v2"), Some(created.mod_revision))
        .await
        .expect("update with current revision");
    assert_eq!(updated.create_revision, 1);
    assert_eq!(updated.mod_revision, 2);

    let err = s
        .update("/a", b("stale"), Some(created.mod_revision))
        .await
        .expect_err("stale update fails");
    assert!(
        matches!(&err, StoreError::Conflict { key, expected: 1, actual: 2 } if key == "/a"),
        "{err}"
    );
    assert_eq!(s.get("/a").await.expect("get"), Some(updated.clone()));
    assert_eq!(s.revision(), 2);

    let unconditional = s.update("/a", b("v3"), None).await.expect("update");
    assert_eq!(unconditional.mod_revision, 3);
    assert_eq!(unconditional.value, b("v3"));

    let err = s
        .update("/missing", b("x"), None)
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, StoreError::NotFound(k) if k == "/missing"),
        "{err}"
    );
    assert_eq!(s.revision(), 3);
}

async fn multi_op_txn(be: &Backend) {
    let s = be.store().await;
    s.create("/c", b("c0")).await.expect("create");
    let mut w = s.watch("/", s.revision()).expect("watch");

    // Fails on the last op: nothing of it may be visible.
    let err = s
        .txn(vec![
            Op::Create {
                key: "/a".into(),
                value: b("a"),
            },
            Op::Update {
                key: "/c".into(),
                value: b("c1"),
                expected: None,
            },
            Op::Delete {
                key: "/missing".into(),
                expected: None,
            },
        ])
        .await
        .expect_err("txn fails");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(s.revision(), 1);
    assert_eq!(s.get("/a").await.expect("get"), None);
    assert_eq!(
        s.get("/c").await.expect("get").map(|kv| kv.value),
        Some(b("c0"))
    );
    expect_quiet(&mut w).await;

    // Succeeds: every op at one revision, events in op order.
    let out = s
        .txn(vec![
            Op::Create {
                key: "/b".into(),
                value: b("b"),
            },
            Op::Create {
                key: "/a".into(),
                value: b("a"),
            },
            Op::Delete {
                key: "/c".into(),
                expected: Some(1),
            },
        ])
        .await
        .expect("txn applies");
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|kv| kv.mod_revision == 2));
    assert_eq!(out[2].value, b("c0"), "delete returns the last value");
    assert_eq!(s.revision(), 2);
    let evs = [
        expect_event(&mut w).await,
        expect_event(&mut w).await,
        expect_event(&mut w).await,
    ];
    assert_eq!(
        evs.iter()
            .map(|e| (e.kv.key.as_str(), e.kind, e.revision()))
            .collect::<Vec<_>>(),
        [
            ("/b", EventKind::Put, 2),
            ("/a", EventKind::Put, 2),
            ("/c", EventKind::Delete, 2)
        ]
    );

    // An empty txn is a no-op.
    assert!(s.txn(vec![]).await.expect("empty txn").is_empty());
    assert_eq!(s.revision(), 2);
}

async fn check_op(be: &Backend) {
    let s = be.store().await;
    s.create("/ns", b("n")).await.expect("create");
    let mut w = s.watch("/", s.revision()).expect("watch");
    let create = |key: &str| Op::Create {
        key: key.into(),
        value: b("x"),
    };
    let check = |expected| Op::Check {
        key: "/ns".into(),
        expected,
    };
    // The checked key unchanged: the txn commits, the check writes nothing and has no result.
    let out = s
        .txn(vec![check(1), create("/a")])
        .await
        .expect("txn applies");
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].key.as_str(), out[0].mod_revision), ("/a", 2));
    assert_eq!(
        s.get("/ns").await.expect("get").map(|kv| kv.mod_revision),
        Some(1)
    );
    assert_eq!(s.revision(), 2);
    let ev = expect_event(&mut w).await;
    assert_eq!((ev.kv.key.as_str(), ev.revision()), ("/a", 2));
    expect_quiet(&mut w).await;
    // Changed or gone: nothing applies.
    s.update("/ns", b("n2"), None).await.expect("update");
    let err = s
        .txn(vec![create("/b"), check(1)])
        .await
        .expect_err("stale check");
    assert!(
        matches!(err, StoreError::Conflict { ref key, expected: 1, actual: 3 } if key == "/ns"),
        "{err}"
    );
    s.delete("/ns", None).await.expect("delete");
    let err = s
        .txn(vec![create("/b"), check(3)])
        .await
        .expect_err("missing");
    assert!(
        matches!(err, StoreError::NotFound(ref k) if k == "/ns"),
        "{err}"
    );
    assert_eq!(s.get("/b").await.expect("get"), None);
}

async fn delete_semantics(be: &Backend) {
    let s = be.store().await;
    s.create("/a", b("v1")).await.expect("create");
    let last = s.update("/a", b("v2"), None).await.expect("update");
    let err = s.delete("/a", Some(1)).await.expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    let deleted = s.delete("/a", Some(2)).await.expect("delete");
    assert_eq!(deleted.value, b("v2"));
    assert_eq!(deleted.create_revision, 1);
    assert_eq!(deleted.mod_revision, 3);
    assert_eq!(s.get("/a").await.expect("get"), None);
    let err = s.delete("/a", None).await.expect_err("already gone");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    // Re-creating starts a new life: new create_revision.
    let again = s.create("/a", b("v3")).await.expect("recreate");
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    assert_ne!(again, last);
}

async fn watch_from_now(be: &Backend) {
    let s = be.store().await;
    s.create("/p/old", b("x")).await.expect("create");
    let mut w = s.watch("/p/", 0).expect("watch");
    expect_quiet(&mut w).await;

    s.create("/p/a", b("1")).await.expect("create");
    s.create("/q/other", b("1"))
        .await
        .expect("create outside prefix");
    s.update("/p/a", b("2"), None).await.expect("update");
    s.delete("/p/a", None).await.expect("delete");

    let put = expect_event(&mut w).await;
    assert_eq!(put.kind, EventKind::Put);
    assert_eq!((put.kv.key.as_str(), put.revision()), ("/p/a", 2));
    assert_eq!(put.prev, None);

    let upd = expect_event(&mut w).await;
    assert_eq!(upd.revision(), 4);
    assert_eq!(upd.prev.as_ref().map(|p| p.mod_revision), Some(2));

    let del = expect_event(&mut w).await;
    assert_eq!(del.kind, EventKind::Delete);
    assert_eq!(del.kv.value, b("2"));
    assert_eq!(del.kv.mod_revision, 5);
    assert_eq!(del.kv.create_revision, 2);
    assert_eq!(del.prev.as_ref().map(|p| p.mod_revision), Some(4));
    expect_quiet(&mut w).await;
}

async fn watch_from_past_revision(be: &Backend) {
    let s = be.store().await;
    for i in 1..=5 {
        s.create(&format!("/k/{i}"), b("v")).await.expect("create");
    }
    let mut w = s.watch("/k/", 2).expect("watch after 2");
    // Live writes interleave with the replay.
    s.create("/k/6", b("v")).await.expect("create");
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 7..=20 {
                s.create(&format!("/k/{i}"), b("v")).await.expect("create");
            }
        })
    };
    let mut revs = Vec::new();
    for _ in 3..=20 {
        revs.push(expect_event(&mut w).await.revision());
    }
    writer.await.expect("writer task");
    assert_eq!(
        revs,
        (3..=20).collect::<Vec<Revision>>(),
        "no gaps, no dups"
    );
    expect_quiet(&mut w).await;

    // Resuming at the current revision replays nothing; at a future revision it skips ahead.
    let mut at_head = s.watch("/k/", s.revision()).expect("watch at head");
    expect_quiet(&mut at_head).await;
    let mut future = s.watch("/k/", s.revision() + 2).expect("watch future");
    for i in 21..=23 {
        s.create(&format!("/k/{i}"), b("v")).await.expect("create");
    }
    assert_eq!(expect_event(&mut at_head).await.revision(), 21);
    assert_eq!(expect_event(&mut future).await.revision(), 23);
}

async fn watch_skips_long_runs_of_other_keys(be: &Backend) {
    let s = be.store().await;
    let mut live = s.watch("/x/", 0).expect("watch");
    // Far more non-matching events than one history scan chunk.
    let noise = (0..3000)
        .map(|i| Op::Create {
            key: format!("/y/{i}"),
            value: b("n"),
        })
        .collect();
    s.txn(noise).await.expect("noise txn");
    s.create("/x/1", b("hit")).await.expect("create");
    let mut replay = s.watch("/x/", 0).expect("watch");
    let ev = expect_event(&mut live).await;
    assert_eq!((ev.kv.key.as_str(), ev.revision()), ("/x/1", 2));
    expect_quiet(&mut live).await;
    expect_quiet(&mut replay).await;
    let mut from_start = s.watch("/x/", 1).expect("watch after noise");
    assert_eq!(expect_event(&mut from_start).await.kv.key, "/x/1");
}

async fn compacted_history(be: &Backend) {
    let s = be.open(4).await;
    for i in 1..=10 {
        s.create(&format!("/k/{i}"), b("v")).await.expect("create");
    }
    // Events 7..=10 are retained, so one can resume after 6 but not before.
    assert_eq!(s.compacted_revision(), 6);
    let err = s.watch("/k/", 1).expect_err("too old");
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 1,
                oldest: 6
            }
        ),
        "{err}"
    );
    let mut w = s.watch("/k/", 6).expect("oldest resumable");
    assert_eq!(expect_event(&mut w).await.revision(), 7);

    // Explicit compaction.
    s.compact(8).await.expect("compact");
    assert_eq!(s.compacted_revision(), 8);
    assert!(matches!(
        s.watch("/k/", 7),
        Err(StoreError::Compacted { oldest: 8, .. })
    ));
    let mut w2 = s.watch("/k/", 8).expect("after compaction point");
    assert_eq!(expect_event(&mut w2).await.revision(), 9);
    // Compaction is clamped to the head and never goes backwards.
    s.compact(1_000).await.expect("compact beyond head");
    assert_eq!(s.compacted_revision(), 10);
    s.compact(2).await.expect("compact backwards");
    assert_eq!(s.compacted_revision(), 10);
    // The watcher that was at 7 has been overtaken by the compaction.
    assert!(matches!(
        next_event(&mut w).await,
        Some(Err(StoreError::WatcherLagged))
    ));
    // Data is untouched by compaction.
    assert_eq!(s.list("/k/").await.expect("list").0.len(), 10);
}

/// The key right after `key` in the store's order: where the next page starts.
fn after(key: &str) -> String {
    format!("{key}\0")
}

async fn list_pages_at_one_revision(be: &Backend) {
    let s = be.store().await;
    for i in 0..25 {
        let key = format!("/r/pods/k{i:02}");
        s.create(&key, b("v1")).await.expect("create");
    }
    s.create("/r/podsx/other", b("x")).await.expect("create");
    s.create("/r/a-before", b("x")).await.expect("create");

    let p1 = s
        .list_page("/r/pods/", "", 10, 0, true)
        .await
        .expect("page 1");
    let rev = p1.revision;
    assert_eq!(rev, s.revision());
    assert_eq!(p1.kvs.len(), 10);
    assert_eq!(p1.kvs[0].key, "/r/pods/k00");
    assert!(p1.more);
    assert_eq!(p1.remaining, Some(15));

    // Changes between pages: none of them may show up in the pages read at `rev`.
    s.create("/r/pods/k05a", b("new")).await.expect("create");
    s.create("/r/pods/k12a", b("new")).await.expect("create");
    s.delete("/r/pods/k15", None).await.expect("delete");
    s.update("/r/pods/k20", b("v2"), None)
        .await
        .expect("update");
    s.delete("/r/pods/k21", None).await.expect("delete");
    s.create("/r/pods/k21", b("recreated"))
        .await
        .expect("recreate");
    s.create("/r/pods/k99", b("new")).await.expect("create");

    let p2 = s
        .list_page("/r/pods/", &after(&p1.kvs[9].key), 10, rev, true)
        .await
        .expect("page 2");
    assert_eq!(p2.revision, rev);
    assert_eq!(
        keys(&p2.kvs),
        (10..20)
            .map(|i| format!("/r/pods/k{i:02}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        p2.kvs[5].value,
        b("v1"),
        "deleted key read at the old revision"
    );
    assert_eq!((p2.more, p2.remaining), (true, Some(5)));

    let p3 = s
        .list_page("/r/pods/", &after(&p2.kvs[9].key), 10, rev, true)
        .await
        .expect("page 3");
    assert_eq!(
        keys(&p3.kvs),
        (20..25)
            .map(|i| format!("/r/pods/k{i:02}"))
            .collect::<Vec<_>>()
    );
    assert!(p3.kvs.iter().all(|kv| kv.value == b("v1")), "{p3:?}");
    assert_eq!(
        (p3.kvs[1].create_revision, p3.kvs[1].mod_revision),
        (22, 22),
        "k21 as it was, not as recreated"
    );
    assert_eq!((p3.more, p3.remaining), (false, Some(0)));

    // The current revision sees the changes; without `count` nothing is counted.
    let now = s
        .list_page("/r/pods/", &after("/r/pods/k12"), 3, 0, false)
        .await
        .expect("current page");
    assert_eq!(now.revision, s.revision());
    assert_eq!(
        keys(&now.kvs),
        ["/r/pods/k12a", "/r/pods/k13", "/r/pods/k14"]
    );
    assert_eq!((now.more, now.remaining), (true, None));
    let tail = s
        .list_page("/r/pods/", "/r/pods/k2", 100, 0, true)
        .await
        .expect("tail");
    assert_eq!(
        keys(&tail.kvs),
        [
            "/r/pods/k20",
            "/r/pods/k21",
            "/r/pods/k22",
            "/r/pods/k23",
            "/r/pods/k24",
            "/r/pods/k99"
        ]
    );
    assert_eq!(tail.kvs[0].value, b("v2"));
    assert_eq!(tail.kvs[1].value, b("recreated"));
    // A start before the prefix starts at the prefix.
    let first = s
        .list_page("/r/pods/", "/", 1, rev, false)
        .await
        .expect("start before prefix");
    assert_eq!(keys(&first.kvs), ["/r/pods/k00"]);

    let future = s
        .list_page("/r/pods/", "", 1, s.revision() + 1, false)
        .await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "{future:?}"
    );
    s.compact(rev + 1).await.expect("compact");
    let old = s.list_page("/r/pods/", "", 10, rev, true).await;
    assert!(
        matches!(old, Err(StoreError::Compacted { requested, .. }) if requested == rev),
        "{old:?}"
    );
}

/// Paged reads at every past revision equal the full list taken at that revision, over a
/// pseudo-random mix of creates, updates and deletes (several per txn).
async fn list_pages_match_snapshots(be: &Backend) {
    let s = be.store().await;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut snapshots: Vec<(Revision, Vec<KeyValue>)> = Vec::new();
    for round in 0..120 {
        let (current, _) = s.list("/p/").await.expect("list");
        let present: HashSet<String> = current.iter().map(|kv| kv.key.clone()).collect();
        let mut ops = Vec::new();
        let mut touched = HashSet::new();
        for _ in 0..=next(3) {
            let key = format!("/p/{:02}", next(40));
            if !touched.insert(key.clone()) {
                continue;
            }
            let value = b(&format!("r{round}"));
            ops.push(if !present.contains(&key) {
                Op::Create { key, value }
            } else if next(3) == 0 {
                Op::Delete {
                    key,
                    expected: None,
                }
            } else {
                Op::Update {
                    key,
                    value,
                    expected: None,
                }
            });
        }
        s.txn(ops).await.expect("txn");
        let (kvs, rev) = s.list("/p/").await.expect("list");
        snapshots.push((rev, kvs));
    }
    for (rev, want) in &snapshots {
        for limit in [1, 3, 7, 100] {
            let mut got = Vec::new();
            let mut start = String::new();
            loop {
                let page = s
                    .list_page("/p/", &start, limit, *rev, true)
                    .await
                    .expect("page");
                assert_eq!(page.revision, *rev);
                got.extend(page.kvs.iter().cloned());
                assert_eq!(page.remaining, Some((want.len() - got.len()) as u64));
                assert_eq!(page.more, got.len() < want.len());
                match page.kvs.last() {
                    Some(last) if page.more => start = after(&last.key),
                    _ => break,
                }
            }
            assert_eq!(&got, want, "revision {rev}, limit {limit}");
        }
    }
}

async fn lagging_watcher(be: &Backend) {
    let s = be.open(4).await;
    let mut slow = s.watch("/", 0).expect("watch");
    s.create("/a", b("1")).await.expect("create");
    assert_eq!(expect_event(&mut slow).await.revision(), 1);
    for i in 0..10 {
        s.create(&format!("/b{i}"), b("v")).await.expect("create");
    }
    assert!(matches!(
        next_event(&mut slow).await,
        Some(Err(StoreError::WatcherLagged))
    ));
    // Reported once; then the watch is over.
    assert!(next_event(&mut slow).await.is_none());
}

async fn watch_ends_when_store_dropped(be: &Backend) {
    let s = be.store().await;
    let mut w = s.watch("/", 0).expect("watch");
    s.create("/a", b("1")).await.expect("create");
    drop(s);
    // Already-published events still arrive, then the stream ends.
    assert_eq!(expect_event(&mut w).await.kv.key, "/a");
    assert!(next_event(&mut w).await.is_none());
}

async fn racing_writers_same_key(be: &Backend) {
    let s = be.store().await;
    // These land in the same batch; each must see the earlier ones.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.create("/contended", b(&i.to_string())).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    let rev = s.revision();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(
                async move { s.update("/contended", b(&format!("u{i}")), Some(rev)).await },
            )
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(s.revision(), rev + 1);
}

async fn concurrent_writers_and_watchers(be: &Backend) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 40;
    const TOTAL: usize = TASKS * PER_TASK;
    let s = be.store().await;
    let watchers: Vec<_> = (0..4).map(|_| s.watch("/c/", 0).expect("watch")).collect();
    let writers: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let key = format!("/c/{t}/{i}");
                    s.create(&key, b("v")).await.expect("create");
                    if i % 4 == 0 {
                        s.delete(&key, None).await.expect("delete");
                    }
                }
            })
        })
        .collect();
    // One more watcher joins mid-way, resuming from a list.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, mid) = s.list("/c/").await.expect("list");
    let mut late = s.watch("/c/", mid).expect("late watch");
    for w in writers {
        w.await.expect("writer task");
    }
    let deletes = TASKS * PER_TASK.div_ceil(4);
    let final_rev = s.revision();
    assert_eq!(usize::try_from(final_rev), Ok(TOTAL + deletes));

    for mut w in watchers {
        let mut seen = HashSet::new();
        let mut last = 0;
        for _ in 0..TOTAL + deletes {
            let ev = expect_event(&mut w).await;
            assert!(
                ev.revision() > last,
                "strictly increasing for single-op txns"
            );
            last = ev.revision();
            assert!(
                seen.insert((ev.kv.key.clone(), ev.kind)),
                "duplicate {ev:?}"
            );
        }
        assert_eq!(last, final_rev);
        expect_quiet(&mut w).await;
    }
    let mut expected_rev = mid + 1;
    while expected_rev <= final_rev {
        assert_eq!(expect_event(&mut late).await.revision(), expected_rev);
        expected_rev += 1;
    }
    expect_quiet(&mut late).await;
}

/// list → watch(list revision) under concurrent writes reconstructs exactly the final state.
async fn list_then_watch_is_gapless(be: &Backend) {
    let s = be.store().await;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                s.create(&format!("/r/{i:04}"), b("v"))
                    .await
                    .expect("create");
            }
        })
    };
    loop {
        let (items, rev) = s.list("/r/").await.expect("list");
        if rev == 0 {
            // Listed before the first write: a watch from 0 means "from now" (see
            // `Store::watch`), which may start after that write. List again.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let mut w = s.watch("/r/", rev).expect("watch at list revision");
        let mut state: HashMap<String, Revision> = items
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect();
        assert_eq!(
            state.len() as Revision,
            rev,
            "list snapshot matches its revision"
        );
        let target = rev + 3;
        let mut next_rev = rev + 1;
        while next_rev <= target.min(300) {
            let ev = expect_event(&mut w).await;
            assert_eq!(ev.revision(), next_rev, "gap or duplicate after list");
            let rev = ev.revision();
            assert!(state.insert(ev.kv.key, rev).is_none());
            next_rev += 1;
        }
        if rev >= 300 {
            break;
        }
    }
    writer.await.expect("writer");
}

async fn throughput(be: &Backend) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 100;
    let s = be.store().await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    s.create(&format!("/registry/pods/ns{t}/pod-{i}"), b("{}"))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = start.elapsed();
    let total = TASKS * PER_TASK;
    assert_eq!(usize::try_from(s.revision()), Ok(total));
    println!(
        "{} backend: {total} single-op creates from {TASKS} tasks in {:.3}s = {:.0} creates/s",
        be.name(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::Memory).await;
                }
            )*
        }
        mod redb_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::Redb(super::TempDir::new())).await;
                }
            )*
        }
    };
}

/// The same scenarios on a real single-member etcd (skipped without etcd outside CI). Not here:
/// `compacted_history` and `lagging_watcher`, which are about the bounded in-process history;
/// etcd's compaction is tested in `etcd_tests`.
macro_rules! etcd_tests {
    ($($name:ident),* $(,)?) => {
        mod etcd_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(etcd) = crate::testutil::EtcdCluster::single().await else {
                        return;
                    };
                    super::$name(&super::Backend::Etcd(etcd)).await;
                }
            )*
        }
    };
}

etcd_tests!(
    create_get_list,
    create_twice_already_exists,
    update_semantics,
    multi_op_txn,
    check_op,
    delete_semantics,
    watch_from_now,
    watch_from_past_revision,
    watch_skips_long_runs_of_other_keys,
    list_pages_at_one_revision,
    list_pages_match_snapshots,
    watch_ends_when_store_dropped,
    racing_writers_same_key,
    concurrent_writers_and_watchers,
    list_then_watch_is_gapless,
    throughput,
);

backend_tests!(
    create_get_list,
    create_twice_already_exists,
    update_semantics,
    multi_op_txn,
    check_op,
    delete_semantics,
    watch_from_now,
    watch_from_past_revision,
    watch_skips_long_runs_of_other_keys,
    compacted_history,
    list_pages_at_one_revision,
    list_pages_match_snapshots,
    lagging_watcher,
    watch_ends_when_store_dropped,
    racing_writers_same_key,
    concurrent_writers_and_watchers,
    list_then_watch_is_gapless,
    throughput,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_persists_across_reopen() {
    let dir = TempDir::new();
    let be = Backend::Redb(dir);
    {
        let s = be.store().await;
        s.create("/a", b("1")).await.expect("create");
        s.create("/b", b("2")).await.expect("create");
        s.update("/a", b("3"), Some(1)).await.expect("update");
        s.delete("/b", None).await.expect("delete");
        assert_eq!(s.revision(), 4);
    }
    let s = be.store().await;
    assert_eq!(s.revision(), 4, "revision survives restart");
    assert_eq!(
        s.compacted_revision(),
        4,
        "history does not survive restart"
    );
    let a = s.get("/a").await.expect("get").expect("present");
    assert_eq!((a.value, a.create_revision, a.mod_revision), (b("3"), 1, 3));
    assert_eq!(s.get("/b").await.expect("get"), None);
    assert!(matches!(
        s.watch("/", 2),
        Err(StoreError::Compacted {
            requested: 2,
            oldest: 4
        })
    ));
    let mut w = s.watch("/", 4).expect("watch at restart revision");
    let c = s.create("/c", b("x")).await.expect("create after reopen");
    assert_eq!(c.mod_revision, 5, "revision continues");
    assert_eq!(expect_event(&mut w).await.revision(), 5);
    let (all, rev) = s.list("/").await.expect("list");
    assert_eq!(keys(&all), ["/a", "/c"]);
    assert_eq!(rev, 5);
}

#[tokio::test]
async fn redb_open_rejects_garbage_file() {
    let dir = TempDir::new();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, b"this is not a redb file at all").expect("write garbage");
    let err = crate::open_redb(&path, StoreOptions::default())
        .err()
        .expect("garbage file must not open");
    assert!(err.to_string().contains("garbage.redb"), "{err}");
}

#[test]
fn error_messages_are_descriptive() {
    let conflict = StoreError::Conflict {
        key: "/k".into(),
        expected: 3,
        actual: 5,
    };
    assert_eq!(
        conflict.to_string(),
        "conflict on key \"/k\": expected mod_revision 3, found 5"
    );
    let gone = StoreError::Compacted {
        requested: 2,
        oldest: 9,
    };
    assert!(gone.to_string().contains("revision 2 has been compacted"));
    let backend = StoreError::backend(
        "reading key",
        EngineError::storage("starting read transaction", "io failure"),
    );
    assert_eq!(
        chain(&backend),
        [
            "storage backend error: reading key",
            "starting read transaction",
            "io failure"
        ]
    );
}

/// An error and its sources, outermost first.
pub(crate) fn chain(err: &dyn std::error::Error) -> Vec<String> {
    std::iter::successors(Some(err), |e| e.source())
        .map(ToString::to_string)
        .collect()
}
