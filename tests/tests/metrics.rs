//! The Metrics API end to end: a real API server, the kubelet's server (kproxy-kubelet-server,
//! whose sampler reads Docker stats and /proc) in-process on a loopback port, Docker
//! containers labelled as the kubelet labels a pod's containers, and the real kubectl and
//! kctl running `top`. The figures are compared with what Docker itself reports for the same
//! containers (`docker stats --no-stream`): the target is within 10 %.
//!
//! The containers are made with the `docker` CLI on purpose (the product uses the Engine
//! API); every one is removed when its test ends, also on failure.
#![forbid(unsafe_code)]

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kproxy_pod_labels as labels;
use kproxy_tests::kubectl::Kubectl;
use kproxy_tests::kubelet_server::{self, NodeCluster};
use kproxy_tests::{bin, sh};
use serde_json::{Value, json};

const IMAGE: &str = "kproxy/httpd:1";
/// The kubelet's sampler needs two readings of a new container (about a second apart, at
/// most one sampling period after it starts) before there is a CPU rate.
const FIGURES_WITHIN: Duration = Duration::from_mins(1);
const MIB: f64 = 1024.0 * 1024.0;

fn ready() -> bool {
    kubelet_server::ready("metrics", &[IMAGE])
}

kproxy_tests::node_cluster!(
    /// One test's cluster: API server, one Ready node served by the in-process kubelet server.
    Cluster
);

impl Cluster {
    fn start() -> Self {
        Self(NodeCluster::start(
            "kpt-metrics",
            "kpt-mnode",
            &json!({"kpt-metrics": "yes"}),
            &json!({
                "conditions": [{"type": "Ready", "status": "True"}],
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            }),
        ))
    }

    /// A Pod object on the node (labels `app=<app>`); returns its uid.
    fn pod(&self, name: &str, app: &str, containers: &[&str]) -> String {
        let spec = json!({
            "nodeName": self.node,
            "containers": containers.iter().map(|c| json!({"name": c, "image": IMAGE}))
                .collect::<Vec<_>>(),
        });
        let r = self.http.post(
            "/api/v1/namespaces/default/pods",
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": app}}, "spec": spec}),
        );
        assert_eq!(r.code, 201, "{}", r.body);
        r.json()["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string()
    }

    /// Runs `script` as `pod`'s `container` (with `docker run` options `opts`), labelled as
    /// the kubelet labels it; returns the Docker container name.
    fn container(
        &self,
        pod: &str,
        uid: &str,
        container: &str,
        opts: &[&str],
        script: &str,
    ) -> String {
        let name = labels::container_name(container, pod, "default", uid, 0);
        self.containers.add(&name);
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", &name])
            .args(opts)
            .args(kubelet_server::container_labels(
                &self.node, pod, uid, container, 0,
            ));
        cmd.args(["--entrypoint", "/bin/busybox", IMAGE, "sh", "-c", script]);
        sh(&mut cmd);
        name
    }

    fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.api.kubeconfig, self.dir.path())
    }

    fn kctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin("kctl"))
            .args(args)
            .env("KUBECONFIG", &self.api.kubeconfig)
            .env("HOME", self.dir.path())
            .output()
            .expect("run kctl");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("$ kctl {}\n{o}{e}", args.join(" "));
        (out.status.success(), o, e)
    }

    /// The PodMetrics of `pod` as the API serves it, once there is one.
    fn pod_metrics(&self, pod: &str) -> Value {
        let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}");
        let started = Instant::now();
        loop {
            let r = self.http.get(&path);
            if r.code == 200 {
                return r.json();
            }
            assert_eq!(r.code, 404, "{}", r.body);
            assert!(
                started.elapsed() < FIGURES_WITHIN,
                "no metrics for {pod} after {FIGURES_WITHIN:?}: {}",
                r.body
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A quantity as a number of base units (`1500m` → 1.5, `48Mi` → 50331648): the suffixes
/// the Metrics API uses.
fn quantity(s: &str) -> f64 {
    let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, suffix) = s.split_at(at);
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "Ki" => 1024.0,
        "Mi" => MIB,
        "Gi" => MIB * 1024.0,
        other => panic!("suffix {other} in {s}"),
    };
    n.parse::<f64>().unwrap_or_else(|e| panic!("{s}: {e}")) * scale
}

