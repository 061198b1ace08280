//! kproxy-scheduler: binds unbound pods to nodes.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use kproxy_controller_manager::client;
use kproxy_scheduler::Options;
use tracing::info;

/// mimalloc: with 10,000 pods the scheduler's RSS went from 99 MiB (glibc) to 39 MiB; see
/// docs/ARCHITECTURE.md, Controller measurements.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(version, about = "kproxy scheduler: assigns unbound pods to nodes")]
struct Flags {
    /// Kubeconfig for the API server (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Pods with this `spec.schedulerName` (or none) are scheduled; others are left alone.
    #[arg(long, default_value = kproxy_scheduler::COMPONENT)]
    scheduler_name: String,
    /// Binds in flight at most.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    parallelism: u16,
    /// Where `/healthz` and `/readyz` are served (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:10259")]
    health_addr: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    kproxy_controller_manager::init_tracing();
    let f = Flags::parse();
    let client = client::from_kubeconfig(f.kubeconfig.as_deref()).await?;
    client
        .apiserver_version()
        .await
        .context("reaching the API server")?;
    let readiness = kproxy_controller_manager::health::Readiness::default();
    let health = kproxy_controller_manager::health::serve(f.health_addr, readiness.clone()).await?;
    info!(%health, "health endpoint");
    let opts = Options {
        scheduler_name: f.scheduler_name,
        parallelism: usize::from(f.parallelism),
        readiness,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        r = kproxy_scheduler::run(client, opts) => Ok(r?),
        _ = tokio::signal::ctrl_c() => { info!("interrupted, stopping"); Ok(()) }
        _ = term.recv() => { info!("terminated, stopping"); Ok(()) }
    }
}
