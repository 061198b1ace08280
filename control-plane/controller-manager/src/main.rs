//! kproxy-controller-manager: runs every controller of the cluster in one process.
#![forbid(unsafe_code)]

use std::{net::SocketAddrV4, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::{FutureExt as _, future::BoxFuture};
use ipnet::Ipv4Net;
use kproxy_controller_manager::{
    Config, client, deployment, endpointslice, lbipam, nodeipam, nodelifecycle, podcache::PodCache,
    replicaset,
};
use tracing::{error, info};

/// mimalloc, like the scheduler (measured with 10,000 pods: no gain here, the scheduler's RSS
/// went from 99 to 39 MiB; see docs/ARCHITECTURE.md, Controller measurements).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "kproxy controller manager: Deployments, ReplicaSets, DaemonSets, Jobs, ServiceAccounts, EndpointSlices, LoadBalancer IPs, node IPAM and lifecycle"
)]
struct Options {
    /// Kubeconfig for the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// LoadBalancer address pool; repeat for several pools.
    #[arg(long = "lb-pool", default_value = "172.30.0.0/24")]
    lb_pools: Vec<Ipv4Net>,
    /// The cluster's pod addresses; each node gets a slice of it (`--node-cidr-mask-size`).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Net,
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The API server's service CIDR (LoadBalancer pools must not overlap it).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: Ipv4Net,
    /// Seconds without a Lease renewal before a node is Unknown (NotReady).
    #[arg(long, default_value_t = 40.0)]
    node_monitor_grace_period: f64,
    /// Seconds pods stay on an unreachable node without their own toleration.
    #[arg(long, default_value_t = 300.0)]
    pod_eviction_timeout: f64,
    /// Endpoint of the `default/kubernetes` Service (the API server's address as pods reach
    /// it); without it that Service is left alone.
    #[arg(long)]
    apiserver_endpoint: Option<SocketAddrV4>,
    /// Controllers to run (default: all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "deployment,replicaset,endpointslice,lbipam,nodeipam,nodelifecycle,job,serviceaccount,daemonset"
    )]
    controllers: Vec<String>,
    /// Where `/healthz` and `/readyz` are served (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:10257")]
    health_addr: std::net::SocketAddr,
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{what} {v}: not a duration"))
}

#[tokio::main]
async fn main() -> Result<()> {
    kproxy_controller_manager::init_tracing();
    let o = Options::parse();
    let config = Config {
        lb_pools: o.lb_pools,
        cluster_cidr: o.cluster_cidr,
        node_cidr_mask: o.node_cidr_mask_size,
        service_cidr: o.service_cidr,
        node_monitor_grace: secs(o.node_monitor_grace_period, "node-monitor-grace-period")?,
        pod_eviction_timeout: secs(o.pod_eviction_timeout, "pod-eviction-timeout")?,
        apiserver_endpoint: o.apiserver_endpoint,
    };
    if let Err(e) = config.validate() {
        bail!("{e}");
    }
    let config = Arc::new(config);
    let readiness = kproxy_controller_manager::health::Readiness::default();
    let health = kproxy_controller_manager::health::serve(o.health_addr, readiness.clone()).await?;
    let client = client::from_kubeconfig(o.kubeconfig.as_deref()).await?;
    client
        .apiserver_version()
        .await
        .context("reaching the API server")?;

    // One pod watch and cache for the process, shared by the controllers that read pods.
    let reads_pods = o.controllers.iter().any(|c| {
        matches!(
            c.as_str(),
            "deployment" | "replicaset" | "endpointslice" | "nodelifecycle" | "job" | "daemonset"
        )
    });
    let pods = if reads_pods {
        PodCache::spawn(client.clone())
    } else {
        PodCache::default()
    };

    let mut tasks = tokio::task::JoinSet::new();
    for name in o.controllers {
        let (c, cfg, p) = (client.clone(), Arc::clone(&config), pods.clone());
        let run: BoxFuture<'static, kproxy_controller_manager::error::Result<()>> = match name
            .as_str()
        {
            "deployment" => deployment::run(c, p).boxed(),
            "replicaset" => replicaset::run(c, p).boxed(),
            "endpointslice" => endpointslice::run(c, cfg, p).boxed(),
            "lbipam" => lbipam::run(c, cfg).boxed(),
            "nodeipam" => nodeipam::run(c, cfg).boxed(),
            "nodelifecycle" => nodelifecycle::run(c, cfg, p).boxed(),
            "job" => kproxy_controller_manager::job::run(c, p).boxed(),
            "serviceaccount" => kproxy_controller_manager::serviceaccount::run(c).boxed(),
            "daemonset" => kproxy_controller_manager::daemonset::run(c, p).boxed(),
            other => bail!(
                "unknown controller {other:?} (known: deployment, replicaset, endpointslice, lbipam, nodeipam, nodelifecycle, job, serviceaccount, daemonset)"
            ),
        };
        info!(controller = %name, "started");
        tasks.spawn(async move { (name, run.await) });
    }
    readiness.set_ready();
    info!(%health, "controller manager ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted, stopping"),
        _ = term.recv() => info!("terminated, stopping"),
        Some(done) = tasks.join_next() => {
            let (name, res) = done.context("a controller panicked")?;
            match res {
                Ok(()) => bail!("controller {name} stopped"),
                Err(e) => {
                    let e = anyhow::Error::new(e).context(format!("controller {name}"));
                    error!(controller = %name, error = format!("{e:#}"), "controller failed");
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
