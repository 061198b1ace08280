//! kctl: the kubectl-like CLI. It grows with the control plane; today it reports its version
//! and generates shell completions.
#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kctl",
    version,
    about = "Control a kproxy cluster (kubectl-like)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the client version.
    Version,
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Version => println!("Client Version: v{}", env!("CARGO_PKG_VERSION")),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kctl", &mut std::io::stdout());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rejects_unknown_subcommand() {
        assert!(Cli::try_parse_from(["kctl", "frobnicate"]).is_err());
    }
}
