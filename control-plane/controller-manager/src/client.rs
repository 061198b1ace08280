//! The API client every control-plane component builds the same way: a kubeconfig file
//! (the admin's by default, as k3s gives its embedded controllers), through kube-rs.

use std::path::Path;

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A kube-rs client from `path`, or from `$KUBECONFIG` / `~/.kube/config` when `None`.
pub async fn from_kubeconfig(path: Option<&Path>) -> Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig ($KUBECONFIG or ~/.kube/config)")?,
    };
    kube::Client::try_from(config).context("building the API client")
}
