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

mod cache;
mod claims;
mod l2;
mod names;
mod program;
mod routes;
mod warnings;
mod watch;

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use kproxy::{
    Datapath,
    healthcheck::HealthServer,
    l2lease,
    model::{HealthCheck, policy::Locality},
    sync::Syncer,
};
use kube::Client;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use self::{
    cache::Cache,
    claims::Claims,
    names::{NamesUpdate, spawn_names},
    warnings::Reported,
    watch::{Update, spawn_watchers},
};
use crate::{
    keep_local,
    setup::{self, DatapathOpts},
};

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
    /// pools): kproxy routes each to its keep-local device (`--keep-local-dev`), so
    /// untranslated traffic to them never leaves this node: pings to service addresses are
    /// answered, the rest refused at once (an address no Service uses gets host
    /// unreachable). Repeatable; `--keep-local none` adds none.
    #[arg(long = "keep-local", default_values = ["10.96.0.0/12", "172.30.0.0/24"])]
    keep_local: Vec<String>,
    /// Do not route other nodes' pod CIDRs via their InternalIPs (host-gw, kept from the
    /// Node objects; see node/routes.rs): another component programs the pod network.
    #[arg(long)]
    no_node_routes: bool,
    /// Seconds of the per-Service Leases that choose the one node announcing a Service's
    /// LoadBalancer IPs by ARP (kube-system/kproxy-l2-NAMESPACE.NAME); a dead announcer is
    /// replaced after this long. 0: no election, this node announces every LB IP (a
    /// single-node cluster).
    #[arg(long, default_value_t = 2)]
    l2_lease_duration: u64,
    /// This node never announces LoadBalancer IPs (not a candidate: as MetalLB's and
    /// Cilium's node selectors keep control-plane nodes out); other nodes do.
    #[arg(long)]
    no_l2_announce: bool,
    #[command(flatten)]
    keep_dev: crate::keep_local::KeepDevOpts,
    #[command(flatten)]
    datapath: DatapathOpts,
    #[command(flatten)]
    serve: crate::serve::ServeOpts,
}

/// The cluster mode's state: the watched objects, what is programmed, and what is left to
/// do. The main loop in [`run`] owns it; `watch` feeds it events, `program` writes the maps.
struct NodeProxy {
    syncer: Syncer,
    dp: Datapath,
    cache: Cache,
    client: Client,
    node_name: String,
    /// This node's name and its Node's zone label, for traffic policies and hints.
    local: Locality,
    /// The healthCheckNodePorts, by Service; `health` serves them.
    health_checks: HashMap<String, (u16, HealthCheck)>,
    health: HealthServer,
    proxy_name: Option<String>,
    /// `--node-ip` plus the uplink's addresses; the Node's are added to these.
    base_node_ips: Vec<Ipv4Addr>,
    node_ips: Vec<Ipv4Addr>,
    /// Services to re-plan.
    dirty: BTreeSet<String>,
    /// Services with a frontend another Service still holds: re-planned when frontends
    /// are freed.
    conflicted: BTreeSet<String>,
    /// Services with a frontend degraded to the random pick for lack of Maglev table
    /// room: re-planned when a plan frees table blocks.
    maglev_waiting: BTreeSet<String>,
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
    /// The L2 announcement election's view, unless `--l2-lease-duration 0`.
    l2: Option<l2::L2>,
}

pub async fn run(bpffs: &Path, opts: Opts) -> Result<()> {
    let keep_local = keep_local::ranges(&opts.keep_local)?;
    let mut running = setup::bring_up(bpffs, &opts.datapath).await?;
    let mut pod_veths = running.pod_veths.take();
    keep_local::apply(&mut running.dp, &keep_local, &opts.keep_dev.keep_local_dev).await?;
    let client = client(&opts.kubeconfig).await?;
    if !opts.no_node_routes {
        routes::spawn(client.clone(), opts.node_name.clone());
    }
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

    let mut election = if opts.l2_lease_duration == 0 {
        None
    } else {
        let held = l2lease::held_at_start(&client, &opts.node_name).await;
        let election = l2lease::spawn(
            client.clone(),
            l2lease::Config {
                identity: opts.node_name.clone(),
                duration: Duration::from_secs(opts.l2_lease_duration),
                uplink: opts.datapath.uplink.clone(),
            },
            held.clone(),
        );
        Some((election, held))
    };
    let (tx, mut rx) = mpsc::channel::<Update>(1024);
    spawn_watchers(&client, &opts.node_name, &tx);
    drop(tx);

    let mut node = NodeProxy {
        syncer: running.syncer,
        dp: running.dp,
        cache: Cache::default(),
        client,
        node_name: opts.node_name.clone(),
        local: Locality {
            node: Some(opts.node_name.clone()),
            zone: None,
        },
        health_checks: HashMap::new(),
        health: HealthServer::default(),
        proxy_name: opts.proxy_name.clone(),
        node_ips: base_node_ips.clone(),
        base_node_ips,
        dirty: BTreeSet::new(),
        conflicted: BTreeSet::new(),
        maglev_waiting: BTreeSet::new(),
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
        l2: election.as_mut().map(|(e, held)| {
            l2::L2::new(e.wants.clone(), std::mem::take(held), !opts.no_l2_announce)
        }),
    };
    let mut election = election.map(|(e, _)| e);
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
            Some(change) = l2_change(election.as_mut()) => {
                if let Some(l2) = node.l2.as_mut() {
                    node.dirty.insert(l2.apply(change));
                }
            }
        }
        node.sync();
    }
    // The leases stay held, as the datapath stays announcing: a restart within the lease
    // duration changes nothing; a kproxy that does not come back is replaced after it.
    if let Some(e) = election {
        e.abort();
    }
    tracing::info!(
        "stopping: the datapath stays in place (pinned links, maps, connection tracking); \
         `kproxy cleanup` removes it"
    );
    Ok(())
}

/// The election's next change; never resolves without an election.
async fn l2_change(e: Option<&mut l2lease::Election>) -> Option<l2lease::Change> {
    match e {
        Some(e) => e.changes.recv().await,
        None => std::future::pending().await,
    }
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
