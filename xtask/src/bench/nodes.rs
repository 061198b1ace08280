//! `cargo xtask bench cluster --nodes N` (N > 1): the figures of a cluster of several nodes,
//! measured in the running `cargo xtask run --nodes N`:
//! - pod → pod new connections/s across nodes against within one node (`kctl bench
//!   --client-node`: the same server pod, the load client on its node or on the host node),
//!   alternated over several rounds;
//! - LoadBalancer-IP failover: requests from the lab client namespace while the worker that
//!   announces the IP (the holder of its L2 lease) is killed (every process in its namespace,
//!   its link down): the time until requests succeed again;
//! - kproxy's and the kubelet's memory on each node, against the host node's.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::procfs::status_kib;
use crate::{
    run::{CONTROL_KUBECONFIG, LAB_NETNS},
    util::{http_get, step},
};

const NS: &str = "default";
/// Rounds of same-node and cross-node measurements, alternated.
const ROUNDS: usize = 2;

/// One row of the multi-node table.
pub struct NodeRow {
    pub what: &'static str,
    pub target: &'static str,
    pub figure: String,
    pub met: bool,
    pub fraction: f64,
}

/// A worker as `cargo xtask run --nodes` names it.
struct Worker {
    name: String,
    netns: String,
}

fn workers(host: &str, nodes: usize) -> Vec<Worker> {
    (2..=nodes)
        .map(|k| Worker {
            name: format!("{host}-node-{k}"),
            netns: format!("kproxy-node-{k}"),
        })
        .collect()
}

fn pinned_deployment(name: &str, app: &str, node: &str) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app, "bench-node": node}},
            "template": {
                "metadata": {"labels": {"app": app, "bench-node": node}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [{"name": "httpd", "image": "httpd"}],
                },
            },
        },
    }))?)
}

fn service(name: &str, app: &str, kind: &str, local: bool) -> Result<Service> {
    let mut spec = json!({
        "type": kind,
        "selector": {"app": app},
        "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}],
    });
    if local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

/// Runs the multi-node measurements; the bench's objects are deleted whatever happens.
pub async fn measure(
    client: kube::Client,
    bin_dir: &Path,
    host: &str,
    nodes: usize,
    seconds: u64,
) -> Result<Vec<NodeRow>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let mut made: Vec<(bool, String)> = Vec::new();
    let workers = workers(host, nodes);
    let result = async {
        let mut rows = Vec::new();
        rows.push(rss_row(bin_dir, host, &workers)?);
        rows.push(
            cross_node(
                &deployments,
                &services,
                &mut made,
                bin_dir,
                host,
                &workers,
                seconds,
            )
            .await?,
        );
        rows.push(failover(client.clone(), &deployments, &services, &mut made, &workers).await?);
        Ok(rows)
    }
    .await;
    for (is_deploy, name) in made.iter().rev() {
        if *is_deploy {
            let _ = deployments.delete(name, &DeleteParams::default()).await;
        } else {
            let _ = services.delete(name, &DeleteParams::default()).await;
        }
    }
    result
}

/// Waits until `addr` answers with a page containing `needle`, from `netns` or here.
fn wait_answer(addr: SocketAddr, needle: &str, netns: Option<&str>) -> Result<()> {
    let netns = netns.map(|n| PathBuf::from(format!("/run/netns/{n}")));
    super::netns::until_answered(
        addr,
        needle.to_string(),
        netns,
        Instant::now(),
        Duration::from_mins(1),
    )?
    .map(|_| ())
    .ok_or_else(|| anyhow!("{addr} did not answer within a minute"))
}

async fn cluster_ip(services: &Api<Service>, name: &str) -> Result<Ipv4Addr> {
    services
        .get(name)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| anyhow!("{name} has no ClusterIP"))?
        .parse()
        .context("ClusterIP")
}

