//! subPath bind targets, as the kubelet's `subpath_linux.go` makes them: the subPath is opened
//! beneath its volume and the open file itself (`/proc/self/fd/N`) is bind-mounted onto a
//! kubelet-owned target, which Docker gets as the bind source. A path handed to Docker would be
//! resolved again when the container starts, after a container sharing the volume could have
//! swapped a directory on it for a symlink (CVE-2017-1002101, CVE-2021-25741); the mount pins
//! what was checked.
//!
//! Targets live in `<pod dir>/volume-subpaths/<volume>/<container>/<mount index>`, outside every
//! volume. Removing them never recurses: below a target is the volume's (for hostPath, the
//! host's) data, so they are unmounted and then removed with rmdir/unlink only.

use std::{
    io::ErrorKind,
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags},
    sys::stat::SFlag,
};

const DIR: &str = "volume-subpaths";

/// Where the bind target of mount `index` (of `container`'s volumeMounts) lives.
pub fn target(
    pod_dir: &Path,
    volume: &str,
    container: &str,
    index: usize,
) -> Result<PathBuf, String> {
    for name in [volume, container] {
        // Names are DNS labels once validated; a separator would leave the target's directory.
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(format!("{name:?} cannot name a subPath mount directory"));
        }
    }
    Ok(pod_dir
        .join(DIR)
        .join(volume)
        .join(container)
        .join(index.to_string()))
}

/// Unmounts everything mounted on `path` (stacked mounts too). `Ok(false)`: nothing was.
fn unmount(path: &Path) -> Result<bool> {
    let mut any = false;
    // Bounded: a mount that keeps coming back is an error, not a loop.
    for _ in 0..16 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => any = true,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(any),
            Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
        }
    }
    bail!("{} is still mounted after 16 unmounts", path.display())
}

/// Removes `path` if it is an empty directory or a file; never recursively.
fn remove_one(path: &Path) -> std::io::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Bind-mounts the open subPath `fd` onto `target` (replacing what an earlier attempt of the
/// container had there); the target is a directory or a file, as the source is.
pub fn bind(fd: &OwnedFd, target: &Path) -> Result<()> {
    let is_dir = nix::sys::stat::fstat(fd)
        .map(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
        .context("inspecting the subPath")?;
    // A new attempt resolves the subPath afresh: the earlier attempt's mount goes.
    unmount(target)?;
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == is_dir && (is_dir || m.is_file()) => {}
        Ok(_) => remove_one(target).with_context(|| format!("replacing {}", target.display()))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", target.display())),
    }
    let parent = target.parent().context("the target has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let made = if is_dir {
        std::fs::create_dir(target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map(drop)
    };
    match made {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("creating {}", target.display()));
        }
        _ => {}
    }
    // The magic link is the open file itself: no path is resolved again.
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting the subPath onto {}", target.display()))
}

/// Unmounts and removes every subPath target of the pod. On error the rest stays (the caller
/// must then not remove the pod directory).
pub fn clean(pod_dir: &Path) -> Result<()> {
    let base = pod_dir.join(DIR);
    // Whatever is mounted below, also where the tree walk would not look (deepest first).
    let mut mounted = mounts_under(&base)?;
    mounted.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in &mounted {
        unmount(m)?;
    }
    let entries = |dir: &Path| -> Result<Vec<PathBuf>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", dir.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
        }
    };
    for volume in entries(&base)? {
        for container in entries(&volume)? {
            for t in entries(&container)? {
                unmount(&t)?;
                remove_one(&t).with_context(|| format!("removing {}", t.display()))?;
            }
            remove_one(&container).with_context(|| format!("removing {}", container.display()))?;
        }
        remove_one(&volume).with_context(|| format!("removing {}", volume.display()))?;
    }
    remove_one(&base).with_context(|| format!("removing {}", base.display()))?;
    let left = mounts_under(pod_dir)?;
    if let Some(m) = left.first() {
        bail!("{} is still mounted", m.display());
    }
    Ok(())
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    // mountinfo names mount points by their canonical paths.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(mount_points(&info)
        .filter(|p| p.starts_with(&dir))
        .collect())
}

/// The mount points (5th field, octal escapes undone) of a mountinfo text.
fn mount_points(info: &str) -> impl Iterator<Item = PathBuf> + '_ {
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let digits = bytes
            .get(at + 1..at + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[at], digits) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                at += 4;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_per_volume_container_and_mount() {
        let t = target(Path::new("/s/pods/u1"), "data", "app", 2).unwrap();
        assert_eq!(t, Path::new("/s/pods/u1/volume-subpaths/data/app/2"));
        for (v, c) in [("..", "app"), ("data", "a/b"), ("", "app"), ("data", ".")] {
            assert!(target(Path::new("/s"), v, c, 0).is_err(), "{v:?} {c:?}");
        }
    }

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let info = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    90 27 254:0 /tmp/v/inner /s/pods/u/volume-subpaths/v/c/0 rw - ext4 /dev/vda rw\n\
                    91 27 254:0 /a /with\\040space\\134x rw - ext4 /dev/vda rw\n";
        let points: Vec<PathBuf> = mount_points(info).collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/"),
                PathBuf::from("/s/pods/u/volume-subpaths/v/c/0"),
                PathBuf::from("/with space\\x"),
            ]
        );
        assert_eq!(unescape("a\\0b"), "a\\0b");
        assert_eq!(unescape("tail\\"), "tail\\");
    }
}
