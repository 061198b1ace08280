//! The scheduler process: watchers on Nodes and Pods feed one loop that owns the cache and
//! the queue (no locks). Each decision is assumed in the cache at once and bound through
//! `pods/binding` in the background, many binds in flight; the watch confirms them. Pods that
//! fit nowhere wait until the cluster changes in a way that could make them fit (a node
//! added or changed, a pod gone or moved, a failed bind undone), never by polling.
//!
//! Events and the PodScheduled condition are written by separate workers: failures first, the
//! `Scheduled` event of every bind best-effort at low concurrency, so they never delay binds.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Binding, Event, Node, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kproxy_apimachinery::events::Correlator;
use kproxy_controller_manager::events::{self, Type};
use kube::{
    Api, Client, Resource as _,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use rand::{SeedableRng as _, rngs::StdRng};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    cache::{Cache, Change, NodeFacts, PodFacts},
    filter::PodInfo,
    schedule::schedule,
};

/// The name Events are reported under, as kube-scheduler's.
pub const COMPONENT: &str = "default-scheduler";

#[derive(Debug, Clone)]
pub struct Options {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// Binds in flight at most.
    pub parallelism: usize,
    /// Set once the node and pod caches are synced (`/readyz`).
    pub readiness: kproxy_controller_manager::health::Readiness,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scheduler_name: COMPONENT.into(),
            parallelism: 32,
            readiness: kproxy_controller_manager::health::Readiness::default(),
        }
    }
}

/// Why the scheduler stopped: its watches of nodes and pods ended.
#[derive(Debug, thiserror::Error)]
#[error("the scheduler's watches ended")]
pub struct WatchesEnded;

/// Runs until the watches end (never, normally).
pub async fn run(client: Client, opts: Options) -> Result<(), WatchesEnded> {
    // Small: a full channel holds the watchers back rather than buffering decoded pods.
    let (tx, mut rx) = mpsc::channel(256);
    watch(Api::<Node>::all(client.clone()), tx.clone(), |e| {
        Msg::Node(Box::new(e))
    });
    watch(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
        Msg::Pod(Box::new(e))
    });
    let writes = Writes::start(&client);
    let mut s = Scheduler {
        opts,
        client,
        tx,
        writes,
        cache: Cache::default(),
        pending: HashMap::new(),
        queue: VecDeque::new(),
        unschedulable: HashSet::new(),
        in_flight: 0,
        rng: StdRng::from_os_rng(),
        node_relist: None,
        pod_relist: None,
        nodes_synced: false,
        pods_synced: false,
    };
    while let Some(msg) = rx.recv().await {
        s.handle(msg);
        // Take in what else is ready (a burst of creations) before deciding, within bounds so
        // binds keep flowing.
        for _ in 0..1024 {
            match rx.try_recv() {
                Ok(m) => s.handle(m),
                Err(_) => break,
            }
        }
        s.schedule_queued();
    }
    Err(WatchesEnded)
}

fn watch<K>(api: Api<K>, tx: mpsc::Sender<Msg>, wrap: fn(watcher::Event<K>) -> Msg)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    // Its own task: decoding happens off the scheduling loop, on another core.
    tokio::spawn(async move {
        let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(kind = %K::kind(&Default::default()), error = %e, "watch failed, retrying");
                }
            }
        }
    });
}

