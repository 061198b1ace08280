//! `cargo xtask images`: the node's container images, built locally (no registry is
//! reachable): `kproxy/pause:1` (pod sandbox), `kproxy/httpd:1` (busybox httpd naming the pod),
//! `kproxy/kecho:1` (TCP/UDP/HTTP echo) and `kproxy/busybox:1` (a shell and the usual tools, for
//! `kubectl run -it`, `kubectl debug` and `kubectl cp`, which needs `tar`). Each is `FROM scratch` plus static binaries; the
//! build context is a tar assembled in memory and sent to the Docker Engine API.
//!
//! Idempotent: every image carries a label with the hash of its build context, and an image
//! whose tag already has that label is not rebuilt.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use bollard::{
    Docker,
    query_parameters::{BuildImageOptions, RemoveImageOptions, TagImageOptions},
};
use futures::StreamExt as _;

use crate::util::{cargo, run_cmd, step, workspace_root};

/// The label holding the build-context hash (see [`context_hash`]).
pub const HASH_LABEL: &str = "io.kproxy.context-hash";
/// Debian's busybox-static: a statically linked busybox that runs in a scratch image.
const BUSYBOX: &str = "/bin/busybox";
/// Separate from `target/` so the static-linking RUSTFLAGS do not invalidate the main build.
const TARGET_DIR: &str = "target/podimages";
const TARGET: &str = "x86_64-unknown-linux-gnu";