/// New connections/s from a load pod on `client_node` straight to the service's pod.
fn pod_conns(bin_dir: &Path, svc: &str, client_node: &str, seconds: u64) -> Result<f64> {
    let out = Command::new(bin_dir.join("kctl"))
        .args(["bench", &format!("svc/{svc}"), "--client-node", client_node])
        .args(["--duration", &format!("{seconds}s"), "-o", "json"])
        .env("KUBECONFIG", CONTROL_KUBECONFIG)
        .stderr(Stdio::inherit())
        .output()
        .context("run kctl bench")?;
    if !out.status.success() {
        bail!(
            "kctl bench --client-node {client_node} failed ({})",
            out.status
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("kctl bench -o json")?;
    v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["target"] == "pod")
        .and_then(|r| r["connections"]["per_second"].as_f64())
        .ok_or_else(|| anyhow!("kctl bench -o json has no pod row: {v}"))
}

async fn cross_node(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    made: &mut Vec<(bool, String)>,
    bin_dir: &Path,
    host: &str,
    workers: &[Worker],
    seconds: u64,
) -> Result<NodeRow> {
    let server = workers.first().context("no worker")?;
    let name = format!("bench-x-{}", std::process::id());
    step(&format!(
        "bench cluster: pod → pod new connections/s, a server pod on {} against clients on {} (same node) and {host} (across)",
        server.name, server.name
    ));
    let pp = PostParams::default();
    services
        .create(&pp, &service(&name, &name, "ClusterIP", false)?)
        .await?;
    made.push((false, name.clone()));
    deployments
        .create(&pp, &pinned_deployment(&name, &name, &server.name)?)
        .await?;
    made.push((true, name.clone()));
    let ip = cluster_ip(services, &name).await?;
    wait_answer(SocketAddr::from((ip, 80)), &format!("pod: {name}-"), None)?;
    let (mut same, mut across) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        same.push(pod_conns(bin_dir, &name, &server.name, seconds)?);
        across.push(pod_conns(bin_dir, &name, host, seconds)?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratio = mean(&across) / mean(&same);
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(NodeRow {
        what: "pod → pod new connections/s, across nodes ÷ within a node",
        target: "≥ 0.9",
        figure: format!(
            "{ratio:.3} (across {}; within {}; conn/s per {seconds} s round)",
            show(&across),
            show(&same)
        ),
        met: ratio >= 0.9,
        fraction: if ratio > 0.0 { 0.9 / ratio } else { f64::NAN },
    })
}

async fn failover(
    client: kube::Client,
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    made: &mut Vec<(bool, String)>,
    workers: &[Worker],
) -> Result<NodeRow> {
    if workers.len() < 2 {
        bail!("the failover figure needs two workers (--nodes 3 or more)");
    }
    let app = format!("bench-fo-{}", std::process::id());
    step(&format!(
        "bench cluster: LoadBalancer-IP failover, {app} (externalTrafficPolicy Local) served by {} and {}",
        workers[0].name, workers[1].name
    ));
    let pp = PostParams::default();
    for w in &workers[..2] {
        let name = format!("{app}-{}", w.netns);
        deployments
            .create(&pp, &pinned_deployment(&name, &app, &w.name)?)
            .await?;
        made.push((true, name));
    }
    services
        .create(&pp, &service(&app, &app, "LoadBalancer", true)?)
        .await?;
    made.push((false, app.clone()));
    let t0 = Instant::now();
    let lb_ip: Ipv4Addr = loop {
        let s = services.get(&app).await?;
        if let Some(ip) = s
            .status
            .and_then(|s| s.load_balancer?.ingress?.into_iter().next()?.ip)
        {
            break ip.parse()?;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("{app}: no EXTERNAL-IP within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let addr = SocketAddr::from((lb_ip, 80));
    wait_answer(addr, &format!("pod: {app}-"), Some(LAB_NETNS))?;
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let lease = format!("kproxy-l2-{NS}.{app}");
    let holder = leases
        .get(&lease)
        .await
        .with_context(|| format!("reading lease {lease}"))?
        .spec
        .and_then(|s| s.holder_identity)
        .ok_or_else(|| anyhow!("lease {lease} has no holder"))?;
    let victim = workers[..2]
        .iter()
        .find(|w| w.name == holder)
        .ok_or_else(|| anyhow!("the announcer {holder} is not one of the two serving workers"))?;
    // Requests every 20 ms from the client namespace, each with a 200 ms budget.
    let stop = Arc::new(AtomicBool::new(false));
    let log = {
        let stop = Arc::clone(&stop);
        let netns = Some(PathBuf::from(format!("/run/netns/{LAB_NETNS}")));
        thread::spawn(move || {
            super::netns::in_netns(netns, move || {
                let mut log = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let ok = http_get(addr, "/", Duration::from_millis(200))
                        .is_ok_and(|(s, _)| s == 200);
                    log.push((Instant::now(), ok));
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(log)
            })
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    step(&format!(
        "bench cluster: killing {} (the announcer): every process in {}, its eth0 down",
        victim.name, victim.netns
    ));
    let killed = Instant::now();
    kill_node(&victim.netns)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let log = log
        .join()
        .map_err(|_| anyhow!("the request loop panicked"))??;
    // The node comes back (its components are restarted by `run`).
    let _ = Command::new("ip")
        .args(["-n", &victim.netns, "link", "set", "eth0", "up"])
        .status();
    let after: Vec<&(Instant, bool)> = log.iter().filter(|(t, _)| *t >= killed).collect();
    let before_ok = log.iter().filter(|(t, ok)| *t < killed && *ok).count();
    let first_fail = after.iter().position(|(_, ok)| !ok);
    let (figure, secs) = match first_fail {
        None => (
            format!(
                "no request failed in 10 s after the kill ({} before it, {} after)",
                before_ok,
                after.len()
            ),
            0.0,
        ),
        Some(i) => match after[i..].iter().find(|(_, ok)| *ok) {
            Some((t, _)) => {
                let s = t.duration_since(killed).as_secs_f64();
                let failed = after.iter().filter(|(_, ok)| !ok).count();
                (
                    format!(
                        "{s:.2} s from the kill to the first answer again ({failed} of {} requests failed meanwhile; {} announced before)",
                        after.len(),
                        victim.name
                    ),
                    s,
                )
            }
            None => (
                "requests never succeeded again within 10 s".to_string(),
                f64::INFINITY,
            ),
        },
    };
    Ok(NodeRow {
        what: "LoadBalancer-IP failover: announcing worker killed → requests succeed again",
        target: "≤ 3 s",
        figure,
        met: secs <= 3.0,
        fraction: secs / 3.0,
    })
}

/// Kills every process in network namespace `netns` and takes its `eth0` down: the node is
/// gone for the LAN.
fn kill_node(netns: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .context("ip netns pids")?;
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<libc::pid_t>() {
            // SAFETY: signalling a process of the bench's own cluster.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let status = Command::new("ip")
        .args(["-n", netns, "link", "set", "eth0", "down"])
        .status()
        .context("ip link set eth0 down")?;
    if !status.success() {
        bail!("taking eth0 of {netns} down failed");
    }
    Ok(())
}

/// The inode of a network namespace: which node a process belongs to.
fn netns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// kproxy's and the kubelet's RSS (MiB) in the network namespace with `inode`.
fn node_rss(bin_dir: &Path, inode: Option<u64>) -> (f64, f64) {
    let mut kib = [0u64; 2];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let slot = if exe == bin_dir.join("kproxy") {
            0
        } else if exe == bin_dir.join("kproxy-kubelet") {
            1
        } else {
            continue;
        };
        if netns_inode(&entry.path().join("ns/net")) == inode {
            kib[slot] += status_kib(pid, "VmRSS:").unwrap_or(0);
        }
    }
    (kib[0] as f64 / 1024.0, kib[1] as f64 / 1024.0)
}

fn rss_row(bin_dir: &Path, host: &str, workers: &[Worker]) -> Result<NodeRow> {
    step("bench cluster: kproxy and kubelet memory on each node");
    let (hk, hl) = node_rss(bin_dir, netns_inode(Path::new("/proc/self/ns/net")));
    if hk == 0.0 || hl == 0.0 {
        bail!("no kproxy or kubelet found on the host node");
    }
    let mut parts = vec![format!("{host}: kproxy {hk:.1}, kubelet {hl:.1} MiB")];
    let mut worst: f64 = 0.0;
    for w in workers {
        let (k, l) = node_rss(
            bin_dir,
            netns_inode(&Path::new("/run/netns").join(&w.netns)),
        );
        parts.push(format!("{}: kproxy {k:.1}, kubelet {l:.1} MiB", w.name));
        worst = worst.max(k / hk).max(l / hl);
    }
    Ok(NodeRow {
        what: "kproxy and kubelet RSS per worker ÷ the host node's (largest ratio)",
        target: "≤ 1.25",
        figure: format!("{worst:.2} ({})", parts.join("; ")),
        met: worst <= 1.25,
        fraction: worst / 1.25,
    })
}
