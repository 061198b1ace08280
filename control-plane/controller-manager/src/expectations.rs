//! Expectations, as kube-controller-manager keeps them: what a controller's last sync asked
//! for (pod creates, pod deletes) and has not yet seen in its watch cache. Until they are
//! observed (or expire) the controller does not act on the cache again, because the cache
//! is behind its own writes and a second sync would create or delete the same pods twice.
//!
//! Creates are counted (names come from `generateName`, unknown before the create returns);
//! deletes are tracked by pod name, so only the deletion of a pod we asked to delete counts.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::podcache::CachedPod;

/// How long unobserved expectations block a controller (kube-controller-manager's
/// `ExpectationsTimeout`): a lost watch event must not stall it for ever.
pub const TIMEOUT: Duration = Duration::from_mins(5);

#[derive(Debug)]
struct Entry {
    adds: i64,
    deletes: HashSet<String>,
    since: Instant,
}

/// Per controller key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain counters behind; keep using them.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pod event, for the controller of `owner` (API version, kind): a new pod it controls
    /// is a create observed; a pod gone or terminating, a delete observed.
    pub fn observe_pod(&self, pod: &CachedPod, owner: (&str, &str), is_new: bool, deleted: bool) {
        let (api_version, kind) = owner;
        let Some(r) = pod
            .controller()
            .filter(|r| r.kind == kind && r.api_version == api_version)
        else {
            return;
        };
        let key = format!("{}/{}", pod.namespace, r.name);
        if deleted || pod.deletion.is_some() {
            self.deletion_observed(&key, &pod.name);
        } else if is_new {
            self.creation_observed(&key);
        }
    }

    /// Whether `key` may act on its cache: nothing pending, or pending for longer than
    /// [`TIMEOUT`].
    pub fn satisfied(&self, key: &str) -> bool {
        self.satisfied_at(key, Instant::now())
    }

    fn satisfied_at(&self, key: &str, now: Instant) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes.is_empty()) || now.duration_since(e.since) > TIMEOUT
            }
        }
    }

    /// Before issuing `n` creates. Replaces what was there: a new sync only starts once the
    /// previous expectations are satisfied or expired.
    pub fn expect_creations(&self, key: &str, n: usize) {
        self.lock().insert(
            key.to_string(),
            Entry {
                adds: i64::try_from(n).unwrap_or(i64::MAX),
                deletes: HashSet::new(),
                since: Instant::now(),
            },
        );
    }

    /// Before deleting these pods.
    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.to_string(),
            Entry {
                adds: 0,
                deletes: pods.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }

    /// A pod created for `key` was seen in the cache, or a create failed (it will not be).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// A pod was seen deleted (gone or with a deletionTimestamp), or its delete failed.
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes.remove(pod);
        }
    }

    /// The controller's object is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_block_until_each_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a"), "no record: free to act");
        e.expect_creations("ns/a", 2);
        assert!(!e.satisfied("ns/a"));
        assert!(e.satisfied("ns/b"), "per key");
        e.creation_observed("ns/a");
        assert!(!e.satisfied("ns/a"));
        e.creation_observed("ns/a");
        assert!(e.satisfied("ns/a"));
        // Extra observations (pods adopted, a late event) never make it negative-blocking.
        e.creation_observed("ns/a");
        assert!(e.satisfied("ns/a"));
    }

    #[test]
    fn deletions_count_only_the_pods_asked_for() {
        let e = Expectations::default();
        e.expect_deletions("ns/a", ["p1".to_string(), "p2".to_string()]);
        e.deletion_observed("ns/a", "other");
        e.deletion_observed("ns/a", "p1");
        e.deletion_observed("ns/a", "p1");
        assert!(!e.satisfied("ns/a"));
        e.deletion_observed("ns/a", "p2");
        assert!(e.satisfied("ns/a"));
    }

    #[test]
    fn expectations_expire_and_are_forgotten() {
        let e = Expectations::default();
        e.expect_creations("ns/a", 1);
        let later = Instant::now() + TIMEOUT + Duration::from_secs(1);
        assert!(e.satisfied_at("ns/a", later));
        assert!(!e.satisfied("ns/a"));
        e.forget("ns/a");
        assert!(e.satisfied("ns/a"));
    }
}
