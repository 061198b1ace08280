//! pods/log and pods/exec end to end, without the kubelet's pod runtime: a real API server,
//! the kubelet's log/exec server (kproxy-kubelet-server) in-process on a loopback port, and
//! Docker containers started here with the labels the kubelet would give a pod's containers.
//! The Node object points at that server, so the real kubectl, kctl and kube-rs go client →
//! API server → (mutual TLS) → kubelet server → Docker and back.
//!
//! The containers are made with the `docker` CLI on purpose (the product uses the Engine
//! API); every one is removed when its test ends, also on failure.
#![forbid(unsafe_code)]

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kproxy_pod_labels as labels;
use kproxy_tests::kubelet_server::{self, NodeCluster};
use kproxy_tests::{bin, eventually, sh, unique};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";
const IMAGE: &str = "kproxy/httpd:1";
/// A client still running after this is hung, not slow.
const HANG: Duration = Duration::from_mins(1);

/// A running container's script: two known lines (one on stderr), then a tick every 200 ms.
const TICKER: &str = "echo first line; sleep 0.1; echo to stderr >&2; i=0; \
                      while true; do i=$((i+1)); echo tick $i; sleep 0.2; done";

fn ready() -> bool {
    kubelet_server::ready("logs_exec", &[IMAGE])
}

kproxy_tests::node_cluster!(
    /// One test's cluster: API server, the kubelet server of node `node`, and its containers.
    Cluster
);

impl Cluster {
    fn start() -> Self {
        Self(NodeCluster::start(
            "kpt-logs-exec",
            "kpt-node",
            &Value::Null,
            &json!({
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": "localhost"},
                ],
            }),
        ))
    }

    fn node_object(&self, name: &str, status: &Value) {
        kubelet_server::register_node(&self.http, &json!({"name": name}), status);
    }

    /// Creates the Pod object (on `node`, or unscheduled) with `containers`; returns its uid.
    fn pod(&self, name: &str, node: Option<&str>, containers: &[&str]) -> String {
        let mut spec = json!({
            "containers": containers
                .iter()
                .map(|c| json!({"name": c, "image": IMAGE}))
                .collect::<Vec<_>>(),
        });
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let r = self.http.post(
            "/api/v1/namespaces/default/pods",
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
        );
        assert_eq!(r.code, 201, "{}", r.body);
        r.json()["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string()
    }

    /// Starts attempt `attempt` of `pod`'s `container` running `script` under `sh -c`,
    /// labelled as the kubelet labels it.
    fn container(&self, pod: &str, uid: &str, container: &str, attempt: u32, script: &str) {
        self.docker_container(&["run", "-d"], pod, uid, container, attempt, script);
    }

    /// Like `container`, created but not started.
    fn created_container(&self, pod: &str, uid: &str, container: &str, attempt: u32) {
        self.docker_container(&["create"], pod, uid, container, attempt, "true");
    }

    fn docker_container(
        &self,
        verb: &[&str],
        pod: &str,
        uid: &str,
        container: &str,
        attempt: u32,
        script: &str,
    ) {
        let name = labels::container_name(container, pod, "default", uid, attempt);
        self.containers.add(&name);
        let mut cmd = Command::new("docker");
        cmd.args(verb)
            .args(["--name", &name])
            .args(kubelet_server::container_labels(
                &self.node, pod, uid, container, attempt,
            ));
        cmd.args(["--entrypoint", "/bin/busybox", IMAGE, "sh", "-c", script]);
        sh(&mut cmd);
    }

    /// Waits until the container has exited.
    #[expect(
        clippy::unused_self,
        reason = "one of the cluster handle's steps, like its siblings"
    )]
    fn wait_exited(&self, pod: &str, uid: &str, container: &str, attempt: u32) {
        let name = labels::container_name(container, pod, "default", uid, attempt);
        sh(Command::new("docker").args(["wait", &name]));
    }

    fn kubectl(&self) -> Client {
        Client {
            program: PathBuf::from(KUBECTL),
            kubeconfig: self.api.kubeconfig.clone(),
            home: self.dir.path().to_path_buf(),
        }
    }

    fn kctl(&self) -> Client {
        Client {
            program: bin("kctl"),
            kubeconfig: self.api.kubeconfig.clone(),
            home: self.dir.path().to_path_buf(),
        }
    }

    /// curl against the kubelet server with optional client certificate and key files.
    fn curl_kubelet(&self, cert: Option<(&Path, &Path)>, path: &str) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-k", "--max-time", "20", "-w", "\n%{http_code}"]);
        if let Some((crt, key)) = cert {
            cmd.arg("--cert").arg(crt).arg("--key").arg(key);
        }
        cmd.arg(self.kubelet.url(path));
        cmd.output().expect("run curl")
    }
}

