//! What exec and attach sessions share: the WebSocket upgrade (checked before switching, so
//! a refusal is an HTTP answer), the greeting, copying Docker's output to the client, client
//! input to Docker (stdin, terminal sizes) and the outcome with a normal close.

use std::pin::Pin;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{ResizeContainerTTYOptions, ResizeExecOptions};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, Stream, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::channel::{self, Input, Outcome, Protocol};
use crate::error::HttpError;
use crate::upgrade;

/// Why a session ended before its outcome reached the client.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("upgrading the connection")]
    Upgrade(#[source] hyper::Error),
    #[error("{0}")]
    Client(&'static str, #[source] tungstenite::Error),
}

pub type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
pub type Tx = SplitSink<Ws, Message>;
pub type Stdin = Pin<Box<dyn AsyncWrite + Send>>;
pub type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// How long the client gets to answer our close frame before the connection is dropped.
/// Its answer comes after it has read everything before it, so a slow reader (a pipe into
/// a slow consumer) needs the time; dropping earlier could cut the end of the output.
pub const CLOSE_GRACE: Duration = Duration::from_mins(1);

/// The streams a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "Kubernetes' stream options: one flag per stream and the terminal"
)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Where terminal sizes go: an exec instance or a container's own terminal.
#[derive(Debug, Clone)]
pub enum Terminal {
    Exec(String),
    Container(String),
}

impl Terminal {
    async fn resize(&self, docker: &Docker, size: channel::TerminalSize) {
        let (w, h) = (i32::from(size.width), i32::from(size.height));
        let r = match self {
            Terminal::Exec(id) => docker.resize_exec(id, ResizeExecOptions { w, h }).await,
            Terminal::Container(id) => {
                docker
                    .resize_container_tty(id, ResizeContainerTTYOptions { w, h })
                    .await
            }
        };
        if let Err(e) = r {
            tracing::debug!(terminal = ?self, error = %e, "resize");
        }
    }
}

/// What the client's stdin goes to.
pub struct StdinSink {
    pub writer: Stdin,
    /// Whether the end of the client's stdin is passed on (half-closing Docker's side).
    /// Attaching to a container without `stdinOnce` must not: Docker would then end the
    /// attach's output while the container goes on.
    pub close_on_end: bool,
}

/// Checks a WebSocket upgrade request; returns the subprotocol and the Sec-WebSocket-Accept.
pub fn handshake(headers: &HeaderMap) -> Result<(Protocol, String), HttpError> {
    let supported = Protocol::ALL.map(Protocol::name).join(", ");
    let has = |name, token| upgrade::has_token(headers, name, token);
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(HttpError::bad_request(format!(
            "exec needs a WebSocket upgrade with one of the subprotocols {supported} \
             (SPDY is not supported)"
        )));
    }
    let (accept, offered) = upgrade::ws_key(headers)?;
    let protocol = Protocol::negotiate(offered.iter().copied()).ok_or_else(|| {
        HttpError::bad_request(format!(
            "none of the requested subprotocols [{}] is supported; use one of {supported}",
            offered.join(", ")
        ))
    })?;
    Ok((protocol, accept))
}

pub fn switching_protocols(accept: &str, protocol: Protocol) -> Response {
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

/// Waits for the upgrade and greets the client: as the kubelet does, an empty message on the
/// lowest writable channel tells it that the streams are open.
pub async fn open(
    on_upgrade: OnUpgrade,
    protocol: Protocol,
    streams: Streams,
) -> Result<(Tx, SplitStream<Ws>), SessionError> {
    let upgraded = on_upgrade.await.map_err(SessionError::Upgrade)?;
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut tx, rx) = ws.split();
    let first = if streams.stdout {
        channel::STDOUT
    } else if streams.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    tx.send(protocol.frame(first, &[]))
        .await
        .map_err(|e| SessionError::Client("greeting the client", e))?;
    Ok((tx, rx))
}

/// Copies Docker's output to the client. `Ok(Some(e))`: Docker failed; `Err`: the client did.
pub async fn forward_output(
    tx: &mut Tx,
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
            Err(e) => return Ok(Some(format!("reading the output: {e}"))),
        };
        tx.send(protocol.frame(channel, &bytes)).await?;
    }
    Ok(None)
}

/// Sends the outcome on the error channel and closes the WebSocket normally.
pub async fn finish(
    tx: &mut Tx,
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

/// Client messages: stdin to Docker (half-closed on the v5 close signal or when the client
/// goes, if `close_on_end`), terminal sizes to `terminal`. Returns when the client closes or
/// goes away.
pub async fn read_client(
    mut rx: SplitStream<Ws>,
    mut stdin: Option<StdinSink>,
    docker: Docker,
    terminal: Option<Terminal>,
    protocol: Protocol,
) {
    // A sink kept open after the client's stdin ended (see `StdinSink::close_on_end`).
    let mut ended = None;
    while let Some(msg) = rx.next().await {
        let msg = match msg {
            Ok(Message::Close(_)) => break,
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "reading from the client");
                break;
            }
        };
        match protocol.parse(&msg) {
            Ok(Input::Stdin(data)) => {
                if let Some(s) = stdin.as_mut()
                    && let Err(e) = s.writer.write_all(&data).await
                {
                    // The process closed its stdin; later input has nowhere to go.
                    tracing::debug!(error = %e, "writing stdin");
                    stdin = None;
                }
            }
            Ok(Input::CloseStdin) => ended = end_stdin(stdin.take()).await,
            Ok(Input::Resize(size)) => {
                if let Some(t) = &terminal {
                    t.resize(&docker, size).await;
                }
            }
            Ok(Input::Ignore) => {}
            Err(e) => tracing::debug!(error = %e, "ignoring a client message"),
        }
    }
    end_stdin(stdin.take()).await;
    drop(ended);
}

/// Half-closes the sink if it passes the end on; otherwise returns it, to be kept open.
async fn end_stdin(stdin: Option<StdinSink>) -> Option<StdinSink> {
    match stdin {
        Some(mut s) if s.close_on_end => {
            let _ = s.writer.shutdown().await;
            None
        }
        other => other,
    }
}

/// Runs a session whose output is `output`: copies it to the client while a reader passes
/// client input on, then sends the outcome that `outcome` finds once the output ended.
pub async fn relay<F, Fut>(
    mut tx: Tx,
    rx: SplitStream<Ws>,
    output: Output,
    input: (Option<StdinSink>, Option<Terminal>),
    docker: Docker,
    protocol: Protocol,
    outcome: F,
) -> Result<(), SessionError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (Outcome, Vec<String>)>,
{
    let (stdin, terminal) = input;
    let mut reader = tokio::spawn(read_client(rx, stdin, docker, terminal, protocol));
    tokio::select! {
        sent = forward_output(&mut tx, output, protocol) => {
            let (outcome, command) = match sent.map_err(|e| SessionError::Client("sending output to the client", e))? {
                None => outcome().await,
                Some(docker_error) => (Outcome::Failed(docker_error), Vec::new()),
            };
            let r = finish(&mut tx, protocol, &outcome, &command).await;
            if tokio::time::timeout(CLOSE_GRACE, &mut reader).await.is_err() {
                reader.abort();
            }
            r
        }
        // The client closed or went away: nothing more can reach it. The process itself
        // keeps running (as with Kubernetes), its streams closed.
        _ = &mut reader => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

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
