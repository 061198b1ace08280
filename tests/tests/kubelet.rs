//! Privileged: the kubelet end to end — a real API server, a real `kproxy-kubelet` running
//! pods as Docker containers in network namespaces on its own bridge. Node registration and
//! the Lease heartbeat; pods serving HTTP to the host and to each other; restart policies and
//! the crash-loop back-off; liveness, readiness and startup probes; adoption of running pods
//! and orphan cleanup across a kubelet restart; graceful deletion; image pull failures; and
//! specs the API refuses. Each test has its own API server and kubelet (node, bridge, pod
//! CIDR), so they run in parallel; the harness removes what they leave (see
//! `kproxy_tests::kubelet`).
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Node, Pod},
};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    eventually,
    kubelet::{
        ATTEMPT_LABEL, CONTAINER_NAME_LABEL, KIND_CONTAINER, KIND_LABEL, KIND_SANDBOX, Kubelet,
        POD_UID_LABEL, condition, consistently, container_status, docker_exec, docker_id,
        docker_logs, http_get, inspect, is_ready, link_exists, phase, pod_ip, try_inspect, uid,
    },
    privileged,
};
use serde_json::{Value, json};

const NS: &str = "default";
const HTTPD: &str = "kproxy/httpd:1";

/// A container of the httpd image running a busybox shell command (the image has busybox
/// and /www, nothing else: not even /tmp).
fn shell(name: &str, script: &str) -> Value {
    json!({"name": name, "image": HTTPD, "command": ["/bin/busybox", "sh", "-c", script]})
}

fn httpd(name: &str) -> Value {
    json!({"name": name, "image": HTTPD})
}

/// An API server with its own data directory (dropped after the kubelet: declare it first).
fn api_server() -> (TempDir, ApiServer) {
    let dir = TempDir::new("kpt-kl-api");
    let api = ApiServer::start(dir.path(), &[]);
    (dir, api)
}