/// Docker's own figures for `containers` at one moment, as `docker stats --no-stream`
/// prints them (one call for all): CPU in cores, memory (usage less inactive file pages) in
/// bytes, in the order given.
fn docker_stats(containers: &[&str]) -> Vec<(f64, f64)> {
    let out = sh(Command::new("docker")
        .args([
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}",
        ])
        .args(containers));
    let parsed: Vec<(&str, f64, f64)> = out
        .lines()
        .map(|line| {
            let mut f = line.trim().split('|');
            let (name, cpu, mem) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let cpu: f64 = cpu.trim_end_matches('%').parse().expect("cpu percent");
            let mem = mem.split('/').next().expect("usage").trim();
            let unit_at = mem.find(|c: char| c.is_ascii_alphabetic()).expect("a unit");
            let (n, unit) = mem.split_at(unit_at);
            let scale = match unit {
                "B" => 1.0,
                "KiB" | "kB" => 1024.0,
                "MiB" | "MB" => MIB,
                "GiB" | "GB" => MIB * 1024.0,
                other => panic!("unit {other}"),
            };
            (
                name,
                cpu / 100.0,
                n.parse::<f64>().expect("memory number") * scale,
            )
        })
        .collect();
    containers
        .iter()
        .map(|c| {
            let (_, cpu, mem) = parsed
                .iter()
                .find(|(n, _, _)| n == c)
                .unwrap_or_else(|| panic!("docker stats has no {c}:\n{out}"));
            (*cpu, *mem)
        })
        .collect()
}

/// Columns of `name`'s line in a `top` table.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.contains(&name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{table}"))
}

fn millicores(cell: &str) -> f64 {
    cell.strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not millicores: {cell}"))
}

fn mebibytes(cell: &str) -> f64 {
    cell.strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not MiB: {cell}"))
}

/// `a` is within `pct` % of `b`, or within `slack` of it.
fn close(a: f64, b: f64, pct: f64, slack: f64) -> bool {
    (a - b).abs() <= (b.abs() * pct / 100.0).max(slack)
}

