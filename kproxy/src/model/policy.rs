//! Traffic policies: which endpoints of a Service port the frontends of this node use, by
//! kube-proxy's rules (`pkg/proxy/topology.go`, `CategorizeEndpoints`).
//!
//! - `Cluster` scope (the default of both policies): every ready endpoint, narrowed by
//!   topology hints when every ready endpoint carries one and one is for this node (or its
//!   zone); otherwise all of them.
//! - `Local` scope (`externalTrafficPolicy: Local` for external frontends,
//!   `internalTrafficPolicy: Local` for the ClusterIP): only endpoints on this node, no
//!   fallback to other nodes; hints do not apply.
//! - Either scope with no ready endpoint falls back to its serving-and-terminating ones
//!   (KEP-1669), so a rolling update of the last pods does not drop connections.
//!
//! Serving-and-terminating endpoints not chosen stay in the result as `Terminating`: they
//! keep their existing flows and take no new ones.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use super::{BackendAddr, BackendState};

/// The Node label with the node's zone, matched against `hints.forZones`.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Where this proxy runs: what "local" and "same zone" mean. `node: None` makes no
/// endpoint local.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub node: Option<String>,
    pub zone: Option<String>,
}

/// Which endpoints a frontend may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Local,
}

impl Scope {
    /// A Service's `externalTrafficPolicy` or `internalTrafficPolicy` (absent: `Cluster`).
    #[must_use]
    pub fn of(policy: Option<&str>) -> Self {
        if policy == Some("Local") {
            Self::Local
        } else {
            Self::Cluster
        }
    }
}

/// One endpoint address of a Service port, with what the policies look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub backend: BackendAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<&'a str>,
    /// `hints.forZones` names.
    pub zone_hints: Vec<&'a str>,
    /// `hints.forNodes` names.
    pub node_hints: Vec<&'a str>,
}

impl Candidate<'_> {
    fn is_local(&self, here: &Locality) -> bool {
        here.node.is_some() && self.node == here.node.as_deref()
    }

    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// How hints narrow the Cluster scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology<'a> {
    All,
    SameNode(&'a str),
    SameZone(&'a str),
}

/// kube-proxy's `topologyModeFromHints`: node hints first (PreferSameNode), then zone
/// hints; each only when every ready endpoint has one and one names this node or zone.
fn topology<'h>(cands: &[Candidate<'_>], here: &'h Locality) -> Topology<'h> {
    let ready = || cands.iter().filter(|c| c.ready);
    if ready().next().is_none() {
        return Topology::All;
    }
    if let Some(node) = here.node.as_deref()
        && ready().all(|c| !c.node_hints.is_empty())
        && ready().any(|c| c.node_hints.contains(&node))
    {
        return Topology::SameNode(node);
    }
    if let Some(zone) = here.zone.as_deref().filter(|z| !z.is_empty())
        && ready().all(|c| !c.zone_hints.is_empty())
        && ready().any(|c| c.zone_hints.contains(&zone))
    {
        return Topology::SameZone(zone);
    }
    Topology::All
}

fn available(c: &Candidate<'_>, topo: Topology<'_>) -> bool {
    match topo {
        Topology::All => true,
        Topology::SameNode(node) => c.node_hints.contains(&node),
        Topology::SameZone(zone) => c.zone_hints.contains(&zone),
    }
}

/// The backends of a frontend whose policy is `scope`: the chosen endpoints `Active`, the
/// other serving-and-terminating endpoints of the scope `Terminating`. The same address
/// listed twice (two slices while the controller moves it) is `Active` if either is.
#[must_use]
pub fn select(
    cands: &[Candidate<'_>],
    scope: Scope,
    here: &Locality,
) -> BTreeMap<BackendAddr, BackendState> {
    let in_scope = |c: &&Candidate<'_>| scope == Scope::Cluster || c.is_local(here);
    let topo = match scope {
        Scope::Cluster => topology(cands, here),
        Scope::Local => Topology::All,
    };
    let mut chosen: Vec<&Candidate<'_>> = cands
        .iter()
        .filter(in_scope)
        .filter(|c| c.ready && available(c, topo))
        .collect();
    if chosen.is_empty() {
        chosen = cands
            .iter()
            .filter(in_scope)
            .filter(|c| c.serving_terminating())
            .collect();
    }
    let mut out = BTreeMap::new();
    for c in cands
        .iter()
        .filter(in_scope)
        .filter(|c| c.serving_terminating())
    {
        out.insert(c.backend, BackendState::Terminating);
    }
    for c in chosen {
        out.insert(c.backend, BackendState::Active);
    }
    out
}

/// kube-proxy's local endpoint count for the health check: ready endpoints on this node.
/// Whether a frontend of `scope` that got `chosen` must drop new flows rather than refuse
/// them: a `Local` policy with nothing usable on this node while the service has serving
/// endpoints elsewhere (kube-proxy drops those; it rejects only services without any).
#[must_use]
pub fn drops_without_local(
    cands: &[Candidate<'_>],
    scope: Scope,
    chosen: &BTreeMap<BackendAddr, BackendState>,
) -> bool {
    scope == Scope::Local
        && !chosen.values().any(|s| *s == BackendState::Active)
        && cands.iter().any(|c| c.ready || c.serving)
}

#[must_use]
pub fn local_ready(cands: &[Candidate<'_>], here: &Locality) -> usize {
    cands.iter().filter(|c| c.ready && c.is_local(here)).count()
}

/// The `healthCheckNodePort` of a Service that has one in effect (type LoadBalancer,
/// `externalTrafficPolicy: Local`, a port set by the API server).
#[must_use]
pub fn health_check_port(svc: &Service) -> Option<u16> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || Scope::of(spec.external_traffic_policy.as_deref()) != Scope::Local
    {
        return None;
    }
    spec.health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests;
