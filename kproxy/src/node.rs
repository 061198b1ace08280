//! `kproxy node`: the cluster mode. Services, EndpointSlices and this node's Node object come
//! from the API server through kube-runtime watchers; each event re-plans only the Service it
//! is about (`Syncer::plan_service`), so one endpoint change costs the same with 10 or
//! 10,000 Services.
//!
//! - Nothing is written before the three initial lists are complete; then every Service is
//!   planned once and whatever the maps hold that no Service claims is swept. After a
//!   restart (syncer rebuilt from the pinned maps) an unchanged cluster writes nothing.
//! - A failed map write rebuilds the syncer from the maps and retries the whole pass with
//!   back-off, without waiting for the next change.
//! - The API server being away changes nothing in the datapath; the watchers reconnect
//!   with back-off and a re-list re-plans what changed meanwhile.
//! - What cannot be programmed (capacity, invalid ports or addresses, a frontend another
//!   Service has) is a Warning Event on the Service and a log line; the rest is served.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        core::v1::{Event, EventSource, Node, ObjectReference, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff,
};
use kproxy::{
    Datapath, metrics,
    model::{self, FrontendKey, FrontendKind, namespace_of},
    names::{FrontendName, Names},
    sync::Syncer,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::PostParams,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::setup::{self, DatapathOpts};

pub use kproxy::model::{SERVICE_PROXY_NAME_LABEL, TRIGGER_TIME_ANNOTATION};

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Kubeconfig with the node's identity (`kproxy-apiserver node-kubeconfig NODE`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// This node's name: its Node object's addresses serve NodePorts.
    #[arg(long)]
    node_name: String,
    /// Serve Services labelled `service.kubernetes.io/service-proxy-name` with this value
    /// (without it, such Services are left to their proxy, as kube-proxy does).
    #[arg(long)]
    proxy_name: Option<String>,
    /// Address ranges served only through translation (the service CIDR, LoadBalancer
    /// pools): kproxy adds an `unreachable` route for each, so traffic to an address no
    /// Service uses fails at once on this node instead of leaving by the default route.
    /// Repeatable; `--keep-local none` adds none.
    #[arg(long = "keep-local", default_values = ["10.96.0.0/12", "172.30.0.0/24"])]
    keep_local: Vec<String>,
    #[command(flatten)]
    datapath: DatapathOpts,
    #[command(flatten)]
    serve: crate::serve::ServeOpts,
}

/// The `--keep-local` ranges ("none" alone means no range).
fn keep_local_ranges(args: &[String]) -> Result<Vec<kproxy_podnet::Ipv4Net>> {
    if args.iter().any(|a| a == "none") {
        return Ok(Vec::new());
    }
    args.iter()
        .map(|a| {
            a.parse::<kproxy_podnet::Ipv4Net>()
                .map(|n| n.trunc())
                .with_context(|| format!("--keep-local {a}: not an IPv4 CIDR"))
        })
        .collect()
}

/// One watcher event, tagged with its kind.
///
/// Boxed: the channel's slots are sized by the largest variant, and a Node or a Service
/// is several times the size of an EndpointSlice's inline part.
enum Update {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Node(Box<watcher::Event<Node>>),
}

const KINDS: usize = 3;

/// The watched objects. Keys are `namespace/name`.
#[derive(Default)]
struct Cache {
    services: HashMap<String, Service>,
    slices: HashMap<String, EndpointSlice>,
    /// Service key → keys of its slices.
    slices_of: HashMap<String, BTreeSet<String>>,
    /// Objects of a re-list in progress, swapped in at its end.
    relist_services: Option<HashMap<String, Service>>,
    relist_slices: Option<HashMap<String, EndpointSlice>>,
    relist_node: Option<Option<Node>>,
    /// Which kinds have completed their first list.
    listed: [bool; KINDS],
}

fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        namespace_of(meta),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The Service key a slice belongs to.
fn slice_owner(slice: &EndpointSlice) -> Option<String> {
    let svc = model::slice_service(slice)?;
    Some(format!("{}/{svc}", namespace_of(&slice.metadata)))
}

impl Cache {
    fn insert_slice(&mut self, key: String, slice: EndpointSlice) -> Vec<String> {
        let mut touched = self.remove_slice(&key);
        if let Some(owner) = slice_owner(&slice) {
            self.slices_of
                .entry(owner.clone())
                .or_default()
                .insert(key.clone());
            // An update of a slice touches its Service once (its trigger time counts once).
            if !touched.contains(&owner) {
                touched.push(owner);
            }
        }
        self.slices.insert(key, slice);
        touched
    }

