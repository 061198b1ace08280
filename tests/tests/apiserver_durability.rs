//! The store behind the API server under stress: kill -9 during concurrent writes loses no
//! acknowledged write and leaves nothing half-written; watchers see concurrent writes once
//! each, in order.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use kproxy_tests::apiserver::{ApiServer, TempDir};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/endpoints";

fn endpoints(name: &str, i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "labels": {"seq": i.to_string()}},
        "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80 + i % 100}]}]})
}

#[test]
fn kill_9_during_writes_keeps_every_acknowledged_write() {
    let dir = TempDir::new("kpt-dur");
    let mut s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let acked = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let h = h.clone();
            let acked = Arc::clone(&acked);
            thread::spawn(move || {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let body = endpoints(&name, i).to_string();
                    match h.try_req("POST", CMS, "application/json", Some(body.as_bytes())) {
                        Ok(r) if r.code == 201 => acked.lock().unwrap().push((name, i)),
                        Ok(r) => panic!("unexpected {}: {}", r.code, r.body),
                        Err(_) => return i, // the server is gone
                    }
                }
                unreachable!()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(2500));
    s.daemon.kill();
    let attempted: usize = writers.into_iter().map(|t| t.join().unwrap()).sum();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());

    let s = ApiServer::start(dir.path(), &[]);
    let list = s.http().get(CMS).json();
    let items = list["items"].as_array().unwrap();
    let stored: std::collections::HashMap<&str, &Value> = items
        .iter()
        .map(|i| (i["metadata"]["name"].as_str().unwrap(), i))
        .collect();
    for (name, i) in &acked {
        let o = stored
            .get(name.as_str())
            .unwrap_or_else(|| panic!("acknowledged {name} lost"));
        // Whole objects only: every field as written.
        assert_eq!(o["metadata"]["labels"]["seq"], i.to_string());
        assert_eq!(o["subsets"][0]["addresses"][0]["ip"], "10.244.0.5");
        assert!(o["metadata"]["uid"].is_string() && o["metadata"]["resourceVersion"].is_string());
    }
    // At most the in-flight requests (one per writer) may have landed without an answer.
    assert!(
        items.len() <= acked.len() + 6,
        "{} stored, {} acked",
        items.len(),
        acked.len()
    );
    eprintln!(
        "acknowledged {} of {attempted} attempted writes; {} stored after kill -9",
        acked.len(),
        items.len()
    );
}

/// The same on etcd (`--store etcd`, a real etcd from the store's test harness): etcd is killed
/// with SIGKILL during concurrent writes, then the API server; after both restart every
/// acknowledged write is there, whole.
#[test]
fn kill_9_of_etcd_during_writes_keeps_every_acknowledged_write() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(mut etcd) = rt.block_on(kproxy_store::testutil::EtcdCluster::single()) else {
        return;
    };
    let url = etcd.endpoints()[0].clone();
    let flags = ["--store", "etcd", "--etcd-servers", url.as_str()];
    let dir = TempDir::new("kpt-dur-etcd");
    let mut s = ApiServer::start(dir.path(), &flags);
    let h = s.http();
    let acked = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let h = h.clone();
            let acked = Arc::clone(&acked);
            thread::spawn(move || {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let body = endpoints(&name, i).to_string();
                    match h.try_req("POST", CMS, "application/json", Some(body.as_bytes())) {
                        Ok(r) if r.code == 201 => acked.lock().unwrap().push((name, i)),
                        // etcd is gone: the server answers 503 (or 500 for a lost answer).
                        Ok(r) if r.code >= 500 => return i,
                        Ok(r) => panic!("unexpected {}: {}", r.code, r.body),
                        Err(_) => return i,
                    }
                }
                unreachable!()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(2500));
    etcd.member(0).kill();
    let attempted: usize = writers.into_iter().map(|t| t.join().unwrap()).sum();
    s.daemon.kill();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());

    rt.block_on(etcd.restart(0));
    let s = ApiServer::start(dir.path(), &flags);
    let list = s.http().get(CMS).json();
    let items = list["items"].as_array().unwrap();
    let stored: std::collections::HashMap<&str, &Value> = items
        .iter()
        .map(|i| (i["metadata"]["name"].as_str().unwrap(), i))
        .collect();
    for (name, i) in &acked {
        let o = stored
            .get(name.as_str())
            .unwrap_or_else(|| panic!("acknowledged {name} lost"));
        assert_eq!(o["metadata"]["labels"]["seq"], i.to_string());
        assert_eq!(o["subsets"][0]["addresses"][0]["ip"], "10.244.0.5");
    }
    assert!(
        items.len() <= acked.len() + 6,
        "{} stored, {} acked",
        items.len(),
        acked.len()
    );
    eprintln!(
        "etcd: acknowledged {} of {attempted} attempted writes; {} stored after kill -9",
        acked.len(),
        items.len()
    );
}

#[test]
fn watchers_see_concurrent_writes_once_in_order() {
    let dir = TempDir::new("kpt-dur");
    let s = ApiServer::start(dir.path(), &[]);
    let h = s.http();
    let start = h.get(CMS).json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watchers: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            let start = start.clone();
            thread::spawn(move || {
                h.get(&format!(
                    "{CMS}?watch=1&resourceVersion={start}&timeoutSeconds=6"
                ))
                .body
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let h = h.clone();
            thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("c{w}-{i}");
                    assert_eq!(h.post(CMS, &endpoints(&name, i)).code, 201);
                    if i % 5 == 0 {
                        let r = h.patch(
                            &format!("{CMS}/{name}"),
                            "application/merge-patch+json",
                            r#"{"metadata":{"annotations":{"m":"1"}}}"#,
                        );
                        assert_eq!(r.code, 200);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for w in watchers {
        let body = w.join().unwrap();
        let events: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let added: std::collections::HashSet<&str> = events
            .iter()
            .filter(|e| e["type"] == "ADDED")
            .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
            .collect();
        let modified = events.iter().filter(|e| e["type"] == "MODIFIED").count();
        assert_eq!(
            (events.len(), added.len(), modified),
            (120, 100, 20),
            "every event once"
        );
        let rvs = kproxy_tests::apiserver::resource_versions(&events);
        assert!(
            rvs.windows(2).all(|p| p[0] < p[1]),
            "strictly increasing: {rvs:?}"
        );
    }
}
