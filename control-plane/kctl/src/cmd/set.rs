//! `kctl set image`: kubectl's way of changing container images in place. Each object is read,
//! the requested containers are looked up by name (`*` = all, init containers included) and a
//! strategic merge patch carrying only `{name, image}` of the changed containers is sent, as
//! kubectl does. A container name the object does not have fails that object before anything
//! is written.

use anyhow::{Result, bail};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Map, Value, json};

use crate::client::Ctx;
use crate::errors::{self, Reported};
use crate::output;
use crate::resources::{ResourceInfo, parse_type_args};

#[derive(clap::Args, Debug, Clone)]
pub struct SetArgs {
    #[command(subcommand)]
    pub command: SetCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SetCommand {
    /// Update the images of a pod template (or a pod): `TYPE/NAME CONTAINER=IMAGE...`.
    Image(ImageArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// `TYPE NAME...` or `TYPE/NAME...`, then `CONTAINER=IMAGE...` (`*=IMAGE`: every
    /// container).
    #[arg(required = true, value_name = "TYPE NAME... CONTAINER=IMAGE")]
    pub args: Vec<String>,
    /// Every object of the given type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Objects of the given type matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

pub async fn run(ctx: &mut Ctx, args: SetArgs) -> Result<()> {
    match args.command {
        SetCommand::Image(a) => image(ctx, a).await,
    }
}

/// One `CONTAINER=IMAGE` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageUpdate {
    container: String,
    image: String,
}

/// Splits the arguments as kubectl does: resources first, then `CONTAINER=IMAGE` pairs.
fn split_args(args: &[String]) -> Result<(Vec<String>, Vec<ImageUpdate>)> {
    let mut resources = Vec::new();
    let mut images: Vec<ImageUpdate> = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some((container, image)) => {
                if container.is_empty() || image.is_empty() {
                    bail!("invalid image update {arg:?}: expected CONTAINER=IMAGE");
                }
                // A later pair for the same container wins, as in kubectl's map.
                images.retain(|u| u.container != container);
                images.push(ImageUpdate {
                    container: container.to_string(),
                    image: image.to_string(),
                });
            }
            None if !images.is_empty() => {
                bail!("all resources must be specified before image changes: {arg}");
            }
            None => resources.push(arg.clone()),
        }
    }
    if resources.is_empty() {
        bail!("you must specify a resource, as TYPE/NAME or TYPE NAME");
    }
    if images.is_empty() {
        bail!("at least one image update is required");
    }
    Ok((resources, images))
}

/// Where the pod spec sits in an object of `kind`, or `None` for kinds without one.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template", "spec"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// The strategic merge patch that applies `updates` to `object` (of `kind`): only containers
/// whose image changes, merged by name. `Ok(None)` when every image is already as asked.
fn image_patch(kind: &str, object: &Value, updates: &[ImageUpdate]) -> Result<Option<Value>> {
    let Some(path) = pod_spec_path(kind) else {
        bail!("cannot set images of a {kind}: it has no pod template");
    };
    let spec = path.iter().fold(object, |v, key| &v[*key]);
    let lists = ["containers", "initContainers"];
    let mut changed: Vec<Vec<Value>> = vec![Vec::new(); lists.len()];
    for update in updates {
        let mut found = false;
        for (list, out) in lists.iter().zip(&mut changed) {
            for c in spec[*list].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default();
                if update.container != "*" && update.container != name {
                    continue;
                }
                found = true;
                if c["image"].as_str() != Some(update.image.as_str()) {
                    out.retain(|v: &Value| v["name"] != name);
                    out.push(json!({"name": name, "image": update.image}));
                }
            }
        }
        if !found {
            bail!("unable to find container named {:?}", update.container);
        }
    }
    if changed.iter().all(Vec::is_empty) {
        return Ok(None);
    }
    let mut inner = Map::new();
    for (list, out) in lists.iter().zip(changed) {
        if !out.is_empty() {
            inner.insert((*list).to_string(), Value::Array(out));
        }
    }
    let patch = path
        .iter()
        .rev()
        .fold(Value::Object(inner), |v, key| json!({ *key: v }));
    Ok(Some(patch))
}

