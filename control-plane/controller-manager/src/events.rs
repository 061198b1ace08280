//! core/v1 Events as kube-controller-manager and kube-scheduler write them (`ScalingReplicaSet`,
//! `SuccessfulCreate`, `FailedScheduling`, ...), so `kubectl describe` tells what happened.
//! Sent in the background: an event that cannot be written never holds up a reconcile.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{Api, Client, api::PostParams};
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
}

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
        Self { client, component }
    }

    /// Publishes in the background; failures are logged, never returned.
    pub fn publish(&self, regarding: &ObjectReference, type_: Type, reason: &str, message: &str) {
        let ev = build(
            regarding,
            self.component,
            type_,
            reason,
            message,
            Timestamp::now(),
        );
        let api: Api<Event> = Api::namespaced(
            self.client.clone(),
            ev.metadata.namespace.as_deref().unwrap_or("default"),
        );
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                warn!(error = %e, reason = ev.reason.as_deref().unwrap_or(""), "cannot write event");
            }
        });
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
}
