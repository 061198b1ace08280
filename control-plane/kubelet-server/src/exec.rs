//! `GET|POST /exec/{namespace}/{pod}/{container}?command=...`: a command in a running
//! container through `docker exec`, its streams carried over a WebSocket in Kubernetes'
//! remotecommand channel protocol (see `channel`; the session plumbing is `session`'s).
//!
//! Everything that can fail before the command runs (parameters, container, subprotocol,
//! creating the exec instance) is an HTTP error before the upgrade, so clients show it as
//! the server's answer. After the upgrade the outcome travels on the error channel.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use hyper::upgrade::OnUpgrade;

use crate::AppState;
use crate::channel::{Outcome, Protocol};
use crate::error::HttpError;
use crate::lookup;
use crate::query::{self, ExecOptions};
use crate::session::{self, SessionError, StdinSink, Streams, Terminal};

pub async fn handle(
    State(st): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let opts = ExecOptions::parse(&query::pairs(req.uri().query()))?;
    let target = lookup::find(&st.docker, &st.node, &namespace, &pod, &container, false).await?;
    lookup::ensure_running(&target, &pod, &container)?;
    // Checked after the container so that a client falling back to SPDY (kubectl does after
    // any failed WebSocket attempt) gets the same answer for a wrong container.
    let (protocol, accept) = session::handshake(req.headers())?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| HttpError::bad_request("this connection cannot be upgraded"))?;
    let exec = st
        .docker
        .create_exec(
            &target.id,
            CreateExecOptions {
                cmd: Some(opts.command.clone()),
                attach_stdin: Some(opts.stdin),
                attach_stdout: Some(opts.stdout),
                attach_stderr: Some(opts.stderr),
                tty: Some(opts.tty),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| HttpError::docker("creating the exec instance", &e))?;
    tracing::info!(
        namespace,
        pod,
        container,
        command = ?opts.command,
        protocol = protocol.name(),
        exec = exec.id,
        "exec"
    );
    let docker = st.docker.clone();
    let mut stop = st.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = run(docker, on_upgrade, exec.id, opts, protocol) => {
                if let Err(e) = r {
                    tracing::info!(error = &e as &dyn std::error::Error, "exec session ended early");
                }
            }
            // The server's future was dropped: end the session with it.
            _ = stop.changed() => {}
        }
    });
    Ok(session::switching_protocols(&accept, protocol))
}

/// One exec session on the upgraded connection: output to the client until the command
/// ends, client input to the command meanwhile, then the outcome and a normal close (which
/// is what tells kubectl that stdout and stderr are complete).
async fn run(
    docker: Docker,
    on_upgrade: OnUpgrade,
    exec_id: String,
    opts: ExecOptions,
    protocol: Protocol,
) -> Result<(), SessionError> {
    let streams = Streams {
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
        tty: opts.tty,
    };
    let (mut tx, rx) = session::open(on_upgrade, protocol, streams).await?;
    let started = docker
        .start_exec(
            &exec_id,
            Some(StartExecOptions {
                detach: false,
                tty: opts.tty,
                output_capacity: None,
            }),
        )
        .await;
    let (output, input) = match started {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => {
            let outcome = Outcome::Failed("docker started the command detached".into());
            return session::finish(&mut tx, protocol, &outcome, &opts.command).await;
        }
        Err(e) => {
            let outcome = Outcome::Failed(format!("starting the command: {e}"));
            return session::finish(&mut tx, protocol, &outcome, &opts.command).await;
        }
    };
    let stdin = opts.stdin.then_some(StdinSink {
        writer: input,
        close_on_end: true,
    });
    let terminal = opts.tty.then(|| Terminal::Exec(exec_id.clone()));
    let d = docker.clone();
    session::relay(
        tx,
        rx,
        output,
        (stdin, terminal),
        docker,
        protocol,
        || async move { (exit_outcome(&d, &exec_id).await, opts.command) },
    )
    .await
}

/// The command's exit code. Docker may report the exec as running for a moment after its
/// output ended, hence the short wait.
async fn exit_outcome(docker: &Docker, exec_id: &str) -> Outcome {
    for _ in 0..100 {
        match docker.inspect_exec(exec_id).await {
            Ok(i) if i.running == Some(true) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(i) => {
                return match i.exit_code {
                    Some(0) => Outcome::Success,
                    Some(code) => Outcome::ExitCode(code),
                    None => Outcome::Failed("docker reported no exit code".into()),
                };
            }
            Err(e) => return Outcome::Failed(format!("inspecting the command: {e}")),
        }
    }
    Outcome::Failed("the command's output ended but it is still running".into())
}
