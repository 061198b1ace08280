//! Standalone input: Services and EndpointSlices read from a multi-document YAML file instead
//! of the API server. Every object is validated the way the API server would (the subset
//! kproxy relies on), so a typo fails loudly with the document, object and field instead of
//! silently producing a frontend with no backends.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kproxy_apimachinery::{names, yaml};

use crate::model::{SERVICE_NAME_LABEL, namespace_of};

/// Longest ClientIP affinity timeout Kubernetes accepts (one day).
const MAX_AFFINITY_TIMEOUT_S: i32 = 86_400;
const EXPECTED_KINDS: &str = "expected apiVersion v1 kind Service, or apiVersion \
                              discovery.k8s.io/v1 kind EndpointSlice";

/// Why a manifest was rejected. `doc` is the 1-based document number in the file. The
/// messages are self-contained (they include the underlying error's text).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {inner}", path.display())]
    InFile {
        path: PathBuf,
        inner: Box<ManifestError>,
    },
    #[error("document {doc} (line {line}): malformed YAML: {error}")]
    Yaml {
        doc: usize,
        line: usize,
        error: yaml::YamlError,
    },
    /// Not an object of a kind kproxy reads.
    #[error("document {doc}: {message}")]
    Unsupported { doc: usize, message: String },
    /// Right kind, but the fields do not decode into it (wrong types, ...).
    #[error("document {doc} ({object}): {error}")]
    Decode {
        doc: usize,
        object: String,
        error: serde_path_to_error::Error<serde_json::Error>,
    },
    #[error("document {doc} ({object}): {field}: {problem}")]
    Invalid {
        doc: usize,
        object: String,
        field: String,
        problem: String,
    },
    #[error("document {doc} ({object}): duplicate of document {first}")]
    Duplicate {
        doc: usize,
        object: String,
        first: usize,
    },
}

/// Reads and parses a manifest file; errors name the file.
pub fn load_file(path: &Path) -> Result<(Vec<Service>, Vec<EndpointSlice>), ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_manifests(&text).map_err(|inner| ManifestError::InFile {
        path: path.to_owned(),
        inner: Box::new(inner),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Service,
    EndpointSlice,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
        }
    }
}

