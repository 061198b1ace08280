//! `GET|POST /exec/{namespace}/{pod}/{container}?command=...`: a command in a running
//! container through `docker exec`, its streams carried over a WebSocket in Kubernetes'
//! remotecommand channel protocol (see `channel`).
//!
//! Everything that can fail before the command runs (parameters, container, subprotocol,
//! creating the exec instance) is an HTTP error before the upgrade, so clients show it as
//! the server's answer. After the upgrade the outcome travels on the error channel.

use std::pin::Pin;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, Stream, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::AppState;
use crate::channel::{self, Input, Outcome, Protocol};
use crate::error::HttpError;
use crate::lookup;
use crate::query::{self, ExecOptions};

/// Why an exec session ended before its outcome reached the client.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("upgrading the connection")]
    Upgrade(#[source] hyper::Error),
    #[error("{0}")]
    Client(&'static str, #[source] tungstenite::Error),
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Stdin = Pin<Box<dyn AsyncWrite + Send>>;
type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// How long the client gets to answer our close frame before the connection is dropped.
/// Its answer comes after it has read everything before it, so a slow reader (a pipe into
/// a slow consumer) needs the time; dropping earlier could cut the end of the output.
const CLOSE_GRACE: Duration = Duration::from_mins(1);

pub async fn handle(
    State(st): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let opts = ExecOptions::parse(&query::pairs(req.uri().query()))?;
    let target = lookup::find(&st.docker, &st.node, &namespace, &pod, &container, false).await?;
    if !target.running {
        return Err(HttpError::bad_request(format!(
            "container {container:?} in pod {pod:?} is not running"
        )));
    }
    // Checked after the container so that a client falling back to SPDY (kubectl does after
    // any failed WebSocket attempt) gets the same answer for a wrong container.
    let (protocol, accept) = handshake(req.headers())?;
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
            r = session(docker, on_upgrade, exec.id, opts, protocol) => {
                if let Err(e) = r {
                    tracing::info!(error = &e as &dyn std::error::Error, "exec session ended early");
                }
            }
            // The server's future was dropped: end the session with it.
            _ = stop.changed() => {}
        }
    });
    Ok(switching_protocols(&accept, protocol))
}

/// Checks a WebSocket upgrade request; returns the subprotocol and the Sec-WebSocket-Accept.
fn handshake(headers: &HeaderMap) -> Result<(Protocol, String), HttpError> {
    let supported = Protocol::ALL.map(Protocol::name).join(", ");
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(HttpError::bad_request(format!(
            "exec needs a WebSocket upgrade with one of the subprotocols {supported} \
             (SPDY is not supported)"
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(HttpError::bad_request(
            "unsupported WebSocket version (Sec-WebSocket-Version must be 13)",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| HttpError::bad_request("missing Sec-WebSocket-Key"))?;
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = Protocol::negotiate(offered.iter().copied()).ok_or_else(|| {
        HttpError::bad_request(format!(
            "none of the requested subprotocols [{}] is supported; use one of {supported}",
            offered.join(", ")
        ))
    })?;
    Ok((protocol, derive_accept_key(key.as_bytes())))
}

fn switching_protocols(accept: &str, protocol: Protocol) -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
            (header::SEC_WEBSOCKET_PROTOCOL, protocol.name()),
        ],
    )
        .into_response()
}

/// One exec session on the upgraded connection: output to the client until the command
/// ends, client input to the command meanwhile, then the outcome and a normal close (which
/// is what tells kubectl that stdout and stderr are complete).
async fn session(
    docker: Docker,
    on_upgrade: OnUpgrade,
    exec_id: String,
    opts: ExecOptions,
    protocol: Protocol,
) -> Result<(), SessionError> {
    let upgraded = on_upgrade.await.map_err(SessionError::Upgrade)?;
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut tx, rx) = ws.split();
    // As the kubelet does: an empty message on the lowest writable channel tells the client
    // that the streams are open.
    let first = if opts.stdout {
        channel::STDOUT
    } else if opts.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    tx.send(protocol.frame(first, &[]))
        .await
        .map_err(|e| SessionError::Client("greeting the client", e))?;

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
            return finish(&mut tx, protocol, &outcome, &opts.command).await;
        }
        Err(e) => {
            let outcome = Outcome::Failed(format!("starting the command: {e}"));
            return finish(&mut tx, protocol, &outcome, &opts.command).await;
        }
    };
    let stdin = opts.stdin.then_some(input);
    let mut reader = tokio::spawn(read_client(
        rx,
        stdin,
        docker.clone(),
        exec_id.clone(),
        protocol,
        opts.tty,
    ));
    tokio::select! {
        sent = forward_output(&mut tx, output, protocol) => {
            let outcome = match sent.map_err(|e| SessionError::Client("sending output to the client", e))? {
                None => exit_outcome(&docker, &exec_id).await,
                Some(docker_error) => Outcome::Failed(docker_error),
            };
            let r = finish(&mut tx, protocol, &outcome, &opts.command).await;
            if tokio::time::timeout(CLOSE_GRACE, &mut reader).await.is_err() {
                reader.abort();
            }
            r
        }
        // The client closed or went away: nothing more can reach it. The command itself
        // keeps running (as with Kubernetes), its streams closed.
        _ = &mut reader => Ok(()),
    }
}

