//! `cargo xtask bench kubelet`: pod start latency through the whole system (API server →
//! kubelet → Docker → pod network → status Ready) against, in the same run and interleaved,
//! the bare minimum: one `docker run` (Engine API) plus manual veth plumbing into its
//! namespace. Then 50 pods at once, and the kubelet's RSS with them running.
//! Results: target/bench/kubelet.{md,svg}.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig},
    query_parameters::{ListContainersOptions, RemoveContainerOptions},
};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kproxy_podnet::Ipv4Net;
use kproxy_tests::{
    Daemon,
    apiserver::{ApiServer, TempDir},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::{Condition as _, await_condition, conditions},
};

use super::{chart::Chart, procfs::status_kib};
use crate::util::{median, step};

pub struct KubeletBench {
    /// Pods started one at a time (and as many bare containers), for the latency medians.
    pub sequential: usize,
    /// Pods created at once.
    pub bulk: usize,
}

const NODE: &str = "kbench";
const BRIDGE: &str = "kbbench0";
const POD_CIDR: &str = "10.252.0.0/24";
const BASE_BRIDGE: &str = "kbbase0";
const BASE_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 1);
const IMAGE: &str = "kproxy/httpd:1";

/// Removes what the bench created on the host, also after an earlier interrupted run.
async fn cleanup(docker: &Docker) {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![kproxy_pod_labels::node_filter(NODE)],
    )]);
    let base = HashMap::from([(
        "label".to_string(),
        vec!["io.kproxy.bench=base".to_string()],
    )]);
    for f in [filters, base] {
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(f),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for c in list.into_iter().filter_map(|c| c.id) {
            let _ = docker
                .remove_container(
                    &c,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
    for (br, cidr) in [
        (BRIDGE, POD_CIDR.parse::<Ipv4Net>().ok()),
        (
            BASE_BRIDGE,
            Ipv4Net::new(BASE_GATEWAY, 24).ok().map(|n| n.trunc()),
        ),
    ] {
        if let Some(cidr) = cidr {
            let _ = kproxy_podnet::disable_forwarding(br, cidr);
        }
        let _ = Command::new("ip")
            .args(["link", "del", br])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn create(docker: &Docker, name: String, image: &str, network: String) -> Result<String> {
    Ok(docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(image.into()),
                labels: Some(HashMap::from([(
                    "io.kproxy.bench".to_string(),
                    "base".to_string(),
                )])),
                host_config: Some(HostConfig {
                    network_mode: Some(network),
                    init: Some(image == IMAGE),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?
        .id)
}

async fn remove(docker: &Docker, id: &str) -> Result<()> {
    Ok(docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?)
}

/// The baselines, by hand through the Engine API: `pod == false` is one container (network
/// none) and a veth into its namespace; `pod == true` is the same Docker work as a pod (a
/// pause container owning the namespace, the veth, then the app container joining it).
async fn bare_once(docker: &Docker, i: usize, pod: bool) -> Result<Duration> {
    let t0 = Instant::now();
    let first = if pod { "kproxy/pause:1" } else { IMAGE };
    let id = create(
        docker,
        format!("kbench-base-{i}-{pod}"),
        first,
        "none".into(),
    )
    .await?;
    docker.start_container(&id, None).await?;
    let pid = docker
        .inspect_container(&id, None)
        .await?
        .state
        .and_then(|s| s.pid)
        .context("no pid")?;
    let ip = Ipv4Addr::new(10, 253, 0, 10 + u8::try_from(i % 200).expect("below 200"));
    kproxy_podnet::attach(
        Path::new(&format!("/proc/{pid}/ns/net")),
        BASE_BRIDGE,
        &format!("kbb{i}"),
        ip,
        24,
        BASE_GATEWAY,
    )
    .await?;
    let app = if pod {
        let app = create(
            docker,
            format!("kbench-base-{i}-app"),
            IMAGE,
            format!("container:{id}"),
        )
        .await?;
        docker.start_container(&app, None).await?;
        Some(app)
    } else {
        None
    };
    let took = t0.elapsed();
    if let Some(app) = app {
        remove(docker, &app).await?;
    }
    remove(docker, &id).await?;
    Ok(took)
}

fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "httpd", "image": IMAGE}]
        }
    }))?)
}

