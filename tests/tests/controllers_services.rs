//! The controller manager's service and node controllers against a real API server: pods are
//! made by the test (status written through the status subresource, no kubelet), nodes and
//! their Leases too.
//!
//! - EndpointSlices and Endpoints follow readiness and termination, resolve named target
//!   ports per pod, split at 100, and `default/kubernetes` points at the API server;
//! - LoadBalancer addresses are unique with 1,000 concurrent Services and across a controller
//!   manager restart; an exhausted pool and a taken `loadBalancerIP` leave the Service
//!   pending with an event;
//! - node IPAM hands out distinct CIDRs and says when there are none left;
//! - a node whose Lease stops becomes Unknown, is tainted, and its pods are evicted;
//! - a pool overlapping the service CIDR is refused at start.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Endpoints, Event, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    bin,
    control::{client, controller_manager},
    until,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const ALL: &str = "endpointslice,lbipam,nodeipam,nodelifecycle";

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    api.create(&PostParams::default(), &kproxy_tests::control::from_json(v))
        .await
        .expect("create")
}

/// A pod bound to `node` with a container port named `http`.
fn pod(name: &str, app: &str, node: &str, http_port: i32) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "kecho",
                 "ports": [{"name": "http", "containerPort": http_port}]}]}
    })
}

/// Writes the pod's status as a kubelet would: Running with an IP, Ready or not.
async fn set_pod_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "lastTransitionTime": now}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status");
}

async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .expect("list slices")
        .items
}

/// (address, ready, serving, terminating) of every endpoint of the Service's slices.
async fn endpoint_states(
    api: &Api<EndpointSlice>,
    svc: &str,
) -> BTreeMap<String, (bool, bool, bool)> {
    slices_of(api, svc)
        .await
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses[0].clone(),
                (
                    c.ready.unwrap_or(false),
                    c.serving.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                ),
            )
        })
        .collect()
}

/// (ready addresses, not-ready addresses) of the legacy Endpoints object.
async fn legacy(api: &Api<Endpoints>, name: &str) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let ep = api.get_opt(name).await.expect("get endpoints")?;
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for s in ep.subsets.iter().flatten() {
        ready.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    Some((ready, not_ready))
}

