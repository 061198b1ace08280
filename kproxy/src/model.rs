//! The desired datapath state: which frontends (address, port, protocol) exist and which
//! backends each one balances to, computed from Kubernetes Services and EndpointSlices the way
//! kube-proxy reads them. Pure data; `sync` turns it into map writes.

use std::{
    collections::{BTreeMap, HashMap, btree_map::Entry},
    fmt,
    net::Ipv4Addr,
};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServiceSpec},
        discovery::v1::{Endpoint, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kproxy_common::{IPPROTO_TCP, IPPROTO_UDP, svc_flags};

use self::policy::{Candidate, Locality, Scope};

pub mod policy;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's label: a Service carrying it is served only by the proxy of that name.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Set on EndpointSlices by the endpoint controller: when the change that produced this
/// version of the slice happened (a pod turning ready, ...).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Chooses a Service's backend selection for external traffic, `maglev` or `random`
/// (Cilium's `service.cilium.io/lb-algorithm`); absent, kproxy's `--lb-algorithm` decides.
pub const LB_ALGORITHM_ANNOTATION: &str = "kproxy.io/lb-algorithm";
/// Kubernetes' default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number stored in the maps.
    #[must_use]
    pub const fn ip_proto(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    /// The inverse of [`Proto::ip_proto`]; `None` for protocols kproxy does not balance.
    #[must_use]
    pub const fn from_ip_proto(proto: u8) -> Option<Self> {
        match proto {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// A Kubernetes `protocol` field (absent means TCP). `None` for SCTP and anything else
    /// kproxy cannot balance.
    #[must_use]
    pub fn from_k8s(protocol: Option<&str>) -> Option<Self> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// How new external flows pick a backend (ClusterIP frontends always use `Random`: socket-LB
/// picks once per connect, where consistency across nodes buys nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbAlgorithm {
    /// Slot `1 + hash % count`: any backend change remaps most flows without a CT entry.
    #[default]
    Random,
    /// The frontend's Maglev table: a backend change moves only the flows it must.
    Maglev,
}

impl std::str::FromStr for LbAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(Self::Random),
            "maglev" => Ok(Self::Maglev),
            other => Err(format!("{other:?}: expected maglev or random")),
        }
    }
}

/// What clients connect to: one entry of the service table (slot 0 and its backend slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto)
    }
}

/// Where traffic goes: an endpoint address and the target port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendAddr {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendState {
    /// Ready: takes new flows.
    Active,
    /// Terminating but still serving: keeps its existing flows, takes no new ones.
    Terminating,
}

/// How a frontend address came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    ClusterIp,
    ExternalIp,
    LoadBalancerIp,
    NodePort,
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClusterIp => "ClusterIP",
            Self::ExternalIp => "ExternalIP",
            Self::LoadBalancerIp => "LoadBalancerIP",
            Self::NodePort => "NodePort",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    /// `namespace/name:portname`, or `namespace/name` for an unnamed port.
    pub service: String,
    pub kind: FrontendKind,
    /// [`svc_flags`] bits.
    pub flags: u32,
    /// ClientIP affinity timeout; 0 unless `flags` has [`svc_flags::AFFINITY`].
    pub affinity_timeout_s: u32,
    /// Every backend the datapath must know, active and terminating.
    pub backends: BTreeMap<BackendAddr, BackendState>,
    /// The Service's `kproxy.io/lb-algorithm`; `None`: the proxy's default. Only external
    /// frontends use it.
    pub algorithm: Option<LbAlgorithm>,
    /// `loadBalancerSourceRanges` (LoadBalancer-IP frontends only; empty: any client),
    /// with [`svc_flags::SOURCE_RANGE`] set when not empty.
    pub source_ranges: Vec<crate::source_ranges::Cidr>,
}

impl Frontend {
    /// The owning Service, `namespace/name` (`service` without the port name: names,
    /// namespaces and port names never contain ':').
    #[must_use]
    pub fn service_name(&self) -> &str {
        self.service
            .split_once(':')
            .map_or(self.service.as_str(), |(svc, _)| svc)
    }

