//! Load generator for `cargo xtask bench controllers`: drives the scheduler and the controller
//! manager through the API server (kube-rs, as a user would) and measures end to end, from
//! the API write to the object the controllers produce. Each phase prints one JSON line.
//!
//! * `schedule --count N --concurrency C`: N pods created; time until all are bound.
//! * `deployment --replicas N`: one Deployment; time until N pods are Ready and the
//!   Deployment reports them available.
//! * `endpoints --samples S`: a Service over a 10-replica Deployment; S pod readiness flips,
//!   each timed until the EndpointSlice shows it.
//! * `lbip --samples S`: S LoadBalancer Services created one by one, each timed until
//!   `status.loadBalancer.ingress` holds an address.
//! * `pods --count N --concurrency C`: N pods in 10 Deployments; waits until all are Ready.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    phase: Phase,
    #[arg(long, global = true, default_value = "default")]
    namespace: String,
}

#[derive(clap::Subcommand)]
enum Phase {
    Schedule {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    Deployment {
        #[arg(long)]
        replicas: i32,
    },
    Endpoints {
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    Lbip {
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    Pods {
        #[arg(long)]
        count: usize,
    },
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "sched-bench"}},
        "spec": {"containers": [{
            "name": "web", "image": "httpd",
            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
        }]}
    }))
    .expect("a valid pod")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web", "image": "httpd",
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                }]},
            },
        },
    }))
    .expect("a valid deployment")
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the rank is rounded and between 0 and len - 1"
)]
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency_json(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "samples": ms.len(),
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits, through a watch on the pods with `labels`, until `want` distinct pods are Ready;
/// returns them. Event-driven: no polling lists that would load the server being measured.
async fn ready_pods(
    pods: &Api<Pod>,
    labels: &str,
    want: usize,
    limit: Duration,
) -> Result<Vec<Pod>> {
    let mut events = watcher(pods.clone(), watcher::Config::default().labels(labels))
        .applied_objects()
        .boxed();
    let mut ready_now: HashMap<String, Pod> = HashMap::new();
    while ready_now.len() < want {
        let p = tokio::time::timeout(limit, events.try_next())
            .await
            .with_context(|| format!("timed out: {} of {want} pods Ready", ready_now.len()))??
            .context("watch ended")?;
        let name = p.metadata.name.clone().unwrap_or_default();
        if ready(&p) {
            ready_now.insert(name, p);
        } else {
            ready_now.remove(&name);
        }
    }
    Ok(ready_now.into_values().collect())
}

/// Consumes `events` until one object satisfies `done`.
async fn until_seen<K>(
    events: &mut (impl futures::Stream<Item = Result<K, watcher::Error>> + Unpin),
    what: &str,
    mut done: impl FnMut(&K) -> bool,
) -> Result<()> {
    loop {
        let o = tokio::time::timeout(Duration::from_mins(2), events.try_next())
            .await
            .with_context(|| format!("timed out waiting for {what}"))??
            .context("watch ended")?;
        if done(&o) {
            return Ok(());
        }
    }
}

async fn schedule(client: kube::Client, ns: &str, count: usize, conc: usize) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    // The watch starts before the first create, so no bind is missed.
    let cfg = watcher::Config::default().labels("app=sched-bench");
    let mut events = watcher(pods.clone(), cfg).applied_objects().boxed();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let creator = {
        let pods = pods.clone();
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            futures::stream::iter(0..conc)
                .for_each_concurrent(None, |_| {
                    let (pods, next) = (pods.clone(), Arc::clone(&next));
                    async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                break;
                            }
                            if let Err(e) = pods
                                .create(&PostParams::default(), &pod(&format!("s-{i:06}")))
                                .await
                            {
                                eprintln!("create s-{i:06}: {e}");
                            }
                        }
                    }
                })
                .await;
            start.elapsed()
        })
    };
    let mut bound = HashSet::new();
    let deadline = Duration::from_mins(2);
    while bound.len() < count {
        let p = tokio::time::timeout(deadline, events.try_next())
            .await
            .context("timed out waiting for binds")??
            .context("watch ended")?;
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            bound.insert(p.metadata.name.unwrap_or_default());
        }
    }
    let all = start.elapsed();
    let created = creator.await?;
    println!(
        "{}",
        json!({
            "pods": count,
            "created_s": created.as_secs_f64(),
            "all_bound_s": all.as_secs_f64(),
            "bound_per_s": count as f64 / all.as_secs_f64(),
            "created_per_s": count as f64 / created.as_secs_f64(),
        })
    );
    Ok(())
}

