//! The API server's store under faults: a full disk answers 5xx and turns `/readyz` unready,
//! then recovers by itself once space returns, losing no acknowledged write; a corrupt store
//! file at start is a clear error naming the file, not a panic.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kproxy_tests::apiserver::{ApiServer, Http, TempDir};
use kproxy_tests::{bin, eventually, privileged, sh, unique};
use serde_json::{Value, json};

const EPS: &str = "/api/v1/namespaces/default/endpoints";

/// A tmpfs of `size` mounted on a fresh directory; unmounted and removed on drop (also when
/// the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("kpt-storefull"));
        std::fs::create_dir_all(&dir).expect("create mount point");
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir));
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An Endpoints object with a sizeable annotation, so a few creates use up any slack the store
/// file still has.
fn endpoints(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "annotations": {"pad": "x".repeat(64 * 1024)}},
        "subsets": [{"addresses": [{"ip": "10.244.0.9"}], "ports": [{"port": 80}]}]})
}

fn create(h: &Http, name: &str) -> (u16, String) {
    let body = endpoints(name).to_string();
    let r = h.req("POST", EPS, "application/json", Some(body.as_bytes()));
    (r.code, r.body)
}

fn readyz(h: &Http) -> u16 {
    h.get("/readyz").code
}

/// Fills the file system holding `path` with a file there, until it is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk may have landed; sync so the space is really taken.
    let _ = f.sync_all();
}

#[test]
fn full_disk_answers_5xx_then_recovers_without_losing_writes() {
    if !privileged("full_disk_answers_5xx_then_recovers_without_losing_writes") {
        return;
    }
    let fs = Tmpfs::mount("16m");
    let data = fs.0.join("data");
    let mut s = ApiServer::start(&data, &["--no-kubeconfig"]);
    let h = s.http();
    let mut acked = Vec::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        assert_eq!(create(&h, &name).0, 201);
        acked.push(name);
    }
    assert_eq!(readyz(&h), 200);

    let filler = fs.0.join("filler");
    fill(&filler);
    let mut failure = None;
    for i in 0..200 {
        let name = format!("full-{i}");
        match create(&h, &name) {
            (201, _) => acked.push(name),
            other => {
                failure = Some(other);
                break;
            }
        }
    }
    let (code, body) = failure.expect("a write fails once the disk is full");
    assert_eq!(code, 500, "a full disk is a server error: {body}");
    let status: Value = serde_json::from_str(&body).expect("a Status body");
    assert_eq!(
        (status["kind"].as_str(), status["code"].as_u64()),
        (Some("Status"), Some(500)),
        "{status}"
    );
    eprintln!(
        "write failed after {} acked: {}",
        acked.len(),
        status["message"]
    );
    assert_eq!(readyz(&h), 503, "/readyz while writes fail");
    // Still failing, still unready: nothing was freed.
    assert_eq!(create(&h, "still-full").0, 500);
    assert_eq!(readyz(&h), 503);
    // Reads keep working.
    assert_eq!(h.get(&format!("{EPS}/before-0")).code, 200);

    std::fs::remove_file(&filler).expect("remove filler");
    let freed = Instant::now();
    let mut n = 0;
    eventually("writes succeed again after space returns", || {
        n += 1;
        let name = format!("after-{n}");
        let ok = create(&h, &name).0 == 201;
        if ok {
            acked.push(name);
        }
        ok && readyz(&h) == 200
    });
    let recovered = freed.elapsed();
    assert!(
        recovered < Duration::from_secs(5),
        "recovered in {recovered:?}"
    );
    for i in 0..5 {
        let name = format!("later-{i}");
        assert_eq!(create(&h, &name).0, 201);
        acked.push(name);
    }

    s.daemon.kill();
    let s = ApiServer::start(&data, &["--no-kubeconfig"]);
    let list = s.http().get(EPS).json();
    let stored: std::collections::HashSet<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|n| !stored.contains(n.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!(
        "recovered {recovered:?} after space returned; {} acknowledged writes, 0 lost",
        acked.len()
    );
}

/// Starts the API server on `dir` and waits for it to exit; its exit status and stderr.
fn start_and_wait(dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(bin("kproxy-apiserver"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-kubeconfig",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kproxy-apiserver");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the API server kept running on a corrupt store");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    (status, err)
}

fn assert_clear_failure(dir: &Path) {
    let file = dir.join("store.redb");
    let (status, err) = start_and_wait(dir);
    eprintln!("{err}");
    assert_eq!(status.code(), Some(1), "exits with an error, not a crash");
    assert!(
        !err.contains("panicked"),
        "a corrupt store is an error, not a panic:\n{err}"
    );
    assert!(
        err.contains(&file.display().to_string()) && err.contains("corrupt"),
        "the message names the file and says it is corrupt:\n{err}"
    );
}

#[test]
fn garbage_store_file_is_a_clear_error() {
    let dir = TempDir::new("kpt-badstore");
    let mut garbage = Vec::with_capacity(256 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..256 * 1024 {
        // xorshift: arbitrary bytes, the same every run.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        garbage.push(x.to_le_bytes()[0]);
    }
    std::fs::write(dir.path().join("store.redb"), &garbage).expect("write garbage");
    assert_clear_failure(dir.path());
}

#[test]
fn damaged_store_file_is_a_clear_error() {
    let dir = TempDir::new("kpt-badstore");
    {
        let mut s = ApiServer::start(dir.path(), &["--no-kubeconfig"]);
        for i in 0..20 {
            assert_eq!(create(&s.http(), &format!("ep-{i}")).0, 201);
        }
        s.daemon.terminate();
    }
    // Flip bytes all over the file past its header: pages and allocator state.
    let file = dir.path().join("store.redb");
    let mut raw = std::fs::read(&file).expect("read store");
    for off in (4096..raw.len()).step_by(97) {
        raw[off] ^= 0xff;
    }
    std::fs::write(&file, &raw).expect("write damaged store");
    assert_clear_failure(dir.path());
}