fn is_ready() -> impl kube::runtime::wait::Condition<Pod> {
    conditions::is_pod_running().and(|p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}

async fn wait_ready(pods: &Api<Pod>, name: &str, limit: Duration) -> Result<()> {
    match tokio::time::timeout(limit, await_condition(pods.clone(), name, is_ready())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("waiting for pod {name}: {e}"),
        Err(_) => bail!("pod {name} not Ready within {limit:?}"),
    }
}

async fn delete_all(pods: &Api<Pod>) -> Result<()> {
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let t0 = Instant::now();
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if t0.elapsed() > Duration::from_mins(2) {
            bail!("pods not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn kubelet_once(pods: &Api<Pod>, i: usize) -> Result<Duration> {
    let name = format!("lat-{i}");
    let t0 = Instant::now();
    pods.create(&PostParams::default(), &pod(&name)?).await?;
    wait_ready(pods, &name, Duration::from_mins(1)).await?;
    let took = t0.elapsed();
    delete_all(pods).await?;
    Ok(took)
}

struct Figures {
    bare_ms: Vec<f64>,
    by_hand_ms: Vec<f64>,
    kubelet_ms: Vec<f64>,
    bulk_s: f64,
    bulk: usize,
    rss_idle_mib: f64,
    rss_bulk_mib: f64,
}

pub fn run(b: &KubeletBench, target: &Path, out_dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let docker = Docker::connect_with_local_defaults().context("connecting to Docker")?;
    rt.block_on(async {
        for image in ["kproxy/pause:1", IMAGE] {
            if docker.inspect_image(image).await.is_err() {
                bail!("image {image} is missing: run `cargo xtask images`");
            }
        }
        cleanup(&docker).await;
        Ok(())
    })?;
    let data = TempDir::new("kbench");
    let api = ApiServer::start_with(&target.join("release/kproxy-apiserver"), data.path(), &[]);
    let kubeconfig = data.path().join("kubelet.kubeconfig");
    crate::util::run_cmd(
        Command::new(target.join("release/kproxy-apiserver"))
            .args(["node-kubeconfig", NODE, "--server", &api.url, "--out"])
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(data.path())
            .stdout(std::process::Stdio::null()),
    )?;
    let mut cmd = Command::new(target.join("release/kproxy-kubelet"));
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node-name", NODE, "--node-ip", "127.0.0.1", "--port", "0"])
        .args(["--pod-cidr", POD_CIDR, "--bridge", BRIDGE])
        .arg("--data-dir")
        .arg(data.path().join("kubelet"))
        .env("RUST_LOG", "warn,kproxy_kubelet=info");
    let kubelet = Daemon::spawn(cmd);
    let t0 = Instant::now();
    while !kubelet.logged("kubelet ready") {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the kubelet did not start:\n{}", kubelet.lines().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = rt.block_on(measure(b, &docker, &api, &kubelet));
    drop(kubelet);
    rt.block_on(cleanup(&docker));
    let f = result?;
    write_report(&f, out_dir)
}

async fn measure(
    b: &KubeletBench,
    docker: &Docker,
    api: &ApiServer,
    kubelet: &Daemon,
) -> Result<Figures> {
    let pods: Api<Pod> = Api::namespaced(kproxy_tests::control::client(api).await, "default");
    kproxy_podnet::ensure_bridge(BASE_BRIDGE, Ipv4Net::new(BASE_GATEWAY, 24)?).await?;
    let rss_idle_mib = status_kib(kubelet.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;

    step(&format!(
        "bench kubelet: {} pod starts, interleaved with as many bare docker run + veth",
        b.sequential
    ));
    // One warm-up of each so image and page caches are equally warm.
    bare_once(docker, 999, false).await?;
    bare_once(docker, 999, true).await?;
    kubelet_once(&pods, 999).await?;
    let (mut bare_ms, mut by_hand_ms, mut kubelet_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..b.sequential {
        let bare = bare_once(docker, i, false).await?;
        let by_hand = bare_once(docker, i, true).await?;
        let pod = kubelet_once(&pods, i).await?;
        bare_ms.push(bare.as_secs_f64() * 1e3);
        by_hand_ms.push(by_hand.as_secs_f64() * 1e3);
        kubelet_ms.push(pod.as_secs_f64() * 1e3);
        println!(
            "  {}/{}: bare {:.0} ms, pod by hand {:.0} ms, pod via kubelet {:.0} ms",
            i + 1,
            b.sequential,
            bare_ms[i],
            by_hand_ms[i],
            kubelet_ms[i]
        );
    }

    step(&format!("bench kubelet: {} pods at once", b.bulk));
    let t0 = Instant::now();
    let names: Vec<String> = (0..b.bulk).map(|i| format!("bulk-{i}")).collect();
    futures::stream::iter(names.iter())
        .map(|n| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(n)?)
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    futures::future::try_join_all(
        names
            .iter()
            .map(|n| wait_ready(&pods, n, Duration::from_mins(2))),
    )
    .await?;
    let bulk_s = t0.elapsed().as_secs_f64();
    println!("  {} pods Ready in {bulk_s:.1} s", b.bulk);
    // Let the kubelet settle into its steady state before reading its memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_bulk_mib = status_kib(kubelet.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    delete_all(&pods).await?;
    Ok(Figures {
        bare_ms,
        by_hand_ms,
        kubelet_ms,
        bulk_s,
        bulk: b.bulk,
        rss_idle_mib,
        rss_bulk_mib,
    })
}

fn write_report(f: &Figures, out_dir: &Path) -> Result<()> {
    let bare = median(&mut f.bare_ms.clone());
    let by_hand = median(&mut f.by_hand_ms.clone());
    let pod = median(&mut f.kubelet_ms.clone());
    let ratio = pod / bare;
    let ratio_by_hand = pod / by_hand;
    let mut md = String::new();
    writeln!(md, "# Kubelet benchmark\n")?;
    writeln!(
        md,
        "Pod start: create a Pod bound to the node → its status is Running and Ready (API server, \
         kubelet watch, sandbox + app container, veth, status write). Baseline, interleaved in the \
         same run: (a) create + start one container (network none) through the Engine API and \
         plumb a veth into its namespace; (b) the same Docker work as a pod, by hand: a pause \
         container owning the namespace, the veth, then the app container joining it. Image \
         `{IMAGE}`; {} runs each.\n",
        f.kubelet_ms.len()
    )?;
    writeln!(md, "| | median | min | max |\n|---|---:|---:|---:|")?;
    for (name, v) in [
        ("(a) bare docker run + veth", &f.bare_ms),
        ("(b) pod by hand (pause + veth + app)", &f.by_hand_ms),
        ("pod via kubelet", &f.kubelet_ms),
    ] {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        writeln!(
            md,
            "| {name} | {:.0} ms | {min:.0} ms | {max:.0} ms |",
            median(&mut v.clone())
        )?;
    }
    writeln!(md, "\n| target | measured | met |\n|---|---:|---|")?;
    let yes = |ok: bool| if ok { "yes" } else { "no" };
    writeln!(
        md,
        "| pod start ≤ 1.3× (a) bare docker run + veth | {ratio:.2}× | {} |",
        yes(ratio <= 1.3)
    )?;
    writeln!(
        md,
        "| pod start ≤ 1.3× (b) the same Docker work by hand | {ratio_by_hand:.2}× | {} |",
        yes(ratio_by_hand <= 1.3)
    )?;
    writeln!(
        md,
        "| {} pods Running in ≤ 30 s | {:.1} s | {} |",
        f.bulk,
        f.bulk_s,
        yes(f.bulk_s <= 30.0)
    )?;
    writeln!(
        md,
        "| kubelet RSS ≤ 30 MB with {} pods | {:.1} MiB (idle {:.1} MiB) | {} |",
        f.bulk,
        f.rss_bulk_mib,
        f.rss_idle_mib,
        yes(f.rss_bulk_mib * 1.048_576 <= 30.0)
    )?;
    std::fs::write(out_dir.join("kubelet.md"), &md)?;
    std::fs::write(out_dir.join("kubelet.svg"), svg(f))?;
    print!("{md}");
    println!(
        "bench: wrote {} and kubelet.svg",
        out_dir.join("kubelet.md").display()
    );
    Ok(())
}

/// Start latency of each run: bare, by hand and via the kubelet, one line each.
fn svg(f: &Figures) -> String {
    let points = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, ms)| ((i + 1) as f64, *ms))
            .collect()
    };
    Chart::lines("pod start latency per run (ms)")
        .size(660.0, 340.0)
        .x_label("run")
        .y_label("ms")
        .line("(a) bare", "#888", points(&f.bare_ms))
        .line("(b) by hand", "#2ca02c", points(&f.by_hand_ms))
        .line("kubelet", "#1f77b4", points(&f.kubelet_ms))
        .render()
}
