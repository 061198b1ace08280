//! The kproxy command: run the datapath on a node, or inspect a running one.

mod keep_local;
mod node;
mod serve;
mod setup;
mod standalone;

use std::{io::IsTerminal as _, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use kproxy::{DEFAULT_BPFFS_DIR, pinned};
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
    /// Run the datapath from a manifest file of Services and EndpointSlices (no API
    /// server); runs until SIGINT/SIGTERM.
    Standalone(standalone::Opts),
    /// Run the datapath as the node's service proxy in a cluster: Services and
    /// EndpointSlices come from the API server; runs until SIGINT/SIGTERM.
    Node(node::Opts),
    /// Print the service table with backends and counters (from the pinned maps).
    Dump {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Print the drop and error counters per reason instead.
        #[arg(long)]
        drops: bool,
    },
    /// Print the uplink packet counters per hook and packet class.
    Ifstats {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove the datapath a stopped kproxy left in place: detach the uplink, pod and
    /// socket-LB programs (unpin their links), give the keep-local device's ranges back to
    /// `unreachable` routes and delete the device, and, with --maps, delete the pinned maps
    /// and state too.
    Cleanup {
        #[arg(long)]
        maps: bool,
    },
    /// Delete every connection tracking entry (Cilium's `bpf ct flush`): established flows
    /// pick a backend again with their next packet.
    CtFlush,
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
        Command::Standalone(opts) => standalone::run(&cli.bpffs, opts).await,
        Command::Node(opts) => node::run(&cli.bpffs, opts).await,
        Command::Dump {
            output,
            drops: true,
        } => {
            let rows = pinned::read_drops(&cli.bpffs)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Table => print!("{}", kproxy::drops::render_table(&rows)),
            }
            Ok(())
        }
        Command::Dump { output, .. } => {
            standalone::dump(&cli.bpffs, matches!(output, Output::Json))
        }
        Command::Ifstats { output } => ifstats(&cli.bpffs, output),
        Command::Cleanup { maps } => {
            for (dev, ranges) in keep_local::remove_owned(&cli.bpffs).await? {
                println!("removed the keep-local device {dev}; unreachable routes for {ranges:?}");
            }
            let n = kproxy::datapath::cleanup(&cli.bpffs, maps)
                .with_context(|| format!("cleaning up {}", cli.bpffs.display()))?;
            if maps {
                let _ = std::fs::remove_file(kproxy::names::names_path(&cli.bpffs));
            }
            println!("removed {n} pinned objects from {}", cli.bpffs.display());
            Ok(())
        }
        Command::CtFlush => {
            let n = kproxy::ct::CtTable::open(&cli.bpffs)?.flush()?;
            println!("deleted {n} connection tracking entries");
            Ok(())
        }
        Command::Debug { state } => {
            let on = matches!(state, OnOff::On);
            pinned::set_debug_events(&cli.bpffs, on)?;
            println!("debug events {}", if on { "on" } else { "off" });
            Ok(())
        }
    }
}

fn ifstats(bpffs: &std::path::Path, output: Output) -> Result<()> {
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