    /// The backends that take new flows, in sorted order (the order of the backend slots).
    pub fn active(&self) -> impl Iterator<Item = &BackendAddr> {
        self.backends
            .iter()
            .filter(|(_, state)| **state == BackendState::Active)
            .map(|(addr, _)| addr)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<FrontendKey, Frontend>,
    /// The `healthCheckNodePort`s this node answers, by port.
    pub health: BTreeMap<u16, HealthCheck>,
}

/// What a `healthCheckNodePort` answers for (kube-proxy's service health server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints on this node, summed over the Service's ports (as kube-proxy counts).
    pub local_endpoints: usize,
}

/// An object's namespace, with Kubernetes' default for an absent or empty one.
#[must_use]
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// Computes the frontends and backends for `services`, with their endpoints from `slices`.
/// `node_ips` are the addresses NodePorts are reachable on, `local` what "this node" means
/// for traffic policies and topology hints. Objects kproxy cannot serve
/// (IPv6, SCTP, ExternalName, headless) are skipped; conflicting frontends keep the first
/// service in namespace/name order.
#[must_use]
pub fn build_state(
    services: &[Service],
    slices: &[EndpointSlice],
    node_ips: &[Ipv4Addr],
    local: &Locality,
) -> DesiredState {
    // Index the slices by owning service once, so each service only looks at its own.
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let Some(owner) = slice_service(slice) else {
            continue;
        };
        slices_of
            .entry((namespace_of(&slice.metadata), owner))
            .or_default()
            .push(slice);
    }

    // Sorted so that which service wins a frontend conflict does not depend on input order.
    let mut sorted: Vec<(&str, &str, &Service)> = services
        .iter()
        .filter_map(|svc| {
            let name = svc.metadata.name.as_deref()?;
            Some((namespace_of(&svc.metadata), name, svc))
        })
        .collect();
    sorted.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));

    let mut state = DesiredState::default();
    for (ns, name, svc) in sorted {
        let own_slices = slices_of
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let built = build_service(svc, own_slices, node_ips, local);
        if let Some((port, check)) = built.health {
            state.health.insert(port, check);
        }
        for problem in &built.problems {
            tracing::warn!(service = %format_args!("{ns}/{name}"), %problem, "service not fully served");
        }
        for (key, frontend) in built.frontends {
            match state.frontends.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(frontend);
                }
                Entry::Occupied(e) => tracing::warn!(
                    frontend = %key,
                    service = %frontend.service,
                    owner = %e.get().service,
                    "frontend already used by another service port, ignoring it"
                ),
            }
        }
    }
    state
}

/// The Service (name, in the slice's namespace) an EndpointSlice belongs to, by its
/// `kubernetes.io/service-name` label; `None` for slices kproxy does not read (no label,
/// not IPv4).
#[must_use]
pub fn slice_service(slice: &EndpointSlice) -> Option<&str> {
    if slice.address_type != "IPv4" {
        return None;
    }
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .map(String::as_str)
}

/// Keeps only the entries of `map` under `keep` (`None` when none is left).
fn retain_keys(map: &mut Option<BTreeMap<String, String>>, keep: &str) {
    if let Some(m) = map {
        m.retain(|k, _| k == keep);
        if m.is_empty() {
            *map = None;
        }
    }
}

/// Drops the metadata no watched kind is read for.
fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
}

/// Strips a watched Service down to what kproxy reads (names, uid, resourceVersion and
/// creation time for Events and conflict order, the service-proxy-name label, the spec but
/// its selector, the LoadBalancer status): a node proxy caches every Service of the
/// cluster, and most of an object's bytes are fields it never looks at.
pub fn compact_service(svc: &mut Service) {
    let meta = &mut svc.metadata;
    strip_meta(meta);
    retain_keys(&mut meta.annotations, LB_ALGORITHM_ANNOTATION);
    retain_keys(&mut meta.labels, SERVICE_PROXY_NAME_LABEL);
    if let Some(spec) = &mut svc.spec {
        spec.selector = None;
    }
    if let Some(status) = &mut svc.status {
        status.conditions = None;
    }
}