enum Msg {
    // Boxed: a Pod is large, and the channel holds hundreds of messages.
    Node(Box<watcher::Event<Node>>),
    Pod(Box<watcher::Event<Pod>>),
    /// A bind finished.
    Bound {
        uid: String,
        result: Result<(), kube::Error>,
    },
    /// A pod's backoff after a failed bind is over.
    Retry(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Binding,
    Unschedulable,
    Backoff,
}

/// An unbound pod that is ours.
struct Pending {
    pod: Arc<Pod>,
    facts: PodFacts,
    state: State,
    failed_binds: u32,
    /// The last FailedScheduling message reported, so unchanged retries add no writes.
    reported: Option<String>,
}

struct Scheduler {
    opts: Options,
    client: Client,
    tx: mpsc::Sender<Msg>,
    writes: Writes,
    cache: Cache,
    pending: HashMap<String, Pending>,
    queue: VecDeque<String>,
    unschedulable: HashSet<String>,
    in_flight: usize,
    rng: StdRng,
    /// Names/uids seen since a relist began; what is missing at its end was deleted.
    node_relist: Option<HashSet<String>>,
    pod_relist: Option<HashSet<String>>,
    nodes_synced: bool,
    pods_synced: bool,
}

fn uid_of(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Scheduler {
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Node(ev) => self.node_event(*ev),
            Msg::Pod(ev) => self.pod_event(*ev),
            Msg::Bound { uid, result } => self.bound(&uid, result),
            Msg::Retry(uid) => {
                if let Some(p) = self.pending.get_mut(&uid)
                    && p.state == State::Backoff
                {
                    p.state = State::Queued;
                    self.queue.push_back(uid);
                }
            }
        }
    }

