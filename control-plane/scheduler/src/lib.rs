//! kproxy-scheduler: assigns unbound pods to nodes, as kube-scheduler does, through the API
//! only. The decision logic (cache, filters, scores) is pure and tested without a cluster;
//! [`run`] is the process around it.
#![forbid(unsafe_code)]

pub mod cache;
pub mod filter;
pub mod resources;
mod run;
pub mod schedule;

pub use run::{COMPONENT, Options, run};
