//! Prometheus metrics (`/metrics`): per-service and per-backend counters read from the
//! pinned per-CPU maps at scrape time, uplink packet counters, and sync statistics.

use std::sync::{Arc, LazyLock, RwLock};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Map operations applied since start.
pub static SYNC_OPS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Manifest or sync errors (the running state was kept).
pub static MANIFEST_ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);

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
    let mut reg = Registry::with_prefix("kproxy");
    reg.register("sync_ops", "eBPF map operations applied", SYNC_OPS.clone());
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
    reg.register(
        "uplink_packets",
        "Packets seen on the uplink per hook and class",
        if_packets,
    );
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        return "# encoding failed\n".to_string();
    }
    out
}
