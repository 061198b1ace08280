//! kctl: the kubectl-like CLI for kproxy clusters. Commands live in `cmd/`; what they share
//! (connection, resource types, output) in the modules below.
#![forbid(unsafe_code)]

mod apply_patch;
mod client;
mod cmd;
mod errors;
mod manifest;
mod output;
mod quantity;
mod resources;
mod table;
mod tabwriter;
mod timefmt;
mod yaml;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};

use crate::client::GlobalOpts;
use crate::cmd::Command;

#[derive(Parser)]
#[command(
    name = "kctl",
    version,
    about = "Control a kproxy cluster (kubectl-like)"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kctl", &mut std::io::stdout());
            Ok(())
        }
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(cmd::run(&cli.global, command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `kctl exec`: the remote command's exit code becomes ours, as with kubectl.
            if let Some(exit) = err.downcast_ref::<cmd::exec::CommandExit>() {
                eprintln!("{exit}");
                return ExitCode::from(exit.code);
            }
            // Commands that handle several objects print each failure as it happens.
            if !err.is::<errors::Reported>() {
                eprintln!("{}", errors::render(&err));
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rejects_unknown_subcommands_and_flags() {
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["get"]).is_err(), "get needs a type");
        assert!(parse(&["get", "pods", "-o", "xml"]).is_err());
        assert!(parse(&["get", "pods", "--bogus"]).is_err());
        assert!(parse(&["exec", "p"]).is_err(), "exec needs a command");
        assert!(
            parse(&["exec", "p", "ls"]).is_err(),
            "the command goes after --"
        );
    }

    #[test]
    fn exec_takes_the_command_after_dashes() {
        let cli = parse(&["exec", "-i", "web", "-c", "c1", "--", "sh", "-c", "exit 3"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec");
        };
        assert_eq!(
            (
                args.target.as_str(),
                args.container.as_deref(),
                args.stdin,
                args.tty
            ),
            ("web", Some("c1"), true, false)
        );
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);
        // Flags after `--` belong to the command.
        let cli = parse(&["exec", "web", "-it", "--", "ls", "-n", "x"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec");
        };
        assert!(args.stdin && args.tty);
        assert_eq!(args.command, ["ls", "-n", "x"]);
        assert_eq!(cli.global.namespace, None);
    }

    #[test]
    fn global_flags_work_before_and_after_the_command() {
        let cli = parse(&["-n", "kube-system", "get", "pods"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("kube-system"));
        let cli = parse(&[
            "get",
            "pods",
            "--context",
            "lab",
            "--kubeconfig",
            "/tmp/k",
            "-n",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.global.context.as_deref(), Some("lab"));
        assert_eq!(
            cli.global.kubeconfig.as_deref(),
            Some(std::path::Path::new("/tmp/k"))
        );
        assert_eq!(cli.global.namespace.as_deref(), Some("x"));
    }
}
