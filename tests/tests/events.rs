//! Event growth is bounded: repeated identical events from the controller manager become one
//! Event object with a count (as client-go's recorder aggregates them), and the API server
//! deletes Events older than `--event-ttl`.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Event,
};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    control::{client, controller_manager},
    eventually, until,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const EVENTS: &str = "/api/v1/namespaces/default/events";

/// Scaling a Deployment back and forth makes its controller repeat the same two events
/// ("Scaled up replica set X from 1 to 2", "Scaled down ... from 2 to 1"): each is one object
/// whose count is the number of times it happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_controller_events_are_one_object_with_a_count() {
    const TOGGLES: i32 = 6;
    let dir = TempDir::new("kpt-events");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = controller_manager(&api, &["--controllers", "deployment,replicaset"]);
    let c = client(&api).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "toggle"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "toggle"}},
            "template": {"metadata": {"labels": {"app": "toggle"}},
                "spec": {"containers": [{"name": "c", "image": "kproxy/none"}]}}}
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let rs_replicas = || async {
        let list = rss
            .list(&ListParams::default().labels("app=toggle"))
            .await
            .unwrap();
        list.items.first().and_then(|rs| rs.spec.as_ref()?.replicas)
    };
    until("the ReplicaSet at 1", || async {
        rs_replicas().await == Some(1)
    })
    .await;
    for i in 0..TOGGLES {
        if i == TOGGLES - 1 {
            // Event times have whole seconds: let the last repeat come in a later second
            // than the first, so a moved lastTimestamp is visible (on a quick machine all
            // toggles fit in one second).
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        for n in [2, 1] {
            deps.patch(
                "toggle",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .unwrap();
            until(&format!("the ReplicaSet at {n}"), || async {
                rs_replicas().await == Some(n)
            })
            .await;
        }
    }
    let scaling = || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=toggle"))
            .await
            .unwrap();
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
            .collect::<Vec<_>>()
    };
    // The writes are in the background: wait until every scaling is counted.
    let total = |evs: &[Event]| evs.iter().map(|e| e.count.unwrap_or(1)).sum::<i32>();
    let started = Instant::now();
    let mut evs = scaling().await;
    while total(&evs) < 2 * TOGGLES + 1 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        evs = scaling().await;
    }
    for e in &evs {
        eprintln!(
            "{:?} x{:?} first {:?} last {:?}",
            e.message, e.count, e.first_timestamp, e.last_timestamp
        );
    }
    assert_eq!(total(&evs), 2 * TOGGLES + 1, "every scaling counted");
    assert_eq!(
        evs.len(),
        3,
        "one object per distinct event (from 0 to 1, 1 to 2, 2 to 1)"
    );
    let up = evs
        .iter()
        .find(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.ends_with("from 1 to 2"))
        })
        .expect("the scale-up event");
    assert_eq!(up.count, Some(TOGGLES));
    assert!(
        up.first_timestamp.as_ref().unwrap().0 < up.last_timestamp.as_ref().unwrap().0,
        "firstTimestamp kept, lastTimestamp moved: {up:?}"
    );
}

/// With `--event-ttl 3s` an Event is deleted once 3 s passed since its newest time; one whose
/// `lastTimestamp` keeps moving (a repeating event) stays.
#[test]
fn events_expire_after_the_ttl() {
    let dir = TempDir::new("kpt-events");
    let api = ApiServer::start(dir.path(), &["--event-ttl", "3s"]);
    let h = api.http();
    let now = || jiff::Timestamp::now().to_string();
    for name in ["once", "repeating"] {
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": name, "type": "Normal", "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now()});
        assert_eq!(h.post(EVENTS, &ev).code, 201);
    }
    let started = Instant::now();
    let mut count = 1;
    eventually("the one-off event expires", || {
        count += 1;
        let patch = json!({"count": count, "lastTimestamp": now()}).to_string();
        let r = h.patch(
            &format!("{EVENTS}/repeating"),
            "application/merge-patch+json",
            &patch,
        );
        assert_eq!(r.code, 200, "the repeating event lives on: {}", r.body);
        std::thread::sleep(Duration::from_millis(250));
        h.get(&format!("{EVENTS}/once")).code == 404
    });
    let gone_after = started.elapsed();
    assert!(
        gone_after >= Duration::from_secs(2) && gone_after < Duration::from_secs(8),
        "expired after {gone_after:?}"
    );
    assert_eq!(h.get(&format!("{EVENTS}/repeating")).code, 200);
    // Once it stops repeating, it expires as well.
    eventually("the repeating event expires after its last update", || {
        std::thread::sleep(Duration::from_millis(250));
        h.get(&format!("{EVENTS}/repeating")).code == 404
    });
    eprintln!("one-off event deleted {gone_after:?} after creation");
}