/// Strips a watched EndpointSlice down to what kproxy reads: names and resourceVersion,
/// the service-name label, the trigger-time annotation, ports, and each endpoint's
/// addresses, conditions, node names and hints (no target references or zones).
pub fn compact_slice(slice: &mut EndpointSlice) {
    let meta = &mut slice.metadata;
    strip_meta(meta);
    meta.uid = None;
    retain_keys(&mut meta.labels, SERVICE_NAME_LABEL);
    retain_keys(&mut meta.annotations, TRIGGER_TIME_ANNOTATION);
    for ep in &mut slice.endpoints {
        ep.target_ref = None;
        ep.zone = None;
        ep.hostname = None;
        ep.deprecated_topology = None;
    }
}

/// The frontends of one Service, and what in it or its slices could not be used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFrontends {
    pub frontends: BTreeMap<FrontendKey, Frontend>,
    /// Invalid ports or endpoint addresses, a frontend claimed twice within the service:
    /// skipped, the rest is served. Worth an Event on the Service.
    pub problems: Vec<String>,
    /// Its `healthCheckNodePort` and what it answers, if it has one.
    pub health: Option<(u16, HealthCheck)>,
}

/// Whether kproxy serves a Service at all: ExternalName services are DNS aliases and
/// headless services (clusterIP None) have no virtual address; kube-proxy skips both.
#[must_use]
pub fn is_proxied(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName") && spec.cluster_ip.as_deref() != Some("None")
}

/// The frontends of `svc` with their backends from `slices` (the Service's own: same
/// namespace, labelled with its name). Empty for a Service kproxy does not serve.
#[must_use]
pub fn build_service(
    svc: &Service,
    slices: &[&EndpointSlice],
    node_ips: &[Ipv4Addr],
    local: &Locality,
) -> ServiceFrontends {
    let mut out = ServiceFrontends::default();
    let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), &svc.spec) else {
        return out;
    };
    if !is_proxied(svc) {
        return out;
    }
    let ns = namespace_of(&svc.metadata);
    add_service(&mut out, ns, name, svc, spec, slices, (node_ips, local));
    out.problems.sort();
    out.problems.dedup();
    out
}

