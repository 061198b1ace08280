//! The measured modes, in the order a run takes them: kproxy (socket-LB, XDP generic at every
//! service count, then XDP native and tc at the smallest), then each rule set. Each phase
//! loads its mode, takes the figures and removes it again.

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use kproxy_tests::{
    BpffsDir,
    lab::{BACKEND_PORT, backend_ip},
};
use serde_json::Value;

use super::{
    BACKENDS, Bench, LB_IP, SVC_PORT, check_interrupted,
    process::Proc,
    progress,
    results::{Change, Memory, ProgramTime},
    rules::RuleKind,
    services::{manifest_part, vip},
    topology::Side,
};
use crate::bench::{log_field, procfs};

/// Parses a `Duration` debug rendering such as `1.25s`, `830.1ms` or `95µs`.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    for (suffix, scale) in [
        ("ns", 1e-9),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
    ] {
        if let Some(num) = s.strip_suffix(suffix) {
            return num
                .parse::<f64>()
                .ok()
                .map(|v| Duration::from_secs_f64(v * scale));
        }
    }
    None
}

/// A running kproxy with its own (fresh) bpffs directory. Drop order: the process, then
/// the pins (which detaches the uplink programs).
pub(super) struct Kproxy {
    proc: Proc,
    _bpffs: BpffsDir,
    bpffs_path: PathBuf,
    manifest: PathBuf,
}

impl Kproxy {
    fn syncs(&self) -> usize {
        self.proc.matching("services synced").len()
    }
}

fn start_kproxy(
    b: &mut Bench<'_>,
    n: usize,
    xdp_mode: &str,
    lb_mode: &str,
) -> Result<(Kproxy, ProgramTime)> {
    start_kproxy_with(b, n, xdp_mode, lb_mode, &[])
}

/// As `start_kproxy`, with extra `kproxy standalone` arguments.
pub(super) fn start_kproxy_with(
    b: &mut Bench<'_>,
    n: usize,
    xdp_mode: &str,
    lb_mode: &str,
    extra: &[&str],
) -> Result<(Kproxy, ProgramTime)> {
    // A manifest directory: the measured (last) service in a file of its own, so a change
    // to it re-reads that file only.
    let manifest = b.topo.tmp.path.join("manifests");
    let _ = std::fs::remove_dir_all(&manifest);
    std::fs::create_dir_all(&manifest)?;
    let all: Vec<usize> = (0..BACKENDS).collect();
    std::fs::write(
        manifest.join("services.yaml"),
        manifest_part(1..=n - 1, n, &all),
    )?;
    std::fs::write(manifest.join("last.yaml"), manifest_part(n..=n, n, &all))?;
    let bpffs = BpffsDir::new("kpb");
    let bpffs_path = bpffs.path().to_path_buf();
    let mut cmd = b.topo.node.cmd(&b.topo.kproxy);
    cmd.env("RUST_LOG", "info")
        .arg("--bpffs")
        .arg(&bpffs_path)
        .arg("standalone")
        .arg("--manifests")
        .arg(&manifest)
        .args([
            "--uplink",
            "up0",
            "--xdp-mode",
            xdp_mode,
            "--lb-mode",
            lb_mode,
        ])
        .arg("--cgroup")
        .arg(b.topo.cgroup.path())
        .args(extra);
    let t = Instant::now();
    let mut proc = Proc::spawn(cmd)?;
    let synced = proc.wait_line("services synced", 0, Duration::from_mins(3))?;
    proc.wait_line("kproxy ready", 0, Duration::from_secs(30))?;
    let start_wall = t.elapsed();
    let took = log_field(&synced, "took")
        .and_then(parse_debug_duration)
        .ok_or_else(|| anyhow!("no took= in {synced:?}"))?;
    let map_ops = log_field(&synced, "map_ops").and_then(|v| v.parse().ok());
    let apply = log_field(&synced, "apply").and_then(parse_debug_duration);
    Ok((
        Kproxy {
            proc,
            _bpffs: bpffs,
            bpffs_path,
            manifest,
        },
        ProgramTime {
            took,
            map_ops,
            noop_took: None,
            start_wall: Some(start_wall),
            apply,
        },
    ))
}

/// Writes the manifest through a rename (kproxy never reads a half-written file).
fn replace_manifest(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// connect4 programs attached to cgroups other than `ours` (e.g. a `cargo xtask run` kproxy
/// on the root cgroup): they see every connection of the bench too.
pub fn foreign_connect_hooks(ours: &Path) -> Vec<String> {
    let Ok(out) = Command::new("bpftool").args(["cgroup", "tree"]).output() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut path = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('/') {
            path = line.trim().to_string();
        } else if line.contains("inet4_connect") && Path::new(&path) != ours {
            let name = line.split_whitespace().last().unwrap_or("?");
            found.push(format!("{name} on {path}"));
        }
    }
    found
}

