//! The controller manager's one pod cache: a single watch on all pods for the process, shared
//! by the ReplicaSet, EndpointSlice and node lifecycle controllers (and the Deployment
//! controller's Recreate, which waits for old pods to be gone).
//!
//! Each pod is kept as a [`CachedPod`]: only the fields those controllers read, with the
//! values many pods share (namespace, node, labels, owner references, named ports,
//! tolerations) interned. A k8s-openapi `Pod`, even emptied, is kilobytes; three caches of
//! them were most of the process' memory with 10,000 pods.
//!
//! Handlers hear of each change *after* the cache has it, like client-go's informer handlers:
//! an expectation marked observed, or a reconcile triggered, always finds the pod there.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    net::Ipv4Addr,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{ObjectReference, Pod, Toleration},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use tracing::warn;

/// Annotation that lets users order scale-down (lower cost goes first).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

pub type Labels = BTreeMap<String, String>;

/// `status.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Unset,
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
    /// A value Kubernetes does not define.
    Other,
}

impl Phase {
    #[must_use]
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None => Self::Unset,
            Some("Pending") => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            Some("Unknown") => Self::Unknown,
            Some(_) => Self::Other,
        }
    }

    /// Succeeded or Failed: the pod will not run again.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A named container port (what a Service's named `targetPort` resolves against).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: String,
    pub port: i32,
    /// `TCP` when the pod does not say.
    pub protocol: String,
}

/// What the controllers read of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedPod {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: Box<str>,
    /// Precondition of the ReplicaSet controller's adopt / release patches.
    pub resource_version: Box<str>,
    pub labels: Arc<Labels>,
    /// All ownerReferences (adopting and releasing rewrite the whole list).
    pub owners: Arc<[OwnerReference]>,
    /// [`DELETION_COST`], 0 when absent or not a number.
    pub deletion_cost: i32,
    pub created: Option<Timestamp>,
    pub deletion: Option<Timestamp>,
    pub deletion_grace_seconds: Option<i64>,
    /// `spec.nodeName`; an empty name is `None`.
    pub node_name: Option<Arc<str>>,
    /// The node the pod is bound or pinned to: `spec.nodeName`, else the node its required
    /// node affinity names (a DaemonSet pod before the scheduler binds it).
    pub target_node: Option<Arc<str>>,
    pub phase: Phase,
    /// The Ready condition is True.
    pub ready: bool,
    /// The Ready condition's lastTransitionTime.
    pub ready_since: Option<Timestamp>,
    /// The newest lastTransitionTime of any condition.
    pub conditions_changed: Option<Timestamp>,
    /// Sum of the containers' restart counts.
    pub restarts: i32,
    /// The first IPv4 address among `podIP` and `podIPs`.
    pub ipv4: Option<Ipv4Addr>,
    pub hostname: Option<Box<str>>,
    pub subdomain: Option<Box<str>>,
    pub named_ports: Arc<[NamedPort]>,
    pub tolerations: Arc<[Toleration]>,
}

impl CachedPod {
    /// Compacts one pod on its own (no values shared with other pods).
    #[must_use]
    pub fn from_pod(pod: Pod) -> Self {
        Interners::default().pod(pod)
    }

    /// The controller ownerReference, if any.
    #[must_use]
    pub fn controller(&self) -> Option<&OwnerReference> {
        crate::controller_in(&self.owners)
    }

    /// For events about the pod.
    #[must_use]
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(self.namespace.to_string()),
            name: Some(self.name.to_string()),
            uid: Some(self.uid.to_string()),
            resource_version: Some(self.resource_version.to_string()),
            ..Default::default()
        }
    }
}

// === interning ===

fn fnv(f: impl FnOnce(&mut fnv::FnvHasher)) -> u64 {
    let mut h = fnv::FnvHasher::default();
    f(&mut h);
    h.finish()
}

/// Shared copies of equal values; values no pod uses any more are dropped when the pool has
/// doubled since the last sweep (so it stays within twice what is live).
struct Pool<T: ?Sized> {
    by_hash: HashMap<u64, Vec<Arc<T>>>,
    len: usize,
    sweep_at: usize,
}

impl<T: ?Sized> Default for Pool<T> {
    fn default() -> Self {
        Self {
            by_hash: HashMap::new(),
            len: 0,
            sweep_at: 1024,
        }
    }
}