async fn events(client: &Client, ns: &str, object: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(
            &ListParams::default().fields(&format!("involvedObject.name={object},reason={reason}")),
        )
        .await
        .expect("list events")
        .items
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_readiness_termination_and_named_ports() {
    let dir = TempDir::new("kpt-eps");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = controller_manager(&api, &["--controllers", ALL]);
    let c = client(&api).await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let svcs: Api<Service> = Api::default_namespaced(c.clone());
    let slices: Api<EndpointSlice> = Api::default_namespaced(c.clone());
    let eps: Api<Endpoints> = Api::default_namespaced(c.clone());

    let svc = create(
        &svcs,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "targetPort": 9090}]}}),
    )
    .await;
    // A Service without pods gets one empty placeholder slice.
    until("placeholder slice", || async {
        let s = slices_of(&slices, "web").await;
        s.len() == 1 && s[0].endpoints.is_empty()
    })
    .await;

    create(&pods, pod("a", "web", "n1", 8080)).await;
    create(&pods, pod("b", "web", "n1", 8081)).await;
    create(&pods, pod("other", "db", "n1", 8080)).await;
    set_pod_status(&pods, "a", "10.244.0.10", true).await;
    set_pod_status(&pods, "b", "10.244.0.11", false).await;
    set_pod_status(&pods, "other", "10.244.0.12", true).await;

    until("a ready, b not ready", || async {
        let s = endpoint_states(&slices, "web").await;
        s == BTreeMap::from([
            ("10.244.0.10".into(), (true, true, false)),
            ("10.244.0.11".into(), (false, false, false)),
        ])
    })
    .await;
    // The named target port resolves per pod: 8080 and 8081, so two slices.
    let all = slices_of(&slices, "web").await;
    let mut ports: Vec<(String, Vec<i32>)> = all
        .iter()
        .map(|s| {
            (
                s.endpoints[0].addresses[0].clone(),
                s.ports.iter().flatten().filter_map(|p| p.port).collect(),
            )
        })
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [
            ("10.244.0.10".into(), vec![8080, 9090]),
            ("10.244.0.11".into(), vec![8081, 9090])
        ]
    );
    for s in &all {
        assert_eq!(s.address_type, "IPv4");
        assert!(s.name_any().starts_with("web-"), "{}", s.name_any());
        let l = s.labels();
        assert_eq!(
            l["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), Some(owner.uid.as_str())),
            ("Service", svc.metadata.uid.as_deref())
        );
        let t = &s.annotations()["endpoints.kubernetes.io/last-change-trigger-time"];
        assert!(t.parse::<jiff::Timestamp>().is_ok(), "{t}");
        let e = &s.endpoints[0];
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        assert_eq!(
            e.target_ref.as_ref().and_then(|r| r.kind.as_deref()),
            Some("Pod")
        );
    }
    until("legacy Endpoints", || async {
        legacy(&eps, "web").await == Some((set(&["10.244.0.10"]), set(&["10.244.0.11"])))
    })
    .await;

    // b turns ready: its slice follows within milliseconds.
    let t0 = Instant::now();
    set_pod_status(&pods, "b", "10.244.0.11", true).await;
    until("b ready", || async {
        endpoint_states(&slices, "web").await.get("10.244.0.11") == Some(&(true, true, false))
    })
    .await;
    eprintln!(
        "readiness change → EndpointSlice: {:?} (with polling)",
        t0.elapsed()
    );
    // Only the changed slice was rewritten; the other kept its version.
    let after = slices_of(&slices, "web").await;
    let rv = |v: &[EndpointSlice], ip: &str| {
        v.iter()
            .find(|s| s.endpoints[0].addresses[0] == ip)
            .and_then(|s| s.metadata.resource_version.clone())
    };
    assert_eq!(rv(&all, "10.244.0.10"), rv(&after, "10.244.0.10"));
    assert_ne!(rv(&all, "10.244.0.11"), rv(&after, "10.244.0.11"));

    // Deleting a bound pod only marks it (its kubelet would stop it): terminating, not ready,
    // still serving; the legacy Endpoints drop it.
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(
        pods.get("a")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    until("a terminating", || async {
        endpoint_states(&slices, "web").await.get("10.244.0.10") == Some(&(false, true, true))
    })
    .await;
    until("a out of Endpoints", || async {
        legacy(&eps, "web").await == Some((set(&["10.244.0.11"]), set(&[])))
    })
    .await;
    // Gone for good (grace 0, as the kubelet finishes it): out of the slice too.
    pods.delete(
        "a",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    until("a gone", || async {
        !endpoint_states(&slices, "web")
            .await
            .contains_key("10.244.0.10")
    })
    .await;

    // A pod whose labels stop matching leaves.
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    until("b left", || async {
        endpoint_states(&slices, "web").await.is_empty()
    })
    .await;

    // No selector: left to the user.
    create(
        &svcs,
        json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(slices_of(&slices, "manual").await.is_empty());
    assert!(eps.get_opt("manual").await.unwrap().is_none());

    // The Service goes: its Endpoints and slices go with it.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    until("Endpoints and slices removed", || async {
        eps.get_opt("web").await.unwrap().is_none() && slices_of(&slices, "web").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::many_single_char_names,
    reason = "short names for the objects of one scenario"
)]
async fn slices_split_at_100_and_kubernetes_service() {
    let dir = TempDir::new("kpt-eps100");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = controller_manager(
        &api,
        &[
            "--controllers",
            "endpointslice",
            "--apiserver-endpoint",
            "192.168.7.7:6443",
        ],
    );
    let c = client(&api).await;
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let svcs: Api<Service> = Api::default_namespaced(c.clone());
    let slices: Api<EndpointSlice> = Api::default_namespaced(c.clone());
    let eps: Api<Endpoints> = Api::default_namespaced(c.clone());

    // default/kubernetes: created, pointing at the API server.
    until("default/kubernetes endpoints", || async {
        legacy(&eps, "kubernetes").await == Some((set(&["192.168.7.7"]), set(&[])))
    })
    .await;
    let k = svcs.get("kubernetes").await.unwrap();
    let p = &k.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((p.port, p.name.as_deref()), (443, Some("https")));
    assert!(k.spec.as_ref().unwrap().selector.is_none());
    let ks = slices_of(&slices, "kubernetes").await;
    assert_eq!(ks.len(), 1);
    assert_eq!(ks[0].ports.as_ref().unwrap()[0].port, Some(6443));

    create(&svcs, json!({"metadata": {"name": "big"}, "spec": {"selector": {"app": "big"}, "ports": [{"port": 80, "targetPort": 8080}]}})).await;
    let n = 250usize;
    futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("big-{i}");
                create(&pods, pod(&name, "big", "n1", 8080)).await;
                set_pod_status(
                    &pods,
                    &name,
                    &format!("10.244.{}.{}", i / 200 + 1, i % 200 + 1),
                    true,
                )
                .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    until("250 endpoints in slices of at most 100", || async {
        let s = slices_of(&slices, "big").await;
        let total: usize = s.iter().map(|s| s.endpoints.len()).sum();
        total == n && s.iter().all(|s| s.endpoints.len() <= 100) && s.len() == 3
    })
    .await;
    let s = slices_of(&slices, "big").await;
    let addrs: BTreeSet<&String> = s
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| &e.addresses[0]))
        .collect();
    assert_eq!(addrs.len(), n, "no endpoint twice");
    until("250 ready addresses in the legacy Endpoints", || async {
        legacy(&eps, "big")
            .await
            .is_some_and(|(ready, _)| ready.len() == n)
    })
    .await;
}

