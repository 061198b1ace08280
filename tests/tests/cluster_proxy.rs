//! Privileged: the whole cluster with kproxy as its service proxy, on this machine's real
//! kernel. A real API server, controller manager (deployment, replicaset, endpointslice,
//! lbipam), scheduler and kubelet running Docker pods on a test bridge; `kproxy node` with
//! the node's kubeconfig, XDP/tc on a test uplink (a veth whose peer is a client namespace
//! standing for another host on the node's segment), the pod programs on the kubelet's
//! bridge, and socket-LB scoped to a test cgroup. A Deployment of three httpd pods behind a
//! LoadBalancer Service then answers:
//!
//! - (a) on its ClusterIP, from a host process in the test cgroup (socket-LB), spread over
//!   the pods;
//! - (b) on its ClusterIP, from inside one of its pods (Docker's cgroups are outside the
//!   test cgroup, so only the pod veth's tc program can translate it);
//! - (c) on its EXTERNAL-IP, from the client namespace, which has no route for it: the
//!   address is on the uplink's segment and only kproxy's ARP answer on the uplink makes
//!   the client send there (its neighbour entry holds the uplink's MAC);
//! - (d) in `kproxy dump`: both frontends with the three pods as active backends.
//!
//! Why each part can fail: the service CIDR is a test range with only kproxy's `unreachable`
//! keep-local route on the host, so an untranslated packet to the ClusterIP from the host or
//! from a pod (whose default route leads to the host through the bridge) is refused on the
//! host, never forwarded; without the pod veth programs (b) fails (checked once by running
//! without `--pod-bridge`: "No route to host" from the pod). The host neither owns the
//! EXTERNAL-IP nor does proxy ARP on the uplink (asserted), so nothing but kproxy's tc ARP
//! program answers who-has for it: without it the client's ARP goes unanswered and (c) fails
//! (checked once with the address deleted from `kproxy_lb4_l2_v1` by bpftool: the client's
//! connects failed or timed out).
//!
//! The cluster is `kproxy_tests::cluster::Cluster`: this runs in the machine's root
//! namespace, so every address is a test-only range probed free first (198.19.0.0/16, RFC
//! 2544 benchmarking space), socket-LB never attaches to the cgroup root, and each target is
//! checked with `ip route get` to resolve into the test's own links (or the unreachable
//! route) before anything is sent to it.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::{Command, Output},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
};
use kproxy_tests::{
    cluster::{Cluster, assert_route, assert_unreachable_here, run},
    eventually,
    kubelet::{Kubelet, container_status, docker_id, http_deployment, inspect, is_ready, pod_ip},
    privileged, unique,
};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "default";
/// Requests per check: with three backends picked by hash, all of them landing on one pod
/// has a probability of 3 × 3^-12.
const REQUESTS: usize = 12;

/// Pod names in httpd's pages (`<p>pod: NAME</p>`) and the number of failed requests
/// (lines the loop printed as `FAILED`).
fn answers(out: &Output) -> (BTreeMap<String, usize>, usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut names = BTreeMap::new();
    for page in stdout.split("<p>pod: ").skip(1) {
        let name = page.split('<').next().unwrap_or_default().trim();
        *names.entry(name.to_string()).or_default() += 1;
    }
    let failed = stdout.lines().filter(|l| l.trim() == "FAILED").count();
    (names, failed)
}

/// A shell loop of `REQUESTS` runs of `fetch` (which must print the page), `FAILED` for
/// each that fails.
fn request_loop(fetch: &str) -> String {
    let seq: Vec<String> = (1..=REQUESTS).map(|i| i.to_string()).collect();
    format!(
        "for i in {}; do {fetch} || echo FAILED; done",
        seq.join(" ")
    )
}

