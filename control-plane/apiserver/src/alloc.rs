//! Service address allocation at create/update time, as the Kubernetes API server does it:
//! a ClusterIP from the service CIDR and NodePorts from their range. Every allocation is a key
//! in the store (`/registry/ranges/...`) created in the same transaction as the Service, so an
//! address is never handed out twice, also across restarts, and is released with the Service.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kproxy_api::validate::{ErrorType, FieldError};
use kproxy_store::{Op, Store};
use rand::Rng as _;
use serde_json::{Value, json};

use crate::status::{ApiError, ApiResult};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

#[derive(Clone, Debug)]
pub struct Ranges {
    pub service_cidr: Ipv4Net,
    pub node_ports: (u16, u16),
}

impl Default for Ranges {
    fn default() -> Self {
        Self {
            service_cidr: "10.96.0.0/12".parse().expect("valid CIDR"),
            node_ports: (30000, 32767),
        }
    }
}

pub fn is_alloc_key(key: &str) -> bool {
    key.starts_with(IP_PREFIX) || key.starts_with(PORT_PREFIX)
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

/// The allocation keys an (already allocated) Service holds.
pub fn keys_of(svc: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Some(ip) = svc["spec"]["clusterIP"].as_str()
        && ip.parse::<Ipv4Addr>().is_ok()
    {
        keys.insert(format!("{IP_PREFIX}{ip}"));
    }
    for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(np) = p["nodePort"].as_u64().filter(|n| *n > 0) {
            keys.insert(format!("{PORT_PREFIX}{np}"));
        }
    }
    if let Some(hc) = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .filter(|n| *n > 0)
    {
        keys.insert(format!("{PORT_PREFIX}{hc}"));
    }
    keys
}

/// Whether a Service gets a `healthCheckNodePort`: a LoadBalancer with
/// `externalTrafficPolicy: Local` (Kubernetes' `needsHCNodePort`).
fn wants_health_check_port(svc: &Value) -> bool {
    svc["spec"]["type"] == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"] == "Local"
}

fn invalid(field: &str, value: String, detail: String) -> FieldError {
    FieldError {
        field: field.into(),
        error_type: ErrorType::Invalid,
        value: Some(value),
        detail,
    }
}

