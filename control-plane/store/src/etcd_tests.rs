//! The etcd engine against real etcd processes: compaction, a member killed mid-writes in a
//! 3-member cluster, etcd down and back, and kill -9 of etcd itself. The shared behaviour tests
//! (tests.rs) also run on etcd, through [`Offset`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::task::JoinHandle;

use crate::testutil::EtcdCluster;
use crate::{EtcdStore, Event, KeyValue, Op, Page, Revision, Store, StoreError, Watch};

/// A store whose revisions are shifted by `base`: a fresh etcd is at revision 1 where the other
/// engines start at 0, so the shared behaviour tests (which expect exact revisions) see etcd
/// through this. Every revision going in is raised by `base`, every one coming out lowered.
pub(crate) struct Offset {
    inner: EtcdStore,
    base: Revision,
}

impl Offset {
    /// Wraps a store on an etcd nothing has written to yet.
    pub(crate) fn fresh(inner: EtcdStore) -> Arc<dyn Store> {
        let base = inner.revision();
        assert_eq!(base, 1, "a fresh etcd is at revision 1");
        Arc::new(Offset { inner, base })
    }

    fn up(&self, rev: Revision) -> Revision {
        if rev == 0 { 0 } else { rev + self.base }
    }

    fn down(&self, rev: Revision) -> Revision {
        rev.saturating_sub(self.base)
    }

    fn kv(&self, mut kv: KeyValue) -> KeyValue {
        kv.create_revision = self.down(kv.create_revision);
        kv.mod_revision = self.down(kv.mod_revision);
        kv
    }

    fn err(&self, e: StoreError) -> StoreError {
        shift_err(e, self.base)
    }
}

fn shift_err(e: StoreError, base: Revision) -> StoreError {
    let down = |r: Revision| r.saturating_sub(base);
    match e {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => StoreError::Conflict {
            key,
            expected: down(expected),
            actual: down(actual),
        },
        StoreError::Compacted { requested, oldest } => StoreError::Compacted {
            requested: down(requested),
            oldest: down(oldest),
        },
        StoreError::FutureRevision { requested, current } => StoreError::FutureRevision {
            requested: down(requested),
            current: down(current),
        },
        other => other,
    }
}

#[async_trait::async_trait]
impl Store for Offset {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let kv = self.inner.get(key).await.map_err(|e| self.err(e))?;
        Ok(kv.map(|kv| self.kv(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let (kvs, rev) = self.inner.list(prefix).await.map_err(|e| self.err(e))?;
        Ok((
            kvs.into_iter().map(|kv| self.kv(kv)).collect(),
            self.down(rev),
        ))
    }

    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        let page = self
            .inner
            .list_page(prefix, start, limit, self.up(revision), count)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Page {
            kvs: page.kvs.into_iter().map(|kv| self.kv(kv)).collect(),
            revision: self.down(page.revision),
            ..page
        })
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Update {
                    key,
                    value,
                    expected,
                } => Op::Update {
                    key,
                    value,
                    expected: expected.map(|r| r + self.base),
                },
                Op::Delete { key, expected } => Op::Delete {
                    key,
                    expected: expected.map(|r| r + self.base),
                },
                Op::Check { key, expected } => Op::Check {
                    key,
                    expected: expected + self.base,
                },
                create @ Op::Create { .. } => create,
            })
            .collect();
        let kvs = self.inner.txn(ops).await.map_err(|e| self.err(e))?;
        Ok(kvs.into_iter().map(|kv| self.kv(kv)).collect())
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let base = self.base;
        let watch = self
            .inner
            .watch(prefix, self.up(after))
            .map_err(|e| self.err(e))?;
        let shifted = watch.into_stream().map(move |item| {
            item.map(|mut ev: Event| {
                for kv in std::iter::once(&mut ev.kv).chain(ev.prev.as_mut()) {
                    kv.create_revision = kv.create_revision.saturating_sub(base);
                    kv.mod_revision = kv.mod_revision.saturating_sub(base);
                }
                ev
            })
            .map_err(|e| shift_err(e, base))
        });
        Ok(Watch::from_stream(Box::pin(shifted)))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }

    fn revision(&self) -> Revision {
        self.down(self.inner.revision())
    }

    fn compacted_revision(&self) -> Revision {
        self.down(self.inner.compacted_revision())
    }

    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.inner.compact(rev + self.base).await
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn expect_event(w: &mut Watch) -> Result<Event, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch produced nothing within 10s")
        .expect("watch ended")
}

