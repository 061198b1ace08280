//! Containers, volumes and pod templates: the parts pods, deployments and replica sets share.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::{
    Clock, Writer, annotations_multiline, int, int_or_string, items, labels_multiline, or_none,
    str_of, string_map,
};

/// `Containers:` with each container's image, ports, command, state, resources, probes,
/// environment and mounts. `statuses` are the pod's container statuses (none for templates);
/// `pod` resolves `fieldRef` environment values; `space` indents template sections.
pub(super) fn containers(
    w: &mut Writer,
    label: &str,
    list: &[Value],
    statuses: &[Value],
    pod: Option<&Value>,
    space: &str,
    clock: &Clock,
) {
    let none = if list.is_empty() { " <none>" } else { "" };
    put!(w, 0, "{space}{label}:{none}\n");
    let name_indent = if space.is_empty() { "" } else { " " };
    for c in list {
        let name = str_of(&c["name"]);
        let status = statuses.iter().find(|s| str_of(&s["name"]) == name);
        put!(w, 1, "{name_indent}{name}:\n");
        if let Some(s) = status {
            put!(w, 2, "Container ID:\t{}\n", str_of(&s["containerID"]));
        }
        put!(w, 2, "Image:\t{}\n", str_of(&c["image"]));
        if let Some(s) = status {
            put!(w, 2, "Image ID:\t{}\n", str_of(&s["imageID"]));
        }
        let ports = port_list(&c["ports"], "containerPort");
        if ports.contains(',') {
            put!(w, 2, "Ports:\t{ports}\n");
        } else {
            put!(w, 2, "Port:\t{}\n", or_none(&ports));
        }
        let host_ports = port_list(&c["ports"], "hostPort");
        if host_ports.contains(',') {
            put!(w, 2, "Host Ports:\t{host_ports}\n");
        } else {
            put!(w, 2, "Host Port:\t{}\n", or_none(&host_ports));
        }
        for (title, key) in [("Command", "command"), ("Args", "args")] {
            let words = items(&c[key]);
            if !words.is_empty() {
                put!(w, 2, "{title}:\n");
                for word in words {
                    for line in str_of(word).split('\n') {
                        put!(w, 3, "{line}\n");
                    }
                }
            }
        }
        if let Some(s) = status {
            container_state(w, "State", &s["state"], clock);
            if s["lastState"]["terminated"].is_object() {
                container_state(w, "Last State", &s["lastState"], clock);
            }
            put!(
                w,
                2,
                "Ready:\t{}\n",
                if s["ready"].as_bool() == Some(true) {
                    "True"
                } else {
                    "False"
                }
            );
            put!(w, 2, "Restart Count:\t{}\n", int(&s["restartCount"]));
        }
        resources(w, &c["resources"], 2);
        for (title, key) in [
            ("Liveness", "livenessProbe"),
            ("Readiness", "readinessProbe"),
            ("Startup", "startupProbe"),
        ] {
            if c[key].is_object() {
                put!(w, 2, "{title}:\t{}\n", probe(&c[key]));
            }
        }
        if !items(&c["envFrom"]).is_empty() {
            env_from(w, &c["envFrom"]);
        }
        env(w, &c["env"], pod);
        mounts(w, &c["volumeMounts"]);
    }
}

