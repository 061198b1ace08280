//! Watches the pods bound to this node (kube-runtime watcher) and Docker's container events,
//! and keeps one worker per pod. After each full listing it removes what no pod wants:
//! containers and addresses left by pods deleted while the kubelet was away.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use bollard::query_parameters::EventsOptions;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kproxy_pod_labels as labels;
use kube::{
    Api,
    api::ListParams,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    plan,
    pod::{Worker, teardown},
    shared::Shared,
};

struct Handle {
    tx: watch::Sender<Option<Pod>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

pub async fn run(shared: Arc<Shared>) -> Result<()> {
    let node = shared.runtime.node.clone();
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut pods = watcher(api, cfg).default_backoff().boxed();
    let mut events = docker_events(&shared).boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut reap = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            ev = pods.next() => match ev {
                None => anyhow::bail!("the pod watch ended"),
                Some(Err(e)) => warn!(error = %e, "pod watch"),
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        listed.insert(uid);
                    }
                    upsert(&shared, &mut workers, pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods deleted while the watch was down.
                    for (uid, h) in &workers {
                        if !listed.contains(uid) {
                            let _ = h.tx.send(None);
                        }
                    }
                    tokio::spawn(remove_orphans(shared.clone(), listed.clone()));
                }
                Some(Ok(watcher::Event::Apply(pod))) => upsert(&shared, &mut workers, pod),
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(h) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        let _ = h.tx.send(None);
                    }
                }
            },
            Some(uid) = events.next() => {
                if let Some(h) = workers.get(&uid) {
                    h.wake.notify_one();
                }
            },
            _ = reap.tick() => workers.retain(|_, h| !h.task.is_finished()),
        }
    }
}

fn upsert(shared: &Arc<Shared>, workers: &mut HashMap<String, Handle>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    match workers.get(&uid) {
        Some(h) if !h.task.is_finished() => {
            let _ = h.tx.send(Some(pod));
        }
        _ => {
            let key = plan::key(&pod);
            let (tx, rx) = watch::channel(Some(pod));
            let wake = Arc::new(Notify::new());
            let worker = Worker::new(shared.clone(), uid.clone(), key);
            let task = tokio::spawn(worker.run(rx, wake.clone()));
            workers.insert(uid, Handle { tx, wake, task });
        }
    }
}

/// Pod uids of Docker container events on this node (start, die, ...), forever; the stream
/// reconnects after errors.
fn docker_events(shared: &Arc<Shared>) -> impl futures::Stream<Item = String> + use<> {
    let docker = shared.runtime.docker.clone();
    let node = shared.runtime.node.clone();
    futures::stream::unfold(true, move |first| {
        let docker = docker.clone();
        let node = node.clone();
        async move {
            if !first {
                // The previous connection ended: do not spin while dockerd is away.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![labels::node_filter(&node)]),
                (
                    "event".to_string(),
                    ["start", "die", "oom", "destroy"]
                        .map(String::from)
                        .to_vec(),
                ),
            ]);
            let stream = docker
                .events(Some(EventsOptions {
                    filters: Some(filters),
                    ..Default::default()
                }))
                .map_ok(|ev| {
                    ev.actor
                        .and_then(|a| a.attributes)
                        .and_then(|mut a| a.remove(labels::POD_UID))
                })
                .try_filter_map(|uid| async move { Ok(uid) });
            // One connection's worth of events; when it ends, the next one is opened.
            Some((stream, false))
        }
    })
    .flat_map(|s| {
        s.filter_map(|r| async move {
            match r {
                Ok(uid) => Some(uid),
                Err(e) => {
                    warn!(error = %e, "docker events");
                    None
                }
            }
        })
    })
}

/// Tears down containers, pod directories (and their subPath mounts) and addresses of pods
/// that are no longer bound here.
async fn remove_orphans(shared: Arc<Shared>, live: HashSet<String>) {
    // Snapshot what exists first: containers, pod directories and addresses of this node.
    let containers = match shared.runtime.pod_uids().await {
        Ok(u) => u,
        Err(e) => return warn!(error = %format_args!("{e:#}"), "looking for orphaned containers"),
    };
    let dirs = crate::volumes::pod_uids(&shared.state_dir);
    let addresses: Vec<String> = shared
        .net
        .ipam
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .allocations()
        .keys()
        .cloned()
        .collect();
    let suspects = |uid: &String| !live.contains(uid);
    if !containers.keys().any(suspects)
        && !addresses.iter().any(suspects)
        && !dirs.iter().any(suspects)
    {
        return;
    }
    // A pod bound after the watch's listing is not in `live`, yet its worker may already have
    // containers or an address. Pods bound now (listed after the snapshot) include it.
    let api: Api<Pod> = Api::all(shared.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", shared.runtime.node));
    let bound: HashSet<String> = match api.list(&lp).await {
        Ok(l) => l.items.into_iter().filter_map(|p| p.metadata.uid).collect(),
        Err(e) => return warn!(error = %e, "looking for orphaned pods"),
    };
    let orphan = |uid: &String| !live.contains(uid) && !bound.contains(uid);
    for (uid, (ns, name)) in containers.iter().filter(|(u, _)| orphan(u)) {
        info!(namespace = %ns, pod = %name, %uid, "removing the containers of a pod that is gone");
        // Also frees the address.
        if let Err(e) = teardown(&shared, uid, Duration::ZERO).await {
            warn!(%uid, error = %format_args!("{e:#}"), "removing an orphaned pod");
        }
    }
    // A pod whose containers are gone may still have mounts in its directory.
    for uid in dirs
        .iter()
        .filter(|u| orphan(u) && !containers.contains_key(*u))
    {
        info!(%uid, "removing the directory of a pod that is gone");
        if let Err(e) = teardown(&shared, uid, Duration::ZERO).await {
            warn!(%uid, error = %format_args!("{e:#}"), "removing an orphaned pod directory");
        }
    }
    for uid in addresses
        .iter()
        .filter(|u| orphan(u) && !containers.contains_key(*u) && !dirs.contains(*u))
    {
        if let Err(e) = shared.net.release(uid).await {
            warn!(%uid, error = %format_args!("{e:#}"), "releasing an orphaned address");
        }
    }
}
