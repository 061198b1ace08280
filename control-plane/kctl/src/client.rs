//! Connection setup (kubeconfig, context, namespace) and the per-invocation context every
//! command works with: the client, the effective namespace and the resource catalog.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Discovery};

use crate::resources::{Catalog, ResourceInfo};

/// Flags every command accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace scope for this request (default: the context's, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Everything a command needs to talk to the cluster.
pub struct Ctx {
    pub client: Client,
    /// The effective namespace: `-n`, else the context's, else `default`.
    pub namespace: String,
    /// Whether `-n` was given (then manifests in other namespaces are refused, like kubectl).
    pub namespace_explicit: bool,
    catalog: Option<Catalog>,
}

impl Ctx {
    pub async fn connect(opts: &GlobalOpts) -> Result<Ctx> {
        let mut config = load_config(opts).await?;
        // kube's default policy retries 503s for minutes: a node proxy, log or exec to an
        // unreachable node would hang that long before saying so. kubectl reports at once.
        config.default_retry = false;
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).context("building the API client")?;
        Ok(Ctx {
            client,
            namespace,
            namespace_explicit: opts.namespace.is_some(),
            catalog: None,
        })
    }

    async fn catalog(&mut self) -> Result<&mut Catalog> {
        if self.catalog.is_none() {
            let discovery = Discovery::new(self.client.clone())
                .run()
                .await
                .context("discovering the server's resources")?;
            self.catalog = Some(Catalog::from_discovery(&discovery));
        }
        self.catalog
            .as_mut()
            .context("resource catalog missing after discovery")
    }

    /// Resolves a resource type as typed by the user (see [`Catalog::resolve`]). Short and
    /// singular names are fetched only when the cheaper lookup fails.
    pub async fn resolve(&mut self, input: &str) -> Result<ResourceInfo> {
        let client = self.client.clone();
        let catalog = self.catalog().await?;
        if let Ok(info) = catalog.resolve(input) {
            return Ok(info.clone());
        }
        if !catalog.aliases_loaded() {
            let mut lists = Vec::new();
            for gv in catalog.preferred_group_versions() {
                let list = if gv.contains('/') {
                    client.list_api_group_resources(&gv).await
                } else {
                    client.list_core_api_resources(&gv).await
                };
                lists.push(list.with_context(|| format!("listing the resources of {gv}"))?);
            }
            catalog.merge_aliases(&lists);
        }
        Ok(catalog.resolve(input)?.clone())
    }

    /// Like [`Ctx::resolve`], also accepting a category (`all`) for the resources in it.
    pub async fn resolve_many(&mut self, input: &str) -> Result<Vec<ResourceInfo>> {
        let err = match self.resolve(input).await {
            Ok(info) => return Ok(vec![info]),
            Err(e) => e,
        };
        // `resolve` loaded the categories along with the aliases.
        let members: Vec<ResourceInfo> = self
            .catalog()
            .await?
            .category(input)
            .into_iter()
            .cloned()
            .collect();
        if members.is_empty() {
            Err(err)
        } else {
            Ok(members)
        }
    }

    /// The resource serving a manifest's `apiVersion`/`kind`.
    pub async fn resolve_kind(&mut self, api_version: &str, kind: &str) -> Result<ResourceInfo> {
        match self.catalog().await?.for_kind(api_version, kind) {
            Some(info) => Ok(info.clone()),
            None => bail!("no matches for kind \"{kind}\" in version \"{api_version}\""),
        }
    }

    /// A dynamic API handle for `info`, scoped to `namespace` for namespaced resources
    /// (`None` = all namespaces).
    pub fn api(&self, info: &ResourceInfo, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = info.api_resource();
        match namespace {
            Some(ns) if info.namespaced => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// The namespace an object from a manifest goes to; `None` for cluster-scoped resources.
    pub fn manifest_namespace(
        &self,
        info: &ResourceInfo,
        declared: Option<&str>,
    ) -> Result<Option<String>> {
        effective_namespace(
            info.namespaced,
            declared,
            &self.namespace,
            self.namespace_explicit,
        )
    }
}

/// kubectl's rule: the manifest's namespace wins unless `-n` names a different one, which is an
/// error rather than a silent override.
pub fn effective_namespace(
    namespaced: bool,
    declared: Option<&str>,
    default: &str,
    explicit: bool,
) -> Result<Option<String>> {
    if !namespaced {
        return Ok(None);
    }
    match declared {
        Some(ns) if explicit && ns != default => bail!(
            "the namespace from the provided object \"{ns}\" does not match the namespace \"{default}\". You must pass '--namespace={ns}' to perform this operation."
        ),
        Some(ns) => Ok(Some(ns.to_string())),
        None => Ok(Some(default.to_string())),
    }
}

async fn load_config(opts: &GlobalOpts) -> Result<Config> {
    let options = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    if let Some(path) = &opts.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()));
    }
    if opts.context.is_some() {
        return Config::from_kubeconfig(&options)
            .await
            .context("loading kubeconfig");
    }
    Config::infer()
        .await
        .context("loading kubeconfig (set KUBECONFIG or pass --kubeconfig)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_namespace_rules() {
        assert_eq!(
            effective_namespace(false, Some("x"), "default", true).unwrap(),
            None
        );
        assert_eq!(
            effective_namespace(true, None, "default", false).unwrap(),
            Some("default".into())
        );
        assert_eq!(
            effective_namespace(true, Some("x"), "default", false).unwrap(),
            Some("x".into())
        );
        assert_eq!(
            effective_namespace(true, Some("x"), "x", true).unwrap(),
            Some("x".into())
        );
        let err = effective_namespace(true, Some("x"), "y", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match the namespace \"y\""), "{err}");
    }

    #[tokio::test]
    async fn unreadable_kubeconfig_is_a_clear_error() {
        let opts = GlobalOpts {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..Default::default()
        };
        let err = Ctx::connect(&opts)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    }

    #[tokio::test]
    async fn context_and_namespace_come_from_the_kubeconfig() {
        let dir = crate::manifest::tests::TempDir::new("kubeconfig");
        let path = dir.0.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
             clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\n\
             users:\n- name: u\n  user: {token: t}\n\
             contexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: c, user: u, namespace: team}\n",
        )
        .unwrap();
        let mut opts = GlobalOpts {
            kubeconfig: Some(path),
            ..Default::default()
        };
        assert_eq!(Ctx::connect(&opts).await.unwrap().namespace, "default");
        opts.context = Some("b".into());
        let ctx = Ctx::connect(&opts).await.unwrap();
        assert_eq!(
            (ctx.namespace.as_str(), ctx.namespace_explicit),
            ("team", false)
        );
        opts.namespace = Some("other".into());
        let ctx = Ctx::connect(&opts).await.unwrap();
        assert_eq!(
            (ctx.namespace.as_str(), ctx.namespace_explicit),
            ("other", true)
        );
        opts.context = Some("missing".into());
        assert!(Ctx::connect(&opts).await.is_err());
    }
}
