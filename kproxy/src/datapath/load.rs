//! The eBPF object built by build.rs from `kproxy-ebpf`, and loading its programs.

use std::path::Path;

use aya::{
    EbpfLoader,
    programs::{CgroupSockAddr, SchedClassifier, Xdp},
};
use kproxy_common::{
    PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_TC_KEEP_LOCAL, PROG_TC_POD, PROG_TC_POD_EGRESS, PROG_XDP,
};

use super::{Datapath, DatapathError, program, socket_lb::SOCK_PROGS};

/// The eBPF object built by build.rs from `kproxy-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kproxy-ebpf"));

/// The tc classifiers (the socket-LB programs are in `SOCK_PROGS`).
const TC_PROGS: [&str; 5] = [
    PROG_TC_INGRESS,
    PROG_TC_EGRESS,
    PROG_TC_POD,
    PROG_TC_POD_EGRESS,
    PROG_TC_KEEP_LOCAL,
];

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
        for name in TC_PROGS {
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
        let vips = super::vips::VipTable::read(
            ebpf.map(kproxy_common::MAP_VIPS)
                .ok_or(DatapathError::MissingMap(kproxy_common::MAP_VIPS))?,
        )?;
        Ok(Self {
            ebpf,
            bpffs_dir: bpffs_dir.to_path_buf(),
            pod_ifaces: std::collections::BTreeSet::new(),
            sock_cgroup: None,
            sock_removed_at: super::sock_term::RemovedAt::default(),
            lb: super::LbSettings::default(),
            host_routing: false,
            vips,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kproxy_common as abi;

    use super::{EBPF_OBJECT, SOCK_PROGS, TC_PROGS};

    fn u16_at(b: &[u8], at: usize) -> usize {
        usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
    }
    fn u32_at(b: &[u8], at: usize) -> usize {
        usize::try_from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap())).unwrap()
    }
    fn u64_at(b: &[u8], at: usize) -> usize {
        usize::try_from(u64::from_le_bytes(b[at..at + 8].try_into().unwrap())).unwrap()
    }
    fn cstr(b: &[u8], at: usize) -> String {
        let end = b[at..].iter().position(|c| *c == 0).unwrap();
        String::from_utf8(b[at..at + end].to_vec()).unwrap()
    }

    /// The global symbols of the embedded ELF64 little-endian object, with the name of the
    /// section each is defined in (aya names maps and programs by these symbols).
    fn symbols() -> Vec<(String, String)> {
        let elf = EBPF_OBJECT;
        assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "ELF64 little-endian");
        let (shoff, shentsize, shnum) = (u64_at(elf, 0x28), u16_at(elf, 0x3a), u16_at(elf, 0x3c));
        let section = |i: usize| &elf[shoff + i * shentsize..shoff + (i + 1) * shentsize];
        let shstr = u64_at(section(u16_at(elf, 0x3e)), 24);
        let section_name = |i: usize| cstr(elf, shstr + u32_at(section(i), 0));
        let mut out = Vec::new();
        for i in 0..shnum {
            let sh = section(i);
            // SHT_SYMTAB
            if u32_at(sh, 4) != 2 {
                continue;
            }
            let (off, size, strtab) = (u64_at(sh, 24), u64_at(sh, 32), u32_at(sh, 40));
            let strs = u64_at(section(strtab), 24);
            for sym in elf[off..off + size].chunks_exact(24) {
                let (bind, shndx) = (sym[4] >> 4, u16_at(sym, 6));
                // STB_GLOBAL symbols defined in a regular section.
                if bind == 1 && shndx != 0 && shndx < 0xff00 {
                    out.push((cstr(elf, strs + u32_at(sym, 0)), section_name(shndx)));
                }
            }
        }
        out
    }

    #[test]
    fn object_has_exactly_the_maps_and_programs_kproxy_common_names() {
        let syms = symbols();
        let maps: BTreeSet<&str> = syms
            .iter()
            .filter(|(_, section)| section == "maps")
            .map(|(name, _)| name.as_str())
            .collect();
        let want_maps = BTreeSet::from([
            abi::MAP_IFSTATS,
            abi::MAP_CONFIG,
            abi::MAP_SERVICES,
            abi::MAP_BACKENDS,
            abi::MAP_REVNAT,
            abi::MAP_CT,
            abi::MAP_L2,
            abi::MAP_VIPS,
            abi::MAP_AFFINITY,
            abi::MAP_SOCK_REVNAT,
            abi::MAP_SVC_STATS,
            abi::MAP_BACKEND_STATS,
            abi::MAP_SCRATCH,
            abi::MAP_MAGLEV,
            abi::MAP_AFFINITY_MATCH,
            abi::MAP_SRC_RANGE,
            abi::MAP_DROPS,
            abi::MAP_HOST_ROUTES,
            abi::MAP_FRAGS,
            // aya-log's ring buffer (its name is aya-log's, not ours).
            "AYA_LOGS",
        ]);
        assert_eq!(maps, want_maps);

        let programs: BTreeSet<&str> = syms
            .iter()
            .filter(|(_, section)| {
                ["xdp", "classifier"].contains(&section.as_str()) || section.starts_with("cgroup/")
            })
            .map(|(name, _)| name.as_str())
            .collect();
        let mut want_programs: BTreeSet<&str> = TC_PROGS.into_iter().collect();
        want_programs.extend(SOCK_PROGS.map(|(name, _, _)| name));
        want_programs.insert(abi::PROG_XDP);
        assert_eq!(programs, want_programs);
    }
}
