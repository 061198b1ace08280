//! Network helper for the end-to-end tests, run inside test namespaces:
//!
//! * `serve --name N --port P` — TCP and UDP server on P; every answer is
//!   `<name> <peer-ip>:<peer-port>` so tests see which backend answered and which source
//!   address it saw. TCP connections then echo each line back.
//! * `tcp ADDR --count N [--sport P] [--rst]` — N new connections (from port P; ended by a
//!   RST instead of a FIN); prints one JSON line per connection:
//!   `{"ok":true,"name":..,"seen_peer":..,"getpeername":..}` or the error.
//! * `udp ADDR --count N [--sport P]` — N datagrams from N new unconnected sockets (all from
//!   port P if given); prints the answer and the address the answer came from (recvfrom).
//! * `udp-flows ADDR --from-port P --count N` — one datagram from each source port P..P+N
//!   (a new socket each, so each is a flow of its own with a 5-tuple the caller can repeat);
//!   prints `{"names":[..],"lost":..}`: the name of the backend that answered each port, in
//!   port order ("" if none did after three tries).
//! * `udp-big ADDR --size N --count C [--sport P]` / `frag-tail ADDR --count C` — large
//!   (fragmented) datagrams and lone later fragments, see `kproxy_tests::bigudp`.
//! * `hold ADDR --duration-ms D` — one TCP connection, a line every 50 ms, each must echo;
//!   exits non-zero on the first failure (with the error kind, e.g. `ConnectionReset`),
//!   prints how many round trips worked.
//!
//! Load generators for `cargo xtask bench` (one JSON line each; `--bind IP` sets the source
//! address, the port is still chosen at connect time):
//!
//! * `conns ADDR --duration-ms D --concurrency C [--bind IP] [--max-conns N]` — C threads
//!   open new connections for D ms (or until N were tried): connect, send a line, read the
//!   greeting and the echo, close.
//!   `{"conns_per_s":..,"conns":..,"errors":..,"elapsed_ms":..}`.
//! * `rr ADDR --duration-ms D [--bind IP]` — request/response latency on one kept-alive
//!   connection: `{"p50_us":..,"p99_us":..,"count":..}`.
//! * `bulk ADDR --duration-ms D [--bind IP]` — sends `BULK`, after which the server streams
//!   data until the client closes: `{"mbit_per_s":..,"bytes":..}`.
//! * `wait-for ADDR --name N [--timeout-ms T] [--bind IP]` — prints `{"started":true}`, then
//!   opens connections until backend N answers; prints the CLOCK_MONOTONIC time of that
//!   answer: `{"ok":true,"mono_ns":..,"attempts":..}`.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::FromRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use kproxy_tests::mono_ns;
use serde_json::{Value, json};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map_or("", String::as_str);
    let count: usize = arg(&args, "--count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let code = match cmd {
        "serve" => serve(
            &arg(&args, "--name").expect("--name"),
            arg(&args, "--port")
                .and_then(|p| p.parse().ok())
                .expect("--port"),
        ),
        "tcp" => tcp(
            &args[1],
            count,
            arg(&args, "--sport").map_or(0, |p| p.parse().expect("--sport PORT")),
            args.iter().any(|a| a == "--rst"),
        ),
        "udp" => udp(
            &args[1],
            count,
            args.iter().any(|a| a == "--connected"),
            arg(&args, "--sport").map_or(0, |p| p.parse().expect("--sport PORT")),
        ),
        "udp-flows" => udp_flows(
            &args[1],
            arg(&args, "--from-port")
                .and_then(|p| p.parse().ok())
                .expect("--from-port"),
            count,
        ),
        "udp-big" => kproxy_tests::bigudp::client(
            &args[1],
            arg(&args, "--size").map_or(3000, |s| s.parse().expect("--size N")),
            count,
            arg(&args, "--sport").map_or(0, |p| p.parse().expect("--sport PORT")),
        ),
        "frag-tail" => kproxy_tests::bigudp::send_tails(&args[1], count),
        "hold" => hold(
            &args[1],
            arg(&args, "--duration-ms")
                .and_then(|d| d.parse().ok())
                .unwrap_or(3000),
        ),
        "conns" | "rr" | "bulk" | "wait-for" => {
            let load = Load::from_args(&args);
            match cmd {
                "conns" => conns(&load),
                "rr" => rr(&load),
                "bulk" => bulk(&load),
                _ => wait_for(&load, &arg(&args, "--name").expect("--name")),
            }
        }
        _ => {
            eprintln!(
                "usage: kpt-net serve|tcp|udp|udp-flows|udp-big|frag-tail|hold|conns|rr|bulk|wait-for ..."
            );
            2
        }
    };
    std::process::exit(code);
}