    /// Removes a slice; returns the Service it belonged to.
    fn remove_slice(&mut self, key: &str) -> Vec<String> {
        let Some(old) = self.slices.remove(key) else {
            return Vec::new();
        };
        let Some(owner) = slice_owner(&old) else {
            return Vec::new();
        };
        if let Some(set) = self.slices_of.get_mut(&owner) {
            set.remove(key);
            if set.is_empty() {
                self.slices_of.remove(&owner);
            }
        }
        vec![owner]
    }

    /// Takes a re-list's Services; returns the keys of those gone, new or different (an
    /// unchanged Service need not be re-planned).
    fn replace_services(&mut self, fresh: HashMap<String, Service>) -> Vec<String> {
        let old = std::mem::replace(&mut self.services, fresh);
        let gone = old.keys().filter(|k| !self.services.contains_key(*k));
        let changed = self
            .services
            .iter()
            .filter(|(k, svc)| old.get(*k) != Some(*svc))
            .map(|(k, _)| k);
        gone.chain(changed).cloned().collect()
    }

    /// Takes a re-list's slices; returns the Services of those gone, new or different.
    fn replace_slices(&mut self, fresh: HashMap<String, EndpointSlice>) -> Vec<String> {
        let gone: Vec<String> = self
            .slices
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for key in gone {
            touched.extend(self.remove_slice(&key));
        }
        for (key, slice) in fresh {
            if self.slices.get(&key) != Some(&slice) {
                touched.extend(self.insert_slice(key, slice));
            }
        }
        touched
    }

    fn slices_for(&self, service: &str) -> Vec<&EndpointSlice> {
        self.slices_of
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect()
    }
}

/// Precedence of a claim on a frontend, lowest first: the kind (a ClusterIP is allocated
/// by the API server, so it beats an address a user wrote), then the older Service, then
/// namespace/name. A total order, so the winner does not depend on the order events arrive
/// in, and a restart picks the same one.
type Rank = (u8, Option<jiff::Timestamp>, String);

const fn kind_rank(kind: FrontendKind) -> u8 {
    match kind {
        FrontendKind::ClusterIp => 0,
        FrontendKind::LoadBalancerIp => 1,
        FrontendKind::NodePort => 2,
        FrontendKind::ExternalIp => 3,
    }
}

/// Which Services claim which frontends.
#[derive(Default)]
struct Claims {
    /// Frontend → its claims (the rank ends with the Service's key).
    by_frontend: HashMap<FrontendKey, BTreeSet<Rank>>,
    by_service: HashMap<String, Vec<(FrontendKey, Rank)>>,
}

impl Claims {
    /// The Service that gets `frontend`.
    fn winner(&self, frontend: &FrontendKey) -> Option<&str> {
        self.by_frontend
            .get(frontend)
            .and_then(BTreeSet::first)
            .map(|rank| rank.2.as_str())
    }

    /// Replaces the claims of `service`; returns the other Services that won or lost a
    /// frontend by it (they must be re-planned).
    fn set(&mut self, service: &str, claims: Vec<(FrontendKey, Rank)>) -> BTreeSet<String> {
        let old = self.by_service.remove(service).unwrap_or_default();
        let mut touched: BTreeSet<FrontendKey> = old.iter().map(|(k, _)| *k).collect();
        touched.extend(claims.iter().map(|(k, _)| *k));
        let before: Vec<Option<String>> = touched
            .iter()
            .map(|k| self.winner(k).map(str::to_string))
            .collect();
        for (key, rank) in old {
            if let Some(set) = self.by_frontend.get_mut(&key) {
                set.remove(&rank);
                if set.is_empty() {
                    self.by_frontend.remove(&key);
                }
            }
        }
        for (key, rank) in &claims {
            self.by_frontend
                .entry(*key)
                .or_default()
                .insert(rank.clone());
        }
        if !claims.is_empty() {
            self.by_service.insert(service.to_string(), claims);
        }
        let mut others = BTreeSet::new();
        for (key, was) in touched.iter().zip(before) {
            let now = self.winner(key).map(str::to_string);
            if now != was {
                others.extend([was, now].into_iter().flatten().filter(|s| s != service));
            }
        }
        others
    }
}