const PAUSE_DOCKERFILE: &str = "FROM scratch
COPY pause /pause
ENTRYPOINT [\"/pause\"]
";

/// The entrypoint shell supervises httpd and drains on SIGTERM (see [`HTTPD_ENTRYPOINT`]); it
/// traps TERM, so it works as PID 1 and behind an init (Docker's `--init`, HostConfig.init, as
/// the kubelet does) that forwards SIGTERM to it alone.
const HTTPD_DOCKERFILE: &str = "FROM scratch
COPY busybox /bin/busybox
COPY entrypoint.sh /entrypoint.sh
EXPOSE 80
ENTRYPOINT [\"/bin/busybox\", \"sh\", \"/entrypoint.sh\"]
";

/// Writes the page naming the pod (POD_NAME, else the hostname the kubelet sets to the pod
/// name), escaped for HTML, then runs the web server with `-v`: one line per request on stderr,
/// `<client-ip>:<port>: response:<status>`, so `kctl logs` shows which address each request
/// came from. Every tool is called through busybox: the image has no applet links.
///
/// On SIGTERM the pod is being deleted, and load balancers drop its endpoint at about the same
/// time: httpd keeps serving for DRAIN_SECONDS (default 1) so requests routed to it meanwhile
/// still succeed, then it is stopped and the shell exits 0. httpd runs in the background so
/// that the shell, which alone receives the signal, can trap it while `wait` blocks.
const HTTPD_ENTRYPOINT: &str = r#"set -e
name="${POD_NAME:-$(/bin/busybox hostname)}"
safe="$(printf '%s' "$name" | /bin/busybox sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g')"
/bin/busybox mkdir -p /www
printf '<!DOCTYPE html>\n<html><head><title>%s</title></head>\n<body><h1>kproxy httpd</h1>\n<p>pod: %s</p>\n</body></html>\n' "$safe" "$safe" > /www/index.html
drain="${DRAIN_SECONDS:-1}"
case "$drain" in
''|*[!0-9.]*) echo "httpd: DRAIN_SECONDS=$drain is not a number of seconds; using 1" >&2; drain=1 ;;
esac
set +e
# IPv4 only: the log then names clients as 198.19.4.2:41690, not [::ffff:198.19.4.2]:41690.
/bin/busybox httpd -f -v -p 0.0.0.0:80 -h /www &
pid=$!
stop() {
  echo "httpd: terminating: serving ${drain}s more, then stopping" >&2
  /bin/busybox sleep "$drain"
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "httpd: stopped" >&2
  exit 0
}
trap stop TERM INT
# Returns early when a trapped signal arrives; the trap then never returns.
wait "$pid"
status=$?
echo "httpd: exited with status $status" >&2
exit "$status"
"#;

/// Every applet is a symlink in /bin (made in the build context), so `sh`, `tar`, `ls` … are on
/// the PATH as in Docker Hub's busybox image; /tmp (mode 1777) is there for `kubectl cp`.
/// Copying the contents of `rootfs/` keeps the modes of the directories inside it.
const BUSYBOX_DOCKERFILE: &str = "FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD [\"sh\"]
";

const KECHO_DOCKERFILE: &str = "FROM scratch
COPY kecho /kecho
EXPOSE 8080 8080/udp
ENTRYPOINT [\"/kecho\"]
";

/// One file of a build context.
pub struct ContextFile {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
    /// Makes the entry a symlink to this target (`data` is then empty).
    pub link: Option<String>,
    /// Makes the entry a directory (`data` is then empty).
    pub dir: bool,
}

/// An image to build: its main tag, further tags, and its build context.
pub struct ImageSpec {
    pub tag: &'static str,
    pub extra_tags: &'static [&'static str],
    pub dockerfile: &'static str,
    pub files: Vec<ContextFile>,
}

pub fn images() -> Result<()> {
    let started = Instant::now();
    let bin_dir = build_binaries()?;
    let specs = image_specs(&bin_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(ensure_all(&specs))?;
    println!("images: done in {:.1?}", started.elapsed());
    Ok(())
}

/// Builds `kpause` and `kecho` as static executables; returns their directory.
fn build_binaries() -> Result<PathBuf> {
    step("images: building kpause and kecho (static, release)");
    let target_dir = workspace_root().join(TARGET_DIR);
    run_cmd(
        cargo()
            .args([
                "build",
                "--release",
                "-p",
                "kproxy-podimages",
                "--target",
                TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            // glibc's libc.a is installed and the musl target cannot be downloaded here.
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            // It would take precedence over RUSTFLAGS.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            // Symbols are dead weight in an image.
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"),
    )
    .context("build the pod image binaries")?;
    Ok(target_dir.join(TARGET).join("release"))
}

/// Reads a file that must be a static executable (the images have no libc to link against).
fn static_executable(path: &Path, hint: &str) -> Result<Vec<u8>> {
    let data = fs::read(path).with_context(|| format!("read {} ({hint})", path.display()))?;
    match is_static_elf(&data) {
        Some(true) => Ok(data),
        Some(false) => bail!("{} is dynamically linked ({hint})", path.display()),
        None => bail!(
            "{} is not an x86-64 ELF executable ({hint})",
            path.display()
        ),
    }
}

fn image_specs(bin_dir: &Path) -> Result<Vec<ImageSpec>> {
    let bin = |name: &str| static_executable(&bin_dir.join(name), "built by `cargo xtask images`");
    let busybox = static_executable(
        Path::new(BUSYBOX),
        "needs Debian's busybox-static: apt-get install busybox-static",
    )?;
    let file = |path: &str, mode, data| ContextFile {
        path: path.to_string(),
        mode,
        data,
        link: None,
        dir: false,
    };
    let mut busybox_files = vec![
        ContextFile {
            dir: true,
            ..file("rootfs/tmp", 0o1777, Vec::new())
        },
        file("rootfs/bin/busybox", 0o755, busybox.clone()),
    ];
    busybox_files.extend(busybox_applets()?.into_iter().map(|applet| ContextFile {
        link: Some("busybox".to_string()),
        ..file(&format!("rootfs/bin/{applet}"), 0o777, Vec::new())
    }));
    Ok(vec![
        ImageSpec {
            tag: "kproxy/pause:1",
            extra_tags: &[],
            dockerfile: PAUSE_DOCKERFILE,
            files: vec![file("pause", 0o755, bin("kpause")?)],
        },
        ImageSpec {
            tag: "kproxy/httpd:1",
            // `kctl create deployment web --image=httpd` must work offline.
            extra_tags: &["httpd:latest"],
            dockerfile: HTTPD_DOCKERFILE,
            files: vec![
                file("busybox", 0o755, busybox),
                file("entrypoint.sh", 0o644, HTTPD_ENTRYPOINT.as_bytes().to_vec()),
            ],
        },
        ImageSpec {
            tag: "kproxy/kecho:1",
            extra_tags: &["kecho:latest"],
            dockerfile: KECHO_DOCKERFILE,
            files: vec![file("kecho", 0o755, bin("kecho")?)],
        },
        ImageSpec {
            tag: "kproxy/busybox:1",
            // Tutorials' `kubectl run -it --rm --image=busybox -- sh` must work offline.
            extra_tags: &["busybox:latest"],
            dockerfile: BUSYBOX_DOCKERFILE,
            files: busybox_files,
        },
    ])
}

/// The applets the host's busybox-static provides (`busybox --list`), sorted so the build
/// context stays the same from run to run.
fn busybox_applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("run {BUSYBOX} --list"))?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list failed: {}", out.status);
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// `Some(true)` for an x86-64 ELF executable without a program interpreter (static or
/// static-pie), `Some(false)` for a dynamic one, `None` if `data` is not such an ELF file.
#[must_use]
pub fn is_static_elf(data: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    let u16_at = |off: usize| Some(u16::from_le_bytes(data.get(off..off + 2)?.try_into().ok()?));
    let u32_at = |off: usize| Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?));
    let u64_at = |off: usize| Some(u64::from_le_bytes(data.get(off..off + 8)?.try_into().ok()?));
    // ELF magic, 64-bit, little-endian, x86-64 (e_machine 62).
    if data.get(..6)? != b"\x7fELF\x02\x01" || u16_at(18)? != 62 {
        return None;
    }
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let phentsize = usize::from(u16_at(54)?);
    let phnum = usize::from(u16_at(56)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(off)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// A deterministic tar of the Dockerfile and files (zero mtimes and owners), so the same
/// inputs always give the same bytes and the same [`context_hash`].
pub fn context_tar(dockerfile: &str, files: &[ContextFile]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let entries = std::iter::once(("Dockerfile", 0o644, dockerfile.as_bytes(), None, false)).chain(
        files.iter().map(|f| {
            (
                f.path.as_str(),
                f.mode,
                f.data.as_slice(),
                f.link.as_deref(),
                f.dir,
            )
        }),
    );
    for (path, mode, data, link, dir) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, path, std::io::empty())
                .with_context(|| format!("add the directory {path} to the build context"))?;
        } else if let Some(target) = link {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, path, target)
                .with_context(|| format!("add the link {path} to the build context"))?;
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, path, data)
                .with_context(|| format!("add {path} to the build context"))?;
        }
    }
    tar.into_inner().context("finish the build context tar")
}

