//! List chunking (`limit` / `continue`) over real HTTPS, kube-runtime's paged watcher and
//! kubectl's `--chunk-size`: pages come from one snapshot, tokens are checked, selectors apply
//! before paging, and an expired token is a 410 that offers an inconsistent continuation.
//! Unprivileged: loopback only.
#![forbid(unsafe_code)]

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kproxy_tests::apiserver::{ApiServer, Http, TempDir};
use kproxy_tests::kubectl::{Kubectl, available};
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn server(extra: &[&str]) -> (TempDir, ApiServer, Http) {
    let dir = TempDir::new("kpt-paging");
    let s = ApiServer::start(dir.path(), extra);
    let h = s.http();
    (dir, s, h)
}

fn pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "web", "image": "httpd"}]}
    })
}

/// p00..p{n-1}; even ones are app=web, odd ones app=db.
fn create_pods(h: &Http, ns_pods: &str, n: usize) {
    for i in 0..n {
        let app = if i % 2 == 0 { "web" } else { "db" };
        let r = h.post(ns_pods, &pod(&format!("p{i:02}"), app));
        assert_eq!(r.code, 201, "{}", r.body);
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn list(h: &Http, path: &str) -> Value {
    let r = h.get(path);
    assert_eq!(r.code, 200, "GET {path}: {}", r.body);
    r.json()
}

/// Follows continue tokens from `path?query`; returns every page.
fn all_pages(h: &Http, path: &str, query: &str) -> Vec<Value> {
    let mut pages = vec![list(h, &format!("{path}?{query}"))];
    while let Some(token) = pages.last().unwrap()["metadata"]["continue"].as_str() {
        assert!(pages.len() < 100, "endless paging");
        pages.push(list(h, &format!("{path}?{query}&continue={token}")));
    }
    pages
}

fn sizes(pages: &[Value]) -> Vec<usize> {
    pages.iter().map(|p| names(p).len()).collect()
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion: {v}"))
}

#[test]
fn pages_come_from_one_snapshot() {
    let (_d, _s, h) = server(&[]);
    create_pods(&h, PODS, 25);

    let p1 = list(&h, &format!("{PODS}?limit=10"));
    assert_eq!(
        names(&p1),
        (0..10).map(|i| format!("p{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(p1["metadata"]["remainingItemCount"], 15);
    let t1 = p1["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    let snapshot = rv(&p1);

    // Writes between pages: none of them may show up in later pages of this list.
    for name in ["p05a", "p10a", "p99"] {
        assert_eq!(h.post(PODS, &pod(name, "new")).code, 201);
    }
    assert_eq!(h.delete(&format!("{PODS}/p12")).code, 200);
    let r = h.patch(
        &format!("{PODS}/p20"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"app":"changed"}}}"#,
    );
    assert_eq!(r.code, 200, "{}", r.body);

    let p2 = list(&h, &format!("{PODS}?limit=10&continue={t1}"));
    assert_eq!(
        names(&p2),
        (10..20).map(|i| format!("p{i:02}")).collect::<Vec<_>>(),
        "p12 (deleted later) is in the snapshot, p10a (created later) is not"
    );
    assert_eq!(rv(&p2), snapshot);
    assert_eq!(p2["metadata"]["remainingItemCount"], 5);
    let t2 = p2["metadata"]["continue"].as_str().expect("continue");
    assert_ne!(t2, t1);

    let p3 = list(&h, &format!("{PODS}?limit=10&continue={t2}"));
    assert_eq!(names(&p3), ["p20", "p21", "p22", "p23", "p24"]);
    assert_eq!(rv(&p3), snapshot);
    assert_eq!(
        p3["items"][0]["metadata"]["labels"]["app"], "web",
        "p20 as of the snapshot"
    );
    assert!(
        p3["metadata"].get("continue").is_none(),
        "{}",
        p3["metadata"]
    );
    assert!(p3["metadata"].get("remainingItemCount").is_none());
    for page in [&p1, &p2, &p3] {
        for item in page["items"].as_array().unwrap() {
            assert!(rv(item) <= snapshot, "{item}");
        }
    }

    // A new list sees the writes; limit=0 means no limit.
    let now = list(&h, &format!("{PODS}?limit=0"));
    assert!(rv(&now) > snapshot);
    assert_eq!(names(&now).len(), 27);
    assert!(now["metadata"].get("continue").is_none());
    let unlimited = list(&h, PODS);
    assert_eq!(names(&unlimited), names(&now));
    // A continue without limit returns the rest of the snapshot.
    let rest = list(&h, &format!("{PODS}?continue={t1}"));
    assert_eq!(names(&rest).len(), 15);
    assert_eq!(rv(&rest), snapshot);
    // Exact multiple of the limit: the last full page has no token (no empty page after it).
    let pages = all_pages(&h, PODS, "limit=9");
    assert_eq!(sizes(&pages), [9, 9, 9]);
}

#[test]
fn cluster_wide_lists_page_across_namespaces() {
    let (_d, _s, h) = server(&[]);
    let r = h.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
    );
    assert_eq!(r.code, 201, "{}", r.body);
    create_pods(&h, PODS, 5);
    create_pods(&h, "/api/v1/namespaces/other/pods", 4);
    let pages = all_pages(&h, "/api/v1/pods", "limit=4");
    assert_eq!(sizes(&pages), [4, 4, 1]);
    let keys: Vec<String> = pages
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let mut want: Vec<String> = (0..5).map(|i| format!("default/p{i:02}")).collect();
    want.extend((0..4).map(|i| format!("other/p{i:02}")));
    assert_eq!(keys, want);
    assert_eq!(pages[0]["metadata"]["remainingItemCount"], 5);
}

#[test]
fn selectors_apply_before_paging() {
    let (_d, _s, h) = server(&[]);
    create_pods(&h, PODS, 25);
    // 13 even pods are app=web.
    let pages = all_pages(&h, PODS, "limit=5&labelSelector=app%3Dweb");
    assert_eq!(sizes(&pages), [5, 5, 3]);
    let got: Vec<String> = pages.iter().flat_map(names).collect();
    let want: Vec<String> = (0..25).step_by(2).map(|i| format!("p{i:02}")).collect();
    assert_eq!(got, want);
    assert!(
        pages[0]["metadata"].get("remainingItemCount").is_none(),
        "unknown with a selector"
    );
    let snapshot = rv(&pages[0]);
    assert!(pages.iter().all(|p| rv(p) == snapshot));

    let pages = all_pages(
        &h,
        PODS,
        "limit=4&labelSelector=app%3Ddb&fieldSelector=metadata.name%21%3Dp01",
    );
    assert_eq!(sizes(&pages), [4, 4, 3]);
    // Nothing matches: one empty page, no token.
    let pages = all_pages(&h, PODS, "limit=3&labelSelector=app%3Dnone");
    assert_eq!(sizes(&pages), [0]);
    assert!(pages[0]["metadata"].get("continue").is_none());
}

#[test]
fn bad_parameters_are_rejected() {
    let (_d, _s, h) = server(&[]);
    create_pods(&h, PODS, 3);
    let p1 = list(&h, &format!("{PODS}?limit=1"));
    let token = p1["metadata"]["continue"].as_str().expect("continue");
    for (query, what) in [
        ("limit=1&continue=garbage!".to_string(), "not base64"),
        ("limit=1&continue=bm90IGpzb24".to_string(), "not JSON"),
        (
            // {"v":"meta.k8s.io/v1","rv":1,"start":"../x"}
            "limit=1&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOiIuLi94In0"
                .to_string(),
            "path traversal",
        ),
        (
            format!("limit=1&continue={token}&resourceVersion=1"),
            "resourceVersion with continue",
        ),
        ("limit=-1".to_string(), "negative limit"),
        ("limit=ten".to_string(), "non-numeric limit"),
    ] {
        let r = h.get(&format!("{PODS}?{query}"));
        assert_eq!(r.code, 400, "{what}: {}", r.body);
        assert_eq!(r.json()["reason"], "BadRequest", "{what}");
    }
    // resourceVersion=0 with a continue is allowed (kube-rs' watcher may send it).
    let r = h.get(&format!(
        "{PODS}?limit=1&continue={token}&resourceVersion=0"
    ));
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(names(&r.json()), ["p01"]);
}

#[test]
fn expired_token_is_gone_with_an_inconsistent_continuation() {
    // A continuation expires when its revision is compacted away: the in-process stores keep
    // --history events; on etcd the API server compacts every --etcd-compaction-interval to
    // the revision etcd had one interval earlier.
    let etcd = kproxy_tests::apiserver::on_etcd();
    let flags: &[&str] = if etcd {
        &["--etcd-compaction-interval", "1s"]
    } else {
        &["--history", "20"]
    };
    let (_d, _s, h) = server(flags);
    create_pods(&h, PODS, 6);
    let p1 = list(&h, &format!("{PODS}?limit=2"));
    let token = p1["metadata"]["continue"].as_str().expect("continue");
    // Newer revisions: the snapshot leaves the 20-event history (etcd: a later compaction
    // round reaches past it).
    for i in 0..25 {
        let r = h.patch(
            &format!("{PODS}/p05"),
            "application/merge-patch+json",
            &format!(r#"{{"metadata":{{"labels":{{"n":"{i}"}}}}}}"#),
        );
        assert_eq!(r.code, 200, "{}", r.body);
    }
    assert_eq!(h.post(PODS, &pod("p01a", "new")).code, 201);
    let next = format!("{PODS}?limit=2&continue={token}");
    let mut r = h.get(&next);
    // etcd: two compaction rounds (the first notes the revision, the next compacts to it).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while etcd && r.code == 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        r = h.get(&next);
    }
    assert_eq!(r.code, 410, "{}", r.body);
    let status = r.json();
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["code"], 410);
    let inconsistent = status["metadata"]["continue"]
        .as_str()
        .unwrap_or_else(|| panic!("no continuation offered: {status}"));
    // It goes on after p01 at the current revision: the new p01a shows up.
    let pages = all_pages(&h, PODS, &format!("limit=2&continue={inconsistent}"));
    let got: Vec<String> = pages.iter().flat_map(names).collect();
    assert_eq!(got, ["p01a", "p02", "p03", "p04", "p05"]);
    assert!(rv(&pages[0]) > rv(&p1));
}

#[test]
fn watch_ignores_limit() {
    let (_d, _s, h) = server(&[]);
    create_pods(&h, PODS, 4);
    let r = h.get(&format!("{PODS}?watch=true&limit=1&timeoutSeconds=1"));
    assert_eq!(r.code, 200, "{}", r.body);
    let added = r
        .body
        .lines()
        .filter(|l| l.contains("\"type\":\"ADDED\""))
        .count();
    assert_eq!(added, 4, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_pages_its_initial_list() {
    let dir = TempDir::new("kpt-paging-kube");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    create_pods(&h, PODS, 25);
    let c = kproxy_tests::control::client(&s).await;
    let pods: Api<Pod> = Api::default_namespaced(c);
    let mut events = watcher(pods, watcher::Config::default().page_size(4)).boxed();
    let mut seen = Vec::new();
    let deadline = Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout(deadline, events.next())
            .await
            .expect("watcher stalled")
            .expect("watcher ended")
            .expect("watcher error");
        match ev {
            watcher::Event::Init => {}
            watcher::Event::InitApply(p) => seen.push(p.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(
        seen,
        (0..25).map(|i| format!("p{i:02}")).collect::<Vec<_>>()
    );
    // The watch goes on from the list's snapshot.
    assert_eq!(h.post(PODS, &pod("late", "web")).code, 201);
    let ev = tokio::time::timeout(deadline, events.next())
        .await
        .expect("no event for the new pod")
        .expect("watcher ended")
        .expect("watcher error");
    match ev {
        watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some("late")),
        other => panic!("expected Apply(late), got {other:?}"),
    }
}

#[test]
fn kubectl_chunk_size_lists_everything() {
    if !available() {
        return;
    }
    let dir = TempDir::new("kpt-paging-kubectl");
    let s = ApiServer::start(dir.path(), &[]);
    create_pods(&s.http(), PODS, 25);
    let k = Kubectl::new(&s.kubeconfig, dir.path());
    let want: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();

    // Server-side printing (Tables) in chunks of 3: 9 requests, 8 of them continuing.
    let (ok, out, log) = k.run(&["get", "pods", "--chunk-size=3", "--no-headers", "-v=6"]);
    assert!(ok, "{out}{log}");
    let requests: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/api/v1/namespaces/default/pods?"))
        .collect();
    assert_eq!(requests.len(), 9, "{log}");
    assert!(requests.iter().all(|l| l.contains("limit=3")), "{log}");
    assert_eq!(
        requests.iter().filter(|l| l.contains("continue=")).count(),
        8,
        "{log}"
    );
    let got: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(got, want);
    let out = k.ok(&[
        "get",
        "pods",
        "--chunk-size=3",
        "-l",
        "app=web",
        "-o",
        "name",
    ]);
    let web: Vec<String> = (0..25).step_by(2).map(|i| format!("pod/p{i:02}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), web);
    let all = k.json(&["get", "pods", "--chunk-size=4"]);
    assert_eq!(names(&all), want);
}
