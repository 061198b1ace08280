//! A scratch one-member etcd on loopback (Debian's /usr/bin/etcd), stopped on drop: the API
//! server's etcd for `cargo xtask bench api --store etcd` and for the end-to-end suites run
//! with `KPROXY_TEST_STORE=etcd` (see [`crate::apiserver::ApiServer::start`]).

use std::{net::TcpListener, path::Path, process::Command};

use anyhow::{Result, bail};

use crate::Daemon;

pub const ETCD: &str = "/usr/bin/etcd";

/// A one-member etcd whose data lives in `data_dir`: started again on the same directory it
/// comes back with its keys (on new ports).
pub struct LocalEtcd {
    _daemon: Daemon,
    pub url: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    pub fn start(data_dir: &Path) -> Result<Self> {
        if !Path::new(ETCD).exists() {
            bail!("{ETCD} is missing: `cargo xtask setup` installs Debian's etcd-server");
        }
        let url = format!("http://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", "local", "--data-dir"])
            .arg(data_dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("local={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        let daemon = Daemon::spawn_until_logged(cmd, "serving client traffic");
        Ok(Self {
            _daemon: daemon,
            url,
        })
    }
}
