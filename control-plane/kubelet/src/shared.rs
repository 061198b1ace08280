//! What all pod workers share: the container runtime, the API client and the node's pod
//! network (bridge and addresses).

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use anyhow::{Context as _, Result};

use crate::{backoff::Backoff, runtime::Runtime};

/// What all pod workers share. `R` is the container runtime (Docker in the product).
pub struct Shared<R = Runtime> {
    pub runtime: R,
    pub client: kube::Client,
    pub net: Net,
    pub node_ip: String,
    pub backoff: Backoff,
    /// The kubelet's state directory (pods' emptyDir volumes live under it).
    pub state_dir: PathBuf,
}

/// The node bridge and its pod addresses.
pub struct Net {
    pub bridge: String,
    pub cidr: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ipam: Mutex<kproxy_podnet::Ipam>,
}

impl Net {
    /// The pod's address: the one it has, or a new one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr> {
        self.ipam
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allocate(uid)
            .context("allocating the pod IP")
    }

    /// Gives the sandbox (process `pid`) its eth0 with `ip` on the bridge.
    pub async fn plumb(&self, uid: &str, ip: Ipv4Addr, pid: i64) -> Result<()> {
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        kproxy_podnet::attach(
            &netns,
            &self.bridge,
            &kproxy_podnet::host_ifname(uid),
            ip,
            self.cidr.prefix_len(),
            self.gateway,
        )
        .await
        .context("connecting the pod to the node bridge")
    }

    /// Removes the pod's veth and frees its address. Idempotent.
    pub async fn release(&self, uid: &str) -> Result<()> {
        kproxy_podnet::detach(&kproxy_podnet::host_ifname(uid))
            .await
            .context("removing the pod's veth")?;
        self.ipam
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(uid)
            .context("releasing the pod IP")?;
        Ok(())
    }
}
