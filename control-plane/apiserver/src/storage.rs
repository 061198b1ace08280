//! Which store the API server keeps its objects in, and getting it: a redb file in the data
//! directory (the default), an etcd cluster shared with other API servers, or memory (tests).
//!
//! etcd may be down when the server starts, or go down later. The server serves anyway (as
//! kube-apiserver does): [`Connecting`] stands in for the store until etcd answers, so
//! `/readyz` says why it is unready and requests that need the store get a 503 instead of a
//! hung connection; it reconnects with back-off and then creates the system namespaces.
//! Later outages are the etcd store's own errors (also 503, see `status`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use kproxy_store::etcd::{EtcdConfig, EtcdStore};
use kproxy_store::{KeyValue, Op, Page, Revision, Store, StoreError, StoreOptions, Watch};
use serde_json::json;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::object;
use crate::registry::{self, SYSTEM_NAMESPACES};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// redb file in the data directory, durable before each answer.
    Redb,
    /// An etcd cluster (--etcd-servers); several API servers may share it.
    Etcd,
    /// Nothing on disk (tests, benchmarks of the server alone).
    Memory,
}

/// Where etcd is and how to reach it (kube-apiserver's flag names).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma separated (with --store etcd), e.g. http://127.0.0.1:2379.
    #[arg(long = "etcd-servers", value_delimiter = ',', value_name = "URL")]
    pub etcd_servers: Vec<String>,
    /// CA bundle that signed etcd's serving certificates (https URLs).
    #[arg(long = "etcd-cafile", value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd's client-certificate authentication.
    #[arg(long = "etcd-certfile", value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long = "etcd-keyfile", value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Prefix put before every key in etcd, so clusters can share one etcd (keys themselves
    /// start with /registry/, as Kubernetes' do).
    #[arg(long = "etcd-prefix", default_value = "", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// Serve current GETs and LISTs on etcd from an in-memory copy fed by etcd's watch; reads
    /// stay consistent (each waits until the copy has caught up with etcd).
    #[arg(long = "watch-cache", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_cache: bool,
    /// Recent events the watch cache keeps for watches (one etcd watch feeds them all); a
    /// watch from an older resourceVersion gets 410 Gone.
    #[arg(long = "watch-cache-events", default_value_t = crate::watch_cache::WINDOW)]
    pub watch_cache_events: usize,
    /// How often etcd is compacted to its revision of one interval earlier (a Go duration;
    /// 0 never: then etcd's own --auto-compaction must bound its history).
    #[arg(
        long = "etcd-compaction-interval",
        default_value = "5m",
        value_parser = crate::events_ttl::parse_duration
    )]
    pub etcd_compaction_interval: Duration,
}

/// Why the store flags cannot work, said before anything starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("--store etcd needs --etcd-servers (e.g. --etcd-servers http://127.0.0.1:2379)")]
    NoServers,
    #[error("--etcd-servers, --etcd-cafile, --etcd-certfile and --etcd-keyfile need --store etcd")]
    NotEtcd,
    #[error("--etcd-servers: {url:?} is not an http:// or https:// URL with a host")]
    BadUrl { url: String },
    #[error("--etcd-certfile and --etcd-keyfile go together")]
    HalfKeyPair,
    #[error("{flag} {}: no such file", path.display())]
    NoFile { flag: &'static str, path: PathBuf },
}