    fn node_event(&mut self, ev: watcher::Event<Node>) {
        match ev {
            watcher::Event::Apply(n) => self.node_applied(&n),
            watcher::Event::Delete(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    self.cache.remove_node(name);
                }
            }
            watcher::Event::Init => self.node_relist = Some(HashSet::new()),
            watcher::Event::InitApply(n) => {
                if let (Some(seen), Some(name)) = (&mut self.node_relist, &n.metadata.name) {
                    seen.insert(name.clone());
                }
                self.node_applied(&n);
            }
            watcher::Event::InitDone => {
                let seen = self.node_relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .cache
                    .node_names()
                    .filter(|n| !seen.contains(*n))
                    .map(String::from)
                    .collect();
                for n in gone {
                    self.cache.remove_node(&n);
                }
                self.nodes_synced = true;
                self.check_ready();
            }
        }
    }

    fn node_applied(&mut self, n: &Node) {
        if self.cache.set_node(NodeFacts::from_node(n)) == Change::MayFit {
            self.retry_unschedulable();
        }
    }

    fn pod_event(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Apply(p) => self.pod_applied(p),
            watcher::Event::Delete(p) => {
                if let Some(uid) = uid_of(&p) {
                    self.pod_gone(&uid);
                }
            }
            watcher::Event::Init => self.pod_relist = Some(HashSet::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(seen), Some(uid)) = (&mut self.pod_relist, &p.metadata.uid) {
                    seen.insert(uid.clone());
                }
                self.pod_applied(p);
            }
            watcher::Event::InitDone => {
                let seen = self.pod_relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .cache
                    .pod_uids()
                    .chain(self.pending.keys().map(String::as_str))
                    .filter(|u| !seen.contains(*u))
                    .map(String::from)
                    .collect();
                for uid in gone {
                    self.pod_gone(&uid);
                }
                self.pods_synced = true;
                self.check_ready();
            }
        }
    }

    fn check_ready(&mut self) {
        if !self.opts.readiness.is_ready() && self.nodes_synced && self.pods_synced {
            self.opts.readiness.set_ready();
            info!(
                nodes = self.cache.nodes().count(),
                placed_pods = self.cache.pod_count(),
                queued = self.queue.len(),
                "scheduler ready"
            );
        }
    }

    fn pod_gone(&mut self, uid: &str) {
        self.drop_pending(uid);
        if self.cache.remove_pod(uid) == Change::MayFit {
            self.retry_unschedulable();
        }
    }

    fn drop_pending(&mut self, uid: &str) -> Option<Pending> {
        self.unschedulable.remove(uid);
        self.pending.remove(uid)
    }

    fn pod_applied(&mut self, pod: Pod) {
        let Some(uid) = uid_of(&pod) else { return };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(node) = node {
            self.drop_pending(&uid);
            let change = if is_terminal(&pod) {
                // Finished pods hold nothing on their node.
                self.cache.remove_pod(&uid)
            } else {
                self.cache.bound(&uid, node, PodFacts::from_pod(&pod))
            };
            if change == Change::MayFit {
                self.retry_unschedulable();
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() || is_terminal(&pod) || !self.is_ours(&pod) {
            if self.drop_pending(&uid).is_some() && self.cache.forget(&uid) == Change::MayFit {
                self.retry_unschedulable();
            }
            return;
        }
        if let Some(p) = self.pending.get_mut(&uid) {
            // Our own status write comes back as an update; only a change to what
            // scheduling reads makes an unschedulable pod worth another try.
            let relevant = p.pod.spec != pod.spec
                || p.pod.metadata.owner_references != pod.metadata.owner_references;
            if relevant {
                p.facts = PodFacts::from_pod(&pod);
            }
            p.pod = Arc::new(pod);
            if relevant && p.state == State::Unschedulable {
                p.state = State::Queued;
                self.unschedulable.remove(&uid);
                self.queue.push_back(uid);
            }
        } else {
            let facts = PodFacts::from_pod(&pod);
            self.pending.insert(
                uid.clone(),
                Pending {
                    pod: Arc::new(pod),
                    facts,
                    state: State::Queued,
                    failed_binds: 0,
                    reported: None,
                },
            );
            self.queue.push_back(uid);
        }
    }

    fn is_ours(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("");
        name.is_empty() || name == self.opts.scheduler_name
    }

    fn retry_unschedulable(&mut self) {
        for uid in self.unschedulable.drain() {
            if let Some(p) = self.pending.get_mut(&uid)
                && p.state == State::Unschedulable
            {
                p.state = State::Queued;
                self.queue.push_back(uid);
            }
        }
    }

    /// Decides for queued pods while there is room for binds.
    fn schedule_queued(&mut self) {
        if !self.opts.readiness.is_ready() {
            return;
        }
        while self.in_flight < self.opts.parallelism {
            let Some(uid) = self.queue.pop_front() else {
                break;
            };
            let Some(p) = self.pending.get_mut(&uid) else {
                continue;
            };
            if p.state != State::Queued {
                continue;
            }
            let info = PodInfo::new(&p.pod, &p.facts);
            match schedule(&info, &self.cache, &mut self.rng) {
                Ok(node) => {
                    self.cache.assume(&uid, &node, p.facts.clone());
                    p.state = State::Binding;
                    let pod = Arc::clone(&p.pod);
                    self.in_flight += 1;
                    self.bind(uid, pod, node);
                }
                Err(e) => {
                    let message = e.to_string();
                    let pod = &p.pod;
                    info!(
                        pod = %format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or("")),
                        %message,
                        "unschedulable"
                    );
                    p.state = State::Unschedulable;
                    if p.reported.as_deref() != Some(&message) {
                        self.writes.unschedulable(pod, &message);
                        p.reported = Some(message);
                    }
                    self.unschedulable.insert(uid);
                }
            }
        }
    }

    fn bind(&self, uid: String, pod: Arc<Pod>, node: String) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let tx = self.tx.clone();
        let writes = self.writes.clone();
        tokio::spawn(async move {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: Some(uid.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let result = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(|_| ());
            if result.is_ok() {
                debug!(pod = %format!("{ns}/{name}"), %node, "bound");
                writes.scheduled(
                    &pod,
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                );
            }
            let _ = tx.send(Msg::Bound { uid, result }).await;
        });
    }

    fn bound(&mut self, uid: &str, result: Result<(), kube::Error>) {
        self.in_flight -= 1;
        let Err(e) = result else {
            // The watch confirms the placement; until then the pod stays assumed.
            return;
        };
        if self.cache.forget(uid) == Change::MayFit {
            self.retry_unschedulable();
        }
        let Some(p) = self.pending.get_mut(uid) else {
            return;
        };
        if p.state != State::Binding {
            return;
        }
        let name = p.pod.metadata.name.clone().unwrap_or_default();
        match &e {
            // Deleted, being deleted or bound by someone else: the watch will tell.
            kube::Error::Api(s) if s.code == 404 || s.code == 409 => {
                debug!(pod = %name, error = %e, "bind refused");
                self.drop_pending(uid);
            }
            _ => {
                p.failed_binds += 1;
                p.state = State::Backoff;
                let delay = Duration::from_millis(100 << p.failed_binds.min(7));
                warn!(pod = %name, error = %e, retry_in = ?delay, "bind failed");
                let tx = self.tx.clone();
                let uid = uid.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Msg::Retry(uid)).await;
                });
            }
        }
    }
}