/// FNV-1a (64-bit) of the context, hex: a cache key, not a security boundary.
#[must_use]
pub fn context_hash(context: &[u8]) -> String {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(context);
    format!("fnv1a64:{:016x}", h.finish())
}

/// Splits `repo[:tag]` into repository and tag (default `latest`); a `:` inside a registry
/// host (`host:5000/repo`) is not a tag separator.
pub fn split_tag(reference: &str) -> Result<(&str, &str)> {
    let (repo, tag) = match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    };
    if repo.is_empty() || tag.is_empty() {
        bail!("bad image reference {reference:?}");
    }
    Ok((repo, tag))
}

pub async fn connect() -> Result<Docker> {
    Docker::connect_with_local_defaults()
        .context("Docker engine client")?
        .negotiate_version()
        .await
        .context("no Docker engine answers (start it with `cargo xtask setup`)")
}

async fn ensure_all(specs: &[ImageSpec]) -> Result<()> {
    let docker = connect().await?;
    for spec in specs {
        ensure(&docker, spec)
            .await
            .with_context(|| format!("image {}", spec.tag))?;
    }
    Ok(())
}

/// The image id and context-hash label of `reference`, `None` if there is no such image.
async fn inspect(docker: &Docker, reference: &str) -> Result<Option<(String, Option<String>)>> {
    match docker.inspect_image(reference).await {
        Ok(img) => {
            let id = img.id.unwrap_or_default();
            let hash = img
                .config
                .and_then(|c| c.labels)
                .and_then(|mut l| l.remove(HASH_LABEL));
            Ok(Some((id, hash)))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspect image {reference}")),
    }
}

async fn ensure(docker: &Docker, spec: &ImageSpec) -> Result<()> {
    let context = context_tar(spec.dockerfile, &spec.files)?;
    let hash = context_hash(&context);
    let existing = inspect(docker, spec.tag).await?;
    let id = match &existing {
        Some((id, Some(h))) if *h == hash => {
            println!("images: {} up to date", spec.tag);
            id.clone()
        }
        _ => {
            let started = Instant::now();
            println!(
                "images: building {} ({} KiB context) ...",
                spec.tag,
                context.len() / 1024
            );
            build(docker, spec.tag, &hash, context).await?;
            let (id, _) = inspect(docker, spec.tag)
                .await?
                .with_context(|| format!("{} missing right after its build", spec.tag))?;
            println!("images: built {} in {:.1?}", spec.tag, started.elapsed());
            id
        }
    };
    for extra in spec.extra_tags {
        if inspect(docker, extra).await?.is_some_and(|(i, _)| i == id) {
            continue;
        }
        let (repo, tag) = split_tag(extra)?;
        let opts = TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
        };
        docker
            .tag_image(&id, Some(opts))
            .await
            .with_context(|| format!("tag {} as {extra}", spec.tag))?;
        println!("images: tagged {} as {extra}", spec.tag);
    }
    if let Some((old, _)) = existing
        && old != id
    {
        // Best effort: the replaced image may still be used by containers or other tags.
        let _ = docker
            .remove_image(&old, None::<RemoveImageOptions>, None)
            .await;
    }
    Ok(())
}

