use serde_json::{Value, json};

use super::*;

fn defaulted(kind: &str, mut obj: Value) -> Value {
    apply_defaults(kind, &mut obj);
    // Defaulting twice changes nothing.
    let mut again = obj.clone();
    apply_defaults(kind, &mut again);
    assert_eq!(again, obj, "{kind} defaults are not idempotent");
    obj
}

#[test]
fn pod_gets_the_kubernetes_defaults() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx", "labels": {"run": "nginx"}},
        "spec": {"containers": [{
            "name": "nginx", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
            "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}},
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}}
        }]},
        "status": {}
    });
    let expected = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx", "labels": {"run": "nginx"}},
        "spec": {
            "containers": [{
                "name": "nginx", "image": "nginx",
                "imagePullPolicy": "Always",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}],
                "livenessProbe": {
                    "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
                },
                "readinessProbe": {
                    "tcpSocket": {"port": 80},
                    "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3
                },
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit", "scheme": "HTTP"}}},
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "100m", "memory": "128Mi"}
                }
            }],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "terminationGracePeriodSeconds": 30,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true
        },
        // Status belongs to the server and the kubelet.
        "status": {}
    });
    assert_eq!(defaulted("Pod", pod), expected);
}

#[test]
fn client_values_win() {
    let pod = json!({"spec": {
        "restartPolicy": "Never", "dnsPolicy": "Default", "terminationGracePeriodSeconds": 0,
        "enableServiceLinks": false, "schedulerName": "custom",
        "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]
    }});
    let d = defaulted("Pod", pod);
    assert_eq!(d["spec"]["restartPolicy"], "Never");
    assert_eq!(d["spec"]["dnsPolicy"], "Default");
    assert_eq!(d["spec"]["terminationGracePeriodSeconds"], 0);
    assert_eq!(d["spec"]["enableServiceLinks"], false);
    assert_eq!(d["spec"]["schedulerName"], "custom");
    assert_eq!(d["spec"]["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(d["spec"]["containers"][0]["ports"][0]["protocol"], "UDP");
    // Null means "not given".
    let d = defaulted(
        "Pod",
        json!({"spec": {"restartPolicy": null, "containers": []}}),
    );
    assert_eq!(d["spec"]["restartPolicy"], "Always");
}

#[test]
fn image_pull_policy_follows_the_tag() {
    let cases = [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry.local:5000/team/app", "Always"),
        ("registry.local:5000/team/app:v2", "IfNotPresent"),
        (
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "IfNotPresent",
        ),
        (
            "nginx:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Always",
        ),
        ("", "IfNotPresent"),
    ];
    for (image, want) in cases {
        assert_eq!(pull_policy(image), want, "{image}");
    }
}

#[test]
fn host_network_ports_and_volumes() {
    let pod = json!({"spec": {
        "hostNetwork": true,
        "initContainers": [{"name": "init", "image": "busybox:1.36", "ports": [{"containerPort": 9000}]}],
        "containers": [{"name": "c", "image": "app:1", "ports": [{"containerPort": 8080}]}],
        "volumes": [
            {"name": "scratch"},
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 256}},
            {"name": "host", "hostPath": {"path": "/var/log"}}
        ]
    }});
    let d = defaulted("Pod", pod);
    assert_eq!(d["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    assert_eq!(d["spec"]["initContainers"][0]["ports"][0]["hostPort"], 9000);
    assert_eq!(
        d["spec"]["initContainers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(d["spec"]["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(d["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
    assert_eq!(d["spec"]["volumes"][2]["secret"]["defaultMode"], 256);
    assert_eq!(d["spec"]["volumes"][3]["hostPath"]["type"], "");
}

#[test]
fn service_defaults() {
    // `kubectl expose deployment nginx --port=80`
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nginx"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 0}, {"name": "b", "port": 81}], "selector": {"app": "nginx"}},
        "status": {"loadBalancer": {}}
    });
    let d = defaulted("Service", svc);
    assert_eq!(
        d["spec"],
        json!({
            "ports": [
                {"port": 80, "protocol": "TCP", "targetPort": 80},
                {"name": "b", "port": 81, "protocol": "TCP", "targetPort": 81}
            ],
            "selector": {"app": "nginx"},
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv4"]
        })
    );

    let np = defaulted(
        "Service",
        json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}}),
    );
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
    assert!(np["spec"].get("allocateLoadBalancerNodePorts").is_none());

    let lb = defaulted(
        "Service",
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}}),
    );
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);

    let sticky = defaulted("Service", json!({"spec": {"sessionAffinity": "ClientIP"}}));
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );

    let ext = defaulted(
        "Service",
        json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    assert_eq!(
        ext["spec"],
        json!({"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"})
    );
}

