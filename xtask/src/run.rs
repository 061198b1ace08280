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

    let manifest = services_manifest()?;
    // A demo backend: an echo server on the lab client host, so the demo service answers.
    let mut echo = None;
    if args.uplink.is_none() {
        step("run: starting a demo echo backend in the lab netns (172.31.0.2:8080)");
        echo = Some(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{LAB_NETNS}"))
                .arg("--")
                .arg(bin_dir.join("kpt-net"))
                .args(["serve", "--name", "demo-backend", "--port", "8080"])
                .stderr(Stdio::null())
                .spawn()
                .context("start the demo echo backend")?,
        );
    }

    step(&format!(
        "run: starting kproxy on {uplink} with {}",
        manifest.display()
    ));
    let mut child = Command::new(&kproxy)
        .args([
            "standalone",
            "--uplink",
            &uplink,
            "--xdp-mode",
            &args.xdp_mode,
        ])
        .arg("--manifests")
        .arg(&manifest)
        .args(["--metrics-addr", "127.0.0.1:9962"])
        .spawn()
        .with_context(|| format!("start {}", kproxy.display()))?;
    // Ctrl-C reaches kproxy (same process group); we wait for it and then clean up.
    // SAFETY: ignoring SIGINT in this process only; no handler code runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let k = kproxy.display();
    println!(
        "\nkproxy is running: XDP + tc programs on {uplink}, maps pinned under /sys/fs/bpf/kproxy."
    );
    println!(
        "Services come from {} (edit it: kproxy reloads it).",
        manifest.display()
    );
    println!("Next steps, in another terminal:");
    println!("  bash -c 'cat < /dev/tcp/10.96.0.100/80'   # the demo ClusterIP, via socket-LB");
    println!("  {k} dump       # service table with backends and counters");
    println!("  {k} ifstats    # uplink packet counters per hook");
    println!("  {k} debug on   # eBPF events appear in this log");
    println!("  curl -s 127.0.0.1:9962/metrics | grep kproxy_service");
    let kctl = bin_dir.join("kctl");
    let kctl = kctl.display();
    println!(
        "  {kctl} create -f {}   # a pod; the scheduler binds it to this node",
        pod_manifest.display()
    );
    println!("  {kctl} get pods -o wide; curl -s <pod IP>       # the page names the pod");
    println!("  {kctl} logs web; {kctl} exec web -- /bin/busybox ps");
    println!("  {kctl} create deployment web --image=httpd --replicas=2");
    println!("  {kctl} expose deployment web --port=80 --type=NodePort");
    println!("  {kctl} get svc,deploy -o wide          # or: kubectl get svc (context `kproxy`)");
    println!("  tail -f {LOG_DIR}/*.log");
    if args.uplink.is_none() {
        println!("Ctrl-C stops kproxy and removes the lab netns.\n");
    } else {
        println!("Ctrl-C stops kproxy.\n");
    }
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
    if let Some(mut e) = echo {
        let _ = e.kill();
        let _ = e.wait();
    }
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

/// The demo manifest `run` feeds kproxy: created once, then left to the user to edit.
fn services_manifest() -> Result<PathBuf> {
    let dir = workspace_root().join("target/kproxy");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("services.yaml");
    if !path.exists() {
        std::fs::write(&path, DEMO_MANIFEST)
            .with_context(|| format!("write {}", path.display()))?;
        println!("run: wrote the demo services to {}", path.display());
    }
    Ok(path)
}

const DEMO_MANIFEST: &str = "\
# Services kproxy programs into its eBPF maps (standalone mode: no API server yet).
# Ordinary v1 Service and discovery.k8s.io/v1 EndpointSlice objects; edit and save.
apiVersion: v1
kind: Service
metadata: {name: demo, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.100
  ports: [{name: tcp, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: demo-1
  namespace: default
  labels: {kubernetes.io/service-name: demo}
addressType: IPv4
ports: [{name: tcp, port: 8080, protocol: TCP}]
endpoints:
- addresses: [172.31.0.2]
  conditions: {ready: true}
";