/// kubectl or kctl with the test cluster's kubeconfig.
struct Client {
    program: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Client {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // kubectl caches discovery under $HOME/.kube; nothing from the user's own.
            .env("HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs to completion with `input` on stdin (if any), failing the test if it hangs.
    fn run_with(&self, args: &[&str], input: Option<&[u8]>) -> Run {
        let mut cmd = self.command(args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn client");
        // Feed and drain concurrently: a full pipe must not stall the client.
        let writer = input.map(|data| {
            let mut stdin = child.stdin.take().expect("piped stdin");
            let data = data.to_vec();
            // Dropping `stdin` at the end closes the pipe: EOF for the remote command.
            thread::spawn(move || stdin.write_all(&data))
        });
        let drain = |r: Option<Box<dyn Read + Send>>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let code = wait_with_deadline(&mut child, HANG);
        if let Some(w) = writer {
            let _ = w.join();
        }
        let run = Run {
            code,
            stdout: String::from_utf8_lossy(&out.join().expect("stdout")).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().expect("stderr")).into_owned(),
        };
        eprintln!(
            "$ {} {}\n[exit {:?}]\n{}{}",
            self.program.display(),
            args.join(" "),
            run.code,
            truncated(&run.stdout),
            run.stderr
        );
        run
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "{args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// Starts a long-running command whose stdout lines are collected; killed on drop.
    fn stream(&self, args: &[&str]) -> Streaming {
        let mut child = self.command(args).spawn().expect("spawn client");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Streaming {
            child,
            lines,
            reader: Some(reader),
        }
    }
}

/// The exit code, killing the process (and failing the test) if it runs past `deadline`.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client hung for {deadline:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Long outputs shortened for the test log.
fn truncated(s: &str) -> String {
    if s.len() <= 2000 {
        return s.to_string();
    }
    let cut = (0..=2000)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}... ({} bytes)\n", &s[..cut], s.len())
}

struct Streaming {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The stdout reader; joined once the client exits, so `lines` then holds all its output
    /// (on a loaded machine the reader can lag behind the exit).
    reader: Option<thread::JoinHandle<()>>,
}

impl Streaming {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The highest `tick N` seen so far.
    fn last_tick(&self) -> u64 {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Waits for the process to exit by itself; its exit code.
    fn wait(&mut self, deadline: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if let Some(reader) = self.reader.take() {
                    reader.join().expect("stdout reader");
                }
                return status.code();
            }
            assert!(
                started.elapsed() < deadline,
                "still running after {deadline:?}; lines: {:?}",
                self.lines()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-f` delivers lines while the container writes them (not at the end).
fn follows(client: &Client, pod: &str) {
    let f = client.stream(&["logs", "-f", pod]);
    eventually("the followed log shows ticks", || f.last_tick() >= 1);
    let seen = f.last_tick();
    eventually("the followed log shows new ticks", || {
        f.last_tick() >= seen + 3
    });
    let lines = f.lines();
    assert_eq!(lines[0], "first line", "{lines:?}");
}

#[test]
fn logs_through_kubectl_and_kctl() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let uid = c.pod("web", Some(&c.node), &["main"]);
    // Attempt 0 crashed; attempt 1 is the current container.
    c.container("web", &uid, "main", 0, "echo attempt zero; exit 1");
    c.wait_exited("web", &uid, "main", 0);
    c.container("web", &uid, "main", 1, TICKER);
    // A container that stops by itself: a followed log ends with it.
    let short_uid = c.pod("short", Some(&c.node), &["main"]);
    c.container("short", &short_uid, "main", 0, "echo a; sleep 1; echo b");

    for client in [c.kubectl(), c.kctl()] {
        eventually("ticks in the log", || {
            client.run(&["logs", "web"]).stdout.contains("tick 2")
        });
        // stdout and stderr, interleaved as Docker captured them (two pipes: the order
        // across them is not fixed).
        let all = client.ok(&["logs", "web"]);
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines[0], "first line", "{all}");
        assert!(lines[1..4].contains(&"to stderr"), "{all}");

        let tail = client.ok(&["logs", "web", "-c", "main", "--tail=1"]);
        assert_eq!(tail.lines().count(), 1, "{tail}");
        assert!(tail.starts_with("tick "), "{tail}");

        let stamped = client.ok(&["logs", "web", "--timestamps", "--tail=2"]);
        for line in stamped.lines() {
            let (ts, rest) = line.split_once(' ').expect("timestamp and text");
            ts.parse::<jiff::Timestamp>()
                .unwrap_or_else(|e| panic!("{ts:?} in {line:?}: {e}"));
            assert!(rest.starts_with("tick "), "{line}");
        }

        assert_eq!(client.ok(&["logs", "web", "--previous"]), "attempt zero\n");
        assert_eq!(
            client.ok(&["logs", "web", "-p", "-c", "main"]),
            "attempt zero\n"
        );

        follows(&client, "web");

        let mut short = client.stream(&["logs", "-f", "short"]);
        assert_eq!(
            short.wait(Duration::from_secs(20)),
            Some(0),
            "ends with the container"
        );
        assert_eq!(short.lines(), ["a", "b"]);

        let r = client.run(&["logs", "short", "--previous"]);
        assert_eq!(r.code, Some(1));
        assert!(
            r.stderr.contains(
                "(BadRequest): previous terminated container \"main\" in pod \"short\" not found"
            ),
            "{}",
            r.stderr
        );
    }
    // kubectl-only flags go through unchanged.
    assert_eq!(c.kubectl().ok(&["logs", "web", "--limit-bytes=5"]), "first");
    assert!(
        c.kubectl()
            .ok(&["logs", "web", "--since=1h"])
            .starts_with("first line\n")
    );
}

#[test]
fn exec_through_kubectl_and_kctl() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let uid = c.pod("web", Some(&c.node), &["main"]);
    c.container("web", &uid, "main", 0, TICKER);
    let bb = "/bin/busybox";

    for client in [c.kubectl(), c.kctl()] {
        eventually("the container runs", || {
            client.run(&["exec", "web", "--", bb, "true"]).code == Some(0)
        });
        assert_eq!(client.ok(&["exec", "web", "--", bb, "echo", "hi"]), "hi\n");
        assert_eq!(
            client.ok(&[
                "exec",
                "web",
                "-c",
                "main",
                "--",
                bb,
                "sh",
                "-c",
                "echo $((6*7))"
            ]),
            "42\n"
        );

        let r = client.run(&[
            "exec",
            "web",
            "--",
            bb,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        assert_eq!(r.code, Some(3), "the command's exit code: {}", r.stderr);
        assert_eq!(r.stdout, "out\n");
        assert!(r.stderr.contains("err\n"), "{}", r.stderr);
        assert!(
            r.stderr.contains("command terminated with exit code 3"),
            "{}",
            r.stderr
        );

        // stdin to the command, closed at our EOF (cat ends).
        let input = b"piped input\nsecond line\n";
        let r = client.run_with(&["exec", "-i", "web", "--", bb, "cat"], Some(input));
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(r.stdout.as_bytes(), input);
        let r = client.run_with(
            &["exec", "-i", "web", "--", bb, "wc", "-c"],
            Some(&vec![b'x'; 100_000]),
        );
        assert_eq!(r.stdout.trim(), "100000", "{}", r.stderr);

        // -t with input that is no terminal: no terminal, as kubectl decides.
        let r = client.run_with(&["exec", "-it", "web", "--", bb, "tty"], Some(b""));
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert_eq!(r.stdout, "not a tty\n");
        assert!(
            r.stderr.contains(
                "Unable to use a TTY - input is not a terminal or the right kind of file"
            ),
            "{}",
            r.stderr
        );

        // Larger output arrives whole, before the status.
        let r = client.run(&["exec", "web", "--", bb, "sh", "-c", "seq 1 20000"]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(r.stdout.lines().count(), 20000);
        assert_eq!(r.stdout.lines().last(), Some("20000"));

        // A command that cannot start: the runtime's complaint and exit code 126 (as with
        // runc under Kubernetes), not a hang.
        let r = client.run(&["exec", "web", "--", "/no/such/program"]);
        assert_eq!(r.code, Some(126));
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(said.contains("\"/no/such/program\": stat"), "{said}");
    }
}

/// kube-rs's own exec: a terminal session sized over the resize channel.
#[test]
fn exec_with_a_terminal_through_kube_rs() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let uid = c.pod("web", Some(&c.node), &["main"]);
    c.container("web", &uid, "main", 0, TICKER);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kubeconfig = c.api.kubeconfig.clone();
    let output = rt.block_on(async move {
        use futures::SinkExt as _;
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, AttachParams, TerminalSize};
        use tokio::io::AsyncReadExt as _;

        let pods: Api<Pod> =
            Api::default_namespaced(kproxy_tests::control::kube_client(&kubeconfig).await);
        let script = "sleep 1; tty; stty size";
        let mut attached = None;
        for _ in 0..100 {
            match pods
                .exec(
                    "web",
                    ["/bin/busybox", "sh", "-c", script],
                    &AttachParams::interactive_tty(),
                )
                .await
            {
                Ok(p) => {
                    attached = Some(p);
                    break;
                }
                Err(e) => {
                    eprintln!("exec not ready: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let mut p = attached.expect("exec started");
        p.terminal_size()
            .expect("tty")
            .send(TerminalSize {
                width: 100,
                height: 40,
            })
            .await
            .unwrap();
        let mut out = String::new();
        p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
        let status = p.take_status().unwrap().await;
        (out, status)
    });
    let (out, status) = output;
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("40 100"), "{out:?}");
    assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
}

#[test]
fn errors_name_the_problem() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let k = c.kubectl();
    let uid = c.pod("web", Some(&c.node), &["main"]);
    c.container("web", &uid, "main", 0, TICKER);
    let two = c.pod("two", Some(&c.node), &["a", "b"]);
    c.container("two", &two, "a", 0, TICKER);
    c.pod("floating", None, &["main"]);
    let ghost = unique("kpt-ghost");
    c.node_object(&ghost, &json!({"addresses": []}));
    c.pod("haunted", Some(&ghost), &["main"]);
    c.pod("idle", Some(&c.node), &["main"]);
    let waiting = c.pod("waiting", Some(&c.node), &["main"]);
    c.created_container("waiting", &waiting, "main", 0);
    let stopped = c.pod("stopped", Some(&c.node), &["main"]);
    c.container("stopped", &stopped, "main", 0, "exit 0");
    c.wait_exited("stopped", &stopped, "main", 0);

    let status = |path: &str| {
        let r = c.http.get(path);
        (
            r.code,
            r.json()["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(
        status("/api/v1/namespaces/default/pods/two/log"),
        (
            400,
            "a container name must be specified for pod two, choose one of: [a b]".into()
        )
    );
    assert_eq!(
        status("/api/v1/namespaces/default/pods/two/exec?command=ls&stdout=true"),
        (
            400,
            "a container name must be specified for pod two, choose one of: [a b]".into()
        )
    );
    assert_eq!(
        status("/api/v1/namespaces/default/pods/web/log?container=zz"),
        (400, "container zz is not valid for pod web".into())
    );
    assert_eq!(
        status("/api/v1/namespaces/default/pods/nope/log"),
        (404, "pods \"nope\" not found".into())
    );
    assert_eq!(
        status("/api/v1/namespaces/default/pods/floating/log"),
        (400, "pod floating does not have a host assigned".into())
    );
    let (code, msg) = status("/api/v1/namespaces/default/pods/haunted/log");
    assert_eq!(code, 503, "{msg}");
    assert!(
        msg.contains(&format!("node \"{ghost}\" reports no InternalIP")),
        "{msg}"
    );
    // The kubelet's own errors keep their code.
    let (code, msg) = status("/api/v1/namespaces/default/pods/idle/log");
    assert_eq!(
        (code, msg.as_str()),
        (404, "container \"main\" in pod \"idle\" not found")
    );
    assert_eq!(
        status("/api/v1/namespaces/default/pods/waiting/log"),
        (
            400,
            "container \"main\" in pod \"waiting\" is waiting to start: ContainerCreating".into()
        )
    );
    let (code, msg) = status("/api/v1/namespaces/default/pods/web/log?tailLines=-3");
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("tailLines"), "{msg}");
    // A plain request for exec (no upgrade) is refused with the reason.
    let (code, msg) = status("/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true");
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("WebSocket"), "{msg}");
    let (code, msg) = status("/api/v1/namespaces/default/pods/stopped/exec?command=ls&stdout=true");
    assert_eq!(
        (code, msg.as_str()),
        (400, "container \"main\" in pod \"stopped\" is not running")
    );
    // Nodes may read pods but not their logs.
    let node_http = c.http.with_token(Some(&c.api.node_token(&c.node)));
    let r = node_http.get("/api/v1/namespaces/default/pods/web/log");
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(
        node_http.get("/api/v1/namespaces/default/pods/web").code,
        200
    );

    // The same through kubectl: one clear line each.
    let r = k.run(&["logs", "nope"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("pods \"nope\" not found"), "{}", r.stderr);
    let r = k.run(&["exec", "nope", "--", "ls"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("pods \"nope\" not found"), "{}", r.stderr);
    let r = k.run(&["logs", "haunted"]);
    assert!(r.stderr.contains("(ServiceUnavailable)"), "{}", r.stderr);
    let r = k.run(&["exec", "haunted", "--", "ls"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("reports no InternalIP"), "{}", r.stderr);
    let r = k.run(&["exec", "stopped", "--", "ls"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("is not running"), "{}", r.stderr);
    let r = c.kctl().run(&["exec", "web", "-c", "zz", "--", "ls"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "Error from server (BadRequest): container zz is not valid for pod web\n"
    );
    let r = c.kctl().run(&["logs", "floating"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("error: no log for container \"main\" of pod \"floating\""),
        "{}",
        r.stderr
    );
}

#[test]
fn kubelet_server_requires_the_api_servers_client_certificate() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let uid = c.pod("web", Some(&c.node), &["main"]);
    c.container("web", &uid, "main", 0, "echo hello; sleep 3600");
    let pki = c.api.data_dir.join("pki");
    let ours = (
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    );
    let ours = Some((ours.0.as_path(), ours.1.as_path()));
    let body_and_code = |out: &Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or_default();
        (body.to_string(), code.to_string())
    };

    let path = "/containerLogs/default/web/main";
    eventually("the log through the kubelet server", || {
        body_and_code(&c.curl_kubelet(ours, path)) == ("hello\n".into(), "200".into())
    });
    // No client certificate, or one the cluster CA did not sign (the kubelet's own
    // self-signed one): the handshake is refused, no HTTP answer at all.
    let none = c.curl_kubelet(None, path);
    assert!(!none.status.success(), "{none:?}");
    let dir = c.kubelet.dir.path().join("pki");
    let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    let foreign = c.curl_kubelet(Some((&crt, &key)), path);
    assert!(!foreign.status.success(), "{foreign:?}");

    // The kubelet's answers for bad requests, with the right certificate.
    for (path, code, needle) in [
        (
            "/containerLogs/default/web/main?follow=maybe",
            "400",
            "follow",
        ),
        (
            "/containerLogs/default/web/nope",
            "404",
            "container \"nope\" in pod \"web\" not found",
        ),
        (
            "/containerLogs/default/web/main?previous=true",
            "400",
            "previous terminated container",
        ),
        (
            "/exec/default/web/main?stdout=true",
            "400",
            "missing command",
        ),
        (
            "/exec/default/web/nope?command=ls&stdout=true",
            "404",
            "not found",
        ),
        (
            "/exec/default/web/main?command=ls&stdout=true",
            "400",
            "SPDY is not supported",
        ),
        ("/metrics", "404", ""),
    ] {
        let (body, got) = body_and_code(&c.curl_kubelet(ours, path));
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
    }
    // Another node's containers are not this kubelet's.
    let other = c.pod("elsewhere", Some("some-other-node"), &["main"]);
    let name = labels::container_name("main", "elsewhere", "default", &other, 0);
    c.containers.add(&name);
    sh(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{}=some-other-node", labels::NODE),
        "--label",
        &format!("{}={other}", labels::POD_UID),
        "--label",
        &format!("{}=elsewhere", labels::POD_NAME),
        "--label",
        &format!("{}=default", labels::POD_NAMESPACE),
        "--label",
        &format!("{}={}", labels::KIND, labels::KIND_CONTAINER),
        "--label",
        &format!("{}=main", labels::CONTAINER_NAME),
        "--label",
        &format!("{}=0", labels::ATTEMPT),
        "--entrypoint",
        "/bin/busybox",
        IMAGE,
        "sh",
        "-c",
        "echo secret; sleep 3600",
    ]));
    let (body, code) =
        body_and_code(&c.curl_kubelet(ours, "/containerLogs/default/elsewhere/main"));
    assert_eq!(code, "404", "{body}");
}
