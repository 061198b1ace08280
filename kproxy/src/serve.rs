//! The node endpoint of `kproxy node`: `GET /lb`, the service table of this node as JSON
//! (frontends, backends with their state, counters, connection tracking entries), for
//! `kctl lb` through the API server's `nodes/NAME:PORT/proxy/lb`.
//!
//! Served over mutual TLS exactly like the kubelet's endpoint (kproxy-node-tls): only a client
//! certificate signed by the cluster CA (the API server's kubelet-client certificate) gets
//! an answer, so the table is reached with the kubeconfig from any machine, never by reading
//! another host's bpffs.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use kproxy::{
    ct::{CtTable, monotonic_s},
    drops::DropStat,
    names::{Names, ServiceRow, service_table},
    pinned::PinnedLb,
};
use kproxy_common::svc_flags;
use serde::Serialize;

/// Not a port of any Kubernetes component: 10250 and 10255 are the kubelet's, 10249 and
/// 10256 kube-proxy's plain-HTTP metrics and health checks (which kproxy may serve one day),
/// 10257 and 10259 the controller manager's and scheduler's.
pub const DEFAULT_PORT: u16 = 10262;

/// Bind retries (the address taken by another process): from 1 s, doubling to 30 s.
const BIND_RETRY_MIN: Duration = Duration::from_secs(1);
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct ServeOpts {
    /// Serve the node endpoint (`GET /lb`, the service table; mutual TLS, for the API
    /// server's `nodes/NODE:PORT/proxy`) on this address.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    serve_addr: SocketAddr,
    /// Do not serve the node endpoint.
    #[arg(long)]
    no_serve: bool,
    /// Where the endpoint's self-signed serving certificate is kept (`kproxy.crt`,
    /// `kproxy.key`; created on first start).
    #[arg(long, default_value = "/var/lib/kproxy/proxy")]
    serve_cert_dir: PathBuf,
    /// CA (PEM) that signs the API server's client certificate (default: the kubeconfig's
    /// cluster CA, as for the kubelet).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
}

/// What `/lb` reads.
#[derive(Clone)]
struct Ctx {
    lb: Arc<PinnedLb>,
    ct: Arc<CtTable>,
    names: Arc<RwLock<Names>>,
    node: Arc<str>,
}

/// Starts the node endpoint unless `--no-serve`. Configuration errors (no CA, unusable
/// certificate, maps not pinned) fail the start; an address in use does not: the datapath
/// does not depend on this endpoint, so binding is retried in the background and logged.
pub fn spawn(
    opts: &ServeOpts,
    kubeconfig: &Path,
    node_name: &str,
    bpffs: &Path,
    names: Arc<RwLock<Names>>,
) -> Result<()> {
    if opts.no_serve {
        tracing::info!("node endpoint off (--no-serve)");
        return Ok(());
    }
    let ca = if let Some(p) = &opts.client_ca_file {
        std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
    } else {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
        kproxy_node_tls::kubeconfig_ca(&kc)
            .with_context(|| format!("the client CA from {}", kubeconfig.display()))?
    };
    let tls = kproxy_node_tls::server_config(
        &kproxy_node_tls::Serving {
            dir: &opts.serve_cert_dir,
            component: "kproxy",
            node_name,
        },
        &ca,
    )
    .context("setting up TLS for the node endpoint")?;
    let lb = PinnedLb::open(bpffs).context("opening the pinned maps for the node endpoint")?;
    let ct = CtTable::open(bpffs).context("opening the pinned CT map for the node endpoint")?;
    let app = router(Ctx {
        lb: Arc::new(lb),
        ct: Arc::new(ct),
        names,
        node: node_name.into(),
    });
    let addr = opts.serve_addr;
    tokio::spawn(async move {
        let mut retry = BIND_RETRY_MIN;
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let endpoint = kproxy_node_tls::Endpoint::node("kproxy node endpoint");
                    kproxy_node_tls::serve(listener, tls, app, &endpoint).await;
                    return;
                }
                Err(err) => {
                    tracing::error!(%addr, %err, ?retry, "cannot bind the node endpoint (`kctl lb` will not reach this node); retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(BIND_RETRY_MAX);
                }
            }
        }
    });
    Ok(())
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/lb", get(lb))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .with_state(ctx)
}

