//! Privileged: the kubelet under hostile pods and a failing host (issue 14, items 5 and 11).
//! A subPath symlink may not lead out of its volume (the CVE-2017-1002101 class), runAsNonRoot
//! is enforced against the image's user, hostPath types are checked; the Node's Ready,
//! MemoryPressure and DiskPressure conditions follow Docker and the host's figures, and
//! container logs are rotated. Docker is made to stop answering through a unix-socket proxy
//! in front of the real dockerd, so no other test loses its Docker.
#![forbid(unsafe_code)]

use std::{
    io::{Read as _, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    eventually,
    kubelet::{Kubelet, consistently, container_status, docker_exec, docker_id, inspect, is_ready},
    privileged,
};
use serde_json::{Value, json};

const NS: &str = "default";
const HTTPD: &str = "kproxy/httpd:1";

fn shell(name: &str, script: &str) -> Value {
    json!({"name": name, "image": HTTPD, "command": ["/bin/busybox", "sh", "-c", script]})
}

fn api_server() -> (TempDir, ApiServer) {
    let dir = TempDir::new("kpt-klh-api");
    let api = ApiServer::start(dir.path(), &[]);
    (dir, api)
}

/// `state.waiting` (reason, message) of a container.
fn waiting(pod: &Pod, container: &str) -> Option<(String, String)> {
    let w = container_status(pod, container)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

fn running(pod: &Pod, container: &str) -> bool {
    container_status(pod, container)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// Waits until `container` of `name` waits with CreateContainerConfigError; its message.
fn config_error(k: &Kubelet, name: &str, container: &str) -> String {
    let p = k.wait_pod(NS, name, "CreateContainerConfigError", |p| {
        waiting(p, container).is_some_and(|(r, _)| r == "CreateContainerConfigError")
    });
    waiting(&p, container).expect("waiting").1
}

fn container_id(pod: &Pod, container: &str) -> String {
    docker_id(container_status(pod, container).expect("status"))
        .expect("container id")
        .to_string()
}

#[test]
fn sub_path_symlinks_may_not_leave_the_volume() {
    if !privileged("sub_path_symlinks_may_not_leave_the_volume") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    // The init container plants the links inside the shared volume before the apps start.
    let mut init = shell(
        "plant",
        "cd /vol && /bin/busybox mkdir inner && echo inside > inner/note && \
         /bin/busybox ln -s / evil && /bin/busybox ln -s inner good && \
         /bin/busybox ln -s ../../../../../../../.. dots",
    );
    init["volumeMounts"] = json!([{"name": "v", "mountPath": "/vol"}]);
    let app = |name: &str, sub: &str| {
        let mut c = shell(name, "exec /bin/busybox sleep 3600");
        // Read-only: without the fix this is the host's root.
        c["volumeMounts"] =
            json!([{"name": "v", "mountPath": "/mnt", "subPath": sub, "readOnly": true}]);
        c
    };
    k.create_pod(
        NS,
        "escape",
        json!({"initContainers": [init],
               "containers": [app("evil", "evil"), app("dots", "dots"),
                              app("good", "good"), app("fresh", "made/here")],
               "volumes": [{"name": "v", "emptyDir": {}}]}),
    );
    for c in ["evil", "dots"] {
        let message = config_error(&k, "escape", c);
        assert!(
            message.contains(&format!("subPath \"{c}\"")),
            "{c}: {message}"
        );
    }
    let p = k.wait_pod(NS, "escape", "good and fresh run", |p| {
        running(p, "good") && running(p, "fresh")
    });
    let good = container_id(&p, "good");
    assert_eq!(
        docker_exec(&good, &["/bin/busybox", "cat", "/mnt/note"]).trim(),
        "inside",
        "a link inside the volume is followed"
    );
    let pod_uid = p.metadata.uid.clone().expect("uid");
    let made = k
        .state_dir()
        .join("pods")
        .join(&pod_uid)
        .join("volumes/v/made/here");
    assert!(made.is_dir(), "a missing subPath is created in the volume");
    // The refusals are not retried into success: still waiting a while later.
    thread::sleep(Duration::from_secs(2));
    let p = k.get_pod(NS, "escape").expect("pod");
    assert!(!running(&p, "evil"), "the escaping container runs");
    k.delete_pod(NS, "escape", Some(0));
    k.wait_gone(NS, "escape", Duration::from_secs(30));
    eventually("the pod directory is removed", || {
        !k.state_dir().join("pods").join(&pod_uid).exists()
    });
}

#[test]
fn run_as_non_root_is_enforced_against_the_image_user() {
    if !privileged("run_as_non_root_is_enforced_against_the_image_user") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let with = |sc: Value| {
        let mut c = shell("app", "exec /bin/busybox sleep 3600");
        c["securityContext"] = sc;
        c
    };
    k.create_pod(
        NS,
        "image-root",
        json!({"containers": [with(json!({"runAsNonRoot": true}))]}),
    );
    k.create_pod(
        NS,
        "explicit-root",
        json!({"containers": [with(json!({"runAsNonRoot": true, "runAsUser": 0}))]}),
    );
    // The pod's securityContext counts as well.
    k.create_pod(
        NS,
        "pod-level",
        json!({"securityContext": {"runAsNonRoot": true},
               "containers": [with(json!({}))]}),
    );
    k.create_pod(
        NS,
        "non-root",
        json!({"securityContext": {"runAsNonRoot": true},
               "containers": [with(json!({"runAsUser": 1000}))]}),
    );
    let m = config_error(&k, "image-root", "app");
    assert!(
        m.contains("container has runAsNonRoot and image will run as root"),
        "{m}"
    );
    let m = config_error(&k, "explicit-root", "app");
    assert!(m.contains("runAsUser breaks non-root policy"), "{m}");
    let m = config_error(&k, "pod-level", "app");
    assert!(m.contains("image will run as root"), "{m}");
    let p = k.wait_pod(NS, "non-root", "Ready", is_ready);
    let id = container_id(&p, "app");
    assert_eq!(
        docker_exec(&id, &["/bin/busybox", "id", "-u"]).trim(),
        "1000"
    );
    for name in ["image-root", "explicit-root", "pod-level"] {
        let p = k.get_pod(NS, name).expect("pod");
        assert!(!running(&p, "app"), "{name} runs");
    }
}

#[test]
fn host_path_types_are_checked() {
    if !privileged("host_path_types_are_checked") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let host = TempDir::new("kpt-klh-host");
    let file = host.path().join("file");
    std::fs::write(&file, "a file\n").expect("write");
    let dir = host.path().join("dir");
    std::fs::create_dir(&dir).expect("mkdir");
    let pod = |name: &str, path: &Path, kind: &str| {
        let mut c = shell("app", "exec /bin/busybox sleep 3600");
        c["volumeMounts"] = json!([{"name": "h", "mountPath": "/h", "readOnly": true}]);
        k.create_pod(
            NS,
            name,
            json!({"containers": [c],
                   "volumes": [{"name": "h", "hostPath": {"path": path, "type": kind}}]}),
        );
    };
    pod("dir-on-file", &file, "Directory");
    pod("file-on-dir", &dir, "File");
    pod("dir-missing", &host.path().join("missing"), "Directory");
    pod("socket-on-file", &file, "Socket");
    pod("block-on-char", Path::new("/dev/null"), "BlockDevice");
    pod("char", Path::new("/dev/null"), "CharDevice");
    pod(
        "dir-create",
        &host.path().join("new/dir"),
        "DirectoryOrCreate",
    );
    pod("file-create", &host.path().join("new-file"), "FileOrCreate");
    pod("file", &file, "File");
    for (name, expected) in [
        ("dir-on-file", "is not a directory"),
        ("file-on-dir", "is not a file"),
        ("dir-missing", "is not a directory"),
        ("socket-on-file", "is not a socket file"),
        ("block-on-char", "is not a block device"),
    ] {
        let m = config_error(&k, name, "app");
        assert!(
            m.contains("hostPath type check failed") && m.contains(expected),
            "{name}: {m}"
        );
    }
    for name in ["char", "dir-create", "file-create", "file"] {
        k.wait_pod(NS, name, "Ready", is_ready);
    }
    assert!(host.path().join("new/dir").is_dir());
    assert!(host.path().join("new-file").is_file());

    // Paths Docker would misread, or that climb, are refused at the API.
    for bad in ["relative/path", "/a/../../etc", "/a:/b"] {
        let mut c = shell("app", "true");
        c["volumeMounts"] = json!([{"name": "h", "mountPath": "/h"}]);
        let m = k.manifest(
            "bad-path",
            json!({"containers": [c], "volumes": [{"name": "h", "hostPath": {"path": bad}}]}),
        );
        match k.try_create(NS, &m) {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{bad}: {e:?}"),
            other => panic!("hostPath {bad:?} was accepted: {other:?}"),
        }
    }
}

/// A unix socket in front of dockerd that can stop answering: while paused it accepts
/// connections and never replies (a hung daemon), and drops those it was forwarding.
struct DockerProxy {
    path: PathBuf,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    _dir: TempDir,
}

impl DockerProxy {
    fn start() -> Self {
        let dir = TempDir::new("kpt-klh-sock");
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).expect("bind the proxy socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (p, s, c) = (paused.clone(), stop.clone(), conns.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                client.set_nonblocking(false).expect("blocking");
                c.lock().unwrap().push(client.try_clone().expect("clone"));
                if p.load(Ordering::SeqCst) {
                    continue; // held open, never answered
                }
                let Ok(upstream) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                c.lock().unwrap().push(upstream.try_clone().expect("clone"));
                pipe(
                    client.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                );
                pipe(upstream, client);
            }
        });
        Self {
            path,
            paused,
            stop,
            conns,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Docker stops answering: connections in flight are cut, new ones hang.
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        // The hung connections end, so clients reconnect to a forwarding proxy.
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

fn node_condition(k: &Kubelet, kind: &str) -> Option<NodeCondition> {
    let nodes: kube::Api<Node> = kube::Api::all(k.client());
    let node = k.block_on(nodes.get(&k.node)).ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == kind)
}

fn wait_condition(k: &Kubelet, kind: &str, status: &str) -> NodeCondition {
    let mut last = None;
    eventually(&format!("{kind}={status}"), || {
        last = node_condition(k, kind);
        last.as_ref().is_some_and(|c| c.status == status)
    });
    last.expect("condition")
}

#[test]
fn node_turns_not_ready_while_docker_does_not_answer() {
    if !privileged("node_turns_not_ready_while_docker_does_not_answer") {
        return;
    }
    let (_dir, api) = api_server();
    let proxy = DockerProxy::start();
    let url = proxy.url();
    let k = Kubelet::start(&api, &["--docker-host", &url, "--heartbeat", "1"]);
    wait_condition(&k, "Ready", "True");
    proxy.pause();
    let c = wait_condition(&k, "Ready", "False");
    assert_eq!(c.reason.as_deref(), Some("KubeletNotReady"), "{c:?}");
    assert!(
        c.message
            .as_deref()
            .is_some_and(|m| m.contains("container runtime is down")),
        "{c:?}"
    );
    proxy.resume();
    let c = wait_condition(&k, "Ready", "True");
    assert_eq!(c.reason.as_deref(), Some("KubeletReady"), "{c:?}");
}

#[test]
fn pressure_conditions_follow_the_eviction_thresholds() {
    if !privileged("pressure_conditions_follow_the_eviction_thresholds") {
        return;
    }
    let (_dir, api) = api_server();
    // Thresholds no host meets: more memory than exists, all of the disk free.
    let pressed = Kubelet::start(
        &api,
        &[
            "--heartbeat",
            "1",
            "--eviction-hard",
            "memory.available<1000Ti,nodefs.available<100%",
        ],
    );
    let m = wait_condition(&pressed, "MemoryPressure", "True");
    assert_eq!(m.reason.as_deref(), Some("KubeletHasInsufficientMemory"));
    let d = wait_condition(&pressed, "DiskPressure", "True");
    assert_eq!(d.reason.as_deref(), Some("KubeletHasDiskPressure"));
    // Ready stays: pressure is reported, not fatal.
    assert_eq!(wait_condition(&pressed, "Ready", "True").status, "True");
    // Thresholds any host meets.
    let relaxed = Kubelet::start(
        &api,
        &[
            "--heartbeat",
            "1",
            "--eviction-hard",
            "memory.available<1Ki,nodefs.available<0%,imagefs.available<0%",
        ],
    );
    wait_condition(&relaxed, "MemoryPressure", "False");
    wait_condition(&relaxed, "DiskPressure", "False");
}

#[test]
fn container_logs_are_rotated() {
    if !privileged("container_logs_are_rotated") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(
        &api,
        &[
            "--container-log-max-size",
            "16Ki",
            "--container-log-max-files",
            "3",
        ],
    );
    // 3,000 lines of about 60 bytes (with json-file's framing, about 300 KiB on disk).
    let script = "i=0; while [ $i -lt 3000 ]; do \
                  printf 'line-%05d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\n' $i; \
                  i=$((i+1)); done; echo done-writing; exec /bin/busybox sleep 3600";
    k.create_pod(NS, "chatty", json!({"containers": [shell("app", script)]}));
    let p = k.wait_pod(NS, "chatty", "Ready", is_ready);
    let id = container_id(&p, "app");
    let info = inspect(&id);
    let lc = &info["HostConfig"]["LogConfig"];
    assert_eq!(lc["Type"], json!("json-file"), "{lc}");
    assert_eq!(lc["Config"]["max-size"], json!("16384"), "{lc}");
    assert_eq!(lc["Config"]["max-file"], json!("3"), "{lc}");
    let log_path = PathBuf::from(info["LogPath"].as_str().expect("LogPath"));
    let dir = log_path.parent().expect("log dir").to_path_buf();
    let name = log_path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let pods = k.pods(NS);
    let mut logs = String::new();
    eventually("the writer finished (logs through the kubelet)", || {
        logs = k
            .block_on(pods.logs("chatty", &kube::api::LogParams::default()))
            .unwrap_or_default();
        logs.contains("done-writing")
    });
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("log dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| {
            let len = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    assert!(files.len() <= 3, "{files:?}");
    assert!(total <= 3 * 17 * 1024, "{total} bytes on disk: {files:?}");
    // The logs read across the rotated files: more lines than the current file holds, the
    // oldest rotated away.
    let current = std::fs::read_to_string(&log_path)
        .expect("current log")
        .lines()
        .count();
    let lines = logs.lines().count();
    assert!(lines > current, "{lines} lines read, {current} in {name}");
    assert!(
        !logs.contains("line-00000 "),
        "the oldest lines were rotated away"
    );
    assert!(logs.contains("line-02999 "), "{logs}");
}

/// Mount points at or below `dir` (mountinfo's 5th field; test paths need no unescaping).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Declared after the [`Kubelet`]: on a failed test, unmounts what is left under its state
/// before its directory is removed recursively (which would go through a hostPath mount).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let mut left = mounts_under(&self.0);
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in left {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&m)
                .status();
        }
    }
}