async fn build(docker: &Docker, tag: &str, hash: &str, context: Vec<u8>) -> Result<()> {
    let opts = BuildImageOptions {
        t: Some(tag.to_string()),
        labels: Some(HashMap::from([(HASH_LABEL.to_string(), hash.to_string())])),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(context.into())));
    // The builder's log is only shown when the build fails.
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("docker build {tag}:\n{log}"))?;
        if let Some(detail) = info.error_detail {
            bail!(
                "docker build {tag}: {}\n{log}",
                detail.message.unwrap_or_default()
            );
        }
        if let Some(s) = info.stream {
            log.push_str(&s);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(interp: bool) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 2 * 56];
        d[..6].copy_from_slice(b"\x7fELF\x02\x01");
        d[18..20].copy_from_slice(&62u16.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&2u16.to_le_bytes());
        d[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        let second: u32 = if interp { 3 } else { 6 };
        d[120..124].copy_from_slice(&second.to_le_bytes());
        d
    }

    #[test]
    fn static_elf_detection() {
        assert_eq!(is_static_elf(&elf(false)), Some(true));
        assert_eq!(is_static_elf(&elf(true)), Some(false));
    }

    #[test]
    fn non_elf_and_truncated_are_rejected() {
        assert_eq!(is_static_elf(b"#!/bin/sh\n"), None);
        assert_eq!(is_static_elf(&[]), None);
        let mut d = elf(true);
        d.truncate(100); // program headers cut off
        assert_eq!(is_static_elf(&d), None);
        let mut arm = elf(false);
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(is_static_elf(&arm), None);
    }

    #[test]
    fn host_busybox_is_static_when_installed() {
        if let Ok(d) = fs::read(BUSYBOX) {
            assert!(is_static_elf(&d).is_some());
        }
    }

    fn files(data: &[u8]) -> Vec<ContextFile> {
        vec![ContextFile {
            path: "bin".into(),
            mode: 0o755,
            data: data.to_vec(),
            link: None,
            dir: false,
        }]
    }

    #[test]
    fn context_is_deterministic_and_hash_tracks_content() {
        let a = context_tar("FROM scratch\n", &files(b"one")).unwrap();
        let b = context_tar("FROM scratch\n", &files(b"one")).unwrap();
        assert_eq!(a, b);
        assert_eq!(context_hash(&a), context_hash(&b));
        let c = context_tar("FROM scratch\n", &files(b"two")).unwrap();
        assert_ne!(context_hash(&a), context_hash(&c));
        let d = context_tar("FROM scratch\nEXPOSE 1\n", &files(b"one")).unwrap();
        assert_ne!(context_hash(&a), context_hash(&d));
    }

    #[test]
    fn context_tar_holds_dockerfile_and_files() {
        let t = context_tar("FROM scratch\n", &files(b"payload")).unwrap();
        let mut ar = tar::Archive::new(t.as_slice());
        let entries: Vec<(String, u32, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Dockerfile".to_string(), 0o644, 0),
                ("bin".to_string(), 0o755, 0)
            ]
        );
    }

    #[test]
    fn context_tar_holds_symlinks() {
        let link = ContextFile {
            path: "bin/sh".into(),
            mode: 0o777,
            data: Vec::new(),
            link: Some("busybox".into()),
            dir: false,
        };
        let t = context_tar("FROM scratch\n", &[link]).unwrap();
        let mut ar = tar::Archive::new(t.as_slice());
        let e = ar.entries().unwrap().nth(1).unwrap().unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(e.path().unwrap().display().to_string(), "bin/sh");
        assert_eq!(
            e.link_name().unwrap().unwrap().display().to_string(),
            "busybox"
        );
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(context_hash(b""), "fnv1a64:cbf29ce484222325");
        assert_eq!(context_hash(b"a"), "fnv1a64:af63dc4c8601ec8c");
    }

    #[test]
    fn tag_splitting() {
        assert_eq!(split_tag("httpd:latest").unwrap(), ("httpd", "latest"));
        assert_eq!(split_tag("kproxy/kecho:1").unwrap(), ("kproxy/kecho", "1"));
        assert_eq!(split_tag("httpd").unwrap(), ("httpd", "latest"));
        assert_eq!(
            split_tag("reg:5000/x/y").unwrap(),
            ("reg:5000/x/y", "latest")
        );
        assert_eq!(split_tag("reg:5000/x:2").unwrap(), ("reg:5000/x", "2"));
        assert!(split_tag("httpd:").is_err());
        assert!(split_tag(":1").is_err());
        assert!(split_tag("").is_err());
    }

    #[test]
    fn dockerfiles_copy_every_context_file() {
        for (dockerfile, names) in [
            (PAUSE_DOCKERFILE, &["pause"][..]),
            (HTTPD_DOCKERFILE, &["busybox", "entrypoint.sh"][..]),
            (KECHO_DOCKERFILE, &["kecho"][..]),
        ] {
            assert!(dockerfile.starts_with("FROM scratch\n"));
            for n in names {
                assert!(dockerfile.contains(&format!("COPY {n} ")), "{n}");
            }
        }
    }
}
