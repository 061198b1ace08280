//! Event aggregation as client-go's `EventCorrelator` does it for the kubelet and
//! kube-controller-manager: an event identical to one already written (same involved object,
//! type, reason, message and source) is not created again; the existing Event's `count` goes up
//! and its `lastTimestamp` moves (a PATCH), `firstTimestamp` and the name stay. A crash-looping
//! pod thus leaves one `BackOff` Event with a growing count, not one object per restart.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Event;
use serde_json::{Value, json};

/// Distinct events remembered, as client-go's `maxLruCacheEntries`.
pub const CACHE_SIZE: usize = 4096;

/// How to write an observed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// New: create it.
    Create(Event),
    /// Seen before: the same Event object (its name) with the new count and timestamps; send
    /// [`patch_body`]. If the object is gone (404, e.g. expired), create this event instead.
    Patch(Event),
}

/// Remembers written events by their identity, up to a bound (least recently seen go first).
#[derive(Debug)]
pub struct Correlator {
    seen: HashMap<String, Seen>,
    capacity: usize,
    tick: u64,
}

#[derive(Debug)]
struct Seen {
    name: Option<String>,
    count: i32,
    first: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    tick: u64,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new(CACHE_SIZE)
    }
}

impl Correlator {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    /// Decides how to write `ev` (a fresh event with count 1): create it, or patch the Event
    /// an identical earlier one became.
    pub fn observe(&mut self, mut ev: Event) -> Write {
        self.tick += 1;
        let key = key(&ev);
        if let Some(seen) = self.seen.get_mut(&key) {
            seen.count = seen.count.saturating_add(1);
            seen.tick = self.tick;
            ev.metadata.name.clone_from(&seen.name);
            ev.count = Some(seen.count);
            ev.first_timestamp.clone_from(&seen.first);
            return Write::Patch(ev);
        }
        if self.seen.len() >= self.capacity
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.tick)
                .map(|(k, _)| k.clone())
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(
            key,
            Seen {
                name: ev.metadata.name.clone(),
                count: ev.count.unwrap_or(1),
                first: ev.first_timestamp.clone(),
                tick: self.tick,
            },
        );
        Write::Create(ev)
    }

    /// How many distinct events are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The merge patch that records a repeat: count, lastTimestamp (and the message, unchanged).
#[must_use]
pub fn patch_body(ev: &Event) -> Value {
    json!({
        "count": ev.count,
        "lastTimestamp": ev.last_timestamp,
        "message": ev.message,
    })
}

/// client-go's `getEventKey`: what makes two events the same.
fn key(ev: &Event) -> String {
    let o = &ev.involved_object;
    let source = ev.source.as_ref();
    [
        source.and_then(|s| s.component.as_deref()),
        source.and_then(|s| s.host.as_deref()),
        o.kind.as_deref(),
        o.namespace.as_deref(),
        o.name.as_deref(),
        o.field_path.as_deref(),
        o.uid.as_deref(),
        o.api_version.as_deref(),
        ev.type_.as_deref(),
        ev.reason.as_deref(),
        ev.message.as_deref(),
        ev.reporting_component.as_deref(),
        ev.reporting_instance.as_deref(),
    ]
    .map(Option::unwrap_or_default)
    .join("\u{0}")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn event(name: &str, message: &str, at: i64) -> Event {
        let t = Time(Timestamp::from_second(at).unwrap());
        Event {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            reason: Some("BackOff".into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("n1".into()),
            }),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            count: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn identical_events_become_one_object_with_a_count() {
        let mut c = Correlator::default();
        let mut writes = Vec::new();
        for i in 0..100 {
            writes.push(c.observe(event(&format!("web.{i}"), "Back-off restarting", 1000 + i)));
        }
        assert!(
            matches!(&writes[0], Write::Create(e) if e.metadata.name.as_deref() == Some("web.0"))
        );
        let Write::Patch(last) = &writes[99] else {
            panic!("a repeat is a patch: {:?}", writes[99]);
        };
        assert_eq!(last.metadata.name.as_deref(), Some("web.0"), "same object");
        assert_eq!(last.count, Some(100));
        assert_eq!(last.first_timestamp, event("x", "", 1000).first_timestamp);
        assert_eq!(last.last_timestamp, event("x", "", 1099).last_timestamp);
        let creates = writes
            .iter()
            .filter(|w| matches!(w, Write::Create(_)))
            .count();
        assert_eq!(creates, 1);
        assert_eq!(
            patch_body(last),
            json!({"count": 100, "lastTimestamp": "1970-01-01T00:18:19Z", "message": "Back-off restarting"})
        );
    }

    #[test]
    fn different_events_are_separate_and_the_cache_is_bounded() {
        let mut c = Correlator::new(3);
        assert!(matches!(c.observe(event("a", "one", 1)), Write::Create(_)));
        assert!(matches!(c.observe(event("b", "two", 2)), Write::Create(_)));
        let mut other_pod = event("c", "one", 3);
        other_pod.involved_object.uid = Some("u2".into());
        assert!(matches!(c.observe(other_pod), Write::Create(_)));
        // "one" was seen least recently after "two" and u2 are touched: it is forgotten.
        assert!(matches!(c.observe(event("d", "two", 4)), Write::Patch(_)));
        assert!(matches!(
            c.observe(event("e", "three", 5)),
            Write::Create(_)
        ));
        assert_eq!(c.len(), 3);
        assert!(matches!(c.observe(event("f", "one", 6)), Write::Create(_)));
    }
}
