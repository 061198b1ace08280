//! The pod programs on pod veths: attaching, detaching, and the bookkeeping of which pod
//! veths carry them, so pod veths can come and go while kproxy runs (`--pod-bridge`).

use aya::programs::TcAttachType;
use kproxy_common::{PROG_TC_POD, PROG_TC_POD_EGRESS};

use super::{Datapath, DatapathError, pin::remove_pin};

/// Pin name tag of pod veth tc links (`link_tc_pod_<iface>`).
const TC_POD_TAG: &str = "tc_pod";
/// Pin name tag of pod veth tc egress links (`link_tc_podeg_<iface>`; not a prefix of
/// `tc_pod_`, so the two never mix up).
const TC_POD_EGRESS_TAG: &str = "tc_podeg";

impl Datapath {
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

    /// Forgets pod interface `iface` and removes its pinned tc link. Once the pin is gone
    /// nothing holds the link, so the program leaves the interface if it still exists (a
    /// veth taken off the bridge); for a deleted veth the kernel already detached it, and
    /// the pin would only keep a defunct link around. Returns whether `iface` was attached.
    pub fn detach_pod_iface(&mut self, iface: &str) -> std::io::Result<bool> {
        let was_attached = self.pod_ifaces.remove(iface);
        for tag in [TC_POD_TAG, TC_POD_EGRESS_TAG] {
            let pin = self.iface_link_pin(tag, iface);
            // Nothing pinned if never attached, or attached through netlink (no TCX before
            // 6.6): that attachment stays with the program until the veth or kproxy goes.
            remove_pin(&pin).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("removing the pinned tc link {}: {e}", pin.display()),
                )
            })?;
        }
        if was_attached {
            tracing::info!(%iface, "pod interface detached (tc ingress and egress)");
        }
        Ok(was_attached)
    }

    /// Removes the pinned pod links of interfaces that are not attached now: a previous
    /// kproxy's pod veths that were deleted or left the bridge while no kproxy was running
    /// (nobody saw their events). Call once every wanted pod interface is attached. Returns
    /// the interface names whose pins were removed.
    pub fn sweep_stale_pod_links(&mut self) -> std::io::Result<Vec<String>> {
        let prefixes = [TC_POD_TAG, TC_POD_EGRESS_TAG].map(|tag| format!("link_{tag}_"));
        let mut stale = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&self.bpffs_dir)? {
            let file = entry?.file_name();
            let Some(iface) = file
                .to_str()
                .and_then(|f| prefixes.iter().find_map(|p| f.strip_prefix(p.as_str())))
            else {
                continue;
            };
            if !self.pod_ifaces.contains(iface) {
                stale.insert(iface.to_owned());
            }
        }
        let stale: Vec<String> = stale.into_iter().collect();
        for iface in &stale {
            self.detach_pod_iface(iface)?;
        }
        Ok(stale)
    }

    /// The pod interfaces the pod program is attached to, by name.
    pub fn pod_ifaces(&self) -> impl Iterator<Item = &str> {
        self.pod_ifaces.iter().map(String::as_str)
    }
}
