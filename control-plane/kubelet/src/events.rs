//! core/v1 Events about pods, with the kubelet's reasons (Pulling, Pulled, Created, Started,
//! Killing, Unhealthy, BackOff, Failed), so `kubectl describe pod` tells what happened.
//! Sent in the background: an event that cannot be written never holds up a pod. Repeats are
//! aggregated as the kubelet's recorder does (one object, a growing `count`), so a
//! crash-looping pod does not add an Event per restart.

use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference, Pod},
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
pub enum Kind {
    Normal,
    Warning,
}

/// The Event object for `pod` (pure, for tests). `field_path` names the container as
/// Kubernetes does: `spec.containers{name}`.
pub fn build(
    pod: &Pod,
    node: &str,
    container: Option<&str>,
    kind: Kind,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Event {
    let m = &pod.metadata;
    let name = m.name.clone().unwrap_or_default();
    Event {
        // A legacy (core/v1) event as the kubelet's recorder writes it: no eventTime, which
        // would make the events.k8s.io fields (action, ...) required.
        metadata: ObjectMeta {
            // Unique per pod and instant, like Kubernetes' `<pod>.<hex nanos>`.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: m.namespace.clone(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(
            match kind {
                Kind::Normal => "Normal",
                Kind::Warning => "Warning",
            }
            .into(),
        ),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// Writes the event in the background.
pub fn record(
    client: &Client,
    pod: &Pod,
    node: &str,
    container: Option<&str>,
    kind: Kind,
    reason: &str,
    message: &str,
) {
    let ev = build(
        pod,
        node,
        container,
        kind,
        reason,
        message,
        Timestamp::now(),
    );
    enqueue(client.clone(), ev);
}

/// Events waiting for the writer; beyond this they are dropped, as client-go's broadcaster
/// drops them, rather than grow without bound while the API server is away.
const QUEUE: usize = 1000;

/// The writer task's queue. One writer, so events are written in order and a repeat finds the
/// object its first occurrence created.
static SINK: Mutex<Option<mpsc::Sender<(Client, Event)>>> = Mutex::new(None);

fn enqueue(client: Client, ev: Event) {
    let mut sink = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut job = (client, ev);
    if let Some(tx) = sink.as_ref() {
        match tx.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full((_, ev))) => {
                warn!(
                    reason = ev.reason.as_deref().unwrap_or_default(),
                    "event queue full; dropping an event"
                );
                return;
            }
            // The runtime that ran the writer is gone (tests run one per test): start another.
            Err(TrySendError::Closed(back)) => job = back,
        }
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(write_events(rx));
    let _ = tx.try_send(job);
    *sink = Some(tx);
}

async fn write_events(mut rx: mpsc::Receiver<(Client, Event)>) {
    let mut correlator = Correlator::default();
    while let Some((client, ev)) = rx.recv().await {
        let reason = ev.reason.clone().unwrap_or_default();
        if let Err(e) = write(&client, correlator.observe(ev)).await {
            warn!(error = %e, reason, "writing an event");
        }
    }
}

/// Creates a new event, or patches the count of the object a repeat belongs to (creating it
/// again if it expired meanwhile).
pub(crate) async fn write(client: &Client, w: Write) -> Result<(), kube::Error> {
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

/// The events of one pod, as its worker sends them.
#[derive(Clone, Copy)]
pub struct Recorder<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    pub node: &'a str,
}

impl Recorder<'_> {
    /// A Normal event about `container` (or the pod).
    pub fn normal(&self, container: Option<&str>, reason: &str, message: &str) {
        self.send(container, Kind::Normal, reason, message);
    }

    /// A Warning event about `container` (or the pod).
    pub fn warning(&self, container: Option<&str>, reason: &str, message: &str) {
        self.send(container, Kind::Warning, reason, message);
    }

    fn send(&self, container: Option<&str>, kind: Kind, reason: &str, message: &str) {
        record(
            self.client,
            self.pod,
            self.node,
            container,
            kind,
            reason,
            message,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_point_at_the_pod_and_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1", "resourceVersion": "7"},
            "spec": {"containers": []}
        }))
        .unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let ev = build(
            &pod,
            "n1",
            Some("httpd"),
            Kind::Warning,
            "BackOff",
            "Back-off restarting failed container httpd",
            now,
        );
        assert_eq!(
            ev.metadata.name.as_deref(),
            Some(format!("web.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("prod"));
        let o = &ev.involved_object;
        assert_eq!(o.kind.as_deref(), Some("Pod"));
        assert_eq!(o.uid.as_deref(), Some("u1"));
        assert_eq!(o.field_path.as_deref(), Some("spec.containers{httpd}"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.source.unwrap().host.as_deref(), Some("n1"));
        assert_eq!(ev.count, Some(1));
    }

    #[test]
    fn a_crash_loop_is_one_backoff_event_with_a_count() {
        let mut correlator = Correlator::default();
        let mut objects = std::collections::HashSet::new();
        for restart in 0..360 {
            // The pod's resourceVersion moves with every status update between restarts.
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "prod", "uid": "u1",
                    "resourceVersion": (100 + restart).to_string()},
                "spec": {"containers": []}
            }))
            .unwrap();
            let now = Timestamp::from_second(1_700_000_000 + restart * 10).unwrap();
            for (i, (kind, reason, message)) in [
                (Kind::Normal, "Created", "Created container: httpd"),
                (Kind::Normal, "Started", "Started container httpd"),
                (
                    Kind::Warning,
                    "BackOff",
                    "Back-off restarting failed container httpd in pod web_prod(u1)",
                ),
            ]
            .into_iter()
            .enumerate()
            {
                // Each event is named after the instant it happened.
                let now = now + jiff::SignedDuration::from_millis(i64::try_from(i).unwrap());
                let ev = build(&pod, "n1", Some("httpd"), kind, reason, message, now);
                let (Write::Create(ev) | Write::Patch(ev)) = correlator.observe(ev);
                objects.insert(ev.metadata.name.clone());
                if reason == "BackOff" && restart == 359 {
                    assert_eq!(ev.count, Some(360));
                }
            }
        }
        assert_eq!(objects.len(), 3, "an hour of restarts: three Event objects");
    }
}
