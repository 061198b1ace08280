//! `cargo xtask run --nodes N`: this host is node 1 (master and worker); nodes 2..N are
//! simulated hosts, each a network namespace `kproxy-node-K` with its own kubelet and
//! `kproxy node` started inside it (the same binaries and flags a real second machine gets).
//!
//! The LAN is a bridge `lan0` in a namespace of its own (`kproxy-lan`), as kind joins its
//! node containers to one network: its ports are the host's uplink `kp-uplink`
//! (172.31.0.1), the client namespace (172.31.0.2) and every worker's `eth0`
//! (172.31.0.(10+K)). The API server also binds 172.31.0.1:6443, which the workers'
//! kubeconfigs name. A worker's pods run under the Docker cgroup parent `/kproxy-NAME`,
//! which its kproxy covers with socket-LB; its state is under /var/lib/kproxy/nodes/NAME,
//! its pins under /sys/fs/bpf/kproxy-NAME, its logs /var/log/kproxy/NAME-{kubelet,kproxy}.log.
//!
//! Workers do not outlive `run`: stopping removes their pods' containers, pins, cgroups and
//! namespaces (the host node's pods keep running as with one node); the next `run` creates
//! them again, and the kubelets start the pods the API still binds to them. Leftovers of a
//! crashed run are found by name and replaced.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    APISERVER_DATA, CONTROL_KUBECONFIG, KPROXY_METRICS, LAB_NETNS, LAB_NODE_ADDR, LAB_PEER,
    LAB_UPLINK, LB_POOL, LOG_DIR, STATE_DIR,
    supervisor::{Component, wait_ready},
};
use crate::util::{run_cmd, step, stop_requested};

/// The namespace holding the LAN bridge.
const LAN_NETNS: &str = "kproxy-lan";
const LAN_BRIDGE: &str = "lan0";
/// Worker namespaces are this plus the node number.
const NODE_NETNS_PREFIX: &str = "kproxy-node-";
/// The controller manager's default cluster CIDR (node IPAM hands out /24s of it): pod
/// traffic within it is not masqueraded, so pod → pod across nodes keeps the source.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Where the workers reach the API server.
pub const LAN_API_BIND: &str = "172.31.0.1:6443";
const LAN_API_URL: &str = "https://172.31.0.1:6443";
/// At most this many nodes: worker addresses are 172.31.0.(10+K).
pub const MAX_NODES: usize = 200;

/// A simulated host: node K of the cluster.
pub struct Worker {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The LAN end of its `eth0`.
    lan_port: String,
}

impl Worker {
    fn dir(&self) -> PathBuf {
        Path::new(STATE_DIR).join("nodes").join(&self.name)
    }

    fn bpffs(&self) -> String {
        format!("/sys/fs/bpf/kproxy-{}", self.name)
    }

    /// Docker's cgroup parent for the node's pods.
    fn cgroup_parent(&self) -> String {
        format!("/kproxy-{}", self.name)
    }
}

/// Nodes 2..=`nodes`, named after this host's node.
pub fn workers(host_node: &str, nodes: usize) -> Vec<Worker> {
    (2..=nodes)
        .map(|k| Worker {
            name: format!("{host_node}-node-{k}"),
            netns: format!("{NODE_NETNS_PREFIX}{k}"),
            ip: Ipv4Addr::new(172, 31, 0, u8::try_from(10 + k).expect("at most MAX_NODES")),
            lan_port: format!("kp-node{k}"),
        })
        .collect()
}

fn ip(args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").args(args).stdout(Stdio::null()))
}

