//! `describe pod`.

use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use super::containers::{containers, tolerations, volumes};
use super::{
    Clock, Writer, controlled_by, events_section, int, items, labels_multiline, str_of, string_map,
};

pub(super) fn render(pod: &Value, events: Option<&[Event]>, clock: &Clock) -> String {
    let mut w = Writer::new();
    let meta = &pod["metadata"];
    let spec = &pod["spec"];
    let status = &pod["status"];
    put!(w, 0, "Name:\t{}\n", str_of(&meta["name"]));
    put!(w, 0, "Namespace:\t{}\n", str_of(&meta["namespace"]));
    if let Some(p) = spec["priority"].as_i64() {
        put!(w, 0, "Priority:\t{p}\n");
    }
    if !str_of(&spec["priorityClassName"]).is_empty() {
        put!(
            w,
            0,
            "Priority Class Name:\t{}\n",
            str_of(&spec["priorityClassName"])
        );
    }
    if !str_of(&spec["runtimeClassName"]).is_empty() {
        put!(
            w,
            0,
            "Runtime Class Name:\t{}\n",
            str_of(&spec["runtimeClassName"])
        );
    }
    if !str_of(&spec["serviceAccountName"]).is_empty() {
        put!(
            w,
            0,
            "Service Account:\t{}\n",
            str_of(&spec["serviceAccountName"])
        );
    }
    match str_of(&spec["nodeName"]) {
        "" => w.write(0, "Node:\t<none>\n"),
        node => put!(w, 0, "Node:\t{node}/{}\n", str_of(&status["hostIP"])),
    }
    if status["startTime"].is_string() {
        put!(w, 0, "Start Time:\t{}\n", clock.rfc(&status["startTime"]));
    }
    labels_multiline(&mut w, "Labels", &string_map(&meta["labels"]));
    super::annotations_multiline(&mut w, "Annotations", &string_map(&meta["annotations"]));
    let phase = str_of(&status["phase"]);
    if meta["deletionTimestamp"].is_string() && phase != "Failed" && phase != "Succeeded" {
        put!(
            w,
            0,
            "Status:\tTerminating (lasts {})\n",
            clock.age(&meta["deletionTimestamp"])
        );
        put!(
            w,
            0,
            "Termination Grace Period:\t{}s\n",
            int(&meta["deletionGracePeriodSeconds"])
        );
    } else {
        put!(w, 0, "Status:\t{phase}\n");
    }
    for (key, label) in [("reason", "Reason"), ("message", "Message")] {
        if !str_of(&status[key]).is_empty() {
            put!(w, 0, "{label}:\t{}\n", str_of(&status[key]));
        }
    }
    put!(w, 0, "IP:\t{}\n", str_of(&status["podIP"]));
    let ips = items(&status["podIPs"]);
    if ips.is_empty() {
        w.write(0, "IPs:\t<none>\n");
    } else {
        w.write(0, "IPs:\n");
        for ip in ips {
            put!(w, 1, "IP:\t{}\n", str_of(&ip["ip"]));
        }
    }
    if let Some(owner) = controlled_by(pod) {
        put!(w, 0, "Controlled By:\t{owner}\n");
    }
    if !str_of(&status["nominatedNodeName"]).is_empty() {
        put!(
            w,
            0,
            "NominatedNodeName:\t{}\n",
            str_of(&status["nominatedNodeName"])
        );
    }
    if !items(&spec["initContainers"]).is_empty() {
        containers(
            &mut w,
            "Init Containers",
            items(&spec["initContainers"]),
            items(&status["initContainerStatuses"]),
            Some(pod),
            "",
            clock,
        );
    }
    containers(
        &mut w,
        "Containers",
        items(&spec["containers"]),
        items(&status["containerStatuses"]),
        Some(pod),
        "",
        clock,
    );
    let conditions = items(&status["conditions"]);
    if !conditions.is_empty() {
        w.write(0, "Conditions:\n  Type\tStatus\n");
        for c in conditions {
            put!(w, 1, "{} \t{} \n", str_of(&c["type"]), str_of(&c["status"]));
        }
    }
    volumes(&mut w, &spec["volumes"], "");
    put!(w, 0, "QoS Class:\t{}\n", qos_class(pod));
    labels_multiline(&mut w, "Node-Selectors", &string_map(&spec["nodeSelector"]));
    tolerations(&mut w, "Tolerations", &spec["tolerations"]);
    events_section(&mut w, events, clock);
    w.finish()
}

