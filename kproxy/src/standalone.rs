//! `kproxy standalone`: the datapath driven by a manifest file of Services and
//! EndpointSlices instead of the API server. The file is re-read when it changes; an invalid
//! file is rejected with a message and the running state is kept.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context as _, Result};
use kproxy::{
    Datapath, XdpAttachMode,
    datapath::find_cgroup2_root,
    metrics, model,
    names::{Names, load_names, save_names, service_table},
    pinned::PinnedLb,
    source::ManifestSource,
    sync::Syncer,
};
use tokio::signal::unix::{SignalKind, signal};

/// Where the uplink's external load balancing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LbMode {
    Xdp,
    Tc,
}

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Multi-document YAML of v1 Services and discovery.k8s.io/v1 EndpointSlices, or a
    /// directory of such files (*.yaml, *.yml, *.json); changed files are re-read.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// The node's uplink interface: XDP and tc programs for LoadBalancer IPs, externalIPs
    /// and NodePorts reached from other hosts.
    #[arg(long)]
    uplink: Option<String>,
    /// XDP attach mode on the uplink.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpAttachMode,
    /// Which uplink hook load-balances external traffic.
    #[arg(long, value_enum, default_value = "xdp")]
    lb_mode: LbMode,
    /// A pod's host-side veth: per-packet service translation for traffic leaving the pod
    /// (repeatable).
    #[arg(long = "pod-iface")]
    pod_ifaces: Vec<String>,
    /// Do not attach socket-LB (cgroup connect4/sendmsg4/recvmsg4/getpeername4).
    #[arg(long)]
    no_socket_lb: bool,
    /// cgroup v2 directory for socket-LB (default: the cgroup v2 root).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Node addresses that serve NodePorts (default: the uplink's IPv4 addresses).
    #[arg(long = "node-ip")]
    node_ips: Vec<Ipv4Addr>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Start with aya-log debug events on (switch at run time with `kproxy debug`).
    #[arg(long)]
    debug_events: bool,
}

struct Reconciler {
    syncer: Syncer,
    node_ips: Vec<Ipv4Addr>,
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
                tracing::error!("manifest rejected, keeping the running state: {err}");
                return;
            }
        };
        let parsed = started.elapsed();
        let desired = model::build_state(&services, &slices, &self.node_ips);
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
        if let Err(err) = dp.apply(&ops) {
            // Partially applied: the syncer assumed success, so resynchronise it from the
            // maps themselves.
            tracing::error!(%err, "applying map updates failed");
            if let Ok((s, b, r)) = dp.read_lb_maps() {
                self.syncer = Syncer::from_maps(s, b, r);
            }
            return;
        }
        let took = started.elapsed();
        metrics::SYNC_OPS.inc_by(ops.len() as u64);
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
        let names = Names::from_state(&desired, &self.syncer);
        if let Err(err) = save_names(&self.bpffs, &names) {
            tracing::warn!(%err, "cannot save service names for `kproxy dump`");
        }
        *self
            .names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
    }
}

pub async fn run(bpffs: &Path, opts: Opts) -> Result<()> {
    let mut dp = Datapath::load(bpffs).context("loading the eBPF datapath")?;
    dp.set_debug_events(opts.debug_events)
        .context("setting debug events")?;
    dp.set_lb_in_tc(opts.lb_mode == LbMode::Tc)
        .context("setting the LB mode")?;
    let mut node_ips = opts.node_ips.clone();
    if let Some(uplink) = &opts.uplink {
        let mode = dp
            .attach_uplink(uplink, opts.xdp_mode)
            .with_context(|| format!("attaching to uplink {uplink}"))?;
        tracing::info!(%uplink, xdp_mode = ?mode, lb_mode = ?opts.lb_mode, "uplink ready");
        if node_ips.is_empty() {
            node_ips = kproxy::netif::ipv4_addrs(uplink);
        }
    }
    for iface in &opts.pod_ifaces {
        dp.attach_pod_iface(iface)
            .with_context(|| format!("attaching to pod interface {iface}"))?;
    }
    if !opts.no_socket_lb {
        let cgroup = match &opts.cgroup {
            Some(c) => c.clone(),
            None => find_cgroup2_root().context("finding the cgroup v2 root")?,
        };
        dp.attach_cgroup(&cgroup)
            .with_context(|| format!("attaching socket-LB to {}", cgroup.display()))?;
    }

    // Start from what the maps hold (a previous kproxy's state survives a restart).
    let (s, b, r) = dp.read_lb_maps().context("reading the pinned LB maps")?;
    let restored = s.len();
    let syncer = Syncer::from_maps(s, b, r);
    // The names saved by the previous kproxy match the restored maps until the first sync.
    let names = Arc::new(RwLock::new(load_names(bpffs).unwrap_or_default()));
    let mut rec = Reconciler {
        syncer,
        node_ips,
        bpffs: bpffs.to_path_buf(),
        names: Arc::clone(&names),
    };
    tracing::info!(restored_entries = restored, node_ips = ?rec.node_ips, "state restored from pinned maps");

    if let Some(addr) = opts.metrics_addr {
        let lb = PinnedLb::open(bpffs).context("opening the pinned maps for /metrics")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tracing::info!(%addr, "serving /metrics");
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, lb, names).await {
                tracing::error!(%err, "metrics server stopped");
            }
        });
    }

    let mut source = opts.manifests.as_deref().map(ManifestSource::new);
    if let Some(src) = source.as_mut() {
        rec.reload(&mut dp, src);
    }
    tracing::info!("kproxy ready");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    // A stat() every 50 ms is cheap and keeps reloads prompt.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
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
