//! `kctl scale`: set the replica count through the scale subresource.

use anyhow::{Result, bail};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::client::Ctx;
use crate::errors::{self, Reported};
use crate::output;
use crate::resources::parse_type_args;

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// TYPE NAME... or TYPE/NAME... (deployments, replicasets, anything with a scale subresource).
    #[arg(required = true, value_name = "TYPE NAME")]
    pub args: Vec<String>,
    /// The new number of replicas.
    #[arg(long, required = true, value_parser = clap::value_parser!(i32).range(0..))]
    pub replicas: i32,
    /// Only scale if the current count is this (a precondition).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub current_replicas: Option<i32>,
}

pub async fn run(ctx: &mut Ctx, args: ScaleArgs) -> Result<()> {
    let targets = parse_type_args(&args.args)?;
    let mut resolved = Vec::new();
    for t in targets {
        if t.names.is_empty() {
            bail!("resource(s) were provided, but no name was specified");
        }
        let info = ctx.resolve(&t.resource).await?;
        if !info.has_subresource("scale") {
            bail!(
                "cannot scale {}: the server has no scale subresource for it",
                info.plural
            );
        }
        resolved.push((info, t.names));
    }
    let mut failed = false;
    for (info, names) in &resolved {
        let api = ctx.api(info, Some(&ctx.namespace));
        for name in names {
            let result = async {
                if let Some(expected) = args.current_replicas {
                    let scale = api.get_scale(name).await?;
                    let current = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
                    check_current(expected, current)?;
                }
                let patch = json!({"spec": {"replicas": args.replicas}});
                api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => output::emit(&format!("{}/{name} scaled\n", info.kind_ref()))?,
                Err(e) => {
                    failed = true;
                    eprintln!("{}", errors::render(&e));
                }
            }
        }
    }
    if failed { Err(Reported.into()) } else { Ok(()) }
}

/// kubectl's `--current-replicas` precondition.
fn check_current(expected: i32, current: i32) -> Result<()> {
    if expected != current {
        bail!("Expected replicas to be {expected}, was {current}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_replicas_precondition() {
        assert!(check_current(2, 2).is_ok());
        assert_eq!(
            check_current(2, 3).unwrap_err().to_string(),
            "Expected replicas to be 2, was 3"
        );
    }
}
