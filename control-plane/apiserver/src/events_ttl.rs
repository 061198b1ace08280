//! Events expire. kube-apiserver writes every Event with an etcd lease of `--event-ttl`
//! (default 1 h), renewed by each write, so an Event lives that long after its last update.
//! The store has no leases; a reaper deletes Events whose newest time (creation, last
//! occurrence, series observation) is older than the TTL.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kproxy_store::{Store, StoreError};
use serde_json::Value;

use crate::registry;

/// Keys read per page while reaping (bounds the memory a sweep holds).
const PAGE: usize = 500;

#[derive(Clone, Debug, clap::Args)]
pub struct EventTtl {
    /// How long an Event is kept after its last occurrence (a Go duration: 1h, 90m, 3s).
    #[arg(long = "event-ttl", default_value = "1h", value_parser = parse_duration)]
    pub event_ttl: Duration,
}

/// Starts the reaper on the current runtime; it sweeps every quarter of the TTL (between one
/// second and a minute).
pub fn spawn(store: Arc<dyn Store>, opts: &EventTtl) {
    let ttl = opts.event_ttl;
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_mins(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match reap(store.as_ref(), ttl, Timestamp::now()).await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(deleted, "expired events deleted"),
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "expiring events");
                }
            }
        }
    });
}

/// Deletes every Event older than `ttl` at `now`; returns how many.
pub async fn reap(store: &dyn Store, ttl: Duration, now: Timestamp) -> Result<usize, StoreError> {
    let prefix = registry::by_kind("Event")
        .expect("Event is registered")
        .prefix();
    let mut start = prefix.clone();
    let mut deleted = 0;
    loop {
        let page = store.list_page(&prefix, &start, PAGE, 0, false).await?;
        for kv in &page.kvs {
            let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if !expired(&obj, ttl, now) {
                continue;
            }
            // Only the version judged: an Event updated meanwhile lives on.
            match store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => deleted += 1,
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => start = format!("{}\u{0}", last.key),
            _ => return Ok(deleted),
        }
    }
}

/// Whether the Event's newest time is more than `ttl` before `now`. An Event without any
/// readable time never expires here (it cannot be judged).
#[must_use]
pub fn expired(event: &Value, ttl: Duration, now: Timestamp) -> bool {
    let newest = [
        &event["metadata"]["creationTimestamp"],
        &event["lastTimestamp"],
        &event["firstTimestamp"],
        &event["eventTime"],
        &event["series"]["lastObservedTime"],
    ]
    .into_iter()
    .filter_map(|v| v.as_str()?.parse::<Timestamp>().ok())
    .max();
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return false;
    };
    newest.is_some_and(|t| t.checked_add(ttl).is_ok_and(|end| end < now))
}

/// A Go duration as kube-apiserver's flags take it: `1h`, `1h30m`, `90s`, `1.5h`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 1h, 30m, 90s, 1h30m)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use kproxy_store::StoreOptions;
    use serde_json::json;

    use super::*;
    use crate::object;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn flag_parses_with_the_server_options() {
        use clap::{CommandFactory as _, Parser as _};
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: crate::server::Options,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["serve", "--event-ttl", "3s"]).unwrap();
        assert_eq!(cli.serve.events.event_ttl, Duration::from_secs(3));
        let default = Cli::try_parse_from(["serve"]).unwrap();
        assert_eq!(default.serve.events.event_ttl, Duration::from_hours(1));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("1h0m0s"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "h", "10", "5d", "1h-2m", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_counts_from_the_newest_time() {
        let ttl = Duration::from_hours(1);
        let now = at("2025-01-01T12:00:00Z");
        let ev = |created: &str, last: &str| json!({"metadata": {"creationTimestamp": created}, "lastTimestamp": last});
        assert!(expired(
            &ev("2025-01-01T10:00:00Z", "2025-01-01T10:30:00Z"),
            ttl,
            now
        ));
        assert!(
            !expired(
                &ev("2025-01-01T10:00:00Z", "2025-01-01T11:30:00Z"),
                ttl,
                now
            ),
            "repeated recently"
        );
        assert!(
            !expired(
                &ev("2025-01-01T11:30:00Z", "2025-01-01T01:00:00Z"),
                ttl,
                now
            ),
            "an old lastTimestamp written recently lives a TTL"
        );
        let series = json!({"metadata": {"creationTimestamp": "2025-01-01T09:00:00Z"},
            "eventTime": "2025-01-01T09:00:00.000000Z",
            "series": {"count": 9, "lastObservedTime": "2025-01-01T11:59:00.000000Z"}});
        assert!(!expired(&series, ttl, now));
        assert!(
            !expired(&json!({"metadata": {}}), ttl, now),
            "no time: kept"
        );
    }

    #[tokio::test]
    async fn reaper_deletes_only_expired_events() {
        let store = kproxy_store::memory(StoreOptions::default());
        let res = registry::by_kind("Event").unwrap();
        let pod = registry::by_kind("Pod").unwrap();
        for i in 0..1200 {
            let last = if i % 3 == 0 {
                "2025-01-01T11:50:00Z"
            } else {
                "2025-01-01T09:00:00Z"
            };
            let ev = json!({"metadata": {"name": format!("e{i:04}"), "namespace": "ns",
                "creationTimestamp": "2025-01-01T09:00:00Z"}, "lastTimestamp": last});
            store
                .create(
                    &res.key(Some("ns"), &format!("e{i:04}")),
                    object::to_stored(&ev),
                )
                .await
                .unwrap();
        }
        let old_pod =
            json!({"metadata": {"name": "p", "creationTimestamp": "2000-01-01T00:00:00Z"}});
        store
            .create(&pod.key(Some("ns"), "p"), object::to_stored(&old_pod))
            .await
            .unwrap();
        let deleted = reap(
            store.as_ref(),
            Duration::from_hours(1),
            at("2025-01-01T12:00:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(deleted, 800);
        let (left, _) = store.list(&res.prefix()).await.unwrap();
        assert_eq!(left.len(), 400);
        assert!(
            store
                .get(&pod.key(Some("ns"), "p"))
                .await
                .unwrap()
                .is_some()
        );
    }
}
