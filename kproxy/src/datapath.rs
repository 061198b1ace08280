//! Loading and attaching the eBPF datapath.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode, tc},
};
use kproxy_common::{Counter, MAP_CONFIG, MAP_IFSTATS, config};

use crate::pinned::IfStat;

/// The eBPF object built by build.rs from `kproxy-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kproxy-ebpf"));

const PROG_XDP: &str = "kproxy_xdp";
const PROG_TC_INGRESS: &str = "kproxy_tc_ingress";
const PROG_TC_EGRESS: &str = "kproxy_tc_egress";

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
    /// Native (driver) mode, falling back to generic mode if the driver refuses.
    Auto,
    /// Native (driver) XDP only.
    Driver,
    /// Generic (skb) XDP, run by the kernel network stack.
    Generic,
}

/// A loaded datapath: programs loaded (not yet attached) and maps pinned under `bpffs_dir`.
/// Dropping it detaches every program it attached; the pinned maps stay.
pub struct Datapath {
    ebpf: Ebpf,
    bpffs_dir: PathBuf,
}

impl Datapath {
    /// Loads the embedded programs, reusing maps already pinned in `bpffs_dir` (so counters
    /// and state survive a restart), and starts forwarding eBPF log events to `tracing`.
    /// Must be called inside a tokio runtime.
    pub fn load(bpffs_dir: &Path) -> Result<Self, DatapathError> {
        std::fs::create_dir_all(bpffs_dir).map_err(|source| DatapathError::PinDir {
            path: bpffs_dir.to_path_buf(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpffs_dir)
            .load(EBPF_OBJECT)
            .map_err(DatapathError::Load)?;
        if let Err(err) = crate::ebpf_log::spawn(&mut ebpf) {
            tracing::warn!(%err, "eBPF log events will not be shown");
        }
        for name in [PROG_TC_INGRESS, PROG_TC_EGRESS] {
            let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
            prog.load().map_err(|source| DatapathError::Program {
                what: "load".into(),
                program: name,
                source,
            })?;
        }
        let xdp: &mut Xdp = program(&mut ebpf, PROG_XDP)?;
        xdp.load().map_err(|source| DatapathError::Program {
            what: "load".into(),
            program: PROG_XDP,
            source,
        })?;
        tracing::info!(dir = %bpffs_dir.display(), "eBPF datapath loaded, maps pinned");
        Ok(Self {
            ebpf,
            bpffs_dir: bpffs_dir.to_path_buf(),
        })
    }

    pub fn bpffs_dir(&self) -> &Path {
        &self.bpffs_dir
    }

    /// Attaches XDP (ingress) and the tc classifiers (ingress and egress) to `iface`.
    /// Returns the XDP mode actually used.
    pub fn attach_uplink(
        &mut self,
        iface: &str,
        mode: XdpAttachMode,
    ) -> Result<XdpAttachMode, DatapathError> {
        let used = self.attach_xdp(iface, mode)?;
        // TCX (kernel >= 6.6) needs no qdisc; with the netlink fallback the clsact qdisc must
        // exist. Adding it when it is already there fails harmlessly.
        let _ = tc::qdisc_add_clsact(iface);
        for (name, dir) in [
            (PROG_TC_INGRESS, TcAttachType::Ingress),
            (PROG_TC_EGRESS, TcAttachType::Egress),
        ] {
            let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
            prog.attach(iface, dir)
                .map_err(|source| DatapathError::Program {
                    what: format!("tc {dir:?} attach to {iface}"),
                    program: name,
                    source,
                })?;
        }
        tracing::info!(%iface, xdp_mode = ?used, "datapath attached (xdp + tc ingress/egress)");
        Ok(used)
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        mode: XdpAttachMode,
    ) -> Result<XdpAttachMode, DatapathError> {
        let xdp: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?;
        let try_mode = |xdp: &mut Xdp, flags: XdpMode| {
            xdp.attach(iface, flags)
                .map(|_| ())
                .map_err(|source| DatapathError::Program {
                    what: format!("xdp attach to {iface} ({flags:?})"),
                    program: PROG_XDP,
                    source,
                })
        };
        match mode {
            XdpAttachMode::Driver => try_mode(xdp, XdpMode::Driver).map(|()| mode),
            XdpAttachMode::Generic => try_mode(xdp, XdpMode::Skb).map(|()| mode),
            XdpAttachMode::Auto => match try_mode(xdp, XdpMode::Driver) {
                Ok(()) => Ok(XdpAttachMode::Driver),
                Err(err) => {
                    tracing::warn!(%iface, err = %err, "native XDP refused, using generic XDP");
                    try_mode(xdp, XdpMode::Skb).map(|()| XdpAttachMode::Generic)
                }
            },
        }
    }

    /// Switches aya-log debug events on or off; takes effect for the next packet.
    pub fn set_debug_events(&mut self, on: bool) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(MAP_CONFIG)
            .ok_or(DatapathError::MissingMap(MAP_CONFIG))?;
        let mut cfg = Array::<_, u32>::try_from(map).map_err(|source| DatapathError::Map {
            name: MAP_CONFIG,
            source,
        })?;
        cfg.set(config::DEBUG_EVENTS, u32::from(on), 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_CONFIG,
                source,
            })
    }

    /// Packet counters per (hook, class), summed over CPUs.
    pub fn ifstats(&self) -> Result<Vec<IfStat>, DatapathError> {
        let map = self
            .ebpf
            .map(MAP_IFSTATS)
            .ok_or(DatapathError::MissingMap(MAP_IFSTATS))?;
        let stats =
            PerCpuArray::<_, Counter>::try_from(map).map_err(|source| DatapathError::Map {
                name: MAP_IFSTATS,
                source,
            })?;
        crate::pinned::sum_ifstats(&stats).map_err(|source| DatapathError::Map {
            name: MAP_IFSTATS,
            source,
        })
    }
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