async fn image(ctx: &mut Ctx, args: ImageArgs) -> Result<()> {
    let (resources, updates) = split_args(&args.args)?;
    let by_selector = args.all || args.selector.is_some();
    let mut targets: Vec<(ResourceInfo, Vec<String>)> = Vec::new();
    for t in parse_type_args(&resources)? {
        match (t.names.is_empty(), by_selector) {
            (true, false) => bail!("resource(s) were provided, but no name was specified"),
            (false, true) => bail!("give names or --all / --selector, not both"),
            _ => {}
        }
        let info = ctx.resolve(&t.resource).await?;
        if pod_spec_path(&info.kind).is_none() {
            bail!(
                "cannot set images of {}: it has no pod template",
                info.plural
            );
        }
        targets.push((info, t.names));
    }
    let mut failed = false;
    for (info, names) in targets {
        let api = ctx.api(&info, Some(&ctx.namespace));
        // Named objects are read one by one; a selector's list already holds them.
        let objects: Vec<(String, Option<_>)> = if by_selector {
            let mut lp = ListParams::default();
            if let Some(s) = &args.selector {
                lp = lp.labels(s);
            }
            api.list(&lp)
                .await?
                .items
                .into_iter()
                .filter_map(|o| Some((o.metadata.name.clone()?, Some(o))))
                .collect()
        } else {
            names.into_iter().map(|n| (n, None)).collect()
        };
        for (name, listed) in objects {
            let result = async {
                let object = match listed {
                    Some(o) => serde_json::to_value(o)?,
                    None => serde_json::to_value(api.get(&name).await?)?,
                };
                let Some(patch) = image_patch(&info.kind, &object, &updates)
                    .map_err(|e| e.context(format!("{}/{name}", info.kind_ref())))?
                else {
                    return anyhow::Ok(false);
                };
                api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await?;
                Ok(true)
            }
            .await;
            match result {
                Ok(true) => output::emit(&format!("{}/{name} image updated\n", info.kind_ref()))?,
                // Nothing to change: kubectl prints nothing either.
                Ok(false) => {}
                Err(e) => {
                    failed = true;
                    eprintln!("{}", errors::render(&e));
                }
            }
        }
    }
    if failed { Err(Reported.into()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    fn update(c: &str, i: &str) -> ImageUpdate {
        ImageUpdate {
            container: c.into(),
            image: i.into(),
        }
    }

    #[test]
    fn splits_resources_and_images() {
        let (r, i) =
            split_args(&args(&["deployment/web", "web=nginx:1.27", "log=fluent"])).unwrap();
        assert_eq!(r, ["deployment/web"]);
        assert_eq!(i, [update("web", "nginx:1.27"), update("log", "fluent")]);
        let (r, i) = split_args(&args(&["deployment", "web", "*=busybox"])).unwrap();
        assert_eq!(r, ["deployment", "web"]);
        assert_eq!(i, [update("*", "busybox")]);
        // A registry port in the image is not a second `=`.
        let (_, i) = split_args(&args(&["po/x", "c=reg:5000/img:1", "c=reg:5000/img:2"])).unwrap();
        assert_eq!(i, [update("c", "reg:5000/img:2")]);
    }

    #[test]
    fn bad_arguments_say_why() {
        let err = |a: &[&str]| split_args(&args(a)).unwrap_err().to_string();
        assert_eq!(
            err(&["deploy/web"]),
            "at least one image update is required"
        );
        assert_eq!(
            err(&["web=nginx"]),
            "you must specify a resource, as TYPE/NAME or TYPE NAME"
        );
        assert_eq!(
            err(&["deploy", "web=nginx", "other"]),
            "all resources must be specified before image changes: other"
        );
        assert!(err(&["deploy/web", "=nginx"]).contains("expected CONTAINER=IMAGE"));
        assert!(err(&["deploy/web", "web="]).contains("expected CONTAINER=IMAGE"));
    }

    fn deployment() -> Value {
        json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
                {"name": "log", "image": "fluent"},
            ],
        }}}})
    }

    #[test]
    fn patches_only_the_named_containers() {
        let p = image_patch("Deployment", &deployment(), &[update("web", "nginx:1.27")])
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
        );
        let p = image_patch("Deployment", &deployment(), &[update("init", "alpine")])
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            json!({"spec": {"template": {"spec": {
                "initContainers": [{"name": "init", "image": "alpine"}]}}}})
        );
    }

    #[test]
    fn star_patches_every_container_that_differs() {
        let p = image_patch("Deployment", &deployment(), &[update("*", "fluent")])
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "web", "image": "fluent"}],
                "initContainers": [{"name": "init", "image": "fluent"}]}}}})
        );
    }

    #[test]
    fn pods_are_patched_at_their_spec() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "kecho"}]}});
        let p = image_patch("Pod", &pod, &[update("c", "httpd")])
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            json!({"spec": {"containers": [{"name": "c", "image": "httpd"}]}})
        );
    }

    #[test]
    fn unchanged_images_need_no_patch() {
        assert_eq!(
            image_patch("Deployment", &deployment(), &[update("web", "nginx:1.26")]).unwrap(),
            None
        );
    }

    #[test]
    fn unknown_container_fails_the_whole_object() {
        let err = image_patch(
            "Deployment",
            &deployment(),
            &[update("web", "nginx:1.27"), update("nope", "x")],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "unable to find container named \"nope\"");
    }

    #[test]
    fn kinds_without_pod_template_are_refused() {
        let err = image_patch("Service", &json!({}), &[update("*", "x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot set images of a Service: it has no pod template"
        );
        assert_eq!(
            pod_spec_path("CronJob"),
            Some(&["spec", "jobTemplate", "spec", "template", "spec"][..])
        );
    }
}
