//! `cargo xtask test`: setup, then every check and test the project has. CI runs exactly this.

use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::{
    setup::{SetupArgs, setup},
    util::{cargo, is_root, run_cmd, step},
};

#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and `cargo clippy` (faster local iteration).
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

/// The API server's end-to-end suites and the workload suites (scheduler, controllers) that
/// run a second time with every test server on a local etcd of its own
/// (`kproxy_tests::apiserver::ApiServer`), so both stores pass them.
const ETCD_SUITES: &[&str] = &[
    "apiserver",
    "apiserver_connections",
    "apiserver_identity",
    "apiserver_paging",
    "configmaps_secrets",
    "controllers_services",
    "controllers_workloads",
    "daemonsets",
    "jobs",
    "kube_client",
    "kubectl",
    "kubectl_auth",
    "kubectl_explain",
    "scheduler",
    "server_side_apply",
];

pub fn test(args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    setup(&SetupArgs::default())?;
    if !is_root() {
        println!(
            "test: WARNING: not root: privileged tests (netns, eBPF, Docker) will SKIP; \
             with CI=true they fail instead"
        );
    }
    if !args.no_lint {
        step("test: cargo fmt --check");
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
        step("test: cargo clippy (warnings are errors)");
        run_cmd(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        crate::shape::shape()?;
    }
    // End-to-end tests start the workspace binaries, so build them first.
    step("test: building the workspace binaries (includes the eBPF programs)");
    run_cmd(cargo().args(["build", "--workspace", "--bins"]))?;
    step("test: cargo test --workspace (unit, privileged and end-to-end tests)");
    run_cmd(
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(&args.cargo_test_args),
    )?;
    if args.cargo_test_args.is_empty() {
        step(&format!(
            "test: the API server's end-to-end suites again, on etcd (KPROXY_TEST_STORE=etcd: {})",
            ETCD_SUITES.join(", ")
        ));
        run_cmd(
            cargo()
                // --workspace, as above: `-p` alone would unify features differently and
                // rebuild dependencies.
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(ETCD_SUITES.iter().flat_map(|t| ["--test", t]))
                .env("KPROXY_TEST_STORE", "etcd"),
        )?;
    }
    println!("test: all passed in {:.1?}", started.elapsed());
    Ok(())
}
