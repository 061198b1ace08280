//! The whole control plane with the real kubelet and Docker: `kubectl create deployment` makes
//! the controller manager create a ReplicaSet and a pod, the scheduler binds it to the only
//! node, node IPAM gives that node its pod CIDR, the kubelet runs it, and the pod serves its
//! page; scaling and deleting follow.
#![forbid(unsafe_code)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{Kubectl, available};
use kproxy_tests::kubelet::{Kubelet, free_cidr, http_get, is_ready, pod_ip};
use kproxy_tests::{control, eventually, privileged};
use kube::api::{Api, ListParams};

fn app_pods(k: &Kubelet, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(k.client(), "default");
    k.block_on(pods.list(&ListParams::default().labels(&format!("app={app}"))))
        .expect("list pods")
        .items
}

#[test]
fn kubectl_create_deployment_runs_a_serving_pod() {
    if !privileged("kubectl_create_deployment_runs_a_serving_pod") || !available() {
        return;
    }
    let dir = TempDir::new("kpt-cluster");
    let api = ApiServer::start(dir.path(), &[]);
    // A free /24 as the whole cluster CIDR: node IPAM must hand exactly it to the node.
    let cluster_cidr = free_cidr().to_string();
    let _cm = control::controller_manager(
        &api,
        &[
            "--cluster-cidr",
            &cluster_cidr,
            "--node-cidr-mask-size",
            "24",
        ],
    );
    let _sched = control::scheduler(&api, &[]);
    // The kubelet waits for node IPAM: no --pod-cidr given.
    let kubelet = Kubelet::start_with_ipam(&api, &[]);
    let nodes: Api<Node> = Api::all(kubelet.client());
    let node = kubelet
        .block_on(nodes.get(&kubelet.node))
        .expect("the node");
    let cidr = node.spec.and_then(|s| s.pod_cidr).expect("a pod CIDR");
    assert_eq!(cidr, cluster_cidr, "node IPAM assigned the node its CIDR");

    let k = Kubectl::new(&api.kubeconfig, dir.path());
    k.ok(&["create", "deployment", "httpd", "--image=httpd"]);
    let mut serving_ip = String::new();
    eventually("the httpd pod Running, Ready and serving its page", || {
        let pods = app_pods(&kubelet, "httpd");
        let Some(p) = pods.iter().find(|p| is_ready(p)) else {
            return false;
        };
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(kubelet.node.as_str())
        );
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(ip) = pod_ip(p) else { return false };
        assert!(
            kubelet.cidr.contains(&ip),
            "pod IP {ip} in {}",
            kubelet.cidr
        );
        match http_get(&format!("http://{ip}/")) {
            Some(page) if page.contains(&name) => {
                serving_ip = ip.to_string();
                true
            }
            _ => false,
        }
    });
    let out = k.ok(&["get", "deployment", "httpd"]);
    eventually("kubectl shows 1/1 ready", || {
        k.ok(&["get", "deployment", "httpd"]).contains("1/1")
    });
    assert!(out.contains("httpd"), "{out}");
    let rs = k.ok(&["get", "rs", "-l", "app=httpd", "-o", "name"]);
    assert_eq!(rs.lines().count(), 1, "one ReplicaSet: {rs}");
    assert!(
        k.ok(&["describe", "deployment", "httpd"])
            .contains("ScalingReplicaSet"),
        "describe shows the controller's events"
    );

    // Scale to 2: a second pod on the node, serving too.
    k.ok(&["scale", "deployment", "httpd", "--replicas=2"]);
    eventually("two ready httpd pods", || {
        app_pods(&kubelet, "httpd")
            .iter()
            .filter(|p| is_ready(p))
            .count()
            == 2
    });
    let deps: Api<Deployment> = Api::namespaced(kubelet.client(), "default");
    eventually("the Deployment reports 2 available", || {
        kubelet
            .block_on(deps.get_status("httpd"))
            .ok()
            .and_then(|d| d.status)
            .and_then(|s| s.available_replicas)
            == Some(2)
    });

    // Deleting the Deployment removes its ReplicaSet and pods (background propagation).
    k.ok(&["delete", "deployment", "httpd"]);
    eventually("the pods are gone", || {
        app_pods(&kubelet, "httpd").is_empty()
    });
    eventually("the old pod no longer answers", || {
        http_get(&format!("http://{serving_ip}/")).is_none()
    });
}
