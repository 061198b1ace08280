//! kproxy: the node service proxy. It loads the eBPF programs built from `kproxy-ebpf`
//! (embedded in this binary), attaches them, pins their maps under bpffs so the datapath
//! state outlives a kproxy restart, and reads their counters.

pub mod ct;
pub mod datapath;
pub mod drops;
pub mod ebpf_log;
pub mod garp;
pub mod healthcheck;
pub mod l2lease;
pub mod maglev;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod names;
pub mod netif;
pub mod pinned;
pub mod pod_veths;
pub mod snat;
pub mod source;
pub mod source_ranges;
pub mod sync;

pub use datapath::{Datapath, XdpAttachMode};

/// Default directory under bpffs where kproxy pins its maps.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/kproxy";
