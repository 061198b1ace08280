//! What can end the controller manager's library calls: an API client that cannot be built, a
//! health port that cannot be bound, or a controller whose watches stopped.

use std::{net::SocketAddr, path::PathBuf};

use kube::config::{InferConfigError, KubeconfigError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("loading kubeconfig {}", path.display())]
    LoadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("finding a kubeconfig ($KUBECONFIG or ~/.kube/config)")]
    InferKubeconfig(#[source] InferConfigError),
    #[error("building the API client")]
    Client(#[source] kube::Error),
    #[error("--health-addr {addr}: cannot listen")]
    HealthListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} controller's cache stopped before it was filled")]
    CacheStopped(&'static str),
    #[error("the {0} controller's watches ended")]
    WatchesEnded(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