async fn lb(State(ctx): State<Ctx>) -> Response {
    // Walking the maps is system calls: off the async workers.
    let result = tokio::task::spawn_blocking(move || -> Result<LbTable> {
        let names = ctx
            .names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let rows = service_table(&ctx.lb, &names)?;
        // A walk of the whole CT table: system calls per entry, only on request.
        let ct = ctx
            .ct
            .live_per_revnat(monotonic_s())
            .context("reading the connection tracking table")?;
        let mut table = LbTable::new(&ctx.node, rows, &ct);
        table.drops = ctx.lb.drops()?;
        Ok(table)
    })
    .await;
    match result.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(table) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&table).unwrap_or_default(),
        )
            .into_response(),
        Err(err) => {
            let err = format!("{err:#}");
            tracing::warn!(%err, "cannot read the service table");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the service table: {err}\n"),
            )
                .into_response()
        }
    }
}

/// `GET /lb`: the node's service table.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbTable {
    pub kind: &'static str,
    pub node: String,
    pub frontends: Vec<LbFrontend>,
    /// The datapath's drop and error counters, one per reason (`kctl lb --drops`).
    pub drops: Vec<DropStat>,
}

/// The Service port a frontend belongs to (empty until kproxy has named it).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// The port's name; empty for an unnamed port.
    pub port: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbFrontend {
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub service: ServiceRef,
    /// ClusterIP, NodePort, LoadBalancerIP, ExternalIP.
    #[serde(rename = "type")]
    pub type_: String,
    /// `external` (reachable through the uplink), `nodePort`, `sessionAffinity`.
    pub flags: Vec<&'static str>,
    pub revnat_id: u16,
    /// Backends taking new flows.
    pub active_backends: u16,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Live connection tracking entries (both directions; socket-LB flows need none).
    pub ct_entries: u64,
    pub backends: Vec<LbBackend>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbBackend {
    pub address: Ipv4Addr,
    pub port: u16,
    /// `active` or `terminating`.
    pub state: &'static str,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// `namespace/name:port` (or `namespace/name`) as the names file has it.
fn service_ref(label: &str) -> ServiceRef {
    let Some((namespace, rest)) = label.split_once('/') else {
        return ServiceRef::default();
    };
    // Object names cannot contain ':', so the first one starts the port name.
    let (name, port) = rest.split_once(':').unwrap_or((rest, ""));
    ServiceRef {
        namespace: namespace.into(),
        name: name.into(),
        port: port.into(),
    }
}

fn flag_names(flags: u32) -> Vec<&'static str> {
    [
        (svc_flags::EXTERNAL, "external"),
        (svc_flags::NODEPORT, "nodePort"),
        (svc_flags::AFFINITY, "sessionAffinity"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

impl LbTable {
    fn new(node: &str, rows: Vec<ServiceRow>, ct: &BTreeMap<u16, u64>) -> Self {
        let frontends = rows
            .into_iter()
            .map(|r| LbFrontend {
                address: r.address,
                port: r.port,
                protocol: r.protocol,
                service: service_ref(&r.service),
                type_: r.kind,
                flags: flag_names(r.flags),
                revnat_id: r.revnat_id,
                active_backends: r.active_backends,
                new_flows: r.counter.new_flows,
                packets: r.counter.packets,
                bytes: r.counter.bytes,
                ct_entries: ct.get(&r.revnat_id).copied().unwrap_or(0),
                backends: r
                    .backends
                    .into_iter()
                    .map(|b| LbBackend {
                        address: b.address,
                        port: b.port,
                        state: b.state,
                        new_flows: b.counter.new_flows,
                        packets: b.counter.packets,
                        bytes: b.counter.bytes,
                    })
                    .collect(),
            })
            .collect();
        Self {
            kind: "ServiceTable",
            node: node.to_string(),
            frontends,
            drops: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy::names::{BackendRow, CounterRow};

    #[test]
    fn service_labels_split_into_namespace_name_and_port() {
        let r = service_ref("default/web:http");
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str(), r.port.as_str()),
            ("default", "web", "http")
        );
        let r = service_ref("kube-system/dns");
        assert_eq!((r.name.as_str(), r.port.as_str()), ("dns", ""));
        // Not named yet (names are published after the sync that made the frontend).
        assert_eq!(service_ref(""), ServiceRef::default());
    }

    #[test]
    fn rows_become_the_table_with_ct_counts() {
        let counter = |n| CounterRow {
            packets: n * 10,
            bytes: n * 100,
            new_flows: n,
        };
        let row = ServiceRow {
            revnat_id: 4,
            frontend: "172.30.0.5:80/TCP".into(),
            address: Ipv4Addr::new(172, 30, 0, 5),
            port: 80,
            protocol: "TCP".into(),
            flags: svc_flags::EXTERNAL | svc_flags::AFFINITY,
            kind: "LoadBalancerIP".into(),
            service: "shop/web:http".into(),
            active_backends: 1,
            counter: counter(3),
            backends: vec![
                BackendRow {
                    id: 1,
                    backend: "10.0.0.1:8080".into(),
                    address: Ipv4Addr::new(10, 0, 0, 1),
                    port: 8080,
                    state: "active",
                    counter: counter(2),
                },
                BackendRow {
                    id: 2,
                    backend: "10.0.0.2:8080".into(),
                    address: Ipv4Addr::new(10, 0, 0, 2),
                    port: 8080,
                    state: "terminating",
                    counter: counter(1),
                },
            ],
        };
        let t = LbTable::new("n1", vec![row.clone()], &BTreeMap::from([(4, 6), (9, 1)]));
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["kind"], "ServiceTable");
        assert_eq!(v["node"], "n1");
        let fe = &v["frontends"][0];
        assert_eq!(fe["address"], "172.30.0.5");
        assert_eq!(fe["port"], 80);
        assert_eq!(fe["type"], "LoadBalancerIP");
        assert_eq!(
            fe["flags"],
            serde_json::json!(["external", "sessionAffinity"])
        );
        assert_eq!(
            fe["service"],
            serde_json::json!({"namespace": "shop", "name": "web", "port": "http"})
        );
        assert_eq!(
            (
                &fe["newFlows"],
                &fe["packets"],
                &fe["bytes"],
                &fe["ctEntries"]
            ),
            (
                &serde_json::json!(3),
                &serde_json::json!(30),
                &serde_json::json!(300),
                &serde_json::json!(6)
            )
        );
        assert_eq!(fe["activeBackends"], 1);
        assert_eq!(fe["backends"][1]["state"], "terminating");
        assert_eq!(fe["backends"][1]["address"], "10.0.0.2");
        assert_eq!(fe["backends"][0]["newFlows"], 2);
        // The drop counters as `kctl lb --drops` decodes them.
        let mut t = LbTable::new("n1", vec![], &BTreeMap::new());
        t.drops = vec![DropStat {
            reason: "no-backend",
            packets: 3,
            bytes: 180,
        }];
        assert_eq!(
            serde_json::to_value(&t).unwrap()["drops"],
            serde_json::json!([{"reason": "no-backend", "packets": 3, "bytes": 180}])
        );
        // A frontend without tracked flows reports 0, not a missing field.
        let t = LbTable::new("n1", vec![row], &BTreeMap::from([(9, 1)]));
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["frontends"][0]["ctEntries"], 0);
    }
}