/// Parses `---`-separated Services and EndpointSlices; empty documents are ignored.
pub fn parse_manifests(text: &str) -> Result<(Vec<Service>, Vec<EndpointSlice>), ManifestError> {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    let mut seen: HashMap<(Kind, String, String), usize> = HashMap::new();

    for (i, document) in yaml::split(text).into_iter().enumerate() {
        let doc = i + 1;
        let value = document.value().map_err(|error| ManifestError::Yaml {
            doc,
            line: document.line,
            error,
        })?;
        if value.is_null() {
            continue;
        }
        let kind = kind_of(doc, &value)?;
        // Read the identity before decoding so even a decode error can name the object.
        let meta_str = |field: &str| {
            value
                .get("metadata")
                .and_then(|m| m.get(field))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let name = meta_str("name").unwrap_or_default();
        let namespace = meta_str("namespace")
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let object = format!(
            "{} {namespace}/{}",
            kind.name(),
            if name.is_empty() { "<unnamed>" } else { &name }
        );
        let ctx = Ctx {
            doc,
            object: &object,
        };

        match kind {
            Kind::Service => {
                let svc: Service = decode(value).map_err(|e| ctx.decode(e))?;
                validate_service(&ctx, &svc)?;
                services.push(svc);
            }
            Kind::EndpointSlice => {
                let slice: EndpointSlice = decode(value).map_err(|e| ctx.decode(e))?;
                validate_slice(&ctx, &slice)?;
                slices.push(slice);
            }
        }
        if let Some(first) = seen.insert((kind, namespace, name), doc) {
            return Err(ManifestError::Duplicate {
                doc,
                object: object.clone(),
                first,
            });
        }
    }
    Ok((services, slices))
}

/// Decodes a document's value; an error names the field path (`spec.ports[0].port`).
fn decode<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

fn kind_of(doc: usize, value: &serde_json::Value) -> Result<Kind, ManifestError> {
    if !value.is_object() {
        return Err(ManifestError::Unsupported {
            doc,
            message: format!("not an object ({EXPECTED_KINDS})"),
        });
    }
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    match (field("apiVersion"), field("kind")) {
        (Some("v1"), Some("Service")) => Ok(Kind::Service),
        (Some("discovery.k8s.io/v1"), Some("EndpointSlice")) => Ok(Kind::EndpointSlice),
        (api_version, kind) => Err(ManifestError::Unsupported {
            doc,
            message: format!(
                "unsupported object apiVersion {} kind {} ({EXPECTED_KINDS})",
                quoted_or_missing(api_version),
                quoted_or_missing(kind)
            ),
        }),
    }
}

fn quoted_or_missing(s: Option<&str>) -> String {
    s.map_or_else(|| "<missing>".to_owned(), |s| format!("{s:?}"))
}

/// Where in the file an error is: builds errors that name the document and object.
struct Ctx<'a> {
    doc: usize,
    object: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, field: impl Into<String>, problem: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            doc: self.doc,
            object: self.object.to_owned(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn decode(&self, error: serde_path_to_error::Error<serde_json::Error>) -> ManifestError {
        ManifestError::Decode {
            doc: self.doc,
            object: self.object.to_owned(),
            error,
        }
    }

    fn port(&self, field: impl Into<String>, port: i32) -> Result<(), ManifestError> {
        if (1..=65_535).contains(&port) {
            Ok(())
        } else {
            Err(self.invalid(field, format!("{port} is not a valid port (1-65535)")))
        }
    }

    fn ipv4(&self, field: impl Into<String>, ip: &str) -> Result<(), ManifestError> {
        match ip.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(self.invalid(field, format!("{ip:?} is not a valid IPv4 address"))),
        }
    }

    fn protocol(
        &self,
        field: impl Into<String>,
        protocol: Option<&str>,
    ) -> Result<(), ManifestError> {
        match protocol {
            None | Some("TCP" | "UDP" | "SCTP") => Ok(()),
            Some(other) => {
                Err(self.invalid(field, format!("{other:?} is not one of TCP, UDP, SCTP")))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum NameRule {
    Dns1035Label,
    Dns1123Subdomain,
}

fn validate_meta(ctx: &Ctx<'_>, meta: &ObjectMeta, rule: NameRule) -> Result<(), ManifestError> {
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ctx.invalid("metadata.name", "missing"))?;
    let name_errors = match rule {
        NameRule::Dns1035Label => names::dns1035_label(name),
        NameRule::Dns1123Subdomain => names::dns1123_subdomain(name),
    };
    invalid_value(ctx, "metadata.name", name, &name_errors)?;
    let namespace = namespace_of(meta);
    invalid_value(
        ctx,
        "metadata.namespace",
        namespace,
        &names::dns1123_label(namespace),
    )
}

/// The API server's wording for a value a name rule rejects: `Invalid value: "x": why`.
fn invalid_value(
    ctx: &Ctx<'_>,
    field: &str,
    value: &str,
    errors: &[String],
) -> Result<(), ManifestError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ctx.invalid(
            field,
            format!("Invalid value: {value:?}: {}", errors.join("; ")),
        ))
    }
}