/// The pod's QoS class: the server's, else derived as Kubernetes does.
pub(super) fn qos_class(pod: &Value) -> &'static str {
    kproxy_api::qos::QosClass::of_pod(pod).as_str()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{clock, event};
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-7d4b9c-x2x",
                "namespace": "default",
                "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9c", "controller": true}],
            },
            "spec": {
                "nodeName": "node-a",
                "priority": 0,
                "serviceAccountName": "default",
                "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
            },
            "status": {
                "phase": "Running",
                "hostIP": "192.168.1.10",
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}],
                "startTime": "2024-05-01T11:00:00Z",
                "qosClass": "BestEffort",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [{
                    "name": "web", "containerID": "containerd://abc", "image": "nginx:1.27", "imageID": "sha256:def",
                    "ready": true, "restartCount": 2, "state": {"running": {"startedAt": "2024-05-01T11:00:05Z"}},
                }],
            },
        })
    }

    #[test]
    fn renders_a_running_pod() {
        let events = [event(
            "Scheduled",
            "Successfully assigned default/web to node-a",
            "2024-05-01T11:00:00Z",
            1,
        )];
        let out = render(&pod(), Some(&events), &clock());
        let expected = "\
Name:             web-7d4b9c-x2x
Namespace:        default
Priority:         0
Service Account:  default
Node:             node-a/192.168.1.10
Start Time:       Wed, 01 May 2024 11:00:00 +0000
Labels:           app=web
                  pod-template-hash=7d4b9c
Annotations:      <none>
Status:           Running
IP:               10.244.0.5
IPs:
  IP:           10.244.0.5
Controlled By:  ReplicaSet/web-7d4b9c
Containers:
  web:
    Container ID:   containerd://abc
    Image:          nginx:1.27
    Image ID:       sha256:def
    Port:           80/TCP
    Host Port:      0/TCP
    State:          Running
      Started:      Wed, 01 May 2024 11:00:05 +0000
    Ready:          True
    Restart Count:  2
    Environment:    <none>
    Mounts:         <none>
Conditions:
  Type           Status
  PodScheduled   True 
  Ready          True 
Volumes:         <none>
QoS Class:       BestEffort
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type    Reason     Age   From              Message
  ----    ------     ----  ----              -------
  Normal  Scheduled  10m   kproxy-scheduler  Successfully assigned default/web to node-a
";
        assert_eq!(out, expected);
    }

    #[test]
    fn pending_and_terminating_pods() {
        let mut p = pod();
        p["spec"]["nodeName"] = Value::Null;
        p["status"] = json!({"phase": "Pending"});
        let out = render(&p, None, &clock());
        assert!(out.contains("Node:             <none>\n"), "{out}");
        assert!(out.contains("IPs:              <none>\n"), "{out}");
        assert!(!out.contains("Events"), "{out}");
        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:30Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let out = render(&p, Some(&[]), &clock());
        assert!(
            out.contains("Status:                    Terminating (lasts 30s)\n"),
            "{out}"
        );
        assert!(out.contains("Termination Grace Period:  30s\n"), "{out}");
        // Without conditions, the container lines share a block with the ones after them.
        assert!(out.ends_with("Events:           <none>\n"), "{out}");
    }

    #[test]
    fn qos_classes() {
        let with = |resources: Value| json!({"spec": {"containers": [{"name": "a", "resources": resources}]}});
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&with(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&with(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})
            )),
            "Burstable"
        );
        assert_eq!(qos_class(&pod()), "BestEffort");
    }
}
