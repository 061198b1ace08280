use std::time::Duration;

use serde_json::{Value, json};

use super::*;

fn now() -> Timestamp {
    "2025-05-01T12:00:00Z".parse().expect("valid timestamp")
}

/// An RFC 3339 time `secs` seconds before [`now`].
fn ago(secs: i64) -> String {
    now()
        .checked_sub(jiff::SignedDuration::from_secs(secs))
        .expect("in range")
        .to_string()
}

const MIN: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86400;

fn names(kind: &str) -> Vec<&'static str> {
    columns(kind).iter().map(|c| c.name).collect()
}

fn default_names(kind: &str) -> Vec<&'static str> {
    columns(kind)
        .iter()
        .filter(|c| c.priority == 0)
        .map(|c| c.name)
        .collect()
}

#[test]
fn durations_like_kubectl() {
    let cases = [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (2 * MIN, "2m"),
        (5 * MIN + 2, "5m2s"),
        (10 * MIN + 30, "10m"),
        (179 * MIN, "179m"),
        (3 * HOUR, "3h"),
        (3 * HOUR + 5 * MIN, "3h5m"),
        (7 * HOUR + 59 * MIN, "7h59m"),
        (8 * HOUR + 30 * MIN, "8h"),
        (47 * HOUR, "47h"),
        (2 * DAY, "2d"),
        (2 * DAY + 3 * HOUR, "2d3h"),
        (7 * DAY + 23 * HOUR, "7d23h"),
        (8 * DAY + 5 * HOUR, "8d"),
        (400 * DAY, "400d"),
        (730 * DAY, "2y"),
        (740 * DAY, "2y10d"),
        (8 * 365 * DAY + 100 * DAY, "8y"),
    ];
    for (secs, want) in cases {
        let d = Duration::from_secs(u64::try_from(secs).expect("positive"));
        assert_eq!(human_duration(d), want, "{secs}s");
    }
    assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
}

#[test]
fn ages_tolerate_small_skew() {
    let t = |offset_ms: i64| {
        Some(
            now()
                .checked_add(jiff::SignedDuration::from_millis(offset_ms))
                .expect("in range"),
        )
    };
    assert_eq!(age_since(None, now()), "<unknown>");
    assert_eq!(age_since(t(-90_000), now()), "90s");
    assert_eq!(age_since(t(500), now()), "0s");
    assert_eq!(age_since(t(1_900), now()), "0s");
    assert_eq!(age_since(t(2_000), now()), "<invalid>");
}

#[test]
fn column_sets_match_kubectl() {
    assert_eq!(
        default_names("Pod"),
        ["Name", "Ready", "Status", "Restarts", "Age"]
    );
    assert_eq!(
        names("Pod"),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    assert_eq!(
        names("Service"),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(default_names("Service").len(), 6);
    assert_eq!(
        names("Deployment"),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        names("ReplicaSet"),
        [
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(names("Endpoints"), ["Name", "Endpoints", "Age"]);
    assert_eq!(
        names("EndpointSlice"),
        ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    );
    assert_eq!(
        default_names("Node"),
        ["Name", "Status", "Roles", "Age", "Version"]
    );
    assert_eq!(
        names("Node")[5..],
        [
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime"
        ]
    );
    assert_eq!(names("Namespace"), ["Name", "Status", "Age"]);
    assert_eq!(names("Lease"), ["Name", "Holder", "Age"]);
    assert_eq!(
        default_names("Event"),
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    );
    assert_eq!(
        names("Event"),
        [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name"
        ]
    );
    assert_eq!(names("ConfigMap"), ["Name", "Data", "Age"]);
    assert_eq!(names("Secret"), ["Name", "Type", "Data", "Age"]);
    assert_eq!(names("PodTemplate"), ["Name", "Created At"]);
    assert_eq!(columns("PodTemplate")[1].type_, "date");
    assert_eq!(columns("ReplicaSet")[1].type_, "integer");
    for kind in [
        "Pod",
        "Service",
        "Deployment",
        "ReplicaSet",
        "Endpoints",
        "EndpointSlice",
        "Node",
        "Namespace",
        "Lease",
        "Event",
        "ConfigMap",
    ] {
        let cols = columns(kind);
        let name_cols: Vec<&Column> = cols.iter().filter(|c| c.format == "name").collect();
        assert_eq!(name_cols.len(), 1, "{kind}");
        assert!(cols.iter().all(|c| !c.description.is_empty()), "{kind}");
        // Rows have a cell for every column, even for objects that say nothing.
        assert_eq!(row(kind, &json!({}), now()).len(), cols.len(), "{kind}");
        assert_eq!(
            row(kind, &json!({"metadata": {"name": "x"}, "spec": 5}), now()).len(),
            cols.len(),
            "{kind}"
        );
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the parts inline as json! literals"
)]
fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(5 * MIN)},
        "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx"}]},
        "status": status
    })
}

