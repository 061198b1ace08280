//! The API server on a real etcd (/usr/bin/etcd, from Debian's etcd-server): two servers on one
//! etcd serve the same objects and each other's watches and never hand out a ClusterIP or
//! NodePort twice; etcd down at start or later makes `/readyz` unready and requests 503, and
//! the server recovers when etcd is back, with every acknowledged write kept.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use kproxy_store::testutil::EtcdCluster;
use kproxy_tests::apiserver::{ApiServer, Http, TempDir};
use kproxy_tests::eventually;
use serde_json::{Value, json};

const SVCS: &str = "/api/v1/namespaces/default/services";
const EPS: &str = "/api/v1/namespaces/default/endpoints";

/// A one-member etcd from the store's test harness (`kproxy_store::testutil`), with the
/// runtime its async API needs; None when etcd is not installed (outside CI only).
fn etcd() -> Option<(tokio::runtime::Runtime, EtcdCluster)> {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let cluster = rt.block_on(EtcdCluster::single())?;
    Some((rt, cluster))
}

fn etcd_flags(url: &str) -> Vec<String> {
    ["--store", "etcd", "--etcd-servers", url]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
}

fn start_api(dir: &Path, flags: &[String]) -> ApiServer {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    ApiServer::start(dir, &flags)
}

fn endpoints(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
        "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80}]}]})
}

fn node_port_service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80}]}})
}

