//! Attaching a tc classifier with a pinned link (uplink and pod veths alike).

use aya::programs::{
    SchedClassifier, TcAttachType,
    tc::{self, SchedClassifierLink},
};

use super::{
    Datapath, DatapathError, kernel_at_least,
    pin::{open_pinned_link, pin_link},
    program,
};

impl Datapath {
    /// Attaches a tc program, replacing the program of a pinned link from a previous
    /// kproxy if there is one, and pins the new link.
    pub(super) fn attach_tc(
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
}
