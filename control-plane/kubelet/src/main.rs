//! kproxy-kubelet: the node agent. Registers this host as a Node, heartbeats its Lease, and
//! runs the pods bound to it as Docker containers in network namespaces on the node bridge.

#![forbid(unsafe_code)]

mod backoff;
mod configs;
mod create;
mod env;
mod events;
mod health;
mod manager;
mod node;
mod nonroot;
mod plan;
mod pod;
mod probe;
mod runtime;
mod shared;
mod status;
mod subpath;
mod volumes;

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ipnet::Ipv4Net;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::info;

use crate::runtime::PodRuntime as _;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "kproxy node agent: runs the pods bound to this node in Docker"
)]
struct Options {
    /// Kubeconfig with the API server and this node's token (`kproxy-apiserver node-token`).
    #[arg(
        long,
        env = "KUBECONFIG",
        default_value = "/var/lib/kproxy/kubelet/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP (default: the source address of the default route).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// Pod CIDR used when the control plane assigned none; the bridge gets its first address.
    /// Without it the kubelet waits for the controller manager's node IPAM to assign one.
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    /// The node bridge the pods' veths join.
    #[arg(long, default_value = "kbr0")]
    bridge: String,
    /// The cluster's pod CIDR (the controller manager's `--cluster-cidr`): pod traffic to it
    /// (pods of other nodes) is not masqueraded, so it keeps the pod's address. Without it
    /// only traffic within this node's pod CIDR keeps it.
    #[arg(long)]
    cluster_cidr: Option<Ipv4Net>,
    /// Docker's cgroup parent for every container of this node, sandboxes included (e.g.
    /// `/kproxy-node-2`): the node's pods share one cgroup, which kproxy's
    /// `--socket-lb-cgroup` can name.
    #[arg(long, value_parser = parse_cgroup_parent)]
    cgroup_parent: Option<String>,
    /// State: IPAM, the serving certificate.
    #[arg(long, default_value = "/var/lib/kproxy/kubelet")]
    data_dir: PathBuf,
    /// Port of the log/exec endpoint for the API server (0: any free port).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// CA (PEM) for the API server's client certificate (default: the kubeconfig's CA).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 5.0)]
    heartbeat: f64,
    /// First restart back-off in seconds; doubles per restart.
    #[arg(long, default_value_t = 10.0)]
    restart_backoff: f64,
    /// Restart back-off cap in seconds.
    #[arg(long, default_value_t = 300.0)]
    restart_backoff_max: f64,
    /// Pods this node accepts (reported as capacity).
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The Docker Engine endpoint (unix:///path or tcp://host:port).
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// Hard eviction thresholds: MemoryPressure / DiskPressure when a signal falls below its
    /// value (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available,
    /// imagefs.inodesFree; a quantity or a percentage). Replaces the defaults as a whole.
    #[arg(long, default_value = health::DEFAULT_EVICTION_HARD, value_parser = health::Thresholds::parse)]
    eviction_hard: health::Thresholds,
    /// A container's log is rotated at this size (a quantity: 10Mi).
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container, the current one included (at least 2).
    #[arg(long, default_value_t = 5)]
    container_log_max_files: u32,
}

/// A cgroup path for Docker's cgroupfs driver: absolute, no `.`/`..` components (a
/// systemd slice name such as `kproxy.slice` is taken as it is).
fn parse_cgroup_parent(s: &str) -> Result<String, String> {
    let path = std::path::Path::new(s);
    if !s.contains('/') && path.extension().is_some_and(|e| e == "slice") {
        return Ok(s.to_string());
    }
    if !path.is_absolute()
        || s.len() < 2
        || path.components().any(|c| {
            matches!(
                c,
                std::path::Component::CurDir | std::path::Component::ParentDir
            )
        })
    {
        return Err(format!(
            "{s:?}: expected an absolute cgroup path such as /kproxy-node-2"
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{what} {v}: not a duration"))
}

/// `--container-log-max-size` and `--container-log-max-files`, checked as the kubelet does.
fn log_rotation(size: &str, files: u32) -> Result<runtime::LogRotation> {
    let q = kproxy_apimachinery::quantity::Quantity::parse(size)
        .with_context(|| format!("--container-log-max-size {size}: not a quantity"))?;
    let max_size = u64::try_from(q.value())
        .ok()
        .filter(|s| *s > 0)
        .with_context(|| format!("--container-log-max-size {size}: must be positive"))?;
    if files < 2 {
        bail!("--container-log-max-files {files}: must be at least 2");
    }
    Ok(runtime::LogRotation {
        max_size,
        max_files: files,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        // Logs go to stderr, as for the API server and kproxy.
        .with_writer(std::io::stderr)
        .init();
    let o = Options::parse();
    let backoff = backoff::Backoff {
        base: secs(o.restart_backoff, "restart-backoff")?,
        max: secs(o.restart_backoff_max, "restart-backoff-max")?,
    };
    let heartbeat = secs(o.heartbeat, "heartbeat")?;
    kproxy_podnet::validate_ifname(&o.bridge).context("--bridge")?;
    let node_name = match o.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name")?
            .trim()
            .to_lowercase(),
    };
    let node_ip = o.node_ip.unwrap_or_else(node::default_ip);
    std::fs::create_dir_all(&o.data_dir)
        .with_context(|| format!("creating {}", o.data_dir.display()))?;

    let kubeconfig = Kubeconfig::read_from(&o.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", o.kubeconfig.display()))?;
    let client_ca_pem = match &o.client_ca_file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => kproxy_node_tls::kubeconfig_ca(&kubeconfig)?,
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the API client")?;

    let logs = log_rotation(&o.container_log_max_size, o.container_log_max_files)?;
    let docker = bollard::Docker::connect_with_host(&o.docker_host)
        .with_context(|| format!("connecting to Docker at {}", o.docker_host))?;
    let version = docker.version().await.context(
        "asking Docker for its version (is dockerd running? `cargo xtask setup` starts it)",
    )?;
    let docker_root = docker
        .info()
        .await
        .context("asking Docker for its root directory")?
        .docker_root_dir
        .map(PathBuf::from);
    let rt = runtime::Runtime {
        docker: docker.clone(),
        node: node_name.clone(),
        logs,
        cgroup_parent: o.cgroup_parent.clone(),
    };
    if rt.image_origin(runtime::PAUSE_IMAGE).await?.is_none() {
        bail!(
            "the sandbox image {} is missing: build it with `cargo xtask images`",
            runtime::PAUSE_IMAGE
        );
    }

    let listener = kproxy_node_tls::listen((node_ip, o.port).into())
        .with_context(|| format!("binding the kubelet endpoint {node_ip}:{}", o.port))?;
    let port = listener.local_addr()?.port();

    let facts = node::NodeFacts {
        name: node_name.clone(),
        ip: node_ip.to_string(),
        hostname: node_name.clone(),
        kubelet_port: port,
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        memory_kib: node::memory_kib(),
        max_pods: o.max_pods,
        runtime_version: version.version.unwrap_or_default(),
    };
    let probe = health::Probe {
        docker: docker.clone(),
        thresholds: o.eviction_hard,
        state_dir: o.data_dir.clone(),
        docker_root,
    };
    let health = probe.check().await;
    let cidr: Ipv4Net = node::register(
        &client,
        &facts,
        &health,
        o.pod_cidr.map(|c| c.trunc().to_string()).as_deref(),
    )
    .await?
    .parse()
    .context("the Node's spec.podCIDR")?;
    let gateway = cidr
        .hosts()
        .next()
        .with_context(|| format!("pod CIDR {cidr} has no host addresses"))?;
    kproxy_podnet::ensure_bridge(&o.bridge, Ipv4Net::new(gateway, cidr.prefix_len())?)
        .await
        .context("setting up the node bridge")?;
    kproxy_podnet::enable_cluster_forwarding(&o.bridge, cidr, o.cluster_cidr)
        .context("allowing pod traffic")?;
    let (ipam, aside) =
        kproxy_podnet::Ipam::open_for_assigned(o.data_dir.join("ipam.json"), cidr, gateway)?;
    if let Some(old) = aside {
        tracing::warn!(%old, pod_cidr = %cidr, "the node's pod CIDR changed: the old IPAM state is set aside");
    }

    let shared = Arc::new(shared::Shared {
        runtime: rt,
        client: client.clone(),
        net: shared::Net {
            bridge: o.bridge.clone(),
            cidr,
            gateway,
            ipam: std::sync::Mutex::new(ipam),
        },
        node_ip: node_ip.to_string(),
        state_dir: o.data_dir.clone(),
        backoff,
    });
    tokio::spawn(node::heartbeat(client, facts, heartbeat, probe, health));
    let server = kproxy_kubelet_server::serve(
        listener,
        kproxy_kubelet_server::ServerConfig {
            node_name: node_name.clone(),
            data_dir: o.data_dir.clone(),
            client_ca_pem,
        },
        docker,
    );
    info!(
        node = %node_name, %node_ip, pod_cidr = %cidr, bridge = %o.bridge, port,
        cluster_cidr = ?o.cluster_cidr, cgroup_parent = ?o.cgroup_parent, "kubelet ready"
    );
    tokio::select! {
        r = manager::run(shared) => r,
        r = server => r.context("the kubelet endpoint"),
        () = shutdown() => {
            info!("kubelet stopping; its pods keep running and are adopted at the next start");
            Ok(())
        }
    }
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_placement_flags_parse() {
        let o = Options::try_parse_from([
            "kproxy-kubelet",
            "--cgroup-parent",
            "/kproxy-node-2/",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .unwrap();
        assert_eq!(o.cgroup_parent.as_deref(), Some("/kproxy-node-2"));
        assert_eq!(o.cluster_cidr, Some("10.244.0.0/16".parse().unwrap()));
        let plain = Options::try_parse_from(["kproxy-kubelet"]).unwrap();
        assert_eq!((plain.cgroup_parent, plain.cluster_cidr), (None, None));
        for bad in ["relative", "/", "/a/../b", ""] {
            assert!(parse_cgroup_parent(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_cgroup_parent("kproxy.slice").unwrap(), "kproxy.slice");
        assert!(Options::try_parse_from(["k", "--cluster-cidr", "10.244.0.0"]).is_err());
    }
}