/// Services whose last report is remembered, so an unchanged problem is reported once.
type Reported = HashMap<String, Vec<(&'static str, String)>>;

struct NodeProxy {
    syncer: Syncer,
    dp: Datapath,
    cache: Cache,
    client: Client,
    node_name: String,
    proxy_name: Option<String>,
    /// `--node-ip` plus the uplink's addresses; the Node's are added to these.
    base_node_ips: Vec<Ipv4Addr>,
    node_ips: Vec<Ipv4Addr>,
    /// Services to re-plan.
    dirty: BTreeSet<String>,
    /// Services with a frontend another Service still holds: re-planned when frontends
    /// are freed.
    conflicted: BTreeSet<String>,
    claims: Claims,
    /// Slice change trigger times waiting for their Service's map write.
    triggers: HashMap<String, Vec<SystemTime>>,
    reported: Reported,
    /// Every Service is planned and the rest swept: at start and after a failed write.
    full_pass: bool,
    initial_done: bool,
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    started: SystemTime,
    /// The names for `/metrics`, `/lb` and `kproxy dump`, kept by their own task.
    names: mpsc::UnboundedSender<NamesUpdate>,
}

/// A change of the names (revnat id → Service, kind, terminating backends).
enum NamesUpdate {
    /// All of them (after a full pass).
    Replace(Names),
    /// Those of one Service's plan.
    Changes(Vec<(u16, Option<FrontendName>)>),
}

/// How often changed names are saved for `kproxy dump`.
const NAMES_EVERY: Duration = Duration::from_millis(250);

/// The task that owns the shared names: it applies the main loop's updates (so the loop
/// never waits for a lock or a rebuild of every Service's names) and saves them for
/// `kproxy dump` at most every `NAMES_EVERY`, off the runtime's threads.
fn spawn_names(bpffs: PathBuf, shared: Arc<RwLock<Names>>) -> mpsc::UnboundedSender<NamesUpdate> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut due = None;
        loop {
            tokio::select! {
                update = rx.recv() => {
                    let Some(update) = update else { return };
                    let mut names = shared.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match update {
                        NamesUpdate::Replace(all) => *names = all,
                        NamesUpdate::Changes(changes) => names.apply(changes),
                    }
                    due.get_or_insert_with(|| tokio::time::Instant::now() + NAMES_EVERY);
                }
                () = sleep_until(due) => {
                    due = None;
                    let (bpffs, shared) = (bpffs.clone(), Arc::clone(&shared));
                    let _ = tokio::task::spawn_blocking(move || {
                        let names = shared.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                        setup::save_names_logged(&bpffs, &names);
                    })
                    .await;
                }
            }
        }
    });
    tx
}

pub async fn run(bpffs: &Path, opts: Opts) -> Result<()> {
    let keep_local = keep_local_ranges(&opts.keep_local)?;
    let mut running = setup::bring_up(bpffs, &opts.datapath).await?;
    let mut pod_veths = running.pod_veths.take();
    for cidr in &keep_local {
        kproxy_podnet::ensure_unreachable(*cidr)
            .await
            .with_context(|| format!("keeping {cidr} on this node"))?;
    }
    if !keep_local.is_empty() {
        tracing::info!(ranges = ?keep_local, "unreachable routes keep untranslated service traffic on this node");
    }
    let client = client(&opts.kubeconfig).await?;
    crate::serve::spawn(
        &opts.serve,
        &opts.kubeconfig,
        &opts.node_name,
        bpffs,
        Arc::clone(&running.names),
    )?;
    let mut base_node_ips = opts.datapath.node_ips.clone();
    base_node_ips.extend(&running.uplink_ips);
    base_node_ips.sort_unstable();
    base_node_ips.dedup();

    let (tx, mut rx) = mpsc::channel::<Update>(1024);
    spawn_watchers(&client, &opts.node_name, &tx);
    drop(tx);

    let mut node = NodeProxy {
        syncer: running.syncer,
        dp: running.dp,
        cache: Cache::default(),
        client,
        node_name: opts.node_name.clone(),
        proxy_name: opts.proxy_name.clone(),
        node_ips: base_node_ips.clone(),
        base_node_ips,
        dirty: BTreeSet::new(),
        conflicted: BTreeSet::new(),
        claims: Claims::default(),
        triggers: HashMap::new(),
        reported: HashMap::new(),
        full_pass: true,
        initial_done: false,
        retry_at: None,
        backoff: RETRY_MIN,
        // Whole seconds: trigger times often carry no fraction (a pod condition's
        // lastTransitionTime), and a change in kproxy's first second still counts.
        started: SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
            ),
        names: spawn_names(bpffs.to_path_buf(), running.names),
    };
    tracing::info!(node = %opts.node_name, "kproxy ready, waiting for the initial lists");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    loop {
        let retry = node.retry_at;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            change = setup::next_pod_veth(&mut pod_veths) => {
                // Attachments do not touch the maps: nothing to sync.
                setup::apply_pod_veth(&mut node.dp, change);
                continue;
            }
            update = rx.recv() => {
                let Some(update) = update else { break };
                node.handle(update);
                // Take whatever else is already queued, so a burst is one pass.
                while let Ok(update) = rx.try_recv() {
                    node.handle(update);
                }
            }
            () = sleep_until(retry) => node.retry_at = None,
        }
        node.sync();
    }
    tracing::info!(
        "stopping: the datapath stays in place (pinned links, maps, connection tracking); \
         `kproxy cleanup` removes it"
    );
    Ok(())
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))?;
    Client::try_from(cfg).context("building the API client")
}