/// API writes that report rather than decide.
enum Write {
    Event(Box<Event>),
    /// A `FailedScheduling` event after the correlator: a new object, or a repeat that
    /// raises the count of the first (client-go's EventCorrelator, as kube-scheduler uses).
    Correlated(Box<kproxy_apimachinery::events::Write>),
    PodUnschedulable {
        ns: String,
        name: String,
        message: String,
    },
}

/// Two queues: failures (every one written, a few at a time) and `Scheduled` events
/// (best-effort: dropped when the queue is full, written two at a time so binds come first).
#[derive(Clone)]
struct Writes {
    failures: mpsc::UnboundedSender<Write>,
    scheduled: mpsc::Sender<Write>,
    correlator: Arc<Mutex<Correlator>>,
}

impl Writes {
    fn start(client: &Client) -> Self {
        let (failures, frx) = mpsc::unbounded_channel();
        let (scheduled, srx) = mpsc::channel(8192);
        let c = client.clone();
        tokio::spawn(
            futures::stream::unfold(
                frx,
                |mut rx| async move { rx.recv().await.map(|w| (w, rx)) },
            )
            .for_each_concurrent(4, move |w| write(c.clone(), w)),
        );
        let c = client.clone();
        tokio::spawn(
            futures::stream::unfold(
                srx,
                |mut rx| async move { rx.recv().await.map(|w| (w, rx)) },
            )
            .for_each_concurrent(2, move |w| write(c.clone(), w)),
        );
        Self {
            failures,
            scheduled,
            correlator: Arc::default(),
        }
    }

    fn event(pod: &Pod, type_: Type, reason: &str, message: &str) -> Write {
        Write::Event(Box::new(events::build(
            &pod.object_ref(&()),
            COMPONENT,
            type_,
            reason,
            message,
            Timestamp::now(),
        )))
    }

    fn scheduled(&self, pod: &Pod, message: &str) {
        if self
            .scheduled
            .try_send(Self::event(pod, Type::Normal, "Scheduled", message))
            .is_err()
        {
            debug!("event queue full, Scheduled event dropped");
        }
    }

    /// A `FailedScheduling` event, and the PodScheduled condition unless it already says so.
    fn unschedulable(&self, pod: &Pod, message: &str) {
        if let Write::Event(ev) = Self::event(pod, Type::Warning, "FailedScheduling", message) {
            let w = self
                .correlator
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .observe(*ev);
            let _ = self.failures.send(Write::Correlated(Box::new(w)));
        }
        if !has_unschedulable_condition(pod, message) {
            let _ = self.failures.send(Write::PodUnschedulable {
                ns: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                message: message.into(),
            });
        }
    }
}

fn has_unschedulable_condition(pod: &Pod, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message)
            })
        })
}

async fn write(client: Client, w: Write) {
    match w {
        Write::Event(ev) => {
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            if let Err(e) = Api::<Event>::namespaced(client, &ns)
                .create(&PostParams::default(), &ev)
                .await
            {
                warn!(error = %e, reason = ev.reason.as_deref().unwrap_or(""), "cannot write event");
            }
        }
        Write::Correlated(w) => {
            if let Err(e) = events::write(&client, *w).await {
                warn!(error = %e, "cannot write a FailedScheduling event");
            }
        }
        Write::PodUnschedulable { ns, name, message } => {
            let patch = json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            if let Err(e) = Api::<Pod>::namespaced(client, &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot set PodScheduled condition");
            }
        }
    }
}