/// Asserts that every request was answered, by the Deployment's pods only, and by more
/// than one of them.
fn assert_spread(what: &str, out: &Output, pods: &BTreeSet<String>) {
    let (names, failed) = answers(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{what}: answers {names:?}, {failed} failed");
    assert_eq!(
        failed, 0,
        "{what}: {failed} of {REQUESTS} requests failed; answers {names:?}; stderr: {stderr}"
    );
    assert_eq!(
        names.values().sum::<usize>(),
        REQUESTS,
        "{what}: one page per request: {names:?}; stderr: {stderr}"
    );
    assert!(
        names.keys().all(|n| pods.contains(n)),
        "{what}: answered by something else than the pods {pods:?}: {names:?}"
    );
    assert!(
        names.len() > 1,
        "{what}: all {REQUESTS} requests went to one pod: {names:?}"
    );
}

/// Whether the dump has `kind` frontend `addr:80/TCP` of `service` whose active backends are
/// exactly `backends` on port 80.
fn has_frontend(
    rows: &[Value],
    kind: &str,
    addr: Ipv4Addr,
    service: &str,
    backends: &BTreeSet<Ipv4Addr>,
) -> bool {
    rows.iter().any(|r| {
        let active: BTreeSet<Ipv4Addr> = r["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["state"] == "active" && b["port"] == 80)
            .filter_map(|b| b["address"].as_str()?.parse().ok())
            .collect();
        r["kind"] == kind
            && r["frontend"] == format!("{addr}:80/TCP")
            && r["service"]
                .as_str()
                .is_some_and(|s| s.starts_with(service))
            && r["active_backends"] == backends.len()
            && &active == backends
    })
}

fn ready_pods(k: &Kubelet, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(k.client(), NS);
    k.block_on(pods.list(&ListParams::default().labels(&format!("app={app}"))))
        .expect("list pods")
        .items
        .into_iter()
        .filter(is_ready)
        .collect()
}

#[test]
fn privileged_service_answers_from_host_pod_and_outside() {
    if !privileged("privileged_service_answers_from_host_pod_and_outside") {
        return;
    }
    let mut cluster = Cluster::start("kpt-cproxy");
    let svc_net = cluster.svc_net;
    let up_net = cluster.uplink.net;
    let svc_cidr = cluster.svc_cidr().to_string();
    let pool = cluster.pool().to_string();
    // The host does not own the EXTERNAL-IP and does no proxy ARP on the uplink, so its own
    // stack never answers who-has for it: only kproxy's tc program can.
    for conf in ["all", cluster.uplink.host_if.as_str()] {
        let path = format!("/proc/sys/net/ipv4/conf/{conf}/proxy_arp");
        let value = std::fs::read_to_string(&path).expect("read proxy_arp");
        assert_eq!(value.trim(), "0", "{path}");
    }
    let bpffs = cluster.bpffs().to_path_buf();
    let cgroup = cluster.cgroup().to_path_buf();
    let Cluster {
        kproxy,
        kubelet,
        uplink,
        ..
    } = &mut cluster;

    // The Deployment and its LoadBalancer Service, through the API.
    let app = unique("web");
    let deployments: Api<Deployment> = Api::namespaced(kubelet.client(), NS);
    let deployment = http_deployment(&app, 3, "httpd", "kproxy/httpd:1", 80);
    kubelet
        .block_on(deployments.create(&PostParams::default(), &deployment))
        .expect("create the Deployment");
    let services: Api<Service> = Api::namespaced(kubelet.client(), NS);
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}],
        },
    }))
    .expect("a Service");
    kubelet
        .block_on(services.create(&PostParams::default(), &service))
        .expect("create the Service");

    let mut pods = Vec::new();
    eventually("three ready pods", || {
        kproxy.assert_running();
        pods = ready_pods(kubelet, &app);
        pods.len() == 3
    });
    let names: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let ips: BTreeSet<Ipv4Addr> = pods.iter().filter_map(pod_ip).collect();
    assert_eq!(ips.len(), 3, "three pod IPs: {ips:?}");
    let mut cluster_ip = Ipv4Addr::UNSPECIFIED;
    let mut lb_ip = Ipv4Addr::UNSPECIFIED;
    eventually("the Service's EXTERNAL-IP", || {
        let svc = kubelet
            .block_on(services.get(&app))
            .expect("get the Service");
        cluster_ip = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref()?.parse().ok())
            .expect("a ClusterIP");
        let ingress = svc
            .status
            .and_then(|s| s.load_balancer?.ingress?.into_iter().next()?.ip);
        ingress.is_some_and(|ip| {
            lb_ip = ip.parse().expect("an IPv4 EXTERNAL-IP");
            true
        })
    });
    eprintln!("ClusterIP {cluster_ip}, EXTERNAL-IP {lb_ip}, pods {names:?} at {ips:?}");
    assert_eq!(
        cluster_ip.octets()[..3],
        [198, 19, u8::try_from(svc_net).expect("a byte")],
        "ClusterIP {cluster_ip} in the test's service CIDR {svc_cidr}"
    );
    assert_eq!(
        lb_ip.octets()[..3],
        [198, 19, u8::try_from(up_net).expect("a byte")],
        "EXTERNAL-IP {lb_ip} from the pool {pool} on the uplink's segment"
    );

    // (d) The Service and its slices reach the maps: both frontends, the three pods active.
    let service_name = format!("{NS}/{app}");
    let mut rows = Vec::new();
    eventually(
        "kproxy dump lists the ClusterIP and LB IP frontends",
        || {
            kproxy.assert_running();
            rows = kproxy_tests::lab::kproxy_dump(&bpffs);
            has_frontend(&rows, "ClusterIP", cluster_ip, &service_name, &ips)
                && has_frontend(&rows, "LoadBalancerIP", lb_ip, &service_name, &ips)
        },
    );

    // Nothing sent below can leave the test's links: the ClusterIP has only the
    // keep-local route on the host, the pods are on the kubelet's test bridge.
    assert_unreachable_here(cluster_ip, &svc_cidr);
    for ip in &ips {
        assert_route(Command::new("ip"), *ip, &kubelet.bridge, None);
    }
    let url = format!("http://{cluster_ip}/");

    // (a) From a host process in the socket-LB cgroup.
    let host = run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"echo $$ > "$0/cgroup.procs" && {}"#,
            request_loop(&format!("curl -sS --max-time 3 {url}"))
        ))
        .arg(&cgroup));
    assert_spread("host → ClusterIP", &host, &names);

    // (b) From inside a pod: its default route leads to the bridge's gateway, i.e. into the
    // host through its veth, where only kproxy's pod program translates it.
    let client_pod = &pods[0];
    let container = container_status(client_pod, "httpd")
        .and_then(docker_id)
        .expect("the httpd container's id")
        .to_string();
    let pid = inspect(&container)["State"]["Pid"]
        .as_u64()
        .expect("the container's pid");
    let mut in_pod = Command::new("nsenter");
    in_pod
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["--", "ip"]);
    let gateway = Ipv4Addr::from(u32::from(kubelet.cidr.network()) + 1);
    assert_route(in_pod, cluster_ip, "eth0", Some(gateway));
    let from_pod = run(Command::new("docker").args([
        "exec",
        &container,
        "/bin/busybox",
        "sh",
        "-c",
        // busybox's wget segfaults in this static build; nc with an HTTP/1.0 request.
        &request_loop(&format!(
            r"printf 'GET / HTTP/1.0\r\n\r\n' | /bin/busybox nc -w 3 {cluster_ip} 80"
        )),
    ]));
    assert_spread("pod → ClusterIP", &from_pod, &names);

    // (c) From the client namespace: the EXTERNAL-IP is on-link there (no gateway, no
    // route of its own), so the client must ARP for it.
    assert_route(uplink.client.cmd("ip"), lb_ip, "eth0", None);
    let outside = run(uplink.client.cmd("sh").args([
        "-c",
        &request_loop(&format!("curl -sS --max-time 3 http://{lb_ip}/")),
    ]));
    assert_spread("client → EXTERNAL-IP", &outside, &names);
    let mac = uplink.host_mac();
    let neigh = uplink.client.ip(&["neigh", "show", &lb_ip.to_string()]);
    assert!(
        neigh.contains(&mac),
        "{lb_ip} must resolve to the uplink's MAC {mac}: {neigh:?}"
    );
    kproxy.assert_running();
}