fn serve(name: &str, port: u16) -> i32 {
    let tcp = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
    let udp = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
    let uname = name.to_string();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let answer = kproxy_tests::bigudp::reply(&uname, peer, &buf[..n])
                .unwrap_or_else(|| format!("{uname} {peer}\n").into_bytes());
            let _ = udp.send_to(&answer, peer);
        }
    });
    eprintln!("serving {name} on {port}");
    for stream in tcp.incoming().flatten() {
        let name = name.to_string();
        thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let mut w = stream.try_clone().expect("clone");
            if w.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
                return;
            }
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if line == "BULK" {
                    // Bulk throughput: stream until the client goes away.
                    let buf = vec![0x5a_u8; 128 * 1024];
                    while w.write_all(&buf).is_ok() {}
                    break;
                }
                if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                    break;
                }
            }
        });
    }
    0
}

/// Prints one JSON result line.
fn emit(v: &Value) {
    println!("{v}");
}

/// The JSON line for a failed socket operation.
fn io_failure(e: &std::io::Error) -> Value {
    json!({"ok": false, "error": e.to_string(), "kind": format!("{:?}", e.kind())})
}

/// `sport` other than 0: connect from that port. `rst`: end each connection with a RST
/// (SO_LINGER 0) instead of a FIN, so the port is free again at once (no TIME_WAIT).
fn tcp(addr: &str, count: usize, sport: u16, rst: bool) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let SocketAddr::V4(target4) = target else {
        panic!("ADDR is an IPv4 ip:port")
    };
    let mut failures = 0;
    for _ in 0..count {
        let connected = if sport == 0 {
            TcpStream::connect_timeout(&target, Duration::from_secs(3))
        } else {
            connect_from_port(target4, sport)
        };
        match connected {
            Ok(s) => {
                if rst {
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: valid fd, option value of the documented type and size.
                    unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&s),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&raw const linger).cast(),
                            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>())
                                .expect("len"),
                        )
                    };
                }
                s.set_read_timeout(Some(Duration::from_secs(3))).ok();
                let getpeername = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                let mut line = String::new();
                let read = BufReader::new(&s).read_line(&mut line);
                let mut parts = line.split_whitespace();
                match (read, parts.next(), parts.next()) {
                    (Ok(_), Some(name), Some(seen)) => emit(&json!({
                        "ok": true, "name": name, "seen_peer": seen, "getpeername": getpeername
                    })),
                    (r, _, _) => {
                        failures += 1;
                        emit(&json!({"ok": false, "error": format!("bad answer {line:?} {r:?}")}));
                    }
                }
            }
            Err(e) => {
                failures += 1;
                emit(&io_failure(&e));
            }
        }
    }
    i32::from(failures > 0)
}

/// `connected`: connect() first (then ICMP errors surface as ECONNREFUSED), else sendto().
/// `sport` other than 0: every socket sends from that port (the same 5-tuple each time).
fn udp(addr: &str, count: usize, connected: bool, sport: u16) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let mut failures = 0;
    for _ in 0..count {
        let sock = UdpSocket::bind(("0.0.0.0", sport)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut buf = [0u8; 512];
        let res = if connected {
            sock.connect(target)
                .and_then(|()| sock.send(b"hello\n"))
                .and_then(|_| sock.recv_from(&mut buf))
        } else {
            sock.send_to(b"hello\n", target)
                .and_then(|_| sock.recv_from(&mut buf))
        };
        match res {
            Ok((n, from)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let mut parts = text.split_whitespace();
                emit(&json!({
                    "ok": true,
                    "name": parts.next().unwrap_or(""),
                    "seen_peer": parts.next().unwrap_or(""),
                    "from": from.to_string(),
                }));
            }
            Err(e) => {
                failures += 1;
                emit(&io_failure(&e));
            }
        }
    }
    i32::from(failures > 0)
}

