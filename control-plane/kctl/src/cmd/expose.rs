//! `kctl expose`: a Service in front of a deployment, replica set, pod or service, with the
//! selector and ports taken from the exposed object the way kubectl takes them.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use serde_json::Value;

use super::create::{DryRun, DryRunArgs};
use crate::client::Ctx;
use crate::output::{self, OutputFormat};
use crate::resources::parse_type_args;

#[derive(clap::Args, Debug, Clone)]
pub struct ExposeArgs {
    /// TYPE NAME or TYPE/NAME: a deployment, replicaset, pod or service.
    #[arg(required = true, num_args = 1..=2, value_name = "TYPE NAME")]
    pub args: Vec<String>,
    /// The port the service serves on (default: the exposed object's ports).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub port: Option<i32>,
    /// The port (number or name) on the pods to send traffic to (default: the service port).
    #[arg(long)]
    pub target_port: Option<String>,
    /// The protocol of the port (default: the exposed port's, else TCP).
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// The service type.
    #[arg(long = "type", value_enum)]
    pub type_: Option<ServiceType>,
    /// The service name (default: the exposed object's name).
    #[arg(long)]
    pub name: Option<String>,
    /// An external IP address the service also accepts traffic on.
    #[arg(long)]
    pub external_ip: Option<String>,
    /// A cluster IP to request, or `None` for a headless service.
    #[arg(long)]
    pub cluster_ip: Option<String>,
    /// Selector for the service (`k=v,...`; default: the exposed object's).
    #[arg(long)]
    pub selector: Option<String>,
    /// Labels for the service (`k=v,...`; default: the exposed object's).
    #[arg(short = 'l', long)]
    pub labels: Option<String>,
    #[command(flatten)]
    pub print: DryRunArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    #[value(name = "TCP")]
    Tcp,
    #[value(name = "UDP")]
    Udp,
    #[value(name = "SCTP")]
    Sctp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceType {
    #[value(name = "ClusterIP")]
    ClusterIp,
    #[value(name = "NodePort")]
    NodePort,
    #[value(name = "LoadBalancer")]
    LoadBalancer,
}

impl ServiceType {
    fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

pub async fn run(ctx: &mut Ctx, args: ExposeArgs) -> Result<()> {
    let targets = parse_type_args(&args.args)?;
    let [target] = targets.as_slice() else {
        bail!("expose takes exactly one resource");
    };
    let [name] = target.names.as_slice() else {
        bail!("you must provide exactly one resource name to expose");
    };
    let info = ctx.resolve(&target.resource).await?;
    let source = ctx.api(&info, Some(&ctx.namespace)).get(name).await?;
    let source = serde_json::to_value(&source).context("encoding the exposed object")?;
    let mut service = build_service(&info.kind, &source, &args)?;
    // kubectl names the namespace in the object only when -n was given.
    service.metadata.namespace = ctx.namespace_explicit.then(|| ctx.namespace.clone());
    let svc_name = service.metadata.name.clone().unwrap_or_default();
    let dry = args.print.dry_run == Some(DryRun::Client);
    let created = if dry {
        service
    } else {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        api.create(&PostParams::default(), &service).await?
    };
    match args.print.output {
        Some(format @ (OutputFormat::Yaml | OutputFormat::Json)) => {
            let mut v = serde_json::to_value(&created).context("encoding the service")?;
            v["apiVersion"] = Value::String("v1".into());
            v["kind"] = Value::String("Service".into());
            if dry {
                super::create::with_go_zero_values(&mut v);
            }
            output::emit(&output::render(&v, format)?)
        }
        Some(OutputFormat::Name) => output::emit(&format!("service/{svc_name}\n")),
        _ => output::emit(&format!(
            "service/{svc_name} exposed{}\n",
            if dry { " (dry run)" } else { "" }
        )),
    }
}

/// The Service kubectl would create to expose `source` (a `kind` object as JSON).
pub fn build_service(kind: &str, source: &Value, args: &ExposeArgs) -> Result<Service> {
    let selector = match &args.selector {
        Some(s) => parse_map(s, "--selector")?,
        None => selector_for(kind, source)?,
    };
    let labels = match &args.labels {
        Some(l) => parse_map(l, "--labels")?,
        None => string_map(&source["metadata"]["labels"]),
    };
    let name = args
        .name
        .clone()
        .or_else(|| source["metadata"]["name"].as_str().map(str::to_string))
        .context("the exposed object has no name")?;
    let introspected = ports_for(kind, source);
    let wanted: Vec<(i32, String)> = match args.port {
        Some(p) => {
            let proto = introspected
                .iter()
                .find(|(port, _)| *port == p)
                .map(|(_, proto)| proto.clone());
            vec![(p, proto.unwrap_or_else(|| "TCP".into()))]
        }
        None if introspected.is_empty() => {
            bail!("couldn't find port via --port flag or introspection")
        }
        None => introspected,
    };
    let target_port = args
        .target_port
        .as_deref()
        .map(parse_int_or_string)
        .transpose()?;
    let many = wanted.len() > 1;
    let ports = wanted
        .into_iter()
        .enumerate()
        .map(|(i, (port, proto))| ServicePort {
            name: many.then(|| format!("port-{}", i + 1)),
            port,
            protocol: Some(args.protocol.map_or(proto, |p| p.as_str().to_string())),
            // Without --target-port, traffic goes to the same port number on the pods.
            target_port: Some(target_port.clone().unwrap_or(IntOrString::Int(port))),
            ..Default::default()
        })
        .collect();
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            type_: args.type_.map(|t| t.as_str().to_string()),
            external_ips: args.external_ip.clone().map(|ip| vec![ip]),
            cluster_ip: args.cluster_ip.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The pods behind `source`: a workload's `matchLabels`, a pod's labels, a service's selector.
pub fn selector_for(kind: &str, source: &Value) -> Result<BTreeMap<String, String>> {
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            let selector = &source["spec"]["selector"];
            if selector["matchExpressions"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                bail!(
                    "couldn't convert expressions - {} to map-based selector format",
                    selector["matchExpressions"]
                );
            }
            let labels = string_map(&selector["matchLabels"]);
            if labels.is_empty() {
                bail!(
                    "the {} has no selector and cannot be exposed",
                    kind.to_lowercase()
                );
            }
            Ok(labels)
        }
        "ReplicationController" | "Service" => {
            let labels = string_map(&source["spec"]["selector"]);
            if labels.is_empty() {
                bail!(
                    "couldn't retrieve selectors via --selector flag or introspection: the {} has no selector",
                    kind.to_lowercase()
                );
            }
            Ok(labels)
        }
        "Pod" => {
            let labels = string_map(&source["metadata"]["labels"]);
            if labels.is_empty() {
                bail!("the pod has no labels and cannot be exposed");
            }
            Ok(labels)
        }
        other => bail!("cannot expose a {other}"),
    }
}

/// Ports (with protocols) the exposed object declares, in order, without duplicates.
pub fn ports_for(kind: &str, source: &Value) -> Vec<(i32, String)> {
    let (list, port_field) = match kind {
        "Pod" => (containers_ports(&source["spec"]), "containerPort"),
        "Service" => (
            source["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            "port",
        ),
        _ => (
            containers_ports(&source["spec"]["template"]["spec"]),
            "containerPort",
        ),
    };
    let mut out: Vec<(i32, String)> = Vec::new();
    for p in list {
        let Some(port) = p[port_field].as_i64().and_then(|n| i32::try_from(n).ok()) else {
            continue;
        };
        let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
        if !out.iter().any(|(existing, _)| *existing == port) {
            out.push((port, proto));
        }
    }
    out
}

fn containers_ports(pod_spec: &Value) -> Vec<Value> {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `a=b,c=d` → map.
pub fn parse_map(s: &str, flag: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("invalid {flag} entry {part:?}: expected key=value");
        };
        if k.trim().is_empty() {
            bail!("invalid {flag} entry {part:?}: empty key");
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        bail!("{flag} must not be empty");
    }
    Ok(out)
}

fn parse_int_or_string(s: &str) -> Result<IntOrString> {
    match s.parse::<i32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(IntOrString::Int(n)),
        Ok(n) => bail!("invalid --target-port {n}: must be between 1 and 65535"),
        Err(_) if !s.is_empty() => Ok(IntOrString::String(s.to_string())),
        Err(_) => bail!("--target-port must not be empty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use serde_json::json;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ExposeArgs,
    }

    fn args(flags: &[&str]) -> ExposeArgs {
        Wrapper::try_parse_from(["expose", "deploy", "web"].iter().chain(flags))
            .unwrap()
            .args
    }

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "team": "a"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "web", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]},
                    {"name": "side", "ports": [{"containerPort": 8080}]},
                ]}},
            },
        })
    }

    #[test]
    fn exposes_a_deployment_on_a_given_port() {
        let svc = build_service(
            "Deployment",
            &deployment(),
            &args(&["--port=80", "--target-port=8080"]),
        )
        .unwrap();
        let v = serde_json::to_value(&svc).unwrap();
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["metadata"]["labels"], json!({"app": "web", "team": "a"}));
        assert_eq!(v["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(
            v["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}])
        );
        assert!(v["spec"].get("type").is_none());
    }

    #[test]
    fn introspects_ports_and_names_them_when_several() {
        let svc = build_service("Deployment", &deployment(), &args(&[])).unwrap();
        let v = serde_json::to_value(&svc).unwrap();
        assert_eq!(
            v["spec"]["ports"],
            json!([
                {"name": "port-1", "port": 8080, "protocol": "TCP", "targetPort": 8080},
                {"name": "port-2", "port": 53, "protocol": "UDP", "targetPort": 53},
            ])
        );
        // --port picks up the protocol of the matching container port.
        let svc = build_service("Deployment", &deployment(), &args(&["--port=53"])).unwrap();
        assert_eq!(
            serde_json::to_value(&svc).unwrap()["spec"]["ports"][0]["protocol"],
            "UDP"
        );
    }

    #[test]
    fn flags_override_everything() {
        let a = args(&[
            "--port=443",
            "--target-port=https",
            "--protocol=SCTP",
            "--type=LoadBalancer",
            "--name=front",
            "--external-ip=192.0.2.10",
            "--cluster-ip=None",
            "--selector=tier=fe",
            "-l",
            "x=y",
        ]);
        let v =
            serde_json::to_value(build_service("Deployment", &deployment(), &a).unwrap()).unwrap();
        assert_eq!(v["metadata"]["name"], "front");
        assert_eq!(v["metadata"]["labels"], json!({"x": "y"}));
        assert_eq!(v["spec"]["selector"], json!({"tier": "fe"}));
        assert_eq!(
            v["spec"]["ports"],
            json!([{"port": 443, "protocol": "SCTP", "targetPort": "https"}])
        );
        assert_eq!(v["spec"]["type"], "LoadBalancer");
        assert_eq!(v["spec"]["externalIPs"], json!(["192.0.2.10"]));
        assert_eq!(v["spec"]["clusterIP"], "None");
    }

    #[test]
    fn selectors_from_pods_services_and_replica_sets() {
        let pod = json!({"metadata": {"name": "p", "labels": {"run": "p"}}, "spec": {"containers": [{"ports": [{"containerPort": 80}]}]}});
        let svc = build_service("Pod", &pod, &args(&[])).unwrap();
        let v = serde_json::to_value(&svc).unwrap();
        assert_eq!(v["spec"]["selector"], json!({"run": "p"}));
        assert_eq!(
            v["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
        );
        let service = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "s"}, "ports": [{"port": 81, "protocol": "TCP"}]}});
        assert_eq!(
            selector_for("Service", &service).unwrap(),
            BTreeMap::from([("app".into(), "s".into())])
        );
        assert_eq!(ports_for("Service", &service), vec![(81, "TCP".into())]);
        let rs = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}});
        assert_eq!(selector_for("ReplicaSet", &rs).unwrap().len(), 1);
    }

    #[test]
    fn refuses_what_cannot_be_exposed() {
        let no_labels = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(selector_for("Pod", &no_labels).is_err());
        let exprs = json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
        assert!(
            selector_for("Deployment", &exprs)
                .unwrap_err()
                .to_string()
                .contains("map-based selector")
        );
        assert!(selector_for("Node", &json!({})).is_err());
        assert!(selector_for("Service", &json!({"spec": {}})).is_err());
        let portless = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{}]}}}});
        let err = build_service("Deployment", &portless, &args(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "couldn't find port via --port flag or introspection");
    }

    #[test]
    fn parses_maps_and_target_ports() {
        assert_eq!(parse_map("a=1, b=2", "--labels").unwrap().len(), 2);
        assert!(parse_map("a", "--labels").is_err());
        assert!(parse_map("=1", "--labels").is_err());
        assert!(parse_map(",", "--labels").is_err());
        assert_eq!(parse_int_or_string("8080").unwrap(), IntOrString::Int(8080));
        assert_eq!(
            parse_int_or_string("http").unwrap(),
            IntOrString::String("http".into())
        );
        assert!(parse_int_or_string("0").is_err());
        assert!(parse_int_or_string("70000").is_err());
        assert!(parse_int_or_string("").is_err());
    }

    #[test]
    fn rejects_invalid_flag_values() {
        let parse = |flags: &[&str]| {
            Wrapper::try_parse_from(["expose", "deploy", "web"].iter().chain(flags)).map(|_| ())
        };
        assert!(parse(&["--port=0"]).is_err());
        assert!(parse(&["--port=70000"]).is_err());
        assert!(parse(&["--protocol=ICMP"]).is_err());
        assert!(parse(&["--type=ExternalName"]).is_err());
    }
}
