//! Socket-LB probes for the end-to-end tests, run in the lab's socket-LB cgroup. ADDR is
//! `ip:port`, or `[::ffff:ip]:port` for an IPv6 socket to an IPv4-mapped address. Results
//! are JSON lines with the errno of a failure (`"errno":111`):
//!
//! * `tcp ADDR` — connect, read the backend's greeting: `{"ok":true,"name":..,"getpeername":..}`.
//! * `udp ADDR [--connected]` — one datagram (connect() first, or sendto()), one answer:
//!   `{"ok":true,"name":..,"from":..}` (`from`: the address recvfrom() reported).
//! * `udp-long ADDR --duration-ms D` — one connected UDP socket, a datagram every 100 ms;
//!   on stderr (live) one line per answer `{"answer":NAME}` or error `{"errno":..}`, after
//!   which it connects a new socket, as a long-lived client would.
//! * `tcp-long ADDR --duration-ms D` — one TCP connection, a line every 100 ms that must
//!   echo; on stderr `{"answer":NAME}` once, then `{"errno":..}` and exit on the first
//!   failure, or `{"done":true}`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn failure(e: &std::io::Error) -> Value {
    json!({"ok": false, "errno": e.raw_os_error(), "error": e.to_string()})
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map_or("", String::as_str);
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("ADDR is ip:port or [v6]:port");
    let duration = Duration::from_millis(
        arg(&args, "--duration-ms")
            .and_then(|d| d.parse().ok())
            .unwrap_or(3000),
    );
    match cmd {
        "tcp" => println!("{}", tcp(addr)),
        "udp" => println!("{}", udp(addr, args.iter().any(|a| a == "--connected"))),
        "udp-long" => udp_long(addr, duration),
        "tcp-long" => tcp_long(addr, duration),
        _ => {
            eprintln!("usage: kpt-sock tcp|udp|udp-long|tcp-long ADDR [..]");
            std::process::exit(2);
        }
    }
}

fn tcp(addr: SocketAddr) -> Value {
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let getpeername = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
    let mut line = String::new();
    match BufReader::new(&s).read_line(&mut line) {
        Ok(_) => json!({
            "ok": true,
            "name": line.split_whitespace().next().unwrap_or(""),
            "getpeername": getpeername,
        }),
        Err(e) => failure(&e),
    }
}

fn bind_for(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    match addr {
        SocketAddr::V4(_) => UdpSocket::bind(("0.0.0.0", 0)),
        SocketAddr::V6(_) => UdpSocket::bind(("::", 0)),
    }
}

fn udp(addr: SocketAddr, connected: bool) -> Value {
    let mut buf = [0u8; 512];
    let res = bind_for(addr).and_then(|sock| {
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        if connected {
            sock.connect(addr)?;
            sock.send(b"hello\n")?;
        } else {
            sock.send_to(b"hello\n", addr)?;
        }
        sock.recv_from(&mut buf)
    });
    match res {
        Ok((n, from)) => json!({
            "ok": true,
            "name": String::from_utf8_lossy(&buf[..n]).split_whitespace().next().unwrap_or(""),
            "from": from.to_string(),
        }),
        Err(e) => failure(&e),
    }
}

fn connect_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = bind_for(addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    sock.connect(addr)?;
    Ok(sock)
}

fn udp_long(addr: SocketAddr, duration: Duration) {
    let started = Instant::now();
    let mut sock = None;
    let mut buf = [0u8; 512];
    while started.elapsed() < duration {
        let s = match sock.take() {
            Some(s) => s,
            None => match connect_udp(addr) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}", json!({"errno": e.raw_os_error(), "when": "connect"}));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let res = s.send(b"ping\n").and_then(|_| s.recv(&mut buf));
        match res {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                eprintln!(
                    "{}",
                    json!({"answer": text.split_whitespace().next().unwrap_or("")})
                );
                sock = Some(s);
            }
            // A lost datagram: the same socket tries again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                eprintln!("{}", json!({"timeout": true}));
                sock = Some(s);
            }
            // Anything else (ECONNABORTED after SOCK_DESTROY): a new socket.
            Err(e) => eprintln!("{}", json!({"errno": e.raw_os_error()})),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{}", json!({"done": true}));
}

fn tcp_long(addr: SocketAddr, duration: Duration) {
    let run = || -> std::io::Result<()> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line)?;
        eprintln!(
            "{}",
            json!({"answer": line.split_whitespace().next().unwrap_or("")})
        );
        let started = Instant::now();
        while started.elapsed() < duration {
            w.write_all(b"ping\n")?;
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    match run() {
        Ok(()) => eprintln!("{}", json!({"done": true})),
        Err(e) => eprintln!(
            "{}",
            json!({"errno": e.raw_os_error(), "error": e.to_string()})
        ),
    }
}
