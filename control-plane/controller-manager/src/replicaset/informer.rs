//! A watch cache (kube-runtime watcher + reflector store) that tells a handler about each
//! change *after* the store has it, like client-go's informer handlers. The controllers
//! rely on that order: an expectation marked observed, or a reconcile triggered, always
//! finds the object in the cache.

use std::fmt::Debug;

use futures::StreamExt as _;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tracing::warn;

/// One change, delivered after the store reflects it.
pub(crate) enum Change<'a, K> {
    /// Added or modified.
    Applied {
        obj: &'a K,
    },
    Deleted(&'a K),
    /// A (re)list finished: objects deleted while the watch was down are gone from the
    /// cache without a `Deleted`, so handlers should resync everything.
    Relisted,
}

/// Starts the watch in the background and returns its store (ready after the first list).
/// `slim` trims each object before it is cached (memory: only what the controller reads).
pub(crate) fn spawn<K, S, H>(api: Api<K>, mut slim: S, mut handler: H) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: FnMut(&mut K) + Send + 'static,
    H: FnMut(Change<'_, K>) + Send + 'static,
{
    let (reader, mut writer) = reflector::store::<K>();
    let cache = reader.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |o| slim(o))
            .boxed();
        // Objects of a relist reach the readable store only at InitDone.
        let mut relisted: Vec<ObjectRef<K>> = Vec::new();
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match &ev {
                watcher::Event::Apply(o) => {
                    writer.apply_watcher_event(&ev);
                    handler(Change::Applied { obj: o });
                }
                watcher::Event::Delete(o) => {
                    writer.apply_watcher_event(&ev);
                    handler(Change::Deleted(o));
                }
                watcher::Event::Init => {
                    relisted.clear();
                    writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitApply(o) => {
                    writer.apply_watcher_event(&ev);
                    relisted.push(ObjectRef::from_obj(o));
                }
                watcher::Event::InitDone => {
                    writer.apply_watcher_event(&ev);
                    for r in relisted.drain(..) {
                        if let Some(o) = reader.get(&r) {
                            handler(Change::Applied { obj: &o });
                        }
                    }
                    handler(Change::Relisted);
                }
            }
        }
    });
    cache
}
