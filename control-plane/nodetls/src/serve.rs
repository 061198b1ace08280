//! The one HTTPS accept loop, shared by the API server and the node agents' endpoints: what
//! kube-apiserver's Go server guards against, in one place.
//!
//! - A TLS handshake must finish within [`Endpoint::handshake_timeout`].
//! - A connection with no request in flight for [`Endpoint::idle_timeout`] is closed: idle
//!   keep-alive connections, TLS done with nothing sent, and request heads that never finish
//!   (HTTP/1's header read timeout is the same figure; HTTP/2 gets a GOAWAY).
//! - At most [`Endpoint::max_connections`] are open; beyond that new ones wait in the
//!   listen backlog until one closes.
//! - Failing `accept`s (out of file descriptors) sleep before the next try instead of spinning.

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// A TLS handshake taking longer than this is dropped (kube-apiserver's figure).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time an HTTP/2 connection told to go away (GOAWAY) gets to finish before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Sleep between failing `accept`s: the listener stays readable while the process is out of
/// file descriptors, so retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An endpoint's protocols and limits.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Names the endpoint in the log.
    pub name: &'static str,
    /// HTTP/2 besides HTTP/1.1 (by ALPN or preface). Node endpoints are HTTP/1.1 only:
    /// the kubelet's exec is a WebSocket upgrade.
    pub http2: bool,
    pub handshake_timeout: Duration,
    /// With no request in flight for this long a connection is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
}

impl Endpoint {
    /// A node agent's endpoint: HTTP/1.1, its only client the API server.
    #[must_use]
    pub fn node(name: &'static str) -> Self {
        Self {
            name,
            http2: false,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: HANDSHAKE_TIMEOUT,
            max_connections: 1024,
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit (as the Go runtime does at
/// start) and returns the limit now in force, or `None` if it could not be read.
pub fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Connections the kernel queues for a TLS endpoint before it accepts them. std's and mio's
/// 128 made a burst of 2,000 connects wait out SYN retransmits (1 s each) once the queue was
/// full; Go servers such as kube-apiserver listen with the system's maximum, as this does
/// (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// A listening TCP socket on `addr` for [`serve`], with a [`BACKLOG`]-deep accept queue.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` over TLS on `listener` until the future is dropped (which also ends every
/// open connection).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    endpoint: &Endpoint,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let what = endpoint.name;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(endpoint = what, %addr, max_connections = endpoint.max_connections, "listening");
    }
    let slots = Arc::new(Semaphore::new(endpoint.max_connections));
    let mut conns = JoinSet::new();
    let (mut full, mut failing) = (false, false);
    loop {
        if slots.available_permits() == 0 && !full {
            tracing::warn!(
                endpoint = what,
                max_connections = endpoint.max_connections,
                "connection limit reached: new connections wait"
            );
        }
        full = slots.available_permits() == 0;
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Logged once per run of failures: the back-off below repeats ten times a second.
                if !failing {
                    tracing::warn!(endpoint = what, error = %e, "accept failed; retrying every 100 ms");
                }
                failing = true;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if failing {
            tracing::info!(endpoint = what, "accepting again");
            failing = false;
        }
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let endpoint = endpoint.clone();
        conns.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(endpoint.handshake_timeout, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(endpoint = what, %peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(endpoint = what, %peer, "TLS handshake timed out");
                    return;
                }
            };
            connection(tls, app, &endpoint, peer).await;
        });
    }
}

/// Serves one connection until it ends, or until it has been idle too long.
async fn connection<I>(io: I, app: axum::Router, endpoint: &Endpoint, peer: std::net::SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let svc = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let busy = Busy::start(&activity);
            let app = app.clone();
            async move {
                let Ok(resp) = app.oneshot(req).await;
                Ok::<_, Infallible>(hold(resp, busy))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(endpoint.idle_timeout);
    if endpoint.http2 {
        // Go's (so kube-apiserver's) default stream limit per connection.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(250);
    } else {
        builder = builder.http1_only();
    }
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), svc));
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(endpoint = endpoint.name, %peer, error = %e, "connection ended with an error");
            }
            return;
        }
        () = activity.idle_for(endpoint.idle_timeout) => {}
    }
    tracing::debug!(endpoint = endpoint.name, %peer, "closing an idle connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    started: Instant,
    active: AtomicUsize,
    /// Milliseconds from `started` to the end of the last request.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = if self.active.load(Ordering::Acquire) > 0 {
                // Busy (a watch, an exec): look again later.
                Instant::now() + timeout
            } else {
                self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + timeout
            };
            tokio::time::sleep_until(deadline).await;
            let idle_since =
                self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            if self.active.load(Ordering::Acquire) == 0 && idle_since + timeout <= Instant::now() {
                return;
            }
        }
    }
}

/// A request in flight: counted from the call until its response body is done or dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.active.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_ms.store(ms, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `resp` with `guard` kept alive until its body has been sent or dropped: what counts a
/// request as in flight (a watch streams for minutes after its handler returned).
pub fn hold<G: Send + Unpin + 'static>(resp: Response, guard: G) -> Response {
    resp.map(|body| {
        Body::new(Held {
            body,
            _guard: guard,
        })
    })
}

struct Held<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Held<G> {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