/// `80/TCP, 443/TCP`: the ports with protocols (TCP when unset), as kubectl 1.33 prints them.
fn port_list(ports: &Value, field: &str) -> String {
    items(ports)
        .iter()
        .map(|p| {
            let proto = match str_of(&p["protocol"]) {
                "" => "TCP",
                other => other,
            };
            format!("{}/{proto}", int(&p[field]))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn container_state(w: &mut Writer, title: &str, state: &Value, clock: &Clock) {
    if state["running"].is_object() {
        put!(w, 2, "{title}:\tRunning\n");
        put!(
            w,
            3,
            "Started:\t{}\n",
            clock.rfc(&state["running"]["startedAt"])
        );
    } else if state["waiting"].is_object() {
        put!(w, 2, "{title}:\tWaiting\n");
        let reason = str_of(&state["waiting"]["reason"]);
        if !reason.is_empty() {
            put!(w, 3, "Reason:\t{reason}\n");
        }
    } else if state["terminated"].is_object() {
        let t = &state["terminated"];
        put!(w, 2, "{title}:\tTerminated\n");
        for (key, label) in [("reason", "Reason"), ("message", "Message")] {
            if !str_of(&t[key]).is_empty() {
                put!(w, 3, "{label}:\t{}\n", str_of(&t[key]));
            }
        }
        put!(w, 3, "Exit Code:\t{}\n", int(&t["exitCode"]));
        if int(&t["signal"]) > 0 {
            put!(w, 3, "Signal:\t{}\n", int(&t["signal"]));
        }
        put!(w, 3, "Started:\t{}\n", clock.rfc(&t["startedAt"]));
        put!(w, 3, "Finished:\t{}\n", clock.rfc(&t["finishedAt"]));
    } else {
        put!(w, 2, "{title}:\tWaiting\n");
    }
}

/// `Limits:`/`Requests:` with one line per resource, sorted.
pub(super) fn resources(w: &mut Writer, res: &Value, level: usize) {
    for (title, key) in [("Limits", "limits"), ("Requests", "requests")] {
        let list: BTreeMap<String, String> = string_map(&res[key]);
        if !list.is_empty() {
            put!(w, level, "{title}:\n");
        }
        for (name, q) in list {
            put!(w, level + 1, "{name}:\t{q}\n");
        }
    }
}

/// `http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`.
pub(super) fn probe(p: &Value) -> String {
    let num = |key: &str, default: i64| p[key].as_i64().unwrap_or(default);
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        num("initialDelaySeconds", 0),
        num("timeoutSeconds", 0),
        num("periodSeconds", 0),
        num("successThreshold", 0),
        num("failureThreshold", 0)
    );
    if p["exec"].is_object() {
        let cmd: Vec<&str> = items(&p["exec"]["command"]).iter().map(str_of).collect();
        return format!("exec [{}] {attrs}", cmd.join(" "));
    }
    if p["httpGet"].is_object() {
        let h = &p["httpGet"];
        let scheme = match str_of(&h["scheme"]) {
            "" => "http".to_string(),
            s => s.to_lowercase(),
        };
        let port = int_or_string(&h["port"]);
        let host = str_of(&h["host"]);
        let authority = if port.is_empty() {
            host.to_string()
        } else {
            join_host_port(host, &port)
        };
        return format!(
            "http-get {scheme}://{authority}{} {attrs}",
            str_of(&h["path"])
        );
    }
    if p["tcpSocket"].is_object() {
        let t = &p["tcpSocket"];
        return format!(
            "tcp-socket {}:{} {attrs}",
            str_of(&t["host"]),
            int_or_string(&t["port"])
        );
    }
    if p["grpc"].is_object() {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            int(&p["grpc"]["port"]),
            str_of(&p["grpc"]["service"])
        );
    }
    format!("unknown {attrs}")
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn env_from(w: &mut Writer, list: &Value) {
    put!(w, 2, "Environment Variables from:\n");
    for e in items(list) {
        let (kind, src) = if e["configMapRef"].is_object() {
            ("ConfigMap", &e["configMapRef"])
        } else {
            ("Secret", &e["secretRef"])
        };
        let optional = src["optional"].as_bool() == Some(true);
        let prefix = str_of(&e["prefix"]);
        if prefix.is_empty() {
            put!(
                w,
                3,
                "{}\t{kind}\tOptional: {optional}\n",
                str_of(&src["name"])
            );
        } else {
            put!(
                w,
                3,
                "{}\t{kind} with prefix '{prefix}'\tOptional: {optional}\n",
                str_of(&src["name"])
            );
        }
    }
}

fn env(w: &mut Writer, list: &Value, pod: Option<&Value>) {
    let vars = items(list);
    if vars.is_empty() {
        put!(w, 2, "Environment:\t<none>\n");
        return;
    }
    put!(w, 2, "Environment:\n");
    for e in vars {
        let name = str_of(&e["name"]);
        let from = &e["valueFrom"];
        if !from.is_object() {
            for (i, line) in str_of(&e["value"]).split('\n').enumerate() {
                if i == 0 {
                    put!(w, 3, "{name}:\t{line}\n");
                } else {
                    put!(w, 3, "\t{line}\n");
                }
            }
        } else if from["fieldRef"].is_object() {
            let path = str_of(&from["fieldRef"]["fieldPath"]);
            let value = pod.map(|p| field_path_value(p, path)).unwrap_or_default();
            let version = match str_of(&from["fieldRef"]["apiVersion"]) {
                "" => "v1",
                v => v,
            };
            put!(w, 3, "{name}:\t{value} ({version}:{path})\n");
        } else if from["resourceFieldRef"].is_object() {
            put!(
                w,
                3,
                "{name}:\t ({})\n",
                str_of(&from["resourceFieldRef"]["resource"])
            );
        } else if from["secretKeyRef"].is_object() {
            let r = &from["secretKeyRef"];
            let optional = r["optional"].as_bool() == Some(true);
            put!(
                w,
                3,
                "{name}:\t<set to the key '{}' in secret '{}'>\tOptional: {optional}\n",
                str_of(&r["key"]),
                str_of(&r["name"])
            );
        } else if from["configMapKeyRef"].is_object() {
            let r = &from["configMapKeyRef"];
            let optional = r["optional"].as_bool() == Some(true);
            put!(
                w,
                3,
                "{name}:\t<set to the key '{}' of config map '{}'>\tOptional: {optional}\n",
                str_of(&r["key"]),
                str_of(&r["name"])
            );
        }
    }
}

/// The value of a downward-API field path on a pod (the common ones).
pub(super) fn field_path_value(pod: &Value, path: &str) -> String {
    let bracketed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['").and_then(|r| r.strip_suffix("']")))
            .map(str::to_string)
    };
    if let Some(key) = bracketed("metadata.labels") {
        return str_of(&pod["metadata"]["labels"][key.as_str()]).to_string();
    }
    if let Some(key) = bracketed("metadata.annotations") {
        return str_of(&pod["metadata"]["annotations"][key.as_str()]).to_string();
    }
    let v = match path {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "metadata.uid" => &pod["metadata"]["uid"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        "status.podIP" => &pod["status"]["podIP"],
        "status.hostIP" => &pod["status"]["hostIP"],
        _ => &Value::Null,
    };
    str_of(v).to_string()
}

fn mounts(w: &mut Writer, list: &Value) {
    let mut mounts: Vec<&Value> = items(list).iter().collect();
    if mounts.is_empty() {
        put!(w, 2, "Mounts:\t<none>\n");
        return;
    }
    put!(w, 2, "Mounts:\n");
    mounts.sort_by_key(|m| str_of(&m["mountPath"]).to_string());
    for m in mounts {
        let mut flags = vec![if m["readOnly"].as_bool() == Some(true) {
            "ro".to_string()
        } else {
            "rw".to_string()
        }];
        if !str_of(&m["subPath"]).is_empty() {
            flags.push(format!("path={:?}", str_of(&m["subPath"])));
        }
        put!(
            w,
            3,
            "{} from {} ({})\n",
            str_of(&m["mountPath"]),
            str_of(&m["name"]),
            flags.join(",")
        );
    }
}

/// `Volumes:` with each volume's source.
pub(super) fn volumes(w: &mut Writer, list: &Value, space: &str) {
    let vols = items(list);
    if vols.is_empty() {
        put!(w, 0, "{space}Volumes:\t<none>\n");
        return;
    }
    put!(w, 0, "{space}Volumes:\n");
    let name_indent = if space.is_empty() { "" } else { " " };
    for v in vols {
        put!(w, 1, "{name_indent}{}:\n", str_of(&v["name"]));
        let optional = |src: &Value| src["optional"].as_bool() == Some(true);
        if v["hostPath"].is_object() {
            let h = &v["hostPath"];
            put!(
                w,
                2,
                "Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{}\n",
                str_of(&h["path"]),
                str_of(&h["type"])
            );
        } else if v["emptyDir"].is_object() {
            let e = &v["emptyDir"];
            let size = match str_of(&e["sizeLimit"]) {
                "" | "0" => "<unset>",
                s => s,
            };
            put!(
                w,
                2,
                "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{size}\n",
                str_of(&e["medium"])
            );
        } else if v["configMap"].is_object() {
            let c = &v["configMap"];
            put!(
                w,
                2,
                "Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}\n",
                str_of(&c["name"]),
                optional(c)
            );
        } else if v["secret"].is_object() {
            let s = &v["secret"];
            put!(
                w,
                2,
                "Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}\n",
                str_of(&s["secretName"]),
                optional(s)
            );
        } else if v["persistentVolumeClaim"].is_object() {
            let p = &v["persistentVolumeClaim"];
            put!(
                w,
                2,
                "Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:\t{}\n    ReadOnly:\t{}\n",
                str_of(&p["claimName"]),
                p["readOnly"].as_bool() == Some(true)
            );
        } else if v["projected"].is_object() {
            put!(
                w,
                2,
                "Type:\tProjected (a volume that contains injected data from multiple sources)\n"
            );
            for src in items(&v["projected"]["sources"]) {
                if src["secret"].is_object() {
                    put!(
                        w,
                        2,
                        "SecretName:\t{}\n    Optional:\t{}\n",
                        str_of(&src["secret"]["name"]),
                        optional(&src["secret"])
                    );
                } else if src["downwardAPI"].is_object() {
                    put!(w, 2, "DownwardAPI:\ttrue\n");
                } else if src["configMap"].is_object() {
                    put!(
                        w,
                        2,
                        "ConfigMapName:\t{}\n    Optional:\t{}\n",
                        str_of(&src["configMap"]["name"]),
                        optional(&src["configMap"])
                    );
                } else if src["serviceAccountToken"].is_object() {
                    put!(
                        w,
                        2,
                        "TokenExpirationSeconds:\t{}\n",
                        int(&src["serviceAccountToken"]["expirationSeconds"])
                    );
                }
            }
        } else if v["downwardAPI"].is_object() {
            put!(
                w,
                2,
                "Type:\tDownwardAPI (a volume populated by information about the pod)\n    Items:\n"
            );
            for item in items(&v["downwardAPI"]["items"]) {
                if item["fieldRef"].is_object() {
                    put!(
                        w,
                        3,
                        "{} -> {}\n",
                        str_of(&item["fieldRef"]["fieldPath"]),
                        str_of(&item["path"])
                    );
                }
                if item["resourceFieldRef"].is_object() {
                    put!(
                        w,
                        3,
                        "{} -> {}\n",
                        str_of(&item["resourceFieldRef"]["resource"]),
                        str_of(&item["path"])
                    );
                }
            }
        } else {
            w.write(1, "<unknown>\n");
        }
    }
}

/// `Tolerations:` lines (`key=value:Effect op=Exists for 300s`).
pub(super) fn tolerations(w: &mut Writer, title: &str, list: &Value) {
    put!(w, 0, "{title}:\t");
    let mut tols: Vec<&Value> = items(list).iter().collect();
    if tols.is_empty() {
        w.write(0, "<none>\n");
        return;
    }
    tols.sort_by_key(|t| str_of(&t["key"]).to_string());
    for (i, t) in tols.into_iter().enumerate() {
        if i != 0 {
            w.write(0, "\t");
        }
        let (key, value, effect) = (str_of(&t["key"]), str_of(&t["value"]), str_of(&t["effect"]));
        let mut s = key.to_string();
        if !value.is_empty() {
            let _ = write!(s, "={value}");
        }
        if !effect.is_empty() {
            let _ = write!(s, ":{effect}");
        }
        if str_of(&t["operator"]) == "Exists" && value.is_empty() {
            s.push_str(if key.is_empty() && effect.is_empty() {
                "op=Exists"
            } else {
                " op=Exists"
            });
        }
        if let Some(secs) = t["tolerationSeconds"].as_i64() {
            let _ = write!(s, " for {secs}s");
        }
        put!(w, 0, "{s}\n");
    }
}

/// `Pod Template:` for workloads.
pub(super) fn pod_template(w: &mut Writer, template: &Value, clock: &Clock) {
    w.write(0, "Pod Template:\n");
    if !template.is_object() {
        w.write(1, "<unset>");
        return;
    }
    let meta = &template["metadata"];
    let spec = &template["spec"];
    labels_multiline(w, "  Labels", &string_map(&meta["labels"]));
    let annotations = string_map(&meta["annotations"]);
    if !annotations.is_empty() {
        annotations_multiline(w, "  Annotations", &annotations);
    }
    if !str_of(&spec["serviceAccountName"]).is_empty() {
        put!(
            w,
            1,
            "Service Account:\t{}\n",
            str_of(&spec["serviceAccountName"])
        );
    }
    if !items(&spec["initContainers"]).is_empty() {
        containers(
            w,
            "Init Containers",
            items(&spec["initContainers"]),
            &[],
            None,
            "  ",
            clock,
        );
    }
    containers(
        w,
        "Containers",
        items(&spec["containers"]),
        &[],
        None,
        "  ",
        clock,
    );
    volumes(w, &spec["volumes"], "  ");
    if !str_of(&spec["priorityClassName"]).is_empty() {
        put!(
            w,
            1,
            "Priority Class Name:\t{}\n",
            str_of(&spec["priorityClassName"])
        );
    }
    labels_multiline(w, "  Node-Selectors", &string_map(&spec["nodeSelector"]));
    tolerations(w, "  Tolerations", &spec["tolerations"]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::clock;
    use super::*;
    use serde_json::json;

    #[test]
    fn probes_read_like_kubectl() {
        let http = json!({"httpGet": {"path": "/healthz", "port": 8080}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3});
        assert_eq!(
            probe(&http),
            "http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3"
        );
        let https = json!({"httpGet": {"host": "::1", "port": "web", "scheme": "HTTPS"}});
        assert!(probe(&https).starts_with("http-get https://[::1]:web "));
        assert!(
            probe(&json!({"exec": {"command": ["cat", "/tmp/ok"]}}))
                .starts_with("exec [cat /tmp/ok] delay=0s")
        );
        assert!(probe(&json!({"tcpSocket": {"port": 5432}})).starts_with("tcp-socket :5432 "));
        assert!(probe(&json!({"grpc": {"port": 9000}})).starts_with("grpc <pod>:9000  "));
        assert!(probe(&json!({})).starts_with("unknown "));
    }

    #[test]
    fn field_paths_resolve_against_the_pod() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}}, "status": {"podIP": "10.0.0.5"}});
        assert_eq!(field_path_value(&pod, "metadata.name"), "p");
        assert_eq!(field_path_value(&pod, "metadata.namespace"), "ns");
        assert_eq!(field_path_value(&pod, "status.podIP"), "10.0.0.5");
        assert_eq!(field_path_value(&pod, "metadata.labels['app']"), "web");
        assert_eq!(field_path_value(&pod, "spec.unknown"), "");
    }

    #[test]
    fn template_section() {
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "web",
                    "image": "nginx",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "prod"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"operator": "Exists"}],
            },
        });
        let mut w = Writer::new();
        pod_template(&mut w, &template, &clock());
        let out = w.finish();
        let expected = "\
Pod Template:
  Labels:  app=web
  Containers:
   web:
    Image:      nginx
    Port:       80/TCP
    Host Port:  0/TCP
    Limits:
      memory:  128Mi
    Requests:
      cpu:  100m
    Environment:
      MODE:  prod
      POD:    (v1:metadata.name)
    Mounts:
      /data from data (ro)
  Volumes:
   data:
    Type:          EmptyDir (a temporary directory that shares a pod's lifetime)
    Medium:        
    SizeLimit:     <unset>
  Node-Selectors:  <none>
  Tolerations:     op=Exists
";
        assert_eq!(out, expected);
    }

    #[test]
    fn tolerations_lines() {
        let mut w = Writer::new();
        tolerations(
            &mut w,
            "Tolerations",
            &json!([
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            ]),
        );
        assert_eq!(
            w.finish(),
            "Tolerations:  dedicated=gpu:NoSchedule\n              node.kubernetes.io/unreachable:NoExecute op=Exists for 300s\n"
        );
    }
}