fn running(name: &str, restarts: i32) -> Value {
    json!({"name": name, "ready": true, "restartCount": restarts, "image": "nginx", "imageID": "",
           "started": true, "state": {"running": {"startedAt": ago(4 * MIN)}}})
}

#[test]
fn running_pod() {
    let p = pod(json!({
        "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [running("web", 0)]
    }));
    assert_eq!(
        row("Pod", &p, now()),
        [
            json!("web"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("5m"),
            json!("10.244.1.5"),
            json!("node-1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn pending_pod_without_status() {
    let mut p = pod(json!({"phase": "Pending"}));
    p["spec"].as_object_mut().expect("spec").remove("nodeName");
    let cells = row("Pod", &p, now());
    assert_eq!(
        cells[..5],
        [
            json!("web"),
            json!("0/1"),
            json!("Pending"),
            json!("0"),
            json!("5m")
        ]
    );
    assert_eq!(cells[5..7], [json!("<none>"), json!("<none>")]);
}

#[test]
fn crash_looping_pod_shows_last_restart() {
    let p = pod(json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "web", "ready": false, "restartCount": 5, "image": "nginx", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(3 * MIN)}}
        }]
    }));
    let cells = row("Pod", &p, now());
    assert_eq!(
        cells[1..4],
        [json!("0/1"), json!("CrashLoopBackOff"), json!("5 (3m ago)")]
    );
}

#[test]
fn terminated_reasons() {
    let term = |t: Value| {
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "web", "ready": false, "restartCount": 0, "image": "nginx", "imageID": "",
            "state": {"terminated": t}
        }]}));
        row("Pod", &p, now())[2].clone()
    };
    assert_eq!(
        term(json!({"exitCode": 0, "reason": "Completed"})),
        "Completed"
    );
    assert_eq!(term(json!({"exitCode": 137})), "ExitCode:137");
    assert_eq!(term(json!({"exitCode": 143, "signal": 15})), "Signal:15");
    assert_eq!(
        term(json!({"exitCode": 137, "reason": "OOMKilled"})),
        "OOMKilled"
    );
}

#[test]
fn succeeded_pod_is_completed() {
    let p = pod(json!({"phase": "Succeeded", "containerStatuses": [{
        "name": "web", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": ago(MIN)}}
    }]}));
    assert_eq!(
        row("Pod", &p, now())[1..3],
        [json!("0/1"), json!("Completed")]
    );
}

#[test]
fn initializing_pods() {
    let init = json!([
        {"name": "migrate", "image": "app:1"},
        {"name": "warm", "image": "app:1"}
    ]);
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [
            {"name": "migrate", "ready": true, "restartCount": 0, "image": "app:1", "imageID": "",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "warm", "ready": false, "restartCount": 0, "image": "app:1", "imageID": "",
             "state": {"running": {}}}
        ],
        "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0, "image": "nginx", "imageID": "",
                                "state": {"waiting": {"reason": "PodInitializing"}}}]
    }));
    p["spec"]["initContainers"] = init.clone();
    assert_eq!(
        row("Pod", &p, now())[1..4],
        [json!("0/1"), json!("Init:1/2"), json!("0")]
    );

    let mut failed = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "migrate", "ready": false, "restartCount": 2, "image": "app:1", "imageID": "",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(30)}}}]
    }));
    failed["spec"]["initContainers"] = init.clone();
    assert_eq!(
        row("Pod", &failed, now())[2..4],
        [json!("Init:Error"), json!("2 (30s ago)")]
    );

    let mut backoff = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0, "image": "app:1", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]
    }));
    backoff["spec"]["initContainers"] = init;
    assert_eq!(row("Pod", &backoff, now())[2], "Init:ImagePullBackOff");
}

