//! Pods and pod specs (also inside Deployment and ReplicaSet templates).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, HTTPGetAction, LifecycleHandler, Pod, PodSpec, Probe, ResourceRequirements,
    Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use kproxy_apimachinery::names;
use kproxy_apimachinery::quantity::{self, Quantity};

use super::meta::{self, NameRule, Scope};
use super::{
    FieldError, Invalid, NON_NEGATIVE_MSG, Path, name_errors, non_negative, one_of, port_num,
    port_num_or_name, protocol,
};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const URI_SCHEMES: &[&str] = &["HTTP", "HTTPS"];
const TOLERATION_OPERATORS: &[&str] = &["Equal", "Exists"];
const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
/// Downward-API fields an environment variable may reference (besides labels/annotations).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

pub(crate) fn pod(pod: &Pod, old: Option<&Pod>) -> Result<Vec<FieldError>, Invalid> {
    let mut errs = meta::object_meta(&pod.metadata, Scope::Namespaced, NameRule::Subdomain);
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&pod.metadata, &old.metadata));
    }
    // Like Go's zero value: no spec is a spec without containers.
    let default = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default);
    let path = Path::root("spec");
    check_quantities(spec, &path)?;
    errs.extend(pod_spec(spec, &path));
    Ok(errs)
}

/// ValidatePodSpec.
pub(crate) fn pod_spec(spec: &PodSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    errs.extend(validate_volumes(volumes, &path.child("volumes")));

    let host_network = spec.host_network == Some(true);
    // Container names are unique across init and app containers.
    let mut names = HashSet::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let p = path.child("initContainers").index(i);
        errs.extend(container(c, &p, true, host_network, &mut names));
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(&path.child("containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let p = path.child("containers").index(i);
        errs.extend(container(c, &p, false, host_network, &mut names));
    }

    errs.extend(one_of(
        &path.child("restartPolicy"),
        spec.restart_policy.as_deref(),
        RESTART_POLICIES,
    ));
    errs.extend(one_of(
        &path.child("dnsPolicy"),
        spec.dns_policy.as_deref(),
        DNS_POLICIES,
    ));
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        errs.extend(name_errors(
            &path.child("nodeName"),
            node,
            names::dns1123_subdomain(node),
        ));
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        errs.extend(name_errors(
            &path.child("serviceAccountName"),
            sa,
            names::dns1123_subdomain(sa),
        ));
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            errs.extend(name_errors(&path.child(field), v, names::dns1123_label(v)));
        }
    }
    if let Some(secs) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&secs)
    {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            secs,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    errs.extend(meta::labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    errs.extend(tolerations(spec, &path.child("tolerations")));
    errs
}

fn validate_volumes(volumes: &[Volume], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        if v.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            errs.extend(name_errors(
                &p.child("name"),
                &v.name,
                names::dns1123_label(&v.name),
            ));
            if !seen.insert(v.name.as_str()) {
                errs.push(FieldError::duplicate(&p.child("name"), &v.name));
            }
        }
        // Exactly one source; the typed struct has one optional field per source type.
        let sources: Vec<String> = match serde_json::to_value(v) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k != "name")
                .collect(),
            _ => Vec::new(),
        };
        if let Some(h) = &v.host_path {
            errs.extend(host_path(&h.path, h.type_.as_deref(), &p.child("hostPath")));
        }
        match sources.as_slice() {
            [] => errs.push(FieldError::required(&p, "must specify a volume type")),
            [_] => {}
            [_, rest @ ..] => {
                for extra in rest {
                    errs.push(FieldError::forbidden(
                        &p.child(extra),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
    }
    errs
}

fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// ValidateHostPathVolumeSource, plus what the node's runtime needs: an absolute path (a node
/// has no working directory to resolve it against) without ':' (Docker's bind syntax
/// separates its fields with it).
fn host_path(path: &str, kind: Option<&str>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let pp = p.child("path");
    if path.is_empty() {
        errs.push(FieldError::required(&pp, ""));
    } else {
        if !path.starts_with('/') {
            errs.push(FieldError::invalid(&pp, path, "must be an absolute path"));
        }
        if has_backsteps(path) {
            errs.push(FieldError::invalid(&pp, path, "must not contain '..'"));
        }
        if path.contains(':') {
            errs.push(FieldError::invalid(&pp, path, "must not contain ':'"));
        }
    }
    errs.extend(one_of(&p.child("type"), kind, HOST_PATH_TYPES));
    errs
}

pub(super) fn container(
    c: &Container,
    path: &Path,
    init: bool,
    host_network: bool,
    names: &mut HashSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name_path = path.child("name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        errs.extend(name_errors(
            &name_path,
            &c.name,
            names::dns1123_label(&c.name),
        ));
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(&name_path, &c.name));
        }
    }
    if c.image.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::required(&path.child("image"), ""));
    }
    errs.extend(one_of(
        &path.child("imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        PULL_POLICIES,
    ));
    if let Some(p) = c.termination_message_policy.as_deref()
        && p != "File"
        && p != "FallbackToLogsOnError"
    {
        errs.push(FieldError::invalid(
            &path.child("terminationMessagePolicy"),
            p,
            "must be 'File' or 'FallbackToLogsOnError'",
        ));
    }
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    match (init, c.restart_policy.as_deref()) {
        (_, None) => {}
        (true, Some(p)) => errs.extend(one_of(&path.child("restartPolicy"), Some(p), &["Always"])),
        (false, Some(_)) => errs.push(FieldError::forbidden(
            &path.child("restartPolicy"),
            "may not be set for non-init containers",
        )),
    }
    errs.extend(container_ports(c, &path.child("ports"), host_network));
    errs.extend(env(
        c.env.as_deref().unwrap_or_default(),
        &path.child("env"),
    ));
    if let Some(r) = &c.resources {
        errs.extend(resources(r, &path.child("resources")));
    }
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (field, probe) in probes {
        let Some(probe) = probe else { continue };
        let p = path.child(field);
        if init && !sidecar {
            errs.push(FieldError::forbidden(
                &p,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        errs.extend(validate_probe(probe, &p));
        if field != "readinessProbe"
            && let Some(t) = probe.success_threshold.filter(|t| *t != 1)
        {
            errs.push(FieldError::invalid(
                &p.child("successThreshold"),
                t,
                "must be 1",
            ));
        }
    }
    if let Some(l) = &c.lifecycle {
        for (field, handler) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = handler {
                errs.extend(lifecycle_handler(h, &path.child("lifecycle").child(field)));
            }
        }
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = path.child("volumeMounts").index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&p.child("mountPath"), ""));
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            let sp = p.child("subPath");
            if sub.starts_with('/') {
                errs.push(FieldError::invalid(&sp, sub, "must be a relative path"));
            }
            if has_backsteps(sub) {
                errs.push(FieldError::invalid(&sp, sub, "must not contain '..'"));
            }
        }
    }
    errs
}

