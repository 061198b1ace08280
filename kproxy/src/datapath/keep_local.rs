//! The keep-local device's program (`kproxy_tc_keep_local` on its egress): the node routes
//! the service CIDR and LoadBalancer pools to that dummy link, and the program answers
//! echo requests to service addresses and refuses everything else (kproxy-ebpf
//! `keep_local.rs`).

use aya::programs::TcAttachType;
use kproxy_common::PROG_TC_KEEP_LOCAL;

use super::{Datapath, DatapathError};

/// Pin name tag of the keep-local device's tc link (`link_tc_keep_<iface>`).
pub const TC_KEEP_TAG: &str = "tc_keep";

impl Datapath {
    /// Attaches the keep-local program to `iface`'s egress (replacing a previous kproxy's
    /// program in its pinned link).
    pub fn attach_keep_local(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_tc(PROG_TC_KEEP_LOCAL, iface, TcAttachType::Egress, TC_KEEP_TAG)
    }
}

/// The keep-local devices whose links are pinned in `bpffs_dir` (the devices this
/// datapath owns), by name.
#[must_use]
pub fn keep_local_devices(bpffs_dir: &std::path::Path) -> Vec<String> {
    let prefix = format!("link_{TC_KEEP_TAG}_");
    std::fs::read_dir(bpffs_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect()
}
