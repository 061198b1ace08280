//! Services (ValidateService, ValidateServiceUpdate).

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kproxy_apimachinery::names;
use serde_json::json;

use super::meta::{self, NameRule, Scope};
use super::{
    FieldError, Json, Path, ip, name_errors, one_of, port_num, port_num_or_name, protocol,
};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const NODE_PORT_RANGE: (i32, i32) = (30000, 32767);
const MAX_AFFINITY_TIMEOUT: i32 = 86400;

pub(crate) fn service(svc: &Service, old: Option<&Service>) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&svc.metadata, Scope::Namespaced, NameRule::Dns1035);
    let default = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default);
    let path = Path::root("spec");
    // Defaulting sets the type; before it, an absent type means ClusterIP.
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    errs.extend(one_of(&path.child("type"), Some(ty), TYPES));
    errs.extend(ports(spec, ty, &path));
    errs.extend(cluster_ip(spec, ty, &path));
    if ty == "ExternalName" {
        let en_path = path.child("externalName");
        match spec.external_name.as_deref().unwrap_or_default() {
            "" => errs.push(FieldError::required(&en_path, "")),
            name => {
                let clean = name.strip_suffix('.').unwrap_or(name);
                errs.extend(name_errors(&en_path, name, names::dns1123_subdomain(clean)));
            }
        }
    }
    errs.extend(session_affinity(spec, &path));
    errs.extend(meta::labels(
        spec.selector.as_ref(),
        &path.child("selector"),
    ));
    for (i, addr) in spec.external_ips.iter().flatten().enumerate() {
        let p = path.child("externalIPs").index(i);
        match ip::ip(&p, addr) {
            Ok(parsed) => errs.extend(ip::non_special(&p, addr, parsed)),
            Err(e) => errs.push(e),
        }
    }
    errs.extend(source_ranges(spec, ty, &path));
    if let Some(policy) = spec.external_traffic_policy.as_deref() {
        let p = path.child("externalTrafficPolicy");
        if ty == "NodePort" || ty == "LoadBalancer" {
            errs.extend(one_of(&p, Some(policy), TRAFFIC_POLICIES));
        } else {
            errs.push(FieldError::invalid(
                &p,
                policy,
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        }
    }
    errs.extend(one_of(
        &path.child("internalTrafficPolicy"),
        spec.internal_traffic_policy.as_deref(),
        TRAFFIC_POLICIES,
    ));
    errs.extend(one_of(
        &path.child("ipFamilyPolicy"),
        spec.ip_family_policy.as_deref(),
        IP_FAMILY_POLICIES,
    ));
    let mut families = HashSet::new();
    for (i, fam) in spec.ip_families.iter().flatten().enumerate() {
        let p = path.child("ipFamilies").index(i);
        errs.extend(one_of(&p, Some(fam), IP_FAMILIES));
        if !families.insert(fam.as_str()) {
            errs.push(FieldError::duplicate(&p, fam));
        }
    }
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&svc.metadata, &old.metadata));
        errs.extend(cluster_ip_update(
            spec,
            old.spec.as_ref().unwrap_or(&default),
            &path,
        ));
    }
    errs
}

/// `loadBalancerSourceRanges`: CIDRs (space-padding allowed, a historical leniency), only
/// on LoadBalancer services. The field path keeps Kubernetes' historical capital L.
fn source_ranges(spec: &ServiceSpec, ty: &str, path: &Path) -> Vec<FieldError> {
    let ranges = spec
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    if ranges.is_empty() {
        return Vec::new();
    }
    let p = path.child("LoadBalancerSourceRanges");
    let mut errs = Vec::new();
    if ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            &p,
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    for (i, value) in ranges.iter().enumerate() {
        errs.extend(ip::cidr(&p.index(i), value.trim()));
    }
    errs
}

fn ports(spec: &ServiceSpec, ty: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ports = spec.ports.as_deref().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports_path = path.child("ports");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required(&ports_path, ""));
    }
    let require_name = ports.len() > 1;
    let mut names = HashSet::new();
    let mut port_keys = HashSet::new();
    let mut node_port_keys = HashSet::new();
    for (i, sp) in ports.iter().enumerate() {
        let p = ports_path.index(i);
        errs.extend(service_port(sp, require_name, &mut names, &p));
        let proto = sp.protocol.as_deref().unwrap_or("TCP");
        if !port_keys.insert((sp.port, proto)) {
            errs.push(FieldError::duplicate(
                &p,
                Json(&json!({"port": sp.port, "protocol": proto})),
            ));
        }
        let node_port = sp.node_port.unwrap_or(0);
        if node_port == 0 {
            continue;
        }
        let np_path = p.child("nodePort");
        if ty == "ClusterIP" {
            errs.push(FieldError::forbidden(
                &np_path,
                "may not be used when `type` is 'ClusterIP'",
            ));
        } else if ty == "NodePort" || ty == "LoadBalancer" {
            let (lo, hi) = NODE_PORT_RANGE;
            if !(lo..=hi).contains(&node_port) {
                errs.push(FieldError::invalid(
                    &np_path,
                    node_port,
                    format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                ));
            }
        }
        if !node_port_keys.insert((node_port, proto)) {
            errs.push(FieldError::duplicate(
                &p,
                Json(&json!({"nodePort": node_port, "protocol": proto})),
            ));
        }
    }
    errs
}