fn pod_dir(k: &Kubelet, uid: &str) -> PathBuf {
    k.state_dir().join("pods").join(uid)
}

fn mount_of<'a>(info: &'a Value, destination: &str) -> &'a Value {
    info["Mounts"]
        .as_array()
        .expect("Mounts")
        .iter()
        .find(|m| m["Destination"] == json!(destination))
        .unwrap_or_else(|| panic!("no mount at {destination}: {}", info["Mounts"]))
}

fn dev_ino(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.dev(), m.ino())
}

/// A container that sleeps with `mounts`.
fn sleeper(name: &str, mounts: Value) -> Value {
    let mut c = shell(name, "exec /bin/busybox sleep 3600");
    c["volumeMounts"] = mounts;
    c
}

#[test]
fn sub_paths_reach_docker_as_kubelet_owned_bind_mounts() {
    if !privileged("sub_paths_reach_docker_as_kubelet_owned_bind_mounts") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let _unmount = Unmount(k.state_dir());
    let mut init = shell(
        "plant",
        "cd /vol && /bin/busybox mkdir inner && echo inside > inner/note && \
         /bin/busybox ln -s inner link",
    );
    init["volumeMounts"] = json!([{"name": "v", "mountPath": "/vol"}]);
    let app = sleeper(
        "app",
        json!([{"name": "v", "mountPath": "/vol"},
               {"name": "v", "mountPath": "/mnt", "subPath": "link"},
               {"name": "v", "mountPath": "/note", "subPath": "inner/note", "readOnly": true}]),
    );
    k.create_pod(
        NS,
        "pinned",
        json!({"initContainers": [init], "containers": [app],
               "volumes": [{"name": "v", "emptyDir": {}}]}),
    );
    let p = k.wait_pod(NS, "pinned", "app runs", |p| running(p, "app"));
    let uid = p.metadata.uid.clone().expect("uid");
    let id = container_id(&p, "app");
    let dir = pod_dir(&k, &uid);
    let info = inspect(&id);
    // Docker binds the kubelet's targets, not a path in the volume it would resolve again.
    let targets = dir.join("volume-subpaths/v/app");
    let mnt = mount_of(&info, "/mnt");
    assert_eq!(mnt["Source"], json!(targets.join("1")), "{mnt}");
    let note = mount_of(&info, "/note");
    assert_eq!(note["Source"], json!(targets.join("2")), "{note}");
    assert_eq!(note["RW"], json!(false), "{note}");
    let mounted = mounts_under(&dir);
    for t in ["1", "2"] {
        assert!(
            mounted.contains(&targets.join(t)),
            "{t} is not a mount point: {mounted:?}"
        );
    }
    // Each is a bind mount of the resolved file: the link's target, the note itself.
    let volume = dir.join("volumes/v");
    assert_eq!(dev_ino(&targets.join("1")), dev_ino(&volume.join("inner")));
    assert_eq!(
        dev_ino(&targets.join("2")),
        dev_ino(&volume.join("inner/note"))
    );
    assert_eq!(
        docker_exec(&id, &["/bin/busybox", "cat", "/mnt/note", "/note"]),
        "inside\ninside\n"
    );
    k.delete_pod(NS, "pinned", Some(0));
    k.wait_gone(NS, "pinned", Duration::from_secs(30));
    eventually("the pod directory is removed", || !dir.exists());
    assert_eq!(mounts_under(&k.state_dir()), Vec::<PathBuf>::new());
}

