//! The kproxy command: run the datapath on a node, or inspect a running one.

use std::{io::IsTerminal as _, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use kproxy::{DEFAULT_BPFFS_DIR, Datapath, XdpAttachMode, pinned};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "kproxy",
    version,
    about = "eBPF service proxy for kproxy nodes"
)]
struct Cli {
    /// bpffs directory where the datapath's maps are pinned.
    #[arg(long, global = true, default_value = DEFAULT_BPFFS_DIR, env = "KPROXY_BPFFS")]
    bpffs: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the datapath and attach it to the node's uplink; runs until SIGINT/SIGTERM.
    Standalone {
        /// The node's uplink interface (XDP + tc ingress/egress are attached to it).
        #[arg(long)]
        uplink: String,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpAttachMode,
        /// Start with aya-log debug events on (switch at run time with `kproxy debug`).
        #[arg(long)]
        debug_events: bool,
    },
    /// Print the datapath's counters (read from the pinned maps of a running kproxy).
    Dump {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Switch the eBPF debug events of a running kproxy on or off.
    Debug {
        #[arg(value_enum)]
        state: OnOff,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,kproxy::ebpf=trace")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Standalone {
            uplink,
            xdp_mode,
            debug_events,
        } => standalone(&cli.bpffs, &uplink, xdp_mode, debug_events).await,
        Command::Dump { output } => dump(&cli.bpffs, output),
        Command::Debug { state } => {
            let on = matches!(state, OnOff::On);
            pinned::set_debug_events(&cli.bpffs, on)?;
            println!("debug events {}", if on { "on" } else { "off" });
            Ok(())
        }
    }
}

async fn standalone(
    bpffs: &std::path::Path,
    uplink: &str,
    xdp_mode: XdpAttachMode,
    debug_events: bool,
) -> Result<()> {
    let mut dp = Datapath::load(bpffs).context("loading the eBPF datapath")?;
    dp.set_debug_events(debug_events)
        .context("setting debug events")?;
    let mode = dp
        .attach_uplink(uplink, xdp_mode)
        .with_context(|| format!("attaching to uplink {uplink}"))?;
    tracing::info!(%uplink, ?mode, "kproxy ready");
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("stopping: detaching programs (pinned maps are kept)");
    drop(dp);
    Ok(())
}

fn dump(bpffs: &std::path::Path, output: Output) -> Result<()> {
    let rows = pinned::read_ifstats(bpffs)?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            println!(
                "{:<12} {:<11} {:>12} {:>14}",
                "HOOK", "CLASS", "PACKETS", "BYTES"
            );
            for r in rows {
                println!(
                    "{:<12} {:<11} {:>12} {:>14}",
                    r.hook, r.class, r.packets, r.bytes
                );
            }
        }
    }
    Ok(())
}
