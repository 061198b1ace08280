//! `kctl apply -f`: create what is missing, patch what exists (see [`crate::apply_patch`] for how
//! the patch is computed and why it is a JSON merge patch), report
//! `created|configured|unchanged` per object.

use anyhow::{Context as _, Result, bail};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::create::{mapping_error, render_manifest_error};
use crate::apply_patch::{last_applied, three_way_patch, with_last_applied};
use crate::client::Ctx;
use crate::errors::Reported;
use crate::manifest::{self, Manifest};
use crate::output;

#[derive(clap::Args, Debug, Clone)]
pub struct ApplyArgs {
    /// Files, directories (searched recursively for .yaml/.yml/.json) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub filenames: Vec<String>,
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

pub async fn run(ctx: &mut Ctx, args: ApplyArgs) -> Result<()> {
    let manifests = manifest::load_all(&args.filenames)?;
    let mut failed = false;
    for m in &manifests {
        match apply_one(ctx, m).await {
            Ok((kind_ref, name, outcome)) => {
                output::emit(&format!("{kind_ref}/{name} {}\n", outcome.as_str()))?;
            }
            Err(e) => {
                failed = true;
                eprintln!("{}", render_manifest_error(&e, "applying", m));
            }
        }
    }
    if failed { Err(Reported.into()) } else { Ok(()) }
}

async fn apply_one(ctx: &mut Ctx, m: &Manifest) -> Result<(String, String, Outcome)> {
    if m.name().is_empty() {
        bail!("from {}: cannot use generate name with apply", m.source);
    }
    let info = ctx
        .resolve_kind(m.api_version(), m.kind())
        .await
        .with_context(|| mapping_error(m))?;
    let ns = ctx.manifest_namespace(&info, m.namespace())?;
    let config = with_namespace(&m.object, ns.as_deref());
    let modified = with_last_applied(&config)?;
    let api = ctx.api(&info, ns.as_deref());
    let name = m.name().to_string();
    let outcome = match api.get_opt(&name).await? {
        None => {
            let obj: DynamicObject =
                serde_json::from_value(modified).context("decoding the manifest")?;
            api.create(&PostParams::default(), &obj).await?;
            Outcome::Created
        }
        Some(current) => {
            let current = serde_json::to_value(&current).context("encoding the live object")?;
            let patch = three_way_patch(last_applied(&current).as_ref(), &modified, &current);
            if patch.as_object().is_none_or(serde_json::Map::is_empty) {
                Outcome::Unchanged
            } else {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Outcome::Configured
            }
        }
    };
    Ok((info.kind_ref(), name, outcome))
}

/// The manifest with the namespace it is applied to filled in (kubectl records it in the
/// last-applied configuration too); cluster-scoped objects lose any namespace they declare.
/// `creationTimestamp: null` (in every `--dry-run -o yaml` output) is dropped: it is not a
/// request to clear the field.
fn with_namespace(object: &Value, ns: Option<&str>) -> Value {
    let mut v = object.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.get("creationTimestamp").is_some_and(Value::is_null) {
            meta.remove("creationTimestamp");
        }
        match ns {
            Some(ns) => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
            None => {
                meta.remove("namespace");
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_are_filled_in_or_dropped() {
        let obj = json!({"metadata": {"name": "a"}});
        assert_eq!(
            with_namespace(&obj, Some("team"))["metadata"]["namespace"],
            "team"
        );
        let cluster = json!({"metadata": {"name": "n", "namespace": "ignored"}});
        assert!(
            with_namespace(&cluster, None)["metadata"]
                .get("namespace")
                .is_none()
        );
    }

    #[test]
    fn outcome_words() {
        assert_eq!(Outcome::Created.as_str(), "created");
        assert_eq!(Outcome::Configured.as_str(), "configured");
        assert_eq!(Outcome::Unchanged.as_str(), "unchanged");
    }
}
