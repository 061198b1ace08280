//! `kctl exec POD [-c C] [-i] [-t] -- CMD [ARGS...]`: a command in a pod's container through
//! pods/exec (a WebSocket to the API server, relayed to the node's kubelet), with this
//! terminal's streams wired to it. kctl exits with the command's exit code.

use std::io::{IsTerminal as _, Read as _};

use anyhow::{Result, bail};
use futures::SinkExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, AttachedProcess, TerminalSize};
use tokio::io::AsyncWriteExt as _;

use crate::client::Ctx;
use crate::cmd::logs;

#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// POD, pod/POD, or deployment/NAME / replicaset/NAME (one of its pods).
    pub target: String,
    /// The container (default: the pod's only or default container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Give the command a terminal (with -i from a terminal: this one, switched to raw mode).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The command ran and exited non-zero: kctl exits with the same code (kubectl's words on
/// stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("command terminated with exit code {code}")]
pub struct CommandExit {
    pub code: u8,
}

pub async fn run(ctx: &mut Ctx, args: ExecArgs) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pod_name = logs::pod_for(ctx, &args.target).await?;
    let pod = pods.get(&pod_name).await?;
    if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref())
        && matches!(phase, "Succeeded" | "Failed")
    {
        bail!("cannot exec into a container in a completed pod; current phase is {phase}");
    }
    let container = if let Some(c) = &args.container {
        c.clone()
    } else {
        let (name, note) = logs::default_container(&pod)?;
        if let Some(note) = note {
            eprintln!("{note}");
        }
        name
    };
    // As kubectl: a terminal only for input that comes from one.
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let tty = args.tty && args.stdin && stdin_is_terminal;
    if args.tty && args.stdin && !stdin_is_terminal {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let ap = AttachParams::default()
        .container(container)
        .stdin(args.stdin)
        .stdout(true)
        .stderr(!tty)
        .tty(tty);
    let mut proc = pods.exec(&pod_name, args.command.clone(), &ap).await?;
    // Restores the terminal when the session ends, however it ends.
    let _raw = if tty {
        Some(raw::RawMode::enter()?)
    } else {
        None
    };
    if tty && let Some(sizes) = proc.terminal_size() {
        tokio::spawn(follow_terminal_size(sizes));
    }
    if let Some(stdin) = proc.stdin() {
        forward_stdin(stdin);
    }
    let copies = copy_output(&mut proc);
    let status = match proc.take_status() {
        Some(s) => s.await,
        None => None,
    };
    // The streams end once the session does; then the session's own result.
    let () = copies.await;
    proc.join().await?;
    outcome(status)
}

/// Copies the command's stdout and stderr to ours until they end.
fn copy_output(proc: &mut AttachedProcess) -> impl Future<Output = ()> + use<> {
    let out = proc.stdout().map(|mut r| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::stdout()).await;
        })
    });
    let err = proc.stderr().map(|mut r| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::stderr()).await;
        })
    });
    async move {
        for task in [out, err].into_iter().flatten() {
            let _ = task.await;
        }
    }
}

/// Our stdin to the command, until EOF (then the command's stdin is closed). The blocking
/// reads run on a plain thread: one blocked read must not keep kctl from exiting when the
/// command ends first.
fn forward_stdin(mut remote: impl tokio::io::AsyncWrite + Unpin + Send + 'static) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if remote.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // EOF: closing our end makes kube-rs send the close signal for stdin.
        let _ = remote.shutdown().await;
    });
}

/// Sends the terminal's size now and whenever it changes.
async fn follow_terminal_size(mut sizes: futures::channel::mpsc::Sender<TerminalSize>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut changes = signal(SignalKind::window_change()).ok();
    loop {
        if let Some(size) = raw::terminal_size()
            && sizes.send(size).await.is_err()
        {
            return;
        }
        let Some(c) = changes.as_mut() else { return };
        if c.recv().await.is_none() {
            return;
        }
    }
}

