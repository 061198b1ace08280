//! A real `kproxy-apiserver` process for tests, on a free loopback port with its own data
//! directory and kubeconfig, and a small HTTPS client over curl (status code + JSON body).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{Daemon, bin, etcd::LocalEtcd, eventually, unique};

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct ApiServer {
    pub daemon: Daemon,
    pub url: String,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The server's etcd under `KPROXY_TEST_STORE=etcd` (dropped after the server).
    _etcd: Option<LocalEtcd>,
}

/// Whether the suites run on etcd (`KPROXY_TEST_STORE=etcd`, see [`etcd_for`]).
#[must_use]
pub fn on_etcd() -> bool {
    std::env::var("KPROXY_TEST_STORE").is_ok_and(|s| s == "etcd")
}

/// `KPROXY_TEST_STORE=etcd` runs every test server that names no `--store` on a local etcd
/// of its own (data in the server's data directory, so a restart keeps it), so the same
/// end-to-end suites check both stores; redb otherwise.
fn etcd_for(data_dir: &Path, extra: &[&str]) -> Option<LocalEtcd> {
    (on_etcd() && !extra.contains(&"--store")).then(|| {
        LocalEtcd::start(&data_dir.join("etcd"))
            .unwrap_or_else(|e| panic!("KPROXY_TEST_STORE=etcd: {e:#}"))
    })
}

impl ApiServer {
    /// Starts a server on `data_dir` (reusing its state if any) with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(&bin("kproxy-apiserver"), data_dir, extra)
    }

    /// Like `start`, with an explicit binary (the benchmarks use the release build).
    pub fn start_with(binary: &Path, data_dir: &Path, extra: &[&str]) -> Self {
        let kubeconfig = data_dir.join("kubeconfig");
        let etcd = etcd_for(data_dir, extra);
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(if extra.contains(&"--bind") {
                &[][..]
            } else {
                &["--bind", "127.0.0.1:0"][..]
            })
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(extra)
            .env("RUST_LOG", "info");
        if let Some(e) = &etcd {
            cmd.args(["--store", "etcd", "--etcd-servers", &e.url]);
        }
        let daemon = Daemon::spawn(cmd);
        let mut url = String::new();
        eventually("API server ready", || {
            url = daemon
                .lines()
                .iter()
                .find_map(|l| {
                    let rest = l.split("API server ready").nth(1)?;
                    let u = rest.split("url=").nth(1)?;
                    Some(u.split_whitespace().next()?.to_string())
                })
                .unwrap_or_default();
            !url.is_empty()
        });
        Self {
            daemon,
            url,
            data_dir: data_dir.to_path_buf(),
            kubeconfig,
            _etcd: etcd,
        }
    }

    #[must_use]
    pub fn admin_token(&self) -> String {
        let t: Value = serde_json::from_slice(
            &std::fs::read(self.data_dir.join("tokens.json")).expect("tokens.json"),
        )
        .expect("tokens.json is JSON");
        t["admin"].as_str().expect("admin token").to_string()
    }

    /// A node's token, created through the CLI as an operator would.
    #[must_use]
    pub fn node_token(&self, node: &str) -> String {
        let out = crate::sh(
            Command::new(bin("kproxy-apiserver"))
                .args(["node-token", node, "--data-dir"])
                .arg(&self.data_dir),
        );
        out.trim().to_string()
    }

    #[must_use]
    pub fn http(&self) -> Http {
        Http {
            url: self.url.clone(),
            ca: self.data_dir.join("pki/ca.crt"),
            token: Some(self.admin_token()),
        }
    }
}

/// HTTPS requests through curl, verifying the server against the cluster CA.
#[derive(Clone)]
pub struct Http {
    pub url: String,
    pub ca: PathBuf,
    pub token: Option<String>,
}

pub struct Reply {
    pub code: u16,
    pub body: String,
}

impl Reply {
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Http {
    #[must_use]
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(String::from),
            ..self.clone()
        }
    }

    /// `body` goes through a file so large bodies work.
    pub fn req(&self, method: &str, path: &str, content_type: &str, body: Option<&[u8]>) -> Reply {
        self.try_req(method, path, content_type, body)
            .unwrap_or_else(|e| panic!("curl {method} {path} failed: {e}"))
    }

    /// Like `req`, but a transport failure (server gone) is an error, not a panic.
    pub fn try_req(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method, "--cacert"])
            .arg(&self.ca)
            .args([
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("Content-Type: {content_type}"),
            ]);
        if let Some(t) = &self.token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let _file;
        if let Some(b) = body {
            let f = std::env::temp_dir().join(unique("kpt-body"));
            std::fs::write(&f, b).expect("write body");
            cmd.arg("--data-binary").arg(format!("@{}", f.display()));
            _file = FileGuard(f);
        }
        cmd.arg(format!("{}{path}", self.url));
        let out = cmd.output().map_err(|e| format!("cannot run curl: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').ok_or("no status line")?;
        Ok(Reply {
            code: code
                .trim()
                .parse()
                .map_err(|_| format!("bad status {code:?}"))?,
            body: body.to_string(),
        })
    }

    pub fn get(&self, path: &str) -> Reply {
        self.req("GET", path, "application/json", None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.req(
            "POST",
            path,
            "application/json",
            Some(body.to_string().as_bytes()),
        )
    }
    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.req(
            "PUT",
            path,
            "application/json",
            Some(body.to_string().as_bytes()),
        )
    }
    pub fn patch(&self, path: &str, content_type: &str, body: &str) -> Reply {
        self.req("PATCH", path, content_type, Some(body.as_bytes()))
    }
    pub fn delete(&self, path: &str) -> Reply {
        self.req("DELETE", path, "application/json", None)
    }
}

/// The resourceVersions of watch events (`{"type":..,"object":..}` lines), as numbers.
#[must_use]
pub fn resource_versions(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("event without a numeric resourceVersion: {e}"))
        })
        .collect()
}

struct FileGuard(PathBuf);

impl Drop for FileGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