fn running(pod: &Pod, container: &str) -> bool {
    container_status(pod, container)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

fn restarts(pod: &Pod, container: &str) -> i32 {
    container_status(pod, container).map_or(0, |s| s.restart_count)
}

/// `lastState.terminated` of a container.
fn last_terminated(
    pod: &Pod,
    container: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    container_status(pod, container)?
        .last_state
        .as_ref()?
        .terminated
        .clone()
}

/// `state.waiting` (reason, message) of a container.
fn waiting(pod: &Pod, container: &str) -> Option<(String, String)> {
    let w = container_status(pod, container)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

fn terminated_code(pod: &Pod, container: &str) -> Option<i32> {
    container_status(pod, container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// None of the pod's containers, its veth or its address is left on the node.
/// The reasons of the events about pod `name`, oldest first, as `kubectl describe` finds them.
fn event_reasons(k: &Kubelet, name: &str) -> Vec<String> {
    let api: kube::Api<Event> = kube::Api::namespaced(k.client(), NS);
    let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={name}"));
    let mut events = k.block_on(api.list(&lp)).expect("list events").items;
    events.sort_by_key(|e| e.metadata.name.clone());
    // A repeated event is one object with a count (aggregated as the kubelet's recorder does):
    // one entry per occurrence.
    events
        .into_iter()
        .flat_map(|e| {
            let n = usize::try_from(e.count.unwrap_or(1)).unwrap_or(1);
            std::iter::repeat_n(e.reason, n).flatten()
        })
        .collect()
}

fn pod_cleaned(k: &Kubelet, pod_uid: &str) -> bool {
    k.pod_containers(pod_uid).is_empty()
        && !link_exists(&kproxy_podnet::host_ifname(pod_uid))
        && !k.ipam_owners().contains(pod_uid)
}

/// The kubelet removes the pod object only after tearing the pod down, so once the object is
/// gone nothing of the pod may be left.
fn assert_pod_cleaned(k: &Kubelet, pod_uid: &str) {
    assert!(
        pod_cleaned(k, pod_uid),
        "pod {pod_uid} left: containers {:?}, veth {}, address {}",
        k.pod_containers(pod_uid),
        link_exists(&kproxy_podnet::host_ifname(pod_uid)),
        k.ipam_owners().contains(pod_uid)
    );
}

#[test]
fn node_registers_ready_and_renews_its_lease() {
    if !privileged("node_registers_ready_and_renews_its_lease") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &["--heartbeat", "1"]);
    let nodes: kube::Api<Node> = kube::Api::all(k.client());
    let node = k
        .block_on(nodes.get(&k.node))
        .expect("the Node is registered");

    let spec = node.spec.expect("spec");
    assert_eq!(spec.pod_cidr.as_deref(), Some(k.cidr.to_string().as_str()));
    let status = node.status.expect("status");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    let cap = status.capacity.expect("capacity");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert_eq!(cap["cpu"].0, cpus.to_string());
    assert!(
        cap["memory"].0.ends_with("Ki") && cap["memory"].0 != "0Ki",
        "memory {:?}",
        cap["memory"].0
    );
    assert_eq!(cap["pods"].0, "110");
    let internal: Vec<&str> = status
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
        .collect();
    assert_eq!(internal, ["127.0.0.1"]);
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port);
    assert_eq!(port, Some(i32::from(k.port)));
    assert_ne!(k.port, 0);

    let leases: kube::Api<Lease> = kube::Api::namespaced(k.client(), "kube-node-lease");
    let renew_time = || {
        let lease = k
            .block_on(leases.get_opt(&k.node))
            .expect("read the Lease")?;
        let spec = lease.spec?;
        assert_eq!(spec.holder_identity.as_deref(), Some(k.node.as_str()));
        assert!(spec.lease_duration_seconds.is_some_and(|d| d > 0));
        spec.renew_time.map(|t| t.0)
    };
    let mut first = None;
    eventually("the Lease exists", || {
        first = renew_time();
        first.is_some()
    });
    eventually("the Lease is renewed", || renew_time() > first);
}

#[test]
fn pods_run_serve_http_and_reach_each_other() {
    if !privileged("pods_run_serve_http_and_reach_each_other") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let loop_wget =
        "while true; do /bin/busybox wget -qO- http://127.0.0.1/; /bin/busybox sleep 1; done";
    k.create_pod(
        NS,
        "web",
        json!({"containers": [httpd("httpd"), shell("sidecar", loop_wget)]}),
    );
    let web = k.wait_pod(NS, "web", "Running and Ready", is_ready);
    let st = web.status.as_ref().expect("status");
    let ip = pod_ip(&web).expect("a pod IP");
    assert!(k.cidr.contains(&ip), "{ip} is outside {}", k.cidr);
    assert_ne!(
        ip,
        k.cidr.hosts().next().expect("gateway"),
        "the bridge's own address"
    );
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(condition(&web, "ContainersReady"), Some("True"));
    for name in ["httpd", "sidecar"] {
        let cs = container_status(&web, name).expect("container status");
        assert_eq!(cs.restart_count, 0, "{name}");
        assert!(cs.ready, "{name} ready");
        assert_eq!(cs.started, Some(true), "{name} started");
        assert!(running(&web, name), "{name} running");
        let id = docker_id(cs).expect("containerID is docker://<id>");
        assert_eq!(inspect(id)["State"]["Running"], json!(true), "{name}");
    }

    // The host reaches the pod on its own address.
    let mut page = None;
    eventually("the pod answers HTTP from the host", || {
        page = http_get(&format!("http://{ip}/"));
        page.is_some()
    });
    assert!(
        page.unwrap_or_default().contains("pod: web"),
        "the page names the pod"
    );

    // The sidecar shares the pod's network namespace: localhost is httpd.
    let sidecar = docker_id(container_status(&web, "sidecar").expect("sidecar")).expect("id");
    let sidecar = sidecar.to_string();
    eventually("the sidecar fetched the page over localhost", || {
        docker_logs(&sidecar).contains("pod: web")
    });

    // Pod to pod over the bridge.
    k.create_pod(
        NS,
        "client",
        json!({"restartPolicy": "Never",
               "containers": [shell("wget", &format!("/bin/busybox wget -qO- http://{ip}/"))]}),
    );
    let client = k.wait_pod(NS, "client", "Succeeded", |p| phase(p) == Some("Succeeded"));
    let cs = container_status(&client, "wget").expect("status");
    assert_eq!(terminated_code(&client, "wget"), Some(0));
    let logs = docker_logs(docker_id(cs).expect("id"));
    assert!(logs.contains("pod: web"), "client output: {logs}");
    assert_ne!(pod_ip(&client), Some(ip), "each pod has its own address");
}

#[test]
fn crash_loop_backs_off_longer_each_time() {
    if !privileged("crash_loop_backs_off_longer_each_time") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &["--restart-backoff", "1"]);
    let pod = k.create_pod(NS, "crash", json!({"containers": [shell("app", "exit 1")]}));
    let pod_uid = uid(&pod);

    // Docker keeps only the last two attempts, so record each one's start as it appears.
    let mut starts: BTreeMap<u32, Timestamp> = BTreeMap::new();
    let (mut saw_backoff, mut saw_exit_1) = (false, false);
    k.wait_pod_for(
        NS,
        "crash",
        "restartCount >= 3 with CrashLoopBackOff and lastState exit 1 seen",
        Duration::from_secs(40),
        |p| {
            for id in k.pod_containers(&pod_uid) {
                let Some(c) = try_inspect(&id) else { continue };
                if c["Config"]["Labels"][KIND_LABEL] != KIND_CONTAINER {
                    continue;
                }
                let attempt: u32 = c["Config"]["Labels"][ATTEMPT_LABEL]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("attempt label");
                let started: Option<Timestamp> = c["State"]["StartedAt"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .filter(|t: &Timestamp| t.as_second() > 0);
                if let Some(t) = started {
                    starts.insert(attempt, t);
                }
            }
            saw_backoff |= waiting(p, "app").is_some_and(|(r, _)| r == "CrashLoopBackOff");
            saw_exit_1 |= last_terminated(p, "app").is_some_and(|t| t.exit_code == 1);
            restarts(p, "app") >= 3 && saw_backoff && saw_exit_1 && starts.len() >= 4
        },
    );
    let s: Vec<Timestamp> = (0..4)
        .map(|a| {
            *starts
                .get(&a)
                .unwrap_or_else(|| panic!("attempt {a} never seen: {starts:?}"))
        })
        .collect();
    let gaps: Vec<f64> = s
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    eprintln!("gaps between starts: {gaps:?}");
    // Back-off 1 s, 2 s, 4 s after each exit (the run itself is near zero).
    for (i, (gap, min)) in gaps.iter().zip([1.0, 2.0, 4.0]).enumerate() {
        assert!(
            *gap >= min - 0.05,
            "gap {i} is {gap:.2}s, expected >= {min}s: {gaps:?}"
        );
    }
    // The lower bounds above already double; this only adds that the overall trend is up,
    // with slack for a loaded machine stretching one early gap.
    assert!(gaps[2] > gaps[0], "gaps grow: {gaps:?}");
    let p = k.get_pod(NS, "crash").expect("pod");
    assert_eq!(
        phase(&p),
        Some("Running"),
        "restartPolicy Always keeps the pod Running"
    );
    assert_eq!(condition(&p, "Ready"), Some("False"));
    let pod_name = p.metadata.name.clone().expect("name");
    eventually("a BackOff event per waiting attempt", || {
        let r = event_reasons(&k, &pod_name);
        let backoffs = r.iter().filter(|x| *x == "BackOff").count();
        backoffs >= 2 && r.iter().filter(|x| *x == "Started").count() >= 3
    });
}

#[test]
fn restart_policies_decide_the_phase() {
    if !privileged("restart_policies_decide_the_phase") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let cases = [
        ("never-fails", "Never", "exit 3"),
        ("never-succeeds", "Never", "exit 0"),
        ("onfailure-succeeds", "OnFailure", "exit 0"),
        ("onfailure-fails", "OnFailure", "exit 1"),
    ];
    let mut uids = BTreeMap::new();
    for (name, policy, script) in cases {
        let p = k.create_pod(
            NS,
            name,
            json!({"restartPolicy": policy, "containers": [shell("app", script)]}),
        );
        uids.insert(name, uid(&p));
    }

    let failed = k.wait_pod(NS, "never-fails", "Failed", |p| phase(p) == Some("Failed"));
    assert_eq!(terminated_code(&failed, "app"), Some(3));
    let t = container_status(&failed, "app")
        .and_then(|s| s.state.as_ref()?.terminated.clone())
        .expect("terminated");
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert!(t.container_id.is_some_and(|id| id.starts_with("docker://")));
    assert_eq!(condition(&failed, "Ready"), Some("False"));

    for name in ["never-succeeds", "onfailure-succeeds"] {
        let ok = k.wait_pod(NS, name, "Succeeded", |p| phase(p) == Some("Succeeded"));
        assert_eq!(terminated_code(&ok, "app"), Some(0), "{name}");
        assert_eq!(restarts(&ok, "app"), 0, "{name}");
        let t = container_status(&ok, "app")
            .and_then(|s| s.state.as_ref()?.terminated.clone())
            .expect("terminated");
        assert_eq!(t.reason.as_deref(), Some("Completed"), "{name}");
    }

    // OnFailure restarts a failing container (and the pod stays Running).
    let looping = k.wait_pod(NS, "onfailure-fails", "restarted", |p| {
        restarts(p, "app") >= 1 && last_terminated(p, "app").is_some_and(|t| t.exit_code == 1)
    });
    assert_eq!(phase(&looping), Some("Running"));

    // Finished pods: the exited container is kept (for logs), never restarted, and the
    // sandbox's address is freed.
    for name in ["never-fails", "never-succeeds", "onfailure-succeeds"] {
        let pod_uid = &uids[name];
        eventually(&format!("{name}: the address is released"), || {
            !k.ipam_owners().contains(pod_uid)
        });
        let app = k.containers(&[(POD_UID_LABEL, pod_uid), (KIND_LABEL, KIND_CONTAINER)]);
        assert_eq!(app.len(), 1, "{name}: one attempt only");
        assert_eq!(inspect(&app[0])["State"]["Running"], json!(false));
        let p = k.get_pod(NS, name).expect("pod");
        assert_eq!(restarts(&p, "app"), 0, "{name}");
    }
}

#[test]
fn failing_liveness_probes_restart_the_container() {
    if !privileged("failing_liveness_probes_restart_the_container") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let mut web = httpd("web");
    // Nothing listens on 8081.
    web["livenessProbe"] = json!({"httpGet": {"path": "/", "port": 8081},
                                  "periodSeconds": 1, "failureThreshold": 2});
    k.create_pod(
        NS,
        "http-live",
        json!({"terminationGracePeriodSeconds": 2, "containers": [web]}),
    );

    let mut app = shell(
        "app",
        "/bin/busybox mkdir -p /tmp; /bin/busybox touch /tmp/ok; /bin/busybox sleep 3; /bin/busybox rm /tmp/ok; exec /bin/busybox sleep 3600",
    );
    app["livenessProbe"] = json!({"exec": {"command": ["/bin/busybox", "test", "-f", "/tmp/ok"]},
                                  "periodSeconds": 1, "failureThreshold": 2});
    k.create_pod(
        NS,
        "exec-live",
        json!({"terminationGracePeriodSeconds": 2, "containers": [app]}),
    );

    for (name, container) in [("http-live", "web"), ("exec-live", "app")] {
        let p = k.wait_pod(NS, name, "restarted by its liveness probe", |p| {
            restarts(p, container) >= 1 && last_terminated(p, container).is_some()
        });
        let last = last_terminated(&p, container).expect("lastState.terminated");
        // Stopped by a signal (SIGTERM through the init, or SIGKILL), not its own exit; the
        // httpd image traps SIGTERM, drains for 1 s and exits 0.
        let expected: &[i32] = if name == "http-live" {
            &[0]
        } else {
            &[137, 143]
        };
        assert!(
            expected.contains(&last.exit_code),
            "{name}: exit code {}",
            last.exit_code
        );
        assert!(last.finished_at.is_some());
    }
    // The exec probe passed for the first seconds: the container was not killed at once.
    let p = k.get_pod(NS, "exec-live").expect("pod");
    let last = last_terminated(&p, "app").expect("terminated");
    let ran = last
        .finished_at
        .expect("finishedAt")
        .0
        .duration_since(last.started_at.expect("startedAt").0);
    assert!(
        ran.as_secs_f64() >= 3.0,
        "killed after {ran:?}, while /tmp/ok still existed"
    );
    // The story `kubectl describe pod` tells.
    for name in ["http-live", "exec-live"] {
        let mut reasons = Vec::new();
        eventually(&format!("{name}'s events"), || {
            reasons = event_reasons(&k, name);
            ["Pulled", "Created", "Started", "Unhealthy", "Killing"]
                .iter()
                .all(|r| reasons.iter().any(|x| x == r))
        });
        let first_start = reasons.iter().position(|r| r == "Started");
        let kill = reasons.iter().position(|r| r == "Killing");
        assert!(
            first_start < kill,
            "{name}: started before killed: {reasons:?}"
        );
    }
}

#[test]
fn readiness_and_startup_probes_gate_ready() {
    if !privileged("readiness_and_startup_probes_gate_ready") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let mut web = httpd("web");
    web["readinessProbe"] = json!({"httpGet": {"path": "/ready.html", "port": 80},
                                   "periodSeconds": 1, "failureThreshold": 1});
    k.create_pod(NS, "gated", json!({"containers": [web]}));
    let mut slow = shell(
        "slow",
        "/bin/busybox mkdir -p /tmp; exec /bin/busybox sleep 3600",
    );
    slow["startupProbe"] = json!({"exec": {"command": ["/bin/busybox", "test", "-f", "/tmp/started"]},
                                  "periodSeconds": 1, "failureThreshold": 60});
    k.create_pod(NS, "starting", json!({"containers": [slow]}));

    let not_ready = |p: &Pod, c: &str| {
        phase(p) == Some("Running")
            && running(p, c)
            && condition(p, "Ready") == Some("False")
            && condition(p, "ContainersReady") == Some("False")
            && container_status(p, c).is_some_and(|s| !s.ready)
    };
    let gated = k.wait_pod(NS, "gated", "Running, not ready", |p| not_ready(p, "web"));
    for kind in ["Ready", "ContainersReady"] {
        let c = gated
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
            .expect("condition");
        assert_eq!(c.reason.as_deref(), Some("ContainersNotReady"), "{kind}");
        assert_eq!(
            c.message.as_deref(),
            Some("containers with unready status: [web]"),
            "{kind}"
        );
    }
    k.wait_pod(NS, "starting", "Running, not started", |p| {
        not_ready(p, "slow")
            && container_status(p, "slow").is_some_and(|s| s.started == Some(false))
    });
    // httpd answers 404 for /ready.html, and the startup probe's file does not exist.
    consistently("both pods stay unready", Duration::from_secs(3), || {
        let g = k.get_pod(NS, "gated").expect("gated");
        let s = k.get_pod(NS, "starting").expect("starting");
        not_ready(&g, "web")
            && not_ready(&s, "slow")
            && container_status(&s, "slow").is_some_and(|c| c.started == Some(false))
    });

    let web_id = docker_id(container_status(&gated, "web").expect("web"))
        .expect("id")
        .to_string();
    docker_exec(&web_id, &["/bin/busybox", "touch", "/www/ready.html"]);
    let ready = k.wait_pod(NS, "gated", "Ready after /ready.html exists", is_ready);
    assert!(container_status(&ready, "web").is_some_and(|s| s.ready));
    assert_eq!(condition(&ready, "ContainersReady"), Some("True"));
    assert_eq!(
        restarts(&ready, "web"),
        0,
        "readiness failures never restart"
    );

    let slow_id = {
        let p = k.get_pod(NS, "starting").expect("starting");
        docker_id(container_status(&p, "slow").expect("slow"))
            .expect("id")
            .to_string()
    };
    docker_exec(&slow_id, &["/bin/busybox", "touch", "/tmp/started"]);
    let started = k.wait_pod(NS, "starting", "started and Ready", |p| {
        is_ready(p)
            && container_status(p, "slow").is_some_and(|s| s.started == Some(true) && s.ready)
    });
    assert_eq!(restarts(&started, "slow"), 0);
}

#[test]
fn restarted_kubelet_adopts_running_pods_and_removes_orphans() {
    if !privileged("restarted_kubelet_adopts_running_pods_and_removes_orphans") {
        return;
    }
    let (_dir, api) = api_server();
    let mut k = Kubelet::start(&api, &[]);
    k.create_pod(NS, "keep", json!({"containers": [httpd("web")]}));
    k.create_pod(NS, "gone", json!({"containers": [httpd("web")]}));
    k.create_pod(NS, "finish", json!({"containers": [httpd("web")]}));
    k.create_pod(NS, "crash", json!({"containers": [shell("app", "exit 1")]}));
    let keep = k.wait_pod(NS, "keep", "Ready", is_ready);
    let gone = k.wait_pod(NS, "gone", "Ready", is_ready);
    let finish = k.wait_pod(NS, "finish", "Ready", is_ready);
    let keep_ip = pod_ip(&keep).expect("ip");
    let keep_id = container_status(&keep, "web").and_then(|s| s.container_id.clone());
    let ready_since = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.clone())
    };
    let keep_ready_since = ready_since(&keep);
    let gone_uid = uid(&gone);
    let finish_uid = uid(&finish);
    assert!(k.ipam_owners().contains(&gone_uid));
    let crashes = restarts(
        &k.wait_pod(NS, "crash", "restarted twice", |p| restarts(p, "app") >= 2),
        "app",
    );

    k.kill();
    // Force-deleted while the kubelet is away: only the node's own cleanup can remove it.
    k.delete_pod(NS, "gone", Some(0));
    k.wait_gone(NS, "gone", Duration::from_secs(5));
    assert!(
        !k.pod_containers(&gone_uid).is_empty(),
        "nothing stopped it yet"
    );
    // Deleted gracefully while the kubelet is away: it stays, marked, until the kubelet is back.
    k.delete_pod(NS, "finish", None);
    let marked = k
        .get_pod(NS, "finish")
        .expect("a graceful delete waits for the kubelet");
    assert!(marked.metadata.deletion_timestamp.is_some());
    k.restart();

    eventually(
        "the orphan's containers, veth and address are removed",
        || pod_cleaned(&k, &gone_uid),
    );
    assert!(k.logged("removing the containers of a pod that is gone"));
    k.wait_gone(NS, "finish", Duration::from_secs(10));
    assert_pod_cleaned(&k, &finish_uid);
    // The restart count (and so the back-off) lives in Docker's labels: it goes on, not over.
    let p = k.wait_pod(NS, "crash", "restarted again", |p| {
        restarts(p, "app") > crashes
    });
    assert_eq!(restarts(&p, "app"), crashes + 1);

    let keep = k.get_pod(NS, "keep").expect("keep");
    assert!(is_ready(&keep));
    assert_eq!(pod_ip(&keep), Some(keep_ip), "same address");
    assert_eq!(
        container_status(&keep, "web").and_then(|s| s.container_id.clone()),
        keep_id,
        "same container"
    );
    assert_eq!(restarts(&keep, "web"), 0);
    assert_eq!(ready_since(&keep), keep_ready_since, "Ready never flipped");
    assert!(
        http_get(&format!("http://{keep_ip}/")).is_some_and(|b| b.contains("pod: keep")),
        "the adopted pod still serves"
    );
    // Still adopted a little later (the worker's first resync went through).
    consistently(
        "the adopted pod stays Ready",
        Duration::from_secs(2),
        || {
            let p = k.get_pod(NS, "keep").expect("keep");
            is_ready(&p)
                && container_status(&p, "web").and_then(|s| s.container_id.clone()) == keep_id
        },
    );
    k.assert_running();
}

