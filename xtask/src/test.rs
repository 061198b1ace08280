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
    println!("test: all passed in {:.1?}", started.elapsed());
    Ok(())
}
