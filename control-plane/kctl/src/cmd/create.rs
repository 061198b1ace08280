//! `kctl create deployment|namespace|configmap|secret generic|-f`.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Namespace, PodSpec, PodTemplateSpec, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::Value;

use super::create_config::{self, Sources};
use crate::client::Ctx;
use crate::errors::{self, Reported};
use crate::manifest::{self, Manifest};
use crate::output::{self, OutputFormat};

#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub what: Option<CreateWhat>,
    /// Files, directories or `-` (stdin) with the objects to create.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub filenames: Vec<String>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum CreateWhat {
    /// Create a deployment with the given name (labels and selector app=NAME).
    #[command(visible_alias = "deploy")]
    Deployment(DeploymentArgs),
    /// Create a namespace.
    #[command(visible_alias = "ns")]
    Namespace(NamespaceArgs),
    /// Create a configmap from local files, directories or literal values.
    #[command(visible_alias = "cm")]
    Configmap(ConfigMapArgs),
    /// Create a secret (`generic`).
    Secret {
        #[command(subcommand)]
        what: SecretWhat,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigMapArgs {
    pub name: String,
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub print: DryRunArgs,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SecretWhat {
    /// Create a secret from local files, directories or literal values.
    Generic(SecretArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    pub name: String,
    /// The secret's type (default Opaque).
    #[arg(long = "type")]
    pub type_: Option<String>,
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub print: DryRunArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeploymentArgs {
    pub name: String,
    /// Container image; repeat for several containers.
    #[arg(long, required = true)]
    pub image: Vec<String>,
    /// Number of replicas.
    #[arg(short = 'r', long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..))]
    pub replicas: i32,
    /// The port the (single) container exposes.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub port: Option<i32>,
    #[command(flatten)]
    pub print: DryRunArgs,
    /// Command (and its arguments) for the container, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct NamespaceArgs {
    pub name: String,
    #[command(flatten)]
    pub print: DryRunArgs,
}

/// `--dry-run=client -o yaml` prints what would be created instead of creating it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DryRunArgs {
    /// `client`: only print the object (with -o), do not send it.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub dry_run: Option<DryRun>,
    /// Output format for the created object.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    None,
    Client,
}

pub async fn run(ctx: &mut Ctx, args: CreateArgs) -> Result<()> {
    match args.what {
        Some(CreateWhat::Deployment(d)) => {
            let mut deploy = build_deployment(&d.name, &d.image, d.replicas, d.port, &d.command)?;
            // kubectl names the namespace in the object only when -n was given.
            deploy.metadata.namespace = ctx.namespace_explicit.then(|| ctx.namespace.clone());
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            create_typed(&api, &deploy, "deployment.apps", &d.print).await
        }
        Some(CreateWhat::Namespace(n)) => {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(n.name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            create_typed(&api, &ns, "namespace", &n.print).await
        }
        Some(CreateWhat::Configmap(c)) => {
            let mut cm = create_config::build_config_map(&c.name, &c.sources)?;
            cm.metadata.namespace = ctx.namespace_explicit.then(|| ctx.namespace.clone());
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            create_typed(&api, &cm, "configmap", &c.print).await
        }
        Some(CreateWhat::Secret {
            what: SecretWhat::Generic(s),
        }) => {
            let mut secret = create_config::build_secret(&s.name, s.type_.as_deref(), &s.sources)?;
            secret.metadata.namespace = ctx.namespace_explicit.then(|| ctx.namespace.clone());
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            create_typed(&api, &secret, "secret", &s.print).await
        }
        None => create_from_files(ctx, &args.filenames).await,
    }
}

async fn create_typed<K>(api: &Api<K>, object: &K, kind_ref: &str, print: &DryRunArgs) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K: k8s_openapi::Resource,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let created = if print.dry_run == Some(DryRun::Client) {
        object.clone()
    } else {
        api.create(&PostParams::default(), object).await?
    };
    let suffix = if print.dry_run == Some(DryRun::Client) {
        " (dry run)"
    } else {
        ""
    };
    match print.output {
        Some(format @ (OutputFormat::Yaml | OutputFormat::Json)) => {
            let mut v = serde_json::to_value(&created).context("encoding the object")?;
            v["apiVersion"] = Value::String(<K as k8s_openapi::Resource>::API_VERSION.to_string());
            v["kind"] = Value::String(<K as k8s_openapi::Resource>::KIND.to_string());
            if print.dry_run == Some(DryRun::Client) {
                with_go_zero_values(&mut v);
            }
            output::emit(&output::render(&v, format)?)
        }
        Some(OutputFormat::Name) => {
            output::emit(&format!("{}\n", output::name_line(kind_ref, &name)))
        }
        _ => output::emit(&format!("{kind_ref}/{name} created{suffix}\n")),
    }
}

/// The empty fields Go's encoder writes for kubectl's typed objects (`creationTimestamp: null`,
/// `status: {}`, ...), added to client-side dry-run output so it matches kubectl's.
pub(crate) fn with_go_zero_values(v: &mut Value) {
    fn ensure(v: &mut Value, key: &str, default: Value) {
        if let Some(m) = v.as_object_mut() {
            m.entry(key).or_insert(default);
        }
    }
    let kind = v["kind"].as_str().unwrap_or("").to_string();
    ensure(&mut v["metadata"], "creationTimestamp", Value::Null);
    match kind.as_str() {
        "Deployment" => {
            ensure(&mut v["spec"], "strategy", serde_json::json!({}));
            ensure(
                &mut v["spec"]["template"]["metadata"],
                "creationTimestamp",
                Value::Null,
            );
            if let Some(containers) = v["spec"]["template"]["spec"]["containers"].as_array_mut() {
                for c in containers {
                    ensure(c, "resources", serde_json::json!({}));
                }
            }
            ensure(v, "status", serde_json::json!({}));
        }
        "Namespace" => {
            ensure(v, "spec", serde_json::json!({}));
            ensure(v, "status", serde_json::json!({}));
        }
        "Service" => ensure(v, "status", serde_json::json!({"loadBalancer": {}})),
        _ => {}
    }
}

/// kubectl create deployment's object: labels and selector `app=NAME`, one container per
/// image named after the image, the port and command on the (single) container.
pub fn build_deployment(
    name: &str,
    images: &[String],
    replicas: i32,
    port: Option<i32>,
    command: &[String],
) -> Result<Deployment> {
    if images.is_empty() {
        bail!("at least one --image is required");
    }
    if images.len() > 1 && !command.is_empty() {
        bail!("cannot specify multiple --image options and command");
    }
    if images.len() > 1 && port.is_some() {
        bail!("cannot specify --port with multiple --image options");
    }
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let mut used: Vec<String> = Vec::new();
    let mut containers = Vec::new();
    for image in images {
        let base = container_name(image)?;
        // Two containers from the same image need distinct names.
        let mut candidate = base.clone();
        let mut n = 1;
        while used.contains(&candidate) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        used.push(candidate.clone());
        containers.push(Container {
            name: candidate,
            image: Some(image.clone()),
            command: (!command.is_empty()).then(|| command.to_vec()),
            ports: port.map(|p| {
                vec![ContainerPort {
                    container_port: p,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
    }
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The container name kubectl derives from an image: the last path segment without tag or
/// digest, with `_` and `.` (not allowed in names) turned into `-`.
pub fn container_name(image: &str) -> Result<String> {
    let last = image.rsplit('/').next().unwrap_or(image);
    let without_digest = last.split('@').next().unwrap_or(last);
    let without_tag = without_digest.split(':').next().unwrap_or(without_digest);
    let name = without_tag.replace(['_', '.'], "-").to_lowercase();
    if name.is_empty()
        || !name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        bail!("invalid image name {image:?}: cannot derive a container name");
    }
    Ok(name)
}

async fn create_from_files(ctx: &mut Ctx, filenames: &[String]) -> Result<()> {
    let manifests = manifest::load_all(filenames)?;
    let mut failed = false;
    for m in &manifests {
        if let Err(e) = create_one(ctx, m).await {
            failed = true;
            eprintln!("{}", render_manifest_error(&e, "creating", m));
        }
    }
    if failed { Err(Reported.into()) } else { Ok(()) }
}

async fn create_one(ctx: &mut Ctx, m: &Manifest) -> Result<()> {
    let info = ctx
        .resolve_kind(m.api_version(), m.kind())
        .await
        .with_context(|| mapping_error(m))?;
    let ns = ctx.manifest_namespace(&info, m.namespace())?;
    let mut obj: DynamicObject =
        serde_json::from_value(m.object.clone()).context("decoding the manifest")?;
    obj.metadata.namespace = ns.clone();
    let created = ctx
        .api(&info, ns.as_deref())
        .create(&PostParams::default(), &obj)
        .await?;
    let name = created.metadata.name.unwrap_or_default();
    output::emit(&format!("{}/{name} created\n", info.kind_ref()))
}

/// kubectl's words for a kind the server does not serve.
pub(crate) fn mapping_error(m: &Manifest) -> String {
    format!(
        "resource mapping not found for name: {:?} namespace: {:?} from {:?}",
        m.name(),
        m.namespace().unwrap_or(""),
        m.source
    )
}

/// `Error from server (AlreadyExists): error when creating "x.yaml": ...` for server errors,
/// `error: ...` otherwise.
pub(crate) fn render_manifest_error(e: &anyhow::Error, verb: &str, m: &Manifest) -> String {
    match errors::api_status(e) {
        Some(status) => {
            errors::render_status(status, &format!("error when {verb} {:?}: ", m.source))
        }
        None => errors::render(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(list: &[&str]) -> Vec<String> {
        list.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn deployment_has_kubectls_shape() {
        let cmd = images(&["sleep", "3600"]);
        let d = build_deployment("web", &images(&["nginx:1.27"]), 3, Some(80), &cmd).unwrap();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["metadata"]["labels"], serde_json::json!({"app": "web"}));
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(
            v["spec"]["selector"]["matchLabels"],
            serde_json::json!({"app": "web"})
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"],
            serde_json::json!({"app": "web"})
        );
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "nginx");
        assert_eq!(c["image"], "nginx:1.27");
        assert_eq!(c["ports"], serde_json::json!([{"containerPort": 80}]));
        assert_eq!(c["command"], serde_json::json!(["sleep", "3600"]));
    }

    #[test]
    fn several_images_make_several_uniquely_named_containers() {
        let d = build_deployment(
            "app",
            &images(&["redis", "example.com/team/redis:7", "busybox"]),
            1,
            None,
            &[],
        )
        .unwrap();
        let names: Vec<String> = d
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["redis", "redis-2", "busybox"]);
    }

    #[test]
    fn rejects_invalid_combinations() {
        assert!(build_deployment("a", &[], 1, None, &[]).is_err());
        assert!(build_deployment("a", &images(&["x", "y"]), 1, None, &images(&["sh"])).is_err());
        assert!(build_deployment("a", &images(&["x", "y"]), 1, Some(80), &[]).is_err());
    }

    #[test]
    fn dry_run_output_has_gos_empty_fields() {
        let d = build_deployment("x", &images(&["nginx"]), 1, None, &[]).unwrap();
        let mut v = serde_json::to_value(&d).unwrap();
        v["kind"] = serde_json::json!("Deployment");
        with_go_zero_values(&mut v);
        assert!(
            v["metadata"]["creationTimestamp"].is_null()
                && v["metadata"].get("creationTimestamp").is_some()
        );
        assert_eq!(v["spec"]["strategy"], serde_json::json!({}));
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["resources"],
            serde_json::json!({})
        );
        assert_eq!(v["status"], serde_json::json!({}));
        let mut ns = serde_json::json!({"kind": "Namespace", "metadata": {"name": "a"}});
        with_go_zero_values(&mut ns);
        assert_eq!(ns["spec"], serde_json::json!({}));
        let mut svc =
            serde_json::json!({"kind": "Service", "metadata": {"name": "a"}, "status": {"x": 1}});
        with_go_zero_values(&mut svc);
        assert_eq!(
            svc["status"],
            serde_json::json!({"x": 1}),
            "existing fields are kept"
        );
    }

    #[test]
    fn container_names_from_images() {
        assert_eq!(container_name("nginx").unwrap(), "nginx");
        assert_eq!(container_name("nginx:1.27").unwrap(), "nginx");
        assert_eq!(
            container_name("registry.k8s.io/pause:3.9").unwrap(),
            "pause"
        );
        assert_eq!(
            container_name("localhost:5000/my_app@sha256:abc").unwrap(),
            "my-app"
        );
        assert_eq!(container_name("ghcr.io/org/app.v2").unwrap(), "app-v2");
        assert!(container_name("").is_err());
        assert!(container_name("repo/:tag").is_err());
    }

    #[test]
    fn manifest_errors_name_the_file() {
        let m = Manifest {
            source: "ns.yaml".into(),
            object: serde_json::json!({"metadata": {"name": "a"}}),
        };
        let api = kube::Error::Api(
            kube::core::Status::failure("namespaces \"a\" already exists", "AlreadyExists")
                .with_code(409)
                .boxed(),
        );
        assert_eq!(
            render_manifest_error(&api.into(), "creating", &m),
            "Error from server (AlreadyExists): error when creating \"ns.yaml\": namespaces \"a\" already exists"
        );
        assert_eq!(
            render_manifest_error(&anyhow::anyhow!("bad"), "creating", &m),
            "error: bad"
        );
        assert_eq!(
            mapping_error(&m),
            "resource mapping not found for name: \"a\" namespace: \"\" from \"ns.yaml\""
        );
    }
}