fn add_service(
    out: &mut ServiceFrontends,
    ns: &str,
    name: &str,
    svc: &Service,
    spec: &ServiceSpec,
    slices: &[&EndpointSlice],
    (node_ips, local): (&[Ipv4Addr], &Locality),
) {
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let (affinity, timeout) = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S);
        (svc_flags::AFFINITY, timeout)
    } else {
        (0, 0)
    };

    let algorithm = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_ALGORITHM_ANNOTATION))
    {
        None => None,
        Some(value) => match value.parse::<LbAlgorithm>() {
            Ok(a) => Some(a),
            Err(err) => {
                out.problems.push(format!(
                    "annotation {LB_ALGORITHM_ANNOTATION}: {err}; using kproxy's default"
                ));
                None
            }
        },
    };

    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .and_then(|ip| parse_ipv4(ip, "clusterIP", ns, name));
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| parse_ipv4(ip, "externalIPs", ns, name))
        .collect();
    let lb_ips: Vec<Ipv4Addr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        // ipMode Proxy: the cloud load balancer proxies to the nodes itself, so kube-proxy
        // does not capture that address on the node.
        .filter(|ing| ing.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ing| ing.ip.as_deref())
        .filter_map(|ip| parse_ipv4(ip, "status.loadBalancer.ingress", ns, name))
        .collect();
    let has_node_ports = matches!(svc_type, "NodePort" | "LoadBalancer");
    let lb_source_ranges = crate::source_ranges::parse_all(
        spec.load_balancer_source_ranges
            .as_deref()
            .unwrap_or_default(),
        &mut out.problems,
    );
    let internal_scope = Scope::of(spec.internal_traffic_policy.as_deref());
    let external_scope = Scope::of(spec.external_traffic_policy.as_deref());
    let mut local_endpoints = 0;

    for port in spec.ports.iter().flatten() {
        let Some(proto) = Proto::from_k8s(port.protocol.as_deref()) else {
            tracing::warn!(
                service = %format_args!("{ns}/{name}"),
                protocol = port.protocol.as_deref().unwrap_or_default(),
                port = port.port,
                "skipping service port: only TCP and UDP are supported"
            );
            continue;
        };
        let Some(svc_port) = valid_port(port.port) else {
            out.problems
                .push(format!("invalid service port {}, skipped", port.port));
            continue;
        };
        let port_name = port.name.as_deref().unwrap_or_default();
        let label = if port_name.is_empty() {
            format!("{ns}/{name}")
        } else {
            format!("{ns}/{name}:{port_name}")
        };
        let cands = candidates_for(slices, port_name, proto, &mut out.problems);
        local_endpoints += policy::local_ready(&cands, local);
        let internal = policy::select(&cands, internal_scope, local);
        let external = policy::select(&cands, external_scope, local);
        let drop_flag = |scope, chosen| {
            if policy::drops_without_local(&cands, scope, chosen) {
                svc_flags::DROP_NO_BACKEND
            } else {
                0
            }
        };
        let internal_drop = drop_flag(internal_scope, &internal);
        let external_drop = drop_flag(external_scope, &external);

        let mut add = |addr: Ipv4Addr, port: u16, kind: FrontendKind, flags: u32| {
            let (backends, drop) = if kind == FrontendKind::ClusterIp {
                (&internal, internal_drop)
            } else {
                (&external, external_drop)
            };
            let key = FrontendKey { addr, port, proto };
            match out.frontends.entry(key) {
                Entry::Vacant(e) => {
                    let (range_flag, source_ranges) = crate::source_ranges::for_frontend(
                        kind == FrontendKind::LoadBalancerIp,
                        &lb_source_ranges,
                    );
                    e.insert(Frontend {
                        service: label.clone(),
                        kind,
                        flags: flags | affinity | range_flag | drop,
                        source_ranges,
                        affinity_timeout_s: timeout,
                        backends: backends.clone(),
                        algorithm,
                    });
                }
                Entry::Occupied(e) => out.problems.push(format!(
                    "frontend {key} ({kind}) of {label} is already used by {}, ignoring it",
                    e.get().service
                )),
            }
        };
        if let Some(ip) = cluster_ip {
            add(ip, svc_port, FrontendKind::ClusterIp, 0);
        }
        for ip in &external_ips {
            add(*ip, svc_port, FrontendKind::ExternalIp, svc_flags::EXTERNAL);
        }
        for ip in &lb_ips {
            add(
                *ip,
                svc_port,
                FrontendKind::LoadBalancerIp,
                svc_flags::EXTERNAL | svc_flags::L2_ANNOUNCE,
            );
        }
        if has_node_ports && let Some(node_port) = port.node_port.and_then(valid_port) {
            for ip in node_ips {
                add(
                    *ip,
                    node_port,
                    FrontendKind::NodePort,
                    svc_flags::EXTERNAL | svc_flags::NODEPORT,
                );
            }
        }
    }
    out.health = policy::health_check_port(svc).map(|port| {
        let check = HealthCheck {
            namespace: ns.to_string(),
            name: name.to_string(),
            local_endpoints,
        };
        (port, check)
    });
}