/// LoadBalancer ingress IPs of every Service (name → IP).
async fn lb_ips(svcs: &Api<Service>) -> BTreeMap<String, Ipv4Addr> {
    svcs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| {
            let ing = s
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?
                .clone();
            assert_eq!(ing.ip_mode.as_deref(), Some("VIP"));
            Some((s.name_any(), ing.ip?.parse().unwrap()))
        })
        .collect()
}

/// `(first, last)` address of a pool written `a.b.c.d/len`.
fn range(pool: &str) -> (Ipv4Addr, Ipv4Addr) {
    let (addr, len) = pool.split_once('/').unwrap();
    let base = u32::from(addr.parse::<Ipv4Addr>().unwrap());
    let size = 1u32 << (32 - len.parse::<u32>().unwrap());
    (Ipv4Addr::from(base), Ipv4Addr::from(base + size - 1))
}

fn assert_unique(ips: &BTreeMap<String, Ipv4Addr>, pool: &str) {
    let distinct: BTreeSet<&Ipv4Addr> = ips.values().collect();
    assert_eq!(distinct.len(), ips.len(), "an address was given twice");
    let (first, last) = range(pool);
    for ip in ips.values() {
        assert!(
            *ip > first && *ip < last,
            "{ip} outside {pool} (or its network/broadcast)"
        );
    }
}

