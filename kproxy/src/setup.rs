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
    Datapath, XdpAttachMode,
    datapath::{HostRouting, find_cgroup2_root},
    metrics,
    names::Names,
    pinned::PinnedLb,
    pod_veths::PodVethChange,
    sync::Syncer,
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
    /// How load-balanced packets reach local pod backends and their replies the uplink:
    /// `bpf` redirects them past the bridge, netfilter and routing (`bpf_redirect_peer`,
    /// `bpf_redirect`), `legacy` leaves them to the kernel (and its netfilter FORWARD
    /// rules). `bpf` measured faster (docs/ARCHITECTURE.md, "Host routing").
    #[arg(long, value_enum, default_value = "bpf")]
    pub host_routing: HostRouting,
    /// A pod's host-side veth: per-packet service translation for traffic leaving the pod
    /// (repeatable).
    #[arg(long = "pod-iface")]
    pub pod_ifaces: Vec<String>,
    /// The pod bridge (e.g. kbr0): every veth enslaved to it gets the pod program as it
    /// appears and loses it when it goes, followed through rtnetlink link notifications
    /// (repeatable).
    #[arg(long = "pod-bridge")]
    pub pod_bridges: Vec<String>,
    /// Do not attach socket-LB (cgroup connect/sendmsg/recvmsg/getpeername, 4 and 6).
    #[arg(long)]
    pub no_socket_lb: bool,
    /// Where socket-LB translates connect()/sendmsg(): `all` (every process, attached at
    /// the cgroup v2 root), `host` (the cgroup v2 root, but only sockets of kproxy's own
    /// network namespace: pods and namespaces standing for other hosts take the
    /// per-packet paths, Cilium's `bpf-lb-sock-hostns-only`), or a cgroup v2 directory
    /// (its processes, in any namespace).
    #[arg(long, alias = "cgroup", default_value = "all", value_parser = parse_scope)]
    pub socket_lb_scope: SocketLbScope,
    /// With `--socket-lb-scope host`: socket-LB also translates sockets of processes under
    /// this cgroup v2 directory, whatever their network namespace (a node's pods, placed
    /// there by the kubelet's `--cgroup-parent`). Created when missing.
    #[arg(long)]
    pub socket_lb_cgroup: Option<PathBuf>,
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
    /// Seconds between connection tracking garbage collections (expired entries are
    /// deleted; the datapath already treats them as gone).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ct_gc_interval: u64,
    /// How new external flows (LoadBalancer IPs, externalIPs, NodePorts) pick a backend
    /// when the Service has no `kproxy.io/lb-algorithm` annotation: `random` (hash of the
    /// flow modulo the backends) or `maglev` (consistent hashing: a backend change moves
    /// only the flows it must; a lookup table of ≥ 1,600 entries per backend).
    #[arg(long, default_value = "random", value_parser = parse_algorithm)]
    pub lb_algorithm: kproxy::model::LbAlgorithm,
    /// The cluster's load-balancing hash seed (any string; the same on every node, like
    /// Cilium's maglev-hash-seed): flows hash alike on every node and Maglev tables are
    /// identical. Without it, a random seed is chosen on the first start and kept with the
    /// pinned maps.
    #[arg(long)]
    pub lb_hash_seed: Option<String>,
}

fn parse_algorithm(s: &str) -> Result<kproxy::model::LbAlgorithm, String> {
    s.parse()
}

/// Where socket-LB applies (`--socket-lb-scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketLbScope {
    All,
    Host,
    Cgroup(PathBuf),
}

