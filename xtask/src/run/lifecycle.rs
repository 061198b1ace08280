//! Bringing the cluster up and down: the lab uplink, `--reset`, kctl on PATH, the
//! kubeconfigs, starting the components in order until the cluster is healthy, and stopping
//! them in the reverse order.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    APISERVER_DATA, CM_HEALTH, CONTROL_KUBECONFIG, KCTL_LINK, KPROXY_METRICS, KUBELET_DATA,
    LAB_CLIENT_ADDR, LAB_NETNS, LAB_NODE_ADDR, LAB_NODE_IP, LAB_PEER, LAB_UPLINK, LB_POOL, LOG_DIR,
    SCHEDULER_HEALTH, SERVICE_CIDR, STATE_DIR,
    supervisor::{Component, wait_ready},
};
use crate::util::{run_cmd, step, stop_requested};

fn ip(args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").args(args).stdout(Stdio::null()))
}

pub fn create_lab_uplink() -> Result<()> {
    step(&format!(
        "run: creating the lab uplink {LAB_UPLINK} ({LAB_NODE_ADDR}) to client netns \
         {LAB_NETNS} ({LAB_CLIENT_ADDR})"
    ));
    remove_lab_uplink();
    ip(&["netns", "add", LAB_NETNS])?;
    ip(&[
        "link", "add", LAB_UPLINK, "type", "veth", "peer", "name", LAB_PEER, "netns", LAB_NETNS,
    ])?;
    ip(&["addr", "add", LAB_NODE_ADDR, "dev", LAB_UPLINK])?;
    ip(&["link", "set", LAB_UPLINK, "up"])?;
    ip(&[
        "-n",
        LAB_NETNS,
        "addr",
        "add",
        LAB_CLIENT_ADDR,
        "dev",
        LAB_PEER,
    ])?;
    ip(&["-n", LAB_NETNS, "link", "set", LAB_PEER, "up"])?;
    ip(&["-n", LAB_NETNS, "link", "set", "lo", "up"])?;
    // The LoadBalancer pool is routed to the node from the client host, as a router in
    // front of a cluster would; kproxy's XDP program answers for the addresses.
    ip(&["-n", LAB_NETNS, "route", "add", LB_POOL, "via", LAB_NODE_IP])?;
    Ok(())
}

/// Removes what a previous run left behind; missing pieces are fine.
fn remove_lab_uplink() {
    let _ = Command::new("ip")
        .args(["link", "del", LAB_UPLINK])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("ip")
        .args(["netns", "del", LAB_NETNS])
        .stderr(Stdio::null())
        .status();
}

/// `kctl` on PATH: a link to this tree's release build (an existing file that is not our link
/// is left alone).
pub fn link_kctl(kctl: &Path) -> Result<()> {
    let link = Path::new(KCTL_LINK);
    match std::fs::read_link(link) {
        Ok(target) if target == kctl => return Ok(()),
        Ok(_) => std::fs::remove_file(link).with_context(|| format!("replace {KCTL_LINK}"))?,
        Err(_) if link.exists() => {
            println!(
                "run: {KCTL_LINK} exists and is not a link; leaving it (use {})",
                kctl.display()
            );
            return Ok(());
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(kctl, link).with_context(|| format!("link {KCTL_LINK}"))?;
    println!(
        "run: installed kctl on PATH ({KCTL_LINK} → {})",
        kctl.display()
    );
    Ok(())
}

/// `--reset`: the previous cluster's pods (containers), kproxy's pinned maps and all state.
pub fn reset(kproxy: &Path, node: &str) -> Result<()> {
    step(&format!(
        "run --reset: removing the previous cluster: its pods' containers, kproxy's pinned maps, {STATE_DIR}"
    ));
    let _ = Command::new(kproxy)
        .args(["cleanup", "--maps"])
        .stdout(Stdio::null())
        .status();
    let removed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(remove_pod_containers(|n| n == node))?;
    println!("run --reset: removed {removed} pod containers");
    match std::fs::remove_dir_all(STATE_DIR) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {STATE_DIR}"));
        }
        _ => {}
    }
    Ok(())
}

/// Removes every container a kubelet made for a node that `which` names (each is labelled
/// with its node: other kubelets on this Docker engine, such as the tests', keep theirs).
pub async fn remove_pod_containers(which: impl Fn(&str) -> bool) -> Result<usize> {
    use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
    let docker = crate::images::connect().await?;
    let filters = std::collections::HashMap::from([("label", vec![kproxy_pod_labels::NODE])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("list the kubelets' containers")?;
    let mut n = 0;
    for c in list {
        let ours = c
            .labels
            .as_ref()
            .and_then(|l| l.get(kproxy_pod_labels::NODE))
            .is_some_and(|node| which(node));
        let Some(id) = c.id.filter(|_| ours) else {
            continue;
        };
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .with_context(|| format!("remove container {id}"))?;
        n += 1;
    }
    Ok(n)
}

/// This host's node name, as the kubelet derives it.
pub fn node_name() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read the host name")?
        .trim()
        .to_lowercase())
}

/// Writes a kubeconfig with `kproxy-apiserver SUBCOMMAND [ARG] --out PATH`.
fn write_kubeconfig(apiserver: &Path, what: &[&str], out: &str) -> Result<()> {
    run_cmd(
        Command::new(apiserver)
            .args(what)
            .args(["--out", out, "--data-dir", APISERVER_DATA])
            .stdout(Stdio::null()),
    )
    .with_context(|| format!("write {out} (kproxy-apiserver {})", what.join(" ")))
}

