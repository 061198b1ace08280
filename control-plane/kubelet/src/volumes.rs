//! Pod volumes as Docker bind mounts: `emptyDir` (a directory per pod under the kubelet's
//! state, shared by the pod's containers and removed with the pod), `hostPath` (its `type`
//! checked, or the path created, as the kubelet's hostPath plugin does) and `configMap` /
//! `secret` (written beside the emptyDirs by [`configs`](crate::configs), mounted read-only).
//! Other volume types need objects this node does not serve (claims), so a container mounting
//! one waits with CreateContainerConfigError instead of starting without it.
//!
//! A `subPath` is resolved inside its volume with `openat2(RESOLVE_BENEATH)`: a container can
//! write symlinks into a shared volume, and one that leads out of it (`evil -> /`) must not
//! give another container the host's files (CVE-2017-1002101). Docker gets a kubelet-owned
//! bind mount of what was opened ([`subpath`](crate::subpath)), not a path it would resolve
//! again.

use std::{
    collections::HashSet,
    os::{fd::OwnedFd, unix::fs::FileTypeExt as _},
    path::{Component, Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::{
    errno::Errno,
    fcntl::{OFlag, OpenHow, ResolveFlag},
    sys::stat::Mode,
};

/// Where the pod's emptyDir volumes live.
pub fn pod_dir(state: &Path, uid: &str) -> PathBuf {
    state.join("pods").join(uid)
}

/// The uids of the pods that have a directory under the kubelet's state.
pub fn pod_uids(state: &Path) -> HashSet<String> {
    std::fs::read_dir(state.join("pods"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// A relative path that stays inside its volume (lexically; symlinks are checked when it is
/// resolved on the host).
fn safe_sub_path(sub: &str) -> Result<(), String> {
    let p = Path::new(sub);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "subPath {sub:?} must be a relative path without '..'"
        ));
    }
    Ok(())
}

/// `hostPath.type`: what must be at the path, or be created there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check.
    Any,
    Directory,
    DirectoryOrCreate,
    File,
    FileOrCreate,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" => Self::Any,
            "Directory" => Self::Directory,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "File" => Self::File,
            "FileOrCreate" => Self::FileOrCreate,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            _ => return None,
        })
    }
}

/// What backs a mount on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    EmptyDir,
    HostPath(HostPathType),
    /// A configMap or secret volume, written before the container is created.
    Config,
}

/// A subPath of a volume and the kubelet-owned path it is bind-mounted onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPath {
    pub path: String,
    pub target: PathBuf,
}

/// One mount: the volume's host path, the subPath in it, container path, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub volume: String,
    pub root: PathBuf,
    pub source: Source,
    pub sub_path: Option<SubPath>,
    pub container: String,
    pub read_only: bool,
}

/// A volume that cannot be mounted: the container waits (CreateContainerConfigError) and the
/// pod gets a FailedMount event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    pub volume: String,
    pub message: String,
}

/// Docker's `HostConfig.Binds` form of a resolved host path.
fn docker_bind(host: &Path, container: &str, read_only: bool) -> String {
    format!(
        "{}:{container}{}",
        host.display(),
        if read_only { ":ro" } else { "" }
    )
}