#[test]
fn deployment_defaults() {
    // `kubectl create deployment nginx --image=nginx:1.27`
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"app": "nginx"}},
        "spec": {
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "resources": {"limits": {"cpu": "1"}}}]}
            }
        },
        "status": {}
    });
    let d = defaulted("Deployment", deploy);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    let tspec = &d["spec"]["template"]["spec"];
    assert_eq!(tspec["restartPolicy"], "Always");
    assert_eq!(tspec["dnsPolicy"], "ClusterFirst");
    assert_eq!(tspec["schedulerName"], "default-scheduler");
    assert_eq!(tspec["terminationGracePeriodSeconds"], 30);
    assert_eq!(tspec["securityContext"], json!({}));
    assert_eq!(tspec["containers"][0]["imagePullPolicy"], "IfNotPresent");
    // Pod-only defaults stay out of templates.
    assert!(tspec.get("enableServiceLinks").is_none());
    assert!(
        tspec["containers"][0]["resources"]
            .get("requests")
            .is_none()
    );
    assert_eq!(d["status"], json!({}));

    let recreate = defaulted(
        "Deployment",
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    let partial = defaulted(
        "Deployment",
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 2}}}}),
    );
    assert_eq!(
        partial["spec"]["strategy"]["rollingUpdate"],
        json!({"maxSurge": 2, "maxUnavailable": "25%"})
    );
}

#[test]
fn replica_set_defaults() {
    let d = defaulted(
        "ReplicaSet",
        json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}),
    );
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"],
        "File"
    );
    let zero = defaulted("ReplicaSet", json!({"spec": {"replicas": 0}}));
    assert_eq!(zero["spec"]["replicas"], 0);
}

#[test]
fn namespace_node_and_endpoint_defaults() {
    let ns = defaulted(
        "Namespace",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}),
    );
    assert_eq!(
        ns,
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev"}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        })
    );
    let terminating = defaulted(
        "Namespace",
        json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}}),
    );
    assert_eq!(terminating["status"]["phase"], "Terminating");

    let node = defaulted(
        "Node",
        json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2", "pods": "110"}}}),
    );
    assert_eq!(
        node["status"]["allocatable"],
        json!({"cpu": "2", "pods": "110"})
    );
    let reserved = defaulted(
        "Node",
        json!({"status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "1900m"}}}),
    );
    assert_eq!(reserved["status"]["allocatable"], json!({"cpu": "1900m"}));

    let ep = defaulted(
        "Endpoints",
        json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

    let slice = defaulted(
        "EndpointSlice",
        json!({"addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}]}),
    );
    assert_eq!(
        slice["ports"][0],
        json!({"port": 80, "name": "", "protocol": "TCP"})
    );
}

#[test]
fn odd_shapes_are_left_for_validation() {
    let mut not_object = json!("pod");
    apply_defaults("Pod", &mut not_object);
    assert_eq!(not_object, json!("pod"));
    let d = defaulted("Pod", json!({"spec": "nope"}));
    assert_eq!(d, json!({"spec": "nope"}));
    let d = defaulted("Pod", json!({"spec": {"containers": "x"}}));
    assert_eq!(d["spec"]["containers"], "x");
    let d = defaulted("Service", json!({"spec": {"ports": [5, {"port": 1}]}}));
    assert_eq!(d["spec"]["ports"][0], 5);
    assert_eq!(d["spec"]["ports"][1]["targetPort"], 1);
    // A missing spec is created, as Go's zero value would be.
    let d = defaulted("Service", json!({"metadata": {"name": "s"}}));
    assert_eq!(d["spec"]["type"], "ClusterIP");
    let unknown = defaulted("ConfigMap", json!({"data": {"a": "b"}}));
    assert_eq!(unknown, json!({"data": {"a": "b"}}));
}
