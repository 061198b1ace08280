//! One module per command.

pub mod apply;
pub mod bench;
pub mod create;
pub mod create_config;
pub mod delete;
pub mod describe;
pub mod exec;
pub mod expose;
pub mod get;
pub mod lb;
pub mod logs;
pub mod port_forward;
pub mod rollout;
pub mod scale;
pub mod set;
pub mod top;
pub mod version;

use anyhow::Result;

use crate::client::{Ctx, GlobalOpts};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Display one or many resources.
    Get(get::GetArgs),
    /// Show details of a resource or group of resources.
    Describe(describe::DescribeArgs),
    /// Create a resource from a file or from arguments.
    Create(create::CreateArgs),
    /// Expose a deployment, replica set, pod or service as a new Service.
    Expose(expose::ExposeArgs),
    /// Set a new size for a deployment or replica set.
    Scale(scale::ScaleArgs),
    /// Set specific features on objects (`set image`).
    Set(set::SetArgs),
    /// Manage the rollout of a deployment (status, history, undo, restart).
    Rollout(rollout::RolloutArgs),
    /// Delete resources by names, selectors or files.
    Delete(delete::DeleteArgs),
    /// Apply a configuration to resources from files or stdin.
    Apply(apply::ApplyArgs),
    /// Print the logs of a container in a pod.
    Logs(logs::LogsArgs),
    /// Print a node's service load-balancing table (kproxy): frontends, backends, counters.
    Lb(lb::LbArgs),
    /// Measure a service: new connections/s, requests/s and latency to the ClusterIP, to the
    /// same ready pods directly and to the EXTERNAL-IP, side by side (kproxy).
    Bench(bench::BenchArgs),
    /// Execute a command in a container.
    Exec(exec::ExecArgs),
    /// Forward one or more local ports to a pod (or a service's or workload's pod).
    PortForward(port_forward::PortForwardArgs),
    /// Display resource (CPU/memory) usage of nodes or pods (the Metrics API).
    Top(top::TopArgs),
    /// Print the client and server version.
    Version(version::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs a command that talks to the cluster.
pub async fn run(global: &GlobalOpts, command: Command) -> Result<()> {
    if let Command::Version(args) = &command {
        return version::run(global, args).await;
    }
    let mut ctx = Ctx::connect(global).await?;
    match command {
        Command::Get(args) => get::run(&mut ctx, args).await,
        Command::Describe(args) => describe::run(&mut ctx, args).await,
        Command::Create(args) => create::run(&mut ctx, args).await,
        Command::Expose(args) => expose::run(&mut ctx, args).await,
        Command::Scale(args) => scale::run(&mut ctx, args).await,
        Command::Set(args) => set::run(&mut ctx, args).await,
        Command::Rollout(args) => rollout::run(&mut ctx, args).await,
        Command::Delete(args) => delete::run(&mut ctx, args).await,
        Command::Apply(args) => apply::run(&mut ctx, args).await,
        Command::Logs(args) => logs::run(&mut ctx, args).await,
        Command::Lb(args) => lb::run(&mut ctx, args).await,
        Command::Bench(args) => bench::run(&mut ctx, args).await,
        Command::Exec(args) => exec::run(&mut ctx, args).await,
        Command::PortForward(args) => port_forward::run(&mut ctx, args).await,
        Command::Top(args) => top::run(&mut ctx, args).await,
        // Handled before connecting (version) or without a runtime (completion).
        Command::Version(_) | Command::Completion { .. } => Ok(()),
    }
}
