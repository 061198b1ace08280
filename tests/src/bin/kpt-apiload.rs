//! Load generator for `cargo xtask bench api`: a kube-rs client (as the cluster's components
//! are) driving the API server through a kubeconfig. Each phase prints one JSON line.
//!
//! * `creates --count N --concurrency C` — N pods created by C tasks: `{"creates_per_s":..}`.
//! * `gets --seconds S --concurrency C --count N [--any-version]` — gets of random existing
//!   pods, consistent or with `resourceVersion=0`: `{"gets_per_s":..}`.
//! * `watch --watchers W --events E --concurrency C` — W watch streams from the current
//!   resourceVersion, then E label patches: every watcher must see every event in order.
//!   `{"watchers":W,"complete":..,"in_order":..,"last_delivery_ms":..}`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, GetParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    phase: Phase,
    #[arg(long, global = true, default_value = "kpt-bench")]
    namespace: String,
}

#[derive(Subcommand)]
enum Phase {
    Creates {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        concurrency: usize,
    },
    Gets {
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        count: usize,
        /// Send `resourceVersion=0` ("any", served from the watch cache as kube-apiserver
        /// serves it) instead of a consistent read.
        #[arg(long)]
        any_version: bool,
    },
    Watch {
        #[arg(long)]
        watchers: usize,
        #[arg(long)]
        events: usize,
        #[arg(long)]
        concurrency: usize,
    },
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{
            "name": "web", "image": "httpd",
            "ports": [{"containerPort": 80, "name": "http"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }]}
    }))
    .expect("a valid pod")
}

fn name(i: usize) -> String {
    format!("p-{i:06}")
}

/// Runs `work(i)` for i in 0..count over `concurrency` tasks.
async fn fan_out<F, Fut>(count: usize, concurrency: usize, work: F) -> Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = Arc::clone(&next);
            let work = Arc::clone(&work);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), anyhow::Error>(());
                    }
                    work(i).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let client = kube::Client::try_default()
        .await
        .context("kube client from the kubeconfig")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &cli.namespace);
    match cli.phase {
        Phase::Creates { count, concurrency } => {
            let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            let want = serde_json::from_value(json!({"metadata": {"name": cli.namespace}}))?;
            match ns.create(&PostParams::default(), &want).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("creating the bench namespace"),
            }
            let p = pods.clone();
            let took = fan_out(count, concurrency, move |i| {
                let p = p.clone();
                async move {
                    p.create(&PostParams::default(), &pod(&name(i))).await?;
                    Ok(())
                }
            })
            .await?;
            let rate = count as f64 / took.as_secs_f64();
            println!(
                "{}",
                json!({"creates": count, "elapsed_ms": u64::try_from(took.as_millis()).unwrap_or(u64::MAX), "creates_per_s": rate})
            );
        }
        Phase::Gets {
            seconds,
            concurrency,
            count,
            any_version,
        } => {
            let params = if any_version {
                GetParams::any()
            } else {
                GetParams::default()
            };
            let done = Arc::new(AtomicUsize::new(0));
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|t| {
                    let p = pods.clone();
                    let done = Arc::clone(&done);
                    let params = params.clone();
                    tokio::spawn(async move {
                        let mut i = t * 7919;
                        while Instant::now() < deadline {
                            i = (i + 104_729) % count;
                            p.get_with(&name(i), &params).await?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<(), anyhow::Error>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / start.elapsed().as_secs_f64();
            println!("{}", json!({"gets": n, "gets_per_s": rate}));
        }
        Phase::Watch {
            watchers,
            events,
            concurrency,
        } => {
            let list = pods.list_metadata(&ListParams::default().limit(1)).await?;
            let rv = list
                .metadata
                .resource_version
                .context("list resourceVersion")?;
            let count = pods
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len();
            if count == 0 {
                bail!("the watch phase patches existing pods; run `creates` first");
            }
            let start = Arc::new(tokio::sync::OnceCell::<Instant>::new());
            let mut streams = Vec::new();
            for _ in 0..watchers {
                let s = pods
                    .watch(&WatchParams::default().timeout(290), &rv)
                    .await?
                    .boxed();
                streams.push(s);
            }
            let handles: Vec<_> = streams
                .into_iter()
                .map(|mut s| {
                    let start = Arc::clone(&start);
                    tokio::spawn(async move {
                        let mut seen = 0usize;
                        let mut last = 0u64;
                        let mut in_order = true;
                        while seen < events {
                            match s.try_next().await? {
                                Some(WatchEvent::Modified(p)) => {
                                    let v: u64 = p
                                        .metadata
                                        .resource_version
                                        .unwrap_or_default()
                                        .parse()
                                        .unwrap_or(0);
                                    in_order &= v > last;
                                    last = v;
                                    seen += 1;
                                }
                                Some(WatchEvent::Bookmark(_)) => {}
                                Some(other) => bail!("unexpected watch event {other:?}"),
                                None => break,
                            }
                        }
                        let at = start
                            .get()
                            .map(std::time::Instant::elapsed)
                            .unwrap_or_default();
                        Ok::<_, anyhow::Error>((seen == events, in_order, at))
                    })
                })
                .collect();
            let p = pods.clone();
            let start2 = Arc::clone(&start);
            fan_out(events, concurrency, move |i| {
                let p = p.clone();
                let start = Arc::clone(&start2);
                async move {
                    let _ = start.set(Instant::now());
                    let patch = json!({"metadata": {"labels": {"seq": i.to_string()}}});
                    p.patch(
                        &name(i % count),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                    Ok(())
                }
            })
            .await?;
            let mut complete = 0;
            let mut ordered = 0;
            let mut last = Duration::ZERO;
            for h in handles {
                let (c, o, at) = tokio::time::timeout(Duration::from_mins(2), h)
                    .await
                    .context("watchers timed out")???;
                complete += usize::from(c);
                ordered += usize::from(o);
                last = last.max(at);
            }
            println!(
                "{}",
                json!({"watchers": watchers, "events": events, "complete": complete, "in_order": ordered,
                       "last_delivery_ms": last.as_secs_f64() * 1000.0})
            );
        }
    }
    Ok(())
}
