//! `kctl port-forward [pod/]NAME|svc/NAME|deploy/NAME [LOCAL:]REMOTE...`: local ports
//! forwarded to a pod's ports through pods/portforward (kube-rs' WebSocket channel protocol,
//! one WebSocket per accepted connection), until interrupted.
//!
//! As kubectl: a service or workload is resolved to one of its running pods; a service's
//! ports are its `port`s, forwarded to the pod's `targetPort`s (by number or name); a pod
//! that is not running is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Ctx;

#[derive(clap::Args, Debug, Clone)]
pub struct PortForwardArgs {
    /// POD, pod/POD, svc/NAME (service), deploy/NAME or rs/NAME.
    pub target: String,
    /// [LOCAL:]REMOTE: a local port (empty for a random one) and the remote port (a number
    /// or a container port's name; for a service, one of its ports).
    #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
    pub ports: Vec<String>,
    /// Addresses to listen on (comma-separated); `localhost` means 127.0.0.1 and ::1.
    #[arg(long, value_delimiter = ',', default_value = "localhost")]
    pub address: Vec<String>,
}

/// One forwarded port: local (0: any) → remote, the remote as given (number or name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub local: Option<u16>,
    pub remote: String,
}

/// `[LOCAL:]REMOTE` as kubectl reads it: `8080` is 8080:8080, `:80` a random local port.
pub fn parse_port(spec: &str) -> Result<PortSpec> {
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (Some(l), r),
        None => (None, spec),
    };
    if remote.is_empty() {
        bail!("remote port cannot be empty in {spec:?}");
    }
    let local = match local {
        None => remote.parse::<u16>().ok(),
        Some("") => Some(0),
        Some(l) => Some(
            l.parse::<u16>()
                .with_context(|| format!("invalid local port {l:?} in {spec:?}"))?,
        ),
    };
    Ok(PortSpec {
        local,
        remote: remote.to_string(),
    })
}