/// Runs a cleanup command whose failure only means the thing is already gone.
fn quiet(cmd: &mut Command) {
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// The names in /run/netns starting with `prefix`.
fn netns_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the LAN with the host's uplink, the client namespace and every worker's namespace
/// on it, after removing what an earlier run left.
pub fn create_lan(workers: &[Worker]) -> Result<()> {
    step(&format!(
        "run: creating the LAN (bridge {LAN_BRIDGE} in netns {LAN_NETNS}): this host's uplink \
         {LAB_UPLINK} ({LAB_NODE_ADDR}), the client netns {LAB_NETNS} (172.31.0.2) and {} \
         worker netns ({})",
        workers.len(),
        workers
            .iter()
            .map(|w| format!("{} {}", w.netns, w.ip))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    remove_lan();
    ip(&["netns", "add", LAN_NETNS])?;
    ip(&["-n", LAN_NETNS, "link", "set", "lo", "up"])?;
    ip(&["-n", LAN_NETNS, "link", "add", LAN_BRIDGE, "type", "bridge"])?;
    ip(&["-n", LAN_NETNS, "link", "set", LAN_BRIDGE, "up"])?;
    let enslave = |port: &str| -> Result<()> {
        ip(&["-n", LAN_NETNS, "link", "set", port, "master", LAN_BRIDGE])?;
        ip(&["-n", LAN_NETNS, "link", "set", port, "up"])
    };
    ip(&[
        "link", "add", LAB_UPLINK, "type", "veth", "peer", "name", "kp-host", "netns", LAN_NETNS,
    ])?;
    enslave("kp-host")?;
    ip(&["addr", "add", LAB_NODE_ADDR, "dev", LAB_UPLINK])?;
    ip(&["link", "set", LAB_UPLINK, "up"])?;

    ip(&["netns", "add", LAB_NETNS])?;
    ip(&[
        "-n",
        LAB_NETNS,
        "link",
        "add",
        LAB_PEER,
        "type",
        "veth",
        "peer",
        "name",
        "kp-client",
        "netns",
        LAN_NETNS,
    ])?;
    enslave("kp-client")?;
    ip(&[
        "-n",
        LAB_NETNS,
        "addr",
        "add",
        "172.31.0.2/24",
        "dev",
        LAB_PEER,
    ])?;
    ip(&["-n", LAB_NETNS, "link", "set", LAB_PEER, "up"])?;
    ip(&["-n", LAB_NETNS, "link", "set", "lo", "up"])?;
    // The LoadBalancer pool is on-link for the client host, as a MetalLB / Cilium L2 pool on
    // the nodes' segment: the client asks by ARP, and the node holding a Service's L2 lease
    // answers (with one node, `run` routes the pool via that node instead).
    ip(&["-n", LAB_NETNS, "route", "add", LB_POOL, "dev", LAB_PEER])?;

    for w in workers {
        ip(&["netns", "add", &w.netns])?;
        ip(&["-n", &w.netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &w.netns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &w.lan_port,
            "netns",
            LAN_NETNS,
        ])?;
        enslave(&w.lan_port)?;
        ip(&[
            "-n",
            &w.netns,
            "addr",
            "add",
            &format!("{}/24", w.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &w.netns, "link", "set", "eth0", "up"])?;
        // A host routes: its pods' traffic to other nodes and to service backends elsewhere.
        run_cmd(Command::new("ip").args(["netns", "exec", &w.netns]).args([
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
    }
    Ok(())
}

/// Removes the LAN, the client namespace, the uplink and every worker namespace (of any
/// earlier node count); missing pieces are fine.
pub fn remove_lan() {
    for ns in netns_named(NODE_NETNS_PREFIX) {
        quiet(Command::new("ip").args(["netns", "del", &ns]));
    }
    quiet(Command::new("ip").args(["link", "del", LAB_UPLINK]));
    quiet(Command::new("ip").args(["netns", "del", LAB_NETNS]));
    quiet(Command::new("ip").args(["netns", "del", LAN_NETNS]));
}

/// The cgroup v2 mount (on this machine's hybrid layout /sys/fs/cgroup/unified).
fn cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup v2 mount")
}

/// Each worker's kubelet and kproxy, started inside its namespace.
pub fn components(
    bin_dir: &Path,
    workers: &[Worker],
    xdp_mode: &str,
    host_node: &str,
) -> Result<Vec<Component>> {
    let cgroup2 = cgroup2_root()?;
    let mut comps = Vec::new();
    for w in workers {
        let dir = w.dir();
        let kubeconfig = dir.join("kubeconfig").display().to_string();
        let kubelet_data = dir.join("kubelet").display().to_string();
        let node_ip = w.ip.to_string();
        let parent = w.cgroup_parent();
        let mut kubelet = Component::new(
            format!("the kubelet of {}", w.name),
            bin_dir.join("kproxy-kubelet"),
            &[
                "--kubeconfig",
                &kubeconfig,
                "--data-dir",
                &kubelet_data,
                "--node-name",
                &w.name,
                "--node-ip",
                &node_ip,
                "--bridge",
                "kbr0",
                "--cluster-cidr",
                CLUSTER_CIDR,
                "--cgroup-parent",
                &parent,
            ],
            &format!("{}-kubelet.log", w.name),
            "kubelet ready",
        );
        kubelet.netns = Some(w.netns.clone());
        let pods_cgroup = cgroup2.join(parent.trim_start_matches('/'));
        let cert_dir = dir.join("proxy").display().to_string();
        let mut kproxy = Component::new(
            format!("kproxy of {}", w.name),
            bin_dir.join("kproxy"),
            &[
                "--bpffs",
                &w.bpffs(),
                "node",
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                &w.name,
                "--uplink",
                "eth0",
                "--xdp-mode",
                xdp_mode,
                "--pod-bridge",
                "kbr0",
                // The node's own processes (its namespace) and its pods (their cgroup).
                "--socket-lb-scope",
                "host",
                "--socket-lb-cgroup",
                &pods_cgroup.display().to_string(),
                "--metrics-addr",
                KPROXY_METRICS,
                "--serve-cert-dir",
                &cert_dir,
            ],
            &format!("{}-kproxy.log", w.name),
            "initial sync done",
        );
        kproxy.netns = Some(w.netns.clone());
        comps.extend([kubelet, kproxy]);
    }
    debug_assert!(workers.iter().all(|w| w.name.starts_with(host_node)));
    Ok(comps)
}

/// Issues each worker's kubeconfig, clears what a crashed run left of it, starts its kubelet
/// and kproxy and waits until every node (this host's too) is Ready; prints the nodes.
pub fn start(
    comps: &mut [Component],
    apiserver_bin: &Path,
    kproxy_bin: &Path,
    workers: &[Worker],
    host_node: &str,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let removed = rt.block_on(remove_worker_containers(host_node))?;
    if removed > 0 {
        println!("run: removed {removed} containers of worker pods a previous run left");
    }
    for w in workers {
        let dir = w.dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // Pins of an earlier run (their programs were attached to a namespace that is
        // gone); the cleanup runs inside the node's namespace, where its devices are.
        if Path::new(&w.bpffs()).exists() {
            quiet(
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", w.netns))
                    .arg("--")
                    .arg(kproxy_bin)
                    .args(["--bpffs", &w.bpffs(), "cleanup", "--maps"]),
            );
        }
        let out = dir.join("kubeconfig");
        run_cmd(
            Command::new(apiserver_bin)
                .args(["node-kubeconfig", &w.name, "--server", LAN_API_URL, "--out"])
                .arg(&out)
                .args(["--data-dir", APISERVER_DATA])
                .stdout(Stdio::null()),
        )
        .with_context(|| format!("write {} (kproxy-apiserver node-kubeconfig)", out.display()))?;
    }
    step(&format!(
        "run: starting {} workers, each a kubelet and kproxy node inside its netns (state \
         {STATE_DIR}/nodes/NAME, logs {LOG_DIR}/NAME-kubelet.log and NAME-kproxy.log)",
        workers.len()
    ));
    for c in comps.iter_mut() {
        c.spawn()?;
    }
    wait_ready(&mut comps.iter_mut().collect::<Vec<_>>())?;
    let names: Vec<String> = std::iter::once(host_node.to_string())
        .chain(workers.iter().map(|w| w.name.clone()))
        .collect();
    println!(
        "run: workers started; waiting until all {} nodes are Ready",
        names.len()
    );
    rt.block_on(wait_nodes_ready(&names, workers.len() + 1, host_node))
}

/// Waits until every node in `names` is Ready (deleting Nodes of workers beyond the node
/// count an earlier run left), then prints them.
async fn wait_nodes_ready(names: &[String], nodes: usize, host_node: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(CONTROL_KUBECONFIG)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let api: kube::Api<Node> = kube::Api::all(kube::Client::try_from(config)?);
    for n in api.list(&kube::api::ListParams::default()).await?.items {
        let name = n.metadata.name.unwrap_or_default();
        let beyond = name
            .strip_prefix(&format!("{host_node}-node-"))
            .and_then(|k| k.parse::<usize>().ok())
            .is_some_and(|k| k > nodes);
        if beyond {
            println!("run: deleting Node {name} (a worker of an earlier, larger run)");
            api.delete(&name, &kube::api::DeleteParams::default())
                .await?;
        }
    }
    let started = Instant::now();
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    loop {
        let list = api.list(&kube::api::ListParams::default()).await?.items;
        let waiting: Vec<&String> = names
            .iter()
            .filter(|name| {
                !list
                    .iter()
                    .any(|n| n.metadata.name.as_ref() == Some(*name) && ready(n))
            })
            .collect();
        if waiting.is_empty() {
            print_nodes(&list, names);
            return Ok(());
        }
        if started.elapsed() > Duration::from_mins(1) {
            bail!("nodes not Ready after 60 s: {waiting:?}; see {LOG_DIR}/");
        }
        if stop_requested() {
            bail!("interrupted while starting");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_nodes(list: &[k8s_openapi::api::core::v1::Node], names: &[String]) {
    println!(
        "\n  {:<32} {:<8} {:<16} POD-CIDR",
        "NODE", "STATUS", "INTERNAL-IP"
    );
    for name in names {
        let Some(n) = list.iter().find(|n| n.metadata.name.as_ref() == Some(name)) else {
            continue;
        };
        let addr = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map_or("-", |a| a.address.as_str());
        let cidr = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .unwrap_or("-");
        println!("  {name:<32} {:<8} {addr:<16} {cidr}", "Ready");
    }
}

/// Removes the containers of every worker node (`--reset`).
pub fn remove_containers(host_node: &str) -> Result<()> {
    let n = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(remove_worker_containers(host_node))?;
    if n > 0 {
        println!("run --reset: removed {n} containers of worker nodes");
    }
    Ok(())
}

/// Removes every container of a worker node (`<host>-node-K`) on this Docker engine.
async fn remove_worker_containers(host_node: &str) -> Result<usize> {
    let prefix = format!("{host_node}-node-");
    super::lifecycle::remove_pod_containers(|node| node.starts_with(&prefix)).await
}

/// What to try with several nodes.
pub fn print_next_steps(workers: &[Worker]) {
    let Some(w) = workers.first() else {
        return;
    };
    println!(
        "With {} nodes (the workers reach the API server at {LAN_API_URL}):",
        workers.len() + 1
    );
    println!(
        "  kctl get nodes -o wide; kctl scale deployment httpd --replicas=6; kctl get pods -o wide"
    );
    println!(
        "  ip netns exec {} curl http://<CLUSTER-IP>/   # from node {} (socket-LB of its kproxy)",
        w.netns, w.name
    );
    println!(
        "  logs: {LOG_DIR}/{}-kubelet.log, {LOG_DIR}/{}-kproxy.log, ...\n",
        w.name, w.name
    );
}

/// After the components stopped: each worker's pins (cleaned inside its namespace), its
/// pods' containers and cgroups, then the namespaces and the LAN.
pub fn remove(workers: &[Worker], kproxy_bin: &Path, host_node: &str) {
    if workers.is_empty() {
        return;
    }
    for w in workers {
        quiet(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", w.netns))
                .arg("--")
                .arg(kproxy_bin)
                .args(["--bpffs", &w.bpffs(), "cleanup", "--maps"]),
        );
        let _ = std::fs::remove_dir_all(w.bpffs());
    }
    let removed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(remove_worker_containers(host_node)));
    match removed {
        Ok(n) => println!("run: removed the workers' {n} pod containers"),
        Err(e) => println!("run: removing the workers' pod containers failed: {e:#}"),
    }
    for w in workers {
        remove_cgroups(w.cgroup_parent().trim_start_matches('/'));
    }
    remove_lan();
    println!(
        "run: removed the {} worker netns and the LAN (their Nodes stay in the API: the next \
         `run --nodes` starts them again)",
        workers.len()
    );
}

/// The cgroup `name` under every hierarchy (v1 controllers and v2), deepest first: the
/// containers are gone, so the directories are empty.
fn remove_cgroups(name: &str) {
    fn rmdir_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(d.flatten().map(|e| e.path()));
    }
    for root in roots {
        let dir = root.join(name);
        if dir.is_dir() {
            rmdir_tree(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_named_and_addressed_from_node_two() {
        let w = workers("box", 3);
        let names: Vec<(&str, &str, String)> = w
            .iter()
            .map(|w| (w.name.as_str(), w.netns.as_str(), w.ip.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("box-node-2", "kproxy-node-2", "172.31.0.12".to_string()),
                ("box-node-3", "kproxy-node-3", "172.31.0.13".to_string()),
            ]
        );
        assert!(workers("box", 1).is_empty());
        assert_eq!(w[0].bpffs(), "/sys/fs/bpf/kproxy-box-node-2");
        assert_eq!(w[0].cgroup_parent(), "/kproxy-box-node-2");
    }
}
