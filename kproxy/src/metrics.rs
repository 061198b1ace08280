//! Prometheus metrics (`/metrics`): per-service and per-backend counters read from the
//! pinned per-CPU maps at scrape time, uplink packet counters, sync statistics under
//! kube-proxy's names, and `/healthz` + `/livez` on the same listener.

use std::{
    sync::{
        Arc, LazyLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Map operations applied since start.
pub static SYNC_OPS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Manifest or sync errors (the running state was kept).
pub static MANIFEST_ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// kube-proxy's `kubeproxy_sync_proxy_rules_duration_seconds`: one observation per sync
/// (in cluster mode, per Service re-planned and written; standalone, per reload).
pub static SYNC_DURATION: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 18)));
/// kube-proxy's `kubeproxy_network_programming_duration_seconds`: from an EndpointSlice's
/// `endpoints.kubernetes.io/last-change-trigger-time` to the map write that carries it.
pub static NETWORK_PROGRAMMING: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.001, 2.0, 18)));
/// Host-gw node routes added, replaced or removed (`kproxy node`).
pub static NODE_ROUTE_CHANGES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// kproxy's host-gw node routes after the last reconcile.
pub static NODE_ROUTES: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// kube-proxy's `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
pub static LAST_SYNC: LazyLock<Gauge<f64, AtomicU64>> = LazyLock::new(Gauge::default);

/// Time since the Unix epoch.
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Records one successful sync that took `took`.
pub fn observe_sync(took: Duration) {
    SYNC_DURATION.observe(took.as_secs_f64());
    let now = unix_now();
    LAST_SYNC.set(now.as_secs_f64());
    HEALTH.last_updated_ms.store(
        u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// What `/healthz` reports: healthy once the first full sync is in the maps.
pub struct Health {
    synced: AtomicBool,
    /// Unix milliseconds of the last successful sync.
    last_updated_ms: AtomicU64,
}

pub static HEALTH: Health = Health {
    synced: AtomicBool::new(false),
    last_updated_ms: AtomicU64::new(0),
};

impl Health {
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }
}

fn rfc3339_ms(ms: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// kube-proxy's `/healthz` shape: 200 once synced, 503 before.
async fn healthz() -> impl IntoResponse {
    let synced = HEALTH.synced.load(Ordering::Relaxed);
    let now = u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX);
    let body = serde_json::json!({
        "lastUpdated": rfc3339_ms(HEALTH.last_updated_ms.load(Ordering::Relaxed)),
        "currentTime": rfc3339_ms(now),
        "nodeEligible": true,
    });
    let code = if synced {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Built by hand: axum's `Json` needs a feature this workspace leaves off.
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// The process answers: alive (kube-proxy's `/livez` does not depend on the API server).
async fn livez() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

use crate::{
    names::{Names, service_table},
    pinned::PinnedLb,
};

type Labels = Vec<(String, String)>;

/// What a scrape reads: the pinned maps (opened once) and the current service names
/// (kept up to date by the reconciler).
#[derive(Clone)]
struct Ctx {
    lb: Arc<PinnedLb>,
    names: Arc<RwLock<Names>>,
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    lb: PinnedLb,
    names: Arc<RwLock<Names>>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(Ctx {
            lb: Arc::new(lb),
            names,
        });
    axum::serve(listener, app).await
}

async fn metrics(State(ctx): State<Ctx>) -> impl IntoResponse {
    let body = render(&ctx);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

fn render(ctx: &Ctx) -> String {
    let mut root = Registry::default();
    root.register(
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds (one Service in cluster mode)",
        SYNC_DURATION.clone(),
    );
    root.register(
        "kubeproxy_network_programming_duration_seconds",
        "In-cluster network programming latency in seconds",
        NETWORK_PROGRAMMING.clone(),
    );
    root.register(
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "The last time proxy rules were successfully synced",
        LAST_SYNC.clone(),
    );
    let reg = root.sub_registry_with_prefix("kproxy");
    reg.register("sync_ops", "eBPF map operations applied", SYNC_OPS.clone());
    reg.register(
        "node_route_changes",
        "Host-gw routes to other nodes' pod CIDRs added, replaced or removed",
        NODE_ROUTE_CHANGES.clone(),
    );
    reg.register(
        "node_routes",
        "Host-gw routes to other nodes' pod CIDRs in the main table",
        NODE_ROUTES.clone(),
    );
    reg.register(
        "ct_entries",
        "Live connection tracking entries (both directions) after the last collection",
        crate::ct::LIVE.clone(),
    );
    reg.register(
        "ct_gc_deleted",
        "Expired connection tracking entries deleted by garbage collection",
        crate::ct::GC_DELETED.clone(),
    );
    reg.register(
        "manifest_errors",
        "Rejected manifests or states (the running state was kept)",
        MANIFEST_ERRORS.clone(),
    );
    let svc_packets = Family::<Labels, Counter>::default();
    let svc_bytes = Family::<Labels, Counter>::default();
    let svc_flows = Family::<Labels, Counter>::default();
    let be_flows = Family::<Labels, Counter>::default();
    let be_packets = Family::<Labels, Counter>::default();
    let frontends = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    let if_packets = Family::<Labels, Counter>::default();

    let rows = {
        let names = ctx
            .names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        service_table(&ctx.lb, &names)
    };
    if let Ok(rows) = rows {
        frontends.set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
        for row in &rows {
            let labels = vec![
                ("frontend".to_string(), row.frontend.clone()),
                ("service".to_string(), row.service.clone()),
                ("kind".to_string(), row.kind.clone()),
            ];
            svc_packets
                .get_or_create(&labels)
                .inc_by(row.counter.packets);
            svc_bytes.get_or_create(&labels).inc_by(row.counter.bytes);
            svc_flows
                .get_or_create(&labels)
                .inc_by(row.counter.new_flows);
            for be in &row.backends {
                let mut l = labels.clone();
                l.push(("backend".to_string(), be.backend.clone()));
                be_flows.get_or_create(&l).inc_by(be.counter.new_flows);
                be_packets.get_or_create(&l).inc_by(be.counter.packets);
            }
        }
    }
    if let Ok(stats) = ctx.lb.ifstats() {
        for s in stats {
            if_packets
                .get_or_create(&vec![
                    ("hook".to_string(), s.hook.to_string()),
                    ("class".to_string(), s.class.to_string()),
                ])
                .inc_by(s.packets);
        }
    }
    reg.register("frontends", "Service frontends in the datapath", frontends);
    reg.register(
        "service_packets",
        "Packets load-balanced per frontend (per-packet paths)",
        svc_packets,
    );
    reg.register(
        "service_bytes",
        "Bytes load-balanced per frontend (per-packet paths)",
        svc_bytes,
    );
    reg.register(
        "service_new_flows",
        "New connections/flows per frontend",
        svc_flows,
    );
    reg.register(
        "backend_new_flows",
        "New connections/flows per backend",
        be_flows,
    );
    reg.register(
        "backend_packets",
        "Packets per backend (per-packet paths)",
        be_packets,
    );
    if let Ok(rows) = ctx.lb.drops() {
        crate::drops::register_metrics(reg, &rows);
    }
    reg.register(
        "uplink_packets",
        "Packets seen on the uplink per hook and class",
        if_packets,
    );
    let mut out = String::new();
    if encode(&mut out, &root).is_err() {
        return "# encoding failed\n".to_string();
    }
    out
}
