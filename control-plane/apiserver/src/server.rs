//! Starting the API server: PKI, tokens, store, bootstrap objects, kubeconfig, then serving
//! HTTP/1.1 and HTTP/2 over rustls through the accept loop shared with the kubelet
//! (kproxy-node-tls: handshake and idle timeouts, connection bound, accept back-off).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kproxy_store::{Op, Store, StoreError, StoreOptions};
use serde_json::json;

use crate::alloc::Ranges;
use crate::auth::TokenStore;
use crate::context::Api;
use crate::error::{Error, Result};
use crate::handler::router_with;
use crate::kubelet::KubeletClient;
use crate::object;
use crate::registry::{self, SYSTEM_NAMESPACES};

#[derive(Clone, Debug, clap::ValueEnum)]
pub enum StoreKind {
    /// redb file in the data directory, durable before each answer.
    Redb,
    /// Nothing on disk (tests, benchmarks of the server alone).
    Memory,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// State: store, CA and serving certificate, tokens.
    #[arg(long, default_value = "/var/lib/kproxy/apiserver")]
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub bind: SocketAddr,
    #[arg(long, value_enum, default_value = "redb")]
    pub store: StoreKind,
    /// Kubeconfig to merge the `kproxy` context into (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Do not touch any kubeconfig.
    #[arg(long)]
    pub no_kubeconfig: bool,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: ipnet::Ipv4Net,
    /// NodePort range, FIRST-LAST.
    #[arg(long, default_value = "30000-32767", value_parser = parse_range)]
    pub node_port_range: (u16, u16),
    /// Watch history kept in memory (events); older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    pub history: usize,
    /// Open connections at most; more wait in the listen backlog until one closes.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a connection may stay with no request in flight (idle keep-alive, or a request
    /// head not yet complete) before it is closed.
    #[arg(long, default_value_t = 20)]
    pub idle_timeout_seconds: u64,
    #[command(flatten)]
    pub limits: crate::inflight::Limits,
    #[command(flatten)]
    pub events: crate::events_ttl::EventTtl,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected FIRST-LAST")?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|e| format!("{a}: {e}"))?,
        b.trim().parse().map_err(|e| format!("{b}: {e}"))?,
    );
    if a == 0 || a > b {
        return Err(format!("{s}: empty or invalid range"));
    }
    Ok((a, b))
}

/// Creates the system namespaces (once; they are never deleted).
pub(crate) async fn bootstrap(store: &dyn Store) -> Result<()> {
    let res = registry::by_kind("Namespace").expect("registered");
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": object::new_uid(),
                "creationTimestamp": object::now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        match store
            .txn(vec![Op::Create {
                key: res.key(None, ns),
                value: object::to_stored(&obj),
            }])
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => {
                return Err(Error::Store {
                    what: "creating system namespaces".into(),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

/// Runs until `shutdown` resolves; logs "API server ready" once the socket accepts connections.
pub async fn run(opts: Options, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    // Every connection is a file descriptor: the bound on connections must fit under this.
    let open_files = kproxy_node_tls::raise_open_files_limit();
    if let Some(n) = open_files
        && n < u64::try_from(opts.max_connections).unwrap_or(u64::MAX) + 256
    {
        tracing::warn!(
            open_files = n,
            max_connections = opts.max_connections,
            "the open-file limit is below --max-connections: accept will fail (and back off) first"
        );
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(Error::io("creating", &opts.data_dir))?;
    let pki = crate::pki::load_or_create(&opts.data_dir.join("pki"), &[opts.bind.ip()])?;
    let kubelet = KubeletClient::new(&pki.kubelet_client)?;
    let tokens = TokenStore::open(&opts.data_dir)?;
    let sopts = StoreOptions {
        history: opts.history,
    };
    let store: Arc<dyn Store> = match opts.store {
        StoreKind::Redb => {
            let path = opts.data_dir.join("store.redb");
            kproxy_store::open_redb(&path, sopts).map_err(|e| Error::Store {
                what: format!("opening {}", path.display()),
                source: e.into(),
            })?
        }
        StoreKind::Memory => kproxy_store::memory(sopts),
    };
    bootstrap(store.as_ref()).await?;

    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.bind,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: opts.bind,
        source,
    })?;
    let server_url = format!("https://{local}");
    if !opts.no_kubeconfig
        && let Some(path) = opts
            .kubeconfig
            .clone()
            .or_else(crate::kubeconfig::default_path)
    {
        crate::kubeconfig::write(&path, &server_url, &pki.ca_pem, &tokens.admin_token())?;
        tracing::info!(path = %path.display(), "kubeconfig context `kproxy` is current");
    }
    let ranges = Ranges {
        service_cidr: opts.service_cidr,
        node_ports: opts.node_port_range,
    };
    let api = Api::new(store, tokens, ranges, kubelet, local.to_string());
    crate::events_ttl::spawn(api.store.clone(), &opts.events);
    let app = router_with(api.clone(), &opts.limits);
    let endpoint = kproxy_node_tls::Endpoint {
        name: "API server",
        http2: true,
        handshake_timeout: kproxy_node_tls::HANDSHAKE_TIMEOUT,
        idle_timeout: Duration::from_secs(opts.idle_timeout_seconds),
        max_connections: opts.max_connections,
    };
    tracing::info!(url = %server_url, revision = api.store.revision(), "API server ready");
    tokio::select! {
        () = kproxy_node_tls::serve(listener, pki.server_config.clone(), app, &endpoint) => {}
        () = shutdown => {}
    }
    tracing::info!("API server stopped");
    Ok(())
}
