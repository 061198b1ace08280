//! Privileged: `kubectl attach`, `kubectl run -i --rm` and `kubectl debug` with the real
//! kubectl 1.33 against the API server, the scheduler and the real kubelet with Docker.
//!
//! - attach joins a running container's own stdio: piped stdin reaches it (`stdinOnce`: the
//!   end of the input closes the container's stdin), its output comes back, kubectl exits
//!   when the container does; an attach without stdin sees the output made after it.
//! - `kubectl run -i --rm --restart=Never -- sh -c cat` echoes its stdin and deletes the pod.
//! - `kubectl debug pod/X -i --image=kproxy/busybox:1 --target=main` adds an ephemeral
//!   container in main's process namespace (its `ps` shows main's process), which runs once
//!   and is reported in `status.ephemeralContainerStatuses`; it goes with the pod.
//! - error paths with kubectl's words: a completed pod, an unknown container, a pod whose
//!   container never started, an invalid ephemeral container (422 naming the field).
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{KUBECTL, Kubectl, available};
use kproxy_tests::kubelet::{Kubelet, container_status, docker_id, inspect, phase, uid};
use kproxy_tests::{control, eventually, privileged};
use serde_json::json;

const BUSYBOX: &str = "kproxy/busybox:1";

/// API server, scheduler and kubelet, and a kubectl for them.
struct Env {
    kubelet: Kubelet,
    _sched: kproxy_tests::Daemon,
    k: Kubectl,
    _api: ApiServer,
    _dir: TempDir,
}

impl Env {
    fn start(prefix: &str) -> Self {
        let dir = TempDir::new(prefix);
        let api = ApiServer::start(dir.path(), &[]);
        let sched = control::scheduler(&api, &[]);
        let kubelet = Kubelet::start(&api, &[]);
        let k = Kubectl::new(&api.kubeconfig, dir.path());
        Self {
            kubelet,
            _sched: sched,
            k,
            _api: api,
            _dir: dir,
        }
    }

    /// Pod `name` on the node: one container `main` of busybox running `script`, with
    /// `extra` merged into the container.
    fn pod(&self, name: &str, script: &str, extra: &serde_json::Value) {
        let mut c = json!({
            "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script],
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        self.kubelet.create_pod(
            "default",
            name,
            json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [c]}),
        );
    }

    fn wait_running(&self, name: &str) {
        self.kubelet.wait_pod("default", name, "main running", |p| {
            container_status(p, "main")
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some())
        });
    }
}

/// What kubectl did: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

/// Runs kubectl with `input` piped to its stdin (then closed); kills it after `limit`.
fn kubectl_with_stdin(k: &Kubectl, args: &[&str], input: &str, limit: Duration) -> Ran {
    let mut child = Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", &k.kubeconfig)
        .env("HOME", &k.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sent = input.to_string();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(sent.as_bytes());
    });
    let started = Instant::now();
    while child.try_wait().expect("wait for kubectl").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("kubectl output");
            panic!(
                "kubectl {args:?} still running after {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    writer.join().expect("stdin writer");
    let out = child.wait_with_output().expect("kubectl output");
    let ran = Ran {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ kubectl {} <<< {input:?}\n{}{}",
        args.join(" "),
        ran.out,
        ran.err
    );
    ran
}

const LIMIT: Duration = Duration::from_mins(1);

