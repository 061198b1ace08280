//! Starting the API server: PKI, tokens, store, bootstrap objects, kubeconfig, then serving
//! HTTP/1.1 and HTTP/2 over rustls through the accept loop shared with the kubelet
//! (kproxy-node-tls: handshake and idle timeouts, connection bound, accept back-off).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kproxy_store::{Store, StoreOptions};

use crate::alloc::Ranges;
use crate::auth::TokenStore;
use crate::context::Api;
use crate::error::{Error, Result};
use crate::handler::router_with;
use crate::kubelet::KubeletClient;

pub use crate::storage::StoreKind;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// State: store, CA and serving certificate, tokens.
    #[arg(long, default_value = "/var/lib/kproxy/apiserver")]
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on; repeatable (e.g. loopback and the address worker nodes
    /// reach). The first one goes into the written kubeconfig. Each address gets its own
    /// `--max-connections`.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub bind: Vec<SocketAddr>,
    /// More IP addresses the serving certificate names (besides the `--bind` addresses,
    /// 127.0.0.1 and 10.96.0.1), e.g. the host's address with `--bind 0.0.0.0:6443`.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<std::net::IpAddr>,
    #[arg(long, value_enum, default_value = "redb")]
    pub store: StoreKind,
    #[command(flatten)]
    pub etcd: crate::storage::EtcdArgs,
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
    let etcd = opts.etcd.config(opts.store).map_err(|e| Error::Store {
        what: "checking the store flags".into(),
        source: e.into(),
    })?;
    std::fs::create_dir_all(&opts.data_dir).map_err(Error::io("creating", &opts.data_dir))?;
    let sans: Vec<std::net::IpAddr> = opts
        .bind
        .iter()
        .map(SocketAddr::ip)
        .chain(opts.tls_sans.iter().copied())
        .collect();
    let pki = crate::pki::load_or_create(&opts.data_dir.join("pki"), &sans)?;
    let kubelet = KubeletClient::new(&pki.kubelet_client)?;
    let tokens = TokenStore::open(&opts.data_dir)?;
    let sopts = StoreOptions {
        history: opts.history,
    };
    // etcd: serve even while it is unreachable (/readyz says why), after a short wait for it.
    let store: Arc<dyn Store> = crate::storage::open(
        opts.store,
        etcd,
        &opts.etcd,
        &opts.data_dir,
        sopts,
        Duration::from_secs(5),
    )
    .await?;

    let mut listeners = Vec::with_capacity(opts.bind.len());
    for &addr in &opts.bind {
        let listener =
            kproxy_node_tls::listen(addr).map_err(|source| Error::Bind { addr, source })?;
        listeners.push(listener);
    }
    let first = opts.bind.first().copied().ok_or(Error::Missing {
        what: "a --bind address",
    })?;
    let local = listeners[0].local_addr().map_err(|source| Error::Bind {
        addr: first,
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
        _ = futures::future::join_all(listeners.into_iter().map(|l| {
            kproxy_node_tls::serve(l, pki.server_config.clone(), app.clone(), &endpoint)
        })) => {}
        () = shutdown => {}
    }
    tracing::info!("API server stopped");
    Ok(())
}
