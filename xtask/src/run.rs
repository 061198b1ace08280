//! `cargo xtask run`: set up, build, and start the node in the foreground. It starts what
//! exists so far (today: the kproxy datapath on a lab uplink) and prints the next steps.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    setup::{SetupArgs, setup},
    util::{cargo, is_root, output_of, run_cmd, step, workspace_root},
};

/// The lab "client host": a network namespace reached through a veth that plays the node's
/// uplink, so nothing is ever attached to this machine's real network interface.
const LAB_NETNS: &str = "kproxy-client";
const LAB_UPLINK: &str = "kp-uplink";
const LAB_PEER: &str = "kp-client0";
const LAB_NODE_ADDR: &str = "172.31.0.1/24";
const LAB_CLIENT_ADDR: &str = "172.31.0.2/24";

#[derive(Args)]
pub struct RunArgs {
    /// Attach to this existing interface instead of creating the lab uplink.
    #[arg(long)]
    uplink: Option<String>,
    /// XDP mode for the uplink: auto, driver or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: String,
}

fn ip(args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").args(args).stdout(Stdio::null()))
}

fn create_lab_uplink() -> Result<()> {
    step(&format!(
        "run: creating the lab uplink {LAB_UPLINK} ({LAB_NODE_ADDR}) to client netns \
         {LAB_NETNS} ({LAB_CLIENT_ADDR})"
    ));
    remove_lab_uplink();
    ip(&["netns", "add", LAB_NETNS])?;
    ip(&[
        "link", "add", LAB_UPLINK, "type", "veth", "peer", "name", LAB_PEER, "netns", LAB_NETNS,
    ])?;
    ip(&["addr", "add", LAB_NODE_ADDR, "dev", LAB_UPLINK])?;
    ip(&["link", "set", LAB_UPLINK, "up"])?;
    ip(&[
        "-n",
        LAB_NETNS,
        "addr",
        "add",
        LAB_CLIENT_ADDR,
        "dev",
        LAB_PEER,
    ])?;
    ip(&["-n", LAB_NETNS, "link", "set", LAB_PEER, "up"])?;
    ip(&["-n", LAB_NETNS, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes what a previous run left behind; missing pieces are fine.
fn remove_lab_uplink() {
    let _ = Command::new("ip")
        .args(["link", "del", LAB_UPLINK])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("ip")
        .args(["netns", "del", LAB_NETNS])
        .stderr(Stdio::null())
        .status();
}

pub fn run(args: &RunArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask run` loads eBPF programs and creates network namespaces: run it as root"
        );
    }
    setup(&SetupArgs::default())?;
    step("run: building kproxy and kctl (release; includes the eBPF programs)");
    run_cmd(cargo().args(["build", "--release", "--bins"]))?;
    let bin_dir: PathBuf = workspace_root().join("target/release");
    let kproxy = bin_dir.join("kproxy");

    let uplink = match &args.uplink {
        Some(iface) => {
            if output_of(Command::new("ip").args(["link", "show", iface])).is_none() {
                bail!("interface {iface} does not exist");
            }
            iface.clone()
        }
        None => {
            create_lab_uplink()?;
            LAB_UPLINK.to_string()
        }
    };

    step(&format!("run: starting kproxy on {uplink}"));
    let mut child = Command::new(&kproxy)
        .args([
            "standalone",
            "--uplink",
            &uplink,
            "--xdp-mode",
            &args.xdp_mode,
        ])
        .spawn()
        .with_context(|| format!("start {}", kproxy.display()))?;
    // Ctrl-C reaches kproxy (same process group); we wait for it and then clean up.
    // SAFETY: ignoring SIGINT in this process only; no handler code runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let k = kproxy.display();
    println!(
        "\nkproxy is running: XDP + tc programs on {uplink}, maps pinned under /sys/fs/bpf/kproxy."
    );
    println!("Next steps, in another terminal:");
    println!("  ip netns exec {LAB_NETNS} ping -c 3 172.31.0.1    # traffic through the uplink");
    println!("  {k} dump       # per-hook packet/byte counters");
    println!("  {k} debug on   # eBPF events appear in this log");
    println!("  {} version", bin_dir.join("kctl").display());
    if args.uplink.is_none() {
        println!("Ctrl-C stops kproxy and removes the lab netns.\n");
    } else {
        println!("Ctrl-C stops kproxy.\n");
    }
    let status = child.wait().context("wait for kproxy")?;
    // kproxy leaves its datapath attached on exit (so restarts keep flows); `run` owns this
    // node, so detach it. The pinned maps stay for the next run.
    let _ = Command::new(&kproxy).arg("cleanup").status();
    if args.uplink.is_none() {
        remove_lab_uplink();
    }
    println!("run: kproxy exited ({status})");
    Ok(())
}