impl EtcdArgs {
    /// The etcd configuration for `kind` (None unless etcd), or what is wrong with the flags.
    pub fn config(&self, kind: StoreKind) -> Result<Option<EtcdConfig>, FlagError> {
        let tls_given = self.etcd_cafile.is_some()
            || self.etcd_certfile.is_some()
            || self.etcd_keyfile.is_some();
        if kind != StoreKind::Etcd {
            if !self.etcd_servers.is_empty() || tls_given {
                return Err(FlagError::NotEtcd);
            }
            return Ok(None);
        }
        let servers: Vec<String> = self
            .etcd_servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(FlagError::NoServers);
        }
        if let Some(url) = servers.iter().find(|u| !valid_url(u)) {
            return Err(FlagError::BadUrl { url: url.clone() });
        }
        if self.etcd_certfile.is_some() != self.etcd_keyfile.is_some() {
            return Err(FlagError::HalfKeyPair);
        }
        for (flag, path) in [
            ("--etcd-cafile", &self.etcd_cafile),
            ("--etcd-certfile", &self.etcd_certfile),
            ("--etcd-keyfile", &self.etcd_keyfile),
        ] {
            if let Some(p) = path.as_deref().filter(|p| !p.is_file()) {
                return Err(FlagError::NoFile {
                    flag,
                    path: p.to_path_buf(),
                });
            }
        }
        Ok(Some(EtcdConfig {
            endpoints: servers,
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            prefix: self.etcd_prefix.clone(),
        }))
    }
}

fn valid_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    !host.is_empty() && !host.starts_with(':')
}

