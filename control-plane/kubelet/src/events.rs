//! core/v1 Events about pods, with the kubelet's reasons (Pulling, Pulled, Created, Started,
//! Killing, Unhealthy, BackOff, Failed), so `kubectl describe pod` tells what happened.
//! Sent in the background: an event that cannot be written never holds up a pod.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{Api, Client, api::PostParams};
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
    let api: Api<Event> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            warn!(error = %e, "writing an event");
        }
    });
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
}
