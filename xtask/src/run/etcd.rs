//! `cargo xtask run --store etcd`: a one-member etcd on loopback holds the cluster's objects
//! instead of the API server's redb file. It is supervised like the components (started
//! first, stopped last, restarted when it dies) and keeps its data under
//! /var/lib/kproxy/etcd, so the next run resumes the same cluster.

use std::path::Path;

use anyhow::{Result, bail};

use super::{preflight::check_free, supervisor::Component};

/// Debian's etcd-server package (installed by `cargo xtask setup`).
const ETCD_BIN: &str = "/usr/bin/etcd";
const ETCD_DATA: &str = "/var/lib/kproxy/etcd";
const CLIENT_ADDR: &str = "127.0.0.1:2379";
const PEER_ADDR: &str = "127.0.0.1:2380";
/// Where the API server reaches etcd.
pub const CLIENT_URL: &str = "http://127.0.0.1:2379";
const PEER_URL: &str = "http://127.0.0.1:2380";

/// The etcd component, or why it cannot run here.
pub fn component() -> Result<Component> {
    if !Path::new(ETCD_BIN).exists() {
        bail!(
            "{ETCD_BIN} is missing: `cargo xtask setup` installs it (Debian's etcd-server \
             package), or run with the default `--store redb`"
        );
    }
    check_free(&[
        (CLIENT_ADDR, "etcd's client URL"),
        (PEER_ADDR, "etcd's peer URL"),
    ])?;
    let initial_cluster = format!("kproxy={PEER_URL}");
    Ok(Component::new(
        "etcd",
        ETCD_BIN.into(),
        &[
            "--name",
            "kproxy",
            "--data-dir",
            ETCD_DATA,
            "--listen-client-urls",
            CLIENT_URL,
            "--advertise-client-urls",
            CLIENT_URL,
            "--listen-peer-urls",
            PEER_URL,
            "--initial-advertise-peer-urls",
            PEER_URL,
            "--initial-cluster",
            &initial_cluster,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ],
        "etcd.log",
        "serving client traffic",
    ))
}
