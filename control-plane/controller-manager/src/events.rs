//! core/v1 Events as kube-controller-manager and kube-scheduler write them (`ScalingReplicaSet`,
//! `SuccessfulCreate`, `FailedScheduling`, ...), so `kubectl describe` tells what happened.
//! Sent in the background: an event that cannot be written never holds up a reconcile.
//! Repeats are aggregated as client-go's recorder does (one object, a growing `count`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kproxy_apimachinery::events::{Correlator, Write, patch_body};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::warn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

/// Writes Events as one component (`deployment-controller`, `default-scheduler`, ...).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// Per-object rate limit, for controllers that can emit an event per child.
    budget: Option<Arc<Budget>>,
    /// The writer task's queue (started on the first event, shared by clones). One writer, so
    /// events are written in order and a repeat finds the object its first occurrence created.
    sink: Arc<Mutex<Option<mpsc::Sender<Event>>>>,
}

/// Events waiting for the writer; beyond this they are dropped, as client-go's broadcaster
/// drops them, rather than grow without bound while the API server is away.
const QUEUE: usize = 1000;

/// The Event object (pure, for tests). Named `<object>.<hex nanos>` like Kubernetes' events.
pub fn build(
    regarding: &ObjectReference,
    component: &str,
    type_: Type,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Event {
    let name = regarding.name.clone().unwrap_or_default();
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let t = Time(now);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns),
            ..Default::default()
        },
        involved_object: regarding.clone(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.as_str().into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        first_timestamp: Some(t.clone()),
        last_timestamp: Some(t),
        count: Some(1),
        ..Default::default()
    }
}

impl Recorder {
    #[must_use]
    pub fn new(client: Client, component: &'static str) -> Self {
        Self {
            client,
            component,
            budget: None,
            sink: Arc::default(),
        }
    }

    /// A recorder whose events are limited per object (by uid) like client-go's spam filter.
    #[must_use]
    pub fn throttled(client: Client, component: &'static str) -> Self {
        Self {
            budget: Some(Arc::default()),
            ..Self::new(client, component)
        }
    }

    /// Publishes in the background; failures are logged, never returned.
    pub fn publish(&self, regarding: &ObjectReference, type_: Type, reason: &str, message: &str) {
        if let Some(b) = &self.budget
            && !b.allow(regarding.uid.as_deref().unwrap_or_default())
        {
            return;
        }
        let ev = build(
            regarding,
            self.component,
            type_,
            reason,
            message,
            Timestamp::now(),
        );
        self.enqueue(ev);
    }

    fn enqueue(&self, ev: Event) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ev = ev;
        if let Some(tx) = sink.as_ref() {
            match tx.try_send(ev) {
                Ok(()) => return,
                Err(TrySendError::Full(ev)) => {
                    warn!(
                        reason = ev.reason.as_deref().unwrap_or_default(),
                        "event queue full; dropping an event"
                    );
                    return;
                }
                // The runtime that ran the writer is gone (tests run one per test).
                Err(TrySendError::Closed(back)) => ev = back,
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(self.client.clone(), rx));
        let _ = tx.try_send(ev);
        *sink = Some(tx);
    }
}

async fn write_events(client: Client, mut rx: mpsc::Receiver<Event>) {
    let mut correlator = Correlator::default();
    while let Some(ev) = rx.recv().await {
        let reason = ev.reason.clone().unwrap_or_default();
        if let Err(e) = write(&client, correlator.observe(ev)).await {
            warn!(error = %e, reason, "cannot write event");
        }
    }
}

/// Creates a new event, or patches the count of the object a repeat belongs to (creating it
/// again if it expired meanwhile).
pub async fn write(client: &Client, w: Write) -> Result<(), kube::Error> {
    let ev = match &w {
        Write::Create(ev) | Write::Patch(ev) => ev,
    };
    let api: Api<Event> = Api::namespaced(
        client.clone(),
        ev.metadata.namespace.as_deref().unwrap_or("default"),
    );
    if let Write::Patch(ev) = &w {
        let name = ev.metadata.name.as_deref().unwrap_or_default();
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch_body(ev)))
            .await
        {
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            other => return other.map(drop),
        }
    }
    api.create(&PostParams::default(), ev).await.map(drop)
}

/// client-go's event spam filter per object: a burst of 25, then one per 5 minutes.
#[derive(Default)]
struct Budget {
    buckets: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl Budget {
    const BURST: f64 = 25.0;
    const REFILL_PER_SEC: f64 = 1.0 / 300.0;

    fn allow(&self, object: &str) -> bool {
        let now = std::time::Instant::now();
        let mut b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() > 10_000 {
            // Forget full buckets of objects long quiet (keeps the map bounded).
            b.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_hours(1));
        }
        let (tokens, last) = b.entry(object.to_string()).or_insert((Self::BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * Self::REFILL_PER_SEC)
            .min(Self::BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_the_object_and_component() {
        let r = ObjectReference {
            kind: Some("Deployment".into()),
            name: Some("web".into()),
            namespace: Some("ns1".into()),
            ..Default::default()
        };
        let e = build(
            &r,
            "deployment-controller",
            Type::Normal,
            "ScalingReplicaSet",
            "Scaled up replica set web-abc to 3",
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns1"));
        assert!(e.metadata.name.unwrap().starts_with("web."));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Deployment"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.count, Some(1));
        assert_eq!(
            e.source.unwrap().component.as_deref(),
            Some("deployment-controller")
        );
    }

    #[test]
    fn event_budget_allows_a_burst_then_throttles() {
        let b = Budget::default();
        let allowed = (0..100).filter(|_| b.allow("u1")).count();
        assert_eq!(allowed, 25);
        assert!(b.allow("u2"), "per object");
    }
}