/// One task per watched kind; each forwards its events, and retries with kube-runtime's
/// default back-off when the API server cannot be reached.
fn spawn_watchers(client: &Client, node_name: &str, tx: &mpsc::Sender<Update>) {
    fn spawn<K>(
        what: &'static str,
        api: Api<K>,
        cfg: watcher::Config,
        tx: mpsc::Sender<Update>,
        compact: fn(&mut K),
        wrap: fn(watcher::Event<K>) -> Update,
    ) where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        tokio::spawn(async move {
            // Only what kproxy reads is kept (see model::compact_service): the cache holds
            // every Service and slice of the cluster.
            let mut stream = watcher(api, cfg).default_backoff().modify(compact).boxed();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if tx.send(wrap(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(kind = what, %err, "watch failed, retrying with back-off; the datapath is left as it is");
                    }
                }
            }
        });
    }
    spawn(
        "Service",
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        tx.clone(),
        model::compact_service,
        |ev| Update::Service(Box::new(ev)),
    );
    spawn(
        "EndpointSlice",
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        tx.clone(),
        model::compact_slice,
        |ev| Update::Slice(Box::new(ev)),
    );
    spawn(
        "Node",
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        tx.clone(),
        |node| {
            node.metadata.managed_fields = None;
            node.metadata.annotations = None;
        },
        |ev| Update::Node(Box::new(ev)),
    );
}

impl NodeProxy {
    fn handle(&mut self, update: Update) {
        match update {
            Update::Service(ev) => self.on_service(*ev),
            Update::Slice(ev) => self.on_slice(*ev),
            Update::Node(ev) => self.on_node(*ev),
        }
    }