/// The endpoints of the service port named `port_name` (empty for an unnamed port), for
/// the traffic policies to choose from. Endpoints or ports that cannot be used are skipped
/// and described in `problems`.
fn candidates_for<'a>(
    slices: &[&'a EndpointSlice],
    port_name: &str,
    proto: Proto,
    problems: &mut Vec<String>,
) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Proto::from_k8s(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        // A slice port without a number cannot be used (kube-proxy skips it too).
        let Some(number) = port.port else { continue };
        let Some(port) = valid_port(number) else {
            problems.push(format!(
                "EndpointSlice {slice_name}: invalid port {number} for {port_name:?}, skipped"
            ));
            continue;
        };
        for endpoint in &slice.endpoints {
            let (ready, serving, terminating) = conditions(endpoint);
            if !(ready || serving && terminating) {
                continue;
            }
            let hints = endpoint.hints.as_ref();
            let zone_hints: Vec<&str> = hints
                .and_then(|h| h.for_zones.as_ref())
                .into_iter()
                .flatten()
                .map(|z| z.name.as_str())
                .collect();
            let node_hints: Vec<&str> = hints
                .and_then(|h| h.for_nodes.as_ref())
                .into_iter()
                .flatten()
                .map(|n| n.name.as_str())
                .collect();
            for addr in &endpoint.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    problems.push(format!(
                        "EndpointSlice {slice_name}: invalid IPv4 address {addr:?}, skipped"
                    ));
                    continue;
                };
                out.push(Candidate {
                    backend: BackendAddr {
                        addr: ip,
                        port,
                        proto,
                    },
                    ready,
                    serving,
                    terminating,
                    node: endpoint.node_name.as_deref(),
                    zone_hints: zone_hints.clone(),
                    node_hints: node_hints.clone(),
                });
            }
        }
    }
    out
}

/// Kubernetes' reading of endpoint conditions (ready, serving, terminating): nil ready and
/// nil serving mean true, nil terminating means false.
fn conditions(endpoint: &Endpoint) -> (bool, bool, bool) {
    let cond = endpoint.conditions.as_ref();
    let ready = cond.and_then(|c| c.ready).unwrap_or(true);
    let serving = cond.and_then(|c| c.serving).unwrap_or(true);
    let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
    (ready, serving, terminating)
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn parse_ipv4(ip: &str, field: &str, ns: &str, name: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = ip.parse() {
        Some(ip)
    } else {
        // Typically the IPv6 half of a dual-stack service; kproxy is IPv4 only.
        tracing::debug!(service = %format_args!("{ns}/{name}"), field, %ip, "skipping non-IPv4 address");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the objects without the manifest validation, so tests can also feed what
    /// the API server may hold but the manifest loader rejects (IPv6 slices, ...).
    fn state(yaml: &str, node_ips: &[Ipv4Addr]) -> DesiredState {
        let (mut services, mut slices) = (Vec::new(), Vec::new());
        for value in kproxy_apimachinery::yaml::documents(yaml).expect("yaml") {
            if value.get("kind").and_then(serde_json::Value::as_str) == Some("Service") {
                services.push(serde_json::from_value(value).expect("service"));
            } else {
                slices.push(serde_json::from_value(value).expect("endpoint slice"));
            }
        }
        build_state(&services, &slices, node_ips, &Locality::default())
    }

    /// Compacting what the watchers cache changes nothing kproxy derives from it.
    #[test]
    fn compacted_objects_build_the_same_frontends() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: store
  uid: 1c0ffee
  creationTimestamp: '2026-01-01T00:00:00Z'
  labels: {app: shop, service.kubernetes.io/service-proxy-name: kproxy}
  annotations: {note: a long annotation nobody reads}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalIPs: [192.0.2.7]
  selector: {app: shop}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: web, nodePort: 30080}, {name: dns, port: 53, protocol: UDP}]
status:
  loadBalancer:
    ingress: [{ip: 172.30.0.10}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: shop-1
  namespace: store
  labels: {kubernetes.io/service-name: shop, endpointslice.kubernetes.io/managed-by: x}
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: '2026-01-01T00:00:01Z'}
  ownerReferences: [{apiVersion: v1, kind: Service, name: shop, uid: 1c0ffee}]
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.244.2.2]
  conditions: {ready: true}
  nodeName: n1
  zone: z
  targetRef: {kind: Pod, name: shop-a, namespace: store, uid: u1}
