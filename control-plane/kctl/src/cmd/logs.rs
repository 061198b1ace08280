//! `kctl logs`: a container's log through the pods/log subresource (the API server relays it
//! from the kubelet of the pod's node), copied to stdout as it arrives.

use anyhow::{Context as _, Result, bail};
use futures::AsyncBufReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use crate::client::Ctx;

#[derive(clap::Args, Debug, Clone)]
pub struct LogsArgs {
    /// POD, pod/POD, or deployment/NAME / replicaset/NAME (one of its pods).
    pub target: String,
    /// The container (default: the pod's only or default container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Stream the log as it grows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous, terminated instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
}

pub async fn run(ctx: &mut Ctx, args: LogsArgs) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pod_name = pod_for(ctx, &args.target).await?;
    let pod = pods.get(&pod_name).await?;
    let container = if let Some(c) = &args.container {
        c.clone()
    } else {
        let (name, note) = default_container(&pod)?;
        if let Some(note) = note {
            eprintln!("{note}");
        }
        name
    };
    let lp = LogParams {
        container: Some(container),
        follow: args.follow,
        previous: args.previous,
        tail_lines: (args.tail >= 0).then_some(args.tail),
        timestamps: args.timestamps,
        ..Default::default()
    };
    let container = lp.container.clone().unwrap_or_default();
    // Bytes as they come (a log need not be UTF-8 or end in a newline); with -f until the
    // container stops or kctl is interrupted. The stream type is not Unpin: pin it.
    let mut log = Box::pin(
        pods.log_stream(&pod_name, &lp)
            .await
            .map_err(|e| log_error(e, &pod_name, &container))?,
    );
    loop {
        let chunk = log.fill_buf().await.context("reading the log")?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        emit_bytes(chunk)?;
        log.consume_unpin(n);
    }
}

/// Like `output::emit`, for bytes.
fn emit_bytes(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("writing to standard output"),
    }
}

/// Errors that say more with the pod and container named: a pod not yet on a node has no
/// log, and a bare 404 means a server without pods/log (not a missing pod, which was read
/// just before). Other errors (a container that has not started, no previous instance)
/// are the server's own words.
fn log_error(e: kube::Error, pod: &str, container: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s)
            if s.code == 404 && s.message == "the server could not find the requested resource" =>
        {
            anyhow::anyhow!(
                "the server has no log for container {container:?} of pod {pod:?} ({}: {}; does it serve pods/log?)",
                s.reason,
                s.message
            )
        }
        kube::Error::Api(s)
            if s.code == 400 && s.message.ends_with("does not have a host assigned") =>
        {
            anyhow::anyhow!(
                "no log for container {container:?} of pod {pod:?} yet: the pod is not scheduled to a node"
            )
        }
        _ => e.into(),
    }
}

/// The pod to read: named directly, or the first pod of a deployment / replica set.
pub(crate) async fn pod_for(ctx: &mut Ctx, target: &str) -> Result<String> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(target.to_string());
    };
    let info = ctx.resolve(kind).await?;
    if info.kind == "Pod" {
        return Ok(name.to_string());
    }
    if !matches!(info.kind.as_str(), "Deployment" | "ReplicaSet") {
        bail!(
            "cannot get logs from {}: only pods, deployments and replica sets have them",
            info.kind_ref()
        );
    }
    let owner = ctx.api(&info, Some(&ctx.namespace)).get(name).await?;
    let labels = owner.data["spec"]["selector"]["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",");
    if selector.is_empty() {
        bail!(
            "{}/{name} has no label selector to find its pods by",
            info.kind_ref()
        );
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut list = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let count = list.len();
    let Some(first) = list.into_iter().next().and_then(|p| p.metadata.name) else {
        bail!("no pods found for {}/{name}", info.kind_ref());
    };
    if count > 1 {
        eprintln!("Found {count} pods, using pod/{first}");
    }
    Ok(first)
}

/// The container kubectl picks when none is named: the one in the
/// `kubectl.kubernetes.io/default-container` annotation, else the first; with a note on stderr
/// when there was a choice.
pub fn default_container(pod: &Pod) -> Result<(String, Option<String>)> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let Some(first) = names.first() else {
        bail!("pod {pod_name} has no containers");
    };
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .filter(|c| names.contains(c));
    let chosen = annotated.unwrap_or(first).clone();
    let note = (names.len() > 1 && annotated.is_none()).then(|| {
        format!(
            "Defaulted container \"{chosen}\" out of: {}",
            names.join(", ")
        )
    });
    Ok((chosen, note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn explains_a_missing_log_endpoint() {
        let generic = kube::core::Status::failure(
            "the server could not find the requested resource",
            "NotFound",
        )
        .with_code(404);
        let err = log_error(kube::Error::Api(generic.boxed()), "busy", "main");
        assert_eq!(
            crate::errors::render(&err),
            "error: the server has no log for container \"main\" of pod \"busy\" (NotFound: the server could not find the requested resource; does it serve pods/log?)"
        );
        let unscheduled =
            kube::core::Status::failure("pod busy does not have a host assigned", "BadRequest")
                .with_code(400);
        let err = log_error(kube::Error::Api(unscheduled.boxed()), "busy", "main");
        assert_eq!(
            crate::errors::render(&err),
            "error: no log for container \"main\" of pod \"busy\" yet: the pod is not scheduled to a node"
        );
        let specific = kube::core::Status::failure(
            "container \"main\" in pod \"busy\" is waiting to start",
            "BadRequest",
        )
        .with_code(400);
        let err = log_error(kube::Error::Api(specific.boxed()), "busy", "main");
        assert_eq!(
            crate::errors::render(&err),
            "Error from server (BadRequest): container \"main\" in pod \"busy\" is waiting to start"
        );
    }

    #[test]
    fn picks_the_default_container() {
        let one = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(default_container(&one).unwrap(), ("a".into(), None));
        let two = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        );
        assert_eq!(
            default_container(&two).unwrap(),
            (
                "a".into(),
                Some("Defaulted container \"a\" out of: a, b".into())
            )
        );
        let annotated = pod(json!({
            "metadata": {"name": "p", "annotations": {"kubectl.kubernetes.io/default-container": "b"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        }));
        assert_eq!(default_container(&annotated).unwrap(), ("b".into(), None));
        let none = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert!(default_container(&none).is_err());
    }
}
