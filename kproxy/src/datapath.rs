//! Loading and attaching the eBPF datapath, by concern:
//! - `load`: the eBPF object embedded at build time, loaded with its maps pinned;
//! - `uplink` and `tc`: XDP and the tc classifiers on the uplink, tc links in general;
//! - `pod_links`: the tc programs on pod veths, which come and go while kproxy runs;
//! - `socket_lb`: the cgroup programs (`cgroup_link` does the bpf(2) calls aya lacks);
//! - `maps`: runtime configuration and the load-balancer maps;
//! - `host_routing`: BPF host routing on/off and its learned pod routes;
//! - `keep_local`: the program on the keep-local device (the service ranges' route);
//! - `pin`: where links are pinned in bpffs, and removing them.
//!
//! Links are pinned next to the maps so the datapath keeps working while kproxy is down.

mod cgroup_link;
mod host_routing;
mod keep_local;
mod load;
mod maps;
mod pin;
mod pod_links;
pub mod sock_term;
mod socket_lb;
mod src_range;
mod tc;
mod uplink;
mod vips;

use std::path::PathBuf;

use aya::{Ebpf, util::KernelVersion};

pub use host_routing::HostRouting;
pub use keep_local::keep_local_devices;
pub use pin::cleanup;
pub use socket_lb::{cgroup_scope, find_cgroup2_root};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot create the bpffs pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading the eBPF object failed (needs root or CAP_BPF+CAP_NET_ADMIN, and a bpffs \
         mounted at /sys/fs/bpf)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("{what} failed for program {program}")]
    Program {
        what: String,
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot pin or unpin the link {path}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("VIP table full: bucket pair for {addr}")]
    VipTableFull { addr: std::net::Ipv4Addr },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// How to attach XDP to the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpAttachMode {
    /// The measured winner for the interface: generic XDP on veth (native XDP on veth
    /// makes the kernel build skbs anyway and measured slower, see docs/ARCHITECTURE.md),
    /// native mode elsewhere, falling back to generic if the driver refuses.
    Auto,
    /// Native (driver) XDP only.
    Driver,
    /// Generic (skb) XDP, run by the kernel network stack.
    Generic,
}

/// A loaded datapath: programs loaded (not yet attached) and maps pinned under `bpffs_dir`.
/// Dropping it leaves the pinned maps and links in place, so the datapath keeps running;
/// `cleanup` removes them.
pub struct Datapath {
    ebpf: Ebpf,
    bpffs_dir: PathBuf,
    /// Pod interfaces the pod program was attached to (see `pod_links`).
    pod_ifaces: std::collections::BTreeSet<String>,
    /// The cgroup socket-LB is attached to (`attach_cgroup`): whose namespaces' sockets to
    /// a removed backend are terminated (`sock_term`).
    sock_cgroup: Option<PathBuf>,
    /// When each backend was last removed, so a delayed TCP termination only acts once
    /// the latest removal's grace is over (`socket_lb.rs`).
    sock_removed_at: sock_term::RemovedAt,
    /// Backend selection settings, set by `set_lb` (`maps.rs`).
    lb: LbSettings,
    /// BPF host routing is on (`host_routing`).
    host_routing: bool,
    /// kproxy's copy of the service-address array (`vips`).
    vips: vips::VipTable,
}

/// The default algorithm and hash seed the syncer plans with.
#[derive(Clone, Copy, Debug, Default)]
struct LbSettings {
    default: crate::model::LbAlgorithm,
    seed: u64,
    /// The pinned Maglev tables were generated from `seed`.
    tables_valid: bool,
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?;
    prog.try_into().map_err(|source| DatapathError::Program {
        what: "type check".into(),
        program: name,
        source,
    })
}

/// Whether the running kernel is at least `major.minor`, as aya decides it when choosing how
/// to attach (an unreadable version counts as old).
fn kernel_at_least(major: u8, minor: u8) -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(major, minor, 0))
}
