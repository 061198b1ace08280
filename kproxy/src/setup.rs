//! What `kproxy standalone` and `kproxy node` share: the datapath options, loading and
//! attaching the programs, restoring the syncer from the pinned maps, and the metrics
//! listener.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use tokio::sync::mpsc;

use anyhow::{Context as _, Result};
use kproxy::{
    Datapath, XdpAttachMode, datapath::find_cgroup2_root, metrics, names::Names, pinned::PinnedLb,
    pod_veths::PodVethChange, sync::Syncer,
};

/// Where the uplink's external load balancing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LbMode {
    Xdp,
    Tc,
}

#[derive(Debug, clap::Args)]
pub struct DatapathOpts {
    /// The node's uplink interface: XDP and tc programs for LoadBalancer IPs, externalIPs
    /// and NodePorts reached from other hosts.
    #[arg(long)]
    pub uplink: Option<String>,
    /// XDP attach mode on the uplink.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpAttachMode,
    /// Which uplink hook load-balances external traffic.
    #[arg(long, value_enum, default_value = "xdp")]
    pub lb_mode: LbMode,
    /// A pod's host-side veth: per-packet service translation for traffic leaving the pod
    /// (repeatable).
    #[arg(long = "pod-iface")]
    pub pod_ifaces: Vec<String>,
    /// The pod bridge (e.g. kbr0): every veth enslaved to it gets the pod program as it
    /// appears and loses it when it goes, followed through rtnetlink link notifications
    /// (repeatable).
    #[arg(long = "pod-bridge")]
    pub pod_bridges: Vec<String>,
    /// Do not attach socket-LB (cgroup connect4/sendmsg4/recvmsg4/getpeername4).
    #[arg(long)]
    pub no_socket_lb: bool,
    /// cgroup v2 directory for socket-LB (default: the cgroup v2 root).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Node addresses that serve NodePorts (standalone default: the uplink's IPv4
    /// addresses; node mode adds the Node's InternalIP/ExternalIP and the uplink's).
    #[arg(long = "node-ip")]
    pub node_ips: Vec<Ipv4Addr>,
    /// Serve Prometheus metrics (and /healthz, /livez) on this address.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Start with aya-log debug events on (switch at run time with `kproxy debug`).
    #[arg(long)]
    pub debug_events: bool,
}

/// A loaded and attached datapath, and the syncer that mirrors its maps.
pub struct Running {
    pub dp: Datapath,
    pub syncer: Syncer,
    /// The uplink's IPv4 addresses (empty without an uplink).
    pub uplink_ips: Vec<Ipv4Addr>,
    /// Shared with `/metrics`; also saved to a file for `kproxy dump`.
    pub names: Arc<RwLock<Names>>,
    /// Later pod veth changes on the `--pod-bridge`s, for [`next_pod_veth`] and
    /// [`apply_pod_veth`] in the main loop (`None` without `--pod-bridge`).
    pub pod_veths: Option<mpsc::Receiver<PodVethChange>>,
}

