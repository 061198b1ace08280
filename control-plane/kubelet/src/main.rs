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
    };
    if rt.image_origin(runtime::PAUSE_IMAGE).await?.is_none() {
        bail!(
            "the sandbox image {} is missing: build it with `cargo xtask images`",
            runtime::PAUSE_IMAGE
        );
    }

    let listener = tokio::net::TcpListener::bind((node_ip, o.port))
        .await
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
    kproxy_podnet::enable_forwarding(&o.bridge, cidr).context("allowing pod traffic")?;
    let ipam = kproxy_podnet::Ipam::open(o.data_dir.join("ipam.json"), cidr, gateway)?;

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
    info!(node = %node_name, %node_ip, pod_cidr = %cidr, bridge = %o.bridge, port, "kubelet ready");
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
