//! `kctl delete`: by name, by selector, or everything in manifests; then (by default) wait
//! until the objects are gone.

use std::time::Duration;

use anyhow::{Result, bail};
use kube::api::{DeleteParams, ListParams, PropagationPolicy};

use super::create::{mapping_error, render_manifest_error};
use crate::client::Ctx;
use crate::errors::{self, Reported};
use crate::manifest;
use crate::output;
use crate::resources::{ResourceInfo, parse_type_args};
use crate::timefmt::parse_go_duration;

#[derive(clap::Args, Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "one field per kubectl flag")]
pub struct DeleteArgs {
    /// TYPE[,TYPE...] [NAME...] or TYPE/NAME...
    #[arg(value_name = "TYPE [NAME...]", required_unless_present = "filenames")]
    pub args: Vec<String>,
    /// Files, directories or `-` with the objects to delete.
    #[arg(short = 'f', long = "filename", value_name = "FILE", conflicts_with_all = ["args", "selector", "all"])]
    pub filenames: Vec<String>,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete the objects matching this field selector.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Delete all objects of the type(s) in the namespace.
    #[arg(long)]
    pub all: bool,
    /// With --all or a selector: in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Wait until the objects are gone (`--wait=false` to return at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// How long to wait (Go duration, e.g. 30s, 2m); 0 means a week, like kubectl.
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub timeout: Duration,
    /// What happens to dependents (e.g. a deployment's replica sets).
    #[arg(long, value_enum, default_value = "background")]
    pub cascade: Cascade,
    /// Seconds the object gets to terminate (default: the object's own).
    #[arg(long)]
    pub grace_period: Option<u32>,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

/// An object whose deletion was accepted, to wait for.
struct Deleted {
    info: ResourceInfo,
    namespace: Option<String>,
    name: String,
    uid: Option<String>,
}

pub async fn run(ctx: &mut Ctx, args: DeleteArgs) -> Result<()> {
    let dp = DeleteParams {
        propagation_policy: Some(match args.cascade {
            Cascade::Background => PropagationPolicy::Background,
            Cascade::Foreground => PropagationPolicy::Foreground,
            Cascade::Orphan => PropagationPolicy::Orphan,
        }),
        grace_period_seconds: args.grace_period,
        ..Default::default()
    };
    let mut failed = false;
    let mut deleted = Vec::new();
    if args.filenames.is_empty() {
        let targets = parse_type_args(&args.args)?;
        let by_name = targets.iter().any(|t| !t.names.is_empty());
        let by_query = args.all || args.selector.is_some() || args.field_selector.is_some();
        if by_name && by_query {
            bail!("names cannot be combined with --all or selectors");
        }
        if !by_name && !by_query {
            bail!("resource(s) were provided, but no name was specified");
        }
        if args.all_namespaces && !by_query {
            bail!("--all-namespaces needs --all or a selector");
        }
        let mut resolved = Vec::new();
        for t in targets {
            for info in ctx.resolve_many(&t.resource).await? {
                resolved.push((info, t.names.clone()));
            }
        }
        let mut matched_any = false;
        for (info, names) in resolved {
            let scope = (info.namespaced && !args.all_namespaces).then(|| ctx.namespace.clone());
            let names: Vec<(Option<String>, String)> = if by_query {
                let lp = ListParams {
                    label_selector: args.selector.clone(),
                    field_selector: args.field_selector.clone(),
                    ..Default::default()
                };
                match ctx.api(&info, scope.as_deref()).list(&lp).await {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .map(|o| {
                            (
                                o.metadata.namespace.clone().filter(|_| info.namespaced),
                                o.metadata.name.unwrap_or_default(),
                            )
                        })
                        .collect(),
                    Err(e) => {
                        failed = true;
                        eprintln!("{}", errors::render(&e.into()));
                        continue;
                    }
                }
            } else {
                names.into_iter().map(|n| (scope.clone(), n)).collect()
            };
            matched_any |= !names.is_empty();
            for (ns, name) in names {
                if let Err(e) = delete_one(ctx, &info, ns, &name, &dp, &args, &mut deleted).await {
                    failed = true;
                    eprintln!("{}", errors::render(&e));
                }
            }
        }
        if by_query && !matched_any && !failed {
            eprintln!("No resources found");
        }
    } else {
        for m in manifest::load_all(&args.filenames)? {
            let target = async {
                let info = ctx
                    .resolve_kind(m.api_version(), m.kind())
                    .await
                    .map_err(|e| e.context(mapping_error(&m)))?;
                let ns = ctx.manifest_namespace(&info, m.namespace())?;
                anyhow::Ok((info, ns))
            }
            .await;
            match target {
                Ok((info, ns)) => {
                    if let Err(e) =
                        delete_one(ctx, &info, ns, m.name(), &dp, &args, &mut deleted).await
                    {
                        failed = true;
                        eprintln!("{}", render_manifest_error(&e, "deleting", &m));
                    }
                }
                Err(e) => {
                    failed = true;
                    eprintln!("{}", errors::render(&e));
                }
            }
        }
    }
    if args.wait
        && let Err(e) = wait_gone(ctx, &deleted, effective_timeout(args.timeout)).await
    {
        failed = true;
        eprintln!("{}", errors::render(&e));
    }
    if failed { Err(Reported.into()) } else { Ok(()) }
}

async fn delete_one(
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: Option<String>,
    name: &str,
    dp: &DeleteParams,
    args: &DeleteArgs,
    deleted: &mut Vec<Deleted>,
) -> Result<()> {
    let api = ctx.api(info, ns.as_deref());
    match api.delete(name, dp).await {
        Ok(either) => {
            // The object comes back while it is still terminating (finalizers, grace period).
            let uid = either.left().and_then(|o| o.metadata.uid);
            output::emit(&format!("{}\n", deleted_line(&info.kind_ref(), name)))?;
            deleted.push(Deleted {
                info: info.clone(),
                namespace: ns,
                name: name.to_string(),
                uid,
            });
            Ok(())
        }
        Err(e) if args.ignore_not_found && errors::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `pod "web" deleted`.
pub fn deleted_line(kind_ref: &str, name: &str) -> String {
    format!("{kind_ref} \"{name}\" deleted")
}

/// kubectl's `--timeout=0`: wait "forever", which it defines as a week.
fn effective_timeout(t: Duration) -> Duration {
    if t.is_zero() {
        Duration::from_hours(168)
    } else {
        t
    }
}

/// Polls until every object is gone (or replaced by a new one with another uid).
async fn wait_gone(ctx: &Ctx, deleted: &[Deleted], timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for d in deleted {
        let api = ctx.api(&d.info, d.namespace.as_deref());
        loop {
            match api.get_opt(&d.name).await? {
                None => break,
                Some(o) if d.uid.is_some() && o.metadata.uid != d.uid => break,
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out waiting for the condition on {}/{}",
                    resource_ref(&d.info),
                    d.name
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// `pods`, `deployments.apps`: how kubectl names a resource in wait messages.
fn resource_ref(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::catalog;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: DeleteArgs,
    }

    fn parse(args: &[&str]) -> Result<DeleteArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("delete").chain(args.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn messages_match_kubectl() {
        assert_eq!(deleted_line("pod", "x"), "pod \"x\" deleted");
        assert_eq!(
            deleted_line("deployment.apps", "web"),
            "deployment.apps \"web\" deleted"
        );
        let c = catalog();
        assert_eq!(resource_ref(c.resolve("po").unwrap()), "pods");
        assert_eq!(
            resource_ref(c.resolve("deploy").unwrap()),
            "deployments.apps"
        );
    }

    #[test]
    fn wait_defaults_and_timeouts() {
        let a = parse(&["pod", "x"]).unwrap();
        assert!(a.wait);
        assert_eq!(effective_timeout(a.timeout), Duration::from_hours(168));
        assert!(!parse(&["pod", "x", "--wait=false"]).unwrap().wait);
        assert!(parse(&["pod", "x", "--wait"]).unwrap().wait);
        assert_eq!(
            parse(&["pod", "x", "--timeout=1m30s"]).unwrap().timeout,
            Duration::from_secs(90)
        );
        assert!(parse(&["pod", "x", "--timeout=soon"]).is_err());
        assert_eq!(
            parse(&["pod", "x", "--cascade=orphan"]).unwrap().cascade,
            Cascade::Orphan
        );
    }

    #[test]
    fn files_exclude_names_and_something_is_required() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["-f", "x.yaml"]).is_ok());
        assert!(parse(&["pods", "-f", "x.yaml"]).is_err());
        assert!(parse(&["-f", "x.yaml", "-l", "a=b"]).is_err());
        assert!(parse(&["pods", "-l", "app=web"]).is_ok());
    }
}