fn parse_scope(s: &str) -> Result<SocketLbScope, String> {
    match s {
        "all" => Ok(SocketLbScope::All),
        "host" => Ok(SocketLbScope::Host),
        "" => Err("expected all, host or a cgroup v2 directory".into()),
        dir if Path::new(dir).is_absolute() => Ok(SocketLbScope::Cgroup(dir.into())),
        other => Err(format!(
            "{other:?}: expected all, host or an absolute cgroup v2 directory"
        )),
    }
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, Linux 5.14).
fn own_netns_cookie() -> std::io::Result<u64> {
    let sock = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    kproxy::datapath::sock_term::netns_cookie(std::os::fd::AsFd::as_fd(&sock))
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
    let cluster_seed = opts
        .lb_hash_seed
        .as_deref()
        .map(|s| kproxy::maglev::hash64(0, s.as_bytes()));
    dp.set_lb(opts.lb_algorithm, cluster_seed)
        .context("setting the load-balancing hash seed")?;
    tracing::info!(lb_algorithm = ?opts.lb_algorithm, seed_given = cluster_seed.is_some(), "backend selection");
    let mut uplink_ips = Vec::new();
    if let Some(uplink) = &opts.uplink {
        let mode = dp
            .attach_uplink(uplink, opts.xdp_mode)
            .with_context(|| format!("attaching to uplink {uplink}"))?;
        tracing::info!(%uplink, xdp_mode = ?mode, lb_mode = ?opts.lb_mode, "uplink ready");
        uplink_ips = kproxy::netif::ipv4_addrs(uplink);
        kproxy::snat::check_local_port_range();
        if let Some(mac) = kproxy::netif::mac_addr(uplink) {
            dp.set_uplink_mac(mac)
                .context("setting the uplink's MAC for ARP replies")?;
        } else {
            tracing::warn!(
                %uplink,
                "no MAC address on the uplink: LoadBalancer IPs are not announced by ARP"
            );
        }
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
    // After the pod veths are known: it prunes learned routes of veths that went away.
    dp.set_host_routing(opts.host_routing, opts.uplink.as_deref())
        .context("setting host routing")?;
    if opts.no_socket_lb {
        // Socket-LB links outlive kproxy (they are pinned); without this a previous run's
        // programs would keep translating after socket-LB was switched off.
        dp.detach_pinned_cgroup_links()
            .context("removing the pinned socket-LB links")?;
    } else {
        let (cgroup, netns) = match &opts.socket_lb_scope {
            SocketLbScope::Cgroup(c) => (c.clone(), None),
            scope => {
                let root = find_cgroup2_root().context("finding the cgroup v2 root")?;
                let netns = if *scope == SocketLbScope::Host {
                    Some(own_netns_cookie().context("reading the network namespace cookie")?)
                } else {
                    None
                };
                (root, netns)
            }
        };
        let pods = match (&opts.socket_lb_cgroup, &opts.socket_lb_scope) {
            (Some(dir), SocketLbScope::Host) => Some(
                kproxy::datapath::cgroup_scope(dir)
                    .with_context(|| format!("--socket-lb-cgroup {}", dir.display()))?,
            ),
            (Some(_), _) => anyhow::bail!("--socket-lb-cgroup needs --socket-lb-scope host"),
            (None, _) => None,
        };
        // Before attaching: a pinned link of a previous run may already be live.
        dp.set_socket_lb_netns(netns)
            .context("setting the socket-LB scope")?;
        // Also when `None`: the config map is pinned and may hold a previous run's cgroup.
        dp.set_socket_lb_cgroup(pods)
            .context("setting the socket-LB cgroup scope")?;
        if let Some((id, level)) = pods {
            tracing::info!(
                cgroup_id = id,
                level,
                "socket-LB also covers the processes of the --socket-lb-cgroup"
            );
        }
        dp.attach_cgroup(&cgroup)
            .with_context(|| format!("attaching socket-LB to {}", cgroup.display()))?;
        tracing::info!(cgroup = %cgroup.display(), netns_cookie = ?netns, "socket-LB scope");
    }

    let syncer = dp.restore_syncer().context("reading the pinned LB maps")?;
    tracing::info!(
        restored_entries = syncer.service_entries(),
        "state restored from pinned maps"
    );
    kproxy::ct::spawn_gc(bpffs, std::time::Duration::from_secs(opts.ct_gc_interval))
        .context("starting connection tracking garbage collection")?;
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
            if let Err(err) = dp.prune_host_routes() {
                tracing::warn!(%iface, %err, "cannot remove the host routes of a pod veth");
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

/// Saves `names` for `kproxy dump`; a failure is logged (the datapath does not depend on it).
pub fn save_names_logged(bpffs: &Path, names: &Names) {
    if let Err(err) = kproxy::names::save_names(bpffs, names) {
        tracing::warn!(%err, "cannot save service names for `kproxy dump`");
    }
}

/// Publishes `names` to `/metrics` and saves them for `kproxy dump`.
pub fn publish_names(bpffs: &Path, shared: &RwLock<Names>, names: Names) {
    save_names_logged(bpffs, &names);
    *shared
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
}
