//! `kubectl top` on a real node: an API server and the real `kproxy-kubelet` (which registers
//! its Node Ready with its capacity, runs the pod through Docker with its CPU limit as a
//! quota, and serves `/stats/summary` from its sampler). The figures go kubelet → API server
//! (Metrics API) → kubectl, as in `cargo xtask run`.
#![forbid(unsafe_code)]

use std::thread;
use std::time::{Duration, Instant};

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{self, Kubectl};
use kproxy_tests::kubelet::{Kubelet, container_status};
use kproxy_tests::privileged;
use serde_json::json;

const IMAGE: &str = "kproxy/httpd:1";

#[test]
fn top_on_a_real_node() {
    if !privileged("top_on_a_real_node") || !kubectl::available() {
        return;
    }
    let dir = TempDir::new("kpt-metrics-node");
    let api = ApiServer::start(dir.path(), &["--store", "memory"]);
    let k = Kubelet::start(&api, &[]);
    let spin = |limit: &str| {
        json!({"name": "spin", "image": IMAGE,
               "command": ["/bin/busybox", "sh", "-c", "while :; do :; done"],
               "resources": {"limits": {"cpu": limit, "memory": "32Mi"}}})
    };
    let idle = json!({"name": "idle", "image": IMAGE,
                      "command": ["/bin/busybox", "sleep", "3600"]});
    k.create_pod(
        "default",
        "busy",
        json!({"containers": [spin("300m"), idle]}),
    );
    k.wait_pod("default", "busy", "both containers running", |p| {
        ["spin", "idle"].iter().all(|c| {
            container_status(p, c)
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some())
        })
    });

    let kubectl = Kubectl::new(&api.kubeconfig, dir.path());
    let started = Instant::now();
    let top = loop {
        let (ok, out, err) = kubectl.run(&["top", "pod", "busy", "--containers"]);
        if ok {
            break out;
        }
        assert!(
            err.contains("podmetrics.metrics.k8s.io \"default/busy\" not found"),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "no figures after a minute"
        );
        thread::sleep(Duration::from_secs(1));
    };
    let cpu = |line: &str| -> f64 {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols[2].trim_end_matches('m').parse().expect("millicores")
    };
    let line = |name: &str| {
        top.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{top}"))
            .to_string()
    };
    // The quota holds the loop to 300m whatever else runs on the machine.
    let spin_cpu = cpu(&line("spin"));
    assert!((270.0..=330.0).contains(&spin_cpu), "{top}");
    assert!(cpu(&line("idle")) <= 10.0, "{top}");

    // The node as the kubelet registered it: its real allocatable, so real percentages.
    let nodes = kubectl.ok(&["top", "nodes"]);
    let cols: Vec<&str> = nodes
        .lines()
        .find(|l| l.starts_with(&k.node))
        .unwrap_or_else(|| panic!("no {} in\n{nodes}", k.node))
        .split_whitespace()
        .collect();
    let node_cpu: f64 = cols[1].trim_end_matches('m').parse().expect("millicores");
    assert!(node_cpu >= 270.0, "{nodes}");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pct: f64 = cols[2].trim_end_matches('%').parse().expect("percent");
    let expected = (node_cpu / (cpus as f64 * 1000.0) * 100.0).trunc();
    assert!((pct - expected).abs() <= 1.0, "{nodes}");
    let mem_pct: f64 = cols[4].trim_end_matches('%').parse().expect("percent");
    assert!(mem_pct > 0.0 && mem_pct < 100.0, "{nodes}");
}