- addresses: [10.244.2.3]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: n1
";
        let (mut services, mut slices): (Vec<Service>, Vec<EndpointSlice>) = (vec![], vec![]);
        for value in kproxy_apimachinery::yaml::documents(yaml).expect("yaml") {
            if value.get("kind").and_then(serde_json::Value::as_str) == Some("Service") {
                services.push(serde_json::from_value(value).expect("service"));
            } else {
                slices.push(serde_json::from_value(value).expect("endpoint slice"));
            }
        }
        let nodes = [Ipv4Addr::new(192, 168, 1, 10)];
        let full = build_state(&services, &slices, &nodes, &Locality::default());
        assert!(full.frontends.len() >= 4, "{full:?}");
        let (mut small_svcs, mut small_slices) = (services.clone(), slices.clone());
        small_svcs.iter_mut().for_each(compact_service);
        small_slices.iter_mut().for_each(compact_slice);
        assert_eq!(
            build_state(&small_svcs, &small_slices, &nodes, &Locality::default()),
            full
        );
        // What kproxy reads besides the frontends survives too.
        let svc = &small_svcs[0];
        assert_eq!(svc.metadata.uid.as_deref(), Some("1c0ffee"));
        assert!(svc.metadata.creation_timestamp.is_some());
        assert_eq!(
            svc.metadata.labels,
            Some(BTreeMap::from([(
                SERVICE_PROXY_NAME_LABEL.to_string(),
                "kproxy".to_string()
            )]))
        );
        let slice = &small_slices[0];
        assert_eq!(slice_service(slice), Some("shop"));
        assert!(
            slice
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(TRIGGER_TIME_ANNOTATION))
        );
        // And it is smaller.
        let before = serde_json::to_vec(&slices[0]).expect("json").len();
        let after = serde_json::to_vec(slice).expect("json").len();
        assert!(after * 4 < before * 3, "{before} -> {after} bytes");
    }

    fn fk(addr: [u8; 4], port: u16, proto: Proto) -> FrontendKey {
        FrontendKey {
            addr: addr.into(),
            port,
            proto,
        }
    }

    fn be(addr: [u8; 4], port: u16, proto: Proto) -> BackendAddr {
        BackendAddr {
            addr: addr.into(),
            port,
            proto,
        }
    }

    const WEB: &str = r"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- addresses: [10.244.1.3]
- addresses: [10.244.1.2]
  conditions: {ready: true}
- addresses: [10.244.1.4]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.244.1.5]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [10.244.1.6]
  conditions: {ready: false}
";

    #[test]
    fn cluster_ip_with_ready_and_terminating_backends() {
        let st = state(WEB, &[]);
        assert_eq!(st.frontends.len(), 1);
        let fe = &st.frontends[&fk([10, 96, 0, 10], 80, Proto::Tcp)];
        assert_eq!(fe.service, "shop/web");
        assert_eq!(fe.kind, FrontendKind::ClusterIp);
        assert_eq!(fe.flags, 0);
        assert_eq!(fe.affinity_timeout_s, 0);
        let expected: BTreeMap<_, _> = [
            (be([10, 244, 1, 2], 8080, Proto::Tcp), BackendState::Active),
            (be([10, 244, 1, 3], 8080, Proto::Tcp), BackendState::Active),
            (
                be([10, 244, 1, 4], 8080, Proto::Tcp),
                BackendState::Terminating,
            ),
        ]
        .into();
        assert_eq!(fe.backends, expected);
        let active: Vec<_> = fe.active().copied().collect();
        assert_eq!(
            active,
            [
                be([10, 244, 1, 2], 8080, Proto::Tcp),
                be([10, 244, 1, 3], 8080, Proto::Tcp)
            ]
        );
    }

    #[test]
    fn headless_and_other_namespace_slices() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.11, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-x, namespace: other, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.9.9]}]