/// The session's result from the Status on the error channel: success, the command's exit
/// code, or the server's message.
fn outcome(status: Option<Status>) -> Result<()> {
    let Some(status) = status else {
        // Closed without a status: the command finished (as kubectl reads it).
        return Ok(());
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(());
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|causes| {
                causes
                    .iter()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
                    .and_then(|c| c.message.as_deref())
            })
            .and_then(|m| m.trim().parse::<i64>().ok());
        if let Some(code) = code {
            // Exit codes are 0..=255; anything else is still a failure.
            let code = u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1);
            return Err(CommandExit { code }.into());
        }
    }
    match status.message.as_deref() {
        Some(m) if !m.is_empty() => bail!("{m}"),
        _ => bail!("the command failed ({})", status.reason.unwrap_or_default()),
    }
}

/// The local terminal: raw mode for an interactive session, and its size.
mod raw {
    use anyhow::{Context as _, Result};
    use kube::api::TerminalSize;
    use nix::sys::termios::{self, SetArg, Termios};

    /// Raw mode on stdin until dropped (keys go to the remote terminal unprocessed).
    pub struct RawMode {
        saved: Termios,
    }

    impl RawMode {
        pub fn enter() -> Result<Self> {
            let stdin = std::io::stdin();
            let saved = termios::tcgetattr(&stdin).context("reading the terminal mode")?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
                .context("switching the terminal to raw mode")?;
            Ok(Self { saved })
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
        }
    }

    /// The terminal's size, asked of `stty` (which reads it from the terminal on its stdin;
    /// kctl itself uses no unsafe ioctl).
    pub fn terminal_size() -> Option<TerminalSize> {
        let out = std::process::Command::new("stty")
            .arg("size")
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let (width, height) = parse_stty_size(&String::from_utf8_lossy(&out.stdout))?;
        Some(TerminalSize { width, height })
    }

    /// `stty size` prints `ROWS COLUMNS`; returns (width, height).
    pub fn parse_stty_size(s: &str) -> Option<(u16, u16)> {
        let mut it = s.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(height)), Some(Ok(width)), None) = (it.next(), it.next(), it.next()) else {
            return None;
        };
        (height > 0 && width > 0).then_some((width, height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[expect(
        clippy::unnecessary_wraps,
        reason = "`outcome` takes what the error channel gave: maybe a Status"
    )]
    fn status(v: serde_json::Value) -> Option<Status> {
        Some(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn exit_codes_from_the_error_channel() {
        assert!(outcome(None).is_ok());
        assert!(outcome(status(json!({"metadata": {}, "status": "Success"}))).is_ok());
        let err = outcome(status(json!({
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        })))
        .unwrap_err();
        assert_eq!(
            err.downcast_ref::<CommandExit>(),
            Some(&CommandExit { code: 3 })
        );
        assert_eq!(err.to_string(), "command terminated with exit code 3");
        let weird = outcome(status(json!({
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "300"}]},
        })))
        .unwrap_err();
        assert_eq!(
            weird.downcast_ref::<CommandExit>(),
            Some(&CommandExit { code: 1 })
        );
    }

    #[test]
    fn other_failures_are_the_servers_message() {
        let err = outcome(status(json!({
            "status": "Failure",
            "message": "starting the command: no such file",
            "reason": "InternalError",
            "code": 500,
        })))
        .unwrap_err();
        assert!(err.downcast_ref::<CommandExit>().is_none());
        assert_eq!(
            crate::errors::render(&err),
            "error: starting the command: no such file"
        );
        let bare = outcome(status(json!({"status": "Failure", "reason": "Odd"}))).unwrap_err();
        assert_eq!(bare.to_string(), "the command failed (Odd)");
    }

    #[test]
    fn terminal_sizes() {
        assert_eq!(raw::parse_stty_size("40 100\n"), Some((100, 40)));
        assert_eq!(raw::parse_stty_size(""), None);
        assert_eq!(raw::parse_stty_size("0 0"), None);
        assert_eq!(raw::parse_stty_size("40 100 7"), None);
        assert_eq!(raw::parse_stty_size("stty: not a tty"), None);
    }
}
