//! kproxy-controller-manager: the cluster's reconcilers, one kube-runtime `Controller` per kind,
//! each a small `reconcile -> Action` with an error policy. They talk to the API server only
//! through kube-rs, like every other component.
//!
//! The scheduler shares the client setup, the logging setup and the Event builder from here.
#![forbid(unsafe_code)]

pub mod client;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod error;
pub mod events;
pub mod expectations;
pub mod health;
pub mod job;
pub mod lbipam;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod placement;
pub mod podcache;
pub mod replicaset;
pub mod serviceaccount;

use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// Field manager of the controller manager's writes (server-side apply and updates).
pub const FIELD_MANAGER: &str = "kproxy-controller-manager";

/// What the controllers are configured with at start; shared read-only.
#[derive(Clone, Debug)]
pub struct Config {
    /// LoadBalancer address pools (several allowed), checked against the CIDRs below.
    pub lb_pools: Vec<Ipv4Net>,
    /// Pod addresses of the whole cluster; each node gets a `/node_cidr_mask` out of it.
    pub cluster_cidr: Ipv4Net,
    pub node_cidr_mask: u8,
    /// Service ClusterIP range (only to refuse overlapping LB pools).
    pub service_cidr: Ipv4Net,
    /// A node whose Lease was not renewed for this long becomes Unknown (NotReady).
    pub node_monitor_grace: Duration,
    /// Pods on an unreachable node without their own toleration are deleted after this.
    pub pod_eviction_timeout: Duration,
    /// The `default/kubernetes` Service's endpoint: the API server's address and port.
    pub apiserver_endpoint: Option<std::net::SocketAddrV4>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lb_pools: vec!["172.30.0.0/24".parse().expect("valid")],
            cluster_cidr: "10.244.0.0/16".parse().expect("valid"),
            node_cidr_mask: 24,
            service_cidr: "10.96.0.0/12".parse().expect("valid"),
            node_monitor_grace: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_mins(5),
            apiserver_endpoint: None,
        }
    }
}

impl Config {
    /// Refuses pools that overlap each other, the service CIDR or the cluster CIDR, and a
    /// node mask that does not fit the cluster CIDR.
    pub fn validate(&self) -> Result<(), String> {
        for (i, p) in self.lb_pools.iter().enumerate() {
            for (what, other) in [
                ("the service CIDR", self.service_cidr),
                ("the cluster (pod) CIDR", self.cluster_cidr),
            ] {
                if overlaps(*p, other) {
                    return Err(format!(
                        "LoadBalancer pool {p} overlaps {what} {other}: choose a disjoint range"
                    ));
                }
            }
            for q in &self.lb_pools[i + 1..] {
                if overlaps(*p, *q) {
                    return Err(format!("LoadBalancer pools {p} and {q} overlap"));
                }
            }
        }
        if overlaps(self.service_cidr, self.cluster_cidr) {
            return Err(format!(
                "the service CIDR {} overlaps the cluster CIDR {}",
                self.service_cidr, self.cluster_cidr
            ));
        }
        if self.node_cidr_mask < self.cluster_cidr.prefix_len() || self.node_cidr_mask > 30 {
            return Err(format!(
                "node CIDR mask /{} does not fit the cluster CIDR {} (must be between /{} and /30)",
                self.node_cidr_mask,
                self.cluster_cidr,
                self.cluster_cidr.prefix_len()
            ));
        }
        Ok(())
    }
}

/// Why a reconcile failed (every controller's error type).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An API call failed; `what` says which.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("a cache stopped: {0}")]
    Cache(#[from] kube::runtime::reflector::store::WriterDropped),
    #[error("object without {0}")]
    MissingMetadata(&'static str),
    #[error("invalid selector")]
    Selector(#[source] kproxy_apimachinery::selector::SelectorError),
    /// Deployments only: the new set's name is taken by another template.
    #[error("replica set {0} exists with another template; collisionCount raised")]
    HashCollision(String),
}

/// Wraps a kube-rs error with what was being done.
pub(crate) fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Api { what, source }
}

/// Patch parameters naming this process as the field manager.
pub(crate) fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Create/replace parameters naming this process as the field manager.
pub(crate) fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// The controller reference among these ownerReferences, if any (shared by the pod cache and
/// the ownership rules of `replicaset::claim`).
pub(crate) fn controller_in(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|r| r.controller == Some(true))
}

/// Cached objects go without managedFields: large, and never read by a controller.
pub(crate) fn drop_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as every control-plane daemon.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a controller's applier stream until it ends, logging outcomes at debug level (each
/// failed reconcile was already logged and requeued by its error policy). The stream ends
/// only when its watches stop, which is an error for the process.
pub(crate) async fn drain<T, R, Q>(
    name: &'static str,
    results: impl futures::Stream<Item = Result<T, kube::runtime::controller::Error<R, Q>>>,
) -> error::Result<()>
where
    R: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    use futures::StreamExt as _;
    results
        .for_each(|res| {
            match res {
                Ok(_) => {}
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(controller = name, %obj, "object gone");
                }
                Err(e) => tracing::debug!(controller = name, error = %e, "reconcile failed"),
            }
            std::future::ready(())
        })
        .await;
    Err(error::Error::WatchesEnded(name))
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_overlapping_cluster_ranges_are_refused() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.lb_pools = vec!["10.96.5.0/24".parse().unwrap()];
        assert!(c.validate().unwrap_err().contains("service CIDR"));
        c.lb_pools = vec!["10.244.3.0/24".parse().unwrap()];
        assert!(c.validate().unwrap_err().contains("cluster (pod) CIDR"));
        c.lb_pools = vec![
            "172.30.0.0/24".parse().unwrap(),
            "172.30.0.128/25".parse().unwrap(),
        ];
        assert!(c.validate().unwrap_err().contains("overlap"));
        c.lb_pools = vec![
            "172.30.0.0/24".parse().unwrap(),
            "172.31.0.0/24".parse().unwrap(),
        ];
        assert!(c.validate().is_ok());
        c.node_cidr_mask = 8;
        assert!(c.validate().is_err());
    }
}
