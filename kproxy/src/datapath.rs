//! Loading and attaching the eBPF datapath.

mod pod_links;

use std::{
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink},
        xdp::XdpLink,
    },
    util::KernelVersion,
};
use kproxy_common::{
    Backend, MAP_BACKENDS, MAP_CONFIG, MAP_L2, MAP_REVNAT, MAP_SERVICES, RevNat, ServiceKey,
    ServiceValue, config,
};

use crate::sync::MapOp;

/// The eBPF object built by build.rs from `kproxy-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kproxy-ebpf"));

const PROG_XDP: &str = "kproxy_xdp";
const PROG_TC_INGRESS: &str = "kproxy_tc_ingress";
const PROG_TC_EGRESS: &str = "kproxy_tc_egress";
const PROG_TC_POD: &str = "kproxy_tc_pod";
/// Pin name tag of pod veth tc links (`link_tc_pod_<iface>`).
const TC_POD_TAG: &str = "tc_pod";
const PROG_TC_POD_EGRESS: &str = "kproxy_tc_pod_egress";
/// Pin name tag of pod veth tc egress links (`link_tc_podeg_<iface>`; not a prefix of
/// `tc_pod_`, so the two never mix up).
const TC_POD_EGRESS_TAG: &str = "tc_podeg";
/// Socket-LB programs, attached to the cgroup v2 root: program, pin tag (`link_sock_TAG`)
/// and the kernel attach type (`enum bpf_attach_type`, linux/bpf.h), which tells whether a
/// pinned link is the one this program belongs in.
const SOCK_PROGS: [(&str, &str, u32); 4] = [
    ("kproxy_sock4_connect", "connect4", 10), // BPF_CGROUP_INET4_CONNECT
    ("kproxy_sock4_sendmsg", "sendmsg4", 14), // BPF_CGROUP_UDP4_SENDMSG
    ("kproxy_sock4_recvmsg", "recvmsg4", 19), // BPF_CGROUP_UDP4_RECVMSG
    ("kproxy_sock4_getpeername", "getpeername4", 29), // BPF_CGROUP_INET4_GETPEERNAME
];

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
        for name in [
            PROG_TC_INGRESS,
            PROG_TC_EGRESS,
            PROG_TC_POD,
            PROG_TC_POD_EGRESS,
        ] {
            let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
            prog.load().map_err(|source| DatapathError::Program {
                what: "load".into(),
                program: name,
                source,
            })?;
        }
        for (name, _, _) in SOCK_PROGS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
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
            pod_ifaces: std::collections::BTreeSet::new(),
        })
    }

    /// Attaches XDP (ingress) and the tc classifiers (ingress and egress) to `iface`.
    /// Returns the XDP mode in use.
    ///
    /// The links are pinned next to the maps, so the datapath keeps working while kproxy
    /// is down (a restart or a crash must not break established flows). If pinned links
    /// from a previous kproxy exist, the new programs replace the old ones atomically
    /// (`bpf_link_update`) instead of attaching a second time.
    pub fn attach_uplink(
        &mut self,
        iface: &str,
        mode: XdpAttachMode,
    ) -> Result<XdpAttachMode, DatapathError> {
        let used = self.attach_xdp(iface, mode)?;
        self.attach_tc(PROG_TC_INGRESS, iface, TcAttachType::Ingress, "tc_in")?;
        self.attach_tc(PROG_TC_EGRESS, iface, TcAttachType::Egress, "tc_eg")?;
        tracing::info!(%iface, xdp_mode = ?used, "datapath attached (xdp + tc ingress/egress)");
        Ok(used)
    }

    /// Attaches the pod programs to a pod's host-side veth: tc ingress (packets from the
    /// pod) does per-packet service translation for traffic socket-LB did not handle,
    /// reverse NAT of the pod's replies, hairpin; tc egress (packets to the pod) reverse
    /// NAT of replies from backends that are not pods (host network, beyond the uplink).
    pub fn attach_pod_iface(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_tc(PROG_TC_POD, iface, TcAttachType::Ingress, TC_POD_TAG)?;
        self.attach_tc(
            PROG_TC_POD_EGRESS,
            iface,
            TcAttachType::Egress,
            TC_POD_EGRESS_TAG,
        )?;
        self.pod_ifaces.insert(iface.to_owned());
        tracing::info!(%iface, "pod interface attached (tc ingress and egress)");
        Ok(())
    }

    /// Attaches a tc program, replacing the program of a pinned link from a previous
    /// kproxy if there is one, and pins the new link.
    fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &str,
        dir: TcAttachType,
        tag: &str,
    ) -> Result<(), DatapathError> {
        let pin = self.iface_link_pin(tag, iface);
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        let err = |what: String| {
            move |source| DatapathError::Program {
                what,
                program: name,
                source,
            }
        };
        if let Some(fd) = open_pinned_link(&pin)
            && let Ok(link) = SchedClassifierLink::try_from(fd)
            && prog.attach_to_link(link).is_ok()
        {
            tracing::info!(%iface, ?dir, program = name, "tc program replaced in the pinned link");
            return Ok(());
        }
        let _ = std::fs::remove_file(&pin);
        // TCX (kernel >= 6.6) needs no qdisc; with aya's netlink fallback the clsact qdisc
        // must exist. Adding it when it is already there fails harmlessly.
        let _ = tc::qdisc_add_clsact(iface);
        let id = prog
            .attach(iface, dir)
            .map_err(err(format!("tc {dir:?} attach to {iface}")))?;
        // aya attaches through TCX (a bpf_link) from 6.6 on; older netlink attachments
        // cannot be pinned and stay owned by the program.
        if kernel_at_least(6, 6) {
            let link = prog
                .take_link(id)
                .map_err(err(format!("take tc link on {iface}")))?;
            if let Err(e) = pin_link(link, &pin) {
                tracing::warn!(%iface, err = %e, "cannot pin the tc link");
            }
        }
        Ok(())
    }

    /// Where the link of `iface` with pin name tag `tag` (`tc_in`, `xdp_skb`, ...) is pinned.
    fn iface_link_pin(&self, tag: &str, iface: &str) -> PathBuf {
        self.bpffs_dir.join(format!("link_{tag}_{iface}"))
    }

    /// Where the socket-LB link with pin name tag `tag` (see `SOCK_PROGS`) is pinned.
    fn sock_link_pin(&self, tag: &str) -> PathBuf {
        self.bpffs_dir.join(format!("link_sock_{tag}"))
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        mode: XdpAttachMode,
    ) -> Result<XdpAttachMode, DatapathError> {
        let (pin_drv, pin_skb) = (
            self.iface_link_pin("xdp_drv", iface),
            self.iface_link_pin("xdp_skb", iface),
        );
        // The measured winner on veth is generic XDP (docs/ARCHITECTURE.md).
        let driver = crate::netif::driver(iface);
        let mode = match mode {
            XdpAttachMode::Auto if driver.as_deref() == Some("veth") => XdpAttachMode::Generic,
            m => m,
        };
        tracing::debug!(%iface, ?driver, ?mode, "uplink driver");
        let xdp: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?;
        // Reuse a pinned link in an acceptable mode; drop one in the wrong mode.
        for (pin, pinned_mode) in [
            (&pin_drv, XdpAttachMode::Driver),
            (&pin_skb, XdpAttachMode::Generic),
        ] {
            let Some(fd) = open_pinned_link(pin) else {
                continue;
            };
            if mode == XdpAttachMode::Auto || mode == pinned_mode {
                if let Ok(link) = XdpLink::try_from(fd)
                    && xdp.attach_to_link(link).is_ok()
                {
                    tracing::info!(%iface, mode = ?pinned_mode, "XDP program replaced in the pinned link");
                    return Ok(pinned_mode);
                }
            } else {
                tracing::info!(%iface, from = ?pinned_mode, to = ?mode, "changing the XDP mode");
            }
            let _ = std::fs::remove_file(pin);
        }
        let try_mode = |xdp: &mut Xdp, flags: XdpMode| {
            xdp.attach(iface, flags)
                .map_err(|source| DatapathError::Program {
                    what: format!("xdp attach to {iface} ({flags:?})"),
                    program: PROG_XDP,
                    source,
                })
        };
        let (id, used) = match mode {
            XdpAttachMode::Driver => (try_mode(xdp, XdpMode::Driver)?, mode),
            XdpAttachMode::Generic => (try_mode(xdp, XdpMode::Skb)?, mode),
            XdpAttachMode::Auto => match try_mode(xdp, XdpMode::Driver) {
                Ok(id) => (id, XdpAttachMode::Driver),
                Err(err) => {
                    tracing::warn!(%iface, err = %err, "native XDP refused, using generic XDP");
                    (try_mode(xdp, XdpMode::Skb)?, XdpAttachMode::Generic)
                }
            },
        };
        // aya attaches through a bpf_link from 5.9 on (falling back to netlink if the
        // kernel refuses); netlink attachments cannot be pinned and stay owned.
        if kernel_at_least(5, 9) {
            let link = xdp.take_link(id).map_err(|source| DatapathError::Program {
                what: format!("take xdp link on {iface}"),
                program: PROG_XDP,
                source,
            })?;
            let pin = if used == XdpAttachMode::Generic {
                &pin_skb
            } else {
                &pin_drv
            };
            if let Err(e) = pin_link(link, pin) {
                tracing::warn!(%iface, err = %e, "cannot pin the XDP link");
            }
        }
        Ok(used)
    }

    /// Attaches the socket-LB programs (connect4, sendmsg4, recvmsg4, getpeername4) to a
    /// cgroup v2 directory, normally the root so every process on the node is covered.
    /// Other programs already attached there keep running: on kernels >= 5.7 aya attaches
    /// through bpf_link, which always coexists with other links (and rejects any mode flag,
    /// hence `Single`, i.e. flags 0).
    ///
    /// As on the uplink, the links are pinned next to the maps (`link_sock_*`), so they stay
    /// attached while kproxy is down and `connect()`s to a service during a restart or after
    /// a crash are still translated (by the previous programs, from the pinned maps). A
    /// restarted kproxy swaps its programs into the pinned links atomically
    /// (`bpf_link_update`) instead of attaching a second time. A pinned link on another
    /// cgroup (`--cgroup` changed) is replaced, the new link being attached before the old
    /// one goes, so the cgroup is never without socket-LB.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let cgroup_err = |source| DatapathError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        };
        let dir = std::fs::File::open(cgroup).map_err(cgroup_err)?;
        // On cgroup v2 the id the kernel reports for a cgroup link is the inode number of
        // the cgroup's directory.
        let cgroup_id = dir.metadata().map_err(cgroup_err)?.ino();
        // Before 5.7 aya attaches with BPF_PROG_ATTACH, which cannot be pinned: keep those
        // attachments owned by this process (detached when it exits), as before pinning.
        let pinnable = kernel_at_least(5, 7);
        let mut reused = 0;
        for (name, tag, attach_type) in SOCK_PROGS {
            let pin = self.sock_link_pin(tag);
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let err = |what: String| {
                move |source| DatapathError::Program {
                    what,
                    program: name,
                    source,
                }
            };
            match cgroup_link::open(&pin) {
                Ok(Some(old)) if old.cgroup_id == cgroup_id && old.attach_type == attach_type => {
                    let new_prog = prog.fd().map_err(err("get the fd".into()))?;
                    match old.update(new_prog.as_fd()) {
                        Ok(()) => {
                            reused += 1;
                            continue;
                        }
                        Err(e) => tracing::warn!(
                            pin = %pin.display(), err = %e,
                            "cannot swap the program of the pinned socket-LB link; attaching anew"
                        ),
                    }
                }
                Ok(Some(old)) => tracing::info!(
                    pin = %pin.display(), old_cgroup_id = old.cgroup_id, %cgroup_id,
                    "pinned socket-LB link is on another (or a removed) cgroup; replacing it"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    pin = %pin.display(), err = %e,
                    "unusable pinned socket-LB link; replacing it"
                ),
            }
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(err(format!("attach to cgroup {}", cgroup.display())))?;
            if !pinnable {
                continue;
            }
            let link = prog
                .take_link(id)
                .map_err(err(format!("take the link on cgroup {}", cgroup.display())))?;
            // The old pin (if any) only goes now, after the new link is attached, so the
            // cgroup is never without socket-LB. A failed pin drops (and so detaches) the
            // new link; that must not go unnoticed.
            pin_link(link, &pin).map_err(|source| DatapathError::PinLink { path: pin, source })?;
        }
        tracing::info!(
            cgroup = %cgroup.display(), reused_pinned_links = reused,
            "socket-LB attached (connect4, sendmsg4, recvmsg4, getpeername4)"
        );
        Ok(())
    }

    /// Removes the pinned socket-LB links of a previous kproxy (socket-LB now off), which
    /// detaches those programs from their cgroup.
    pub fn detach_pinned_cgroup_links(&self) -> Result<usize, DatapathError> {
        let mut removed = 0;
        for (_, tag, _) in SOCK_PROGS {
            let pin = self.sock_link_pin(tag);
            if remove_pin(&pin).map_err(|source| DatapathError::PinLink { path: pin, source })? {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "socket-LB is off: pinned socket-LB links removed");
        }
        Ok(removed)
    }

    fn set_config(&mut self, slot: u32, value: u32) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(MAP_CONFIG)
            .ok_or(DatapathError::MissingMap(MAP_CONFIG))?;
        crate::pinned::write_config(map, slot, value).map_err(|source| DatapathError::Map {
            name: MAP_CONFIG,
            source,
        })
    }

    /// Switches aya-log debug events on or off; takes effect for the next packet.
    pub fn set_debug_events(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_config(config::DEBUG_EVENTS, u32::from(on))
    }

    /// Limits socket-LB to the sockets of one network namespace (its cookie), or lifts the
    /// limit (`None`).
    pub fn set_socket_lb_netns(&mut self, cookie: Option<u64>) -> Result<(), DatapathError> {
        let c = cookie.unwrap_or(0);
        self.set_config(config::SOCK_LB_NETNS_HI, (c >> 32) as u32)?;
        self.set_config(config::SOCK_LB_NETNS_LO, c as u32)
    }

    /// The address ARP replies for LoadBalancer IPs come from (the uplink's MAC).
    pub fn set_uplink_mac(&mut self, mac: [u8; 6]) -> Result<(), DatapathError> {
        self.set_config(
            config::UPLINK_MAC_0,
            u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
        )?;
        self.set_config(
            config::UPLINK_MAC_4,
            u32::from_ne_bytes([mac[4], mac[5], 0, 0]),
        )
    }

    /// Chooses where external traffic is load balanced on the uplink: tc ingress (`true`)
    /// or XDP (`false`).
    pub fn set_lb_in_tc(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_config(config::LB_IN_TC, u32::from(on))
    }

    /// Applies planned map operations in order.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<(), DatapathError> {
        let [svc, be, rn, l2] =
            self.ebpf
                .maps_disjoint_mut([MAP_SERVICES, MAP_BACKENDS, MAP_REVNAT, MAP_L2]);
        let map_err = |name| move |source| DatapathError::Map { name, source };
        let mut services = HashMap::<&mut MapData, ServiceKey, ServiceValue>::try_from(
            svc.ok_or(DatapathError::MissingMap(MAP_SERVICES))?,
        )
        .map_err(map_err(MAP_SERVICES))?;
        let mut backends = HashMap::<&mut MapData, u32, Backend>::try_from(
            be.ok_or(DatapathError::MissingMap(MAP_BACKENDS))?,
        )
        .map_err(map_err(MAP_BACKENDS))?;
        let mut revnat = HashMap::<&mut MapData, u32, RevNat>::try_from(
            rn.ok_or(DatapathError::MissingMap(MAP_REVNAT))?,
        )
        .map_err(map_err(MAP_REVNAT))?;
        let mut l2 = HashMap::<&mut MapData, u32, u32>::try_from(
            l2.ok_or(DatapathError::MissingMap(MAP_L2))?,
        )
        .map_err(map_err(MAP_L2))?;
        for op in ops {
            match op {
                MapOp::PutBackend { id, backend } => backends
                    .insert(id, backend, 0)
                    .map_err(map_err(MAP_BACKENDS))?,
                MapOp::PutRevNat { id, revnat: r } => revnat
                    .insert(u32::from(*id), r, 0)
                    .map_err(map_err(MAP_REVNAT))?,
                MapOp::PutService { key, value } => services
                    .insert(key, value, 0)
                    .map_err(map_err(MAP_SERVICES))?,
                MapOp::DeleteService { key } => {
                    ignore_missing(services.remove(key)).map_err(map_err(MAP_SERVICES))?;
                }
                MapOp::DeleteRevNat { id } => {
                    ignore_missing(revnat.remove(&u32::from(*id))).map_err(map_err(MAP_REVNAT))?;
                }
                MapOp::DeleteBackend { id } => {
                    ignore_missing(backends.remove(id)).map_err(map_err(MAP_BACKENDS))?;
                }
                MapOp::PutL2 { addr } => l2.insert(addr, 1, 0).map_err(map_err(MAP_L2))?,
                MapOp::DeleteL2 { addr } => {
                    ignore_missing(l2.remove(addr)).map_err(map_err(MAP_L2))?;
                }
            }
        }
        Ok(())
    }

    /// A syncer that mirrors what the pinned maps hold now (after a restart: what the
    /// previous kproxy wrote), so the next plan rewrites nothing that is right already.
    pub fn restore_syncer(&self) -> Result<crate::sync::Syncer, DatapathError> {
        let (s, b, r) = self.read_lb_maps()?;
        Ok(crate::sync::Syncer::from_maps(s, b, r).with_l2(self.read_l2()?))
    }

    /// The announced LoadBalancer IPs (network byte order).
    fn read_l2(&self) -> Result<Vec<u32>, DatapathError> {
        let map = self
            .ebpf
            .map(MAP_L2)
            .ok_or(DatapathError::MissingMap(MAP_L2))?;
        let l2 =
            HashMap::<&MapData, u32, u32>::try_from(map).map_err(|source| DatapathError::Map {
                name: MAP_L2,
                source,
            })?;
        l2.keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DatapathError::Map {
                name: MAP_L2,
                source,
            })
    }

    /// The current contents of the service, backend and reverse-NAT maps (after a restart
    /// they hold what the previous kproxy wrote).
    #[expect(clippy::type_complexity, reason = "three plain entry lists")]
    fn read_lb_maps(
        &self,
    ) -> Result<
        (
            Vec<(ServiceKey, ServiceValue)>,
            Vec<(u32, Backend)>,
            Vec<(u32, RevNat)>,
        ),
        DatapathError,
    > {
        crate::pinned::read_lb_maps_from(
            self.ebpf
                .map(MAP_SERVICES)
                .ok_or(DatapathError::MissingMap(MAP_SERVICES))?,
            self.ebpf
                .map(MAP_BACKENDS)
                .ok_or(DatapathError::MissingMap(MAP_BACKENDS))?,
            self.ebpf
                .map(MAP_REVNAT)
                .ok_or(DatapathError::MissingMap(MAP_REVNAT))?,
        )
        .map_err(|(name, source)| DatapathError::Map { name, source })
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

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` on hybrid ones such as these machines).
pub fn find_cgroup2_root() -> Result<PathBuf, DatapathError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| {
        DatapathError::Cgroup {
            path: "/proc/self/mountinfo".into(),
            source,
        }
    })?;
    // Fields: id parent major:minor root mountpoint options ... - fstype source superopts
    info.lines()
        .find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .ok_or(DatapathError::NoCgroup2)
}

/// A pinned link that still refers to a live attachment, without removing its pin.
fn open_pinned_link(pin: &Path) -> Option<FdLink> {
    let pinned = PinnedLink::from_pin(pin).ok()?;
    let fd = FdLink::from(pinned);
    // A link whose device went away is defunct: treat it as absent.
    fd.info().ok()?;
    Some(fd)
}

/// Pins a link taken from its program at `pin`, in place of whatever was pinned there
/// (removing an old pin releases that link once nothing else holds it). Take only a
/// bpf_link: any other kind fails here, and a link dropped on failure is detached.
fn pin_link<L>(link: L, pin: &Path) -> std::io::Result<()>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = FdLink::try_from(link).map_err(std::io::Error::other)?;
    remove_pin(pin)?;
    link.pin(pin).map_err(std::io::Error::other)?;
    Ok(())
}

/// Removes a pin; returns whether there was one.
fn remove_pin(pin: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the running kernel is at least `major.minor`, as aya decides it when choosing how
/// to attach (an unreadable version counts as old).
fn kernel_at_least(major: u8, minor: u8) -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(major, minor, 0))
}

/// Removes the pinned links under `bpffs_dir` (uplink, pod and socket-LB `link_*`: the
/// kernel detaches each program once no process holds its link) and, with `maps`, the
/// pinned maps and the directory too.
pub fn cleanup(bpffs_dir: &Path, maps: bool) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(bpffs_dir)? {
        let entry = entry?;
        let is_link = entry.file_name().to_string_lossy().starts_with("link_");
        if is_link || maps {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if maps {
        std::fs::remove_dir(bpffs_dir)?;
    }
    Ok(removed)
}

/// The pinned socket-LB (cgroup) links, through the bpf(2) syscall: aya 0.14 can neither
/// report a cgroup link's cgroup and attach type nor swap the program of a cgroup link
/// (`attach_to_link` exists for XDP and tc only).
mod cgroup_link {
    use std::{
        ffi::CString,
        io,
        os::{
            fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
            unix::ffi::OsStrExt as _,
        },
        path::Path,
    };

    // `enum bpf_cmd` and `enum bpf_link_type` in linux/bpf.h.
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_UPDATE: libc::c_long = 29;
    const BPF_LINK_TYPE_CGROUP: u32 = 3;

    /// A pinned cgroup link, opened.
    pub struct CgroupLink {
        fd: OwnedFd,
        /// 0 once the cgroup was removed (the link is then defunct).
        pub cgroup_id: u64,
        pub attach_type: u32,
    }

    /// `bpf_link_info` up to its `cgroup` member; the kernel copies at most this much.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        cgroup_id: u64,
        attach_type: u32,
        _pad2: u32,
    }

    /// `bpf(cmd, attr)`; the attr structs below are prefixes of `union bpf_attr`, which the
    /// kernel accepts (it zero-fills the rest).
    ///
    /// # Safety
    ///
    /// `T` must be the `#[repr(C)]` layout (or a prefix of it) of `union bpf_attr` for `cmd`,
    /// and every address in `attr` must point to memory of the size the kernel reads or
    /// writes there for `cmd`, live for the call.
    unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        let size = u32::try_from(size_of::<T>()).expect("small attr");
        // SAFETY: the caller's contract; the kernel reads at most `size` bytes of `attr`.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// Opens the link pinned at `pin`: `None` if there is no pin; an error if it is not a
    /// cgroup link or cannot be read.
    pub fn open(pin: &Path) -> io::Result<Option<CgroupLink>> {
        #[repr(C)]
        struct ObjGet {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let path = CString::new(pin.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut attr = ObjGet {
            pathname: path.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: `ObjGet` is the BPF_OBJ_GET attr; `pathname` is a NUL-terminated string
        // (`path`) that lives until the end of the function.
        let fd = match unsafe { bpf(BPF_OBJ_GET, &mut attr) } {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(io::Error::other)?) };

        #[repr(C)]
        struct GetInfo {
            bpf_fd: u32,
            info_len: u32,
            info: u64,
        }
        let mut info = LinkInfo::default();
        let mut attr = GetInfo {
            bpf_fd: fd.as_raw_fd().cast_unsigned(),
            info_len: u32::try_from(size_of::<LinkInfo>()).expect("small info"),
            info: std::ptr::from_mut(&mut info) as u64,
        };
        // SAFETY: `GetInfo` is the BPF_OBJ_GET_INFO_BY_FD attr; the kernel writes at most
        // `info_len` bytes to `info`, which points to `info` (a live `LinkInfo`).
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
        if info.link_type != BPF_LINK_TYPE_CGROUP {
            return Err(io::Error::other(format!(
                "not a cgroup link (bpf_link_type {})",
                info.link_type
            )));
        }
        Ok(Some(CgroupLink {
            fd,
            cgroup_id: info.cgroup_id,
            attach_type: info.attach_type,
        }))
    }

    impl CgroupLink {
        /// Atomically replaces the link's program (`BPF_LINK_UPDATE`): the cgroup runs
        /// either the old or the new program, never none.
        pub fn update(&self, prog: BorrowedFd<'_>) -> io::Result<()> {
            #[repr(C)]
            struct LinkUpdate {
                link_fd: u32,
                new_prog_fd: u32,
                flags: u32,
                old_prog_fd: u32,
            }
            let mut attr = LinkUpdate {
                link_fd: self.fd.as_raw_fd().cast_unsigned(),
                new_prog_fd: prog.as_raw_fd().cast_unsigned(),
                flags: 0,
                old_prog_fd: 0,
            };
            // SAFETY: `LinkUpdate` is the BPF_LINK_UPDATE attr; it holds no addresses.
            unsafe { bpf(BPF_LINK_UPDATE, &mut attr) }.map(drop)
        }
    }
}
