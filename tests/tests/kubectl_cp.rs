//! `kubectl cp` both ways, end to end: kubectl runs `tar` in the container over pods/exec
//! (stdin for a copy in, stdout for a copy out), through a real API server and the kubelet's
//! exec server (kproxy-kubelet-server, in-process on a loopback port) into Docker containers
//! started here with the labels the kubelet gives a pod's containers (as in logs_exec.rs).
//! Files are compared byte for byte; the error paths give kubectl's messages.
//!
//! Every container is removed when its test ends, also on failure.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kproxy_pod_labels as labels;
use kproxy_tests::apiserver::TempDir;
use kproxy_tests::kubelet_server::{self, NodeCluster};
use kproxy_tests::sh;
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";
/// Static busybox with applet links in /bin (sh, tar, ...).
const IMAGE: &str = "kproxy/busybox:1";
/// A single static binary: no tar, no shell.
const NO_TAR_IMAGE: &str = "kproxy/kecho:1";
/// A copy still running after this is hung, not slow.
const HANG: Duration = Duration::from_mins(2);

fn ready() -> bool {
    kubelet_server::ready("kubectl_cp", &[IMAGE, NO_TAR_IMAGE])
}

kproxy_tests::node_cluster!(
    /// One test's cluster: API server, one node served by the in-process kubelet server.
    Cluster
);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts kubectl exited with `code`, saying each of `said` on stderr.
    fn fails(&self, code: i32, said: &[&str]) {
        assert_eq!(self.code, Some(code), "{}", self.stderr);
        for s in said {
            assert!(self.stderr.contains(s), "{}", self.stderr);
        }
    }
}

impl Cluster {
    fn start() -> Self {
        Self(NodeCluster::start(
            "kpt-cp",
            "kpt-cp-node",
            &Value::Null,
            &json!({}),
        ))
    }

    /// A running pod `name` of one container `main` from `image` (its default command, or
    /// `sleep` for busybox); returns the Docker container's name.
    fn pod(&self, name: &str, image: &str) -> String {
        let r = self.http.post(
            "/api/v1/namespaces/default/pods",
            &json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"nodeName": self.node, "containers": [{"name": "main", "image": image}]},
            }),
        );
        assert_eq!(r.code, 201, "{}", r.body);
        let uid = r.json()["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string();
        let cname = labels::container_name("main", name, "default", &uid, 0);
        self.containers.add(&cname);
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", &cname])
            .args(kubelet_server::container_labels(
                &self.node, name, &uid, "main", 0,
            ));
        cmd.arg(image);
        if image == IMAGE {
            // The image is FROM scratch: no /tmp unless the container makes it.
            cmd.args(["sh", "-c", "mkdir -p -m 1777 /tmp && exec sleep 3600"]);
        }
        sh(&mut cmd);
        cname
    }

    /// kubectl in `cwd` (relative local paths), killed (failing the test) if it hangs.
    fn kubectl(&self, cwd: &Path, args: &[&str]) -> Run {
        let mut child = Command::new(KUBECTL)
            .args(args)
            .current_dir(cwd)
            .env("KUBECONFIG", &self.api.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait kubectl") {
                break s;
            }
            if start.elapsed() > HANG {
                let _ = child.kill();
                panic!("kubectl {args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("kubectl output");
        let r = Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ kubectl {} (exit {:?}, {:.1}s)\n{}{}",
            args.join(" "),
            r.code,
            start.elapsed().as_secs_f64(),
            r.stdout,
            r.stderr
        );
        r
    }
}