/// Loads the programs (reusing pinned maps), attaches them as `opts` says, rebuilds the
/// syncer from the maps (a previous kproxy's state survives a restart) and starts the
/// metrics listener.
pub async fn bring_up(bpffs: &Path, opts: &DatapathOpts) -> Result<Running> {
    let mut dp = Datapath::load(bpffs).context("loading the eBPF datapath")?;
    dp.set_debug_events(opts.debug_events)
        .context("setting debug events")?;
    dp.set_lb_in_tc(opts.lb_mode == LbMode::Tc)
        .context("setting the LB mode")?;
    let mut uplink_ips = Vec::new();
    if let Some(uplink) = &opts.uplink {
        let mode = dp
            .attach_uplink(uplink, opts.xdp_mode)
            .with_context(|| format!("attaching to uplink {uplink}"))?;
        tracing::info!(%uplink, xdp_mode = ?mode, lb_mode = ?opts.lb_mode, "uplink ready");
        uplink_ips = kproxy::netif::ipv4_addrs(uplink);
    }
    for iface in &opts.pod_ifaces {
        dp.attach_pod_iface(iface)
            .with_context(|| format!("attaching to pod interface {iface}"))?;
    }
    let pod_veths = if opts.pod_bridges.is_empty() {
        None
    } else {
        let (initial, rx) = kproxy::pod_veths::start(opts.pod_bridges.clone())
            .await
            .context("subscribing to link notifications for --pod-bridge")?;
        for change in initial {
            apply_pod_veth(&mut dp, change);
        }
        match dp.sweep_stale_pod_links() {
            Ok(stale) if !stale.is_empty() => {
                tracing::info!(
                    ?stale,
                    "removed the pinned links of pod veths gone while kproxy was down"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "cannot sweep stale pod veth links"),
        }
        let attached: Vec<&str> = dp.pod_ifaces().collect();
        tracing::info!(
            bridges = ?opts.pod_bridges,
            ?attached,
            "following pod veths on the pod bridges"
        );
        Some(rx)
    };
    if !opts.no_socket_lb {
        let cgroup = match &opts.cgroup {
            Some(c) => c.clone(),
            None => find_cgroup2_root().context("finding the cgroup v2 root")?,
        };
        dp.attach_cgroup(&cgroup)
            .with_context(|| format!("attaching socket-LB to {}", cgroup.display()))?;
    } else {
        // Socket-LB links outlive kproxy (they are pinned); without this a previous run's
        // programs would keep translating after socket-LB was switched off.
        dp.detach_pinned_cgroup_links()
            .context("removing the pinned socket-LB links")?;
    }

    let (s, b, r) = dp.read_lb_maps().context("reading the pinned LB maps")?;
    let restored = s.len();
    let syncer = Syncer::from_maps(s, b, r);
    tracing::info!(
        restored_entries = restored,
        "state restored from pinned maps"
    );
    // The names saved by the previous kproxy match the restored maps until the first sync.
    let names = Arc::new(RwLock::new(
        kproxy::names::load_names(bpffs).unwrap_or_default(),
    ));

    if let Some(addr) = opts.metrics_addr {
        let lb = PinnedLb::open(bpffs).context("opening the pinned maps for /metrics")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz, /livez");
        let names = Arc::clone(&names);
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, lb, names).await {
                tracing::error!(%err, "metrics server stopped");
            }
        });
    }
    Ok(Running {
        dp,
        syncer,
        uplink_ips,
        names,
        pod_veths,
    })
}

/// Applies one pod veth change. A failure concerns that veth only, so it is logged and the
/// proxy goes on (an attach usually fails because the veth vanished meanwhile, and its
/// removal follows as a detach).
pub fn apply_pod_veth(dp: &mut Datapath, change: PodVethChange) {
    match change {
        PodVethChange::Attach(iface) => {
            if let Err(err) = dp.attach_pod_iface(&iface) {
                // `{:#}` shows the aya cause chain, not only the outermost message.
                let err = format!("{:#}", anyhow::Error::from(err));
                tracing::error!(%iface, %err, "cannot attach the pod program to a pod veth");
            }
        }
        PodVethChange::Detach(iface) => {
            if let Err(err) = dp.detach_pod_iface(&iface) {
                tracing::error!(%iface, %err, "cannot detach the pod program from a pod veth");
            }
        }
    }
}

/// The next pod veth change; never resolves without `--pod-bridge` or once the link
/// watcher has stopped (it logs why), so it can sit in a `select!` unconditionally.
pub async fn next_pod_veth(rx: &mut Option<mpsc::Receiver<PodVethChange>>) -> PodVethChange {
    if let Some(r) = rx {
        if let Some(change) = r.recv().await {
            return change;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// Publishes `names` to `/metrics` and saves them for `kproxy dump`.
pub fn publish_names(bpffs: &Path, shared: &RwLock<Names>, names: Names) {
    if let Err(err) = kproxy::names::save_names(bpffs, &names) {
        tracing::warn!(%err, "cannot save service names for `kproxy dump`");
    }
    *shared
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
}
