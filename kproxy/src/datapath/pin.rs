//! Pinned links in bpffs: where they are, pinning, removing.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};

use super::Datapath;

impl Datapath {
    /// Where the link of `iface` with pin name tag `tag` (`tc_in`, `xdp_skb`, ...) is pinned.
    pub(super) fn iface_link_pin(&self, tag: &str, iface: &str) -> PathBuf {
        self.bpffs_dir.join(format!("link_{tag}_{iface}"))
    }
}

/// A pinned link that still refers to a live attachment, without removing its pin.
pub(super) fn open_pinned_link(pin: &Path) -> Option<FdLink> {
    let pinned = PinnedLink::from_pin(pin).ok()?;
    let fd = FdLink::from(pinned);
    // A link whose device went away is defunct: treat it as absent.
    fd.info().ok()?;
    Some(fd)
}

/// Pins a link taken from its program at `pin`, in place of whatever was pinned there
/// (removing an old pin releases that link once nothing else holds it). Take only a
/// bpf_link: any other kind fails here, and a link dropped on failure is detached.
pub(super) fn pin_link<L>(link: L, pin: &Path) -> std::io::Result<()>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = FdLink::try_from(link).map_err(std::io::Error::other)?;
    remove_pin(pin)?;
    link.pin(pin).map_err(std::io::Error::other)?;
    Ok(())
}

/// Removes a pin; returns whether there was one.
pub(super) fn remove_pin(pin: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
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
