//! The Node object: registration (capacity from the host, addresses, the pod CIDR), its
//! status, and the Lease in kube-node-lease that is the node's heartbeat.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
            NodeStatus, NodeSystemInfo,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, Time},
    },
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tracing::{info, warn};

use crate::health::{Health, Probe};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECS: i32 = 40;
/// Reported as the kubelet version: the API level this node speaks.
pub const KUBELET_VERSION: &str = "v1.33.0-kproxy";

/// What the node tells the control plane about itself.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub ip: String,
    pub hostname: String,
    pub kubelet_port: u16,
    pub cpus: usize,
    pub memory_kib: u64,
    pub max_pods: u32,
    pub runtime_version: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` from /proc/meminfo, in KiB.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

pub fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or(0)
}

/// The address the host would use to reach the outside: the source address of its default
/// route (a UDP "connect" sends nothing). Loopback when there is no route.
pub fn default_ip() -> Ipv4Addr {
    let probe = || -> std::io::Result<Ipv4Addr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        match s.local_addr()?.ip() {
            std::net::IpAddr::V4(ip) => Ok(ip),
            std::net::IpAddr::V6(_) => Ok(Ipv4Addr::LOCALHOST),
        }
    };
    probe().unwrap_or(Ipv4Addr::LOCALHOST)
}

pub fn status(f: &NodeFacts, h: &Health, now: Timestamp) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(f.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", f.memory_kib)),
        ),
        ("pods".to_string(), Quantity(f.max_pods.to_string())),
    ]);
    let cond = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: f.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: f.hostname.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(f.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("docker://{}", f.runtime_version),
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: read_trim("/etc/machine-id"),
            operating_system: std::env::consts::OS.into(),
            os_image: os_image(),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        }),
        conditions: Some(vec![
            if h.memory_pressure {
                cond(
                    "MemoryPressure",
                    "True",
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                )
            } else {
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                )
            },
            if h.disk_pressure {
                cond(
                    "DiskPressure",
                    "True",
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                )
            } else {
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                )
            },
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            match &h.runtime_down {
                Some(why) => cond(
                    "Ready",
                    "False",
                    "KubeletNotReady",
                    &format!("container runtime is down: {why}"),
                ),
                None => cond(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
            },
        ]),
        ..Default::default()
    }
}

/// A condition whose status did not change keeps the time it last changed.
fn keep_transition_times(new: &mut NodeStatus, old: &[NodeCondition]) {
    for c in new.conditions.iter_mut().flatten() {
        if let Some(prev) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// Registers the node (or adopts the existing object) and returns its pod CIDR: the one the
/// control plane assigned (node IPAM in the controller manager) if any; else `configured`
/// (`--pod-cidr`), which is then recorded in the spec; with neither, it waits for node IPAM.
pub async fn register(
    client: &Client,
    f: &NodeFacts,
    health: &Health,
    configured: Option<&str>,
) -> Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let existing = api.get_opt(&f.name).await.context("reading the Node")?;
    let assigned = match existing {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(f.name.clone()),
                    labels: Some(BTreeMap::from([
                        ("kubernetes.io/hostname".into(), f.name.clone()),
                        ("kubernetes.io/os".into(), "linux".into()),
                        (
                            "kubernetes.io/arch".into(),
                            std::env::consts::ARCH.replace("x86_64", "amd64"),
                        ),
                    ])),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    pod_cidr: configured.map(String::from),
                    pod_cidrs: configured.map(|c| vec![c.to_string()]),
                    ..Default::default()
                }),
                status: None,
            };
            api.create(&PostParams::default(), &node)
                .await
                .context("registering the Node")?;
            info!(node = %f.name, pod_cidr = configured, "node registered");
            configured.map(String::from)
        }
        Some(node) => match (node.spec.and_then(|s| s.pod_cidr), configured) {
            (Some(assigned), _) => {
                if configured.is_some_and(|c| c != assigned) {
                    info!(%assigned, configured, "using the pod CIDR the control plane assigned");
                }
                Some(assigned)
            }
            (None, Some(configured)) => {
                api.patch(
                    &f.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({
                        "spec": {"podCIDR": configured, "podCIDRs": [configured]}
                    })),
                )
                .await
                .context("recording the pod CIDR")?;
                Some(configured.to_string())
            }
            (None, None) => None,
        },
    };
    // The status first: node IPAM and the scheduler look at a registered, reporting node.
    update_status(client, f, health).await?;
    match assigned {
        Some(c) => Ok(c),
        None => wait_for_pod_cidr(&api, &f.name).await,
    }
}

/// Waits until the control plane writes `spec.podCIDR` (the controller manager's node IPAM).
async fn wait_for_pod_cidr(api: &Api<Node>, name: &str) -> Result<String> {
    use futures::TryStreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    info!(
        node = name,
        "waiting for the control plane to assign a pod CIDR (node IPAM)"
    );
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut nodes = std::pin::pin!(
        watcher(api.clone(), cfg)
            .default_backoff()
            .applied_objects()
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(10), nodes.try_next()).await {
            Ok(Ok(Some(node))) => {
                if let Some(c) = node.spec.and_then(|s| s.pod_cidr) {
                    info!(node = name, pod_cidr = %c, "pod CIDR assigned");
                    return Ok(c);
                }
            }
            Ok(Ok(None)) => anyhow::bail!("the Node watch ended"),
            Ok(Err(e)) => warn!(error = %e, "watching the Node for its pod CIDR"),
            // Ten quiet seconds: say what is missing.
            Err(_) => warn!(
                node = name,
                "still no pod CIDR: is kproxy-controller-manager (node IPAM) running? \
                 (or start the kubelet with --pod-cidr)"
            ),
        }
    }
}

pub async fn update_status(client: &Client, f: &NodeFacts, h: &Health) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut new = status(f, h, Timestamp::now());
    let old = api
        .get_status(&f.name)
        .await
        .context("reading the Node status")?
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    keep_transition_times(&mut new, &old);
    api.patch_status(
        &f.name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": new })),
    )
    .await
    .context("writing the Node status")?;
    Ok(())
}

/// Renews the node's Lease every `every`, forever; checks the node's health as often and
/// writes the Node status when it changed (at once: Ready follows Docker within a beat) or a
/// minute passed. `posted` is the health the registration reported.
pub async fn heartbeat(
    client: Client,
    f: NodeFacts,
    every: Duration,
    probe: Probe,
    posted: Health,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let mut last_status = tokio::time::Instant::now();
    let mut posted = posted;
    loop {
        if let Err(e) = renew(&leases, &f.name).await {
            warn!(error = %format_args!("{e:#}"), "renewing the node lease");
        }
        let health = probe.check().await;
        let changed = health != posted;
        if changed || last_status.elapsed() >= Duration::from_mins(1) {
            match update_status(&client, &f, &health).await {
                Ok(()) => {
                    if changed {
                        info!(
                            runtime_down = health.runtime_down.as_deref(),
                            memory_pressure = health.memory_pressure,
                            disk_pressure = health.disk_pressure,
                            "node conditions changed"
                        );
                    }
                    last_status = tokio::time::Instant::now();
                    posted = health;
                }
                Err(e) => warn!(error = %format_args!("{e:#}"), "updating the node status"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn renew(leases: &Api<Lease>, node: &str) -> Result<()> {
    let now = MicroTime(Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(node.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION_SECS),
        renew_time: Some(now),
        ..Default::default()
    };
    // The Lease exists after the first beat: patch, and create only when it is missing.
    match leases
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .context("creating the Lease")?;
        }
        Err(e) => return Err(e).context("renewing the Lease"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            ip: "192.0.2.7".into(),
            hostname: "host".into(),
            kubelet_port: 10250,
            cpus: 2,
            memory_kib: 1024,
            max_pods: 110,
            runtime_version: "20.10.24".into(),
        }
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let f = facts();
        let early = status(
            &f,
            &Health::default(),
            Timestamp::from_second(1000).unwrap(),
        );
        let mut old = early.conditions.unwrap();
        old.iter_mut()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap()
            .status = "True".into();
        let mut late = status(
            &f,
            &Health::default(),
            Timestamp::from_second(2000).unwrap(),
        );
        keep_transition_times(&mut late, &old);
        for c in late.conditions.unwrap() {
            let secs = c.last_transition_time.unwrap().0.as_second();
            let heartbeat = c.last_heartbeat_time.unwrap().0.as_second();
            assert_eq!(heartbeat, 2000);
            if c.type_ == "MemoryPressure" {
                assert_eq!(secs, 2000, "changed: new transition time");
            } else {
                assert_eq!(secs, 1000, "{} unchanged", c.type_);
            }
        }
    }

    #[test]
    fn meminfo_total() {
        let t = "MemTotal:        8041652 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_meminfo(t), Some(8_041_652));
        assert_eq!(parse_meminfo("nonsense"), None);
    }

    #[test]
    fn status_reports_ready_with_capacity_and_endpoint() {
        let f = facts();
        let s = status(&f, &Health::default(), Timestamp::UNIX_EPOCH);
        let cap = s.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "1024Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(s.addresses.unwrap()[0].address, "192.0.2.7");
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert!(
            s.node_info
                .unwrap()
                .container_runtime_version
                .starts_with("docker://")
        );
    }

    #[test]
    fn conditions_follow_health() {
        let f = facts();
        let h = Health {
            runtime_down: Some("docker did not answer".into()),
            memory_pressure: true,
            disk_pressure: true,
        };
        let conds = status(&f, &h, Timestamp::UNIX_EPOCH).conditions.unwrap();
        let get = |kind: &str| {
            let c = conds.iter().find(|c| c.type_ == kind).unwrap();
            (
                c.status.as_str(),
                c.reason.as_deref().unwrap(),
                c.message.clone().unwrap(),
            )
        };
        let (st, reason, msg) = get("Ready");
        assert_eq!((st, reason), ("False", "KubeletNotReady"));
        assert_eq!(msg, "container runtime is down: docker did not answer");
        assert_eq!(get("MemoryPressure").1, "KubeletHasInsufficientMemory");
        assert_eq!(get("MemoryPressure").0, "True");
        assert_eq!(get("DiskPressure").1, "KubeletHasDiskPressure");
        assert_eq!(get("PIDPressure").0, "False");
    }
}
