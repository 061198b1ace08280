//! Services, Endpoints and EndpointSlices.

use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, col, wide};
use crate::labels;

/// How many addresses kubectl lists before "+ N more...".
const MAX_LISTED: usize = 3;

pub(super) fn service_columns() -> Vec<Column> {
    vec![
        NAME,
        col(
            "Type",
            "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, \
             ClusterIP, NodePort, and LoadBalancer.",
        ),
        col(
            "Cluster-IP",
            "clusterIP is the IP address of the service and is usually assigned randomly. Valid values are \
             \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless \
             service\" (no virtual IP).",
        ),
        col(
            "External-IP",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for \
             this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that \
             traffic arrives at a node with this IP.  A common example is external load-balancers that are not \
             part of the Kubernetes system.",
        ),
        col(
            "Port(s)",
            "The list of ports that are exposed by this service. More info: \
             https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        AGE,
        wide(
            "Selector",
            "Route service traffic to pods with label keys and values matching this selector. If empty or not \
             present, the service is assumed to have an external process managing its endpoints, which \
             Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if \
             type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
        ),
    ]
}

pub(super) fn service_row(svc: &Service, now: Timestamp) -> Vec<Value> {
    let spec = svc.spec.clone().unwrap_or_default();
    let ty = spec.type_.clone().unwrap_or_default();
    // clusterIPs is the list form; objects written by older clients only have clusterIP.
    let cluster_ip = spec
        .cluster_ips
        .as_deref()
        .and_then(<[String]>::first)
        .cloned()
        .or(spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let external = match ty.as_str() {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".into(),
        "LoadBalancer" => {
            let mut all = Vec::new();
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            for ing in ingress.into_iter().flatten() {
                let addr = ing
                    .ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .or(ing.hostname.clone().filter(|h| !h.is_empty()));
                if let Some(a) = addr.filter(|a| !all.contains(a)) {
                    all.push(a);
                }
            }
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or_default();
            match p.node_port.filter(|n| *n > 0) {
                Some(np) => format!("{}:{np}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    };
    vec![
        json!(svc.metadata.name.clone().unwrap_or_default()),
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        age(&svc.metadata, now),
        json!(labels::format_labels(spec.selector.as_ref())),
    ]
}

pub(super) fn endpoints_columns() -> Vec<Column> {
    vec![
        NAME,
        col(
            "Endpoints",
            "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according \
             to the IPs they share. A single address with multiple ports, some of which are ready and some of \
             which are not (because they come from different containers) will result in the address being \
             displayed in different subsets for the different ports. No address will appear in both Addresses \
             and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
        ),
        AGE,
    ]
}

/// `ip:port` with IPv6 addresses bracketed, as net.JoinHostPort.
fn host_port(ip: &str, port: i32) -> String {
    match (ip.parse::<IpAddr>(), u16::try_from(port)) {
        (Ok(addr), Ok(p)) => SocketAddr::new(addr, p).to_string(),
        _ if ip.contains(':') => format!("[{ip}]:{port}"),
        _ => format!("{ip}:{port}"),
    }
}

/// formatEndpoints: ready addresses × ports, at most three, then "+ N more...".
fn format_endpoints(ep: &Endpoints) -> String {
    let subsets = ep.subsets.as_deref().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    let mut count = 0usize;
    for ss in subsets {
        let addrs = ss.addresses.as_deref().unwrap_or_default();
        let ports = ss.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addrs.len();
            list.extend(addrs.iter().map(|a| a.ip.clone()));
        } else {
            for port in ports {
                count += addrs.len();
                list.extend(addrs.iter().map(|a| host_port(&a.ip, port.port)));
            }
        }
    }
    with_more(list, count, "")
}

/// The first three entries joined by ",", then " + N more..." for the rest; `empty` when none.
fn with_more(mut list: Vec<String>, count: usize, empty: &str) -> String {
    let more = list.len() > MAX_LISTED;
    list.truncate(MAX_LISTED);
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX_LISTED)
    } else if joined.is_empty() {
        empty.to_string()
    } else {
        joined
    }
}

pub(super) fn endpoints_row(ep: &Endpoints, now: Timestamp) -> Vec<Value> {
    vec![
        json!(ep.metadata.name.clone().unwrap_or_default()),
        json!(format_endpoints(ep)),
        age(&ep.metadata, now),
    ]
}

pub(super) fn endpoint_slice_columns() -> Vec<Column> {
    vec![
        NAME,
        col(
            "AddressType",
            "addressType specifies the type of address carried by this EndpointSlice. All addresses in this \
             slice must be the same type. This field is immutable after creation. The following address types \
             are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * \
             FQDN: Represents a Fully Qualified Domain Name.",
        ),
        col(
            "Ports",
            "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must \
             have a unique name.",
        ),
        col(
            "Endpoints",
            "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 \
             endpoints.",
        ),
        AGE,
    ]
}

pub(super) fn endpoint_slice_row(slice: &EndpointSlice, now: Timestamp) -> Vec<Value> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port_list: Vec<String> = ports
        .iter()
        .map(|p| match (p.port, p.name.as_deref()) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".into(),
        })
        .collect();
    let addrs: Vec<String> = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    let addr_count = addrs.len();
    vec![
        json!(slice.metadata.name.clone().unwrap_or_default()),
        json!(slice.address_type),
        json!(with_more(port_list, ports.len(), "<unset>")),
        json!(with_more(addrs, addr_count, "<unset>")),
        age(&slice.metadata, now),
    ]
}