impl Ranges {
    /// Fills in missing addresses of `svc` (carrying over those of `old` on update) and returns
    /// the store operations that claim new addresses and release dropped ones. Field errors
    /// are the caller's 422.
    pub async fn assign(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        old: Option<&Value>,
        svc_key: &str,
    ) -> ApiResult<Result<Vec<Op>, Vec<FieldError>>> {
        let old_keys = old.map(keys_of).unwrap_or_default();
        let mut errs = Vec::new();
        let spec = &mut svc["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();

        // ClusterIP: immutable once set; an update that leaves it out keeps the old one.
        if let Some(old_ip) = old.and_then(|o| o["spec"]["clusterIP"].as_str())
            && spec["clusterIP"].as_str().unwrap_or("").is_empty()
        {
            spec["clusterIP"] = json!(old_ip);
        }
        if ty == "ExternalName" {
            spec.as_object_mut().map(|m| m.remove("clusterIP"));
        } else {
            let want = spec["clusterIP"].as_str().unwrap_or("").to_string();
            let ip = if want.is_empty() {
                Some(self.random_ip(store).await?)
            } else if want == "None" {
                None
            } else {
                match want.parse::<Ipv4Addr>() {
                    Ok(ip) if !self.service_cidr.contains(&ip) => {
                        errs.push(invalid(
                            "spec.clusterIPs",
                            format!("[\"{want}\"]"),
                            format!(
                                "failed to allocate IP {want}: the provided IP ({want}) is not in the valid range. The range of valid IPs is {}",
                                self.service_cidr
                            ),
                        ));
                        None
                    }
                    Ok(ip) => {
                        let key = format!("{IP_PREFIX}{ip}");
                        if !old_keys.contains(&key) && store.get(&key).await?.is_some() {
                            errs.push(invalid(
                                "spec.clusterIPs",
                                format!("[\"{want}\"]"),
                                format!(
                                    "failed to allocate IP {want}: provided IP is already allocated"
                                ),
                            ));
                        }
                        Some(ip)
                    }
                    // Validation reports malformed addresses.
                    Err(_) => None,
                }
            };
            if let Some(ip) = ip {
                spec["clusterIP"] = json!(ip.to_string());
                spec["clusterIPs"] = json!([ip.to_string()]);
            } else if want == "None" {
                spec["clusterIPs"] = json!(["None"]);
            }
        }

        // NodePorts.
        let old_ports: Vec<(u64, u64)> = old
            .and_then(|o| o["spec"]["ports"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["port"].as_u64()?, p["nodePort"].as_u64()?)))
            .collect();
        let node_ports = wants_node_ports(svc);
        let mut used: BTreeSet<u64> = BTreeSet::new();
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            for (i, p) in ports.iter_mut().enumerate() {
                if !node_ports {
                    continue;
                }
                let mut np = p["nodePort"].as_u64().unwrap_or(0);
                if np == 0
                    && let Some((_, o)) = old_ports
                        .iter()
                        .find(|(port, _)| Some(*port) == p["port"].as_u64())
                {
                    np = *o;
                }
                if np == 0 {
                    np = u64::from(self.random_port(store, &used).await?);
                } else {
                    let key = format!("{PORT_PREFIX}{np}");
                    let (lo, hi) = self.node_ports;
                    if np < u64::from(lo) || np > u64::from(hi) {
                        errs.push(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            np.to_string(),
                            format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        ));
                    } else if used.contains(&np)
                        || (!old_keys.contains(&key) && store.get(&key).await?.is_some())
                    {
                        errs.push(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            np.to_string(),
                            "provided port is already allocated".into(),
                        ));
                    }
                }
                used.insert(np);
                p["nodePort"] = json!(np);
            }
        }
        self.assign_health_check_port(store, svc, old, &old_keys, &mut used, &mut errs)
            .await?;
        if !errs.is_empty() {
            return Ok(Err(errs));
        }
        let new_keys = keys_of(svc);
        let mut ops: Vec<Op> = new_keys
            .difference(&old_keys)
            .map(|k| Op::Create {
                key: k.clone(),
                value: bytes::Bytes::from(svc_key.to_string()),
            })
            .collect();
        ops.extend(old_keys.difference(&new_keys).map(|k| Op::Delete {
            key: k.clone(),
            expected: None,
        }));
        Ok(Ok(ops))
    }

    /// The `healthCheckNodePort` from the NodePort range, as Kubernetes allocates it: kept
    /// from `old` when the client leaves it out, validated when given, allocated when
    /// missing; removed when the Service no longer needs one (an update from Local to
    /// Cluster), refused when set on a Service that cannot use it.
    async fn assign_health_check_port(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        old: Option<&Value>,
        old_keys: &BTreeSet<String>,
        used: &mut BTreeSet<u64>,
        errs: &mut Vec<FieldError>,
    ) -> ApiResult<()> {
        const FIELD: &str = "spec.healthCheckNodePort";
        let given = svc["spec"]["healthCheckNodePort"].as_u64().unwrap_or(0);
        let old_hc = old
            .filter(|o| wants_health_check_port(o))
            .and_then(|o| o["spec"]["healthCheckNodePort"].as_u64())
            .unwrap_or(0);
        if !wants_health_check_port(svc) {
            if given != 0 && given != old_hc {
                errs.push(invalid(
                    FIELD,
                    given.to_string(),
                    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'".into(),
                ));
            } else if let Some(spec) = svc["spec"].as_object_mut() {
                spec.remove("healthCheckNodePort");
            }
            return Ok(());
        }
        let hc = if given != 0 {
            let key = format!("{PORT_PREFIX}{given}");
            let (lo, hi) = self.node_ports;
            if given < u64::from(lo) || given > u64::from(hi) {
                errs.push(invalid(
                    FIELD,
                    given.to_string(),
                    format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                ));
            } else if used.contains(&given)
                || (!old_keys.contains(&key) && store.get(&key).await?.is_some())
            {
                errs.push(invalid(
                    FIELD,
                    given.to_string(),
                    "provided port is already allocated".into(),
                ));
            }
            given
        } else if old_hc != 0 {
            old_hc
        } else {
            u64::from(self.random_port(store, used).await?)
        };
        used.insert(hc);
        svc["spec"]["healthCheckNodePort"] = json!(hc);
        Ok(())
    }

    async fn random_ip(&self, store: &dyn Store) -> ApiResult<Ipv4Addr> {
        let base = u32::from(self.service_cidr.network());
        let size = 1u32 << (32 - self.service_cidr.prefix_len());
        // Skip the network address, .1 (the `kubernetes` service by convention) and broadcast.
        for _ in 0..64 {
            let off = rand::rng().random_range(2..size.saturating_sub(1).max(3));
            let ip = Ipv4Addr::from(base + off);
            if store.get(&format!("{IP_PREFIX}{ip}")).await?.is_none() {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a service IP: range is full",
        ))
    }

    async fn random_port(&self, store: &dyn Store, used: &BTreeSet<u64>) -> ApiResult<u16> {
        let (lo, hi) = self.node_ports;
        for _ in 0..64 {
            let p = rand::rng().random_range(lo..=hi);
            if !used.contains(&u64::from(p))
                && store.get(&format!("{PORT_PREFIX}{p}")).await?.is_none()
            {
                return Ok(p);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a node port: range is full",
        ))
    }
}

/// When an update changes a Service's type, the fields only the old type uses go away unless
/// the client changed them too (Kubernetes' dropTypeDependentFields): so a NodePort service
/// patched to `type: ClusterIP` loses its node ports and traffic policy instead of failing.
pub fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    if old["spec"]["type"] == new["spec"]["type"] || wants_node_ports(new) {
        return;
    }
    if new["spec"]["externalTrafficPolicy"] == old["spec"]["externalTrafficPolicy"]
        && let Some(spec) = new["spec"].as_object_mut()
    {
        spec.remove("externalTrafficPolicy");
        spec.remove("healthCheckNodePort");
    }
    let old_ports = &old["spec"]["ports"];
    if let Some(ports) = new["spec"]["ports"].as_array_mut() {
        for p in ports.iter_mut() {
            let np = &p["nodePort"];
            let unchanged = np.is_null()
                || old_ports
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|o| o["nodePort"] == *np);
            if unchanged {
                p.as_object_mut().map(|m| m.remove("nodePort"));
            }
        }
    }
    if new["spec"]["type"] != "LoadBalancer"
        && let Some(spec) = new["spec"].as_object_mut()
    {
        spec.remove("loadBalancerIP");
        spec.remove("allocateLoadBalancerNodePorts");
        spec.remove("loadBalancerClass");
    }
}

/// The ops that release everything a deleted Service held.
pub fn release(svc: &Value) -> Vec<Op> {
    keys_of(svc)
        .into_iter()
        .map(|key| Op::Delete {
            key,
            expected: None,
        })
        .collect()
}