fn lb_service(name: &str, extra: Value) -> Value {
    let mut spec =
        json!({"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]});
    if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
        s.extend(e);
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_ips_unique_with_1000_concurrent_services_and_across_restart() {
    let dir = TempDir::new("kpt-lb1000");
    let api = ApiServer::start(dir.path(), &[]);
    let pool = "172.30.0.0/22";
    let flags = ["--controllers", "lbipam", "--lb-pool", "172.30.0.0/22"];
    let mut cm = controller_manager(&api, &flags);
    let c = client(&api).await;
    let svcs: Api<Service> = Api::default_namespaced(c.clone());

    // One first, timed.
    let t0 = Instant::now();
    create(&svcs, lb_service("first", json!({}))).await;
    until("first IP", || async {
        lb_ips(&svcs).await.contains_key("first")
    })
    .await;
    eprintln!(
        "Service create → LoadBalancer IP: {:?} (with polling)",
        t0.elapsed()
    );

    let n = 1000;
    futures::stream::iter(0..n)
        .map(|i| {
            let svcs = svcs.clone();
            async move { create(&svcs, lb_service(&format!("s{i}"), json!({}))).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    until("1,001 addresses", || async {
        lb_ips(&svcs).await.len() == n + 1
    })
    .await;
    let before = lb_ips(&svcs).await;
    assert_unique(&before, pool);

    // Restart: the new process must not hand out what the old one did.
    cm.kill();
    let extra: Vec<String> = (0..15).map(|i| format!("after{i}")).collect();
    for name in &extra {
        create(&svcs, lb_service(name, json!({}))).await;
    }
    let _cm = controller_manager(&api, &flags);
    until("addresses after restart", || async {
        let ips = lb_ips(&svcs).await;
        extra.iter().all(|n| ips.contains_key(n))
    })
    .await;
    let after = lb_ips(&svcs).await;
    assert_unique(&after, pool);
    for (name, ip) in &before {
        assert_eq!(after.get(name), Some(ip), "{name} kept its address");
    }

    // Type change: released and the status cleared (release on delete: the next test).
    svcs.patch(
        "s1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
    )
    .await
    .unwrap();
    until("s1 status cleared", || async {
        !lb_ips(&svcs).await.contains_key("s1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_exhausted_pool_explicit_ip_and_classes() {
    let dir = TempDir::new("kpt-lbx");
    let api = ApiServer::start(dir.path(), &[]);
    // A /29: six usable addresses.
    let _cm = controller_manager(
        &api,
        &["--controllers", "lbipam", "--lb-pool", "172.30.9.0/29"],
    );
    let c = client(&api).await;
    let svcs: Api<Service> = Api::default_namespaced(c.clone());

    create(
        &svcs,
        lb_service("want5", json!({"loadBalancerIP": "172.30.9.5"})),
    )
    .await;
    until("requested address", || async {
        lb_ips(&svcs).await.get("want5") == Some(&"172.30.9.5".parse().unwrap())
    })
    .await;
    until("IPAllocated event", || async {
        !events(&c, "default", "want5", "IPAllocated")
            .await
            .is_empty()
    })
    .await;
    // Taken: pending with a warning.
    create(
        &svcs,
        lb_service("want5too", json!({"loadBalancerIP": "172.30.9.5"})),
    )
    .await;
    until("warning for the taken address", || async {
        events(&c, "default", "want5too", "AllocationFailed")
            .await
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref().unwrap_or("").contains("in use")
            })
    })
    .await;
    // Another class is not ours; our class is.
    create(
        &svcs,
        lb_service("foreign", json!({"loadBalancerClass": "example.com/lb"})),
    )
    .await;
    create(
        &svcs,
        lb_service("ours", json!({"loadBalancerClass": "kproxy.io/lb"})),
    )
    .await;
    for i in 0..4 {
        create(&svcs, lb_service(&format!("fill{i}"), json!({}))).await;
    }
    until("pool full", || async { lb_ips(&svcs).await.len() == 6 }).await;
    create(&svcs, lb_service("late", json!({}))).await;
    until("exhausted event", || async {
        events(&c, "default", "late", "AllocationFailed")
            .await
            .iter()
            .any(|e| {
                e.message
                    .as_deref()
                    .unwrap_or("")
                    .contains("no addresses left in pools")
            })
    })
    .await;
    let ips = lb_ips(&svcs).await;
    assert!(
        !ips.contains_key("foreign") && !ips.contains_key("late") && !ips.contains_key("want5too")
    );
    assert_unique(&ips, "172.30.9.0/29");

    // The requested address is freed: the Service that asked for it gets it.
    svcs.delete("want5", &DeleteParams::default())
        .await
        .unwrap();
    until("want5too gets 172.30.9.5", || async {
        lb_ips(&svcs).await.get("want5too") == Some(&"172.30.9.5".parse().unwrap())
    })
    .await;
    svcs.delete("fill0", &DeleteParams::default())
        .await
        .unwrap();
    until("late gets the freed address", || async {
        lb_ips(&svcs).await.contains_key("late")
    })
    .await;
    assert_unique(&lb_ips(&svcs).await, "172.30.9.0/29");
}

fn node(name: &str, cidr: Option<&str>) -> Value {
    let mut n =
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {}});
    if let Some(c) = cidr {
        n["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    n
}

async fn pod_cidr(nodes: &Api<Node>, name: &str) -> Option<String> {
    nodes.get(name).await.ok()?.spec?.pod_cidr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam_distinct_cidrs_and_exhaustion() {
    let dir = TempDir::new("kpt-ipam");
    let api = ApiServer::start(dir.path(), &[]);
    let c = client(&api).await;
    let nodes: Api<Node> = Api::all(c.clone());
    // A node that has a CIDR before the controller starts keeps it, and nobody else gets it.
    create(&nodes, node("old", Some("10.200.1.0/24"))).await;
    let _cm = controller_manager(
        &api,
        &[
            "--controllers",
            "nodeipam",
            "--cluster-cidr",
            "10.200.0.0/22",
            "--node-cidr-mask-size",
            "24",
        ],
    );
    for i in 0..4 {
        create(&nodes, node(&format!("n{i}"), None)).await;
    }
    let cidrs = || async {
        let mut got = BTreeMap::new();
        for i in 0..4 {
            if let Some(c) = pod_cidr(&nodes, &format!("n{i}")).await {
                got.insert(format!("n{i}"), c);
            }
        }
        got
    };
    until("three nodes get CIDRs", || async {
        cidrs().await.len() == 3
    })
    .await;
    let got = cidrs().await;
    let mut all: BTreeSet<String> = got.values().cloned().collect();
    all.insert("10.200.1.0/24".into());
    assert_eq!(
        all,
        set(&[
            "10.200.0.0/24",
            "10.200.1.0/24",
            "10.200.2.0/24",
            "10.200.3.0/24"
        ])
    );
    let pending = (0..4)
        .map(|i| format!("n{i}"))
        .find(|n| !got.contains_key(n))
        .unwrap();
    let n = nodes
        .get(&got.keys().next().unwrap().clone())
        .await
        .unwrap();
    assert_eq!(
        n.spec.as_ref().unwrap().pod_cidrs.as_ref().unwrap(),
        &vec![n.spec.as_ref().unwrap().pod_cidr.clone().unwrap()]
    );
    until("CIDRNotAvailable", || async {
        events(&c, "default", &pending, "CIDRNotAvailable")
            .await
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning"))
    })
    .await;
    // A node goes: its CIDR goes to the waiting one.
    nodes.delete("old", &DeleteParams::default()).await.unwrap();
    until("the waiting node gets the freed CIDR", || async {
        pod_cidr(&nodes, &pending).await.as_deref() == Some("10.200.1.0/24")
    })
    .await;
}

/// Renews `node`'s Lease now (creating it if needed).
async fn renew(leases: &Api<Lease>, node: &str) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let l = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    if leases
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": now}})),
        )
        .await
        .is_err()
    {
        create(leases, l).await;
    }
}

async fn set_node_ready(nodes: &Api<Node>, name: &str) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}}),
            ),
        )
        .await
        .unwrap();
}