#[test]
fn deleted_pods_stop_gracefully_and_free_everything() {
    if !privileged("deleted_pods_stop_gracefully_and_free_everything") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let web = k.create_pod(NS, "web", json!({"containers": [httpd("web")]}));
    let stubborn = k.create_pod(
        NS,
        "stubborn",
        json!({"terminationGracePeriodSeconds": 2, "containers": [shell(
            "app",
            "trap '' TERM; while true; do /bin/busybox sleep 1; done"
        )]}),
    );
    let web_uid = uid(&web);
    let stubborn_uid = uid(&stubborn);
    k.wait_pod(NS, "web", "Ready", is_ready);
    k.wait_pod(NS, "stubborn", "Ready", is_ready);
    let ifname = kproxy_podnet::host_ifname(&web_uid);
    assert!(link_exists(&ifname), "{ifname} exists while the pod runs");
    assert!(k.ipam_owners().contains(&web_uid));

    // httpd stops on SIGTERM (through the container's init) after its 1 s drain: gone quickly.
    k.delete_pod(NS, "web", None);
    let took = k.wait_gone(NS, "web", Duration::from_secs(5));
    eprintln!("web deleted in {took:?}");
    assert_pod_cleaned(&k, &web_uid);

    // SIGTERM ignored: SIGKILL after the 2 s grace period.
    k.delete_pod(NS, "stubborn", None);
    let took = k.wait_gone(NS, "stubborn", Duration::from_secs(15));
    eprintln!("stubborn deleted in {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "killed before its grace period: {took:?}"
    );
    assert_pod_cleaned(&k, &stubborn_uid);
}