#[test]
fn sidecars_count_as_containers() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "restartCount": 1, "image": "envoy", "imageID": "",
            "started": true, "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(10 * MIN)}}}],
        "containerStatuses": [running("web", 0)]
    }));
    p["spec"]["initContainers"] =
        json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
    assert_eq!(
        row("Pod", &p, now())[1..4],
        [json!("2/2"), json!("Running"), json!("1 (10m ago)")]
    );
}

#[test]
fn terminating_and_gated_pods() {
    let mut p = pod(json!({"phase": "Running", "containerStatuses": [running("web", 0)]}));
    p["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(row("Pod", &p, now())[2], "Terminating");
    let mut lost = pod(json!({"phase": "Running", "reason": "NodeLost"}));
    lost["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(row("Pod", &lost, now())[2], "Unknown");
    let gated = pod(
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    assert_eq!(row("Pod", &gated, now())[2], "SchedulingGated");
    let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
    assert_eq!(row("Pod", &evicted, now())[2], "Evicted");
}

#[test]
fn readiness_gates() {
    let mut p = pod(json!({"phase": "Running", "conditions": [
        {"type": "example.com/lb-ready", "status": "True"},
        {"type": "example.com/warm", "status": "False"}
    ]}));
    p["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/lb-ready"}, {"conditionType": "example.com/warm"}]);
    assert_eq!(row("Pod", &p, now())[8], "1/2");
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the parts inline as json! literals"
)]
fn service(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(2 * DAY + 3 * HOUR)},
        "spec": spec, "status": status
    })
}

#[test]
fn services() {
    let cluster_ip = service(
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "selector": {"app": "web", "tier": "fe"}}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(
        row("Service", &cluster_ip, now()),
        [
            json!("web"),
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80/TCP"),
            json!("2d3h"),
            json!("app=web,tier=fe")
        ]
    );

    let node_port = service(
        json!({"type": "NodePort", "clusterIP": "10.96.0.11", "externalIPs": ["192.0.2.1"],
               "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 443, "protocol": "TCP", "nodePort": 30443}, {"port": 53, "protocol": "UDP"}]}),
        json!({}),
    );
    let cells = row("Service", &node_port, now());
    assert_eq!(
        cells[2..5],
        [
            json!("10.96.0.11"),
            json!("192.0.2.1"),
            json!("80:30080/TCP,443:30443/TCP,53/UDP")
        ]
    );
    assert_eq!(cells[6], "<none>");

    let pending = service(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(row("Service", &pending, now())[3], "<pending>");

    let lb = service(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12", "externalIPs": ["198.51.100.1"], "ports": [{"port": 80, "protocol": "TCP"}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.5"}]}}),
    );
    assert_eq!(
        row("Service", &lb, now())[3],
        "203.0.113.5,lb.example.com,198.51.100.1"
    );

    let headless = service(
        json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}),
        json!({}),
    );
    assert_eq!(
        row("Service", &headless, now())[2..5],
        [json!("None"), json!("<none>"), json!("<none>")]
    );

    let external = service(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(
        row("Service", &external, now())[1..5],
        [
            json!("ExternalName"),
            json!("<none>"),
            json!("db.example.com"),
            json!("<none>")
        ]
    );
}

#[test]
fn deployments_and_replica_sets() {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "creationTimestamp": ago(10 * DAY)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "api"]}]},
            "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [
                {"name": "web", "image": "nginx:1.27"}, {"name": "proxy", "image": "envoy:v1.30"}
            ]}}
        },
        "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}
    });
    assert_eq!(
        row("Deployment", &d, now()),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("10d"),
            json!("web,proxy"),
            json!("nginx:1.27,envoy:v1.30"),
            json!("app=web,tier in (api,fe)")
        ]
    );
    let fresh = json!({"metadata": {"name": "new"}, "spec": {"replicas": 1, "selector": {}, "template": {}}});
    assert_eq!(
        row("Deployment", &fresh, now()),
        [
            json!("new"),
            json!("0/1"),
            json!(0),
            json!(0),
            json!("<unknown>"),
            json!(""),
            json!(""),
            json!("")
        ]
    );

    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-7c5ddbdf54", "creationTimestamp": ago(10 * DAY)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7c5ddbdf54"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
        },
        "status": {"replicas": 3, "readyReplicas": 2}
    });
    assert_eq!(
        row("ReplicaSet", &rs, now()),
        [
            json!("web-7c5ddbdf54"),
            json!(3),
            json!(3),
            json!(2),
            json!("10d"),
            json!("web"),
            json!("nginx:1.27"),
            json!("app=web,pod-template-hash=7c5ddbdf54")
        ]
    );
    let empty_sel = json!({"metadata": {"name": "rs"}, "spec": {"selector": {}}});
    assert_eq!(row("ReplicaSet", &empty_sel, now())[7], "<none>");
    let bad_sel = json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
    assert_eq!(row("ReplicaSet", &bad_sel, now())[7], "<error>");
    assert_eq!(row("Deployment", &bad_sel, now())[7], "<invalid>");
}