/// Waits until `cond` holds, checking every 50 ms, for at most `secs`.
async fn eventually(secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {secs}s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_is_etcds_and_seen_by_every_store() {
    let Some(etcd) = EtcdCluster::single().await else {
        return;
    };
    let s = etcd.store().await;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            s.create(&format!("/k/{i}"), b("v"))
                .await
                .expect("create")
                .mod_revision,
        );
    }
    let head = s.revision();
    assert_eq!(
        s.compacted_revision(),
        0,
        "a fresh etcd has compacted nothing"
    );
    let mut old_watch = s.watch("/k/", revs[1]).expect("watch before compaction");
    assert_eq!(
        expect_event(&mut old_watch)
            .await
            .expect("event")
            .revision(),
        revs[2]
    );

    s.compact(revs[7]).await.expect("compact");
    assert_eq!(s.compacted_revision(), revs[7]);
    assert!(matches!(
        s.watch("/k/", revs[6]),
        Err(StoreError::Compacted { requested, oldest }) if requested == revs[6] && oldest == revs[7]
    ));
    let page = s.list_page("/k/", "", 100, revs[5], false).await;
    assert!(
        matches!(page, Err(StoreError::Compacted { requested, .. }) if requested == revs[5]),
        "{page:?}"
    );
    let at = s
        .list_page("/k/", "", 100, revs[7], true)
        .await
        .expect("read at the compaction revision");
    assert_eq!((at.kvs.len(), at.remaining), (8, Some(0)));
    let mut w = s
        .watch("/k/", revs[7])
        .expect("watch at the compaction revision");
    assert_eq!(
        expect_event(&mut w).await.expect("event").revision(),
        revs[8]
    );
    // A watch that was open before has had its events already: compaction does not end it.
    assert_eq!(
        expect_event(&mut old_watch)
            .await
            .expect("event")
            .revision(),
        revs[3]
    );

    // Clamped to the head, never backwards.
    s.compact(head + 1_000).await.expect("compact beyond head");
    assert_eq!(s.compacted_revision(), head);
    s.compact(revs[2]).await.expect("compact backwards");
    assert_eq!(s.compacted_revision(), head);

    // Another store (another API server) learns the compaction revision when it connects...
    let other = etcd.store().await;
    assert_eq!(other.compacted_revision(), head);
    assert_eq!(other.revision(), head);
    // ...and one that connected before it learns it from etcd: a watch from before ends with
    // Compacted (the API server's 410 Gone), a paged read at an older revision fails the same.
    let late = etcd.store().await;
    s.create("/k/x", b("v")).await.expect("create");
    s.create("/k/y", b("v")).await.expect("create");
    let newest = s.revision();
    other
        .compact(newest)
        .await
        .expect("compact by the other store");
    let mut stale = late
        .watch("/k/", head)
        .expect("watch (not known compacted here yet)");
    assert!(matches!(
        expect_event(&mut stale).await,
        Err(StoreError::Compacted { oldest, .. }) if oldest == newest
    ));
    assert_eq!(late.compacted_revision(), newest);
    // Data is untouched by compaction.
    assert_eq!(late.list("/k/").await.expect("list").0.len(), 12);
}

/// Acknowledged writes (key, mod_revision) and the count of failed ones.
type Written = (Vec<(String, Revision)>, usize);

/// A task creating keys `/registry/pods/{tag}/p{i}` one after another until `stop`.
fn writer(s: &Arc<EtcdStore>, stop: &Arc<AtomicBool>, tag: String) -> JoinHandle<Written> {
    let (s, stop) = (s.clone(), stop.clone());
    tokio::spawn(async move {
        let (mut acked, mut failed) = (Vec::new(), 0);
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("/registry/pods/{tag}/p{i}");
            match s.create(&key, b(&key)).await {
                Ok(kv) => acked.push((key, kv.mod_revision)),
                Err(_) => failed += 1,
            }
            i += 1;
        }
        (acked, failed)
    })
}

