//! The API server against slow, idle and greedy clients: 2,000 idle or half-sent connections
//! neither starve `/healthz` nor stay open; in-flight requests and watches per identity are
//! bounded (429 with Retry-After, as kube-apiserver's max-requests-inflight); accept errors
//! (out of file descriptors) back off instead of spinning. Unprivileged: loopback only.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::until_some;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How the server must treat a connection that sends nothing useful.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

/// Raises this process's open-file limit to at least `want` (children inherit it).
fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).expect("setrlimit NOFILE");
    }
}

struct Server {
    _dir: TempDir,
    api: ApiServer,
    addr: SocketAddr,
    tls: TlsConnector,
}

fn start(extra: &[&str]) -> Server {
    let dir = TempDir::new("kpt-conns");
    let api = ApiServer::start(dir.path(), extra);
    let addr = api
        .url
        .strip_prefix("https://")
        .expect("https URL")
        .parse()
        .expect("host:port");
    let ca = std::fs::read(api.data_dir.join("pki/ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Server {
        _dir: dir,
        api,
        addr,
        tls: TlsConnector::from(Arc::new(config)),
    }
}

impl Server {
    async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        self.tls.connect(name, tcp).await
    }

    /// One request on a fresh connection (`Connection: close`): status, head and body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String, String) {
        let mut s = self.connect().await.expect("TLS connect");
        s.write_all(raw(method, path, token, body.len(), "close").as_bytes())
            .await
            .unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // The server may end TLS without close_notify once it answered.
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status(head), head.to_string(), body.to_string())
    }

    /// Starts a request and returns once its response head arrived (a watch stays open).
    async fn open(&self, path: &str, token: &str) -> (u16, TlsStream<TcpStream>) {
        let mut s = self.connect().await.expect("TLS connect");
        s.write_all(raw("GET", path, Some(token), 0, "keep-alive").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).await.expect("response head");
            assert!(n > 0, "closed before a response head");
            head.push(byte[0]);
        }
        (status(&String::from_utf8_lossy(&head)), s)
    }

    /// `/healthz` on a fresh connection, with how long it took (handshake included).
    async fn healthz(&self) -> (u16, Duration) {
        let t = Instant::now();
        let (code, _, _) = tokio::time::timeout(
            Duration::from_secs(5),
            self.request("GET", "/healthz", None, ""),
        )
        .await
        .unwrap_or((0, String::new(), String::new()));
        (code, t.elapsed())
    }
}