#[test]
fn top_matches_docker_stats() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let burn_uid = c.pod("burn", "burner", &["spin"]);
    // A busy loop held to half a core by a CFS quota: its use is known (500m) even when
    // other work on the machine competes for the cores.
    let spin = c.container(
        "burn",
        &burn_uid,
        "spin",
        &["--cpus", "0.5"],
        "while :; do :; done",
    );
    // 48 MiB in the container's /dev/shm (tmpfs: counted in its memory, never inactive).
    let mem_uid = c.pod("mem", "idle", &["hold", "rest"]);
    let hold = c.container(
        "mem",
        &mem_uid,
        "hold",
        &[],
        "/bin/busybox dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null; \
         exec /bin/busybox sleep 3600",
    );
    let rest = c.container("mem", &mem_uid, "rest", &[], "exec /bin/busybox sleep 3600");

    let burn = c.pod_metrics("burn");
    assert_eq!(burn["kind"], "PodMetrics");
    assert_eq!(burn["metadata"]["labels"]["app"], "burner");
    assert_eq!(burn["containers"][0]["name"], "spin");
    let mem = c.pod_metrics("mem");
    let names: Vec<&str> = mem["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hold", "rest"]);

    // CPU and memory side by side with Docker, each at the same moment; the two CPU
    // windows differ (Docker's second against the kubelet's last sampling period), so a
    // few tries are allowed for a busy machine to agree.
    let k = c.kubectl();
    let mut agreed = false;
    for attempt in 1..=6 {
        let top = k.ok(&["top", "pod", "--containers"]);
        let d = docker_stats(&[&spin, &hold, &rest]);
        let (d_spin, d_hold, d_rest) = (d[0], d[1], d[2]);
        let api = c.pod_metrics("mem");
        let spin_row = row(&top, "spin");
        let (spin_cpu, spin_mem) = (millicores(spin_row[2]), mebibytes(spin_row[3]));
        let hold_ws = quantity(api["containers"][0]["usage"]["memory"].as_str().unwrap());
        let rest_ws = quantity(api["containers"][1]["usage"]["memory"].as_str().unwrap());
        let hold_row = row(&top, "hold");
        let rest_cpu = millicores(row(&top, "rest")[2]);
        eprintln!(
            "FIGURE attempt {attempt}: spin cpu top={spin_cpu}m docker={:.0}m; \
             hold mem api={:.2}MiB top={} docker={:.2}MiB; rest mem api={:.2}MiB \
             docker={:.2}MiB; rest cpu top={rest_cpu}m docker={:.0}m",
            d_spin.0 * 1000.0,
            hold_ws / MIB,
            hold_row[3],
            d_hold.1 / MIB,
            rest_ws / MIB,
            d_rest.1 / MIB,
            d_rest.0 * 1000.0,
        );
        // kubectl prints whole MiB, rounded down.
        assert!(
            (mebibytes(hold_row[3]) - (hold_ws / MIB).floor()).abs() < 0.5,
            "{top}"
        );
        assert!(spin_mem < 5.0, "a busy loop holds no memory: {top}");
        assert!(rest_cpu <= 20.0, "an idle container: {top}");
        let ok = close(spin_cpu, d_spin.0 * 1000.0, 10.0, 20.0)
            && close(spin_cpu, 500.0, 10.0, 0.0)
            && close(hold_ws, d_hold.1, 10.0, 0.0)
            && close(rest_ws, d_rest.1, 10.0, 64.0 * 1024.0);
        if ok {
            agreed = true;
            break;
        }
        thread::sleep(Duration::from_secs(5));
    }
    assert!(agreed, "kubectl top never came within 10 % of docker stats");

    // Pods summed; -l; the node with its share of allocatable.
    let pods = k.ok(&["top", "pods"]);
    assert_eq!(
        pods.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    let mem_row = row(&pods, "mem");
    assert!(mebibytes(mem_row[2]) >= 47.0, "{pods}");
    let selected = k.ok(&["top", "pod", "-l", "app=burner"]);
    assert!(
        selected.contains("burn") && !selected.contains("mem"),
        "{selected}"
    );
    let nodes = k.ok(&["top", "nodes"]);
    let node_row = row(&nodes, &c.node);
    assert!(
        millicores(node_row[1]) >= 450.0,
        "the busy loop runs on this node: {nodes}"
    );
    assert!(
        node_row[2].ends_with('%') && node_row[4].ends_with('%'),
        "{nodes}"
    );
    // Node memory: the working set as computed from /proc/meminfo here and now.
    let node_ws = mebibytes(node_row[3]) * MIB;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |k: &str| -> f64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap()
            * 1024.0
    };
    let expected = kib("MemTotal") - kib("MemFree") - kib("Inactive(file)");
    assert!(
        close(node_ws, expected, 10.0, 0.0),
        "node {node_ws} vs /proc {expected}"
    );
    let one = k.ok(&["top", "node", &c.node, "--no-headers"]);
    assert!(one.starts_with(&c.node), "{one}");
    let by_label = k.ok(&["top", "nodes", "-l", "kpt-metrics=yes"]);
    assert!(by_label.contains(&c.node), "{by_label}");

    // kubectl get, printed by the server (metrics-server's columns) or as objects.
    let got = k.ok(&["get", "podmetrics"]);
    assert_eq!(
        got.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "CPU", "MEMORY", "WINDOW"]
    );
    assert_eq!(row(&got, "burn")[3], "10s", "{got}");
    let node_json: Value =
        serde_json::from_str(&k.ok(&["get", "nodemetrics", &c.node, "-o", "json"])).expect("json");
    assert_eq!(node_json["kind"], "NodeMetrics");
    assert!(quantity(node_json["usage"]["cpu"].as_str().unwrap()) > 0.45);

    // kctl prints the same table.
    let (ok, kpods, _) = c.kctl(&["top", "pods", "--containers", "-l", "app=idle"]);
    assert!(ok);
    assert_eq!(
        kpods
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    assert!(mebibytes(row(&kpods, "hold")[3]) >= 47.0, "{kpods}");
    assert!(!kpods.contains("spin"), "{kpods}");
    let (ok, knodes, _) = c.kctl(&["top", "node"]);
    assert!(ok);
    assert!(millicores(row(&knodes, &c.node)[1]) >= 450.0, "{knodes}");
    let (ok, kall, _) = c.kctl(&["top", "pod", "-A"]);
    assert!(ok);
    assert!(kall.starts_with("NAMESPACE"), "{kall}");
    assert_eq!(row(&kall, "burn")[0], "default");
}

