//! Small helpers shared by the xtask commands.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Prints a step banner so long operations say what they are doing.
pub fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs a command with inherited stdio; fails with the command line and status.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}) after {:.1?}", started.elapsed());
    }
    Ok(())
}

/// Runs a command and returns its stdout, or `None` if it could not run or failed.
pub fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `cargo` as invoked by the user (rustup's proxy honours the workspace toolchain).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    // A CI clone is built once: incremental caches would only double its disk use.
    if std::env::var("CI").is_ok_and(|v| v == "true")
        && std::env::var_os("CARGO_INCREMENTAL").is_none()
    {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Ctrl-C / SIGTERM only set a flag ([`stop_requested`]): long commands (`run`, the benches)
/// stop at their next step and clean up in order.
pub fn install_stop_handlers() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}