fn raw(method: &str, path: &str, token: Option<&str>, len: usize, conn: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: kproxy\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: {conn}\r\n\r\n"
    )
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Reads until the peer closes (EOF or reset) or `deadline`; whether it closed.
async fn closed_by(mut s: impl AsyncRead + Unpin, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// The first bytes of a TLS ClientHello record that announces 512 bytes and never sends them.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_neither_starve_healthz_nor_stay_open() {
    raise_nofile(8192);
    let s = start(&[]);
    let (code, _) = s.healthz().await;
    assert_eq!(code, 200);

    // 2,000 connections: plain TCP that never speaks, a ClientHello cut short, TLS done but
    // no request, TLS done and a request head cut short.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let opened = tokio::time::Instant::now();
        let deadline = opened + CLOSED_WITHIN;
        let kind = match i % 10 {
            0 => "partial ClientHello",
            1 => "TLS, no request",
            2 => "TLS, partial request head",
            _ => "idle TCP",
        };
        match kind {
            "idle TCP" => {
                let tcp = TcpStream::connect(s.addr).await.expect("connect");
                tasks.spawn(async move { (kind, closed_by(tcp, deadline).await) });
            }
            "partial ClientHello" => {
                let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
                tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
                tasks.spawn(async move { (kind, closed_by(tcp, deadline).await) });
            }
            _ => {
                let mut tls = s.connect().await.expect("TLS connect");
                if kind == "TLS, partial request head" {
                    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: kproxy\r\nAccept: ")
                        .await
                        .unwrap();
                }
                tasks.spawn(async move { (kind, closed_by(tls, deadline).await) });
            }
        }
    }

    // /healthz keeps answering while they are open.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let (code, took) = s.healthz().await;
        if code != 200 || took > Duration::from_secs(1) {
            slow.push(format!("{code} in {took:?}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        slow.is_empty(),
        "/healthz under 2,000 idle connections: {slow:?}"
    );

    let mut open = std::collections::BTreeMap::<&str, usize>::new();
    while let Some(r) = tasks.join_next().await {
        let (kind, closed) = r.unwrap();
        if !closed {
            *open.entry(kind).or_default() += 1;
        }
    }
    assert!(
        open.is_empty(),
        "still open {CLOSED_WITHIN:?} after they were opened: {open:?}"
    );
    let (code, took) = s.healthz().await;
    assert_eq!(code, 200, "after: {took:?}");
}

/// Holds the one in-flight slot of `method` requests with a request on `path` whose body of
/// `len` bytes never finishes, and returns it with the head and body of the 429 that a second
/// such request (`second_body`) then gets. A held request that met another one in flight was
/// refused itself and holds nothing: it is opened again (slower stores widen that window).
async fn hold_slot(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    len: usize,
    second_body: &str,
) -> (TlsStream<TcpStream>, String, String) {
    let started = Instant::now();
    loop {
        let mut held = s.connect().await.unwrap();
        held.write_all(raw(method, path, Some(token), len, "close").as_bytes())
            .await
            .unwrap();
        held.write_all(b"{").await.unwrap();
        for _ in 0..10 {
            let (code, head, body) = s.request(method, path, Some(token), second_body).await;
            if code == 429 {
                return (held, head, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a second {method} never got 429"
        );
    }
}

/// A request whose body never finishes holds its in-flight slot: the next one of the same
/// kind (mutating or not) gets 429, as kube-apiserver answers beyond --max-requests-inflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_get_429() {
    let s = start(&[
        "--max-requests-inflight",
        "1",
        "--max-mutating-requests-inflight",
        "1",
    ]);
    // system:masters (the admin) is never limited, as in Kubernetes: a node is.
    let node = s.api.node_token("n1");
    let admin = s.api.admin_token();
    let events = "/api/v1/namespaces/default/events";
    let event = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e1"},"involvedObject":{"kind":"Node","name":"n1"},"reason":"Test","message":"m","type":"Normal"}"#;

    let (held_write, head, body) = hold_slot(&s, "POST", events, &node, 1000, event).await;
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "TooManyRequests", "{body}");
    assert_eq!(status["code"], 429);

    // Reads have their own budget; the admin and /healthz are never limited.
    let (code, _, body) = s.request("GET", events, Some(&node), "").await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = s.request("POST", events, Some(&admin), event).await;
    assert_ne!(code, 429, "{body}");
    assert_eq!(s.healthz().await.0, 200);

    let (held_read, _, _) = hold_slot(&s, "GET", events, &node, 10, "").await;
    assert_eq!(s.healthz().await.0, 200);

    // Finishing the held requests frees their slots.
    drop(held_write);
    drop(held_read);
    until_some("slots are freed", || async {
        let (code, _, _) = s.request("GET", events, Some(&node), "").await;
        (code == 200).then_some(())
    })
    .await;
    let (code, _, body) = s.request("POST", events, Some(&node), event).await;
    assert_ne!(code, 429, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_bounded_per_identity() {
    let s = start(&["--max-watches-per-user", "2"]);
    let n1 = s.api.node_token("n1");
    let n2 = s.api.node_token("n2");
    let admin = s.api.admin_token();
    let watch = "/api/v1/nodes?watch=true";

    let (first, w1) = s.open(watch, &n1).await;
    let (second, _w2) = s.open(watch, &n1).await;
    assert_eq!((first, second), (200, 200));
    let (code, head, body) = s.request("GET", watch, Some(&n1), "").await;
    assert_eq!(code, 429, "a third watch by system:node:n1: {head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    // Other identities have their own count; the admin is not limited.
    let (other, _w3) = s.open(watch, &n2).await;
    assert_eq!(other, 200);
    let mut admin_watches = Vec::new();
    for _ in 0..3 {
        let (code, w) = s.open(watch, &admin).await;
        assert_eq!(code, 200);
        admin_watches.push(w);
    }
    // A list is not a watch.
    let (code, _, _) = s.request("GET", "/api/v1/nodes", Some(&n1), "").await;
    assert_eq!(code, 200);

    // Closing a watch gives its place back.
    drop(w1);
    until_some("n1 watches again", || async {
        let (code, w) = s.open(watch, &n1).await;
        (code == 200).then_some(w)
    })
    .await;
}

/// Out of file descriptors, `accept` fails until one is freed: the server must sleep between
/// attempts rather than spin on the ready listener, and answer again once fds are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off() {
    let s = start(&[]);
    let pid = s.api.daemon.pid();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = fds + 16;
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()
        .expect("prlimit");
    assert!(out.status.success(), "{out:?}");

    let mut conns = Vec::new();
    for _ in 0..64 {
        conns.push(TcpStream::connect(s.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        // utime + stime, in clock ticks (1/100 s).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let (before, logged_before) = (cpu(pid), s.api.daemon.count_logged("accept"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (spent, logged) = (
        cpu(pid) - before,
        s.api.daemon.count_logged("accept") - logged_before,
    );
    assert!(
        spent < 40 && logged < 100,
        "at the fd limit for 2 s the server spent {spent} ticks of CPU and logged {logged} \
         accept errors"
    );

    drop(conns);
    until_some("/healthz answers once fds are free", || async {
        (s.healthz().await.0 == 200).then_some(())
    })
    .await;
}