#[test]
fn endpoints() {
    let ep = |subsets: Value| json!({"metadata": {"name": "web", "creationTimestamp": ago(45)}, "subsets": subsets});
    assert_eq!(
        row(
            "Endpoints",
            &ep(
                json!([{"addresses": [{"ip": "10.244.1.2"}, {"ip": "10.244.2.3"}], "ports": [{"port": 8080}]}])
            ),
            now()
        ),
        [
            json!("web"),
            json!("10.244.1.2:8080,10.244.2.3:8080"),
            json!("45s")
        ]
    );
    let five = json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}, {"ip": "10.0.0.5"}],
                       "ports": [{"port": 80}]}]);
    assert_eq!(
        row("Endpoints", &ep(five), now())[1],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
    );
    let two_ports = json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]);
    assert_eq!(
        row("Endpoints", &ep(two_ports), now())[1],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
    );
    let headless = json!([{"addresses": [{"ip": "10.0.0.1"}]}]);
    assert_eq!(row("Endpoints", &ep(headless), now())[1], "10.0.0.1");
    let v6 = json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]);
    assert_eq!(row("Endpoints", &ep(v6), now())[1], "[fd00::1]:80");
    assert_eq!(row("Endpoints", &ep(json!([])), now())[1], "<none>");
    let not_ready = json!([{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]);
    assert_eq!(row("Endpoints", &ep(not_ready), now())[1], "");
}

#[test]
fn endpoint_slices() {
    let slice = json!({
        "metadata": {"name": "web-abc12", "creationTimestamp": ago(3 * HOUR)},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.3"]}]
    });
    assert_eq!(
        row("EndpointSlice", &slice, now()),
        [
            json!("web-abc12"),
            json!("IPv4"),
            json!("8080,metrics"),
            json!("10.244.1.2,10.244.2.3"),
            json!("3h")
        ]
    );
    let many = json!({
        "metadata": {"name": "big"}, "addressType": "IPv4",
        "ports": [{"port": 1}, {"port": 2}, {"port": 3}, {"port": 4}, {}],
        "endpoints": [{"addresses": ["10.0.0.1", "10.0.0.2"]}, {"addresses": ["10.0.0.3", "10.0.0.4"]}]
    });
    let cells = row("EndpointSlice", &many, now());
    assert_eq!(cells[2], "1,2,3 + 2 more...");
    assert_eq!(cells[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...");
    let empty = json!({"metadata": {"name": "none"}, "addressType": "IPv4", "endpoints": []});
    assert_eq!(
        row("EndpointSlice", &empty, now())[2..4],
        [json!("<unset>"), json!("<unset>")]
    );
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the parts inline as json! literals"
)]
fn node(conditions: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": labels, "creationTimestamp": ago(10 * DAY)},
        "status": {
            "conditions": conditions,
            "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "172.18.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.6.0",
                         "containerRuntimeVersion": "containerd://1.7.0", "architecture": "amd64", "operatingSystem": "linux",
                         "bootID": "", "machineID": "", "systemUUID": "", "kubeProxyVersion": ""}
        }
    })
}

