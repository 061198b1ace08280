//! `cargo xtask run`: set up, build, and start the node in the foreground: the API server,
//! the kubelet (this host is master and worker at once) and the kproxy datapath on a lab
//! uplink; then print the next steps.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    setup::{SetupArgs, setup},
    util::{cargo, is_root, output_of, run_cmd, step, workspace_root},
};

/// The lab "client host": a network namespace reached through a veth that plays the node's
/// uplink, so nothing is ever attached to this machine's real network interface.
const LAB_NETNS: &str = "kproxy-client";
const LAB_UPLINK: &str = "kp-uplink";
const LAB_PEER: &str = "kp-client0";
const LAB_NODE_ADDR: &str = "172.31.0.1/24";
const LAB_CLIENT_ADDR: &str = "172.31.0.2/24";
const LAB_NODE_IP: &str = "172.31.0.1";
/// The controller manager's default LoadBalancer pool.
const LB_POOL: &str = "172.30.0.0/24";

#[derive(Args)]
pub struct RunArgs {
    /// Attach to this existing interface instead of creating the lab uplink.
    #[arg(long)]
    uplink: Option<String>,
    /// XDP mode for the uplink: auto, driver or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: String,
}

fn ip(args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").args(args).stdout(Stdio::null()))
}

fn create_lab_uplink() -> Result<()> {
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

pub fn run(args: &RunArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask run` loads eBPF programs and creates network namespaces: run it as root"
        );
    }
    setup(&SetupArgs::default())?;
    step("run: building kproxy and kctl (release; includes the eBPF programs)");
    run_cmd(cargo().args(["build", "--release", "--bins"]))?;
    let bin_dir: PathBuf = workspace_root().join("target/release");
    let kproxy = bin_dir.join("kproxy");

    let uplink = match &args.uplink {
        Some(iface) => {
            if output_of(Command::new("ip").args(["link", "show", iface])).is_none() {
                bail!("interface {iface} does not exist");
            }
            iface.clone()
        }
        None => {
            create_lab_uplink()?;
            LAB_UPLINK.to_string()
        }
    };

    let apiserver = start_apiserver(&bin_dir)?;
    let (controller_manager, scheduler) = start_controllers(&bin_dir)?;
    let node = node_name()?;
    let kubelet = start_kubelet(&bin_dir, &node)?;
    let pod_manifest = demo_pod_manifest()?;

    step(&format!(
        "run: starting kproxy node on {uplink}: Services and EndpointSlices from the API server \
         (socket-LB for this host's namespace, tc on pod veths, XDP + tc on the uplink, log \
         {KPROXY_LOG})"
    ));
    let mut child = start_daemon(
        "kproxy",
        &kproxy,
        &[
            "node",
            "--kubeconfig",
            &format!("{KUBELET_DATA}/kubeconfig"),
            "--node-name",
            &node,
            "--uplink",
            &uplink,
            "--xdp-mode",
            &args.xdp_mode,
            // Pod veths get the per-packet programs, as the kubelet creates them; socket-LB
            // stays in the host's namespace, so the lab client namespace (another host)
            // takes the uplink path.
            "--pod-bridge",
            "kbr0",
            "--socket-lb-scope",
            "host",
            "--metrics-addr",
            "127.0.0.1:9962",
        ],
        KPROXY_LOG,
        "initial sync done",
    )?;
    // Ctrl-C reaches every child (same process group); we wait for kproxy and then stop the
    // others in order.
    // SAFETY: ignoring SIGINT in this process only; no handler code runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let kctl = bin_dir.join("kctl");
    let kctl = kctl.display();
    let k = kproxy.display();
    println!("\nThe cluster is running: this host is node {node} (master and worker).");
    println!("Try, in another terminal:");
    println!("  {kctl} create deployment httpd --image=httpd");
    println!("  {kctl} expose deployment httpd --type=LoadBalancer --port=80");
    println!("  {kctl} get svc httpd          # CLUSTER-IP and EXTERNAL-IP (from 172.30.0.0/24)");
    println!("  curl http://<CLUSTER-IP>/     # balanced by kproxy's socket-LB");
    println!("  curl http://<EXTERNAL-IP>/    # the LoadBalancer address, from the host too");
    if args.uplink.is_none() {
        println!(
            "  ip netns exec {LAB_NETNS} curl http://<EXTERNAL-IP>/   # from another host: XDP"
        );
    }
    println!("  {kctl} rollout restart deployment httpd; {kctl} rollout status deployment httpd");
    println!(
        "  {kctl} create -f {}   # a single pod",
        pod_manifest.display()
    );
    println!("  {kctl} get pods -o wide; {kctl} logs <pod>; {kctl} exec <pod> -- /bin/busybox ps");
    println!("  {k} dump                       # the eBPF service table with counters");
    println!("  curl -s 127.0.0.1:9962/metrics | grep -E 'kubeproxy|kproxy_service'");
    println!("  kubectl get svc,deploy,pods      # the real kubectl (context `kproxy`)");
    println!("  tail -f {LOG_DIR}/*.log");
    println!(
        "Ctrl-C stops the components (pods keep running in Docker and are adopted next time).\n"
    );
    let status = child.wait().context("wait for kproxy")?;
    // kproxy leaves its datapath attached on exit (so restarts keep flows); `run` owns this
    // node, so detach it. The pinned maps stay for the next run.
    let _ = Command::new(&kproxy).arg("cleanup").status();
    // The kubelet first: its pods keep running and are adopted by the next run.
    for mut child in [kubelet, scheduler, controller_manager, apiserver] {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = child.wait();
    }
    println!("run: pods keep running in Docker; the next `cargo xtask run` adopts them");
    if args.uplink.is_none() {
        remove_lab_uplink();
    }
    println!("run: kproxy exited ({status})");
    Ok(())
}

const LOG_DIR: &str = "/var/log/kproxy";
const APISERVER_LOG: &str = "/var/log/kproxy/apiserver.log";
const APISERVER_DATA: &str = "/var/lib/kproxy/apiserver";
const KUBELET_LOG: &str = "/var/log/kproxy/kubelet.log";
const KPROXY_LOG: &str = "/var/log/kproxy/kproxy.log";
const CONTROLLER_MANAGER_LOG: &str = "/var/log/kproxy/controller-manager.log";
const SCHEDULER_LOG: &str = "/var/log/kproxy/scheduler.log";
/// The admin kubeconfig the scheduler and the controller manager use (not the user's, whose
/// current context may change).
const CONTROL_KUBECONFIG: &str = "/var/lib/kproxy/controller-manager/kubeconfig";
const KUBELET_DATA: &str = "/var/lib/kproxy/kubelet";

/// Starts `bin args` with stderr appended to `log` and waits until this run's part of the log
/// contains `ready` (30 s at most).
fn start_daemon(
    what: &str,
    bin: &std::path::Path,
    args: &[&str],
    log_path: &str,
    ready: &str,
) -> Result<std::process::Child> {
    std::fs::create_dir_all(LOG_DIR).with_context(|| format!("create {LOG_DIR}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("open {log_path}"))?;
    // Only this run's lines count: the log is appended to across runs.
    let offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the {what} exited ({status}); see {log_path}");
        }
        let log = std::fs::read(log_path).unwrap_or_default();
        let ours = String::from_utf8_lossy(log.get(offset..).unwrap_or_default());
        if ours.contains(ready) {
            return Ok(child);
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            bail!("the {what} did not become ready in 30 s; see {log_path}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts the API server (state in /var/lib/kproxy/apiserver, kept across runs) and waits until
/// it answers; it merges the `kproxy` context into the kubeconfig and makes it current.
fn start_apiserver(bin_dir: &std::path::Path) -> Result<std::process::Child> {
    step(&format!(
        "run: starting the API server on https://127.0.0.1:6443 (state {APISERVER_DATA}, log {APISERVER_LOG})"
    ));
    let child = start_daemon(
        "API server",
        &bin_dir.join("kproxy-apiserver"),
        &[
            "serve",
            "--data-dir",
            APISERVER_DATA,
            "--bind",
            "127.0.0.1:6443",
        ],
        APISERVER_LOG,
        "API server ready",
    )?;
    println!(
        "run: API server ready; kubeconfig context `kproxy` is current (kctl and kubectl use it)"
    );
    Ok(child)
}

/// Starts the controller manager (Deployments, ReplicaSets, EndpointSlices, LoadBalancer IPs
/// from 172.30.0.0/24, node IPAM from 10.244.0.0/16, node lifecycle) and the scheduler, both
/// with an admin kubeconfig, and waits until their caches are synced.
fn start_controllers(
    bin_dir: &std::path::Path,
) -> Result<(std::process::Child, std::process::Child)> {
    run_cmd(
        Command::new(bin_dir.join("kproxy-apiserver"))
            .args([
                "admin-kubeconfig",
                "--out",
                CONTROL_KUBECONFIG,
                "--data-dir",
                APISERVER_DATA,
            ])
            .stdout(Stdio::null()),
    )
    .context("write the controllers' kubeconfig (kproxy-apiserver admin-kubeconfig)")?;
    step(&format!(
        "run: starting the controller manager (LoadBalancer pool 172.30.0.0/24, pod CIDRs from 10.244.0.0/16, log {CONTROLLER_MANAGER_LOG})"
    ));
    let cm = start_daemon(
        "controller manager",
        &bin_dir.join("kproxy-controller-manager"),
        &["--kubeconfig", CONTROL_KUBECONFIG],
        CONTROLLER_MANAGER_LOG,
        "controller manager ready",
    )?;
    step(&format!(
        "run: starting the scheduler (log {SCHEDULER_LOG})"
    ));
    let sched = start_daemon(
        "scheduler",
        &bin_dir.join("kproxy-scheduler"),
        &["--kubeconfig", CONTROL_KUBECONFIG],
        SCHEDULER_LOG,
        "scheduler ready",
    )?;
    Ok((cm, sched))
}

/// This host's node name, as the kubelet derives it.
fn node_name() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read the host name")?
        .trim()
        .to_lowercase())
}

/// Starts the kubelet for this host with its own node token (created on first use), so this
/// host is master and worker at once.
fn start_kubelet(bin_dir: &std::path::Path, node: &str) -> Result<std::process::Child> {
    step(&format!(
        "run: starting the kubelet for node {node} (bridge kbr0, pod CIDR from node IPAM, state {KUBELET_DATA}, log {KUBELET_LOG})"
    ));
    let path = format!("{KUBELET_DATA}/kubeconfig");
    run_cmd(
        Command::new(bin_dir.join("kproxy-apiserver"))
            .args([
                "node-kubeconfig",
                node,
                "--out",
                &path,
                "--data-dir",
                APISERVER_DATA,
            ])
            .stdout(Stdio::null()),
    )
    .context("write the kubelet's kubeconfig (kproxy-apiserver node-kubeconfig)")?;
    let child = start_daemon(
        "kubelet",
        &bin_dir.join("kproxy-kubelet"),
        &[
            "--kubeconfig",
            &path,
            "--data-dir",
            KUBELET_DATA,
            "--node-name",
            node,
        ],
        KUBELET_LOG,
        "kubelet ready",
    )?;
    println!("run: kubelet ready; node {node} is Ready");
    Ok(child)
}

/// A demo pod, written on every run.
fn demo_pod_manifest() -> Result<PathBuf> {
    let dir = workspace_root().join("target/kproxy");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("pod.yaml");
    let text = "# A pod: httpd (busybox) serving a page with the pod's name.\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers:\n  - name: httpd\n    image: httpd\n    ports: [{containerPort: 80}]\n    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 2}\n";
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