";
        let st = state(yaml, &[]);
        assert_eq!(st.frontends.len(), 1);
        let fe = &st.frontends[&fk([10, 96, 0, 11], 80, Proto::Tcp)];
        assert!(fe.backends.is_empty(), "slice of another namespace used");
    }

    #[test]
    fn external_lb_and_node_ports_with_affinity() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalIPs: [192.0.2.7]
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, nodePort: 30080}]
status:
  loadBalancer:
    ingress: [{ip: 172.30.0.10}, {hostname: lb.example.com}, {ip: 172.30.0.11, ipMode: Proxy}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: shop-1, labels: {kubernetes.io/service-name: shop}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.2.2]}]
";
        let nodes = [
            Ipv4Addr::new(192, 168, 1, 10),
            Ipv4Addr::new(192, 168, 1, 11),
        ];
        let st = state(yaml, &nodes);
        let a = svc_flags::AFFINITY;
        let ext = svc_flags::EXTERNAL;
        let np = svc_flags::NODEPORT;
        let got: Vec<(FrontendKey, FrontendKind, u32)> = st
            .frontends
            .iter()
            .map(|(k, f)| (*k, f.kind, f.flags))
            .collect();
        assert_eq!(
            got,
            [
                (
                    fk([10, 96, 0, 20], 80, Proto::Tcp),
                    FrontendKind::ClusterIp,
                    a
                ),
                (
                    fk([172, 30, 0, 10], 80, Proto::Tcp),
                    FrontendKind::LoadBalancerIp,
                    a | ext | svc_flags::L2_ANNOUNCE
                ),
                (
                    fk([192, 0, 2, 7], 80, Proto::Tcp),
                    FrontendKind::ExternalIp,
                    a | ext
                ),
                (
                    fk([192, 168, 1, 10], 30080, Proto::Tcp),
                    FrontendKind::NodePort,
                    a | ext | np
                ),
                (
                    fk([192, 168, 1, 11], 30080, Proto::Tcp),
                    FrontendKind::NodePort,
                    a | ext | np
                ),
            ]
        );
        for fe in st.frontends.values() {
            assert_eq!(fe.service, "default/shop:http");
            assert_eq!(fe.affinity_timeout_s, DEFAULT_AFFINITY_TIMEOUT_S);
            assert_eq!(
                fe.active().copied().collect::<Vec<_>>(),
                [be([10, 244, 2, 2], 8080, Proto::Tcp)]
            );
        }
    }

    #[test]
    fn affinity_timeout_from_config() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  clusterIP: 10.96.0.30
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports: [{port: 80}]
";
        let st = state(yaml, &[]);
        let fe = &st.frontends[&fk([10, 96, 0, 30], 80, Proto::Tcp)];
        assert_eq!(fe.flags, svc_flags::AFFINITY);
        assert_eq!(fe.affinity_timeout_s, 60);
    }

    #[test]
    fn ports_match_by_name_and_protocol_and_sctp_is_skipped() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: sig, port: 3868, protocol: SCTP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {name: dns-tcp, port: 1053, protocol: TCP}
- {name: dns, port: 2053, protocol: UDP}
- {name: sig, port: 3868, protocol: SCTP}
endpoints: [{addresses: [10.244.3.2]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-v6, labels: {kubernetes.io/service-name: dns}}
addressType: IPv6
ports: [{name: dns, port: 53, protocol: UDP}]
endpoints: [{addresses: ['fd00::1']}]
";
        let st = state(yaml, &[]);
        assert_eq!(st.frontends.len(), 2, "SCTP port skipped");
        let udp = &st.frontends[&fk([10, 96, 0, 53], 53, Proto::Udp)];
        assert_eq!(udp.service, "default/dns:dns");
        assert_eq!(
            udp.active().copied().collect::<Vec<_>>(),
            [be([10, 244, 3, 2], 2053, Proto::Udp)]
        );
        let tcp = &st.frontends[&fk([10, 96, 0, 53], 53, Proto::Tcp)];
        assert_eq!(
            tcp.active().copied().collect::<Vec<_>>(),
            [be([10, 244, 3, 2], 1053, Proto::Tcp)]
        );
    }

    #[test]
    fn unnamed_port_matches_unnamed_slice_port_only() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.40, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: other, port: 9999}, {name: '', port: 8080}]