impl<T: ?Sized + PartialEq> Pool<T> {
    fn get<V: std::borrow::Borrow<T>>(
        &mut self,
        hash: u64,
        value: V,
        make: impl FnOnce(V) -> Arc<T>,
    ) -> Arc<T> {
        let bucket = self.by_hash.entry(hash).or_default();
        if let Some(a) = bucket.iter().find(|a| ***a == *value.borrow()) {
            return Arc::clone(a);
        }
        let a = make(value);
        bucket.push(Arc::clone(&a));
        self.len += 1;
        if self.len >= self.sweep_at {
            self.sweep();
        }
        a
    }

    fn sweep(&mut self) {
        self.by_hash.retain(|_, b| {
            b.retain(|a| Arc::strong_count(a) > 1);
            !b.is_empty()
        });
        self.len = self.by_hash.values().map(Vec::len).sum();
        self.sweep_at = (self.len * 2).max(1024);
    }
}

/// The pools of the watch task (only it compacts pods, so no lock).
#[derive(Default)]
struct Interners {
    strs: Pool<str>,
    labels: Pool<Labels>,
    owners: Pool<[OwnerReference]>,
    ports: Pool<[NamedPort]>,
    tolerations: Pool<[Toleration]>,
}

impl Interners {
    fn str(&mut self, s: &str) -> Arc<str> {
        self.strs.get(fnv(|h| s.hash(h)), s, Arc::from)
    }

    fn labels(&mut self, l: Labels) -> Arc<Labels> {
        let hash = fnv(|h| l.hash(h));
        self.labels.get(hash, l, Arc::new)
    }

    fn owners(&mut self, o: Vec<OwnerReference>) -> Arc<[OwnerReference]> {
        let hash = fnv(|h| {
            for r in &o {
                (&r.api_version, &r.kind, &r.name, &r.uid).hash(h);
                (r.controller, r.block_owner_deletion).hash(h);
            }
        });
        self.owners.get(hash, o, Arc::from)
    }

    fn ports(&mut self, p: Vec<NamedPort>) -> Arc<[NamedPort]> {
        let hash = fnv(|h| p.hash(h));
        self.ports.get(hash, p, Arc::from)
    }

    fn tolerations(&mut self, t: Vec<Toleration>) -> Arc<[Toleration]> {
        let hash = fnv(|h| {
            for t in &t {
                (
                    &t.key,
                    &t.operator,
                    &t.value,
                    &t.effect,
                    t.toleration_seconds,
                )
                    .hash(h);
            }
        });
        self.tolerations.get(hash, t, Arc::from)
    }

    fn pod(&mut self, pod: Pod) -> CachedPod {
        let m = pod.metadata;
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let ready_cond = conditions.iter().find(|c| c.type_ == "Ready");
        let ipv4 = status
            .pod_ip
            .iter()
            .chain(status.pod_ips.iter().flatten().map(|p| &p.ip))
            .find_map(|ip| ip.parse::<Ipv4Addr>().ok());
        let named_ports: Vec<NamedPort> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    port: p.container_port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                })
            })
            .collect();
        CachedPod {
            namespace: self.str(m.namespace.as_deref().unwrap_or_default()),
            name: Arc::from(m.name.unwrap_or_default()),
            uid: m.uid.unwrap_or_default().into(),
            resource_version: m.resource_version.unwrap_or_default().into(),
            deletion_cost: m
                .annotations
                .as_ref()
                .and_then(|a| a.get(DELETION_COST))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            labels: self.labels(m.labels.unwrap_or_default()),
            owners: self.owners(m.owner_references.unwrap_or_default()),
            created: m.creation_timestamp.map(|t| t.0),
            deletion: m.deletion_timestamp.map(|t| t.0),
            deletion_grace_seconds: m.deletion_grace_period_seconds,
            node_name: spec
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| self.str(n)),
            target_node: crate::placement::target_node(&spec).map(|n| self.str(n)),
            phase: Phase::parse(status.phase.as_deref()),
            ready: ready_cond.is_some_and(|c| c.status == "True"),
            ready_since: ready_cond.and_then(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            conditions_changed: conditions
                .iter()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max(),
            restarts: status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| c.restart_count)
                .fold(0i32, i32::saturating_add),
            ipv4,
            hostname: spec.hostname.map(Into::into),
            subdomain: spec.subdomain.map(Into::into),
            named_ports: self.ports(named_ports),
            tolerations: self.tolerations(spec.tolerations.unwrap_or_default()),
        }
    }
}

// === the cache ===

