//! The node's container images (`cargo xtask images`) run in Docker: kecho's TCP/UDP/HTTP
//! replies, httpd's page naming the pod, and pause's signal handling and zombie reaping.
//!
//! The tests drive the `docker` CLI on purpose (the product talks to the Engine API) and only
//! talk to the containers' own addresses on Docker's default bridge.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use kproxy_tests::{eventually, privileged, sh, unique};

const PAUSE: &str = "kproxy/pause:1";
const HTTPD: &str = "kproxy/httpd:1";
const KECHO: &str = "kproxy/kecho:1";
const BUSYBOX: &str = "kproxy/busybox:1";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails clearly when the images have not been built (`cargo xtask test` builds them first).
fn require_images() {
    for image in [
        PAUSE,
        HTTPD,
        KECHO,
        BUSYBOX,
        "httpd:latest",
        "kecho:latest",
        "busybox:latest",
    ] {
        let ok = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "image {image} is missing: run `cargo xtask images`");
    }
}

/// A container run with `docker run -d`, removed (`docker rm -f`) on drop, also on panic.
struct Container {
    name: String,
}

impl Container {
    fn run(args: &[&str], image: &str, cmd: &[&str]) -> Self {
        let name = unique("kpt-img");
        sh(Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(args)
            .arg(image)
            .args(cmd));
        Self { name }
    }

    fn inspect(&self, format: &str) -> String {
        sh(Command::new("docker").args(["inspect", "--format", format, &self.name]))
            .trim()
            .to_string()
    }

    /// The container's address on the default bridge.
    fn ip(&self) -> Ipv4Addr {
        let ip = self.inspect("{{.NetworkSettings.IPAddress}}");
        ip.parse()
            .unwrap_or_else(|e| panic!("{}: address {ip:?}: {e}", self.name))
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// Connects once the server inside the container listens.
fn connect(c: &Container, addr: SocketAddr) -> TcpStream {
    let mut stream = None;
    eventually(&format!("{} accepts on {addr}", c.name), || {
        stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok();
        stream.is_some()
    });
    let s = stream.expect("connected");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

/// One HTTP/1.0 GET; returns the whole response.
fn http_get(c: &Container, addr: SocketAddr) -> String {
    let mut s = connect(c, addr);
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .unwrap_or_else(|e| panic!("read response: {e}; logs:\n{}", c.logs()));
    resp
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read line");
    line
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "short names for the probes of one scenario"
)]
fn kecho_answers_tcp_udp_and_http() {
    if !privileged("kecho_answers_tcp_udp_and_http") {
        return;
    }
    require_images();
    let pod = "kecho-pod-7f9c";
    let c = Container::run(&["-e", &format!("POD_NAME={pod}")], KECHO, &[]);
    let addr = SocketAddr::from((c.ip(), 8080));

    // TCP: greeting naming the pod and our address as it sees it, then line echo.
    let s = connect(&c, addr);
    let me = s.local_addr().expect("local addr");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_line(&mut r), format!("{pod} {me}\n"));
    let mut w = s;
    w.write_all(b"hello\nsecond line\n").expect("send");
    assert_eq!(read_line(&mut r), "hello\n");
    assert_eq!(read_line(&mut r), "second line\n");
    w.write_all(b"third\n").expect("send");
    assert_eq!(read_line(&mut r), "third\n");

    // HTTP on the same port: one response whose body is the greeting.
    let mut s = connect(&c, addr);
    let me = s.local_addr().expect("local addr");
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: kecho\r\n\r\n")
        .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    let body = format!("{pod} {me}\n");
    assert!(
        resp.ends_with(&format!("\r\n\r\n{body}")),
        "{resp:?} should end with {body:?}"
    );

    // UDP: a datagram gets the pod and our address back.
    let u = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("udp bind");
    u.connect(addr).expect("udp connect");
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let me = u.local_addr().expect("local addr");
    let mut buf = [0u8; 512];
    let mut reply = String::new();
    // The first datagrams may be lost to ARP; TCP above already proved the server is up.
    eventually("kecho answers UDP", || {
        let _ = u.send(b"ping");
        match u.recv(&mut buf) {
            Ok(n) => {
                reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                true
            }
            Err(_) => false,
        }
    });
    assert_eq!(reply, format!("{pod} {me}\n"));
}

#[test]
fn kecho_uses_hostname_and_port_env() {
    if !privileged("kecho_uses_hostname_and_port_env") {
        return;
    }
    require_images();
    let c = Container::run(
        &["--hostname", "kecho-host-1", "-e", "PORT=9090"],
        "kecho:latest",
        &[],
    );
    let s = connect(&c, SocketAddr::from((c.ip(), 9090)));
    let me = s.local_addr().expect("local addr");
    assert_eq!(
        read_line(&mut BufReader::new(s)),
        format!("kecho-host-1 {me}\n")
    );
}

#[test]
fn httpd_serves_the_pod_name() {
    if !privileged("httpd_serves_the_pod_name") {
        return;
    }
    require_images();
    // With an init as PID 1 (the kubelet sets HostConfig.init), SIGTERM reaches the shell only.
    let by_host = Container::run(
        &[
            "--init",
            "--hostname",
            "web-5d8f7-abcde",
            "-e",
            "DRAIN_SECONDS=2",
        ],
        HTTPD,
        &[],
    );
    let by_env = Container::run(
        &["--hostname", "ignored-host", "-e", "POD_NAME=web-from-env"],
        "httpd:latest",
        &[],
    );
    let addr = SocketAddr::from((by_host.ip(), 80));
    let mut s = connect(&by_host, addr);
    let me = s.local_addr().expect("local addr");
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains(" 200 "),
        "{resp}"
    );
    assert!(resp.contains("web-5d8f7-abcde"), "{resp}");
    // `-v`: one line per request naming the client's address as the server saw it.
    let line = format!("{me}: response:200");
    eventually(&format!("httpd logs {line:?}"), || {
        by_host.logs().lines().any(|l| l == line)
    });
    let resp = http_get(&by_env, SocketAddr::from((by_env.ip(), 80)));
    assert!(resp.contains("web-from-env"), "{resp}");
    assert!(!resp.contains("ignored-host"), "{resp}");

