//! kproxy-apiserver: serve the cluster API, or manage its tokens.
#![forbid(unsafe_code)]

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use kproxy_apiserver::{auth::TokenStore, kubeconfig, server};

/// jemalloc, one arena returning freed pages after 100 ms (`.cargo/config.toml`): glibc's
/// malloc and free were a third of the API server's CPU per create, and mimalloc held more
/// memory (see docs/ARCHITECTURE.md, API server measurements).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "kproxy-apiserver",
    version,
    about = "Kubernetes-compatible API server for kproxy clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API over HTTPS.
    Serve(Box<server::Options>),
    /// Print a node's bearer token, creating it if needed (the server picks it up live).
    NodeToken {
        node: String,
        #[arg(long, default_value = "/var/lib/kproxy/apiserver")]
        data_dir: std::path::PathBuf,
    },
    /// Write a kubeconfig for a node's kubelet: the cluster CA and the node's token.
    NodeKubeconfig {
        node: String,
        #[command(flatten)]
        kubeconfig: KubeconfigArgs,
    },
    /// Write an admin kubeconfig (for the scheduler and controller manager): the cluster CA
    /// and the admin token.
    AdminKubeconfig {
        #[command(flatten)]
        kubeconfig: KubeconfigArgs,
    },
    /// Print the admin bearer token.
    AdminToken {
        #[arg(long, default_value = "/var/lib/kproxy/apiserver")]
        data_dir: std::path::PathBuf,
    },
}

fn node_token(node: &str, data_dir: &std::path::Path) -> Result<String> {
    let errs = kproxy_apimachinery::names::dns1123_subdomain(node);
    anyhow::ensure!(
        errs.is_empty(),
        "invalid node name {node:?}: {}",
        errs.join("; ")
    );
    Ok(TokenStore::open(data_dir)?.node_token(node)?)
}

/// Where a kubeconfig goes and what it names.
#[derive(clap::Args)]
struct KubeconfigArgs {
    /// Where to write it (mode 0600; an existing file is merged into).
    #[arg(long)]
    out: std::path::PathBuf,
    /// The API server's URL as the kubeconfig's user reaches it.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    #[arg(long, default_value = "/var/lib/kproxy/apiserver")]
    data_dir: std::path::PathBuf,
}

impl KubeconfigArgs {
    /// Writes the cluster CA and `token` to `out`.
    fn write(&self, token: &str) -> Result<()> {
        let ca_path = self.data_dir.join("pki/ca.crt");
        let ca = std::fs::read_to_string(&ca_path).with_context(|| {
            format!(
                "reading {} (start the API server once to create it)",
                ca_path.display()
            )
        })?;
        Ok(kubeconfig::write(&self.out, &self.server, &ca, token)?)
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(opts) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(server::run(*opts, async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }))
            .context("serving the API"),
        Command::NodeToken { node, data_dir } => {
            println!("{}", node_token(&node, &data_dir)?);
            Ok(())
        }
        Command::NodeKubeconfig { node, kubeconfig } => {
            kubeconfig.write(&node_token(&node, &kubeconfig.data_dir)?)?;
            println!("wrote {} for node {node}", kubeconfig.out.display());
            Ok(())
        }
        Command::AdminKubeconfig { kubeconfig } => {
            kubeconfig.write(&TokenStore::open(&kubeconfig.data_dir)?.admin_token())?;
            println!("wrote {} (admin)", kubeconfig.out.display());
            Ok(())
        }
        Command::AdminToken { data_dir } => {
            println!("{}", TokenStore::open(&data_dir)?.admin_token());
            Ok(())
        }
    }
}
