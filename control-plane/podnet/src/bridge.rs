//! The node bridge the pods' host-side veths are enslaved to.

use ipnet::Ipv4Net;
use rtnetlink::{LinkBridge, packet_route::link::InfoKind};

use crate::{
    Error, Result,
    names::validate_ifname,
    nl::{Netlink, ensure_v4_addr, errno, link_by_name, set_up},
};

/// Creates the Linux bridge `name` if it is missing, gives it `gateway` (e.g.
/// `10.244.0.1/24`: the pods' default gateway and the route to them from the host) and
/// brings it up. Idempotent; a non-bridge link of that name is an error.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Net) -> Result<()> {
    validate_ifname(name)?;
    if gateway.addr() == gateway.network() || gateway.addr() == gateway.broadcast() {
        return Err(Error::InvalidConfig(format!(
            "bridge address {gateway} must be a host address, not the network or broadcast"
        )));
    }
    let nl = Netlink::open()?;
    let h = &nl.handle;
    let link = if let Some(link) = link_by_name(h, name).await? {
        link
    } else {
        let bridge = LinkBridge::new(name)
            .address(bridge_mac(name).to_vec())
            .build();
        match h.link().add(bridge).execute().await {
            // Someone else created it meanwhile: fine, it is checked below.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            r => r.map_err(Error::netlink(format!("creating bridge {name}")))?,
        }
        link_by_name(h, name)
            .await?
            .ok_or_else(|| Error::LinkMissing(name.to_owned()))?
    };
    if link.kind != Some(InfoKind::Bridge) {
        return Err(Error::WrongLinkKind {
            name: name.to_owned(),
            expected: "bridge",
        });
    }
    // Not exclusive: the host may have put other addresses on the bridge on purpose.
    ensure_v4_addr(
        h,
        link.index,
        name,
        gateway.addr(),
        gateway.prefix_len(),
        false,
    )
    .await?;
    set_up(h, link.index, name).await
}

/// A fixed, locally administered MAC for the bridge, derived from its name. Without one a
/// Linux bridge takes the lowest MAC of its ports, so adding or removing a pod could change
/// the gateway's MAC under the other pods' ARP caches and stall their new connections.
fn bridge_mac(name: &str) -> [u8; 6] {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(name.as_bytes());
    let b = h.finish().to_be_bytes();
    // 0x02: locally administered, unicast.
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_is_stable_local_and_unicast() {
        let a = bridge_mac("kbr0");
        assert_eq!(a, bridge_mac("kbr0"));
        assert_ne!(a, bridge_mac("kbr1"));
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
    }

    #[tokio::test]
    async fn bad_input_is_rejected_up_front() {
        for (name, cidr) in [
            ("kbr0", "10.0.0.0/24"),
            ("kbr0", "10.0.0.255/24"),
            ("", "10.0.0.1/24"),
            ("name-longer-than-15", "10.0.0.1/24"),
        ] {
            let err = ensure_bridge(name, cidr.parse().unwrap())
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidIfname { .. } | Error::InvalidConfig(_)),
                "{name} {cidr}: {err}"
            );
        }
    }
}
