//! `kctl rollout status|history|undo|restart`: Deployments, as kubectl does them (undo is
//! client-side: the old ReplicaSet's template is written back into the Deployment, and the
//! controller turns that set into the new one).

use std::fmt::Write as _;
use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kproxy_apimachinery::selector::LabelSelector;
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::{Value, json};

use crate::client::Ctx;
use crate::output;
use crate::resources::parse_type_args;
use crate::tabwriter::TabWriter;
use crate::timefmt::parse_go_duration;
use crate::yaml;

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const HASH_LABEL: &str = "pod-template-hash";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Deployment annotations an undo keeps (kubectl's `annotationsToSkip`).
const KEEP_ON_UNDO: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

#[derive(clap::Args, Debug, Clone)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum RolloutCommand {
    /// Watch the rollout status of a deployment until it completes.
    Status {
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE NAME")]
        target: Vec<String>,
        /// Watch until the rollout finishes (`--watch=false` prints the status once).
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long (`30s`, `5m`; 0 waits for ever).
        #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
        timeout: Duration,
    },
    /// View previous rollout revisions.
    History {
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE NAME")]
        target: Vec<String>,
        /// Show the pod template of this revision.
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Roll back to a previous revision.
    Undo {
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE NAME")]
        target: Vec<String>,
        /// The revision to roll back to (0: the previous one).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Restart a deployment's pods (a new rollout of the same template).
    Restart {
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE NAME")]
        target: Vec<String>,
    },
}

pub async fn run(ctx: &mut Ctx, args: RolloutArgs) -> Result<()> {
    let (RolloutCommand::Status { target, .. }
    | RolloutCommand::History { target, .. }
    | RolloutCommand::Undo { target, .. }
    | RolloutCommand::Restart { target }) = &args.command;
    let name = deployment_name(ctx, target).await?;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match args.command {
        RolloutCommand::Status { watch, timeout, .. } => status(&api, &name, watch, timeout).await,
        RolloutCommand::History { revision, .. } => history(&api, &sets, &name, revision).await,
        RolloutCommand::Undo { to_revision, .. } => undo(&api, &sets, &name, to_revision).await,
        RolloutCommand::Restart { .. } => restart(&api, &name).await,
    }
}

/// `deployment/NAME` or `deployment NAME` (any alias of deployments).
async fn deployment_name(ctx: &mut Ctx, target: &[String]) -> Result<String> {
    let t = parse_type_args(target)?;
    let [one] = t.as_slice() else {
        bail!("one resource at a time, as TYPE/NAME or TYPE NAME");
    };
    let [name] = one.names.as_slice() else {
        bail!("required resource not specified: give one name");
    };
    let info = ctx.resolve(&one.resource).await?;
    if info.kind != "Deployment" {
        bail!(
            "no rollout support for {}: only deployments are rolled out in this cluster",
            info.kind_ref()
        );
    }
    Ok(name.clone())
}

// === status ===

/// kubectl's DeploymentStatusViewer: (message, done).
fn status_message(d: &Deployment) -> Result<(String, bool)> {
    let name = d.name_any();
    let s = d.status.clone().unwrap_or_default();
    if d.metadata.generation > s.observed_generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let timed_out = s.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if timed_out {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas);
    let updated = s.updated_replicas.unwrap_or(0);
    let replicas = s.replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if let Some(want) = want.filter(|w| updated < *w) {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
            ),
            false,
        ));
    }
    if replicas > updated {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
            false,
        ));
    }
    if available < updated {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
            ),
            false,
        ));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

