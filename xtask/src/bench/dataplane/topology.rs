//! The lab: a client namespace, the node namespace (where kproxy or the rules run) and four
//! backend namespaces running `kpt-net serve`, wired by veths and the node's bridge, plus
//! the socket-LB cgroup and a scratch directory.

use std::{
    cell::Cell,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use kproxy_tests::{
    NetNs,
    lab::{Cgroup, Topology},
};

use super::{
    BACKENDS,
    process::{Proc, TmpDir, run_quiet},
};

/// The release binaries the lab runs.
pub struct Bins {
    pub kproxy: PathBuf,
    pub kpt_net: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The external client namespace (traffic crosses the uplink).
    Client,
    /// A process in the node namespace inside the socket-LB cgroup.
    Host,
}

pub struct Topo {
    // Dropped in this order: servers, then namespaces, cgroup and files.
    servers: Vec<Proc>,
    client: NetNs,
    pub node: NetNs,
    _backends: Vec<NetNs>,
    pub cgroup: Cgroup,
    pub tmp: TmpDir,
    kpt_net: PathBuf,
    pub kproxy: PathBuf,
    next_client_ip: Cell<u8>,
    next_host_ip: Cell<u8>,
}

fn sysctls(ns: &NetNs, extra: &[&str]) -> Result<()> {
    let mut cmd = ns.cmd("sysctl");
    cmd.args([
        "-qw",
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.tcp_timestamps=1",
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.core.somaxconn=4096",
        "net.ipv4.tcp_max_syn_backlog=4096",
    ])
    .args(extra);
    run_quiet(&mut cmd)
}

impl Topo {
    pub fn new(bins: &Bins) -> Result<Self> {
        let Topology {
            client,
            node,
            backends,
        } = Topology::build("kpb", BACKENDS);
        sysctls(&client, &[])?;
        sysctls(&node, &[])?;
        let mut servers = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            sysctls(b, &[])?;
            let mut cmd = b.cmd(&bins.kpt_net);
            cmd.args(["serve", "--name", &format!("b{i}"), "--port", "8080"]);
            servers.push(Proc::spawn(cmd)?);
        }
        for s in &mut servers {
            s.wait_line("serving", 0, Duration::from_secs(10))?;
        }
        Ok(Self {
            servers,
            client,
            node,
            _backends: backends,
            cgroup: Cgroup::new(),
            tmp: TmpDir::new()?,
            kpt_net: bins.kpt_net.clone(),
            kproxy: bins.kproxy.clone(),
            next_client_ip: Cell::new(10),
            next_host_ip: Cell::new(10),
        })
    }

    /// A fresh source address for one run, so TIME_WAIT sockets and connection tracking
    /// entries of earlier runs never meet this one's 4-tuples.
    pub fn fresh_ip(&self, from: Side) -> Result<Ipv4Addr> {
        let (cell, ns, dev, base) = match from {
            Side::Client => (&self.next_client_ip, &self.client, "eth0", [192, 0, 2]),
            Side::Host => (&self.next_host_ip, &self.node, "br0", [10, 244, 1]),
        };
        let last = cell.get();
        if last == 254 {
            bail!("out of source addresses");
        }
        cell.set(last + 1);
        let ip = Ipv4Addr::new(base[0], base[1], base[2], last);
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", dev]);
        Ok(ip)
    }

    pub fn kpt(&self, from: Side, args: &[&str]) -> Command {
        let mut cmd = match from {
            Side::Client => self.client.cmd(&self.kpt_net),
            Side::Host => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(r#"echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="/run/netns/$ns" -- "$@""#)
                    .arg(self.cgroup.path())
                    .arg(self.node.name())
                    .arg(&self.kpt_net);
                cmd
            }
        };
        cmd.args(args);
        cmd
    }

    /// Empties the node's connection tracking table. The iptables and nftables modes track
    /// every connection, and at these rates the entries in TIME_WAIT (120 s) would fill the
    /// machine-wide `nf_conntrack_max` within seconds ("table full, dropping packet"); each
    /// run starts from an empty table instead.
    pub fn flush_conntrack(&self) -> Result<()> {
        let out = self
            .node
            .cmd("conntrack")
            .arg("-F")
            .stdin(Stdio::null())
            .output()
            .context("running conntrack -F (apt-get install conntrack)")?;
        if !out.status.success() {
            bail!(
                "conntrack -F failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn servers_alive(&mut self) -> Result<()> {
        for s in &mut self.servers {
            if let Ok(Some(st)) = s.child.try_wait() {
                bail!("a backend server exited ({st}):\n{}", s.tail());
            }
        }
        Ok(())
    }
}