    // SIGTERM starts the drain: httpd keeps answering for DRAIN_SECONDS, then stops.
    let drain = Duration::from_secs(2);
    let started = Instant::now();
    let stop = {
        let name = by_host.name.clone();
        std::thread::spawn(move || sh(Command::new("docker").args(["stop", "-t", "10", &name])))
    };
    eventually("httpd logs the start of its drain", || {
        by_host.logs().contains("httpd: terminating")
    });
    let resp = http_get(&by_host, addr);
    assert!(
        started.elapsed() < drain,
        "the check came too late to prove the drain ({:?})",
        started.elapsed()
    );
    assert!(
        resp.contains(" 200 ") && resp.contains("web-5d8f7-abcde"),
        "{resp}"
    );
    stop.join().expect("docker stop");
    let took = started.elapsed();
    assert!(
        took >= drain,
        "docker stop returned before the drain: {took:?}"
    );
    assert!(
        took < drain + Duration::from_millis(1500),
        "docker stop took {took:?}"
    );
    assert_eq!(
        by_host.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        by_host.logs()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "httpd still accepts after its drain"
    );
}

/// `kubectl cp` runs `tar` and `kubectl run -it` runs `sh`: both must be on the PATH, and the
/// default command is a shell.
#[test]
fn busybox_has_a_shell_and_tar_on_the_path() {
    if !privileged("images") {
        return;
    }
    require_images();
    let out = sh(Command::new("docker").args([
        "run",
        "--rm",
        BUSYBOX,
        "sh",
        "-c",
        "which tar ls; echo data | tar -cf - -C /bin busybox | tar -tf -; stat -c %a /tmp",
    ]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["/bin/tar", "/bin/ls", "busybox", "1777"],
        "{out}"
    );
    let cmd = sh(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        BUSYBOX,
    ]));
    assert_eq!(cmd.trim(), r#"["sh"]"#);
}

#[test]
fn pause_exits_promptly_on_sigterm() {
    if !privileged("pause_exits_promptly_on_sigterm") {
        return;
    }
    require_images();
    let c = Container::run(&[], PAUSE, &[]);
    eventually("pause is running", || {
        c.inspect("{{.State.Running}}") == "true"
    });
    let started = Instant::now();
    sh(Command::new("docker").args(["stop", "-t", "10", &c.name]));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "docker stop took {took:?}");
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "{}", c.logs());
}

/// Host PIDs and states of the processes whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so parse after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let parent = fields.next().and_then(|p| p.parse::<u32>().ok());
        if let (Some(state), Some(parent)) = (state, parent)
            && parent == ppid
        {
            out.push((pid, state));
        }
    }
    out
}

#[test]
fn pause_reaps_orphaned_zombies() {
    if !privileged("pause_reaps_orphaned_zombies") {
        return;
    }
    require_images();
    let pause = Container::run(&["--init=false"], PAUSE, &[]);
    eventually("pause is running", || {
        pause.inspect("{{.State.Running}}") == "true"
    });
    let pause_pid: u32 = pause
        .inspect("{{.State.Pid}}")
        .parse()
        .expect("pause host pid");
    // A helper in pause's PID namespace leaves an orphan behind: the orphan is re-parented
    // to the namespace's init, pause, and turns into a zombie when it exits.
    let helper = Container::run(
        &[
            "--pid",
            &format!("container:{}", pause.name),
            "--entrypoint",
            "/bin/busybox",
        ],
        HTTPD,
        &["sh", "-c", "/bin/busybox sleep 1 & exit 0"],
    );
    eventually("the helper exits", || {
        helper.inspect("{{.State.Running}}") == "false"
    });
    eventually("pause has reaped every child", || {
        children_of(pause_pid).is_empty()
    });
    assert_eq!(
        pause.inspect("{{.State.Running}}"),
        "true",
        "{}",
        pause.logs()
    );
}