endpoints: [{addresses: [10.244.4.2]}]
";
        let st = state(yaml, &[]);
        let fe = &st.frontends[&fk([10, 96, 0, 40], 80, Proto::Tcp)];
        assert_eq!(
            fe.active().copied().collect::<Vec<_>>(),
            [be([10, 244, 4, 2], 8080, Proto::Tcp)]
        );
    }

    #[test]
    fn node_port_needs_node_port_type() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: np}
spec: {type: NodePort, clusterIP: 10.96.0.50, ports: [{port: 80, nodePort: 30050}]}
";
        let st = state(yaml, &[Ipv4Addr::new(192, 168, 1, 10)]);
        let fe = &st.frontends[&fk([192, 168, 1, 10], 30050, Proto::Tcp)];
        assert_eq!(fe.kind, FrontendKind::NodePort);
        assert_eq!(fe.flags, svc_flags::EXTERNAL | svc_flags::NODEPORT);
        assert_eq!(st.frontends.len(), 2);
        // No node addresses: no NodePort frontends.
        assert_eq!(state(yaml, &[]).frontends.len(), 1);
    }

    #[test]
    fn conflicting_frontend_keeps_first_service() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.60, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.61, externalIPs: [10.96.0.60], ports: [{port: 80}]}
";
        let st = state(yaml, &[]);
        let fe = &st.frontends[&fk([10, 96, 0, 60], 80, Proto::Tcp)];
        assert_eq!(fe.service, "default/a");
        assert_eq!(fe.kind, FrontendKind::ExternalIp);
    }

    #[test]
    fn display_formats() {
        assert_eq!(
            fk([10, 0, 0, 1], 53, Proto::Udp).to_string(),
            "10.0.0.1:53/UDP"
        );
        assert_eq!(Proto::Tcp.ip_proto(), IPPROTO_TCP);
        assert_eq!(Proto::from_ip_proto(IPPROTO_UDP), Some(Proto::Udp));
        assert_eq!(Proto::from_ip_proto(1), None);
        assert_eq!(FrontendKind::LoadBalancerIp.to_string(), "LoadBalancerIP");
    }

    #[test]
    fn one_service_with_its_problems() {
        let yaml = r"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.70
  externalIPs: [10.96.0.70]
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.7.2, 'not-an-ip']}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 70000}]
endpoints: [{addresses: [10.244.7.3]}]
";
        let mut docs = kproxy_apimachinery::yaml::documents(yaml)
            .expect("yaml")
            .into_iter();
        let svc: Service = serde_json::from_value(docs.next().unwrap()).unwrap();
        let slices: Vec<EndpointSlice> = docs.map(|v| serde_json::from_value(v).unwrap()).collect();
        assert_eq!(slice_service(&slices[0]), Some("web"));
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        let built = build_service(&svc, &refs, &[], &Locality::default());
        assert_eq!(built.frontends.len(), 1);
        let fe = &built.frontends[&fk([10, 96, 0, 70], 80, Proto::Tcp)];
        assert_eq!(fe.service_name(), "shop/web");
        assert_eq!(
            fe.active().copied().collect::<Vec<_>>(),
            [be([10, 244, 7, 2], 8080, Proto::Tcp)]
        );
        assert_eq!(built.problems.len(), 3, "{:?}", built.problems);
        assert!(built.problems.iter().any(|p| p.contains("not-an-ip")));
        assert!(built.problems.iter().any(|p| p.contains("70000")));
        assert!(built.problems.iter().any(|p| p.contains("already used")));

        // Headless (even with an externalIP) and ExternalName services are not served.
        let mut headless = svc.clone();
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert!(!is_proxied(&headless));
        assert!(
            build_service(&headless, &refs, &[], &Locality::default())
                .frontends
                .is_empty()
        );
        let mut alias = svc;
        alias.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(
            build_service(&alias, &refs, &[], &Locality::default())
                .frontends
                .is_empty()
        );
    }
}