#[test]
fn two_servers_share_objects_watches_and_addresses() {
    let Some((_rt, etcd)) = etcd() else { return };
    let url = etcd.endpoints()[0].clone();
    // One data directory: both servers serve the same CA, certificate and tokens.
    let dir = TempDir::new("kpt-etcd-api");
    // Small ranges, so that concurrent creates collide often.
    let mut flags = etcd_flags(&url);
    flags.extend(
        [
            "--service-cidr",
            "10.96.0.0/24",
            "--node-port-range",
            "30000-30199",
        ]
        .map(String::from),
    );
    let a = start_api(dir.path(), &flags);
    let b = start_api(dir.path(), &flags);
    let (ha, hb) = (a.http(), b.http());

    // A live watch on B sees what is written through A.
    let rv = hb.get(EPS).json()["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list resourceVersion")
        .to_string();
    let watcher = {
        let hb = hb.clone();
        let rv = rv.clone();
        thread::spawn(move || {
            hb.get(&format!(
                "{EPS}?watch=1&resourceVersion={rv}&timeoutSeconds=4"
            ))
        })
    };
    thread::sleep(Duration::from_millis(500));
    let created = ha.post(EPS, &endpoints("from-a"));
    assert_eq!(created.code, 201, "{}", created.body);
    let created_rv = created.json()["metadata"]["resourceVersion"].clone();
    let got = hb.get(&format!("{EPS}/from-a"));
    assert_eq!(got.code, 200, "B serves what A wrote: {}", got.body);
    assert_eq!(got.json()["metadata"]["resourceVersion"], created_rv);
    let events = watcher.join().expect("watch thread");
    assert_eq!(events.code, 200, "{}", events.body);
    let added: Vec<Value> = events
        .body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a watch event"))
        .filter(|e: &Value| e["type"] == "ADDED")
        .collect();
    assert_eq!(added.len(), 1, "{}", events.body);
    assert_eq!(added[0]["object"]["metadata"]["name"], "from-a");
    assert_eq!(
        added[0]["object"]["metadata"]["resourceVersion"],
        created_rv
    );

    // Updates through B conflict with stale writes through A, as on one server.
    let mut obj = got.json();
    obj["metadata"]["labels"] = json!({"by": "b"});
    assert_eq!(hb.put(&format!("{EPS}/from-a"), &obj).code, 200);
    obj["metadata"]["labels"] = json!({"by": "a"});
    assert_eq!(ha.put(&format!("{EPS}/from-a"), &obj).code, 409);

    // Services created at once through both: every ClusterIP and NodePort distinct.
    let per_thread = 15;
    let threads: Vec<_> = [&ha, &hb, &ha, &hb, &ha, &hb]
        .into_iter()
        .enumerate()
        .map(|(t, h)| {
            let h: Http = h.clone();
            thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let r = h.post(SVCS, &node_port_service(&format!("s{t}-{i}")));
                        assert_eq!(r.code, 201, "{}", r.body);
                        r.json()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let svcs: Vec<Value> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("create thread"))
        .collect();
    assert_eq!(svcs.len(), 6 * per_thread);
    let ips: HashSet<&str> = svcs
        .iter()
        .map(|s| s["spec"]["clusterIP"].as_str().expect("a ClusterIP"))
        .collect();
    let ports: HashSet<u64> = svcs
        .iter()
        .map(|s| {
            s["spec"]["ports"][0]["nodePort"]
                .as_u64()
                .expect("a nodePort")
        })
        .collect();
    assert_eq!(ips.len(), svcs.len(), "a ClusterIP given twice");
    assert_eq!(ports.len(), svcs.len(), "a NodePort given twice");
    // Both servers list the same services.
    let names = |h: &Http| -> HashSet<String> {
        h.get(SVCS).json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|s| {
                s["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(names(&ha), names(&hb));
    assert_eq!(names(&ha).len(), svcs.len());

    // An address freed through one server can be taken through the other.
    let first = &svcs[0];
    let ip = first["spec"]["clusterIP"].as_str().expect("ip").to_string();
    let name = first["metadata"]["name"].as_str().expect("name");
    assert_eq!(hb.delete(&format!("{SVCS}/{name}")).code, 200);
    let mut again = node_port_service("reuse");
    again["spec"]["clusterIP"] = json!(ip);
    let r = ha.post(SVCS, &again);
    assert_eq!(r.code, 201, "{}", r.body);
    // And a taken one cannot.
    let mut dup = node_port_service("dup");
    dup["spec"]["clusterIP"] = json!(ip);
    let r = hb.post(SVCS, &dup);
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(
        r.body.contains("provided IP is already allocated"),
        "{}",
        r.body
    );
}

#[test]
fn etcd_down_means_unready_and_503_and_nothing_acknowledged_is_lost() {
    let Some((rt, mut etcd)) = etcd() else { return };
    let url = etcd.endpoints()[0].clone();
    let dir = TempDir::new("kpt-etcd-api");
    let api = start_api(dir.path(), &etcd_flags(&url));
    let h = api.http();
    assert_eq!(h.get("/readyz").code, 200);
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        assert_eq!(h.post(EPS, &endpoints(&name)).code, 201);
        acked.push(name);
    }

    etcd.member(0).kill();
    eventually("/readyz unready once etcd is gone", || {
        h.get("/readyz").code == 503
    });
    let readyz = h.get("/readyz");
    assert!(readyz.body.contains("[-]etcd failed"), "{}", readyz.body);
    for r in [
        h.post(EPS, &endpoints("during")),
        h.get(&format!("{EPS}/before-0")),
        h.get(EPS),
    ] {
        assert_eq!(r.code, 503, "{}", r.body);
        let status = r.json();
        assert_eq!(status["reason"], "ServiceUnavailable", "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&url),
            "the message names etcd: {status}"
        );
    }

    // etcd back (same data, same address): the server reconnects by itself.
    rt.block_on(etcd.restart(0));
    eventually("/readyz ready again", || h.get("/readyz").code == 200);
    eventually("writes work again", || {
        h.post(EPS, &endpoints("after")).code == 201
    });
    let names: HashSet<String> = h.get(EPS).json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            e["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for name in &acked {
        assert!(names.contains(name), "acknowledged {name} lost");
    }
}

#[test]
fn starts_while_etcd_is_down_and_serves_once_it_is_up() {
    // The harness's etcd, stopped before the server starts and started again after.
    let Some((rt, mut etcd)) = etcd() else { return };
    let url = etcd.endpoints()[0].clone();
    etcd.member(0).kill();
    let dir = TempDir::new("kpt-etcd-api");
    let api = start_api(dir.path(), &etcd_flags(&url));
    let h = api.http();
    let readyz = h.get("/readyz");
    assert_eq!(readyz.code, 503, "{}", readyz.body);
    assert!(readyz.body.contains(&url), "names etcd: {}", readyz.body);
    let r = h.get("/api/v1/namespaces/default");
    assert_eq!(r.code, 503, "{}", r.body);

    rt.block_on(etcd.restart(0));
    eventually("/readyz ready once etcd is up", || {
        h.get("/readyz").code == 200
    });
    // The system namespaces were created on connecting.
    eventually("the default namespace", || {
        h.get("/api/v1/namespaces/default").code == 200
    });
    assert_eq!(h.post(EPS, &endpoints("first")).code, 201);
}

#[test]
fn bad_store_flags_are_refused_with_a_clear_message() {
    for (args, want) in [
        (
            &["--store", "etcd"][..],
            "--store etcd needs --etcd-servers",
        ),
        (
            &["--store", "etcd", "--etcd-servers", "127.0.0.1:2379"][..],
            "is not an http:// or https:// URL",
        ),
        (
            &["--etcd-servers", "http://127.0.0.1:2379"][..],
            "need --store etcd",
        ),
    ] {
        let dir = TempDir::new("kpt-etcd-flags");
        let out = Command::new(kproxy_tests::bin("kproxy-apiserver"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--bind", "127.0.0.1:0", "--no-kubeconfig"])
            .args(args)
            .output()
            .expect("run kproxy-apiserver");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A gauge's value from a Prometheus text exposition (the first sample of `name`).
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.rsplit_once(' ')?;
        let bare = metric.split('{').next()?;
        (bare == name).then(|| value.trim().parse().ok())?
    })
}

/// etcd's own count of open watchers (its /metrics on the client URL).
fn etcd_watchers(url: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{url}/metrics")])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    gauge(&text, "etcd_debugging_mvcc_watcher_total")
        .unwrap_or_else(|| panic!("etcd's watcher gauge is missing: {text}"))
}

#[test]
fn many_watchers_get_every_event_in_order_from_one_etcd_watch() {
    const WATCHERS: usize = 40;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 40;
    let Some((_rt, etcd)) = etcd() else { return };
    let url = etcd.endpoints()[0].clone();
    let dir = TempDir::new("kpt-etcd-watch");
    let api = start_api(dir.path(), &etcd_flags(&url));
    let h = api.http();
    let rv = h.get(EPS).json()["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list resourceVersion")
        .to_string();
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let (h, rv) = (h.clone(), rv.clone());
            thread::spawn(move || {
                h.get(&format!(
                    "{EPS}?watch=1&resourceVersion={rv}&timeoutSeconds=20"
                ))
            })
        })
        .collect();
    eventually("every watch open", || {
        let m = h.get("/metrics").body;
        gauge(&m, "apiserver_registered_watchers").unwrap_or(0.0) >= WATCHERS as f64
    });
    // Creates, then a label change each, from several clients at once.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let h = h.clone();
            thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let name = format!("w{w}-{i}");
                    assert_eq!(h.post(EPS, &endpoints(&name)).code, 201);
                    let r = h.patch(
                        &format!("{EPS}/{name}"),
                        "application/merge-patch+json",
                        r#"{"metadata":{"labels":{"seen":"yes"}}}"#,
                    );
                    assert_eq!(r.code, 200, "{}", r.body);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    // However many clients watch, etcd serves one watch: the API server's cache feed.
    let in_etcd = etcd_watchers(&url);
    assert!(
        in_etcd <= 2.0,
        "{in_etcd} etcd watchers for {WATCHERS} API watches"
    );
    let total = WRITERS * PER_WRITER * 2;
    for w in watchers {
        let reply = w.join().expect("watch thread");
        assert_eq!(reply.code, 200, "{}", reply.body);
        let events: Vec<Value> = reply
            .body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a watch event"))
            .collect();
        assert_eq!(events.len(), total, "every event: {}", reply.body);
        let rvs = kproxy_tests::apiserver::resource_versions(&events);
        assert!(
            rvs.windows(2).all(|p| p[0] < p[1]),
            "in resourceVersion order: {rvs:?}"
        );
        let added = events.iter().filter(|e| e["type"] == "ADDED").count();
        let modified = events.iter().filter(|e| e["type"] == "MODIFIED").count();
        assert_eq!((added, modified), (total / 2, total / 2));
    }
}