/// The binds for `c`'s volumeMounts (pure: paths only).
pub fn binds(pod: &Pod, c: &Container, pod_dir: &Path) -> Result<Vec<Bind>, String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no volume of that name", m.name))?;
        let (root, source) = if v.empty_dir.is_some() {
            (pod_dir.join("volumes").join(&v.name), Source::EmptyDir)
        } else if v.config_map.is_some() || v.secret.is_some() {
            (crate::configs::volume_dir(pod_dir, &v.name), Source::Config)
        } else if let Some(h) = &v.host_path {
            let kind = h.type_.as_deref().unwrap_or("");
            let kind = HostPathType::parse(kind).ok_or_else(|| {
                format!(
                    "volume {:?}: hostPath type {kind:?} is not supported by this node",
                    v.name
                )
            })?;
            // Docker splits bind strings at ':'; the API refuses such paths too.
            if !h.path.starts_with('/') || h.path.contains(':') {
                return Err(format!(
                    "volume {:?}: hostPath {:?} must be absolute, without ':'",
                    v.name, h.path
                ));
            }
            (PathBuf::from(&h.path), Source::HostPath(kind))
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir, hostPath, configMap and secret volumes are supported by this node",
                v.name
            ));
        };
        let sub_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                safe_sub_path(sub)?;
                Some(SubPath {
                    path: sub.to_string(),
                    target: crate::subpath::target(pod_dir, &v.name, &c.name, index)?,
                })
            }
            None => None,
        };
        out.push(Bind {
            volume: v.name.clone(),
            root,
            source,
            sub_path,
            container: m.mount_path.clone(),
            // The kubelet owns these files: containers only read them.
            read_only: m.read_only == Some(true) || source == Source::Config,
        });
    }
    Ok(out)
}

/// Makes the binds' host paths ready (emptyDir directories, hostPath checks, subPaths resolved
/// inside their volume and bind-mounted onto their targets); returns Docker's bind strings.
pub fn prepare(binds: &[Bind]) -> Result<Vec<String>, MountError> {
    binds
        .iter()
        .map(|b| {
            let err = |message: String| MountError {
                volume: b.volume.clone(),
                message,
            };
            match b.source {
                Source::EmptyDir => std::fs::create_dir_all(&b.root)
                    .map_err(|e| err(format!("creating {}: {e}", b.root.display())))?,
                Source::HostPath(kind) => check_host_path(&b.root, kind).map_err(err)?,
                Source::Config => {
                    if !b.root.is_dir() {
                        return Err(err(format!("{} was not written", b.root.display())));
                    }
                }
            }
            let host = match &b.sub_path {
                Some(sub) => {
                    let failed = |e: String| {
                        err(format!(
                            "subPath {:?} of volume {:?}: {e}",
                            sub.path, b.volume
                        ))
                    };
                    let fd = open_sub_path(&b.root, &sub.path).map_err(failed)?;
                    crate::subpath::bind(&fd, &sub.target).map_err(|e| failed(format!("{e:#}")))?;
                    // The mount holds the directory now; the fd may go.
                    drop(fd);
                    sub.target.clone()
                }
                None => b.root.clone(),
            };
            if host.to_string_lossy().contains(':') {
                return Err(err(format!(
                    "{} contains ':', which Docker cannot bind",
                    host.display()
                )));
            }
            Ok(docker_bind(&host, &b.container, b.read_only))
        })
        .collect()
}

/// The kubelet's hostPath type check (and creation for the `...OrCreate` types); messages as
/// the kubelet words them.
pub fn check_host_path(path: &Path, kind: HostPathType) -> Result<(), String> {
    let failed = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        ))
    };
    // Symlinks are followed, as the kubelet's os.Stat does.
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(std::fs::Metadata::file_type);
    match kind {
        HostPathType::Any => Ok(()),
        HostPathType::DirectoryOrCreate if meta.is_none() => std::fs::create_dir_all(path)
            .map_err(|e| format!("creating hostPath {}: {e}", path.display())),
        HostPathType::Directory | HostPathType::DirectoryOrCreate => {
            if ft.is_some_and(|t| t.is_dir()) {
                Ok(())
            } else {
                failed("directory")
            }
        }
        // The parent is not created: the kubelet's FileOrCreate does not either.
        HostPathType::FileOrCreate if meta.is_none() => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("creating hostPath {}: {e}", path.display())),
        HostPathType::File | HostPathType::FileOrCreate => {
            if ft.is_some_and(|t| t.is_file()) {
                Ok(())
            } else {
                failed("file")
            }
        }
        HostPathType::Socket => {
            if ft.is_some_and(|t| t.is_socket()) {
                Ok(())
            } else {
                failed("socket file")
            }
        }
        HostPathType::CharDevice => {
            if ft.is_some_and(|t| t.is_char_device()) {
                Ok(())
            } else {
                failed("character device")
            }
        }
        HostPathType::BlockDevice => {
            if ft.is_some_and(|t| t.is_block_device()) {
                Ok(())
            } else {
                failed("block device")
            }
        }
    }
}

