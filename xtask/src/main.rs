//! `cargo xtask <command>`: the project's automation. `run` and `test` are the README's
//! contract; both call `setup` first so a fresh Debian/Ubuntu machine needs nothing else.

mod bench;
mod images;
mod run;
mod setup;
mod shape;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kproxy project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install and start everything kproxy needs (apt packages, bpf-linker, Docker engine,
    /// bpffs). Idempotent: a second run only checks.
    Setup(setup::SetupArgs),
    /// Set up, build and start the cluster on this host (foreground; Ctrl-C stops it).
    Run(run::RunArgs),
    /// Set up, then run every test: formatting, clippy, unit, privileged and end-to-end tests.
    Test(test::TestArgs),
    /// Build in release mode and run the benchmarks (`dataplane`: kproxy vs iptables vs
    /// nftables; `api`: the API server under kube-rs clients; `controllers`: scheduler and
    /// controller manager on 100 fake nodes; `kubelet`; `cluster`: `cargo xtask run` and the
    /// tutorial timed end to end); results in target/bench/.
    Bench(bench::BenchArgs),
    /// Build the node's container images locally (kproxy/pause:1, kproxy/httpd:1 alias
    /// httpd:latest, kproxy/kecho:1 alias kecho:latest); skips images already up to date.
    Images,
    /// Check the code's shape: no import cycle between the modules of a crate, no source file
    /// over 800 lines (test modules aside). Part of `cargo xtask test`.
    Shape,
}

/// Errors end the command with one message and its causes, never a backtrace: these are
/// things a user can fix (not root, a port taken, a failed step).
fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup(args) => setup::setup(&args),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::test(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Images => images::images(),
        Command::Shape => shape::shape(),
    }
}