/// Opens the store of `kind` (`etcd` is its configuration, from [`EtcdArgs::config`] of
/// `args`). etcd's connects in the background (see [`Connecting`]); this waits up to `wait`
/// for it. redb and memory get their system namespaces here, etcd once it is reached.
pub async fn open(
    kind: StoreKind,
    etcd: Option<EtcdConfig>,
    args: &EtcdArgs,
    data_dir: &Path,
    opts: StoreOptions,
    wait: Duration,
) -> Result<Arc<dyn Store>> {
    if let Some(cfg) = etcd {
        let connecting = Connecting::start(cfg);
        connecting.wait(wait).await;
        crate::compaction::spawn(connecting.clone(), args.etcd_compaction_interval);
        if args.watch_cache {
            return Ok(crate::watch_cache::WatchCache::with_window(
                connecting,
                args.watch_cache_events,
            ));
        }
        return Ok(connecting);
    }
    let store = if kind == StoreKind::Memory {
        kproxy_store::memory(opts)
    } else {
        let path = data_dir.join("store.redb");
        kproxy_store::open_redb(&path, opts).map_err(|e| Error::Store {
            what: format!("opening {}", path.display()),
            source: e.into(),
        })?
    };
    bootstrap(store.as_ref()).await?;
    Ok(store)
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

/// First and longest wait between attempts to reach etcd.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

/// The etcd store once it has been reached and the system namespaces exist; until then every
/// call fails with [`StoreError::Unavailable`] naming the last reason.
pub struct Connecting {
    endpoints: String,
    store: OnceLock<Arc<dyn Store>>,
    /// Why the last attempt failed.
    reason: Mutex<String>,
    connected: watch::Receiver<bool>,
}

impl Connecting {
    /// Starts connecting on the current runtime, retrying with back-off until it works.
    pub fn start(cfg: EtcdConfig) -> Arc<Self> {
        let (tx, rx) = watch::channel(false);
        let me = Arc::new(Self {
            endpoints: cfg.endpoints.join(","),
            store: OnceLock::new(),
            reason: Mutex::new("not connected yet".into()),
            connected: rx,
        });
        let task = Arc::clone(&me);
        tokio::spawn(async move {
            let mut delay = BACKOFF.0;
            loop {
                match task.attempt(&cfg).await {
                    Ok(store) => {
                        let _ = task.store.set(store);
                        let _ = tx.send(true);
                        tracing::info!(endpoints = %task.endpoints, "connected to etcd");
                        return;
                    }
                    Err(reason) => {
                        tracing::warn!(
                            endpoints = %task.endpoints,
                            reason = %reason,
                            retry_in = ?delay,
                            "etcd is unreachable"
                        );
                        *task.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason;
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF.1);
            }
        });
        me
    }

    async fn attempt(&self, cfg: &EtcdConfig) -> Result<Arc<dyn Store>, String> {
        let store: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(cfg.clone())
                .await
                .map_err(|e| crate::status::causes(&e))?,
        );
        bootstrap(store.as_ref())
            .await
            .map_err(|e| crate::status::causes(&e))?;
        Ok(store)
    }

    /// Waits until connected, at most `limit`.
    pub async fn wait(&self, limit: Duration) {
        let mut rx = self.connected.clone();
        let _ = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
    }

    fn inner(&self) -> Result<&Arc<dyn Store>, StoreError> {
        self.store.get().ok_or_else(|| StoreError::Unavailable {
            what: format!(
                "etcd {}: {}",
                self.endpoints,
                self.reason.lock().unwrap_or_else(PoisonError::into_inner)
            ),
            source: None,
        })
    }
}

#[async_trait::async_trait]
impl Store for Connecting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner()?.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.inner()?.list(prefix).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
        count: bool,
    ) -> Result<Page, StoreError> {
        self.inner()?
            .list_page(prefix, start, limit, revision, count)
            .await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Vec<KeyValue>, StoreError> {
        self.inner()?.txn(ops).await
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.inner()?.watch(prefix, after)
    }

    fn watch_without_prev(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.inner()?.watch_without_prev(prefix, after)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.inner()?.ready().await
    }

    fn revision(&self) -> Revision {
        self.store.get().map_or(0, |s| s.revision())
    }

    fn compacted_revision(&self) -> Revision {
        self.store.get().map_or(0, |s| s.compacted_revision())
    }

    async fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.inner()?.compact(rev).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(servers: &[&str]) -> EtcdArgs {
        EtcdArgs {
            etcd_servers: servers.iter().map(|s| (*s).to_string()).collect(),
            ..EtcdArgs::default()
        }
    }

    fn refused(a: &EtcdArgs, kind: StoreKind) -> Option<FlagError> {
        a.config(kind).err()
    }

    #[test]
    fn flags_are_checked_before_starting() {
        use StoreKind::{Etcd, Redb};
        assert_eq!(refused(&args(&[]), Etcd), Some(FlagError::NoServers));
        assert_eq!(refused(&args(&[""]), Etcd), Some(FlagError::NoServers));
        assert_eq!(
            refused(&args(&["127.0.0.1:2379"]), Etcd),
            Some(FlagError::BadUrl {
                url: "127.0.0.1:2379".into()
            })
        );
        assert_eq!(
            refused(&args(&["http://127.0.0.1:2379"]), Redb),
            Some(FlagError::NotEtcd)
        );
        assert!(args(&[]).config(Redb).unwrap().is_none());
        let cfg = args(&["http://a:2379", " https://b:2379 "])
            .config(Etcd)
            .unwrap()
            .unwrap();
        assert_eq!(cfg.endpoints, ["http://a:2379", "https://b:2379"]);
        let mut half = args(&["http://a:2379"]);
        half.etcd_certfile = Some("/etc/hostname".into());
        assert_eq!(refused(&half, Etcd), Some(FlagError::HalfKeyPair));
        let mut missing = args(&["http://a:2379"]);
        missing.etcd_cafile = Some("/nonexistent/ca.crt".into());
        assert_eq!(
            refused(&missing, Etcd),
            Some(FlagError::NoFile {
                flag: "--etcd-cafile",
                path: "/nonexistent/ca.crt".into()
            })
        );
    }

    #[test]
    fn servers_split_on_commas() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: crate::server::Options,
        }
        let cli = Cli::try_parse_from([
            "serve",
            "--store",
            "etcd",
            "--etcd-servers",
            "http://a:2379,http://b:2379",
        ])
        .unwrap();
        assert_eq!(cli.serve.store, StoreKind::Etcd);
        assert_eq!(cli.serve.etcd.etcd_servers.len(), 2);
    }

    #[tokio::test]
    async fn unreachable_etcd_is_unavailable_with_the_reason() {
        // Nothing listens on port 1 of loopback: refused at once.
        let cfg = args(&["http://127.0.0.1:1"])
            .config(StoreKind::Etcd)
            .unwrap()
            .unwrap();
        let store = Connecting::start(cfg);
        store.wait(Duration::from_millis(300)).await;
        let err = store.ready().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable { what, .. } if what.starts_with("etcd http://127.0.0.1:1: ")),
            "{err}"
        );
        let api = crate::status::ApiError::from(store.get("/registry/x").await.unwrap_err());
        assert_eq!(api.code, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