    fn on_service(&mut self, ev: watcher::Event<Service>) {
        match ev {
            watcher::Event::Apply(svc) => {
                let key = key_of(&svc.metadata);
                self.cache.services.insert(key.clone(), svc);
                self.dirty.insert(key);
            }
            watcher::Event::Delete(svc) => {
                let key = key_of(&svc.metadata);
                self.cache.services.remove(&key);
                self.reported.remove(&key);
                self.dirty.insert(key);
            }
            watcher::Event::Init => self.cache.relist_services = Some(HashMap::new()),
            watcher::Event::InitApply(svc) => {
                if let Some(buf) = self.cache.relist_services.as_mut() {
                    buf.insert(key_of(&svc.metadata), svc);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.cache.relist_services.take().unwrap_or_default();
                self.dirty.extend(self.cache.replace_services(fresh));
                self.cache.listed[0] = true;
            }
        }
    }

    fn on_slice(&mut self, ev: watcher::Event<EndpointSlice>) {
        match ev {
            watcher::Event::Apply(slice) => {
                let key = key_of(&slice.metadata);
                let trigger = self.trigger_time(&slice);
                let touched = self.cache.insert_slice(key, slice);
                for svc in touched {
                    if let Some(t) = trigger {
                        self.triggers.entry(svc.clone()).or_default().push(t);
                    }
                    self.dirty.insert(svc);
                }
            }
            watcher::Event::Delete(slice) => {
                let key = key_of(&slice.metadata);
                self.dirty.extend(self.cache.remove_slice(&key));
            }
            watcher::Event::Init => self.cache.relist_slices = Some(HashMap::new()),
            watcher::Event::InitApply(slice) => {
                if let Some(buf) = self.cache.relist_slices.as_mut() {
                    buf.insert(key_of(&slice.metadata), slice);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.cache.relist_slices.take().unwrap_or_default();
                self.dirty.extend(self.cache.replace_slices(fresh));
                self.cache.listed[1] = true;
            }
        }
    }

    fn on_node(&mut self, ev: watcher::Event<Node>) {
        let node = match ev {
            watcher::Event::Apply(n) => Some(n),
            watcher::Event::Delete(_) => None,
            watcher::Event::Init => {
                self.cache.relist_node = Some(None);
                return;
            }
            watcher::Event::InitApply(n) => {
                self.cache.relist_node = Some(Some(n));
                return;
            }
            watcher::Event::InitDone => {
                self.cache.listed[2] = true;
                self.cache.relist_node.take().flatten()
            }
        };
        // Only its addresses are used: they are kept as `node_ips`, not the object.
        let mut ips = self.base_node_ips.clone();
        let addrs = node
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addresses.as_ref());
        for a in addrs.into_iter().flatten() {
            if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                && let Ok(ip) = a.address.parse::<Ipv4Addr>()
            {
                ips.push(ip);
            }
        }
        ips.sort_unstable();
        ips.dedup();
        if ips != self.node_ips {
            tracing::info!(node_ips = ?ips, "NodePort addresses changed");
            self.node_ips = ips;
            // Only NodePort and LoadBalancer Services have frontends on node addresses.
            for (key, svc) in &self.cache.services {
                let ty = svc.spec.as_ref().and_then(|s| s.type_.as_deref());
                if matches!(ty, Some("NodePort" | "LoadBalancer")) {
                    self.dirty.insert(key.clone());
                }
            }
        }
    }

    /// The slice's trigger time, if it is from after this kproxy started (older ones were
    /// programmed by a previous run; kube-proxy ignores them the same way).
    fn trigger_time(&self, slice: &EndpointSlice) -> Option<SystemTime> {
        let text = slice.annotations().get(TRIGGER_TIME_ANNOTATION)?;
        let ts: jiff::Timestamp = text.parse().ok()?;
        let t = SystemTime::from(ts);
        (t >= self.started).then_some(t)
    }

    /// Programs what changed, once every kind has been listed.
    fn sync(&mut self) {
        if !self.cache.listed.iter().all(|l| *l) || self.retry_at.is_some() {
            return;
        }
        if self.full_pass {
            self.pass_all();
        } else if !self.dirty.is_empty() {
            self.pass_dirty();
        }
    }

    /// Every Service, then a sweep of what none claims.
    fn pass_all(&mut self) {
        let started = Instant::now();
        let mut keys: Vec<String> = self.cache.services.keys().cloned().collect();
        keys.sort();
        // Services gone since they were programmed (their frontends are still owned).
        keys.extend(
            std::mem::take(&mut self.dirty)
                .into_iter()
                .filter(|k| !self.cache.services.contains_key(k)),
        );
        // Every claim first, so who wins a contested frontend does not depend on the order
        // the Services are planned in (and an unchanged cluster writes nothing).
        let built: Vec<model::ServiceFrontends> = keys.iter().map(|k| self.build(k)).collect();
        let mut ops_total = 0;
        for (key, built) in keys.iter().zip(built) {
            match self.program(key, built) {
                Ok(n) => ops_total += n,
                Err(()) => return,
            }
        }
        // Claims changed by this pass marked Services that it planned anyway.
        for key in &keys {
            self.dirty.remove(key);
        }
        let ops = match self.syncer.sweep() {
            Ok(ops) => ops,
            Err(err) => {
                tracing::error!(%err, "cannot plan the sweep of unclaimed entries");
                Vec::new()
            }
        };
        if let Err(err) = self.dp.apply(&ops) {
            self.apply_failed(&err.to_string());
            return;
        }
        ops_total += ops.len();
        metrics::SYNC_OPS.inc_by(ops.len() as u64);
        self.full_pass = false;
        self.backoff = RETRY_MIN;
        let what = if self.initial_done {
            "resync after a failed write done"
        } else {
            "initial sync done"
        };
        self.initial_done = true;
        metrics::HEALTH.set_synced();
        tracing::info!(
            services = keys.len(),
            map_ops = ops_total,
            took = ?started.elapsed(),
            "{what}"
        );
        let _ = self
            .names
            .send(NamesUpdate::Replace(Names::from_syncer(&self.syncer)));
        // Services waiting for a frontend another one gave up during the pass.
        if !self.dirty.is_empty() {
            self.pass_dirty();
        }
    }

    fn pass_dirty(&mut self) {
        let started = Instant::now();
        let mut services = 0;
        let mut ops_total = 0;
        // A Service that gave up frontends puts the Services waiting for one back in
        // `dirty`; a few rounds settle that (each round needs a release to add one).
        for _ in 0..8 {
            if self.dirty.is_empty() {
                break;
            }
            let keys = std::mem::take(&mut self.dirty);
            services += keys.len();
            for key in &keys {
                match self.sync_service(key) {
                    Ok(n) => ops_total += n,
                    Err(()) => return,
                }
            }
        }
        tracing::info!(
            services,
            map_ops = ops_total,
            took = ?started.elapsed(),
            "services synced"
        );
    }

    /// Plans and writes one Service. `Err` when the write failed: a full pass is then
    /// scheduled with back-off.
    fn sync_service(&mut self, key: &str) -> Result<usize, ()> {
        let built = self.build(key);
        self.program(key, built)
    }

    /// The Service's frontends as its objects say, and its claims on them updated.
    fn build(&mut self, key: &str) -> model::ServiceFrontends {
        let svc = self.cache.services.get(key);
        let built = match svc {
            Some(svc) => {
                if let Some(reason) = skip_reason(svc, self.proxy_name.as_deref()) {
                    tracing::info!(service = key, reason, "service not proxied");
                    model::ServiceFrontends::default()
                } else {
                    let slices = self.cache.slices_for(key);
                    model::build_service(svc, &slices, &self.node_ips)
                }
            }
            None => model::ServiceFrontends::default(),
        };
        let created = svc
            .and_then(|s| s.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        let claims: Vec<(FrontendKey, Rank)> = built
            .frontends
            .iter()
            .map(|(k, fe)| (*k, (kind_rank(fe.kind), created, key.to_string())))
            .collect();
        self.dirty.extend(self.claims.set(key, claims));
        built
    }

    /// Plans and writes what `build` gave, without the frontends another Service has
    /// precedence on.
    fn program(&mut self, key: &str, mut built: model::ServiceFrontends) -> Result<usize, ()> {
        let started = Instant::now();
        let mut problems: Vec<(&'static str, String)> = std::mem::take(&mut built.problems)
            .into_iter()
            .map(|p| ("InvalidInput", p))
            .collect();
        built.frontends.retain(|frontend, _| match self.claims.winner(frontend) {
            Some(winner) if winner != key => {
                problems.push((
                    "FrontendConflict",
                    format!("frontend {frontend} is already used by Service {winner}, not programmed"),
                ));
                false
            }
            _ => true,
        });
        let before: Vec<(FrontendKey, u16)> = self
            .syncer
            .owned(key)
            .filter_map(|k| Some((*k, self.syncer.revnat_id(k)?)))
            .collect();
        let (ops, released) = match self.syncer.plan_service(key, &built.frontends) {
            Ok(plan) => {
                // Conflicts here are a winner meeting a previous owner that has not given
                // the frontend up yet (it is re-planned in this pass): no Event.
                if plan.conflicts.is_empty() {
                    self.conflicted.remove(key);
                } else {
                    self.conflicted.insert(key.to_string());
                }
                (plan.ops, plan.released)
            }
            Err(err) => {
                // The syncer is unchanged: whatever this Service had stays programmed.
                problems.push((
                    "CapacityExceeded",
                    format!("cannot program this Service: {err}"),
                ));
                (Vec::new(), 0)
            }
        };
        if let Err(err) = self.dp.apply(&ops) {
            self.dirty.insert(key.to_string());
            self.apply_failed(&err.to_string());
            return Err(());
        }
        let n = ops.len();
        metrics::SYNC_OPS.inc_by(n as u64);
        metrics::observe_sync(started.elapsed());
        if let Some(times) = self.triggers.remove(key) {
            let now = SystemTime::now();
            for t in times {
                if let Ok(d) = now.duration_since(t) {
                    metrics::NETWORK_PROGRAMMING.observe(d.as_secs_f64());
                }
            }
        }
        if released > 0 && !self.conflicted.is_empty() {
            // Someone may be waiting for what this Service gave up.
            self.dirty.extend(self.conflicted.iter().cloned());
        }
        tracing::debug!(service = key, map_ops = n, "service synced");
        self.names_changed(key, before);
        self.report(key, problems);
        Ok(n)
    }

    fn apply_failed(&mut self, err: &str) {
        // Some writes may have landed: the maps are the truth. Rebuild from them and do a
        // full pass after a back-off (a full pass re-plans every Service and sweeps).
        tracing::error!(%err, retry_in = ?self.backoff, "writing the maps failed; retrying");
        metrics::MANIFEST_ERRORS.inc();
        match self.dp.restore_syncer() {
            Ok(syncer) => self.syncer = syncer,
            Err(err) => tracing::error!(%err, "cannot read the maps back"),
        }
        self.full_pass = true;
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// Sends the names of `service`'s frontends after its plan: those it had (`before`,
    /// with their revnat ids) and no longer has are gone, the others are (re)named. A
    /// plan changes no other Service's names.
    fn names_changed(&self, service: &str, before: Vec<(FrontendKey, u16)>) {
        let mut changes: Vec<(u16, Option<FrontendName>)> = before
            .into_iter()
            .filter(|(key, id)| self.syncer.revnat_id(key) != Some(*id))
            .map(|(_, id)| (id, None))
            .collect();
        for key in self.syncer.owned(service) {
            if let Some(id) = self.syncer.revnat_id(key) {
                changes.push((id, Names::frontend(&self.syncer, key)));
            }
        }
        if !changes.is_empty() {
            let _ = self.names.send(NamesUpdate::Changes(changes));
        }
    }

    /// Logs and posts a Warning Event for each problem of `key` not reported already.
    fn report(&mut self, key: &str, problems: Vec<(&'static str, String)>) {
        let before = self.reported.remove(key).unwrap_or_default();
        if problems.is_empty() {
            return;
        }
        let Some(svc) = self.cache.services.get(key) else {
            return;
        };
        for (reason, message) in &problems {
            if before.iter().any(|(r, m)| r == reason && m == message) {
                continue;
            }
            tracing::warn!(service = key, reason, "{message}");
            let event = warning_event(svc, &self.node_name, reason, message);
            let api: Api<Event> = Api::namespaced(self.client.clone(), namespace_of(&svc.metadata));
            let service = key.to_string();
            tokio::spawn(async move {
                if let Err(err) = api.create(&PostParams::default(), &event).await {
                    tracing::warn!(%service, %err, "cannot post the Warning Event");
                }
            });
        }
        self.reported.insert(key.to_string(), problems);
    }
}

/// Whether a proxy named `proxy_name` serves `svc`: kube-proxy's rule for the
/// service-proxy-name label (absent: every default proxy; present: only that proxy).
fn serves(svc: &Service, proxy_name: Option<&str>) -> bool {
    match svc.labels().get(SERVICE_PROXY_NAME_LABEL) {
        None => true,
        Some(name) => proxy_name == Some(name.as_str()),
    }
}

/// Why kproxy leaves `svc` alone, if it does.
fn skip_reason(svc: &Service, proxy_name: Option<&str>) -> Option<&'static str> {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        Some("ExternalName")
    } else if spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        Some("headless")
    } else if !serves(svc, proxy_name) {
        Some("service-proxy-name of another proxy")
    } else {
        None
    }
}

fn warning_event(svc: &Service, node: &str, reason: &str, message: &str) -> Event {
    let now = jiff::Timestamp::now();
    let ns = namespace_of(&svc.metadata).to_string();
    let name = svc.metadata.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            // Kubernetes' event naming: the object's name and a unique suffix.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name),
            namespace: Some(ns),
            uid: svc.metadata.uid.clone(),
            resource_version: svc.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("kproxy".into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labelled(value: Option<&str>) -> Service {
        let mut svc = Service::default();
        svc.metadata.labels =
            value.map(|v| BTreeMap::from([(SERVICE_PROXY_NAME_LABEL.to_string(), v.to_string())]));
        svc
    }

    #[test]
    fn service_proxy_name_rule() {
        assert!(serves(&labelled(None), None));
        assert!(serves(&labelled(None), Some("kproxy")));
        assert!(!serves(&labelled(Some("other")), None));
        assert!(!serves(&labelled(Some("other")), Some("kproxy")));
        assert!(serves(&labelled(Some("kproxy")), Some("kproxy")));
    }

    #[test]
    fn slices_are_indexed_by_their_service() {
        let slice = |name: &str, svc: &str| {
            let mut s = EndpointSlice {
                address_type: "IPv4".into(),
                ..EndpointSlice::default()
            };
            s.metadata.name = Some(name.into());
            s.metadata.namespace = Some("ns".into());
            s.metadata.labels = Some(BTreeMap::from([(
                model::SERVICE_NAME_LABEL.to_string(),
                svc.to_string(),
            )]));
            s
        };
        let mut cache = Cache::default();
        assert_eq!(
            cache.insert_slice("ns/a-1".into(), slice("a-1", "a")),
            ["ns/a"]
        );
        cache.insert_slice("ns/a-2".into(), slice("a-2", "a"));
        assert_eq!(cache.slices_for("ns/a").len(), 2);
        // An update touches its Service once.
        assert_eq!(
            cache.insert_slice("ns/a-2".into(), slice("a-2", "a")),
            ["ns/a"]
        );
        // Relabelled to another Service: both are touched.
        assert_eq!(
            cache.insert_slice("ns/a-2".into(), slice("a-2", "b")),
            ["ns/a", "ns/b"]
        );
        assert_eq!(cache.slices_for("ns/a").len(), 1);
        assert_eq!(cache.remove_slice("ns/a-1"), ["ns/a"]);
        assert!(cache.slices_for("ns/a").is_empty());
        assert!(!cache.slices_of.contains_key("ns/a"));

        // A re-list touches only the Services of slices gone, new or different.
        cache.insert_slice("ns/c-1".into(), slice("c-1", "c"));
        cache.insert_slice("ns/d-1".into(), slice("d-1", "d"));
        let mut changed = slice("d-1", "d");
        changed.metadata.resource_version = Some("2".into());
        let fresh = HashMap::from([
            ("ns/a-2".to_string(), slice("a-2", "b")),
            ("ns/d-1".to_string(), changed),
            ("ns/e-1".to_string(), slice("e-1", "e")),
        ]);
        let touched: BTreeSet<String> = cache.replace_slices(fresh).into_iter().collect();
        assert_eq!(
            touched,
            BTreeSet::from(["ns/c", "ns/d", "ns/e"].map(String::from))
        );
        assert_eq!(cache.slices.len(), 3);
        assert!(cache.slices_for("ns/c").is_empty());
        assert_eq!(cache.slices_for("ns/e").len(), 1);
    }

    #[test]
    fn relisted_services_touch_only_what_changed() {
        let svc = |name: &str, rv: &str| {
            let mut s = Service::default();
            s.metadata.name = Some(name.into());
            s.metadata.resource_version = Some(rv.into());
            (format!("ns/{name}"), s)
        };
        let mut cache = Cache::default();
        let first = cache.replace_services(HashMap::from([svc("a", "1"), svc("b", "1")]));
        assert_eq!(first.len(), 2);
        let mut touched =
            cache.replace_services(HashMap::from([svc("a", "1"), svc("b", "2"), svc("c", "1")]));
        touched.sort();
        assert_eq!(touched, ["ns/b", "ns/c"]);
        let mut gone = cache.replace_services(HashMap::from([svc("b", "2")]));
        gone.sort();
        assert_eq!(gone, ["ns/a", "ns/c"]);
    }

    #[test]
    fn contested_frontend_goes_to_the_clusterip_then_the_oldest() {
        let vip = FrontendKey {
            addr: Ipv4Addr::new(10, 96, 0, 1),
            port: 80,
            proto: model::Proto::Tcp,
        };
        let t = |s: i64| Some(jiff::Timestamp::from_second(s).unwrap());
        let mut claims = Claims::default();
        // An externalIP claim arrives first and wins while alone.
        assert!(
            claims
                .set("ns/a", vec![(vip, (3, t(1), "ns/a".into()))])
                .is_empty()
        );
        assert_eq!(claims.winner(&vip), Some("ns/a"));
        // A ClusterIP claim beats it even though younger; a wins no more: re-plan it.
        let others = claims.set("ns/z", vec![(vip, (0, t(9), "ns/z".into()))]);
        assert_eq!(others, BTreeSet::from(["ns/a".to_string()]));
        assert_eq!(claims.winner(&vip), Some("ns/z"));
        // Among equal kinds the older Service wins, whatever its name.
        claims.set("ns/b", vec![(vip, (0, t(5), "ns/b".into()))]);
        assert_eq!(claims.winner(&vip), Some("ns/b"));
        // The winner gone: the next in rank gets it and is told.
        let others = claims.set("ns/b", Vec::new());
        assert_eq!(others, BTreeSet::from(["ns/z".to_string()]));
        assert_eq!(claims.winner(&vip), Some("ns/z"));
        claims.set("ns/z", Vec::new());
        claims.set("ns/a", Vec::new());
        assert!(claims.by_frontend.is_empty() && claims.by_service.is_empty());
    }
}
