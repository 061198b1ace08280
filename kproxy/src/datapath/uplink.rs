//! The uplink: XDP (per-packet load balancing of external traffic) and the tc classifiers
//! (ingress: refusals, ARP answers; egress: reverse NAT of replies).

use aya::programs::{TcAttachType, Xdp, XdpMode, xdp::XdpLink};
use kproxy_common::{PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP};

use super::{
    Datapath, DatapathError, XdpAttachMode, kernel_at_least,
    pin::{open_pinned_link, pin_link},
    program,
};

impl Datapath {
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
}