#[test]
fn missing_image_reports_pull_errors_while_other_pods_run() {
    if !privileged("missing_image_reports_pull_errors_while_other_pods_run") {
        return;
    }
    let (_dir, api) = api_server();
    let mut k = Kubelet::start(&api, &[]);
    let image = "kproxy/does-not-exist:1";
    k.create_pod(
        NS,
        "ghost",
        json!({"containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}]}),
    );
    let ghost = k.wait_pod(NS, "ghost", "ErrImagePull or ImagePullBackOff", |p| {
        waiting(p, "app").is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    let (_, message) = waiting(&ghost, "app").expect("waiting");
    assert!(
        message.contains(image),
        "message names the image: {message}"
    );
    // The engine's reason follows the kubelet's prefix.
    let engine = message
        .rsplit_once("\": ")
        .map(|(_, m)| m.trim())
        .unwrap_or_default();
    assert!(!engine.is_empty(), "no engine message in {message:?}");
    assert_eq!(phase(&ghost), Some("Pending"));
    assert_eq!(condition(&ghost, "Ready"), Some("False"));
    eventually("Pulling, then Failed events", || {
        let r = event_reasons(&k, "ghost");
        r.iter().any(|x| x == "Pulling") && r.iter().any(|x| x == "Failed")
    });

    k.create_pod(NS, "web", json!({"containers": [httpd("web")]}));
    let web = k.wait_pod(NS, "web", "Ready", is_ready);
    let ip = pod_ip(&web).expect("ip");
    eventually("the other pod serves", || {
        http_get(&format!("http://{ip}/")).is_some_and(|b| b.contains("pod: web"))
    });
    let ghost = k.get_pod(NS, "ghost").expect("ghost");
    assert!(
        waiting(&ghost, "app").is_some(),
        "still waiting for its image"
    );
    k.assert_running();
    // A pod whose container never ran is deleted like any other.
    k.delete_pod(NS, "ghost", None);
    k.wait_gone(NS, "ghost", Duration::from_secs(10));
    assert_pod_cleaned(&k, &uid(&ghost));
}

#[test]
fn invalid_pods_are_rejected_and_nothing_runs() {
    if !privileged("invalid_pods_are_rejected_and_nothing_runs") {
        return;
    }
    let (_dir, api) = api_server();
    let mut k = Kubelet::start(&api, &[]);
    let bad = [
        ("bad-name", json!({"containers": [httpd("Bad_Name")]})),
        ("no-containers", json!({"containers": []})),
    ];
    for (name, spec) in bad {
        match k.try_create(NS, &k.manifest(name, spec)) {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{name}: {e:?}"),
            other => panic!("{name}: expected 422, got {other:?}"),
        }
        assert!(k.get_pod(NS, name).is_none(), "{name} was not stored");
    }
    // A valid pod after them runs, and is the only thing on the node.
    let ok = k.create_pod(NS, "ok", json!({"containers": [httpd("web")]}));
    k.wait_pod(NS, "ok", "Ready", is_ready);
    let all = k.containers(&[]);
    let ours = k.pod_containers(&uid(&ok));
    assert_eq!(all.len(), 2, "sandbox + web only: {all:?}");
    assert_eq!(all.iter().filter(|id| ours.contains(id)).count(), 2);
    k.assert_running();
}

#[test]
fn pods_started_while_orphans_are_removed_keep_their_network() {
    if !privileged("pods_started_while_orphans_are_removed_keep_their_network") {
        return;
    }
    let (_dir, api) = api_server();
    let mut k = Kubelet::start(&api, &[]);
    // Enough orphans that removing them takes a while after the restarted kubelet's listing.
    let names: Vec<String> = (0..6).map(|i| format!("orphan-{i}")).collect();
    let spec = json!({"containers": [httpd("web"), shell("side", "exec /bin/busybox sleep 3600")]});
    for n in &names {
        k.create_pod(NS, n, spec.clone());
    }
    for n in &names {
        k.wait_pod(NS, n, "Ready", is_ready);
    }
    k.kill();
    for n in &names {
        k.delete_pod(NS, n, Some(0));
    }
    k.restart();
    // Bound after the listing: not "live" for the orphan sweep, yet not an orphan.
    let fresh = k.create_pod(NS, "fresh", json!({"containers": [httpd("web")]}));
    let fresh_uid = uid(&fresh);
    let p = k.wait_pod(NS, "fresh", "Ready", is_ready);
    let ip = pod_ip(&p).expect("ip");
    eventually("the orphans are removed", || {
        k.containers(&[]).len() == 2 && k.ipam_owners().len() == 1
    });
    assert!(
        k.ipam_owners().contains(&fresh_uid),
        "the new pod's address was released"
    );
    assert!(
        link_exists(&kproxy_podnet::host_ifname(&fresh_uid)),
        "the new pod's veth was removed"
    );
    assert!(
        http_get(&format!("http://{ip}/")).is_some_and(|b| b.contains("pod: fresh")),
        "the new pod is unreachable"
    );
}

#[test]
fn dead_sandbox_is_replaced_with_the_same_address() {
    if !privileged("dead_sandbox_is_replaced_with_the_same_address") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let web = k.create_pod(NS, "web", json!({"containers": [httpd("web")]}));
    let p = k.wait_pod(NS, "web", "Ready", is_ready);
    let ip = pod_ip(&p).expect("ip");
    let sandbox = k.containers(&[(POD_UID_LABEL, &uid(&web)), (KIND_LABEL, KIND_SANDBOX)]);
    assert_eq!(sandbox.len(), 1, "one sandbox: {sandbox:?}");
    kproxy_tests::sh(std::process::Command::new("docker").args(["kill", &sandbox[0]]));
    // The app container lost its network with the sandbox: it is restarted in a new one.
    let p = k.wait_pod(NS, "web", "restarted in a new sandbox", |p| {
        restarts(p, "web") >= 1 && is_ready(p)
    });
    assert_eq!(pod_ip(&p), Some(ip), "the pod keeps its address");
    let sandboxes = k.containers(&[(POD_UID_LABEL, &uid(&web)), (KIND_LABEL, KIND_SANDBOX)]);
    assert_eq!(
        sandboxes.len(),
        1,
        "the dead sandbox is removed: {sandboxes:?}"
    );
    assert_ne!(sandboxes, sandbox);
    eventually("the pod serves again", || {
        http_get(&format!("http://{ip}/")).is_some_and(|b| b.contains("pod: web"))
    });
}

#[test]
fn empty_dir_volumes_are_shared_and_removed_with_the_pod() {
    if !privileged("empty_dir_volumes_are_shared_and_removed_with_the_pod") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    // The writer fills the volume; httpd serves it (mounted read-only under its web root).
    let mut web = httpd("web");
    web["volumeMounts"] = json!([{"name": "shared", "mountPath": "/www/shared", "readOnly": true}]);
    let mut writer = shell(
        "writer",
        "echo from-the-writer > /data/note.txt; exec /bin/busybox sleep 3600",
    );
    writer["volumeMounts"] = json!([{"name": "shared", "mountPath": "/data"}]);
    let pod = k.create_pod(
        NS,
        "vol",
        json!({"containers": [web, writer], "volumes": [{"name": "shared", "emptyDir": {}}]}),
    );
    let pod_uid = uid(&pod);
    let p = k.wait_pod(NS, "vol", "Ready", is_ready);
    let ip = pod_ip(&p).expect("ip");
    let mut page = None;
    eventually("httpd serves the writer's file", || {
        page = http_get(&format!("http://{ip}/shared/note.txt"));
        page.is_some()
    });
    assert_eq!(page.as_deref().map(str::trim), Some("from-the-writer"));
    let volume = k
        .state_dir()
        .join("pods")
        .join(&pod_uid)
        .join("volumes/shared");
    assert!(volume.join("note.txt").is_file(), "{}", volume.display());
    // Read-only where the spec says so.
    let web_status = container_status(&p, "web").expect("web status");
    let web_id = docker_id(web_status).expect("web container").to_string();
    let out = std::process::Command::new("docker")
        .args(["exec", &web_id, "/bin/busybox", "touch", "/www/shared/x"])
        .output()
        .expect("docker exec");
    assert!(!out.status.success(), "a readOnly mount must refuse writes");

    // A volume type this node cannot provide: the container waits, nothing half-starts.
    let mut c = httpd("app");
    c["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/etc/cfg"}]);
    k.create_pod(
        NS,
        "cfg",
        json!({"containers": [c], "volumes": [{"name": "cfg", "persistentVolumeClaim": {"claimName": "data"}}]}),
    );
    let p = k.wait_pod(NS, "cfg", "CreateContainerConfigError", |p| {
        waiting(p, "app").is_some_and(|(r, _)| r == "CreateContainerConfigError")
    });
    let (_, message) = waiting(&p, "app").expect("waiting");
    assert!(
        message.contains("emptyDir, hostPath, configMap and secret"),
        "{message}"
    );

    k.delete_pod(NS, "vol", None);
    k.wait_gone(NS, "vol", Duration::from_secs(20));
    eventually("the pod's volume directory is removed", || {
        !k.state_dir().join("pods").join(&pod_uid).exists()
    });
}

#[test]
fn container_settings_reach_docker() {
    if !privileged("container_settings_reach_docker") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let mut app = shell("app", "exec /bin/busybox sleep 3600");
    app["workingDir"] = json!("/www");
    app["env"] = json!([
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello $(POD_IP)"}
    ]);
    app["resources"] = json!({"limits": {"memory": "64Mi", "cpu": "500m"},
                              "requests": {"cpu": "250m"}});
    app["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 1000,
                                    "capabilities": {"drop": ["ALL"]}});
    k.create_pod(NS, "settings", json!({"containers": [app]}));
    let p = k.wait_pod(NS, "settings", "Ready", is_ready);
    let ip = pod_ip(&p).expect("ip");
    let id = docker_id(container_status(&p, "app").expect("status"))
        .expect("id")
        .to_string();
    let info = inspect(&id);
    let hc = &info["HostConfig"];
    assert_eq!(hc["Memory"], json!(64 * 1024 * 1024));
    assert_eq!(hc["NanoCpus"], json!(500_000_000));
    assert_eq!(hc["CpuShares"], json!(256));
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert_eq!(hc["Init"], json!(true));
    assert_eq!(info["Config"]["User"], json!("1000:1000"));
    assert_eq!(info["Config"]["WorkingDir"], json!("/www"));
    assert_eq!(
        docker_exec(&id, &["/bin/busybox", "id", "-u"]).trim(),
        "1000"
    );
    assert_eq!(docker_exec(&id, &["/bin/busybox", "pwd"]).trim(), "/www");
    assert_eq!(
        docker_exec(&id, &["/bin/busybox", "hostname"]).trim(),
        "settings"
    );
    let env = docker_exec(&id, &["/bin/busybox", "env"]);
    assert!(env.contains(&format!("POD_IP={ip}\n")), "{env}");
    assert!(env.contains(&format!("GREETING=hello {ip}\n")), "{env}");
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    if !privileged("init_containers_run_in_order_before_the_app") {
        return;
    }
    let (_dir, api) = api_server();
    let k = Kubelet::start(&api, &[]);
    let mount = json!([{"name": "work", "mountPath": "/work"}]);
    let mut first = shell(
        "first",
        "/bin/busybox sleep 1; echo prepared-by-init > /work/index.html",
    );
    first["volumeMounts"] = mount.clone();
    let mut second = shell("second", "/bin/busybox test -f /work/index.html");
    second["volumeMounts"] = mount;
    let mut web = httpd("web");
    web["volumeMounts"] = json!([{"name": "work", "mountPath": "/www/init"}]);
    k.create_pod(
        NS,
        "init",
        json!({"initContainers": [first, second], "containers": [web],
               "volumes": [{"name": "work", "emptyDir": {}}]}),
    );
    let p = k.wait_pod(NS, "init", "Ready", is_ready);
    assert_eq!(condition(&p, "Initialized"), Some("True"));
    let inits = p
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .expect("initContainerStatuses");
    let times: Vec<(Timestamp, Timestamp)> = inits
        .iter()
        .map(|s| {
            let t = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.clone())
                .unwrap_or_else(|| panic!("{} not terminated: {s:?}", s.name));
            assert_eq!(t.exit_code, 0, "{}", s.name);
            assert!(s.ready, "{} completed", s.name);
            (
                t.started_at.expect("startedAt").0,
                t.finished_at.expect("finishedAt").0,
            )
        })
        .collect();
    assert_eq!(inits.len(), 2);
    assert!(
        times[1].0 >= times[0].1,
        "second started after first ended: {times:?}"
    );
    let web_started = container_status(&p, "web")
        .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.clone())
        .expect("web running")
        .0;
    assert!(
        web_started >= times[1].1,
        "the app started after the init containers"
    );
    let ip = pod_ip(&p).expect("ip");
    let page = http_get(&format!("http://{ip}/init/index.html")).expect("page");
    assert_eq!(page.trim(), "prepared-by-init");

    // A failing init container with restartPolicy Never fails the pod; the app never runs.
    k.create_pod(
        NS,
        "init-fails",
        json!({"restartPolicy": "Never",
               "initContainers": [shell("setup", "exit 7")],
               "containers": [httpd("app")]}),
    );
    let p = k.wait_pod(NS, "init-fails", "Failed", |p| phase(p) == Some("Failed"));
    assert_eq!(condition(&p, "Initialized"), Some("False"));
    let app_containers = k.containers(&[(CONTAINER_NAME_LABEL, "app")]);
    assert!(
        app_containers.is_empty(),
        "the app was created: {app_containers:?}"
    );
}
