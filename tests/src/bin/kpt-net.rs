//! Network helper for the end-to-end tests, run inside test namespaces:
//!
//! * `serve --name N --port P` — TCP and UDP server on P; every answer is
//!   `<name> <peer-ip>:<peer-port>` so tests see which backend answered and which source
//!   address it saw. TCP connections then echo each line back.
//! * `tcp ADDR --count N` — N new connections; prints one JSON line per connection:
//!   `{"ok":true,"name":..,"seen_peer":..,"getpeername":..}` or the error.
//! * `udp ADDR --count N` — N datagrams from N new unconnected sockets; prints the answer and
//!   the address the answer came from (recvfrom).
//! * `hold ADDR --duration-ms D` — one TCP connection, a line every 50 ms, each must echo;
//!   exits non-zero on the first failure, prints how many round trips worked.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
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
        "tcp" => tcp(&args[1], count),
        "udp" => udp(&args[1], count, args.iter().any(|a| a == "--connected")),
        "hold" => hold(
            &args[1],
            arg(&args, "--duration-ms")
                .and_then(|d| d.parse().ok())
                .unwrap_or(3000),
        ),
        _ => {
            eprintln!("usage: kpt-net serve|tcp|udp|hold ...");
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
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{uname} {peer}\n").as_bytes(), peer);
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
                if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                    break;
                }
            }
        });
    }
    0
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn tcp(addr: &str, count: usize) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let mut failures = 0;
    for _ in 0..count {
        match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(3))).ok();
                let getpeername = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                let mut line = String::new();
                let read = BufReader::new(&s).read_line(&mut line);
                let mut parts = line.split_whitespace();
                match (read, parts.next(), parts.next()) {
                    (Ok(_), Some(name), Some(seen)) => println!(
                        "{{\"ok\":true,\"name\":{},\"seen_peer\":{},\"getpeername\":{}}}",
                        json_str(name),
                        json_str(seen),
                        json_str(&getpeername)
                    ),
                    (r, _, _) => {
                        failures += 1;
                        println!(
                            "{{\"ok\":false,\"error\":{}}}",
                            json_str(&format!("bad answer {line:?} {r:?}"))
                        );
                    }
                }
            }
            Err(e) => {
                failures += 1;
                println!(
                    "{{\"ok\":false,\"error\":{},\"kind\":{}}}",
                    json_str(&e.to_string()),
                    json_str(&format!("{:?}", e.kind()))
                );
            }
        }
    }
    i32::from(failures > 0)
}

/// `connected`: connect() first (then ICMP errors surface as ECONNREFUSED), else sendto().
fn udp(addr: &str, count: usize, connected: bool) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let mut failures = 0;
    for _ in 0..count {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
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
                println!(
                    "{{\"ok\":true,\"name\":{},\"seen_peer\":{},\"from\":{}}}",
                    json_str(parts.next().unwrap_or("")),
                    json_str(parts.next().unwrap_or("")),
                    json_str(&from.to_string())
                );
            }
            Err(e) => {
                failures += 1;
                println!(
                    "{{\"ok\":false,\"error\":{},\"kind\":{}}}",
                    json_str(&e.to_string()),
                    json_str(&format!("{:?}", e.kind()))
                );
            }
        }
    }
    i32::from(failures > 0)
}

fn hold(addr: &str, duration_ms: u64) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let s = match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            println!("{{\"ok\":false,\"error\":{}}}", json_str(&e.to_string()));
            return 1;
        }
    };
    // Generous: a restart of kproxy may cost a retransmission or two.
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let mut greeting = String::new();
    if r.read_line(&mut greeting).is_err() {
        println!("{{\"ok\":false,\"error\":\"no greeting\"}}");
        return 1;
    }
    let name = greeting.split_whitespace().next().unwrap_or("").to_string();
    println!("{{\"connected\":{}}}", json_str(&name));
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_millis(duration_ms) {
        let msg = format!("ping {rounds}");
        let mut back = String::new();
        let ok = w.write_all(format!("{msg}\n").as_bytes()).is_ok()
            && r.read_line(&mut back).is_ok()
            && back.trim() == msg;
        if !ok {
            println!(
                "{{\"ok\":false,\"rounds\":{rounds},\"error\":{}}}",
                json_str(&format!("echo failed: {back:?}"))
            );
            return 1;
        }
        rounds += 1;
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{{\"ok\":true,\"name\":{},\"rounds\":{rounds}}}",
        json_str(&name)
    );
    0
}
