//! Plugging a pod's network namespace into the bridge with a veth pair.

use std::{fs::File, net::Ipv4Addr, os::fd::AsRawFd as _, path::Path};

use rtnetlink::{
    LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoKind, InfoVeth},
};

use crate::{
    Error, Result,
    names::{POD_IFNAME, validate_ifname},
    netns::in_netns,
    nl::{self, Netlink, ensure_v4_addr, errno, link_by_name, set_default_route, set_up},
};

/// Connects the network namespace at `netns` (e.g. `/proc/<pid>/ns/net` of the pod's
/// sandbox) to `bridge`: a veth pair whose host end `host_ifname` is a bridge port and up,
/// and whose peer is `eth0` in the namespace with `ip/prefix`, up, with a default route via
/// `gateway`; `lo` is brought up too.
///
/// Idempotent: re-attaching an attached pod only re-applies the settings. A half-done
/// attachment (host veth present, peer not this namespace's eth0) is redone from scratch.
pub async fn attach(
    netns: &Path,
    bridge: &str,
    host_ifname: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    validate_ifname(bridge)?;
    validate_ifname(host_ifname)?;
    if prefix > 30 {
        return Err(Error::InvalidConfig(format!(
            "pod prefix /{prefix} leaves no room for a gateway"
        )));
    }
    if ip == gateway {
        return Err(Error::InvalidConfig(format!(
            "pod address {ip} is the gateway"
        )));
    }
    let nl = Netlink::open()?;
    let h = &nl.handle;
    let bridge_link = link_by_name(h, bridge)
        .await?
        .ok_or_else(|| Error::LinkMissing(bridge.to_owned()))?;

    let eth0 = in_netns(netns, |h| async move { link_by_name(&h, POD_IFNAME).await }).await?;
    let host = link_by_name(h, host_ifname).await?;
    let attached = matches!(
        (&host, &eth0),
        (Some(host), Some(eth0)) if host.kind == Some(InfoKind::Veth) && eth0.peer_index == Some(host.index)
    );
    if !attached {
        if eth0.is_some() {
            // Deleting our host veth would not remove it: it belongs to something else.
            return Err(Error::ForeignEth0 {
                path: netns.to_owned(),
            });
        }
        if host.is_some() {
            remove_link(&nl, host_ifname).await?;
        }
        create_veth(&nl, netns, host_ifname).await?;
    }

    let host = link_by_name(h, host_ifname)
        .await?
        .ok_or_else(|| Error::LinkMissing(host_ifname.to_owned()))?;
    if host.controller != Some(bridge_link.index) {
        h.link()
            .set(
                LinkUnspec::new_with_index(host.index)
                    .controller(bridge_link.index)
                    .build(),
            )
            .execute()
            .await
            .map_err(Error::netlink(format!(
                "attaching {host_ifname} to bridge {bridge}"
            )))?;
    }
    set_up(h, host.index, host_ifname).await?;

    in_netns(netns, move |h| async move {
        let lo = link_by_name(&h, "lo")
            .await?
            .ok_or_else(|| Error::LinkMissing("lo".into()))?;
        set_up(&h, lo.index, "lo").await?;
        let eth0 = link_by_name(&h, POD_IFNAME)
            .await?
            .ok_or_else(|| Error::LinkMissing(POD_IFNAME.into()))?;
        ensure_v4_addr(&h, eth0.index, POD_IFNAME, ip, prefix, true).await?;
        set_up(&h, eth0.index, POD_IFNAME).await?;
        set_default_route(&h, eth0.index, gateway).await
    })
    .await
}

/// Creates the pair with the peer born inside the namespace as `eth0` (the kernel accepts
/// the target namespace in the peer's attributes), so no temporary peer name ever exists in
/// the root namespace and a crash cannot leave one behind.
async fn create_veth(nl: &Netlink, netns: &Path, host_ifname: &str) -> Result<()> {
    let ns = File::open(netns).map_err(|source| Error::Setns {
        path: netns.to_owned(),
        source,
    })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(POD_IFNAME)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let msg = LinkVeth::new(host_ifname, POD_IFNAME)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    // `ns` stays open until the request has been answered.
    let result = nl.handle.link().add(msg).execute().await;
    drop(ns);
    result.map_err(Error::netlink(format!(
        "creating veth {host_ifname} with peer {POD_IFNAME} in {}",
        netns.display()
    )))
}

async fn remove_link(nl: &Netlink, name: &str) -> Result<()> {
    let Some(link) = link_by_name(&nl.handle, name).await? else {
        return Ok(());
    };
    match nl.handle.link().del(link.index).execute().await {
        // Gone meanwhile (e.g. its namespace was destroyed): that is the goal.
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        r => r.map_err(Error::netlink(format!("deleting {name}"))),
    }
}

/// Deletes the host-side veth `host_ifname`; its peer (the pod's eth0) goes with it. Already
/// gone is fine. Refuses to delete a link of that name that is not a veth.
pub async fn detach(host_ifname: &str) -> Result<()> {
    validate_ifname(host_ifname)?;
    let nl = Netlink::open()?;
    match nl::link_by_name(&nl.handle, host_ifname).await? {
        None => Ok(()),
        Some(link) if link.kind != Some(InfoKind::Veth) => Err(Error::WrongLinkKind {
            name: host_ifname.to_owned(),
            expected: "veth",
        }),
        Some(_) => remove_link(&nl, host_ifname).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad input is refused before any netlink request is made.
    #[tokio::test]
    async fn bad_input_is_rejected_up_front() {
        let ns = Path::new("/nonexistent/netns");
        let (ip, gw) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        let cases = [
            attach(ns, "", "kv0", ip, 24, gw).await,
            attach(ns, "br", "a-name-far-too-long", ip, 24, gw).await,
            attach(ns, "br", "kv0", ip, 31, gw).await,
            attach(ns, "br", "kv0", gw, 24, gw).await,
            detach("bad/name").await,
        ];
        for r in cases {
            let err = r.unwrap_err();
            assert!(
                matches!(err, Error::InvalidIfname { .. } | Error::InvalidConfig(_)),
                "{err}"
            );
        }
    }
}