#[test]
fn kubectl_attach_and_run_rm() {
    if !privileged("kubectl_attach_and_run_rm") || !available() {
        return;
    }
    let env = Env::start("kpt-attach");
    let k = &env.k;

    // A reader with stdin kept open for one attach (stdinOnce), as `kubectl run -i` makes.
    env.pod(
        "reader",
        "while read l; do echo \"got $l\"; done; echo bye",
        &json!({"stdin": true, "stdinOnce": true}),
    );
    env.wait_running("reader");
    let pod = env.kubelet.get_pod("default", "reader").expect("the pod");
    let id = docker_id(container_status(&pod, "main").expect("status")).expect("an id");
    let config = &inspect(id)["Config"];
    assert_eq!(
        (&config["OpenStdin"], &config["StdinOnce"], &config["Tty"]),
        (&json!(true), &json!(true), &json!(false)),
        "created with the spec's stdin, stdinOnce and tty"
    );
    let r = kubectl_with_stdin(k, &["attach", "reader", "-i"], "one\ntwo\n", LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert_eq!(r.out, "got one\ngot two\nbye\n");
    env.kubelet.wait_pod("default", "reader", "Succeeded", |p| {
        phase(p) == Some("Succeeded")
    });
    // A completed pod: kubectl's own check.
    let (ok, _, err) = k.run(&["attach", "reader"]);
    assert!(!ok);
    assert_eq!(
        err,
        "error: cannot attach a container in a completed pod; current phase is Succeeded\n"
    );

    // Without stdin, attach sees the output made after it joined, and ends with the
    // container.
    env.pod("ticker", "sleep 4; echo tick; echo tock >&2", &json!({}));
    env.wait_running("ticker");
    let (ok, out, err) = k.run(&["attach", "ticker"]);
    assert!(ok, "{err}");
    assert_eq!(out, "tick\n");
    assert!(err.contains("tock\n"), "stderr on its own stream: {err}");

    // An unknown container: kubectl says so from the pod's spec.
    env.pod("sleeper", "sleep 3600", &json!({}));
    env.wait_running("sleeper");
    let (ok, _, err) = k.run(&["attach", "sleeper", "-c", "nope"]);
    assert!(!ok);
    assert!(
        err.contains("container nope not found in pod sleeper"),
        "{err}"
    );
    // A container that never started: the kubelet's answer.
    env.kubelet.create_pod(
        "default",
        "stuck",
        json!({"containers": [{"name": "main", "image": "kproxy/absent:1", "imagePullPolicy": "Never"}]}),
    );
    env.kubelet
        .wait_pod("default", "stuck", "ErrImageNeverPull", |p| {
            container_status(p, "main")
                .and_then(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .as_deref()
                == Some("ErrImageNeverPull")
        });
    let (ok, _, err) = k.run(&["attach", "stuck"]);
    assert!(!ok);
    assert!(
        err.contains("container \"main\" in pod \"stuck\" not found"),
        "{err}"
    );

    // kubectl run -i --rm: the pod is created with stdin, attached to, echoes what it is
    // sent, and is deleted.
    let r = kubectl_with_stdin(
        k,
        &[
            "run",
            "cat-rm",
            "--image",
            BUSYBOX,
            "--image-pull-policy=Never",
            "-i",
            "--rm",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "cat",
        ],
        "hello through attach\n",
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert!(r.out.starts_with("hello through attach\n"), "{:?}", r.out);
    assert!(r.out.contains("pod \"cat-rm\" deleted"), "{:?}", r.out);
    env.kubelet
        .wait_gone("default", "cat-rm", Duration::from_secs(30));
}

/// `kubectl debug pod/web -i` with a busybox container in main's process namespace running
/// `script`.
fn debug_web(script: &str) -> [&str; 11] {
    [
        "debug",
        "pod/web",
        "-i",
        "--image",
        BUSYBOX,
        "--image-pull-policy=Never",
        "--target=main",
        "--",
        "sh",
        "-c",
        script,
    ]
}

/// Pod web's field at JSONPath `path`, as kubectl prints it.
fn web_jsonpath(k: &Kubectl, path: &str) -> String {
    k.ok(&["get", "pod", "web", "-o", &format!("jsonpath={{{path}}}")])
}

#[test]
fn kubectl_debug_adds_an_ephemeral_container() {
    if !privileged("kubectl_debug_adds_an_ephemeral_container") || !available() {
        return;
    }
    let env = Env::start("kpt-debug");
    let k = &env.k;
    env.pod("web", "exec sleep 3600", &json!({}));
    env.wait_running("web");

    // Interactive: stdin reaches the debug container; --target puts it in main's process
    // namespace, so its ps shows main's sleep.
    let r = kubectl_with_stdin(k, &debug_web("read x; ps; echo hi $x"), "there\n", LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert!(r.out.contains("sleep 3600"), "{:?}", r.out);
    assert!(r.out.contains("hi there\n"), "{:?}", r.out);
    let name = web_jsonpath(k, ".spec.ephemeralContainers[0].name");
    assert!(name.starts_with("debugger-"), "{name}");
    let mut statuses = String::new();
    eventually("the debug container reported terminated", || {
        statuses = web_jsonpath(k, ".status.ephemeralContainerStatuses");
        statuses.contains("\"terminated\"")
    });
    let st: serde_json::Value = serde_json::from_str(&statuses).expect("statuses as JSON");
    assert_eq!(st[0]["name"], json!(name));
    assert_eq!(st[0]["state"]["terminated"]["exitCode"], json!(0));
    assert_eq!(st[0]["restartCount"], json!(0));
    // Its output is in its log, and it is never restarted; the pod's own container ran on.
    let log = k.ok(&["logs", "web", "-c", &name]);
    assert!(log.contains("hi there"), "{log}");
    let pod = env.kubelet.get_pod("default", "web").expect("the pod");
    assert_eq!(phase(&pod), Some("Running"));
    assert_eq!(
        container_status(&pod, "main").map(|s| s.restart_count),
        Some(0)
    );

    // Not interactive: as with Kubernetes, attach shows what the container writes after it
    // joined (kubectl falls back to the whole log when the container is done first), so
    // what kubectl shows of the container is the end of its log, and the log has it all.
    let (ok, out, err) = k.run(&debug_web("ps; echo hi"));
    assert!(ok, "{err}");
    let shown: String = out
        .lines()
        .filter(|l| !l.starts_with("Targeting container") && !l.starts_with("Defaulting debug"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let second = web_jsonpath(k, ".spec.ephemeralContainers[1].name");
    let log = k.ok(&["logs", "web", "-c", &second]);
    assert!(log.contains("sleep 3600") && log.ends_with("hi\n"), "{log}");
    assert!(log.ends_with(&shown), "{shown:?} is not the end of {log:?}");
    let names = web_jsonpath(k, ".spec.ephemeralContainers[*].name");
    assert_eq!(names.split(' ').count(), 2, "{names}");

    // Invalid ephemeral containers: the API server's 422 names the field.
    let (ok, _, err) = k.run(&[
        "debug",
        "pod/web",
        "--image",
        BUSYBOX,
        "--target=nope",
        "--",
        "true",
    ]);
    assert!(!ok);
    assert!(
        err.contains(
            "is invalid: spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\""
        ),
        "{err}"
    );
    let (ok, _, err) = k.run(&[
        "debug", "pod/web", "--image", BUSYBOX, "-c", "main", "--", "true",
    ]);
    assert!(!ok);
    assert!(
        err.contains("spec.ephemeralContainers[2].name: Duplicate value: \"main\""),
        "{err}"
    );

    // The ephemeral containers go with the pod.
    let pod_uid = uid(&pod);
    assert_eq!(
        env.kubelet.pod_containers(&pod_uid).len(),
        4,
        "sandbox, main, 2 debuggers"
    );
    k.ok(&["delete", "pod", "web", "--wait=true"]);
    eventually("every container of the pod removed", || {
        env.kubelet.pod_containers(&pod_uid).is_empty()
    });
}

/// kubectl needs a terminal of its own for `-t`; kube-rs speaks the same protocol: an
/// attach to a container with a terminal gets its one raw stream, and terminal sizes reach
/// the container's terminal (Docker's resize).
#[test]
fn attach_to_a_terminal_through_kube_rs() {
    if !privileged("attach_to_a_terminal_through_kube_rs") {
        return;
    }
    let env = Env::start("kpt-attach-tty");
    env.pod("term", "exec sh", &json!({"stdin": true, "tty": true}));
    env.wait_running("term");
    let pods = env.kubelet.pods("default");
    let (out, status) = env.kubelet.block_on(async move {
        use futures::SinkExt as _;
        use kube::api::{AttachParams, TerminalSize};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let mut p = pods
            .attach("term", &AttachParams::interactive_tty())
            .await
            .expect("attached");
        p.terminal_size()
            .expect("a terminal")
            .send(TerminalSize {
                width: 100,
                height: 40,
            })
            .await
            .unwrap();
        let mut stdin = p.stdin().expect("stdin");
        stdin.write_all(b"tty; stty size; exit\n").await.unwrap();
        let mut out = String::new();
        p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
        let status = p.take_status().unwrap().await;
        (out, status)
    });
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("40 100"), "{out:?}");
    assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
    env.kubelet.wait_pod("default", "term", "Succeeded", |p| {
        phase(p) == Some("Succeeded")
    });
}