fn udp_flows(addr: &str, from_port: u16, count: usize) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let mut names = vec![String::new(); count];
    // Batches of sockets: all send, then all read, so 10,000 flows take about a second.
    for batch in (0..count).collect::<Vec<_>>().chunks(256) {
        let socks: Vec<(usize, UdpSocket)> = batch
            .iter()
            .map(|i| {
                let port = from_port + u16::try_from(*i).expect("port range");
                let sock = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
                sock.set_read_timeout(Some(Duration::from_millis(500))).ok();
                (*i, sock)
            })
            .collect();
        for _try in 0..3 {
            let pending: Vec<&(usize, UdpSocket)> =
                socks.iter().filter(|(i, _)| names[*i].is_empty()).collect();
            if pending.is_empty() {
                break;
            }
            for (_, sock) in &pending {
                let _ = sock.send_to(b"hello\n", target);
            }
            let mut buf = [0u8; 512];
            for (i, sock) in &pending {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    names[*i] = text.split_whitespace().next().unwrap_or("").to_string();
                }
            }
        }
    }
    let lost = names.iter().filter(|n| n.is_empty()).count();
    emit(&json!({ "names": names, "lost": lost }));
    i32::from(lost > 0)
}

fn hold(addr: &str, duration_ms: u64) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let s = match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            emit(&io_failure(&e));
            return 1;
        }
    };
    // Generous: a restart of kproxy may cost a retransmission or two.
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let mut greeting = String::new();
    if r.read_line(&mut greeting).is_err() {
        emit(&json!({"ok": false, "error": "no greeting"}));
        return 1;
    }
    let name = greeting.split_whitespace().next().unwrap_or("").to_string();
    emit(&json!({ "connected": name }));
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_millis(duration_ms) {
        let msg = format!("ping {rounds}");
        let mut back = String::new();
        let res = w
            .write_all(format!("{msg}\n").as_bytes())
            .and_then(|()| r.read_line(&mut back));
        if let Err(e) = &res {
            let mut v = io_failure(e);
            v["rounds"] = json!(rounds);
            emit(&v);
            return 1;
        }
        if back.trim() != msg {
            emit(
                &json!({"ok": false, "rounds": rounds, "error": format!("echo failed: {back:?}")}),
            );
            return 1;
        }
        rounds += 1;
        thread::sleep(Duration::from_millis(50));
    }
    emit(&json!({"ok": true, "name": name, "rounds": rounds}));
    0
}

/// Common options of the load generators.
struct Load {
    target: SocketAddrV4,
    bind: Option<Ipv4Addr>,
    duration: Duration,
    concurrency: usize,
    timeout: Duration,
    /// At most this many connections (`conns`), whatever the duration.
    max_conns: u64,
}