async fn join(writers: Vec<JoinHandle<Written>>) -> Written {
    let (mut acked, mut failed) = (Vec::new(), 0);
    for w in writers {
        let (a, f) = w.await.expect("writer");
        acked.extend(a);
        failed += f;
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_killed_mid_writes_loses_no_acknowledged_write() {
    let Some(mut etcd) = EtcdCluster::start(3).await else {
        return;
    };
    let s = Arc::new(etcd.store().await);
    let stop = Arc::new(AtomicBool::new(false));
    let before: Vec<_> = (0..8).map(|w| writer(&s, &stop, format!("a{w}"))).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let leader = etcd.leader().await.expect("the cluster has a leader");
    etcd.member(leader).kill();
    // Writes in flight through a follower wait for etcd's request timeout (about 6 s here) and
    // fail; writes sent once the two survivors have elected a leader succeed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop_after = Arc::new(AtomicBool::new(false));
    let after: Vec<_> = (0..4)
        .map(|w| writer(&s, &stop_after, format!("b{w}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_after.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (acked_after, failed_after) = join(after).await;
    let (mut acked, failed_before) = join(before).await;
    println!(
        "etcd 3 members, leader m{leader} killed mid-writes: {} writes acknowledged before and \
         around the kill ({failed_before} failed), {} after the election ({failed_after} failed)",
        acked.len(),
        acked_after.len()
    );
    assert!(
        !acked_after.is_empty(),
        "the two remaining members accept writes ({failed_after} failed)"
    );
    acked.extend(acked_after);
    let failed = failed_before + failed_after;

    // Every acknowledged write is there, as written, read through the surviving members.
    let (kvs, _) = s
        .list("/registry/pods/")
        .await
        .expect("list after the kill");
    let stored: BTreeMap<&str, &KeyValue> = kvs.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(key, rev)| {
            stored
                .get(key.as_str())
                .is_none_or(|kv| kv.mod_revision != *rev || kv.value != b(key))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    // Unacknowledged writes may have applied (a response lost with the leader) but nothing else.
    assert!(kvs.len() >= acked.len() && kvs.len() <= acked.len() + failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_is_unready_and_unavailable_then_recovers() {
    let Some(mut etcd) = EtcdCluster::single().await else {
        return;
    };
    let s = etcd.store().await;
    s.ready().await.expect("ready");
    let mut w = s.watch("/", 0).expect("watch");
    s.create("/a", b("1")).await.expect("create");
    // The watch is established (it delivered), then etcd goes away under it.
    assert_eq!(expect_event(&mut w).await.expect("event").kv.key, "/a");
    etcd.member(0).kill();

    let err = s.ready().await.expect_err("etcd down: unready");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let url = etcd.endpoints()[0].clone();
    assert!(err.to_string().contains(&url), "{err}");
    let err = s.create("/b", b("2")).await.expect_err("write while down");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // A store connecting while etcd is down still starts, unready.
    let cold = EtcdStore::connect(etcd.config())
        .await
        .expect("connect while down");
    assert!(cold.ready().await.is_err());

    etcd.restart(0).await;
    eventually(15, "the store is ready again", async || {
        s.ready().await.is_ok()
    })
    .await;
    let b_kv = s
        .create("/b", b("2"))
        .await
        .expect("write after etcd is back");
    assert!(
        cold.ready().await.is_ok(),
        "the cold store connects by itself"
    );
    // The watch re-established itself and missed nothing.
    let ev = expect_event(&mut w).await.expect("event after reconnect");
    assert_eq!(
        (ev.kv.key.as_str(), ev.revision()),
        ("/b", b_kv.mod_revision)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_kill_9_mid_writes_keeps_every_acknowledged_write() {
    let Some(mut etcd) = EtcdCluster::single().await else {
        return;
    };
    let s = Arc::new(etcd.store().await);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let key = format!("/d/{w}/{i}");
                    match s.create(&key, b("v")).await {
                        Ok(kv) => acked.push((key, kv.mod_revision)),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    etcd.member(0).kill();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(!acked.is_empty());
    etcd.restart(0).await;
    let (kvs, _) = s.list("/d/").await.expect("list after restart");
    let stored: BTreeMap<String, Revision> = kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(key, rev)| stored.get(key) != Some(rev))
        .collect();
    println!(
        "etcd kill -9: {} acknowledged writes, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
}
