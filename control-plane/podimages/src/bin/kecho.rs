//! `kecho`: TCP/UDP/HTTP echo server naming the pod and the peer it sees (see
//! `kproxy_podimages::echo`). One thread per TCP connection: tiny and dependency-free.
//!
//! Client mode for pods that need one (the images have no curl): `kecho get URL` prints the
//! body of an HTTP/1.0 GET; `kecho load ... NAME=IP:PORT[,IP:PORT...]...` measures
//! connections and requests per second (see `kproxy_podimages::load`), printing JSON lines.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::Arc,
    thread,
    time::Duration,
};

use kproxy_podimages::{
    echo::{Sniff, greeting, head_complete, http_response, port_from, sniff},
    http::{HttpUrl, get_request, parse_response},
    load::{self, LoadConfig},
    pod_name,
};

/// How long a new connection may stay silent before it is taken for a line client and
/// greeted: HTTP clients send their request at once, line clients wait for the greeting.
const SNIFF_WINDOW: Duration = Duration::from_millis(100);
/// Bounds what one client can make us buffer.
const MAX_HEAD: usize = 16 * 1024;
const MAX_LINE: u64 = 64 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads until the first bytes tell the protocol, the window closes or the peer stops.
fn read_first(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(SNIFF_WINDOW))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while sniff(&buf) == Sniff::NeedMore || buf.is_empty() {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

fn serve_http(mut stream: TcpStream, mut head: Vec<u8>, body: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(HEAD_TIMEOUT))?;
    let mut chunk = [0u8; 1024];
    while !head_complete(&head) && head.len() < MAX_HEAD {
        match stream.read(&mut chunk)? {
            0 => break,
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    stream.write_all(&http_response(head.starts_with(b"HEAD "), body))?;
    stream.shutdown(std::net::Shutdown::Write)
}

fn serve_lines(mut stream: TcpStream, first: Vec<u8>, hello: &str) -> io::Result<()> {
    stream.set_read_timeout(None)?;
    stream.write_all(hello.as_bytes())?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(io::Cursor::new(first).chain(stream));
    let mut line = Vec::new();
    loop {
        line.clear();
        // An overlong line is echoed in pieces rather than buffered whole.
        let n = reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&line)?;
    }
}

fn serve_tcp(mut stream: TcpStream, pod: &str) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let hello = greeting(pod, peer);
    let first = read_first(&mut stream)?;
    match sniff(&first) {
        Sniff::Http => serve_http(stream, first, &hello),
        Sniff::Echo | Sniff::NeedMore => serve_lines(stream, first, &hello),
    }
}

fn serve_udp(socket: &UdpSocket, pod: &str) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                if let Err(e) = socket.send_to(greeting(pod, peer).as_bytes(), peer) {
                    eprintln!("kecho: udp reply to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("kecho: udp receive: {e}"),
        }
    }
}

extern "C" fn on_term(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) };
}

/// The whole `kecho get` exchange may take this long.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

/// `kecho get URL`: the response body, or a one-line error.
fn get(args: &[String]) -> Result<Vec<u8>, String> {
    let [url] = args else {
        return Err("usage: kecho get http://IP:PORT/PATH".to_string());
    };
    let url = HttpUrl::parse(url).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + GET_TIMEOUT;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{}: no response within {GET_TIMEOUT:?}", url.addr))
    };
    let mut stream = TcpStream::connect_timeout(&url.addr, GET_TIMEOUT)
        .map_err(|e| format!("connect {}: {e}", url.addr))?;
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(&get_request(&url.host(), &url.path)))
        .map_err(|e| format!("send to {}: {e}", url.addr))?;
    let mut resp = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("{}: {e}", url.addr))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(format!("{}: no response within {GET_TIMEOUT:?}", url.addr));
            }
            Err(e) => return Err(format!("read from {}: {e}", url.addr)),
        }
    }
    parse_response(&resp)
        .map(<[u8]>::to_vec)
        .map_err(|e| format!("GET {}{}: {e}", url.addr, url.path))
}

/// `kecho load`: one JSON line per progress report and per target result on stdout.
fn load(args: &[String]) -> i32 {
    let cfg = match LoadConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kecho: {e}");
            return 2;
        }
    };
    eprintln!(
        "kecho: load: {} connections, {:?} per target in {} rounds, about {:?} in all",
        cfg.connections,
        cfg.duration,
        cfg.rounds,
        cfg.total()
    );
    let mut stdout = io::stdout();
    let mut broken = false;
    load::run(&cfg, &mut |event| {
        let line = event.to_json();
        // Stdout is line-buffered: each line leaves as soon as it is written.
        if !broken && writeln!(stdout, "{line}").is_err() {
            broken = true;
        }
    });
    i32::from(broken)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "load") {
        std::process::exit(load(&args[1..]));
    }
    if args.first().is_some_and(|a| a == "get") {
        match get(&args[1..]) {
            Ok(body) => {
                let mut out = io::stdout().lock();
                if out.write_all(&body).and_then(|()| out.flush()).is_err() {
                    std::process::exit(1);
                }
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("kecho: {e}");
                std::process::exit(1);
            }
        }
    }
    let port = match port_from(&args, std::env::var("PORT").ok().as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kecho: {e}");
            std::process::exit(2);
        }
    };
    // As a container's PID 1 the default "terminate" action does not apply: without a
    // handler `docker stop` would wait for its SIGKILL timeout.
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only calls the async-signal-safe _exit.
        unsafe { libc::signal(sig, on_term as *const () as libc::sighandler_t) };
    }
    let pod: Arc<str> = pod_name().into();
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let (tcp, udp) = match (TcpListener::bind(addr), UdpSocket::bind(addr)) {
        (Ok(t), Ok(u)) => (t, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kecho: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("kecho: pod {pod}: listening on tcp and udp {addr}");
    let udp_pod = Arc::clone(&pod);
    thread::spawn(move || serve_udp(&udp, &udp_pod));
    for conn in tcp.incoming() {
        match conn {
            Ok(stream) => {
                let pod = Arc::clone(&pod);
                thread::spawn(move || {
                    if let Err(e) = serve_tcp(stream, &pod) {
                        eprintln!("kecho: tcp: {e}");
                    }
                });
            }
            Err(e) => eprintln!("kecho: accept: {e}"),
        }
    }
}