#[test]
fn top_error_paths() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let k = c.kubectl();
    // No such pod: the pod lookup's NotFound, as metrics-server answers.
    let (ok, _, err) = k.run(&["top", "pod", "nope"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    // A pod with no container running yet: no figures.
    c.pod("waiting", "later", &["app"]);
    let (ok, _, err) = k.run(&["top", "pod", "waiting"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): podmetrics.metrics.k8s.io \"default/waiting\" not found"
    );
    let (ok, _, err) = k.run(&["top", "pod", "-l", "app=later"]);
    assert!(!ok);
    assert_eq!(err.trim(), "error: metrics not available yet");
    let (ok, _, err) = c.kctl(&["top", "pod", "-l", "app=later"]);
    assert!(!ok);
    assert_eq!(err.trim(), "error: metrics not available yet");
    let (ok, _, err) = k.run(&["top", "pod", "-l", "app=none"]);
    assert!(ok);
    assert_eq!(err.trim(), "No resources found in default namespace.");
    let (ok, _, err) = k.run(&["top", "node", "nope"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): node \"nope\" not found"
    );
    // A node may not read metrics (Kubernetes' default RBAC gives it none).
    let r = c
        .http
        .with_token(Some(&c.api.node_token(&c.node)))
        .get("/apis/metrics.k8s.io/v1beta1/nodes");
    assert_eq!(r.code, 403, "{}", r.body);
    assert!(
        r.body
            .contains("cannot list resource \\\"nodes\\\" in API group \\\"metrics.k8s.io\\\""),
        "{}",
        r.body
    );
    // Discovery lists the group, so kubectl finds the API.
    let groups = k.ok(&["api-versions"]);
    assert!(
        groups.lines().any(|l| l == "metrics.k8s.io/v1beta1"),
        "{groups}"
    );
    let resources = k.ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    assert!(
        resources.contains("PodMetrics") && resources.contains("NodeMetrics"),
        "{resources}"
    );
    // A node whose kubelet is unreachable is left out.
    let r = c.http.post(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gone"}}),
    );
    assert_eq!(r.code, 201, "{}", r.body);
    let r = c.http.patch(
        "/api/v1/nodes/gone/status",
        "application/merge-patch+json",
        &json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 9}},
            "conditions": [{"type": "Ready", "status": "True"}],
        }})
        .to_string(),
    );
    assert_eq!(r.code, 200, "{}", r.body);
    let list = c.http.get("/apis/metrics.k8s.io/v1beta1/nodes").json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"gone"), "{list}");
}

/// The figure: `kubectl top` against `docker stats --no-stream` for the same
/// containers, five rounds. Docker's CPU figure covers about a second, the kubelet's its
/// sampling period (10 s), so each round compares kubectl's CPU with the mean of Docker's
/// readings over that period (and, printed, with the last one alone); memory with Docker's
/// last reading. Each container's median difference must be within 10 %.
#[test]
#[ignore = "measurement for the closing note: \
            cargo test -p kproxy-tests --test metrics -- --ignored --nocapture"]