/// validateServicePort.
fn service_port<'a>(
    sp: &'a ServicePort,
    require_name: bool,
    names: &mut HashSet<&'a str>,
    p: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = sp.name.as_deref().unwrap_or_default();
    if require_name && name.is_empty() {
        errs.push(FieldError::required(&p.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(name_errors(
            &p.child("name"),
            name,
            names::dns1123_label(name),
        ));
        if !names.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
    }
    errs.extend(port_num(&p.child("port"), sp.port));
    errs.extend(protocol(&p.child("protocol"), sp.protocol.as_deref()));
    if let Some(target) = &sp.target_port {
        errs.extend(port_num_or_name(&p.child("targetPort"), target));
    }
    if let Some(app) = sp.app_protocol.as_deref() {
        errs.extend(name_errors(
            &p.child("appProtocol"),
            app,
            names::qualified_name(app),
        ));
    }
    errs
}

fn cluster_ip(spec: &ServiceSpec, ty: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let primary = spec.cluster_ip.as_deref().unwrap_or_default();
    if ty == "ExternalName" {
        if !primary.is_empty() {
            errs.push(FieldError::forbidden(
                &path.child("clusterIP"),
                "may not be set for ExternalName services",
            ));
        }
        return errs;
    }
    let mut check = |field: &Path, value: &str| match value {
        "" => {}
        "None" => {
            if ty == "NodePort" || ty == "LoadBalancer" {
                errs.push(FieldError::invalid(
                    field,
                    value,
                    format!("may not be set to 'None' for {ty} services"),
                ));
            }
        }
        _ => match ip::ip(field, value) {
            Ok(IpAddr::V4(_)) => {}
            Ok(IpAddr::V6(_)) => errs.push(FieldError::invalid(
                field,
                value,
                "must be an IPv4 address: this cluster is IPv4 single-stack",
            )),
            Err(e) => errs.push(e),
        },
    };
    check(&path.child("clusterIP"), primary);
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    for (i, v) in ips.iter().enumerate() {
        // The primary was reported already when it repeats clusterIP.
        if i > 0 || v != primary {
            check(&path.child("clusterIPs").index(i), v);
        }
    }
    if let Some(first) = ips.first()
        && !primary.is_empty()
        && first != primary
    {
        errs.push(FieldError::invalid(
            &path.child("clusterIPs"),
            Json(&ips),
            "first value must match `clusterIP`",
        ));
    }
    errs
}

/// The cluster IP may not change once assigned, unless the Service changes to or from
/// ExternalName. An update that leaves it empty keeps the assigned one (the server carries it
/// over, as Kubernetes does for `kubectl replace`).
fn cluster_ip_update(new: &ServiceSpec, old: &ServiceSpec, path: &Path) -> Vec<FieldError> {
    let is_external = |s: &ServiceSpec| s.type_.as_deref() == Some("ExternalName");
    if is_external(new) || is_external(old) {
        return Vec::new();
    }
    let mut errs = Vec::new();
    let old_ip = old.cluster_ip.as_deref().unwrap_or_default();
    let new_ip = new.cluster_ip.as_deref().unwrap_or_default();
    if !old_ip.is_empty() && !new_ip.is_empty() && new_ip != old_ip {
        errs.push(FieldError::invalid(
            &path.child("clusterIP"),
            new_ip,
            "field is immutable",
        ));
    }
    let old_first = old.cluster_ips.as_deref().and_then(<[String]>::first);
    let new_first = new.cluster_ips.as_deref().and_then(<[String]>::first);
    if let (Some(o), Some(n)) = (old_first, new_first)
        && !o.is_empty()
        && !n.is_empty()
        && n != o
    {
        errs.push(FieldError::invalid(
            &path.child("clusterIPs").index(0),
            n,
            "may not change once set",
        ));
    }
    errs
}

fn session_affinity(spec: &ServiceSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let affinity = spec.session_affinity.as_deref().unwrap_or("None");
    errs.extend(one_of(
        &path.child("sessionAffinity"),
        Some(affinity),
        AFFINITIES,
    ));
    let config = spec.session_affinity_config.as_ref();
    match affinity {
        "ClientIP" => {
            let timeout = config
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if let Some(t) = timeout.filter(|t| *t <= 0 || *t > MAX_AFFINITY_TIMEOUT) {
                errs.push(FieldError::invalid(
                    &path
                        .child("sessionAffinityConfig")
                        .child("clientIP")
                        .child("timeoutSeconds"),
                    t,
                    format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"),
                ));
            }
        }
        "None" => {
            // An empty config object is harmless; a timeout without affinity is a mistake.
            if let Some(c) = config.filter(|c| c.client_ip.is_some()) {
                errs.push(FieldError::invalid(
                    &path.child("sessionAffinityConfig"),
                    Json(c),
                    "must not be set when session affinity is None",
                ));
            }
        }
        _ => {}
    }
    errs
}
