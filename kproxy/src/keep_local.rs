//! `--keep-local`: the address ranges the node serves only through translation (the
//! service CIDR, LoadBalancer pools). Untranslated traffic to them must never leave the
//! node. By default they are routed to kproxy's keep-local device (`--keep-local-dev`, a
//! dummy link whose egress program answers pings to service addresses and refuses
//! everything else: kproxy-ebpf `keep_local.rs`); with `--keep-local-dev none`, or when
//! the device cannot be set up, they get `unreachable` routes (every untranslated packet
//! fails at once, pings to service addresses from the node included).

use std::path::Path;

use anyhow::{Context as _, Result};
use kproxy::Datapath;
use kproxy_podnet::Ipv4Net;

#[derive(Debug, clap::Args)]
pub struct KeepDevOpts {
    /// The device the `--keep-local` ranges are routed to (created as a dummy link; its
    /// program answers pings to service addresses from this node and refuses the rest;
    /// `kproxy cleanup` turns its routes back into `unreachable` ones and deletes it).
    /// `none`: `unreachable` routes instead, which answer nothing.
    #[arg(long, default_value = "kproxy0")]
    pub keep_local_dev: String,
}

/// The `--keep-local` ranges ("none" alone means no range).
pub fn ranges(args: &[String]) -> Result<Vec<Ipv4Net>> {
    if args.iter().any(|a| a == "none") {
        return Ok(Vec::new());
    }
    args.iter()
        .map(|a| {
            a.parse::<Ipv4Net>()
                .map(|n| n.trunc())
                .with_context(|| format!("--keep-local {a}: not an IPv4 CIDR"))
        })
        .collect()
}

/// Keeps `ranges` on this node: routed to the keep-local device `dev` (program attached
/// before any route points there), or `unreachable`.
pub async fn apply(dp: &mut Datapath, ranges: &[Ipv4Net], dev: &str) -> Result<()> {
    if ranges.is_empty() {
        return Ok(());
    }
    if dev != "none" {
        match to_device(dp, ranges, dev).await {
            Ok(()) => {
                tracing::info!(?ranges, %dev, "keep-local ranges routed to the keep-local device: pings to service addresses are answered, the rest refused");
                return Ok(());
            }
            Err(err) => {
                tracing::warn!(err = format!("{err:#}"), %dev, "no keep-local device; using unreachable routes");
            }
        }
    }
    for cidr in ranges {
        kproxy_podnet::ensure_unreachable(*cidr)
            .await
            .with_context(|| format!("keeping {cidr} on this node"))?;
    }
    tracing::info!(
        ?ranges,
        "unreachable routes keep untranslated service traffic on this node"
    );
    Ok(())
}

async fn to_device(dp: &mut Datapath, ranges: &[Ipv4Net], dev: &str) -> Result<()> {
    let index = kproxy_podnet::ensure_keep_dev(dev)
        .await
        .with_context(|| format!("creating the keep-local device {dev}"))?;
    dp.attach_keep_local(dev)
        .with_context(|| format!("attaching to the keep-local device {dev}"))?;
    for cidr in ranges {
        kproxy_podnet::route_to_keep_dev(*cidr, index)
            .await
            .with_context(|| format!("routing {cidr} to {dev}"))?;
    }
    Ok(())
}

/// `kproxy cleanup`: the keep-local devices this datapath owns (their program's link is
/// pinned in `bpffs`) give their ranges back to `unreachable` routes and are deleted.
/// Returns the devices and ranges.
pub async fn remove_owned(bpffs: &Path) -> Result<Vec<(String, Vec<Ipv4Net>)>> {
    let mut removed = Vec::new();
    for dev in kproxy::datapath::keep_local_devices(bpffs) {
        let ranges = kproxy_podnet::remove_keep_dev(&dev)
            .await
            .with_context(|| format!("removing the keep-local device {dev}"))?;
        removed.push((dev, ranges));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_truncate_and_none() {
        let r = ranges(&["10.96.0.1/12".into(), "172.30.0.0/24".into()]).unwrap();
        assert_eq!(
            r,
            vec![
                "10.96.0.0/12".parse::<Ipv4Net>().unwrap(),
                "172.30.0.0/24".parse().unwrap()
            ]
        );
        assert!(ranges(&["none".into()]).unwrap().is_empty());
        assert!(ranges(&[]).unwrap().is_empty());
        assert!(ranges(&["10.96.0.0".into()]).is_err());
    }
}
