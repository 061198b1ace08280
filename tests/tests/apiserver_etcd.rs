//! The API server on a real etcd (/usr/bin/etcd, from Debian's etcd-server): two servers on one
//! etcd serve the same objects and each other's watches and never hand out a ClusterIP or
//! NodePort twice; etcd down at start or later makes `/readyz` unready and requests 503, and
//! the server recovers when etcd is back, with every acknowledged write kept.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use kproxy_tests::apiserver::{ApiServer, Http, TempDir};
use kproxy_tests::{Daemon, eventually};
use serde_json::{Value, json};

const SVCS: &str = "/api/v1/namespaces/default/services";
const EPS: &str = "/api/v1/namespaces/default/endpoints";

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A one-member etcd on loopback, its data in `dir`.
struct Etcd {
    daemon: Daemon,
    url: String,
}

impl Etcd {
    fn start(dir: &Path, client: u16, peer: u16) -> Self {
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("/usr/bin/etcd");
        cmd.arg("--name")
            .arg("kpt")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("kpt={peer_url}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        let daemon = Daemon::spawn_until_logged(cmd, "serving client traffic");
        Self { daemon, url }
    }
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
    let etcd_dir = TempDir::new("kpt-etcd");
    let etcd = Etcd::start(etcd_dir.path(), free_port(), free_port());
    // One data directory: both servers serve the same CA, certificate and tokens.
    let dir = TempDir::new("kpt-etcd-api");
    // Small ranges, so that concurrent creates collide often.
    let mut flags = etcd_flags(&etcd.url);
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
    let etcd_dir = TempDir::new("kpt-etcd");
    let (client, peer) = (free_port(), free_port());
    let mut etcd = Etcd::start(etcd_dir.path(), client, peer);
    let dir = TempDir::new("kpt-etcd-api");
    let api = start_api(dir.path(), &etcd_flags(&etcd.url));
    let h = api.http();
    assert_eq!(h.get("/readyz").code, 200);
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        assert_eq!(h.post(EPS, &endpoints(&name)).code, 201);
        acked.push(name);
    }

    etcd.daemon.kill();
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
                .contains(&etcd.url),
            "the message names etcd: {status}"
        );
    }

    // etcd back (same data, same address): the server reconnects by itself.
    let etcd = Etcd::start(etcd_dir.path(), client, peer);
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
    drop(etcd);
}

#[test]
fn starts_while_etcd_is_down_and_serves_once_it_is_up() {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let dir = TempDir::new("kpt-etcd-api");
    let api = start_api(dir.path(), &etcd_flags(&url));
    let h = api.http();
    let readyz = h.get("/readyz");
    assert_eq!(readyz.code, 503, "{}", readyz.body);
    assert!(readyz.body.contains(&url), "names etcd: {}", readyz.body);
    let r = h.get("/api/v1/namespaces/default");
    assert_eq!(r.code, 503, "{}", r.body);

    let etcd_dir = TempDir::new("kpt-etcd");
    let _etcd = Etcd::start(etcd_dir.path(), client, peer);
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