/// Times [`open_beneath`] retries a lookup the kernel could not vouch for.
const BENEATH_ATTEMPTS: usize = 64;

/// Opens `path` below `root` without leaving it: absolute symlinks and `..` that climb out
/// fail with EXDEV instead of being followed. A `..` resolved while any rename or mount
/// happened on the host makes the kernel answer EAGAIN (it cannot tell the walk stayed
/// inside); openat2(2) says to retry, which this does (seen under parallel tests' mounts).
fn open_beneath(root: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let mut tries = 1;
    loop {
        match nix::fcntl::openat2(root, path, how()) {
            Err(Errno::EAGAIN) if tries < BENEATH_ATTEMPTS => tries += 1,
            other => return other,
        }
    }
}

fn describe(e: Errno) -> String {
    match e {
        Errno::EXDEV => "symlinks lead outside the volume".into(),
        Errno::ELOOP => "too many levels of symlinks".into(),
        other => other.desc().to_string(),
    }
}

/// Opens `sub` inside the volume at `root` (`O_PATH`), symlinks resolved without leaving the
/// volume; missing directories are created (each under a parent opened beneath the root).
pub fn open_sub_path(root: &Path, sub: &str) -> Result<OwnedFd, String> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening the volume {}: {}", root.display(), e.desc()))?;
    let target = Path::new(sub);
    match open_beneath(&root_fd, target) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => {
            let mut prefix = PathBuf::new();
            for comp in target.components() {
                let Component::Normal(name) = comp else {
                    continue;
                };
                let parent = if prefix.as_os_str().is_empty() {
                    root_fd.try_clone().map_err(|e| e.to_string())?
                } else {
                    open_beneath(&root_fd, &prefix).map_err(describe)?
                };
                prefix.push(name);
                match open_beneath(&root_fd, &prefix) {
                    Ok(_) => {}
                    Err(Errno::ENOENT) => {
                        // mkdirat does not follow a final symlink: a dangling one stays an
                        // error (EEXIST, then ENOENT below).
                        match nix::sys::stat::mkdirat(
                            &parent,
                            name,
                            Mode::from_bits_truncate(0o755),
                        ) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(format!("creating it: {}", e.desc())),
                        }
                    }
                    Err(e) => return Err(describe(e)),
                }
            }
            open_beneath(&root_fd, target).map_err(describe)
        }
        Err(e) => Err(describe(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, symlink},
    };

    use super::*;

    /// Where `sub` leads, read back from the opened file.
    fn resolve_sub_path(root: &Path, sub: &str) -> Result<PathBuf, String> {
        let fd = open_sub_path(root, sub)?;
        Ok(std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap())
    }

    fn pod(volumes: &serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [], "volumes": volumes}
        }))
        .unwrap()
    }

    fn container(mounts: &serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": mounts})).unwrap()
    }

    struct Tmp(PathBuf);

    impl Tmp {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("kubelet-vol-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn empty_dirs_and_host_paths_become_binds() {
        let p = pod(&serde_json::json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}},
            {"name": "sock", "hostPath": {"path": "/run/x.sock", "type": "Socket"}}
        ]));
        let c = container(&serde_json::json!([
            {"name": "scratch", "mountPath": "/data"},
            {"name": "scratch", "mountPath": "/sub", "subPath": "a/b"},
            {"name": "logs", "mountPath": "/host-logs", "readOnly": true},
            {"name": "sock", "mountPath": "/x.sock"}
        ]));
        let dir = Path::new("/state/pods/u1");
        let b = binds(&p, &c, dir).unwrap();
        assert_eq!(b[0].root, Path::new("/state/pods/u1/volumes/scratch"));
        assert_eq!(b[0].source, Source::EmptyDir);
        assert_eq!(
            b[1].sub_path,
            Some(SubPath {
                path: "a/b".into(),
                target: "/state/pods/u1/volume-subpaths/scratch/c/1".into()
            })
        );
        assert_eq!(b[2].root, Path::new("/var/log"));
        assert_eq!(b[2].source, Source::HostPath(HostPathType::Directory));
        assert!(b[2].read_only);
        assert_eq!(b[3].source, Source::HostPath(HostPathType::Socket));
    }

    #[test]
    fn unsupported_or_unsafe_mounts_are_refused() {
        let p = pod(&serde_json::json!([
            {"name": "cfg", "downwardAPI": {}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "odd", "hostPath": {"path": "/run/x", "type": "Fifo"}},
            {"name": "colon", "hostPath": {"path": "/a:/b"}},
            {"name": "rel", "hostPath": {"path": "etc"}}
        ]));
        let dir = Path::new("/s");
        let err = |m| binds(&p, &container(&m), dir).unwrap_err();
        assert!(
            err(serde_json::json!([{"name": "cfg", "mountPath": "/c"}])).contains("only emptyDir")
        );
        assert!(
            err(serde_json::json!([{"name": "nope", "mountPath": "/c"}])).contains("no volume")
        );
        assert!(err(serde_json::json!([{"name": "odd", "mountPath": "/c"}])).contains("Fifo"));
        assert!(err(serde_json::json!([{"name": "colon", "mountPath": "/c"}])).contains("':'"));
        assert!(err(serde_json::json!([{"name": "rel", "mountPath": "/c"}])).contains("absolute"));
        assert!(
            err(
                serde_json::json!([{"name": "scratch", "mountPath": "/c", "subPath": "../../etc"}])
            )
            .contains("subPath")
        );
        assert!(
            err(serde_json::json!([{"name": "scratch", "mountPath": "/c", "subPath": "/etc"}]))
                .contains("subPath")
        );
    }

    fn sub(path: &str, target: PathBuf) -> SubPath {
        SubPath {
            path: path.into(),
            target,
        }
    }

    #[test]
    fn prepare_creates_empty_dirs_and_sub_paths() {
        let tmp = Tmp::new("prepare");
        let root = tmp.0.join("volumes/x");
        let bind = |sub_path: Option<SubPath>| Bind {
            volume: "x".into(),
            root: root.clone(),
            source: Source::EmptyDir,
            sub_path,
            container: "/x".into(),
            read_only: false,
        };
        assert_eq!(
            prepare(&[bind(None)]).unwrap(),
            [format!("{}:/x", root.display())]
        );
        assert!(root.is_dir());
        // Bind mounts need root; the privileged e2e tests cover them too.
        if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
            return;
        }
        std::fs::create_dir_all(root.join("f")).unwrap();
        std::fs::write(root.join("f/file"), "in the volume").unwrap();
        let dir_target = tmp.0.join("volume-subpaths/x/c/0");
        let file_target = tmp.0.join("volume-subpaths/x/c/1");
        let binds = [
            bind(Some(sub("a/b", dir_target.clone()))),
            bind(Some(sub("f/file", file_target.clone()))),
        ];
        let mounted = prepare(&binds);
        // A second attempt replaces the mounts instead of stacking them.
        let again = prepare(&binds);
        let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).unwrap();
        let seen = (ino(&dir_target), std::fs::read_to_string(&file_target));
        let points = crate::subpath::mounts_under(&tmp.0).unwrap();
        crate::subpath::clean(&tmp.0).unwrap();
        assert_eq!(
            mounted.unwrap(),
            [
                format!("{}:/x", dir_target.display()),
                format!("{}:/x", file_target.display())
            ]
        );
        again.unwrap();
        assert_eq!(seen.0, ino(&root.join("a/b")));
        assert_eq!(seen.1.unwrap(), "in the volume");
        assert_eq!(points.len(), 2, "{points:?}");
        assert!(!tmp.0.join("volume-subpaths").exists());
        assert!(crate::subpath::mounts_under(&tmp.0).unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(root.join("f/file")).unwrap(),
            "in the volume"
        );
    }

    #[test]
    fn sub_path_symlinks_stay_inside_the_volume() {
        let tmp = Tmp::new("symlinks");
        let root = tmp.0.join("vol");
        std::fs::create_dir_all(root.join("inner/deeper")).unwrap();
        std::fs::create_dir_all(tmp.0.join("outside")).unwrap();
        symlink("/", root.join("evil")).unwrap();
        symlink("../outside", root.join("up")).unwrap();
        symlink("inner", root.join("good")).unwrap();
        symlink("../../inner", root.join("inner/deeper/back")).unwrap();
        symlink("/nonexistent-kubelet-test", root.join("dangling")).unwrap();
        symlink("missing", root.join("inside-dangling")).unwrap();
        let real = std::fs::canonicalize(&root).unwrap();
        assert_eq!(resolve_sub_path(&root, "good").unwrap(), real.join("inner"));
        assert_eq!(
            resolve_sub_path(&root, "inner/deeper/back").unwrap(),
            real.join("inner")
        );
        for escape in [
            "evil",
            "evil/etc",
            "up",
            "dangling",
            "dangling/x",
            "good/../../outside",
        ] {
            let e = resolve_sub_path(&root, escape).unwrap_err();
            assert!(e.contains("outside the volume"), "{escape}: {e}");
        }
        assert!(!Path::new("/nonexistent-kubelet-test").exists());
        assert!(resolve_sub_path(&root, "inside-dangling").is_err());
        // Created through an inside link, inside the volume.
        assert_eq!(
            resolve_sub_path(&root, "good/new/dir").unwrap(),
            real.join("inner/new/dir")
        );
        let b = Bind {
            volume: "v".into(),
            root: root.clone(),
            source: Source::EmptyDir,
            sub_path: Some(sub("evil", tmp.0.join("volume-subpaths/v/c/0"))),
            container: "/m".into(),
            read_only: true,
        };
        let e = prepare(&[b]).unwrap_err();
        assert_eq!(e.volume, "v");
        assert!(
            e.message.starts_with("subPath \"evil\" of volume \"v\""),
            "{e:?}"
        );
    }

    #[test]
    fn host_path_types_are_checked_as_the_kubelet_does() {
        let tmp = Tmp::new("hostpath");
        let file = tmp.0.join("f");
        std::fs::write(&file, "x").unwrap();
        let dir = tmp.0.join("d");
        std::fs::create_dir(&dir).unwrap();
        let sock = tmp.0.join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let null = Path::new("/dev/null");
        let ok = [
            (&dir, HostPathType::Directory),
            (&file, HostPathType::File),
            (&sock, HostPathType::Socket),
            (&file, HostPathType::Any),
        ];
        for (p, t) in ok {
            check_host_path(p, t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        check_host_path(null, HostPathType::CharDevice).unwrap();
        let bad = [
            (&file, HostPathType::Directory, "is not a directory"),
            (&dir, HostPathType::File, "is not a file"),
            (&file, HostPathType::Socket, "is not a socket file"),
            (&dir, HostPathType::CharDevice, "is not a character device"),
        ];
        for (p, t, msg) in bad {
            let e = check_host_path(p, t).unwrap_err();
            assert!(
                e.starts_with("hostPath type check failed: ") && e.ends_with(msg),
                "{e}"
            );
        }
        let e = check_host_path(null, HostPathType::BlockDevice).unwrap_err();
        assert!(e.ends_with("/dev/null is not a block device"), "{e}");
        let missing = tmp.0.join("missing");
        assert!(check_host_path(&missing, HostPathType::Directory).is_err());
        check_host_path(&missing.join("a"), HostPathType::DirectoryOrCreate).unwrap();
        assert!(missing.join("a").is_dir());
        check_host_path(&tmp.0.join("new"), HostPathType::FileOrCreate).unwrap();
        assert!(tmp.0.join("new").is_file());
        assert!(check_host_path(&tmp.0.join("no/parent"), HostPathType::FileOrCreate).is_err());
        assert!(check_host_path(&file, HostPathType::DirectoryOrCreate).is_err());
    }
}
