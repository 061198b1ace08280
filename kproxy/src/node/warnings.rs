//! What cannot be programmed, reported as Warning Events on the Service (once per problem).

use std::collections::HashMap;

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference, Service},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff,
};
use kproxy::model::namespace_of;
use kube::{Api, api::PostParams};

use super::NodeProxy;

/// Services whose last report is remembered, so an unchanged problem is reported once.
pub(super) type Reported = HashMap<String, Vec<(&'static str, String)>>;

impl NodeProxy {
    /// Logs and posts a Warning Event for each problem of `key` not reported already.
    pub(super) fn report(&mut self, key: &str, problems: Vec<(&'static str, String)>) {
        let before = self.reported.remove(key).unwrap_or_default();
        if problems.is_empty() {
            return;
        }
        let Some(svc) = self.cache.services.get(key) else {
            return;
        };
        for (reason, message) in &problems {
            if before.iter().any(|(r, m)| r == reason && m == message) {
                continue;
            }
            tracing::warn!(service = key, reason, %message, "service not fully programmed");
            let event = warning_event(svc, &self.node_name, reason, message);
            let api: Api<Event> = Api::namespaced(self.client.clone(), namespace_of(&svc.metadata));
            let service = key.to_string();
            tokio::spawn(async move {
                if let Err(err) = api.create(&PostParams::default(), &event).await {
                    tracing::warn!(%service, %err, "cannot post the Warning Event");
                }
            });
        }
        self.reported.insert(key.to_string(), problems);
    }
}

fn warning_event(svc: &Service, node: &str, reason: &str, message: &str) -> Event {
    let now = jiff::Timestamp::now();
    let ns = namespace_of(&svc.metadata).to_string();
    let name = svc.metadata.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            // Kubernetes' event naming: the object's name and a unique suffix.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name),
            namespace: Some(ns),
            uid: svc.metadata.uid.clone(),
            resource_version: svc.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("kproxy".into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}