/// Memlock of every map pinned in `dir` (`bpftool map show pinned`).
fn pinned_map_memlock(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("link_") {
            continue;
        }
        let Ok(o) = Command::new("bpftool")
            .args(["map", "show", "pinned"])
            .arg(e.path())
            .arg("-j")
            .output()
        else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout)
            && let Some(bytes) = v["bytes_memlock"].as_u64()
        {
            out.push((name, bytes));
        }
    }
    out.sort();
    out
}

pub(super) fn stop_kproxy(b: &Bench<'_>, k: Kproxy) -> Result<()> {
    drop(k);
    // The uplink must be bare again before the next mode.
    let out = b
        .topo
        .node
        .cmd("bpftool")
        .args(["net", "show", "dev", "up0"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("kproxy") {
        bail!("kproxy programs are still attached to up0 after cleanup:\n{text}");
    }
    Ok(())
}

pub fn ebpf_phase(b: &mut Bench<'_>, services: &[usize]) -> Result<()> {
    let pod = SocketAddrV4::new(backend_ip(0), BACKEND_PORT);
    let lb = SocketAddrV4::new(LB_IP, SVC_PORT);
    for &n in services {
        check_interrupted()?;
        progress(&format!(
            "ebpf {n} services: starting kproxy (--xdp-mode auto: generic on veth), initial sync..."
        ));
        let (slab0, avail0) = procfs::meminfo();
        let (mut k, mut prog) = start_kproxy(b, n, "auto", "xdp")?;
        let (slab1, avail1) = procfs::meminfo();
        progress(&format!(
            "  -> synced in {:.1?} ({} map ops), ready after {:.1?}",
            prog.took,
            prog.map_ops.unwrap_or(0),
            prog.start_wall.unwrap_or_default()
        ));
        b.res.memory.insert(
            ("ebpf", n),
            Memory {
                maps: pinned_map_memlock(&k.bpffs_path),
                slab_kb: slab1 - slab0,
                avail_kb: avail0 - avail1,
                rss_kb: procfs::status_kib(k.proc.pid(), "VmRSS:"),
            },
        );
        let svc = SocketAddrV4::new(vip(n), SVC_PORT);
        b.conns("ebpf-socket", n, Side::Host, svc)?;
        b.conns("ebpf-xdp", n, Side::Client, lb)?;
        b.conns("direct+ebpf", n, Side::Client, pod)?;
        if n == b.n_min {
            b.rr("ebpf-socket", n, Side::Host, svc)?;
            b.rr("ebpf-xdp", n, Side::Client, lb)?;
            b.bulk("ebpf-socket", n, Side::Host, svc)?;
            b.bulk("ebpf-xdp", n, Side::Client, lb)?;
        }
        if n == b.n_max && n != b.n_min {
            b.rr("ebpf-socket", n, Side::Host, svc)?;
            b.rr("ebpf-xdp", n, Side::Client, lb)?;
        }
        // The same file again: parse + plan with nothing to write.
        progress(&format!(
            "ebpf {n} services: no-op reload (parse + plan only)..."
        ));
        let before = k.syncs();
        let all: Vec<usize> = (0..BACKENDS).collect();
        let text = manifest_part(1..=n - 1, n, &all);
        replace_manifest(&k.manifest.join("services.yaml"), &text)?;
        let line = k
            .proc
            .wait_line("services synced", before, Duration::from_mins(2))?;
        prog.noop_took = log_field(&line, "took").and_then(parse_debug_duration);
        if n == b.n_max {
            ebpf_changes(b, &mut k, n)?;
        }
        b.res.program.insert(("ebpf", n), prog);
        stop_kproxy(b, k)?;
    }
    // The uplink hook comparison at the smallest service count.
    let n = b.n_min;
    for (key, xdp_mode, lb_mode) in [
        ("ebpf-xdp-native", "driver", "xdp"),
        ("ebpf-tc", "auto", "tc"),
    ] {
        check_interrupted()?;
        progress(&format!(
            "{key} {n} services: starting kproxy (--xdp-mode {xdp_mode} --lb-mode {lb_mode})..."
        ));
        let (k, _) = start_kproxy(b, n, xdp_mode, lb_mode)?;
        b.conns(key, n, Side::Client, lb)?;
        b.rr(key, n, Side::Client, lb)?;
        b.bulk(key, n, Side::Client, lb)?;
        stop_kproxy(b, k)?;
    }
    Ok(())
}

/// The backend a change points the measured service at: an unrecorded first change
/// (`None`) moves it from 4 endpoints to b3 alone, then the recorded ones cycle b0, b1, b2,
/// so every change names a backend that did not serve the service before (a connection
/// landing there proves the change took effect).
fn change_backend(c: Option<usize>) -> usize {
    c.map_or(BACKENDS - 1, |c| c % (BACKENDS - 1))
}

fn change_steps(changes: usize) -> impl Iterator<Item = Option<usize>> {
    std::iter::once(None).chain((0..changes).map(Some))
}

fn ebpf_changes(b: &mut Bench<'_>, k: &mut Kproxy, n: usize) -> Result<()> {
    let lb = SocketAddrV4::new(LB_IP, SVC_PORT);
    let mut samples = Vec::new();
    for c in change_steps(b.args.changes) {
        let backend = change_backend(c);
        progress(&format!(
            "ebpf {n} services: change {}: service {n} -> b{backend} only, manifest rename until effective...",
            c.map_or("0 (unrecorded)".into(), |c| format!(
                "{}/{}",
                c + 1,
                b.args.changes
            )),
        ));
        let path = k.manifest.join("last.yaml");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, manifest_part(n..=n, n, &[backend]))?;
        let before = k.syncs();
        let (effective, _) = b.timed_change(lb, backend, |_, _| {
            std::fs::rename(&tmp, &path)?;
            Ok(Duration::ZERO)
        })?;
        let line = k
            .proc
            .wait_line("services synced", before, Duration::from_mins(1))?;
        let took = log_field(&line, "took")
            .and_then(parse_debug_duration)
            .unwrap_or_default();
        let map_ops = log_field(&line, "map_ops").and_then(|v| v.parse().ok());
        let apply = log_field(&line, "apply").and_then(parse_debug_duration);
        progress(&format!(
            "  -> effective after {effective:.1?} (kproxy took={took:.1?}, apply={apply:.1?}, map_ops={})",
            map_ops.unwrap_or(0)
        ));
        if c.is_some() {
            samples.push(Change {
                effective,
                tool: took,
                map_ops,
                apply,
            });
        }
    }
    b.res.changes.insert("ebpf", samples);
    Ok(())
}

pub fn rules_phase(b: &mut Bench<'_>, services: &[usize], kind: RuleKind) -> Result<()> {
    let key = kind.key();
    let pod = SocketAddrV4::new(backend_ip(0), BACKEND_PORT);
    for &n in services {
        check_interrupted()?;
        progress(&format!("{key} {n} services: loading rules..."));
        let (slab0, avail0) = procfs::meminfo();
        let took = kind.load(&b.topo, n)?;
        let (slab1, avail1) = procfs::meminfo();
        progress(&format!("  -> loaded in {took:.2?}"));
        b.res.program.insert(
            (key, n),
            ProgramTime {
                took,
                ..ProgramTime::default()
            },
        );
        b.res.memory.insert(
            (key, n),
            Memory {
                slab_kb: slab1 - slab0,
                avail_kb: avail0 - avail1,
                ..Memory::default()
            },
        );
        let measured = (|| -> Result<()> {
            let svc = SocketAddrV4::new(vip(n), SVC_PORT);
            b.conns(key, n, Side::Client, svc)?;
            b.conns(kind.direct_key(), n, Side::Client, pod)?;
            if n == b.n_min {
                b.rr(key, n, Side::Client, svc)?;
                b.bulk(key, n, Side::Client, svc)?;
            }
            if n == b.n_max && n != b.n_min {
                b.rr(key, n, Side::Client, svc)?;
            }
            if n == b.n_max {
                let mut samples = Vec::new();
                for c in change_steps(b.args.changes) {
                    let backend = change_backend(c);
                    progress(&format!(
                        "{key} {n} services: change {}: service {n} -> b{backend} only...",
                        c.map_or("0 (unrecorded)".into(), |c| format!(
                            "{}/{}",
                            c + 1,
                            b.args.changes
                        )),
                    ));
                    let (effective, tool) =
                        b.timed_change(svc, backend, |b, _| kind.change(&b.topo, n, backend))?;
                    progress(&format!(
                        "  -> tool {tool:.1?}, effective after {effective:.1?}"
                    ));
                    if c.is_some() {
                        samples.push(Change {
                            effective,
                            tool,
                            map_ops: None,
                            apply: None,
                        });
                    }
                }
                b.res.changes.insert(key, samples);
            }
            Ok(())
        })();
        // Remove the rules also when a measurement failed (the namespace's deletion would
        // remove them too).
        let unloaded = kind.unload(&b.topo);
        measured?;
        unloaded.with_context(|| format!("removing the {key} rules"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_tracing_debug() {
        assert_eq!(
            parse_debug_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_debug_duration("2.5ms"),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(parse_debug_duration("7µs"), Some(Duration::from_micros(7)));
        assert_eq!(parse_debug_duration("80ns"), Some(Duration::from_nanos(80)));
        let line = "INFO kproxy: services synced services=3 frontends=4 map_ops=12 took=3.2ms";
        assert_eq!(log_field(line, "map_ops"), Some("12"));
        assert_eq!(log_field(line, "took"), Some("3.2ms"));
    }

    #[test]
    fn changes_name_a_new_backend_each_time() {
        let backends: Vec<usize> = change_steps(4).map(change_backend).collect();
        assert_eq!(backends, [3, 0, 1, 2, 0]);
    }
}