fn validate_service(ctx: &Ctx<'_>, svc: &Service) -> Result<(), ManifestError> {
    validate_meta(ctx, &svc.metadata, NameRule::Dns1035Label)?;
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| ctx.invalid("spec", "missing"))?;

    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    match svc_type {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        "ExternalName" => {
            return Err(ctx.invalid("spec.type", "ExternalName is not supported by kproxy"));
        }
        other => {
            return Err(ctx.invalid(
                "spec.type",
                format!("{other:?} is not one of ClusterIP, NodePort, LoadBalancer"),
            ));
        }
    }

    match spec.cluster_ip.as_deref() {
        None | Some("" | "None") => {}
        Some(ip) => ctx.ipv4("spec.clusterIP", ip)?,
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        ctx.ipv4(format!("spec.externalIPs[{i}]"), ip)?;
    }

    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        return Err(ctx.invalid("spec.ports", "must have at least one port"));
    }
    let mut seen_ports: HashMap<(i32, &str), usize> = HashMap::new();
    let mut seen_names: HashMap<&str, usize> = HashMap::new();
    for (i, port) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        ctx.port(format!("{field}.port"), port.port)?;
        if let Some(node_port) = port.node_port {
            ctx.port(format!("{field}.nodePort"), node_port)?;
            if svc_type == "ClusterIP" {
                return Err(ctx.invalid(
                    format!("{field}.nodePort"),
                    "may not be used when spec.type is ClusterIP",
                ));
            }
        }
        ctx.protocol(format!("{field}.protocol"), port.protocol.as_deref())?;
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if let Some(j) = seen_ports.insert((port.port, protocol), i) {
            return Err(ctx.invalid(
                field,
                format!(
                    "duplicate port {}/{protocol} (also spec.ports[{j}])",
                    port.port
                ),
            ));
        }
        // Endpoints are matched to service ports by name, so names must tell ports apart.
        let name = port.name.as_deref().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            return Err(ctx.invalid(
                format!("{field}.name"),
                "required when the service has more than one port",
            ));
        }
        if let Some(j) = seen_names.insert(name, i) {
            return Err(ctx.invalid(
                format!("{field}.name"),
                format!("duplicate name {name:?} (also spec.ports[{j}])"),
            ));
        }
    }

    match spec.session_affinity.as_deref() {
        None | Some("None" | "ClientIP") => {}
        Some(other) => {
            return Err(ctx.invalid(
                "spec.sessionAffinity",
                format!("{other:?} is not one of None, ClientIP"),
            ));
        }
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    if let Some(t) = timeout
        && !(1..=MAX_AFFINITY_TIMEOUT_S).contains(&t)
    {
        return Err(ctx.invalid(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            format!("{t} is not between 1 and {MAX_AFFINITY_TIMEOUT_S}"),
        ));
    }

    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        if let Some(ip) = &ing.ip {
            ctx.ipv4(format!("status.loadBalancer.ingress[{i}].ip"), ip)?;
        }
    }
    Ok(())
}