fn container_ports(c: &Container, path: &Path, host_network: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let p = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            errs.extend(name_errors(
                &p.child("name"),
                name,
                names::iana_svc_name(name),
            ));
            if !names.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(&p.child("containerPort"), ""));
        } else {
            errs.extend(port_num(&p.child("containerPort"), port.container_port));
        }
        if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
            errs.extend(port_num(&p.child("hostPort"), hp));
            if host_network && hp != port.container_port {
                errs.push(FieldError::invalid(
                    &p.child("hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        errs.extend(protocol(&p.child("protocol"), port.protocol.as_deref()));
    }
    errs
}

fn env(vars: &[EnvVar], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in vars.iter().enumerate() {
        let p = path.index(i);
        if ev.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else if !ev
            .name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'=')
        {
            errs.push(FieldError::invalid(
                &p.child("name"),
                &ev.name,
                "a valid environment variable name must consist only of printable ASCII characters \
                 other than '='",
            ));
        }
        let Some(from) = &ev.value_from else { continue };
        let vp = p.child("valueFrom");
        let mut sources = 0;
        if let Some(f) = &from.field_ref {
            sources += 1;
            let fp = vp.child("fieldRef").child("fieldPath");
            if f.field_path.is_empty() {
                errs.push(FieldError::required(&fp, ""));
            } else if !env_field_path_ok(&f.field_path) {
                errs.push(FieldError::not_supported(
                    &fp,
                    &f.field_path,
                    ENV_FIELD_PATHS,
                ));
            }
        }
        if let Some(r) = &from.resource_field_ref {
            sources += 1;
            if r.resource.is_empty() {
                errs.push(FieldError::required(
                    &vp.child("resourceFieldRef").child("resource"),
                    "",
                ));
            }
        }
        let key_refs = [
            (
                "configMapKeyRef",
                from.config_map_key_ref.as_ref().map(|r| (&r.key, &r.name)),
            ),
            (
                "secretKeyRef",
                from.secret_key_ref.as_ref().map(|r| (&r.key, &r.name)),
            ),
        ];
        for (field, r) in key_refs {
            let Some((key, name)) = r else { continue };
            sources += 1;
            if key.is_empty() {
                errs.push(FieldError::required(&vp.child(field).child("key"), ""));
            }
            if name.is_empty() {
                errs.push(FieldError::required(&vp.child(field).child("name"), ""));
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        } else if !ev.value.as_deref().unwrap_or_default().is_empty() {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
    }
    errs
}

fn env_field_path_ok(path: &str) -> bool {
    if ENV_FIELD_PATHS.contains(&path) {
        return true;
    }
    // metadata.labels['key'] / metadata.annotations['key']
    ["metadata.labels", "metadata.annotations"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|key| names::qualified_name(key).is_empty())
        })
}

/// Resource names containers may use without a domain prefix.
fn standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name
            .strip_prefix("hugepages-")
            .is_some_and(|size| Quantity::parse_saturating(size).is_ok())
}

