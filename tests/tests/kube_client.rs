//! kube-rs — the client every cluster component uses — against our API server: typed CRUD,
//! selectors, and kube-runtime's watcher/reflector (the basis of controllers), including a
//! watch that is resumed after the server restarts.
#![forbid(unsafe_code)]

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kproxy_tests::apiserver::{ApiServer, TempDir};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "kecho"}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_selectors_and_errors() {
    let dir = TempDir::new("kpt-kube");
    let s = ApiServer::start(dir.path(), &[]);
    let c = kproxy_tests::control::client(&s).await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    for (n, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        pods.create(&PostParams::default(), &pod(n, app))
            .await
            .unwrap();
    }
    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 2);
    let one = pods
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(one.items[0].metadata.labels.as_ref().unwrap()["app"], "db");

    // Typed errors carry the Status.
    match pods.create(&PostParams::default(), &pod("a", "web")).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected 409, got {other:?}"),
    }
    match pods.get("nope").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }

    // Strategic merge through kube's Patch, and the status subresource.
    let p = pods
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"tier": "x"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["tier"], "x");
    let st = pods
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase.as_deref(), Some("Running"));

    // Scale subresource and a Service with allocated addresses.
    let deploys: Api<Deployment> = Api::default_namespaced(c.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "kecho"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(
        deploys
            .get_scale("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(4)
    );
    let svcs: Api<Service> = Api::default_namespaced(c.clone());
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = svc.spec.unwrap();
    assert!(spec.cluster_ip.unwrap().starts_with("10."));
    assert!(spec.ports.unwrap()[0].node_port.unwrap() >= 30000);
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_follows_changes_across_a_server_restart() {
    let dir = TempDir::new("kpt-kube");
    let mut s = ApiServer::start(dir.path(), &[]);
    let c = kproxy_tests::control::client(&s).await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    pods.create(&PostParams::default(), &pod("before", "web"))
        .await
        .unwrap();

    let (reader, writer) = reflector::store::<Pod>();
    let stream = watcher(pods.clone(), watcher::Config::default().labels("app=web"))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        // Errors (the connection dropping, 410 after the restart) are items; the watcher
        // recovers by itself, so keep polling.
        while stream.next().await.is_some() {}
    });
    let wait_for = |want: Vec<&'static str>| {
        let reader = reader.clone();
        async move {
            for _ in 0..400 {
                let mut names: Vec<String> = reader
                    .state()
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap())
                    .collect();
                names.sort();
                if names == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "reflector never reached {want:?}: {:?}",
                reader
                    .state()
                    .iter()
                    .map(|p| p.metadata.name.clone())
                    .collect::<Vec<_>>()
            );
        }
    };
    wait_for(vec!["before"]).await;
    pods.create(&PostParams::default(), &pod("live", "web"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("other", "db"))
        .await
        .unwrap();
    wait_for(vec!["before", "live"]).await;

    // Restart the server on the same port and data: the watcher reconnects and catches up.
    let port = s.url.rsplit(':').next().unwrap().to_string();
    s.daemon.terminate();
    drop(s);
    let s = ApiServer::start(dir.path(), &["--bind", &format!("127.0.0.1:{port}")]);
    let c2 = kproxy_tests::control::client(&s).await;
    let pods2: Api<Pod> = Api::default_namespaced(c2);
    pods2
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    pods2
        .create(&PostParams::default(), &pod("after", "web"))
        .await
        .unwrap();
    wait_for(vec!["after", "live"]).await;
    task.abort();
}
