//! The API client every control-plane component builds the same way: a kubeconfig file
//! (the admin's by default, as k3s gives its embedded controllers), through kube-rs.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// A kube-rs client from `path`, or from `$KUBECONFIG` / `~/.kube/config` when `None`.
pub async fn from_kubeconfig(path: Option<&Path>) -> Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).map_err(|source| Error::ReadKubeconfig {
                path: p.to_owned(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::LoadKubeconfig {
                    path: p.to_owned(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(Error::InferKubeconfig)?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}
