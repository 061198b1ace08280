//! Kubernetes-compatible API server: one generic handler over a resource registry, objects in
//! kproxy-store, HTTPS with bearer tokens. See docs/ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod auth;
pub mod compaction;
pub mod context;
pub mod discovery;
pub mod error;
pub mod events_ttl;
pub mod handler;
pub mod inflight;
pub mod kubeconfig;
pub mod kubelet;
pub mod managed;
pub mod metrics;
pub mod metrics_api;
pub mod object;
pub mod openapi;
pub mod paging;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod rest;
pub mod review;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
pub mod watch_cache;

#[cfg(test)]
mod test_api;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_batch;
#[cfg(test)]
mod tests_config;
#[cfg(test)]
mod tests_daemonset;
#[cfg(test)]
mod tests_ephemeral;
#[cfg(test)]
mod tests_identity;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_openapi;
#[cfg(test)]
mod tests_portforward;
#[cfg(test)]
mod tests_review;