/// Native resources may be overcommitted (requests below limits); extended ones may not.
fn native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn overcommit_allowed(name: &str) -> bool {
    native(name) && !name.starts_with("hugepages-")
}

fn resource_name(name: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = name_errors(path, name, names::qualified_name(name));
    if !name.contains('/') {
        if !standard_container_resource(name) {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !native(name)
        && (name.starts_with("requests.")
            || !names::qualified_name(&format!("requests.{name}")).is_empty())
    {
        errs.push(FieldError::invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
    errs
}

/// ValidateResourceQuantityValue: non-negative; extended resources whole numbers.
fn quantity_value(name: &str, raw: &str, q: Quantity, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if q.is_negative() {
        errs.push(FieldError::invalid(path, raw, NON_NEGATIVE_MSG));
    }
    if !native(name) && !q.is_whole() {
        errs.push(FieldError::invalid(path, raw, "must be an integer"));
    }
    errs
}

fn resources(r: &ResourceRequirements, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = BTreeMap::new();
    let limits: &BTreeMap<String, Q> = r.limits.as_ref().unwrap_or(&empty);
    let requests: &BTreeMap<String, Q> = r.requests.as_ref().unwrap_or(&empty);
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    for (name, q) in limits {
        let p = lim_path.key(name);
        errs.extend(resource_name(name, &p));
        // Malformed quantities were rejected while decoding.
        if let Ok(parsed) = Quantity::parse_saturating(&q.0) {
            errs.extend(quantity_value(name, &q.0, parsed, &p));
        }
    }
    for (name, q) in requests {
        let p = req_path.key(name);
        errs.extend(resource_name(name, &p));
        let Ok(parsed) = Quantity::parse_saturating(&q.0) else {
            continue;
        };
        errs.extend(quantity_value(name, &q.0, parsed, &p));
        match limits.get(name) {
            Some(lim) => {
                let Ok(lim_q) = Quantity::parse_saturating(&lim.0) else {
                    continue;
                };
                let order = parsed.cmp(&lim_q);
                if order != Ordering::Equal && !overcommit_allowed(name) {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &q.0,
                        format!("must be equal to {name} limit of {}", lim.0),
                    ));
                } else if order == Ordering::Greater {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &q.0,
                        format!("must be less than or equal to {name} limit of {}", lim.0),
                    ));
                }
            }
            None if !overcommit_allowed(name) => errs.push(FieldError::required(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
    errs
}

/// Probe handler types: exactly one of exec, httpGet, tcpSocket, grpc.
fn validate_probe(probe: &Probe, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut handlers = 0;
    let mut count = |present: bool, field: &str, errs: &mut Vec<FieldError>| -> bool {
        if !present {
            return false;
        }
        handlers += 1;
        if handlers > 1 {
            errs.push(FieldError::forbidden(
                &path.child(field),
                "may not specify more than 1 handler type",
            ));
            return false;
        }
        true
    };
    if count(probe.exec.is_some(), "exec", &mut errs)
        && let Some(e) = &probe.exec
    {
        errs.extend(exec(e.command.as_deref(), &path.child("exec")));
    }
    if count(probe.http_get.is_some(), "httpGet", &mut errs)
        && let Some(h) = &probe.http_get
    {
        errs.extend(http_get(h, &path.child("httpGet")));
    }
    if count(probe.tcp_socket.is_some(), "tcpSocket", &mut errs)
        && let Some(t) = &probe.tcp_socket
    {
        errs.extend(port_num_or_name(
            &path.child("tcpSocket").child("port"),
            &t.port,
        ));
    }
    if count(probe.grpc.is_some(), "grpc", &mut errs)
        && let Some(g) = &probe.grpc
    {
        errs.extend(port_num(&path.child("grpc").child("port"), g.port));
    }
    if handlers == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    let numbers = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ];
    for (field, v) in numbers {
        errs.extend(non_negative(&path.child(field), v.map(i64::from)));
    }
    if let Some(t) = probe.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(FieldError::invalid(
            &path.child("terminationGracePeriodSeconds"),
            t,
            "must be greater than 0",
        ));
    }
    errs
}

/// postStart / preStop: exactly one of exec, httpGet, tcpSocket, sleep.
fn lifecycle_handler(h: &LifecycleHandler, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let present = [
        ("exec", h.exec.is_some()),
        ("httpGet", h.http_get.is_some()),
        ("tcpSocket", h.tcp_socket.is_some()),
        ("sleep", h.sleep.is_some()),
    ];
    let set: Vec<&str> = present
        .iter()
        .filter(|(_, p)| *p)
        .map(|(f, _)| *f)
        .collect();
    match set.as_slice() {
        [] => errs.push(FieldError::required(path, "must specify a handler type")),
        [_, rest @ ..] => {
            for extra in rest {
                errs.push(FieldError::forbidden(
                    &path.child(extra),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    match set.first() {
        Some(&"exec") => {
            if let Some(e) = &h.exec {
                errs.extend(exec(e.command.as_deref(), &path.child("exec")));
            }
        }
        Some(&"httpGet") => {
            if let Some(g) = &h.http_get {
                errs.extend(http_get(g, &path.child("httpGet")));
            }
        }
        Some(&"tcpSocket") => {
            if let Some(t) = &h.tcp_socket {
                errs.extend(port_num_or_name(
                    &path.child("tcpSocket").child("port"),
                    &t.port,
                ));
            }
        }
        Some(&"sleep") => {
            if let Some(s) = &h.sleep {
                errs.extend(non_negative(
                    &path.child("sleep").child("seconds"),
                    Some(s.seconds),
                ));
            }
        }
        _ => {}
    }
    errs
}

fn exec(command: Option<&[String]>, path: &Path) -> Vec<FieldError> {
    if command.unwrap_or_default().is_empty() {
        vec![FieldError::required(&path.child("command"), "")]
    } else {
        Vec::new()
    }
}

fn http_get(h: &HTTPGetAction, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if h.path.as_deref() == Some("") {
        errs.push(FieldError::required(&path.child("path"), ""));
    }
    errs.extend(port_num_or_name(&path.child("port"), &h.port));
    errs.extend(one_of(
        &path.child("scheme"),
        h.scheme.as_deref(),
        URI_SCHEMES,
    ));
    for (i, header) in h.http_headers.iter().flatten().enumerate() {
        let ok = !header.name.is_empty()
            && header
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            errs.push(FieldError::invalid(
                &path.child("httpHeaders").index(i).child("name"),
                &header.name,
                "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. \
                 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            ));
        }
    }
    errs
}

fn tolerations(spec: &PodSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let p = path.index(i);
        let key = t.key.as_deref().unwrap_or_default();
        if !key.is_empty() {
            errs.extend(name_errors(
                &p.child("key"),
                key,
                names::qualified_name(key),
            ));
        }
        let operator = t.operator.as_deref().unwrap_or("Equal");
        match operator {
            "Exists" if !t.value.as_deref().unwrap_or_default().is_empty() => errs.push(FieldError::invalid(
                &p.child("operator"),
                operator,
                "value must be empty when `operator` is 'Exists'",
            )),
            "Equal" if key.is_empty() => errs.push(FieldError::invalid(
                &p.child("operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            )),
            _ => errs.extend(one_of(&p.child("operator"), Some(operator), TOLERATION_OPERATORS)),
        }
        if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            errs.extend(one_of(&p.child("effect"), Some(effect), TAINT_EFFECTS));
        }
    }
    errs
}

/// Every quantity of a pod spec must parse (container resources, emptyDir size limits).
/// Kubernetes rejects a malformed quantity while decoding the body, hence [`Invalid::Decode`].
pub(crate) fn check_quantities(spec: &PodSpec, path: &Path) -> Result<(), Invalid> {
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let res_path = path.child(list).index(i).child("resources");
            if let Some(r) = &c.resources {
                check_quantity_map(r.limits.as_ref(), &res_path.child("limits"))?;
                check_quantity_map(r.requests.as_ref(), &res_path.child("requests"))?;
            }
        }
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            check_quantity(
                limit,
                &path
                    .child("volumes")
                    .index(i)
                    .child("emptyDir")
                    .child("sizeLimit"),
            )?;
        }
    }
    Ok(())
}

fn check_quantity_map(map: Option<&BTreeMap<String, Q>>, path: &Path) -> Result<(), Invalid> {
    for (k, q) in map.into_iter().flatten() {
        check_quantity(q, &path.key(k))?;
    }
    Ok(())
}

fn check_quantity(q: &Q, path: &Path) -> Result<(), Invalid> {
    match Quantity::parse_saturating(&q.0) {
        Ok(_) => Ok(()),
        Err(_) => Err(Invalid::Decode(format!(
            "{path}: {}",
            quantity::FORMAT_WRONG
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(path: &str, kind: Option<&str>) -> Vec<String> {
        host_path(
            path,
            kind,
            &Path::root("spec")
                .child("volumes")
                .index(0)
                .child("hostPath"),
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn host_paths_are_absolute_without_backsteps_or_colons() {
        for ok in ["/var/log", "/run/docker.sock", "/a/..b/c.."] {
            assert!(messages(ok, Some("")).is_empty(), "{ok}");
        }
        let p = "spec.volumes[0].hostPath";
        assert_eq!(messages("", None), [format!("{p}.path: Required value")]);
        assert_eq!(
            messages("var/log", None),
            [format!(
                "{p}.path: Invalid value: \"var/log\": must be an absolute path"
            )]
        );
        assert_eq!(
            messages("/a/../../etc", None),
            [format!(
                "{p}.path: Invalid value: \"/a/../../etc\": must not contain '..'"
            )]
        );
        assert_eq!(
            messages("/a:/b", None),
            [format!(
                "{p}.path: Invalid value: \"/a:/b\": must not contain ':'"
            )]
        );
        let e = messages("/x", Some("Fifo"));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(&format!("{p}.type: Unsupported value: \"Fifo\"")),
            "{e:?}"
        );
        for t in HOST_PATH_TYPES {
            assert!(messages("/x", Some(t)).is_empty(), "{t}");
        }
    }

    #[test]
    fn sub_paths_are_relative_without_backsteps() {
        let pod = |sub: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
                    {"name": "v", "mountPath": "/m", "subPath": sub}]}],
                         "volumes": [{"name": "v", "emptyDir": {}}]}
            }))
            .unwrap()
        };
        let errs = |sub| -> Vec<String> {
            self::pod(&pod(sub), None)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(errs("a/b").is_empty());
        assert!(errs("a..b").is_empty());
        let m = "spec.containers[0].volumeMounts[0].subPath";
        assert_eq!(
            errs("/etc"),
            [format!(
                "{m}: Invalid value: \"/etc\": must be a relative path"
            )]
        );
        assert_eq!(
            errs("a/../../x"),
            [format!(
                "{m}: Invalid value: \"a/../../x\": must not contain '..'"
            )]
        );
    }
}