#[test]
fn nodes() {
    let ready = node(
        json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]),
        json!({"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "", "kubernetes.io/hostname": "node-1"}),
    );
    assert_eq!(
        row("Node", &ready, now()),
        [
            json!("node-1"),
            json!("Ready"),
            json!("control-plane,etcd"),
            json!("10d"),
            json!("v1.33.1"),
            json!("172.18.0.2"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.6.0"),
            json!("containerd://1.7.0")
        ]
    );
    let mut cordoned = node(
        json!([{"type": "Ready", "status": "Unknown"}]),
        json!({"kubernetes.io/role": "worker"}),
    );
    cordoned["spec"] = json!({"unschedulable": true});
    assert_eq!(
        row("Node", &cordoned, now())[1..3],
        [json!("NotReady,SchedulingDisabled"), json!("worker")]
    );
    let new = json!({"metadata": {"name": "n2"}});
    assert_eq!(
        row("Node", &new, now()),
        [
            json!("n2"),
            json!("Unknown"),
            json!("<none>"),
            json!("<unknown>"),
            json!(""),
            json!("<none>"),
            json!("<none>"),
            json!("<unknown>"),
            json!("<unknown>"),
            json!("<unknown>")
        ]
    );
}

#[test]
fn namespaces_and_leases() {
    let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(30 * DAY)}, "status": {"phase": "Active"}});
    assert_eq!(
        row("Namespace", &ns, now()),
        [json!("default"), json!("Active"), json!("30d")]
    );
    let lease = json!({
        "metadata": {"name": "node-1", "namespace": "kube-node-lease", "creationTimestamp": ago(2 * DAY + 3 * HOUR)},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}
    });
    assert_eq!(
        row("Lease", &lease, now()),
        [json!("node-1"), json!("node-1"), json!("2d3h")]
    );
    let free = json!({"metadata": {"name": "lock"}, "spec": {}});
    assert_eq!(row("Lease", &free, now())[1], "");
}

#[test]
fn events() {
    let ev = json!({
        "metadata": {"name": "web.17f0a1b2c3d4e5f6", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "fieldPath": "spec.containers{web}"},
        "reason": "Pulled", "message": "Container image \"nginx\" already present on machine\n", "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(10 * MIN), "lastTimestamp": ago(3 * MIN), "count": 3
    });
    assert_eq!(
        row("Event", &ev, now()),
        [
            json!("3m"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{web}"),
            json!("kubelet, node-1"),
            json!("Container image \"nginx\" already present on machine"),
            json!("10m"),
            json!(3),
            json!("web.17f0a1b2c3d4e5f6")
        ]
    );
    // events.k8s.io-style: eventTime, reporting fields, no count.
    let new_style = json!({
        "metadata": {"name": "n.1"},
        "involvedObject": {"kind": "Node", "name": "node-1"},
        "reason": "Starting", "type": "Normal", "message": "",
        "eventTime": "2025-05-01T11:59:00.000000Z",
        "reportingComponent": "kube-proxy", "reportingInstance": "kube-proxy-node-1"
    });
    let cells = row("Event", &new_style, now());
    assert_eq!(cells[0], "60s");
    assert_eq!(cells[3], "node/node-1");
    assert_eq!(cells[5], "kube-proxy, kube-proxy-node-1");
    assert_eq!(cells[7], "60s");
    assert_eq!(cells[8], 1);
    let series = json!({
        "metadata": {"name": "s"}, "involvedObject": {"kind": "Pod"},
        "eventTime": ago(HOUR), "series": {"count": 7, "lastObservedTime": ago(2 * MIN)},
        "reportingComponent": "c"
    });
    let cells = row("Event", &series, now());
    assert_eq!(cells[0], "2m");
    assert_eq!(cells[3], "pod");
    assert_eq!(cells[5], "c");
    assert_eq!(cells[8], 7);
}

#[test]
fn other_kinds_get_name_and_creation_time() {
    let pt = json!({"metadata": {"name": "cfg", "creationTimestamp": "2025-05-01T11:55:00Z"}});
    assert_eq!(
        row("PodTemplate", &pt, now()),
        [json!("cfg"), json!("2025-05-01T11:55:00Z")]
    );
    assert_eq!(
        row("PodTemplate", &json!({}), now()),
        [json!(""), Value::Null]
    );
}

#[test]
fn undecodable_objects_still_show_their_name() {
    let broken = json!({"metadata": {"name": "odd", "creationTimestamp": ago(90)}, "spec": {"containers": "x"}});
    let cells = row("Pod", &broken, now());
    assert_eq!(cells[0], "odd");
    assert_eq!(cells[4], "90s");
}