/// One change, delivered after the cache reflects it.
pub enum Change<'a> {
    /// Added or modified. `is_new` when the cache did not have it before; `relisted` when it
    /// comes from a (re)list, which ends with [`Change::Relisted`].
    Applied {
        pod: &'a Arc<CachedPod>,
        is_new: bool,
        relisted: bool,
    },
    /// Deleted, or found gone by a relist.
    Deleted(&'a Arc<CachedPod>),
    /// A (re)list finished (also sent to a handler that subscribes after the first one):
    /// handlers should look at everything again.
    Relisted,
}

type Handler = Box<dyn FnMut(Change<'_>) + Send>;
type Namespace = HashMap<Arc<str>, Arc<CachedPod>>;

struct Shared {
    pods: RwLock<HashMap<Arc<str>, Namespace>>,
    handlers: Mutex<Vec<Handler>>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// The shared pod cache (cheap to clone).
#[derive(Clone)]
pub struct PodCache(Arc<Shared>);

impl Default for PodCache {
    fn default() -> Self {
        Self(Arc::new(Shared {
            pods: RwLock::default(),
            handlers: Mutex::default(),
            ready: tokio::sync::watch::Sender::new(false),
        }))
    }
}

impl PodCache {
    /// Starts the process' pod watch in the background.
    #[must_use]
    pub fn spawn(client: Client) -> Self {
        let cache = Self::default();
        let mut feed = Feed::new(cache.clone());
        tokio::spawn(async move {
            // The API server serves lists whole (no `limit`/`continue`), so the page size
            // does not bound a relist; it is set for servers that page.
            let config = watcher::Config::default().page_size(250);
            let mut events = watcher::watcher(Api::<Pod>::all(client), config)
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => feed.event(ev),
                    Err(e) => warn!(error = %e, "pod watch failed; retrying"),
                }
            }
        });
        cache
    }

    /// Calls `handler` with every change from now on, after the cache has it (and with
    /// [`Change::Relisted`] at once when the first list is already in). Handlers run on the
    /// watch task: they must be quick and must not subscribe.
    pub fn subscribe(&self, handler: impl FnMut(Change<'_>) + Send + 'static) {
        let mut handlers = self.handlers();
        let mut handler: Handler = Box::new(handler);
        if *self.0.ready.borrow() {
            handler(Change::Relisted);
        }
        handlers.push(handler);
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.0.ready.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = rx.wait_for(|r| *r).await;
    }

    #[must_use]
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedPod>> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// The pods of one namespace.
    #[must_use]
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<CachedPod>> {
        self.read()
            .get(namespace)
            .map(|ns| ns.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The pods for which `f` holds, in any namespace.
    pub fn filter(&self, mut f: impl FnMut(&CachedPod) -> bool) -> Vec<Arc<CachedPod>> {
        self.read()
            .values()
            .flat_map(HashMap::values)
            .filter(|p| f(p))
            .cloned()
            .collect()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Namespace>> {
        self.0.pods.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Namespace>> {
        self.0.pods.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn handlers(&self) -> std::sync::MutexGuard<'_, Vec<Handler>> {
        self.0
            .handlers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, change: impl Fn() -> Change<'static>) {
        for h in self.handlers().iter_mut() {
            h(change());
        }
    }

    fn dispatch_pod(&self, pod: &Arc<CachedPod>, f: impl Fn(&Arc<CachedPod>) -> Change<'_>) {
        for h in self.handlers().iter_mut() {
            h(f(pod));
        }
    }

    /// Stores `pod`, returning what it replaced.
    fn put(&self, pod: Arc<CachedPod>) -> Option<Arc<CachedPod>> {
        self.write()
            .entry(Arc::clone(&pod.namespace))
            .or_default()
            .insert(Arc::clone(&pod.name), pod)
    }

    fn remove(&self, namespace: &str, name: &str) -> Option<Arc<CachedPod>> {
        let mut all = self.write();
        let ns = all.get_mut(namespace)?;
        let gone = ns.remove(name);
        if ns.is_empty() {
            all.remove(namespace);
        }
        gone
    }
}

/// Applies watch events to the cache, then tells the handlers.
struct Feed {
    cache: PodCache,
    interners: Interners,
    /// Pods seen by the relist in progress (the others are gone at its end).
    relist: Option<HashSet<(Arc<str>, Arc<str>)>>,
}

impl Feed {
    fn new(cache: PodCache) -> Self {
        Self {
            cache,
            interners: Interners::default(),
            relist: None,
        }
    }

    fn event(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Apply(p) => {
                self.apply(p, false);
            }
            watcher::Event::Delete(p) => {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                let name = p.metadata.name.as_deref().unwrap_or_default();
                // Handlers get the delete's final state; a pod the cache never had is no news.
                let gone = self
                    .cache
                    .remove(ns, name)
                    .map(|_| Arc::new(self.interners.pod(p)));
                if let Some(gone) = gone {
                    self.cache.dispatch_pod(&gone, |p| Change::Deleted(p));
                }
            }
            // Updated in place (no second copy of the cache while the list comes in).
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(p) => {
                let key = self.apply(p, true);
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(key);
                }
            }
            watcher::Event::InitDone => {
                let seen = self.relist.take().unwrap_or_default();
                let gone = self
                    .cache
                    .filter(|p| !seen.contains(&(Arc::clone(&p.namespace), Arc::clone(&p.name))));
                drop(seen);
                for p in gone {
                    if self.cache.remove(&p.namespace, &p.name).is_some() {
                        self.cache.dispatch_pod(&p, |p| Change::Deleted(p));
                    }
                }
                self.cache.0.ready.send_replace(true);
                self.cache.dispatch(|| Change::Relisted);
            }
        }
    }

    /// Stores the pod and tells the handlers, unless a relist brings a version the cache
    /// has. Returns the pod's key.
    fn apply(&mut self, p: Pod, relisted: bool) -> (Arc<str>, Arc<str>) {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let name = p.metadata.name.as_deref().unwrap_or_default();
        if relisted
            && let Some(old) = self.cache.get(ns, name)
            && p.metadata.resource_version.as_deref() == Some(&*old.resource_version)
        {
            return (Arc::clone(&old.namespace), Arc::clone(&old.name));
        }
        let pod = Arc::new(self.interners.pod(p));
        let is_new = self.cache.put(Arc::clone(&pod)).is_none();
        self.cache.dispatch_pod(&pod, |pod| Change::Applied {
            pod,
            is_new,
            relisted,
        });
        (Arc::clone(&pod.namespace), Arc::clone(&pod.name))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn pod(name: &str, rv: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "web-1", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    #[test]
    fn compact_pods_keep_what_the_controllers_read() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                         "managedFields": [{"manager": "x"}],
                         "annotations": {DELETION_COST: "-3", "other": "x"},
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "deletionTimestamp": "2024-01-01T00:02:00Z",
                         "deletionGracePeriodSeconds": 30},
            "spec": {"nodeName": "n1", "hostname": "h", "subdomain": "s",
                     "tolerations": [{"key": "k", "operator": "Exists"}],
                     "containers": [{"name": "c", "image": "i", "ports": [
                         {"name": "http", "containerPort": 8080},
                         {"containerPort": 9090},
                         {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
                                    {"name": "d", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "fd00::1",
                       "podIPs": [{"ip": "fd00::1"}, {"ip": "10.0.0.1"}],
                       "conditions": [
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-01-01T00:00:01Z"},
                           {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:05Z"},
                           {"type": "Initialized", "status": "True", "lastTransitionTime": "2024-01-01T00:00:03Z"}],
                       "containerStatuses": [
                           {"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 2},
                           {"name": "d", "image": "i", "imageID": "", "ready": true, "restartCount": 1}]}
        }))
        .unwrap();
        let c = CachedPod::from_pod(p);
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!((&*c.namespace, &*c.name, &*c.uid), ("ns", "p", "u"));
        assert_eq!(&*c.resource_version, "7");
        assert_eq!(c.deletion_cost, -3);
        assert_eq!(c.created, Some(t("2024-01-01T00:00:00Z")));
        assert_eq!(c.deletion, Some(t("2024-01-01T00:02:00Z")));
        assert_eq!(c.deletion_grace_seconds, Some(30));
        assert_eq!(c.node_name.as_deref(), Some("n1"));
        assert_eq!(
            (c.hostname.as_deref(), c.subdomain.as_deref()),
            (Some("h"), Some("s"))
        );
        assert_eq!(c.phase, Phase::Running);
        assert!(c.ready);
        assert_eq!(c.ready_since, Some(t("2024-01-01T00:00:05Z")));
        assert_eq!(c.conditions_changed, Some(t("2024-01-01T00:00:05Z")));
        assert_eq!(c.restarts, 3);
        assert_eq!(c.ipv4, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            &*c.named_ports,
            [
                NamedPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: "TCP".into()
                },
                NamedPort {
                    name: "dns".into(),
                    port: 53,
                    protocol: "UDP".into()
                },
            ]
        );
        assert_eq!(c.tolerations[0].key.as_deref(), Some("k"));
        assert!(c.controller().is_none() && c.owners.is_empty());

        let bare = CachedPod::from_pod(
            serde_json::from_value(json!({
                "metadata": {"name": "b"}, "spec": {"nodeName": "", "containers": []}
            }))
            .unwrap(),
        );
        assert_eq!(
            (bare.node_name, bare.phase, bare.ready),
            (None, Phase::Unset, false)
        );
    }

    #[test]
    #[expect(clippy::many_single_char_names, reason = "pods a to e of one scenario")]
    fn shared_values_are_interned_and_swept() {
        let mut i = Interners::default();
        let a = i.pod(pod("a", "1", json!({"app": "web"})));
        let b = i.pod(pod("b", "1", json!({"app": "web"})));
        assert!(Arc::ptr_eq(&a.labels, &b.labels));
        assert!(Arc::ptr_eq(&a.owners, &b.owners));
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        assert!(Arc::ptr_eq(
            a.node_name.as_ref().unwrap(),
            b.node_name.as_ref().unwrap()
        ));
        assert_eq!(b.controller().unwrap().name, "web-1");
        // Values no pod holds go at the next sweep.
        let n = i.labels.len;
        for k in 0..2000 {
            drop(i.labels(BTreeMap::from([("k".to_string(), k.to_string())])));
        }
        assert!(i.labels.len < n + 2000, "swept: {}", i.labels.len);
        let c = i.pod(pod("c", "1", json!({"app": "web"})));
        assert!(Arc::ptr_eq(&a.labels, &c.labels), "live values stay");
    }

    /// What a handler saw: the change, and whether the cache had the pod right then.
    fn recording(cache: &PodCache) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, c) = (Arc::clone(&seen), cache.clone());
        cache.subscribe(move |ch| {
            let line = match ch {
                Change::Applied {
                    pod,
                    is_new,
                    relisted,
                } => {
                    let cached = c
                        .get(&pod.namespace, &pod.name)
                        .is_some_and(|p| Arc::ptr_eq(&p, pod));
                    format!(
                        "apply {} new={is_new} relist={relisted} cached={cached}",
                        pod.name
                    )
                }
                Change::Deleted(pod) => {
                    format!(
                        "delete {} cached={}",
                        pod.name,
                        c.get(&pod.namespace, &pod.name).is_some()
                    )
                }
                Change::Relisted => "relisted".into(),
            };
            log.lock().unwrap().push(line);
        });
        seen
    }

    #[test]
    fn handlers_see_changes_after_the_cache_has_them() {
        let cache = PodCache::default();
        let seen = recording(&cache);
        let mut feed = Feed::new(cache.clone());
        feed.event(watcher::Event::Init);
        feed.event(watcher::Event::InitApply(pod("a", "1", json!({}))));
        feed.event(watcher::Event::InitApply(pod("b", "1", json!({}))));
        assert!(!*cache.0.ready.borrow());
        feed.event(watcher::Event::InitDone);
        assert!(*cache.0.ready.borrow());
        feed.event(watcher::Event::Apply(pod("c", "2", json!({}))));
        feed.event(watcher::Event::Apply(pod("a", "3", json!({"x": "y"}))));
        feed.event(watcher::Event::Delete(pod("b", "4", json!({}))));
        feed.event(watcher::Event::Delete(pod("never", "5", json!({}))));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "apply a new=true relist=true cached=true",
                "apply b new=true relist=true cached=true",
                "relisted",
                "apply c new=true relist=false cached=true",
                "apply a new=false relist=false cached=true",
                "delete b cached=false",
            ]
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.in_namespace("ns").len(), 2);
        assert!(cache.in_namespace("other").is_empty());
        assert_eq!(cache.get("ns", "a").unwrap().labels["x"], "y");

        // A relist: unchanged pods are not news, changed and new ones are, missing ones go.
        seen.lock().unwrap().clear();
        feed.event(watcher::Event::Init);
        feed.event(watcher::Event::InitApply(pod("a", "3", json!({"x": "y"}))));
        feed.event(watcher::Event::InitApply(pod("d", "6", json!({}))));
        feed.event(watcher::Event::InitDone);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "apply d new=true relist=true cached=true",
                "delete c cached=false",
                "relisted"
            ]
        );
        assert_eq!(cache.len(), 2);

        // A late subscriber is told to look at everything.
        let late = recording(&cache);
        assert_eq!(*late.lock().unwrap(), ["relisted"]);
    }
}