impl Load {
    fn from_args(args: &[String]) -> Self {
        let num = |name: &str, default: u64| {
            arg(args, name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
        };
        Self {
            target: args
                .get(1)
                .and_then(|a| a.parse().ok())
                .expect("ADDR is ipv4:port"),
            bind: arg(args, "--bind").map(|b| b.parse().expect("--bind takes an IPv4 address")),
            duration: Duration::from_millis(num("--duration-ms", 3000)),
            concurrency: usize::try_from(num("--concurrency", 4)).expect("concurrency"),
            timeout: Duration::from_millis(num("--timeout-ms", 30_000)),
            max_conns: num("--max-conns", u64::MAX),
        }
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits"),
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A blocking connect, optionally from `bind` (port still chosen by connect, so TIME_WAIT
/// reuse works per destination), giving up after `timeout`.
fn connect_from(
    target: SocketAddrV4,
    bind: Option<Ipv4Addr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).expect("len");
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns; the stream closes it on drop.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // SO_SNDTIMEO bounds a blocking connect.
    stream.set_write_timeout(Some(timeout))?;
    if let Some(ip) = bind {
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value of the documented type and size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("len"),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sa = sockaddr_in(SocketAddrV4::new(ip, 0));
        // SAFETY: valid fd and a sockaddr_in of the given length.
        if unsafe { libc::bind(fd, (&raw const sa).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let sa = sockaddr_in(target);
    // SAFETY: valid fd and a sockaddr_in of the given length.
    if unsafe { libc::connect(fd, (&raw const sa).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// A blocking connect from local port `sport` (SO_REUSEADDR, so a port just released by a
/// RST can be taken again).
fn connect_from_port(target: SocketAddrV4, sport: u16) -> std::io::Result<TcpStream> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).expect("len");
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns; the stream closes it on drop.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    stream.set_write_timeout(Some(Duration::from_secs(3)))?;
    let one: libc::c_int = 1;
    let sa = sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport));
    let target = sockaddr_in(target);
    // SAFETY: valid fd; option and addresses of the documented types and sizes.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("len"),
        ) == 0
            && libc::bind(fd, (&raw const sa).cast(), len) == 0
            && libc::connect(fd, (&raw const target).cast(), len) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// Reads until `lines` newlines arrived (the answer lines of the server).
fn read_lines(s: &mut TcpStream, lines: usize, buf: &mut [u8]) -> std::io::Result<()> {
    let mut seen = 0;
    while seen < lines {
        let n = s.read(buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        #[expect(
            clippy::naive_bytecount,
            reason = "a few lines a read; not worth the bytecount crate"
        )]
        let lines = buf[..n].iter().filter(|b| **b == b'\n').count();
        seen += lines;
    }
    Ok(())
}

fn conns(load: &Load) -> i32 {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let tried = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + load.duration;
    let workers: Vec<_> = (0..load.concurrency.max(1))
        .map(|_| {
            let (ok, errors, first_error) = (ok.clone(), errors.clone(), first_error.clone());
            let (target, bind, max, tried) =
                (load.target, load.bind, load.max_conns, tried.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                let one = |buf: &mut [u8]| -> std::io::Result<()> {
                    let mut s = connect_from(target, bind, Duration::from_secs(3))?;
                    s.set_read_timeout(Some(Duration::from_secs(3)))?;
                    s.write_all(b"hello\n")?;
                    // The greeting, then the echo.
                    read_lines(&mut s, 2, buf)
                };
                while Instant::now() < deadline && tried.fetch_add(1, Ordering::Relaxed) < max {
                    match one(&mut buf) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| e.to_string());
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    let ok = ok.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let first_error = first_error.lock().unwrap().clone().unwrap_or_default();
    emit(&json!({
        "conns_per_s": ok as f64 / elapsed.as_secs_f64(),
        "conns": ok,
        "errors": errors,
        "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "first_error": first_error,
    }));
    i32::from(ok == 0)
}

fn rr(load: &Load) -> i32 {
    let mut s = match connect_from(load.target, load.bind, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            emit(&io_failure(&e));
            return 1;
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.set_nodelay(true).ok();
    let mut buf = [0u8; 512];
    if let Err(e) = read_lines(&mut s, 1, &mut buf) {
        emit(&io_failure(&e));
        return 1;
    }
    let mut lat_ns: Vec<u64> = Vec::with_capacity(100_000);
    let started = Instant::now();
    while started.elapsed() < load.duration {
        let t = Instant::now();
        if let Err(e) = s
            .write_all(b"ping\n")
            .and_then(|()| read_lines(&mut s, 1, &mut buf))
        {
            emit(&io_failure(&e));
            return 1;
        }
        lat_ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    lat_ns.sort_unstable();
    let pct = |p: usize| lat_ns[(lat_ns.len() * p / 100).min(lat_ns.len() - 1)] as f64 / 1000.0;
    emit(&json!({"ok": true, "p50_us": pct(50), "p99_us": pct(99), "count": lat_ns.len()}));
    0
}

fn bulk(load: &Load) -> i32 {
    let mut s = match connect_from(load.target, load.bind, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            emit(&io_failure(&e));
            return 1;
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut buf = vec![0u8; 256 * 1024];
    // Discard the greeting (anything after its newline is already bulk data).
    let mut bytes = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                emit(&json!({"ok": false, "error": "no greeting"}));
                return 1;
            }
            Ok(n) => {
                if buf[..n].contains(&b'\n') {
                    break;
                }
            }
        }
    }
    if let Err(e) = s.write_all(b"BULK\n") {
        emit(&io_failure(&e));
        return 1;
    }
    let started = Instant::now();
    while started.elapsed() < load.duration {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) => {
                emit(&io_failure(&e));
                return 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    emit(&json!({"ok": true, "mbit_per_s": bytes as f64 * 8.0 / secs / 1e6, "bytes": bytes}));
    0
}

fn wait_for(load: &Load, want: &str) -> i32 {
    emit(&json!({ "started": true }));
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let mut attempts = 0u64;
    let mut buf = [0u8; 512];
    while started.elapsed() < load.timeout {
        attempts += 1;
        let answer =
            connect_from(load.target, load.bind, Duration::from_secs(1)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                let n = s.read(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            });
        if let Ok(line) = answer
            && line.split_whitespace().next() == Some(want)
        {
            emit(&json!({"ok": true, "mono_ns": mono_ns(), "attempts": attempts}));
            return 0;
        }
        thread::sleep(Duration::from_millis(1));
    }
    emit(&json!({"ok": false, "attempts": attempts, "error": "timed out"}));
    1
}