pub async fn run(ctx: &mut Ctx, args: PortForwardArgs) -> Result<()> {
    let specs = args
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let (pod, service) = resolve(ctx, &pods, &args.target).await?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase != "Running" {
        bail!("unable to forward port because pod is not running. Current status={phase}");
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let mut pairs = Vec::new();
    for spec in &specs {
        let remote = match &service {
            Some(svc) => service_target_port(svc, &pod, &spec.remote)?,
            None => pod_port(&pod, &spec.remote)?,
        };
        // `svc/x 80` listens on the service port, not the pod's.
        let local = spec
            .local
            .unwrap_or_else(|| spec.remote.parse().unwrap_or(0));
        pairs.push((local, remote));
    }
    let addresses = listen_addresses(&args.address)?;
    let mut tasks = tokio::task::JoinSet::new();
    for (local, remote) in pairs {
        let mut bound = local;
        for ip in &addresses {
            let listener = TcpListener::bind(SocketAddr::new(*ip, bound))
                .await
                .with_context(|| format!("unable to listen on port {bound}"))?;
            bound = listener.local_addr()?.port();
            println!("Forwarding from {} -> {remote}", listener.local_addr()?);
            tasks.spawn(accept_loop(
                listener,
                pods.clone(),
                pod_name.clone(),
                remote,
            ));
        }
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(r) = tasks.join_next() => r?,
    }
}

fn listen_addresses(given: &[String]) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for a in given {
        if a == "localhost" {
            out.extend([
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        } else {
            out.push(
                a.parse()
                    .with_context(|| format!("{a:?} is not an IP address"))?,
            );
        }
    }
    // ::1 may be missing (no IPv6): kubectl then listens on the IPv4 address alone.
    if given.iter().any(|a| a == "localhost")
        && std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err()
    {
        out.retain(|ip| *ip != IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    Ok(out)
}

async fn accept_loop(
    listener: TcpListener,
    pods: Api<Pod>,
    pod: String,
    remote: u16,
) -> Result<()> {
    let local = listener.local_addr()?.port();
    loop {
        let (conn, _) = listener.accept().await?;
        println!("Handling connection for {local}");
        let pods = pods.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(conn, &pods, &pod, remote).await {
                eprintln!("an error occurred forwarding {local} -> {remote}: {e:#}");
            }
        });
    }
}

/// One local connection through its own port-forward WebSocket.
async fn forward(mut conn: TcpStream, pods: &Api<Pod>, pod: &str, remote: u16) -> Result<()> {
    let mut pf = pods.portforward(pod, &[remote]).await?;
    let mut upstream = pf
        .take_stream(remote)
        .context("the port-forward session has no stream for the port")?;
    let error = pf.take_error(remote);
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut upstream, 256 * 1024, 256 * 1024);
    // The pod's side failed (nothing listening, ...): the kubelet says why on the error
    // channel, then closes.
    let failed = async {
        match error {
            Some(e) => e.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        copied = copy => {
            copied.context("copying between the local connection and the pod")?;
        }
        Some(msg) = failed => bail!("{msg}"),
    }
    drop(upstream);
    // Both directions ended cleanly, and the API server then closes the WebSocket: kube-rs may
    // still try to send its own close on it ("Sending after closing is not allowed"), which
    // says nothing about this connection.
    let _ = pf.join().await;
    Ok(())
}

/// The pod a target means, and the service when it is one.
async fn resolve(ctx: &mut Ctx, pods: &Api<Pod>, target: &str) -> Result<(Pod, Option<Service>)> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok((pods.get(target).await?, None));
    };
    let info = ctx.resolve(kind).await?;
    let (selector, service) = match info.kind.as_str() {
        "Pod" => return Ok((pods.get(name).await?, None)),
        "Service" => {
            let svc: Service = Api::namespaced(ctx.client.clone(), &ctx.namespace)
                .get(name)
                .await?;
            let sel = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            if sel.is_empty() {
                bail!("invalid service '{name}': Service is defined without a selector");
            }
            (sel.into_iter().collect::<Vec<_>>(), Some(svc))
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            let owner = ctx.api(&info, Some(&ctx.namespace)).get(name).await?;
            let sel = owner.data["spec"]["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            (sel, None)
        }
        _ => bail!("cannot attach to {}: not implemented", info.kind_ref()),
    };
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut list = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    // As kubectl: a running (and ready) pod first, then by name.
    list.sort_by_key(|p| {
        let status = p.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        (!running, !ready, p.metadata.name.clone())
    });
    let pod = list
        .into_iter()
        .next()
        .with_context(|| format!("no pods found for {target}"))?;
    Ok((pod, service))
}

/// A pod's port given as a number or as a container port's name.
pub fn pod_port(pod: &Pod, remote: &str) -> Result<u16> {
    if let Ok(n) = remote.parse::<u16>() {
        return Ok(n);
    }
    container_port_named(pod, remote).with_context(|| {
        format!(
            "Pod '{}' does not have a named port '{remote}'",
            pod.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

fn container_port_named(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// The pod port behind a service port (kubectl's translation of `svc/NAME PORT`).
pub fn service_target_port(svc: &Service, pod: &Pod, remote: &str) -> Result<u16> {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let port = match remote.parse::<i32>() {
        Ok(n) => ports.iter().find(|p| p.port == n),
        Err(_) => ports.iter().find(|p| p.name.as_deref() == Some(remote)),
    }
    .with_context(|| format!("Service {name} does not have a service port {remote}"))?;
    match &port.target_port {
        None | Some(IntOrString::Int(0)) => u16::try_from(port.port).context("service port"),
        Some(IntOrString::Int(n)) => u16::try_from(*n).context("target port"),
        Some(IntOrString::String(named)) => container_port_named(pod, named).with_context(|| {
            format!(
                "Pod '{}' does not have a named port '{named}'",
                pod.metadata.name.as_deref().unwrap_or_default()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, ServicePort, ServiceSpec};

    use super::*;

    #[test]
    fn port_specs() {
        let p = |s: &str| parse_port(s).unwrap();
        assert_eq!(
            p("8088:80"),
            PortSpec {
                local: Some(8088),
                remote: "80".into()
            }
        );
        assert_eq!(
            p("80"),
            PortSpec {
                local: Some(80),
                remote: "80".into()
            }
        );
        assert_eq!(
            p(":80"),
            PortSpec {
                local: Some(0),
                remote: "80".into()
            }
        );
        assert_eq!(
            p("http"),
            PortSpec {
                local: None,
                remote: "http".into()
            }
        );
        assert!(parse_port("8088:").is_err());
        assert!(parse_port("x:80").is_err());
    }

    fn pod() -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("web-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_service_and_named_ports() {
        let svc = Service {
            metadata: kube::api::ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![
                    ServicePort {
                        port: 80,
                        target_port: Some(IntOrString::String("http".into())),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("metrics".into()),
                        port: 9090,
                        target_port: Some(IntOrString::Int(9100)),
                        ..Default::default()
                    },
                    ServicePort {
                        port: 7000,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pod();
        assert_eq!(service_target_port(&svc, &pod, "80").unwrap(), 8080);
        assert_eq!(service_target_port(&svc, &pod, "9090").unwrap(), 9100);
        assert_eq!(service_target_port(&svc, &pod, "metrics").unwrap(), 9100);
        assert_eq!(service_target_port(&svc, &pod, "7000").unwrap(), 7000);
        assert_eq!(
            service_target_port(&svc, &pod, "81")
                .unwrap_err()
                .to_string(),
            "Service web does not have a service port 81"
        );
        assert_eq!(pod_port(&pod, "http").unwrap(), 8080);
        assert_eq!(pod_port(&pod, "443").unwrap(), 443);
        assert_eq!(
            format!("{:#}", pod_port(&pod, "grpc").unwrap_err()),
            "Pod 'web-1' does not have a named port 'grpc'"
        );
    }
}