fn node_taints(n: &Node) -> BTreeSet<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failure_unknown_taints_and_eviction() {
    let dir = TempDir::new("kpt-nlc");
    let api = ApiServer::start(dir.path(), &[]);
    let c = client(&api).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    for n in ["dies", "lives"] {
        create(&nodes, node(n, None)).await;
        set_node_ready(&nodes, n).await;
        renew(&leases, n).await;
    }
    // "lives" keeps renewing; "dies" stops now.
    let keep = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                renew(&leases, "lives").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    create(&pods, pod("plain", "x", "dies", 80)).await;
    let mut forever = pod("stays", "x", "dies", 80);
    forever["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
    create(&pods, forever).await;
    create(&pods, pod("elsewhere", "x", "lives", 80)).await;

    let started = Instant::now();
    let _cm = controller_manager(
        &api,
        &[
            "--controllers",
            ALL,
            "--node-monitor-grace-period",
            "2",
            "--pod-eviction-timeout",
            "3",
        ],
    );
    until("dies is Unknown and tainted", || async {
        let n = nodes.get("dies").await.unwrap();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned());
        ready.is_some_and(|r| {
            r.status == "Unknown" && r.reason.as_deref() == Some("NodeStatusUnknown")
        }) && node_taints(&n)
            == set(&[
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
            ])
    })
    .await;
    let unknown_after = started.elapsed();
    assert!(
        unknown_after >= Duration::from_secs(2),
        "not before the grace period: {unknown_after:?}"
    );
    until("NodeNotReady event", || async {
        !events(&c, "default", "dies", "NodeNotReady")
            .await
            .is_empty()
    })
    .await;

    // The plain pod is evicted after the eviction timeout, the tolerating one stays.
    until("plain evicted", || async {
        pods.get("plain")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let evicted_after = started.elapsed();
    // The taint's timeAdded has whole seconds, so the timeout counts from up to 1 s before.
    assert!(
        evicted_after + Duration::from_secs(1) >= unknown_after + Duration::from_secs(3),
        "eviction too early: {evicted_after:?} (Unknown after {unknown_after:?})"
    );
    until("TaintManagerEviction event", || async {
        events(&c, "default", "plain", "TaintManagerEviction")
            .await
            .iter()
            .any(|e| e.message.as_deref() == Some("Marking for deletion Pod default/plain"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pods.get("stays")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    assert!(
        pods.get("elsewhere")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    let lives = nodes.get("lives").await.unwrap();
    assert!(node_taints(&lives).is_empty(), "{:?}", node_taints(&lives));

    // Back: Lease renewed and Ready again → the taints go.
    renew(&leases, "dies").await;
    set_node_ready(&nodes, "dies").await;
    until("taints removed", || async {
        node_taints(&nodes.get("dies").await.unwrap()).is_empty()
    })
    .await;

    // Ready=False: the not-ready taint.
    nodes
        .patch_status(
            "lives",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}})),
        )
        .await
        .unwrap();
    until("not-ready taint", || async {
        node_taints(&nodes.get("lives").await.unwrap())
            .contains("node.kubernetes.io/not-ready:NoExecute")
    })
    .await;
    keep.abort();
}

#[test]
fn a_pool_overlapping_the_service_cidr_is_refused() {
    for (pool, what) in [
        ("10.96.0.0/24", "service CIDR"),
        ("10.244.3.0/24", "cluster (pod) CIDR"),
    ] {
        let out = Command::new(bin("kproxy-controller-manager"))
            .args(["--kubeconfig", "/nonexistent", "--lb-pool", pool])
            .output()
            .expect("run the controller manager");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("LoadBalancer pool {pool} overlaps the {what}")),
            "{err}"
        );
    }
}
