//! Builds `kproxy-ebpf` for bpfel-unknown-none and leaves the object in OUT_DIR, where
//! `src/datapath/load.rs` embeds it. Finds a toolchain that can build Rust eBPF on this machine
//! and, when a piece is missing, stops with one message naming the command that fixes it.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use aya_build::{Package, Toolchain};

const FIX: &str = "run `cargo xtask setup` (installs Debian's rustc-web, cargo-web, \
                   libstd-rust-web-dev-bpf, llvm-22-dev and bpf-linker 0.13.0)";

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().context("kproxy has a parent")?;
    let ebpf_dir = root.join("kproxy-ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("kproxy-common/src").display()
    );
    println!("cargo:rerun-if-env-changed=KPROXY_EBPF_TOOLCHAIN");

    let toolchain = find_toolchain()?;
    find_bpf_linker()?;
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "kproxy-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        toolchain,
    )
    .context("building the eBPF programs (kproxy-ebpf) failed")
}

/// Debian's rustc-web ships `core` prebuilt for bpfel-unknown-none (no build-std needed);
/// a rustup nightly with rust-src builds `core` itself. Prefer the former: it is what setup
/// installs and it needs no download.
fn find_toolchain() -> Result<Toolchain<'static>> {
    if let Ok(tc) = env::var("KPROXY_EBPF_TOOLCHAIN") {
        return Ok(Toolchain::Custom(Box::leak(tc.into_boxed_str())));
    }
    let debian_core = Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib");
    if Path::new("/usr/bin/rustc").exists() && has_core_rlib(debian_core) {
        return Ok(Toolchain::Custom("/usr"));
    }
    if nightly_has_rust_src() {
        return Ok(Toolchain::Nightly);
    }
    bail!(
        "no Rust toolchain here can build eBPF: Debian's libstd-rust-web-dev-bpf \
         ({}) is not installed and there is no rustup nightly with rust-src.\n  fix: {FIX}\n  \
         or: rustup toolchain install nightly --component rust-src",
        debian_core.display()
    )
}

fn has_core_rlib(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn nightly_has_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && Path::new(sysroot.trim())
            .join("lib/rustlib/src/rust/library/core")
            .exists()
}

fn find_bpf_linker() -> Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    if which::which("bpf-linker").is_ok() {
        return Ok(());
    }
    bail!("bpf-linker is not on PATH (it links the eBPF programs).\n  fix: {FIX}")
}
