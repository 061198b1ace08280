//! `GET|POST /attach/{namespace}/{pod}/{container}`: the running container's own stdio
//! (Docker's attach), carried over the same remotecommand WebSocket as exec (`session`).
//!
//! As with the kubelet, whether there is a terminal is the container's (`tty` in its spec,
//! Docker's `Tty`), not the request's; stdin reaches the container only if it keeps one open
//! (`stdin`, Docker's `OpenStdin`), otherwise the client's input is dropped. The end of the
//! client's stdin closes the container's only with `stdinOnce`. The session ends, with
//! Success, when the container's output ends (it exited).

use axum::extract::{Path, Request, State};
use axum::response::Response;
use bollard::Docker;
use bollard::query_parameters::AttachContainerOptions;
use hyper::upgrade::OnUpgrade;

use crate::AppState;
use crate::channel::{Outcome, Protocol};
use crate::error::HttpError;
use crate::lookup;
use crate::query::{self, AttachOptions};
use crate::session::{self, SessionError, StdinSink, Streams, Terminal};

/// How the container was created: what an attach can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stdio {
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
}

/// The streams of an attach to a container created with `stdio`, as asked in `opts`.
fn streams(opts: AttachOptions, stdio: Stdio) -> Streams {
    Streams {
        stdin: opts.stdin && stdio.open_stdin,
        stdout: opts.stdout,
        // A terminal has one output stream.
        stderr: opts.stderr && !stdio.tty,
        tty: stdio.tty,
    }
}

pub async fn handle(
    State(st): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let opts = AttachOptions::parse(&query::pairs(req.uri().query()))?;
    let target = lookup::find(&st.docker, &st.node, &namespace, &pod, &container, false).await?;
    lookup::ensure_running(&target, &pod, &container)?;
    let info = st
        .docker
        .inspect_container(&target.id, None)
        .await
        .map_err(|e| HttpError::docker("inspecting the container", &e))?;
    let config = info.config.unwrap_or_default();
    let stdio = Stdio {
        tty: config.tty == Some(true),
        open_stdin: config.open_stdin == Some(true),
        stdin_once: config.stdin_once == Some(true),
    };
    let (protocol, accept) = session::handshake(req.headers())?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| HttpError::bad_request("this connection cannot be upgraded"))?;
    tracing::info!(
        namespace,
        pod,
        container,
        protocol = protocol.name(),
        tty = stdio.tty,
        stdin = opts.stdin,
        "attach"
    );
    let docker = st.docker.clone();
    let mut stop = st.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = run(docker, on_upgrade, target.id, streams(opts, stdio), stdio, protocol) => {
                if let Err(e) = r {
                    tracing::info!(error = &e as &dyn std::error::Error, "attach session ended early");
                }
            }
            _ = stop.changed() => {}
        }
    });
    Ok(session::switching_protocols(&accept, protocol))
}

async fn run(
    docker: Docker,
    on_upgrade: OnUpgrade,
    id: String,
    streams: Streams,
    stdio: Stdio,
    protocol: Protocol,
) -> Result<(), SessionError> {
    let (mut tx, rx) = session::open(on_upgrade, protocol, streams).await?;
    let attached = docker
        .attach_container(
            &id,
            Some(AttachContainerOptions {
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
                stream: true,
                logs: false,
                detach_keys: None,
            }),
        )
        .await;
    let results = match attached {
        Ok(r) => r,
        Err(e) => {
            let outcome = Outcome::Failed(format!("attaching to the container: {e}"));
            return session::finish(&mut tx, protocol, &outcome, &[]).await;
        }
    };
    // Docker holds an attach to a stopped container open until it is started again (that is
    // how `docker start -a` works), so a container that exited between the check in `handle`
    // and the attach would keep the session open for ever. Look again now that the attach is
    // in place: kubectl then falls back to the container's log.
    let running = docker
        .inspect_container(&id, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.running)
        .unwrap_or(false);
    if !running {
        let outcome = Outcome::Failed("the container is not running: it exited".to_string());
        return session::finish(&mut tx, protocol, &outcome, &[]).await;
    }
    let stdin = streams.stdin.then_some(StdinSink {
        writer: results.input,
        close_on_end: stdio.stdin_once,
    });
    let terminal = stdio.tty.then(|| Terminal::Container(id.clone()));
    session::relay(
        tx,
        rx,
        results.output,
        (stdin, terminal),
        docker,
        protocol,
        || async { (Outcome::Success, Vec::new()) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: AttachOptions = AttachOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };

    #[test]
    fn the_container_decides_terminal_and_stdin() {
        let plain = Stdio {
            tty: false,
            open_stdin: false,
            stdin_once: false,
        };
        assert_eq!(
            streams(ALL, plain),
            Streams {
                stdin: false,
                stdout: true,
                stderr: true,
                tty: false
            },
            "no stdin to attach to"
        );
        let term = Stdio {
            tty: true,
            open_stdin: true,
            stdin_once: true,
        };
        assert_eq!(
            streams(ALL, term),
            Streams {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            },
            "a terminal even if not asked for, and no stderr with it"
        );
        let asked_tty = AttachOptions { tty: true, ..ALL };
        assert!(!streams(asked_tty, plain).tty, "the container has none");
    }
}