/// Waits until the Node object says Ready and the API server and kproxy answer their health
/// checks.
fn wait_healthy(node: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(CONTROL_KUBECONFIG)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let started = Instant::now();
        loop {
            let ready = match nodes.get_opt(node).await? {
                Some(n) => n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
                None => false,
            };
            let readyz = client
                .request_text(http::Request::get("/readyz").body(Vec::new())?)
                .await
                .is_ok_and(|t| t.trim() == "ok");
            let ok = |addr: &str, path: &str| {
                crate::util::http_get(
                    addr.parse().expect("a socket address"),
                    path,
                    Duration::from_secs(1),
                )
                .is_ok_and(|(status, _)| status == 200)
            };
            let cm = ok(CM_HEALTH, "/readyz");
            let sched = ok(SCHEDULER_HEALTH, "/readyz");
            let kproxy = ok(KPROXY_METRICS, "/healthz");
            if ready && readyz && cm && sched && kproxy {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "not healthy after 30 s: node Ready {ready}, API server /readyz {readyz}, \
                     controller manager /readyz {cm}, scheduler /readyz {sched}, kproxy \
                     /healthz {kproxy}; see {LOG_DIR}/"
                );
            }
            if stop_requested() {
                bail!("interrupted while starting");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Starts the API server, then the others side by side, and waits until the cluster serves.
pub fn start_all(
    comps: &mut [Component; 5],
    apiserver_bin: &Path,
    node: &str,
    node_kubeconfig: &str,
    uplink: &str,
) -> Result<()> {
    let [api, cm, sched, kubelet, kproxy] = comps;
    step(&format!(
        "run: starting the API server on https://127.0.0.1:6443 (state {APISERVER_DATA}, log {})",
        api.log
    ));
    api.spawn()?;
    wait_ready(&mut [&mut *api])?;
    println!(
        "run: API server ready; kubeconfig context `kproxy` is current (kctl and kubectl use it)"
    );
    write_kubeconfig(apiserver_bin, &["admin-kubeconfig"], CONTROL_KUBECONFIG)?;
    write_kubeconfig(apiserver_bin, &["node-kubeconfig", node], node_kubeconfig)?;
    step(&format!(
        "run: starting the controller manager (LoadBalancer pool {LB_POOL}, pod CIDRs from \
         10.244.0.0/16), the scheduler, the kubelet for node {node} (bridge kbr0, state \
         {KUBELET_DATA}) and kproxy node on {uplink} (socket-LB for this host's namespace, tc \
         on pod veths, XDP + tc on the uplink); logs in {LOG_DIR}/"
    ));
    for c in [&mut *cm, &mut *sched, &mut *kubelet, &mut *kproxy] {
        c.spawn()?;
    }
    wait_ready(&mut [cm, sched, kubelet, kproxy])?;
    wait_healthy(node)
}

/// Stops kproxy first (and detaches its programs; its pinned maps stay for the next run),
/// then the kubelet (its pods keep running and are adopted next time), the scheduler, the
/// controller manager and the API server; removes the lab uplink and the keep-local routes.
pub fn stop_all(comps: &mut [Component], kproxy: &Path, lab: bool) {
    println!("\nrun: stopping the cluster");
    for c in comps.iter_mut().rev() {
        c.stop(Duration::from_secs(15));
        if c.name == "kproxy" {
            let _ = Command::new(kproxy)
                .arg("cleanup")
                .stdout(Stdio::null())
                .status();
        }
    }
    for cidr in [SERVICE_CIDR, LB_POOL] {
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", cidr])
            .stderr(Stdio::null())
            .status();
    }
    if lab {
        remove_lab_uplink();
    }
    println!(
        "run: stopped; pods keep running in Docker and state stays in {STATE_DIR}: the next \
         `cargo xtask run` resumes this cluster (`--reset` starts from scratch)"
    );
}

/// What runs where: one line per component.
pub fn print_components(comps: &[Component]) {
    let serves = |name: &str| match name {
        "the API server" => "https://127.0.0.1:6443",
        "etcd" => "http://127.0.0.1:2379 (data /var/lib/kproxy/etcd)",
        "the controller manager" => "health http://127.0.0.1:10257",
        "the scheduler" => "health http://127.0.0.1:10259",
        n if n.starts_with("the kubelet") => "logs/exec :10250 (via the API server)",
        _ => "metrics http://127.0.0.1:9962, kctl lb :10262",
    };
    println!();
    for c in comps {
        let pid = c.child.as_ref().map_or(0, Child::id);
        println!(
            "  {:<24} pid {pid:<8} {:<40} {}",
            c.name.trim_start_matches("the "),
            serves(&c.name),
            c.log
        );
    }
}

pub fn print_next_steps(node: &str, lab: bool) {
    println!("\nThis host is node {node} (master and worker). Logs: {LOG_DIR}/*.log");
    println!("Try, in another terminal:");
    println!("  kctl create deployment httpd --image=httpd");
    println!("  kctl expose deployment httpd --type=LoadBalancer --port=80");
    println!("  kctl get svc httpd          # CLUSTER-IP and EXTERNAL-IP (from {LB_POOL})");
    println!("  curl http://<CLUSTER-IP>/   # balanced by kproxy's socket-LB");
    println!("  curl http://<EXTERNAL-IP>/  # the LoadBalancer address, from the host too");
    if lab {
        println!(
            "  ip netns exec {LAB_NETNS} curl http://<EXTERNAL-IP>/   # from another host: XDP + tc"
        );
    }
    println!("  kctl scale deployment httpd --replicas=3; kctl lb   # the service table, counters");
    println!("  kctl bench svc/httpd        # service hop vs pod-direct: connections/s, latency");
    println!("  kctl rollout restart deployment httpd; kctl rollout status deployment httpd");
    println!("  kubectl get svc,deploy,pods # the real kubectl (context `kproxy`)");
    println!("Ctrl-C stops the cluster (pods keep running and are adopted next time).\n");
}
