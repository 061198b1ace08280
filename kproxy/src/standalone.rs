//! `kproxy standalone`: the datapath driven by a manifest file of Services and
//! EndpointSlices instead of the API server. The file is re-read when it changes; an invalid
//! file is rejected with a message and the running state is kept.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context as _, Result};
use kproxy::{
    Datapath,
    healthcheck::HealthServer,
    metrics,
    model::{self, policy::Locality},
    names::{Names, load_names, service_table},
    pinned::PinnedLb,
    source::ManifestSource,
    sync::Syncer,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::setup::{self, DatapathOpts};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Multi-document YAML of v1 Services and discovery.k8s.io/v1 EndpointSlices, or a
    /// directory of such files (*.yaml, *.yml, *.json); changed files are re-read.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// This node's name, matched against endpoints' `nodeName` by the Local traffic
    /// policies (default: the host name, as kube-proxy's `--hostname-override` default).
    #[arg(long)]
    node_name: Option<String>,
    /// This node's `topology.kubernetes.io/zone`, matched against endpoints' zone hints.
    #[arg(long)]
    node_zone: Option<String>,
    #[command(flatten)]
    datapath: DatapathOpts,
    /// Address ranges served only through translation (service CIDR, LoadBalancer pools),
    /// routed to the keep-local device so untranslated traffic to them never leaves this
    /// node (as `kproxy node --keep-local`; none by default here). Repeatable.
    #[arg(long = "keep-local")]
    keep_local: Vec<String>,
    #[command(flatten)]
    keep_dev: crate::keep_local::KeepDevOpts,
}

struct Reconciler {
    syncer: Syncer,
    node_ips: Vec<Ipv4Addr>,
    local: Locality,
    health: HealthServer,
    bpffs: PathBuf,
    /// Shared with `/metrics`; also saved to a file for `kproxy dump`.
    names: Arc<RwLock<Names>>,
}

impl Reconciler {
    /// Loads the file and applies only the difference to the maps. On any error nothing
    /// is changed.
    fn reload(&mut self, dp: &mut Datapath, source: &mut ManifestSource) {
        let started = std::time::Instant::now();
        let (services, slices) = match source.poll() {
            None => return,
            Some(Ok(objs)) => objs,
            Some(Err(err)) => {
                metrics::MANIFEST_ERRORS.inc();
                tracing::error!(%err, "manifest rejected, keeping the running state");
                return;
            }
        };
        let parsed = started.elapsed();
        let desired = model::build_state(&services, &slices, &self.node_ips, &self.local);
        // `plan` commits to the syncer only when it succeeds, so no copy is needed.
        let ops = match self.syncer.plan(&desired) {
            Ok(ops) => ops,
            Err(err) => {
                metrics::MANIFEST_ERRORS.inc();
                tracing::error!(%err, "cannot program this state, keeping the running state");
                return;
            }
        };
        let planned = started.elapsed();
        for frontend in self.syncer.maglev_fallbacks() {
            tracing::warn!(
                %frontend,
                max_entries = kproxy_common::MAGLEV_ENTRIES,
                "no room for its Maglev table (the array is full): new flows pick a random backend"
            );
        }
        if let Err(err) = dp.apply(&ops) {
            // Partially applied: the syncer assumed success, so resynchronise it from the
            // maps themselves.
            tracing::error!(%err, "applying map updates failed");
            if let Ok(syncer) = dp.restore_syncer() {
                self.syncer = syncer;
            }
            return;
        }
        let took = started.elapsed();
        metrics::SYNC_OPS.inc_by(ops.len() as u64);
        metrics::observe_sync(took);
        metrics::HEALTH.set_synced();
        self.health.update(&desired.health, &self.node_ips);
        // The breakdown separates the datapath programming (apply: the map writes) from
        // the standalone file handling (parse, then build + diff).
        tracing::info!(
            services = services.len(),
            frontends = desired.frontends.len(),
            map_ops = ops.len(),
            parse = ?parsed,
            plan = ?planned.saturating_sub(parsed),
            apply = ?took.saturating_sub(planned),
            took = ?took,
            "services synced"
        );
        setup::publish_names(&self.bpffs, &self.names, Names::from_syncer(&self.syncer));
    }
}

/// The kernel's host name, the default node name.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

pub async fn run(bpffs: &Path, opts: Opts) -> Result<()> {
    let keep_local = crate::keep_local::ranges(&opts.keep_local)?;
    let running = setup::bring_up(bpffs, &opts.datapath).await?;
    let mut dp = running.dp;
    crate::keep_local::apply(&mut dp, &keep_local, &opts.keep_dev.keep_local_dev).await?;
    let mut pod_veths = running.pod_veths;
    let node_ips = if opts.datapath.node_ips.is_empty() {
        running.uplink_ips
    } else {
        opts.datapath.node_ips.clone()
    };
    let mut rec = Reconciler {
        syncer: running.syncer,
        node_ips,
        local: Locality {
            node: opts.node_name.clone().or_else(hostname),
            zone: opts.node_zone.clone(),
        },
        health: HealthServer::default(),
        bpffs: bpffs.to_path_buf(),
        names: running.names,
    };
    tracing::info!(node_ips = ?rec.node_ips, node = ?rec.local.node, zone = ?rec.local.zone, "NodePort addresses and locality");

    let mut source = opts.manifests.as_deref().map(ManifestSource::new);
    if let Some(src) = source.as_mut() {
        rec.reload(&mut dp, src);
    } else {
        // Nothing to read: what the maps hold is the state.
        metrics::HEALTH.set_synced();
    }
    tracing::info!("kproxy ready");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    // A stat() every 50 ms is cheap and keeps reloads prompt.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            change = setup::next_pod_veth(&mut pod_veths) => setup::apply_pod_veth(&mut dp, change),
            _ = tick.tick() => {
                if let Some(src) = source.as_mut() {
                    rec.reload(&mut dp, src);
                }
            }
        }
    }
    tracing::info!(
        "stopping: the datapath stays in place (pinned links, maps, connection tracking); \
         `kproxy cleanup` removes it"
    );
    drop(dp);
    Ok(())
}

/// Rows for `kproxy dump`: frontends with their backends and counters.
pub fn dump(bpffs: &Path, json: bool) -> Result<()> {
    let lb = PinnedLb::open(bpffs)?;
    let table = service_table(&lb, &load_names(bpffs).unwrap_or_default())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&table)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<15} {:<28} {:>8} {:>10} {:>12} {:>14}",
        "FRONTEND", "KIND", "SERVICE", "BACKENDS", "NEW_FLOWS", "PACKETS", "BYTES"
    );
    for row in &table {
        println!(
            "{:<24} {:<15} {:<28} {:>8} {:>10} {:>12} {:>14}",
            row.frontend,
            row.kind,
            row.service,
            row.active_backends,
            row.counter.new_flows,
            row.counter.packets,
            row.counter.bytes
        );
        for be in &row.backends {
            println!(
                "  -> {:<21} {:<15} {:<28} {:>8} {:>10} {:>12} {:>14}",
                be.backend,
                be.state,
                "",
                "",
                be.counter.new_flows,
                be.counter.packets,
                be.counter.bytes
            );
        }
    }
    Ok(())
}