/// Copies the command's output to the client. `Ok(Some(e))`: Docker failed; `Err`: the
/// client did.
async fn forward_output(
    tx: &mut SplitSink<Ws, Message>,
    mut output: Output,
    protocol: Protocol,
) -> Result<Option<String>, tungstenite::Error> {
    while let Some(item) = output.next().await {
        let (channel, bytes) = match item {
            // A terminal has one stream; Docker delivers it undemultiplexed (Console).
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                (channel::STDOUT, message)
            }
            Ok(LogOutput::StdErr { message }) => (channel::STDERR, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => return Ok(Some(format!("reading the command's output: {e}"))),
        };
        tx.send(protocol.frame(channel, &bytes)).await?;
    }
    Ok(None)
}

/// Sends the outcome on the error channel and closes the WebSocket normally.
async fn finish(
    tx: &mut SplitSink<Ws, Message>,
    protocol: Protocol,
    outcome: &Outcome,
    command: &[String],
) -> Result<(), SessionError> {
    let closing = |e| SessionError::Client("sending the outcome to the client", e);
    if let Some(status) = protocol.status(outcome, command) {
        tx.feed(protocol.frame(channel::ERROR, &status))
            .await
            .map_err(closing)?;
    }
    tx.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await
    .map_err(closing)
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

/// Client messages: stdin to the command (half-closed on the v5 close signal or when the
/// client goes), terminal sizes to Docker. Returns when the client closes or goes away.
async fn read_client(
    mut rx: SplitStream<Ws>,
    mut stdin: Option<Stdin>,
    docker: Docker,
    exec_id: String,
    protocol: Protocol,
    tty: bool,
) {
    while let Some(msg) = rx.next().await {
        let msg = match msg {
            Ok(Message::Close(_)) => break,
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(exec = exec_id, error = %e, "reading from the client");
                break;
            }
        };
        match protocol.parse(&msg) {
            Ok(Input::Stdin(data)) => {
                if let Some(w) = stdin.as_mut()
                    && let Err(e) = w.write_all(&data).await
                {
                    // The command closed its stdin; later input has nowhere to go.
                    tracing::debug!(exec = exec_id, error = %e, "writing stdin");
                    stdin = None;
                }
            }
            Ok(Input::CloseStdin) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Ok(Input::Resize(size)) if tty => {
                let resize = ResizeExecOptions {
                    w: i32::from(size.width),
                    h: i32::from(size.height),
                };
                if let Err(e) = docker.resize_exec(&exec_id, resize).await {
                    tracing::debug!(exec = exec_id, error = %e, "resize");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(exec = exec_id, error = %e, "ignoring a client message"),
        }
    }
    if let Some(mut w) = stdin.take() {
        let _ = w.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_websocket_upgrades_with_a_known_subprotocol() {
        let mut h = headers(&UPGRADE);
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        let (p, accept) = handshake(&h).unwrap();
        assert_eq!(p, Protocol::V5);
        // RFC 6455's example key and answer.
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        // Several header lines count like one comma-separated line.
        let mut h = headers(&UPGRADE);
        h.append("sec-websocket-protocol", HeaderValue::from_static("bogus"));
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert_eq!(handshake(&h).unwrap().0, Protocol::V4);
    }

    #[test]
    fn refuses_other_upgrades_before_switching() {
        let mut h = headers(&UPGRADE);
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v9.channel.k8s.io"),
        );
        let e = handshake(&h).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("[v9.channel.k8s.io]") && e.message.contains("v5.channel.k8s.io"),
            "{}",
            e.message
        );
        assert!(handshake(&headers(&UPGRADE)).is_err(), "no subprotocol");
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        let e = handshake(&spdy).unwrap_err();
        assert!(e.message.contains("SPDY is not supported"), "{}", e.message);
        let mut old = headers(&UPGRADE[..2]);
        old.append("sec-websocket-version", HeaderValue::from_static("8"));
        assert!(handshake(&old).unwrap_err().message.contains("version"));
    }
}
