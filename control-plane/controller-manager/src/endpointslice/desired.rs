//! What a Service's EndpointSlices and legacy Endpoints should hold, computed from its pods
//! (pure; the controller only reads caches and writes the difference).
//!
//! The rules follow Kubernetes' endpointslice and endpoints controllers: pods with an IPv4
//! address that have not terminated; conditions `serving` = pod Ready, `terminating` = marked
//! for deletion, `ready` = serving and not terminating (or `publishNotReadyAddresses`); one
//! port list per slice, with named target ports resolved per pod, so pods whose ports resolve
//! differently land in different slices.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddrV4,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        core::v1::{
            EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference,
            Service, ServicePort,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::Resource as _;

use crate::podcache::CachedPod;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`] (Kubernetes' own, so tools recognise the slices).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// When the newest change reflected in the object happened (network programming latency).
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Kubernetes' label on the endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_PER_SLICE: usize = 100;
/// Legacy Endpoints hold at most this many addresses (then they are marked truncated).
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// One endpoint as it should appear, with the port list of the slice it belongs in.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub endpoint: Endpoint,
    pub ports: Vec<EndpointPort>,
    /// When the pod last changed in a way endpoints reflect (creation, a condition,
    /// deletion); `None` for endpoints that are not pods.
    pub changed_at: Option<Timestamp>,
}

/// Whether a Service selector (a plain label map) selects these labels. An empty or missing
/// selector selects nothing: such Services are left to the user.
#[must_use]
pub fn selects(
    selector: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[must_use]
pub fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

/// Endpoint conditions as Kubernetes computes them.
#[must_use]
pub fn conditions(pod: &CachedPod, publish_not_ready: bool) -> EndpointConditions {
    let serving = pod.ready;
    let terminating = pod.deletion.is_some();
    EndpointConditions {
        ready: Some(publish_not_ready || (serving && !terminating)),
        serving: Some(serving),
        terminating: Some(terminating),
    }
}

/// The pod port a Service port sends to: a number as is, a name looked up among the pod's
/// container ports (same protocol). `None` when the pod has no such named port.
#[must_use]
pub fn resolve_port(pod: &CachedPod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None | Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            pod.named_ports
                .iter()
                .find(|p| p.name == *name && p.protocol == proto)
                .map(|p| p.port)
        }
    }
}

/// When the pod last changed in a way its endpoint shows: the newest of its creation, its
/// conditions' transitions and the start of its deletion.
#[must_use]
pub fn change_time(pod: &CachedPod) -> Option<Timestamp> {
    let deletion_start = pod.deletion.map(|t| {
        let grace = pod.deletion_grace_seconds.unwrap_or(0);
        t - jiff::SignedDuration::from_secs(grace)
    });
    pod.created
        .into_iter()
        .chain(pod.conditions_changed)
        .chain(deletion_start)
        .max()
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The endpoints of a Service with a selector, one per selected pod with an address.
#[must_use]
pub fn wanted_for_pods<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a CachedPod>,
) -> Vec<Wanted> {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    let svc_ns = svc.metadata.namespace.as_deref();
    let svc_name = svc.metadata.name.as_deref();
    let publish = publish_not_ready(svc);
    let mut out: Vec<Wanted> = pods
        .into_iter()
        .filter(|p| Some(&*p.namespace) == svc_ns)
        .filter(|p| selects(selector, &p.labels) && !p.phase.is_terminal())
        .filter_map(|pod| {
            let ip = pod.ipv4?;
            let ports = service_ports(svc)
                .iter()
                .filter_map(|sp| {
                    Some(EndpointPort {
                        name: Some(sp.name.clone().unwrap_or_default()),
                        port: Some(resolve_port(pod, sp)?),
                        protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            // As Kubernetes: the hostname is published when the pod asks for this
            // Service as its subdomain.
            let hostname = pod
                .hostname
                .as_deref()
                .filter(|_| pod.subdomain.as_deref() == svc_name)
                .map(String::from);
            Some(Wanted {
                endpoint: Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(conditions(pod, publish)),
                    hostname,
                    node_name: pod.node_name.as_deref().map(String::from),
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        namespace: Some(pod.namespace.to_string()),
                        name: Some(pod.name.to_string()),
                        uid: Some(pod.uid.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ports,
                changed_at: change_time(pod),
            })
        })
        .collect();
    out.sort_by(|a, b| ep_key(&a.endpoint).cmp(&ep_key(&b.endpoint)));
    out
}

/// The `default/kubernetes` Service's single endpoint: the API server.
#[must_use]
pub fn wanted_for_apiserver(addr: SocketAddrV4) -> Vec<Wanted> {
    vec![Wanted {
        endpoint: Endpoint {
            addresses: vec![addr.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        },
        ports: vec![EndpointPort {
            name: Some("https".into()),
            port: Some(i32::from(addr.port())),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }],
        changed_at: None,
    }]
}

/// Identity of an endpoint across slices: its address and the pod behind it.
fn ep_key(e: &Endpoint) -> (&str, &str) {
    (
        e.addresses.first().map_or("", String::as_str),
        e.target_ref
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .unwrap_or_default(),
    )
}

type PortsKey = Vec<(String, i32, String)>;

/// Wanted endpoints by port list: the ports, and the endpoints by identity.
type Groups<'a> = BTreeMap<PortsKey, (Vec<EndpointPort>, BTreeMap<(&'a str, &'a str), &'a Wanted>)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Labels every object this controller writes for `svc`: the Service's own labels plus ours.
fn labels_for(svc: &Service, slice: bool) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        l.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        l.remove(HEADLESS_LABEL);
    }
    if slice {
        l.insert(
            SERVICE_NAME_LABEL.into(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    }
    l
}

/// The writes that bring a Service's slices to the wanted state.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<String>,
}

impl Plan {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// A slice being planned: the one it replaces (if any), its ports and endpoints, and when
/// the newest change in it happened (`None`: its endpoints did not change).
struct Draft<'a> {
    original: Option<&'a EndpointSlice>,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
    trigger: Option<Timestamp>,
    /// The one empty slice a Service without endpoints keeps.
    placeholder: bool,
}

fn newer(a: Option<Timestamp>, b: Timestamp) -> Timestamp {
    a.map_or(b, |a| a.max(b))
}

/// Plans the slices of `svc` so they hold `wanted`, rewriting as few slices as it can:
/// endpoints stay in the slice they are in, new ones fill slices that change anyway, then
/// slices with room, then new slices; emptied slices are deleted, except that a Service
/// without endpoints keeps one empty placeholder slice (as Kubernetes does).
#[must_use]
pub fn plan_slices<'a>(
    svc: &Service,
    wanted: &'a [Wanted],
    existing: impl IntoIterator<Item = &'a EndpointSlice>,
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    let mut groups: Groups = BTreeMap::new();
    for w in wanted {
        groups
            .entry(ports_key(&w.ports))
            .or_insert_with(|| (w.ports.clone(), BTreeMap::new()))
            .1
            .insert(ep_key(&w.endpoint), w);
    }
    let mut existing: Vec<&EndpointSlice> = existing.into_iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let mut drafts: Vec<Draft> = Vec::new();
    let mut spare: Vec<&EndpointSlice> = Vec::new();
    for slice in existing {
        let key = ports_key(slice.ports.as_deref().unwrap_or_default());
        let group = groups
            .get_mut(&key)
            .filter(|_| slice.address_type == "IPv4");
        let Some((ports, members)) = group else {
            spare.push(slice);
            continue;
        };
        let mut d = Draft {
            original: Some(slice),
            ports: ports.clone(),
            endpoints: Vec::new(),
            trigger: None,
            placeholder: false,
        };
        for e in &slice.endpoints {
            match members.remove(&ep_key(e)) {
                Some(w) => {
                    if w.endpoint != *e {
                        d.trigger = Some(newer(d.trigger, w.changed_at.unwrap_or(now)));
                    }
                    d.endpoints.push(w.endpoint.clone());
                }
                // Gone (or a duplicate of an endpoint placed already).
                None => d.trigger = Some(newer(d.trigger, now)),
            }
        }
        drafts.push(d);
    }

    for (ports, members) in groups.into_values() {
        for w in members.into_values() {
            // Drafts of one group hold clones of its port list.
            let fits = |d: &Draft| d.ports == ports && d.endpoints.len() < MAX_PER_SLICE;
            // Prefer a slice that is written anyway, then any slice with room.
            let slot = drafts
                .iter()
                .position(|d| fits(d) && (d.trigger.is_some() || d.original.is_none()))
                .or_else(|| drafts.iter().position(fits));
            let i = slot.unwrap_or_else(|| {
                drafts.push(Draft {
                    original: None,
                    ports: ports.clone(),
                    endpoints: Vec::new(),
                    trigger: None,
                    placeholder: false,
                });
                drafts.len() - 1
            });
            let d = &mut drafts[i];
            d.endpoints.push(w.endpoint.clone());
            d.trigger = Some(newer(d.trigger, w.changed_at.unwrap_or(now)));
        }
    }

    if drafts.iter().all(|d| d.endpoints.is_empty()) {
        // The placeholder: reuse a slice there is, empty, without ports.
        let keep = drafts
            .iter()
            .find_map(|d| d.original)
            .or_else(|| spare.first().copied());
        spare.retain(|s| Some(*s) != keep);
        drafts.retain(|d| d.original.is_some() && d.original != keep);
        drafts.push(Draft {
            original: keep,
            ports: Vec::new(),
            endpoints: Vec::new(),
            trigger: keep.is_some().then_some(now),
            placeholder: true,
        });
    }
    plan.delete
        .extend(spare.iter().filter_map(|s| s.metadata.name.clone()));

    let labels = labels_for(svc, true);
    let owner = svc.controller_owner_ref(&());
    for mut d in drafts {
        if d.endpoints.is_empty() && !d.placeholder {
            if let Some(n) = d.original.and_then(|o| o.metadata.name.clone()) {
                plan.delete.push(n);
            }
            continue;
        }
        d.endpoints.sort_by(|a, b| ep_key(a).cmp(&ep_key(b)));
        let ports = (!d.ports.is_empty()).then_some(d.ports);
        let owners = owner.clone().map(|o| vec![o]);
        match d.original {
            Some(orig) => {
                let same = orig.endpoints == d.endpoints
                    && orig.ports.as_ref().filter(|p| !p.is_empty()) == ports.as_ref()
                    && orig.metadata.labels.as_ref() == Some(&labels)
                    && orig.metadata.owner_references == owners;
                if same {
                    continue;
                }
                let mut s = orig.clone();
                s.endpoints = d.endpoints;
                s.ports = ports;
                s.metadata.labels = Some(labels.clone());
                s.metadata.owner_references = owners;
                if let Some(t) = d.trigger {
                    s.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(TRIGGER_TIME.into(), t.to_string());
                }
                plan.update.push(s);
            }
            None => plan.create.push(EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(slice_prefix(svc)),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    annotations: d
                        .trigger
                        .map(|t| BTreeMap::from([(TRIGGER_TIME.to_string(), t.to_string())])),
                    owner_references: owners,
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: d.endpoints,
                ports,
            }),
        }
    }
    plan
}

/// `<service>-`, cut so that the generated name stays a valid DNS label.
fn slice_prefix(svc: &Service) -> String {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let cut: String = name.chars().take(57).collect();
    format!("{cut}-")
}

/// The legacy Endpoints object of `svc` when it must be written (`None`: `existing` is
/// already right). Ready endpoints become `addresses`, the others `notReadyAddresses`;
/// terminating pods are left out unless the Service publishes not-ready addresses.
#[must_use]
pub fn endpoints_object(
    svc: &Service,
    wanted: &[Wanted],
    existing: Option<&Endpoints>,
    now: Timestamp,
) -> Option<Endpoints> {
    let publish = publish_not_ready(svc);
    let mut subsets: BTreeMap<PortsKey, EndpointSubset> = BTreeMap::new();
    let mut total = 0usize;
    let mut trigger: Option<Timestamp> = None;
    let mut keys = BTreeSet::new();
    // Ready ones first, so that truncation drops not-ready addresses first.
    let mut ordered: Vec<&Wanted> = wanted.iter().collect();
    ordered.sort_by_key(|w| !cond(&w.endpoint, |c| c.serving));
    for w in ordered {
        let terminating = cond(&w.endpoint, |c| c.terminating);
        if terminating && !publish {
            continue;
        }
        if total == MAX_ENDPOINTS_ADDRESSES {
            break;
        }
        total += 1;
        let Some(ip) = w.endpoint.addresses.first() else {
            continue;
        };
        keys.insert(ip.as_str());
        if let Some(t) = w.changed_at {
            trigger = Some(newer(trigger, t));
        }
        let ss = subsets
            .entry(ports_key(&w.ports))
            .or_insert_with(|| EndpointSubset {
                ports: (!w.ports.is_empty()).then(|| {
                    w.ports
                        .iter()
                        .map(|p| CorePort {
                            name: p.name.clone().filter(|n| !n.is_empty()),
                            port: p.port.unwrap_or_default(),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect()
                }),
                ..Default::default()
            });
        let addr = EndpointAddress {
            ip: ip.clone(),
            hostname: w.endpoint.hostname.clone(),
            node_name: w.endpoint.node_name.clone(),
            target_ref: w.endpoint.target_ref.clone(),
        };
        let list = if publish || cond(&w.endpoint, |c| c.serving) {
            &mut ss.addresses
        } else {
            &mut ss.not_ready_addresses
        };
        list.get_or_insert_default().push(addr);
    }
    let mut subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    for s in &mut subsets {
        for l in [&mut s.addresses, &mut s.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            l.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
    }
    let truncated = wanted
        .iter()
        .filter(|w| publish || !cond(&w.endpoint, |c| c.terminating))
        .count()
        > total;
    let labels = labels_for(svc, false);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    if let Some(cur) = existing {
        let cur_subsets = cur.subsets.as_ref().filter(|s| !s.is_empty());
        let cur_truncated = cur
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(OVER_CAPACITY));
        let cur_labels = cur.metadata.labels.as_ref();
        if cur_subsets == subsets.as_ref()
            && cur_truncated == truncated
            && cur_labels.map_or(labels.is_empty(), |l| *l == labels)
        {
            return None;
        }
        // Addresses that went away changed now.
        let gone = cur_subsets.into_iter().flatten().any(|s| {
            s.addresses
                .iter()
                .chain(s.not_ready_addresses.iter())
                .flatten()
                .any(|a| !keys.contains(a.ip.as_str()))
        });
        if gone {
            trigger = Some(now);
        }
    }
    let mut annotations = existing
        .and_then(|e| e.metadata.annotations.clone())
        .unwrap_or_default();
    match trigger {
        Some(t) => annotations.insert(TRIGGER_TIME.into(), t.to_string()),
        None => annotations.remove(TRIGGER_TIME),
    };
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    Some(Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            resource_version: existing.and_then(|e| e.metadata.resource_version.clone()),
            ..Default::default()
        },
        subsets,
    })
}

fn cond(e: &Endpoint, f: impl Fn(&EndpointConditions) -> Option<bool>) -> bool {
    e.conditions.as_ref().and_then(f).unwrap_or(false)
}

#[cfg(test)]
mod tests;