async fn status(api: &Api<Deployment>, name: &str, watch: bool, timeout: Duration) -> Result<()> {
    let d = api.get(name).await?;
    let (msg, done) = status_message(&d)?;
    output::emit(&format!("{msg}\n"))?;
    if done || !watch {
        return Ok(());
    }
    let mut last = msg;
    let wait = async {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(api.clone(), cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(d) = events.try_next().await.context("watching the deployment")? {
            let (msg, done) = status_message(&d)?;
            if msg != last {
                output::emit(&format!("{msg}\n"))?;
                last = msg;
            }
            if done {
                return Ok(());
            }
        }
        bail!("the watch on deployment {name:?} ended")
    };
    if timeout.is_zero() {
        wait.await
    } else {
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for the condition"))?
    }
}

// === history and undo ===

fn revision(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations().get(REVISION)?.parse().ok()
}

/// The Deployment's sets (by selector, then controller uid), as kubectl finds them.
async fn owned_sets(sets: &Api<ReplicaSet>, d: &Deployment) -> Result<Vec<ReplicaSet>> {
    let sel = d
        .spec
        .as_ref()
        .map(|s| LabelSelector::from_api(&s.selector))
        .transpose()?
        .map(|s| s.to_string())
        .unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    Ok(sets
        .list(&ListParams::default().labels(&sel))
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect())
}

async fn history(
    api: &Api<Deployment>,
    sets: &Api<ReplicaSet>,
    name: &str,
    want: i64,
) -> Result<()> {
    let d = api.get(name).await?;
    let mut by_rev: BTreeMap<i64, ReplicaSet> = BTreeMap::new();
    for rs in owned_sets(sets, &d).await? {
        if let Some(r) = revision(&rs) {
            by_rev.insert(r, rs);
        }
    }
    if want > 0 {
        let Some(rs) = by_rev.get(&want) else {
            bail!("unable to find the specified revision");
        };
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        output::emit(&format!(
            "deployment.apps/{name} with revision #{want}\n{}\n",
            describe_template(&template)
        ))?;
        return Ok(());
    }
    let mut text = String::from("REVISION\tCHANGE-CAUSE\n");
    for (rev, rs) in &by_rev {
        let cause = rs
            .annotations()
            .get(CHANGE_CAUSE)
            .map_or("<none>", String::as_str);
        let _ = writeln!(text, "{rev}\t{cause}");
    }
    output::emit(&format!(
        "deployment.apps/{name} \n{}\n",
        TabWriter::for_tables().format(&text)
    ))?;
    Ok(())
}

/// The pod template of a revision, as YAML under `Pod Template:`.
fn describe_template(t: &PodTemplateSpec) -> String {
    let v = serde_json::to_value(without_hash(t)).unwrap_or(Value::Null);
    let body = yaml::to_string(&output::sorted(&v))
        .lines()
        .fold(String::new(), |mut body, l| {
            let _ = writeln!(body, "  {l}");
            body
        });
    format!("Pod Template:\n{body}")
}

/// kubectl's `deploymentRevision`: the set of `to` (0: the one before the newest).
fn pick_revision(sets: &[ReplicaSet], name: &str, to: i64) -> Result<ReplicaSet> {
    let mut revs: Vec<(i64, &ReplicaSet)> = sets
        .iter()
        .filter_map(|rs| revision(rs).map(|r| (r, rs)))
        .collect();
    revs.sort_by_key(|(r, _)| *r);
    if to > 0 {
        return revs
            .iter()
            .find(|(r, _)| *r == to)
            .map(|(_, rs)| (*rs).clone())
            .with_context(|| format!("unable to find specified revision {to} in history"));
    }
    match revs.len() {
        0 | 1 => bail!("no rollout history found for deployment {name:?}"),
        n => Ok(revs[n - 2].1.clone()),
    }
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    t
}

async fn undo(api: &Api<Deployment>, sets: &Api<ReplicaSet>, name: &str, to: i64) -> Result<()> {
    let d = api.get(name).await?;
    if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        bail!(
            "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
        );
    }
    let rs = pick_revision(&owned_sets(sets, &d).await?, name, to)?;
    let rev = revision(&rs).unwrap_or_default();
    let template = without_hash(
        &rs.spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default(),
    );
    if d.spec.as_ref().map(|s| without_hash(&s.template)).as_ref() == Some(&template) {
        output::emit(&format!(
            "deployment.apps/{name} skipped rollback (current template already matches revision {rev})\n"
        ))?;
        return Ok(());
    }
    let mut annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| KEEP_ON_UNDO.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in rs.annotations() {
        if !KEEP_ON_UNDO.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    // kubectl sends a JSON patch replacing both; a replace with the resourceVersion read
    // above does the same and refuses to undo over a change made meanwhile.
    let mut d = d;
    d.metadata.annotations = Some(annotations);
    d.metadata.managed_fields = None;
    if let Some(spec) = d.spec.as_mut() {
        spec.template = template;
    }
    api.replace(name, &PostParams::default(), &d).await?;
    output::emit(&format!("deployment.apps/{name} rolled back\n"))?;
    Ok(())
}

// === restart ===

async fn restart(api: &Api<Deployment>, name: &str) -> Result<()> {
    let d = api.get(name).await?;
    if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        bail!(
            "deployments.apps {name:?} can't restart paused deployment (run rollout resume first)"
        );
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    output::emit(&format!("deployment.apps/{name} restarted\n"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn deploy(generation: i64, status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn status_messages_are_kubectls() {
        let msg = |d: &Deployment| status_message(d).unwrap();
        assert_eq!(
            msg(&deploy(2, json!({"observedGeneration": 1}))).0,
            "Waiting for deployment spec update to be observed..."
        );
        assert_eq!(
            msg(&deploy(
                1,
                json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 3})
            ))
            .0,
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            msg(&deploy(
                1,
                json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 4})
            ))
            .0,
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            msg(&deploy(1, json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 1}))).0,
            "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available..."
        );
        assert_eq!(
            msg(&deploy(
                1,
                json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            )),
            (
                "deployment \"web\" successfully rolled out".to_string(),
                true
            )
        );
        let stuck = deploy(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(
            status_message(&stuck).unwrap_err().to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
    }

    fn rs(rev: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{rev}"), "annotations": {REVISION: rev}},
        }))
        .unwrap()
    }

    #[test]
    fn undo_picks_the_previous_or_the_named_revision() {
        let sets = [rs("1"), rs("3"), rs("2")];
        assert_eq!(pick_revision(&sets, "web", 0).unwrap().name_any(), "web-2");
        assert_eq!(pick_revision(&sets, "web", 1).unwrap().name_any(), "web-1");
        assert_eq!(
            pick_revision(&sets, "web", 7).unwrap_err().to_string(),
            "unable to find specified revision 7 in history"
        );
        assert_eq!(
            pick_revision(&sets[..1], "web", 0).unwrap_err().to_string(),
            "no rollout history found for deployment \"web\""
        );
    }

    #[test]
    fn durations() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RolloutArgs,
        }
        let timeout = |t: &str| -> Result<Duration, clap::Error> {
            let w = Wrapper::try_parse_from(["rollout", "status", "deploy/web", t])?;
            match w.args.command {
                RolloutCommand::Status { timeout, .. } => Ok(timeout),
                _ => unreachable!(),
            }
        };
        assert_eq!(timeout("--timeout=30s").unwrap(), Duration::from_secs(30));
        assert_eq!(timeout("--timeout=2m").unwrap(), Duration::from_mins(2));
        assert_eq!(timeout("--timeout=0").unwrap(), Duration::ZERO);
        assert!(timeout("--timeout=x").is_err());
        assert_eq!(timeout("--timeout=1m30s").unwrap(), Duration::from_secs(90));
    }
}