/// `len` bytes that are not text (every byte value, no long runs), different per `seed`.
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// A file's bytes as the container sees them (read with `docker exec cat`, not kubectl).
fn in_container(container: &str, path: &str) -> Vec<u8> {
    let out = Command::new("docker")
        .args(["exec", container, "cat", path])
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "cat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every file under `root` (relative path → bytes), directories as empty entries ending in /.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(root, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).expect("read file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn a_binary_file_both_ways() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let container = c.pod("box", IMAGE);
    let work = TempDir::new("kpt-cp-file");
    let data = binary(4 * 1024 * 1024 + 17, 1);
    std::fs::write(work.path().join("blob.bin"), &data).unwrap();

    let r = c.kubectl(work.path(), &["cp", "blob.bin", "box:/tmp/x"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        in_container(&container, "/tmp/x") == data,
        "copied in: bytes differ"
    );

    // Into an existing directory: the file keeps its name there.
    let r = c.kubectl(work.path(), &["cp", "blob.bin", "default/box:/tmp"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(in_container(&container, "/tmp/blob.bin") == data);

    let r = c.kubectl(work.path(), &["cp", "box:/tmp/x", "back.bin"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let back = std::fs::read(work.path().join("back.bin")).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "copied out: bytes differ");

    // An explicit container, and a small text file.
    std::fs::write(work.path().join("hello.txt"), "hello\n").unwrap();
    let r = c.kubectl(
        work.path(),
        &["cp", "hello.txt", "box:/tmp/hello.txt", "-c", "main"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(in_container(&container, "/tmp/hello.txt"), b"hello\n");
}

#[test]
fn a_directory_both_ways() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let container = c.pod("box", IMAGE);
    let work = TempDir::new("kpt-cp-dir");
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.bin"), binary(2 * 1024 * 1024, 2)).unwrap();
    std::fs::write(src.join("sub/b.txt"), "bee\n").unwrap();
    std::fs::write(src.join("sub/deeper/c.bin"), binary(300_000, 3)).unwrap();
    std::fs::write(src.join("zero"), b"").unwrap();

    let r = c.kubectl(work.path(), &["cp", "src", "box:/tmp/d"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(in_container(&container, "/tmp/d/sub/deeper/c.bin") == binary(300_000, 3));
    assert!(in_container(&container, "/tmp/d/a.bin") == binary(2 * 1024 * 1024, 2));

    let r = c.kubectl(work.path(), &["cp", "box:/tmp/d", "out"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (sent, got) = (tree(&src), tree(&work.path().join("out")));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&sent));
    assert!(got == sent, "directory copied back differs");
}

#[test]
fn errors_are_kubectls() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    c.pod("box", IMAGE);
    c.pod("notar", NO_TAR_IMAGE);
    let work = TempDir::new("kpt-cp-err");
    std::fs::write(work.path().join("f"), "data").unwrap();

    // No such pod, either way.
    for args in [&["cp", "f", "nope:/tmp/f"][..], &["cp", "nope:/tmp/f", "g"]] {
        let r = c.kubectl(work.path(), args);
        r.fails(
            1,
            &["Error from server (NotFound): pods \"nope\" not found"],
        );
    }

    // No such file in the container: the command's failure reaches kubectl (as `kubectl
    // exec` shows)...
    let r = c.kubectl(
        work.path(),
        &["exec", "box", "--", "tar", "cf", "-", "/tmp/missing"],
    );
    r.fails(
        1,
        &[
            "tar: /tmp/missing: No such file or directory",
            "command terminated with exit code 1",
        ],
    );
    // ...but `kubectl cp` itself may exit 0, even silently: it stops at the end of the
    // (empty) archive without waiting for the command's status (kubernetes/kubectl#980, the
    // same on Kubernetes). Nothing is written locally either way.
    let r = c.kubectl(work.path(), &["cp", "box:/tmp/missing", "g"]);
    assert!(
        r.code == Some(0) || r.stderr.contains("command terminated with exit code 1"),
        "{}",
        r.stderr
    );
    assert!(!work.path().join("g").exists());

    // A missing local file is kubectl's own check.
    let r = c.kubectl(work.path(), &["cp", "nothere", "box:/tmp/x"]);
    r.fails(1, &["error: nothere doesn't exist in local filesystem"]);
    // Into a directory that does not exist: tar's complaint and its exit code.
    let r = c.kubectl(work.path(), &["cp", "f", "box:/no/such/dir/f"]);
    r.fails(
        1,
        &[
            "tar: can't change directory to '/no/such/dir': No such file or directory",
            "command terminated with exit code 1",
        ],
    );

    // A container without tar: kubectl exits with the command's code 126, as on Kubernetes
    // with Docker's runc. Copying in, the runtime's complaint is shown; copying out, it is on
    // the command's stdout, which kubectl reads as the archive.
    for (args, shown) in [
        (&["cp", "f", "notar:/tmp/f"][..], true),
        (&["cp", "notar:/tmp/f", "g"], false),
    ] {
        let r = c.kubectl(work.path(), args);
        r.fails(126, &["command terminated with exit code 126"]);
        let said = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(
            said.contains("exec: \"tar\": executable file not found in $PATH"),
            shown,
            "{said}"
        );
    }
    assert!(!work.path().join("g").exists());
}