async fn deployment_ready(client: kube::Client, ns: &str, replicas: i32) -> Result<()> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let name = "big";
    let mut status = watcher(
        deps.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .boxed();
    let start = Instant::now();
    deps.create(&PostParams::default(), &deployment(name, replicas))
        .await
        .context("create deployment")?;
    let want = usize::try_from(replicas).context("replicas")?;
    ready_pods(&pods, "app=big", want, Duration::from_mins(2)).await?;
    let pods_ready = start.elapsed();
    // Then the Deployment's own status says so.
    until_seen(
        &mut status,
        "the Deployment's available replicas",
        |d: &Deployment| {
            d.status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .is_some_and(|a| a >= replicas)
        },
    )
    .await?;
    let status = start.elapsed();
    println!(
        "{}",
        json!({
            "replicas": replicas,
            "pods_ready_s": pods_ready.as_secs_f64(),
            "status_available_s": status.as_secs_f64(),
        })
    );
    Ok(())
}

/// Whether `slice` lists `ip` with the given readiness.
fn slice_shows(slice: &EndpointSlice, ip: &str, want_ready: bool) -> bool {
    slice.endpoints.iter().any(|e| {
        e.addresses.iter().any(|a| a == ip)
            && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false) == want_ready
    })
}
async fn endpoints(client: kube::Client, ns: &str, samples: usize) -> Result<()> {
    let name = "epbench";
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    deps.create(&PostParams::default(), &deployment(name, 10))
        .await?;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))?;
    svcs.create(&PostParams::default(), &svc).await?;
    let ready_pods = ready_pods(&pods, &format!("app={name}"), 10, Duration::from_mins(1)).await?;
    // A watch on the service's slices: the time a change becomes visible to a watcher, as it
    // does to the node proxy. The pod is in one slice, so the slice that shows its new state
    // is the answer; events still queued from before show the old state.
    let sel = format!("kubernetes.io/service-name={name}");
    let mut seen = watcher(slices, watcher::Config::default().labels(&sel))
        .applied_objects()
        .boxed();
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let p = &ready_pods[i % ready_pods.len()];
        let pname = p.metadata.name.clone().unwrap_or_default();
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        // Flip to not ready, then back, timing each.
        for want in [false, true] {
            let now = jiff::Timestamp::now().to_string();
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": if want {"True"} else {"False"},
                 "lastTransitionTime": now}]}});
            let t = Instant::now();
            pods.patch_status(&pname, &PatchParams::default(), &Patch::Strategic(patch))
                .await?;
            until_seen(&mut seen, &format!("{ip} ready={want} in a slice"), |sl| {
                slice_shows(sl, &ip, want)
            })
            .await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("{}", latency_json(ms));
    Ok(())
}

async fn lbip(client: kube::Client, ns: &str, samples: usize) -> Result<()> {
    let svcs: Api<Service> = Api::namespaced(client, ns);
    let mut ms = Vec::with_capacity(samples);
    let mut events = watcher(
        svcs.clone(),
        watcher::Config::default().labels("bench=lbip"),
    )
    .applied_objects()
    .boxed();
    for i in 0..samples {
        let name = format!("lb-{i:04}");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"bench": "lbip"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "none"},
                     "ports": [{"port": 80}]},
        }))?;
        let t = Instant::now();
        svcs.create(&PostParams::default(), &svc).await?;
        loop {
            let s = tokio::time::timeout(Duration::from_secs(10), events.try_next())
                .await
                .context("timed out waiting for a LoadBalancer address")??
                .context("watch ended")?;
            let has_ip = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|ing| ing.iter().any(|i| i.ip.is_some()));
            if s.metadata.name.as_deref() == Some(&name) && has_ip {
                break;
            }
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("{}", latency_json(ms));
    Ok(())
}

async fn many_pods(client: kube::Client, ns: &str, count: usize) -> Result<()> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let per = i32::try_from(count / 10).context("count")?;
    let start = Instant::now();
    for d in 0..10 {
        deps.create(
            &PostParams::default(),
            &deployment(&format!("many-{d}"), per),
        )
        .await?;
    }
    let labels = format!(
        "app in ({})",
        (0..10)
            .map(|d| format!("many-{d}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    ready_pods(
        &pods,
        &labels,
        usize::try_from(per)? * 10,
        Duration::from_mins(5),
    )
    .await?;
    println!(
        "{}",
        json!({"pods": per * 10, "all_ready_s": start.elapsed().as_secs_f64()})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli: Cli = clap::Parser::parse();
    let client = kube::Client::try_default()
        .await
        .context("kube client ($KUBECONFIG)")?;
    let ns = cli.namespace.as_str();
    match cli.phase {
        Phase::Schedule { count, concurrency } => schedule(client, ns, count, concurrency).await,
        Phase::Deployment { replicas } => deployment_ready(client, ns, replicas).await,
        Phase::Endpoints { samples } => endpoints(client, ns, samples).await,
        Phase::Lbip { samples } => lbip(client, ns, samples).await,
        Phase::Pods { count } => many_pods(client, ns, count).await,
    }
}