fn figure_top_against_docker_stats() {
    if !ready() {
        return;
    }
    let c = Cluster::start();
    let spin = "while :; do :; done";
    let fill = |mib: u32| {
        format!("/bin/busybox dd if=/dev/zero of=/dev/shm/fill bs=1M count={mib} 2>/dev/null; ")
    };
    // Busy loops held by CFS quotas (0.85 cores in all, leaving room on two shared cores, so
    // each gets what its quota allows whatever else runs) and memory held in tmpfs.
    let specs: [(&str, &[&str], String); 4] = [
        ("half", &["--cpus", "0.5"], spin.to_string()),
        (
            "tenth",
            &["--cpus", "0.1", "--shm-size", "128m"],
            format!("{}{spin}", fill(96)),
        ),
        (
            "quarter",
            &["--cpus", "0.25"],
            format!("{}{spin}", fill(16)),
        ),
        (
            "hold",
            &[],
            format!("{}exec /bin/busybox sleep 3600", fill(48)),
        ),
    ];
    let mut docker_names = Vec::new();
    for (name, opts, script) in &specs {
        let uid = c.pod(&format!("fig-{name}"), "fig", &[name]);
        docker_names.push(c.container(&format!("fig-{name}"), &uid, name, opts, script));
    }
    for (name, _, _) in &specs {
        c.pod_metrics(&format!("fig-{name}"));
    }
    let k = c.kubectl();
    // (container, [(top cpu m, docker cpu m, top memory MiB, docker memory MiB)])
    let names: Vec<&str> = docker_names.iter().map(String::as_str).collect();
    // Per container and round: (top cpu m, docker's last cpu m, docker's mean cpu m over the
    // sampling period, top memory MiB, docker memory MiB).
    let mut rounds: Vec<Vec<[f64; 5]>> = vec![Vec::new(); specs.len()];
    for round in 1..=5 {
        // Docker's readings (a second each) across one sampling period of the kubelet, then
        // kubectl's figures right after the last of them.
        let mut period = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            period.push(docker_stats(&names));
        }
        let top = k.ok(&["top", "pod", "--containers", "-l", "app=fig"]);
        let api = c
            .http
            .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
            .json();
        let last = period.last().expect("a reading");
        for (i, (name, _, _)) in specs.iter().enumerate() {
            let cpu = millicores(row(&top, name)[2]);
            let pod = api["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["metadata"]["name"] == format!("fig-{name}"))
                .expect("pod metrics");
            let mem = quantity(pod["containers"][0]["usage"]["memory"].as_str().unwrap()) / MIB;
            let mean = period.iter().map(|p| p[i].0).sum::<f64>() / period.len() as f64;
            let r = [cpu, last[i].0 * 1000.0, mean * 1000.0, mem, last[i].1 / MIB];
            eprintln!(
                "FIGURE round {round} {name:8} cpu top {:4.0}m docker {:4.0}m (mean of {} over \
                 the period {:4.0}m) | memory top {:6.2}MiB docker {:6.2}MiB",
                r[0],
                r[1],
                period.len(),
                r[2],
                r[3],
                r[4]
            );
            rounds[i].push(r);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Relative to at least 50m: an idle container's 1m against Docker's 0m is no error.
    let diff = |a: f64, b: f64, floor: f64| (a - b).abs() / b.max(floor);
    for (i, (name, _, _)) in specs.iter().enumerate() {
        let single = median(rounds[i].iter().map(|r| diff(r[0], r[1], 50.0)).collect());
        let cpu_diff = median(rounds[i].iter().map(|r| diff(r[0], r[2], 50.0)).collect());
        let mem_diff = median(rounds[i].iter().map(|r| diff(r[3], r[4], 0.01)).collect());
        eprintln!(
            "FIGURE {name:8} median |top - docker| / docker: cpu {:.1} % (against one docker \
             reading: {:.1} %), memory {:.1} %",
            cpu_diff * 100.0,
            single * 100.0,
            mem_diff * 100.0
        );
        assert!(
            cpu_diff <= 0.10 && mem_diff <= 0.10,
            "{name}: {:?}",
            rounds[i]
        );
    }
}