#[test]
fn host_path_sub_path_mounts_go_without_touching_the_host() {
    if !privileged("host_path_sub_path_mounts_go_without_touching_the_host") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let _unmount = Unmount(k.state_dir());
    let host = TempDir::new("kpt-klh-subhost");
    std::fs::create_dir(host.path().join("data")).expect("mkdir");
    let marker = host.path().join("data/marker");
    std::fs::write(&marker, "keep me\n").expect("write");
    let app = sleeper(
        "app",
        json!([{"name": "h", "mountPath": "/data", "subPath": "data"},
               {"name": "h", "mountPath": "/marker", "subPath": "data/marker"}]),
    );
    k.create_pod(
        NS,
        "host-sub",
        json!({"containers": [app],
               "volumes": [{"name": "h",
                            "hostPath": {"path": host.path(), "type": "Directory"}}]}),
    );
    let p = k.wait_pod(NS, "host-sub", "app runs", |p| running(p, "app"));
    let uid = p.metadata.uid.clone().expect("uid");
    let id = container_id(&p, "app");
    assert_eq!(
        docker_exec(&id, &["/bin/busybox", "cat", "/data/marker", "/marker"]),
        "keep me\nkeep me\n"
    );
    let dir = pod_dir(&k, &uid);
    assert_eq!(mounts_under(&dir).len(), 2, "{:?}", mounts_under(&dir));
    k.delete_pod(NS, "host-sub", Some(0));
    k.wait_gone(NS, "host-sub", Duration::from_secs(30));
    eventually("the pod directory is removed", || !dir.exists());
    assert_eq!(mounts_under(&k.state_dir()), Vec::<PathBuf>::new());
    assert_eq!(
        std::fs::read_to_string(&marker).expect("the host's file survives"),
        "keep me\n"
    );
}

