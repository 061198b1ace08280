//! `cargo xtask setup`: idempotent machine preparation. Every step first checks whether its
//! result is already there and only then acts, printing what it found or did.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util::{is_root, output_of, run_cmd, step};

/// Debian packages the build, the product and the tests use.
const APT_PACKAGES: &[&str] = &[
    // Rust eBPF toolchain: Debian's rustc ships a prebuilt `core` for bpfel-unknown-none.
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    // bpf-linker links against LLVM and its compression libraries.
    "zlib1g-dev",
    "libzstd-dev",
    // Kernel networking tools used by tests and the benchmarks.
    "bpftool",
    "iproute2",
    "iptables",
    "nftables",
    "iputils-ping",
    "util-linux",
    "procps",
    // tests/offloads.rs: switches checksum offload on the lab's veths (`ethtool -K`).
    "ethtool",
    // Container runtime: no registry is reachable, images are built locally.
    "docker.io",
    "containerd",
    "runc",
    "busybox-static",
    "tini",
    // `cargo xtask bench`: flushes connection tracking between load-generator runs.
    "conntrack",
    // API tests speak raw HTTPS with curl; the kubectl end-to-end test drives kubectl.
    "curl",
    // The store's etcd engine: etcd-client's build compiles etcd's .proto files with protoc
    // (setup runs before the workspace builds); the store tests and `--store etcd` run
    // /usr/bin/etcd (3.4).
    "protobuf-compiler",
    "etcd-server",
    // `cargo xtask bench api --store etcd` measures etcd's own put rate with
    // `etcdctl check perf`.
    "etcd-client",
    // The API server's allocator (tikv-jemalloc-sys) builds jemalloc with make.
    "make",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const DOCKER_SOCK: &str = "/var/run/docker.sock";
const CONTAINERD_SOCK: &str = "/run/containerd/containerd.sock";
const LOG_DIR: &str = "/var/log/kproxy";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Args, Default)]
pub struct SetupArgs {
    /// Do not start the Docker engine (only install it).
    #[arg(long)]
    pub no_docker: bool,
}

pub fn setup(args: &SetupArgs) -> Result<()> {
    let started = Instant::now();
    step("setup: checking this machine (apt packages, bpf-linker, bpffs, Docker engine)");
    if !cfg!(target_os = "linux") {
        bail!("kproxy needs Linux (eBPF, network namespaces)");
    }
    apt_packages()?;
    bpf_linker()?;
    bpffs()?;
    if args.no_docker {
        println!("setup: --no-docker: not building the pod images (cargo xtask images)");
    } else {
        docker_engine()?;
        crate::images::images()?;
    }
    println!("setup: done in {:.1?}", started.elapsed());
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    output_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_packages() -> Result<()> {
    if which::which("dpkg-query").is_err() {
        println!(
            "setup: no dpkg on this machine; install these yourself: {}",
            APT_PACKAGES.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: apt packages: all {} present", APT_PACKAGES.len());
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing apt packages: {}; run as root (or: sudo apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(&format!(
        "setup: installing apt packages: {}",
        missing.join(" ")
    ));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "Dpkg::Use-Pty=0", "-o", "APT::Color=0"])
            .args(args);
        cmd
    };
    // The package lists may be old (the newer rustc-web and llvm-22 come from the security
    // suite), so refresh them before installing.
    run_cmd(apt(&["update", "-q"]).stdout(Stdio::null())).context("apt-get update")?;
    run_cmd(
        apt(&["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .stdout(Stdio::null()),
    )
    .context("apt-get install")?;
    println!("setup: installed {} apt packages", missing.len());
    Ok(())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker() -> Result<()> {
    let bin = cargo_bin_dir().join("bpf-linker");
    if let Some(v) = output_of(Command::new(&bin).arg("--version"))
        && v.contains(BPF_LINKER_VERSION)
    {
        println!(
            "setup: bpf-linker {BPF_LINKER_VERSION}: present ({})",
            bin.display()
        );
        return Ok(());
    }
    step(&format!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (cargo install, ~2 min)"
    ));
    let llvm = "/usr/lib/llvm-22";
    if !Path::new(llvm).join("bin/llvm-config").exists() {
        bail!("{llvm}/bin/llvm-config is missing: apt-get install llvm-22-dev");
    }
    run_cmd(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
                "--force",
            ])
            // Without LLVM_PREFIX the link fails with "unable to find library -lLLVM".
            .env("LLVM_PREFIX", llvm)
            .env("LLVM_SYS_221_PREFIX", llvm),
    )
    .context("cargo install bpf-linker")?;
    println!("setup: bpf-linker {BPF_LINKER_VERSION} installed");
    Ok(())
}

fn bpffs() -> Result<()> {
    let dir = c"/sys/fs/bpf";
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let is_bpffs =
        unsafe { libc::statfs(dir.as_ptr(), &raw mut st) } == 0 && st.f_type == BPF_FS_MAGIC;
    if is_bpffs {
        println!("setup: bpffs mounted at /sys/fs/bpf");
        return Ok(());
    }
    if !is_root() {
        bail!("/sys/fs/bpf is not a bpffs and mounting it needs root");
    }
    step("setup: mounting bpffs at /sys/fs/bpf (kproxy pins its maps there)");
    fs::create_dir_all("/sys/fs/bpf").ok();
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            dir.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mount -t bpf bpf /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sends `GET /_ping` to the Docker socket; `Some(api version)` when the engine answers.
fn docker_ping() -> Option<String> {
    let mut s = UnixStream::connect(DOCKER_SOCK).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    if !resp.starts_with("HTTP/1.0 200") && !resp.starts_with("HTTP/1.1 200") {
        return None;
    }
    let api = resp
        .lines()
        .find_map(|l| l.strip_prefix("Api-Version: "))
        .unwrap_or("?")
        .trim()
        .to_string();
    Some(api)
}

fn spawn_daemon(program: &str, args: &[&str], log_name: &str) -> Result<()> {
    fs::create_dir_all(LOG_DIR).with_context(|| format!("create {LOG_DIR}"))?;
    let log_path = Path::new(LOG_DIR).join(log_name);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session so it
    // outlives this command and does not get the terminal's Ctrl-C.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("start {program} (log: {})", log_path.display()))?;
    println!("setup: started {program} (log: {})", log_path.display());
    Ok(())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > timeout {
            bail!("{what} did not come up within {timeout:?} (see {LOG_DIR}/)");
        }
        thread::sleep(Duration::from_millis(100));
    }
    println!("setup: {what} ready after {:.1?}", started.elapsed());
    Ok(())
}

fn docker_engine() -> Result<()> {
    if let Some(api) = docker_ping() {
        println!("setup: Docker engine answers on {DOCKER_SOCK} (API {api})");
        return Ok(());
    }
    if !is_root() {
        bail!("no Docker engine answers on {DOCKER_SOCK} and starting one needs root");
    }
    // No systemd on these machines: start containerd, then dockerd, as background daemons.
    step("setup: starting the Docker engine (containerd + dockerd)");
    if UnixStream::connect(CONTAINERD_SOCK).is_err() {
        spawn_daemon("containerd", &[], "containerd.log")?;
        wait_for("containerd", Duration::from_secs(30), || {
            UnixStream::connect(CONTAINERD_SOCK).is_ok()
        })?;
    }
    spawn_daemon(
        "dockerd",
        &[
            &format!("--containerd={CONTAINERD_SOCK}"),
            "--storage-driver=overlay2",
        ],
        "dockerd.log",
    )?;
    wait_for("dockerd", Duration::from_mins(1), || {
        docker_ping().is_some()
    })
}
