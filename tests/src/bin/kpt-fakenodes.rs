//! Fake nodes for controller and scheduler tests and `cargo xtask bench controllers`: a
//! stand-in for N kubelets that registers N Nodes, renews their Leases, reports the pods bound
//! to them Running and Ready (no containers), and completes their graceful deletion, as a
//! kubelet would. Killing the process stops the heartbeats, which is how tests fail a node.
//!
//! Prints `fake nodes ready` on stderr once the Nodes exist and the pod watch runs.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(clap::Parser)]
struct Cli {
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many nodes: `<prefix>-0` .. `<prefix>-(N-1)`.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    #[arg(long, default_value = "fake")]
    prefix: String,
    /// Allocatable per node.
    #[arg(long, default_value = "4")]
    cpu: String,
    #[arg(long, default_value = "16Gi")]
    memory: String,
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 2.0)]
    heartbeat: f64,
    /// Status writes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Extra node labels, KEY=VALUE (repeat).
    #[arg(long = "label")]
    labels: Vec<String>,
}

fn node_object(name: &str, cli: &Cli) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kpt.kproxy.io/fake".to_string(), "true".to_string()),
    ]);
    for l in &cli.labels {
        if let Some((k, v)) = l.split_once('=') {
            labels.insert(k.into(), v.into());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
    }))
    .expect("a valid node")
}

fn node_status(i: usize, cli: &Cli) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let cond = |t: &str, s: &str, r: &str| {
        json!({"type": t, "status": s, "reason": r, "message": "fake node",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let res = json!({"cpu": cli.cpu, "memory": cli.memory, "pods": cli.pods.to_string()});
    json!({"status": {
        "capacity": res, "allocatable": res,
        // TEST-NET-1: nothing is ever sent to these; nobody serves fake nodes' logs.
        "addresses": [{"type": "InternalIP", "address": format!("192.0.2.{}", i % 250 + 1)},
                      {"type": "Hostname", "address": format!("{}-{i}", cli.prefix)}],
        "conditions": [
            cond("Ready", "True", "KubeletReady"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "nodeInfo": {"kubeletVersion": "v1.33.0-fake", "containerRuntimeVersion": "fake://0",
                     "operatingSystem": "linux", "architecture": "amd64",
                     "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
                     "machineID": "", "systemUUID": "", "bootID": ""},
    }})
}

async fn heartbeat(leases: Api<Lease>, name: String, every: Duration) {
    loop {
        let now = jiff::Timestamp::now().to_string();
        let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                                    "renewTime": now}});
        let res = leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Err(kube::Error::Api(e)) = &res
            && e.code == 404
        {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            }))
            .expect("a valid lease");
            if let Err(e) = leases.create(&PostParams::default(), &lease).await {
                eprintln!("lease {name}: {e}");
            }
        } else if let Err(e) = res {
            eprintln!("lease {name}: {e}");
        }
        tokio::time::sleep(every).await;
    }
}

/// What the fake kubelet does for one pod it sees.
enum Act {
    Run,
    Finish,
    Nothing,
}

fn act(pod: &Pod, nodes: &HashMap<String, usize>) -> Act {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return Act::Nothing;
    };
    if !nodes.contains_key(node) {
        return Act::Nothing;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Act::Finish;
    }
    // Reported once: a test may later change the status (e.g. readiness) by hand.
    if pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .is_none()
    {
        return Act::Run;
    }
    Act::Nothing
}

fn running_status(pod: &Pod, ip: &str) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let containers: Vec<_> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().collect())
        .unwrap_or_default();
    let statuses: Vec<_> = containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true,
                   "started": true, "restartCount": 0,
                   "state": {"running": {"startedAt": now}}})
        })
        .collect();
    json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.0.2.1",
        "startTime": now,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"),
                       cond("Ready")],
        "containerStatuses": statuses,
    }})
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli: Cli = clap::Parser::parse();
    let kc = kube::config::Kubeconfig::read_from(&cli.kubeconfig).context("kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("kubeconfig")?;
    let client = kube::Client::try_from(cfg)?;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let every = Duration::from_secs_f64(cli.heartbeat);

    let mut index = HashMap::new();
    for i in 0..cli.nodes {
        let name = format!("{}-{i}", cli.prefix);
        match nodes
            .create(&PostParams::default(), &node_object(&name, &cli))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating node {name}")),
        }
        nodes
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(node_status(i, &cli)),
            )
            .await
            .with_context(|| format!("node {name} status"))?;
        tokio::spawn(heartbeat(leases.clone(), name.clone(), every));
        index.insert(name, i);
    }
    // Node status (Ready's heartbeat time) rewritten now and then, as a kubelet does.
    {
        let (nodes, names) = (nodes.clone(), index.clone());
        let status: HashMap<String, serde_json::Value> = names
            .iter()
            .map(|(n, i)| (n.clone(), node_status(*i, &cli)))
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                for (n, s) in &status {
                    let _ = nodes
                        .patch_status(n, &PatchParams::default(), &Patch::Merge(s))
                        .await;
                }
            }
        });
    }

    let index = Arc::new(index);
    let pods: Api<Pod> = Api::all(client.clone());
    let limit = Arc::new(Semaphore::new(cli.concurrency));
    let mut next_ip: HashMap<usize, u32> = HashMap::new();
    eprintln!("fake nodes ready: {} nodes", cli.nodes);
    let mut stream = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(pod) = stream.try_next().await.context("pod watch")? {
        let what = act(&pod, &index);
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone())
        else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match what {
            Act::Nothing => {}
            Act::Run => {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                let i = node.and_then(|n| index.get(&n).copied()).unwrap_or(0);
                let n = next_ip.entry(i).or_insert(0);
                *n += 1;
                // 10.250.0.0/16 split per node: addresses no test routes anywhere.
                let ip = format!("10.250.{}.{}", i % 256, (*n % 250) + 2);
                let status = running_status(&pod, &ip);
                let permit = Arc::clone(&limit).acquire_owned().await?;
                tokio::spawn(async move {
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                    {
                        eprintln!("pod {ns}/{name} status: {e}");
                    }
                    drop(permit);
                });
            }
            Act::Finish => {
                let permit = Arc::clone(&limit).acquire_owned().await?;
                tokio::spawn(async move {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => eprintln!("pod {ns}/{name} delete: {e}"),
                    }
                    drop(permit);
                });
            }
        }
    }
    Ok(())
}