fn validate_slice(ctx: &Ctx<'_>, slice: &EndpointSlice) -> Result<(), ManifestError> {
    validate_meta(ctx, &slice.metadata, NameRule::Dns1123Subdomain)?;
    match slice.address_type.as_str() {
        "IPv4" => {}
        "IPv6" | "FQDN" => {
            return Err(ctx.invalid(
                "addressType",
                format!(
                    "{} is not supported by kproxy (only IPv4)",
                    slice.address_type
                ),
            ));
        }
        other => {
            return Err(ctx.invalid(
                "addressType",
                format!("{other:?} is not one of IPv4, IPv6, FQDN"),
            ));
        }
    }
    let owner = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL));
    if owner.is_none_or(String::is_empty) {
        return Err(ctx.invalid(
            format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
            "missing (it names the Service these endpoints belong to)",
        ));
    }
    let mut seen_names = HashSet::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let field = format!("ports[{i}]");
        if let Some(p) = port.port {
            ctx.port(format!("{field}.port"), p)?;
        }
        ctx.protocol(format!("{field}.protocol"), port.protocol.as_deref())?;
        let name = port.name.as_deref().unwrap_or_default();
        if !seen_names.insert(name) {
            return Err(ctx.invalid(format!("{field}.name"), format!("duplicate name {name:?}")));
        }
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        for (j, addr) in endpoint.addresses.iter().enumerate() {
            ctx.ipv4(format!("endpoints[{i}].addresses[{j}]"), addr)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\n";
    const EPS: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n";

    fn err(text: &str) -> String {
        match parse_manifests(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn svc_err(body: &str) -> String {
        err(&format!("{SVC}{body}"))
    }

    fn eps_err(body: &str) -> String {
        err(&format!("{EPS}{body}"))
    }

    const GOOD_EPS_META: &str =
        "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\n";

    #[test]
    fn sample_manifest_parses() {
        let text = include_str!("../examples/manifests.yaml");
        let (services, slices) = parse_manifests(text).expect("sample is valid");
        assert_eq!(services.len(), 3);
        assert_eq!(slices.len(), 3);
        let nodes = [Ipv4Addr::new(192, 168, 1, 10)];
        let state = crate::model::build_state(
            &services,
            &slices,
            &nodes,
            &crate::model::policy::Locality::default(),
        );
        let web = state
            .frontends
            .get(&crate::model::FrontendKey {
                addr: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                proto: crate::model::Proto::Tcp,
            })
            .expect("web frontend");
        assert_eq!(web.active().count(), 3);
        let kinds: HashSet<_> = state.frontends.values().map(|f| f.kind).collect();
        assert_eq!(
            kinds.len(),
            3,
            "ClusterIP, LoadBalancerIP and NodePort frontends"
        );
        assert!(
            state
                .frontends
                .keys()
                .any(|k| k.proto == crate::model::Proto::Udp)
        );
    }

    #[test]
    fn multi_document_with_empty_documents() {
        let text = format!(
            "# leading comment\n---\n{SVC}metadata: {{name: web}}\nspec: {{ports: [{{port: 80}}]}}\n\
             ---\n---\n# only a comment\n---\n{EPS}{GOOD_EPS_META}addressType: IPv4\nendpoints: []\n---\n"
        );
        let (services, slices) = parse_manifests(&text).expect("valid");
        assert_eq!(services.len(), 1);
        assert_eq!(slices.len(), 1);
        assert_eq!(parse_manifests("").expect("empty").0.len(), 0);
    }

    #[test]
    fn port_out_of_range_names_document_object_and_field() {
        let text = format!(
            "{SVC}metadata: {{name: a}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
             {SVC}metadata: {{name: b}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
             {SVC}metadata: {{name: web}}\nspec: {{ports: [{{port: 70000}}]}}\n"
        );
        assert_eq!(
            err(&text),
            "document 3 (Service default/web): spec.ports[0].port: 70000 is not a valid port (1-65535)"
        );
    }

    #[test]
    fn service_validation() {
        let cases: &[(&str, &str)] = &[
            ("spec: {ports: [{port: 80}]}", "metadata.name: missing"),
            (
                "metadata: {name: Web}\nspec: {ports: [{port: 80}]}",
                "metadata.name: Invalid value: \"Web\": a DNS-1035 label must consist of",
            ),
            (
                "metadata: {name: 1web}\nspec: {ports: [{port: 80}]}",
                "metadata.name: Invalid value: \"1web\": a DNS-1035 label",
            ),
            (
                "metadata: {name: web, namespace: my.ns}\nspec: {ports: [{port: 80}]}",
                "metadata.namespace: Invalid value: \"my.ns\": a lowercase RFC 1123 label",
            ),
            ("metadata: {name: web}", "spec: missing"),
            (
                "metadata: {name: web}\nspec: {ports: []}",
                "spec.ports: must have",
            ),
            (
                "metadata: {name: web}\nspec: {ports: [{port: 0}]}",
                "spec.ports[0].port: 0 is not a valid port",
            ),
            (
                "metadata: {name: web}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 99999}]}",
                "spec.ports[0].nodePort: 99999 is not a valid port",
            ),
            (
                "metadata: {name: web}\nspec: {ports: [{port: 80, nodePort: 30080}]}",
                "spec.ports[0].nodePort: may not be used when spec.type is ClusterIP",
            ),
            (
                "metadata: {name: web}\nspec: {ports: [{port: 80, protocol: ICMP}]}",
                "spec.ports[0].protocol: \"ICMP\" is not one of TCP, UDP, SCTP",
            ),
            (
                "metadata: {name: web}\nspec: {ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}]}",
                "spec.ports[1]: duplicate port 80/TCP (also spec.ports[0])",
            ),
            (
                "metadata: {name: web}\nspec: {ports: [{name: a, port: 80}, {name: a, port: 81}]}",
                "spec.ports[1].name: duplicate name \"a\"",
            ),
            (
                "metadata: {name: web}\nspec: {ports: [{name: a, port: 80}, {port: 81}]}",
                "spec.ports[1].name: required",
            ),
            (
                "metadata: {name: web}\nspec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}",
                "spec.clusterIP: \"10.96.0.300\" is not a valid IPv4 address",
            ),
            (
                "metadata: {name: web}\nspec: {externalIPs: [1.2.3.4, 'fd00::1'], ports: [{port: 80}]}",
                "spec.externalIPs[1]: \"fd00::1\" is not a valid IPv4 address",
            ),
            (
                "metadata: {name: web}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: nope}]}}",
                "status.loadBalancer.ingress[0].ip: \"nope\" is not a valid IPv4 address",
            ),
            (
                "metadata: {name: web}\nspec: {type: ExternalName, externalName: x.example.com, ports: [{port: 80}]}",
                "spec.type: ExternalName is not supported",
            ),
            (
                "metadata: {name: web}\nspec: {type: Fancy, ports: [{port: 80}]}",
                "spec.type: \"Fancy\" is not one of ClusterIP, NodePort, LoadBalancer",
            ),
            (
                "metadata: {name: web}\nspec: {sessionAffinity: Cookie, ports: [{port: 80}]}",
                "spec.sessionAffinity: \"Cookie\" is not one of None, ClientIP",
            ),
            (
                "metadata: {name: web}\nspec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}, ports: [{port: 80}]}",
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is not between 1 and 86400",
            ),
        ];
        for (body, want) in cases {
            let got = svc_err(body);
            assert!(got.starts_with("document 1 (Service "), "{got}");
            assert!(
                got.contains(want),
                "for {body:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn valid_service_variants() {
        let text = format!(
            "{SVC}metadata: {{name: a}}\nspec: {{clusterIP: None, ports: [{{port: 80}}]}}\n---\n\
             {SVC}metadata: {{name: b}}\nspec: {{clusterIP: '', sessionAffinity: ClientIP, \
             sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 86400}}}}, \
             ports: [{{name: x, port: 53, protocol: UDP}}, {{name: y, port: 53}}, {{name: z, port: 9, protocol: SCTP}}]}}\n"
        );
        let (services, _) = parse_manifests(&text).expect("valid");
        assert_eq!(services.len(), 2);
    }

    #[test]
    fn endpoint_slice_validation() {
        let cases: &[(&str, &str)] = &[
            (
                "metadata: {name: Web_1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: []",
                "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain",
            ),
            (
                "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv6\nendpoints: []",
                "addressType: IPv6 is not supported",
            ),
            (
                "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: FQDN\nendpoints: []",
                "addressType: FQDN is not supported",
            ),
            (
                "metadata: {name: web-1}\naddressType: IPv4\nendpoints: []",
                "metadata.labels[kubernetes.io/service-name]: missing",
            ),
            (
                "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{port: 65536}]\nendpoints: []",
                "ports[0].port: 65536 is not a valid port",
            ),
            (
                "metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2, 10.0.0]}]",
                "endpoints[1].addresses[1]: \"10.0.0\" is not a valid IPv4 address",
            ),
        ];
        for (body, want) in cases {
            let got = eps_err(body);
            assert!(got.starts_with("document 1 (EndpointSlice "), "{got}");
            assert!(
                got.contains(want),
                "for {body:?}\n got: {got}\nwant: {want}"
            );
        }
        // Dotted names are fine for slices, and ports without a number are allowed.
        let ok = format!(
            "{EPS}metadata: {{name: web.v1-x, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http}}]\nendpoints: [{{addresses: [10.0.0.1]}}]\n"
        );
        parse_manifests(&ok).expect("valid slice");
    }

    #[test]
    fn unknown_kind_and_wrong_api_version_rejected() {
        let got = err("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
        assert!(
            got.starts_with(
                "document 1: unsupported object apiVersion \"apps/v1\" kind \"Deployment\""
            ),
            "{got}"
        );
        let got = err("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n");
        assert!(got.contains("unsupported object"), "{got}");
        let got = err(&format!(
            "{SVC}metadata: {{name: a}}\nspec: {{ports: [{{port: 80}}]}}\n---\nkind: Service\n"
        ));
        assert!(
            got.starts_with("document 2: unsupported object apiVersion <missing> kind \"Service\""),
            "{got}"
        );
        let got = err("- just\n- a list\n");
        assert!(got.starts_with("document 1: not an object"), "{got}");
    }

    #[test]
    fn malformed_yaml_and_bad_types() {
        let got = err(&format!(
            "{SVC}metadata: {{name: a}}\nspec: {{ports: [{{port: 80}}]}}\n---\nkind: [unclosed\n"
        ));
        assert!(
            got.starts_with("document 2 (line 6): malformed YAML: "),
            "{got}"
        );
        assert!(got.contains("line 1"), "the parser's location kept: {got}");
        let got = svc_err("metadata: {name: web}\nspec: {ports: [{port: eighty}]}");
        assert!(
            got.starts_with("document 1 (Service default/web): spec.ports[0].port: invalid type"),
            "{got}"
        );
    }

    #[test]
    fn duplicate_objects_rejected() {
        let one = format!("{SVC}metadata: {{name: web}}\nspec: {{ports: [{{port: 80}}]}}\n");
        let got = err(&format!("{one}---\n{one}"));
        assert_eq!(
            got,
            "document 2 (Service default/web): duplicate of document 1"
        );
        // Same name in another namespace, or as another kind, is a different object.
        let other_ns = format!(
            "{SVC}metadata: {{name: web, namespace: b}}\nspec: {{ports: [{{port: 80}}]}}\n"
        );
        let slice = format!(
            "{EPS}metadata: {{name: web, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: []\n"
        );
        parse_manifests(&format!("{one}---\n{other_ns}---\n{slice}")).expect("distinct objects");
    }

    #[test]
    fn load_file_errors_name_the_file() {
        let missing = Path::new("/nonexistent/kproxy-manifests.yaml");
        let got = load_file(missing).expect_err("missing file").to_string();
        assert!(
            got.starts_with("cannot read /nonexistent/kproxy-manifests.yaml: "),
            "{got}"
        );

        let path =
            std::env::temp_dir().join(format!("kproxy-manifest-test-{}.yaml", std::process::id()));
        std::fs::write(&path, "apiVersion: v1\nkind: Pod\n").expect("write temp file");
        let got = load_file(&path).expect_err("pod rejected").to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            got.starts_with(&format!(
                "{}: document 1: unsupported object",
                path.display()
            )),
            "{got}"
        );
    }

    /// A Service whose `b` is 20,000 references to a 20,000-element list: 400 million
    /// nodes if it were expanded.
    fn alias_bomb() -> String {
        let items = vec!["x"; 20_000].join(",");
        let refs = vec!["*a"; 20_000].join(",");
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: bomb}}\n\
             data:\n  a: &a [{items}]\n  b: [{refs}]\n"
        )
    }

    #[test]
    fn yaml_alias_bombs_are_refused_not_expanded() {
        let path =
            std::env::temp_dir().join(format!("kproxy-manifest-bomb-{}.yaml", std::process::id()));
        std::fs::write(&path, alias_bomb()).expect("write temp file");
        let started = std::time::Instant::now();
        let got = load_file(&path).expect_err("an alias bomb").to_string();
        let took = started.elapsed();
        let _ = std::fs::remove_file(&path);
        assert!(
            got.starts_with(&format!("{}: document 1 (line 1): ", path.display())),
            "{got}"
        );
        assert!(
            got.contains("too large once its aliases are expanded"),
            "{got}"
        );
        // A debug build; a release build refuses it in milliseconds.
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    }
}