#[test]
fn a_restarted_kubelet_unmounts_sub_paths_of_adopted_and_vanished_pods() {
    if !privileged("a_restarted_kubelet_unmounts_sub_paths_of_adopted_and_vanished_pods") {
        return;
    }
    let (_dir, api) = api_server();
    let mut k = Kubelet::start(&api, &[]);
    let unmount = Unmount(k.state_dir());
    let spec = || {
        json!({"containers": [sleeper("app", json!([{"name": "v", "mountPath": "/s", "subPath": "a/b"}]))],
               "volumes": [{"name": "v", "emptyDir": {}}]})
    };
    k.create_pod(NS, "kept", spec());
    k.create_pod(NS, "gone", spec());
    let mut uids = Vec::new();
    let mut ids = Vec::new();
    for name in ["kept", "gone"] {
        let p = k.wait_pod(NS, name, "app runs", |p| running(p, "app"));
        let uid = p.metadata.uid.clone().expect("uid");
        assert_eq!(mounts_under(&pod_dir(&k, &uid)).len(), 1, "{name}");
        ids.push(container_id(&p, "app"));
        uids.push(uid);
    }
    k.kill();
    // Gone while the kubelet is away: a grace of 0 removes it from the API at once. Its
    // containers go too, so only its directory (with the mount) is left to find.
    k.delete_pod(NS, "gone", Some(0));
    k.wait_gone(NS, "gone", Duration::from_secs(10));
    for id in k.pod_containers(&uids[1]) {
        kproxy_tests::sh(std::process::Command::new("docker").args(["rm", "-f", &id]));
    }
    k.restart();
    let gone = pod_dir(&k, &uids[1]);
    eventually(
        "the vanished pod's directory and mounts are removed",
        || !gone.exists() && k.pod_containers(&uids[1]).is_empty(),
    );
    assert_eq!(mounts_under(&gone), Vec::<PathBuf>::new());
    assert!(k.logged("removing the directory of a pod that is gone"));
    // The running pod is adopted: same container, its mount still in place.
    consistently("the kept pod runs on", Duration::from_secs(2), || {
        k.get_pod(NS, "kept").is_some_and(|p| {
            running(&p, "app")
                && container_status(&p, "app").and_then(docker_id) == Some(ids[0].as_str())
        })
    });
    let kept = pod_dir(&k, &uids[0]);
    assert_eq!(mounts_under(&kept).len(), 1);
    k.delete_pod(NS, "kept", Some(0));
    k.wait_gone(NS, "kept", Duration::from_secs(30));
    eventually("the kept pod's directory is removed", || !kept.exists());
    assert_eq!(mounts_under(&unmount.0), Vec::<PathBuf>::new());
    k.assert_running();
}
