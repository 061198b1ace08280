//! `describe service`, `describe endpoints`, `describe endpointslice`.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::{Clock, Writer, events_section, header, int, int_or_string, items, str_of, string_map};
use crate::client::Ctx;
use crate::table::format_labels;

/// The service's EndpointSlices (label `kubernetes.io/service-name`); none on failure.
pub(super) async fn slices_of(ctx: &Ctx, svc: &Value) -> Vec<Value> {
    let ns = str_of(&svc["metadata"]["namespace"]);
    let lp = ListParams {
        label_selector: Some(format!(
            "kubernetes.io/service-name={}",
            str_of(&svc["metadata"]["name"])
        )),
        ..Default::default()
    };
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    match api.list(&lp).await {
        Ok(list) => list
            .items
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(super) fn render_service(
    svc: &Value,
    slices: &[Value],
    events: Option<&[Event]>,
    clock: &Clock,
) -> String {
    let mut w = Writer::new();
    let spec = &svc["spec"];
    header(&mut w, svc, true);
    put!(
        w,
        0,
        "Selector:\t{}\n",
        format_labels(&string_map(&spec["selector"]))
    );
    put!(w, 0, "Type:\t{}\n", str_of(&spec["type"]));
    if !str_of(&spec["ipFamilyPolicy"]).is_empty() {
        put!(
            w,
            0,
            "IP Family Policy:\t{}\n",
            str_of(&spec["ipFamilyPolicy"])
        );
    }
    put!(
        w,
        0,
        "IP Families:\t{}\n",
        joined_or_none(&spec["ipFamilies"], ",")
    );
    put!(w, 0, "IP:\t{}\n", str_of(&spec["clusterIP"]));
    put!(w, 0, "IPs:\t{}\n", joined_or_none(&spec["clusterIPs"], ","));
    if !items(&spec["externalIPs"]).is_empty() {
        put!(
            w,
            0,
            "External IPs:\t{}\n",
            joined_or_none(&spec["externalIPs"], ",")
        );
    }
    if !str_of(&spec["loadBalancerIP"]).is_empty() {
        put!(
            w,
            0,
            "Desired LoadBalancer IP:\t{}\n",
            str_of(&spec["loadBalancerIP"])
        );
    }
    if !str_of(&spec["externalName"]).is_empty() {
        put!(w, 0, "External Name:\t{}\n", str_of(&spec["externalName"]));
    }
    let ingress = items(&svc["status"]["loadBalancer"]["ingress"]);
    if !ingress.is_empty() {
        let list: Vec<String> = ingress
            .iter()
            .map(|i| match str_of(&i["ip"]) {
                "" => str_of(&i["hostname"]).to_string(),
                ip if !str_of(&i["ipMode"]).is_empty() => {
                    format!("{ip} ({})", str_of(&i["ipMode"]))
                }
                ip => ip.to_string(),
            })
            .collect();
        put!(w, 0, "LoadBalancer Ingress:\t{}\n", list.join(", "));
    }
    for p in items(&spec["ports"]) {
        let name = match str_of(&p["name"]) {
            "" => "<unset>",
            n => n,
        };
        let proto = str_of(&p["protocol"]);
        put!(w, 0, "Port:\t{name}\t{}/{proto}\n", int(&p["port"]));
        put!(
            w,
            0,
            "TargetPort:\t{}/{proto}\n",
            int_or_string(&p["targetPort"])
        );
        if !str_of(&p["appProtocol"]).is_empty() {
            put!(w, 0, "AppProtocol:\t{}\n", str_of(&p["appProtocol"]));
        }
        if int(&p["nodePort"]) != 0 {
            put!(w, 0, "NodePort:\t{name}\t{}/{proto}\n", int(&p["nodePort"]));
        }
        put!(
            w,
            0,
            "Endpoints:\t{}\n",
            format_endpoint_slices(slices, Some(str_of(&p["name"])))
        );
    }
    put!(
        w,
        0,
        "Session Affinity:\t{}\n",
        str_of(&spec["sessionAffinity"])
    );
    if !str_of(&spec["externalTrafficPolicy"]).is_empty() {
        put!(
            w,
            0,
            "External Traffic Policy:\t{}\n",
            str_of(&spec["externalTrafficPolicy"])
        );
    }
    if !str_of(&spec["internalTrafficPolicy"]).is_empty() {
        put!(
            w,
            0,
            "Internal Traffic Policy:\t{}\n",
            str_of(&spec["internalTrafficPolicy"])
        );
    }
    if int(&spec["healthCheckNodePort"]) != 0 {
        put!(
            w,
            0,
            "HealthCheck NodePort:\t{}\n",
            int(&spec["healthCheckNodePort"])
        );
    }
    if !items(&spec["loadBalancerSourceRanges"]).is_empty() {
        put!(
            w,
            0,
            "LoadBalancer Source Ranges:\t{}\n",
            joined_or_none(&spec["loadBalancerSourceRanges"], ",")
        );
    }
    if !str_of(&spec["trafficDistribution"]).is_empty() {
        put!(
            w,
            0,
            "Traffic Distribution:\t{}\n",
            str_of(&spec["trafficDistribution"])
        );
    }
    events_section(&mut w, events, clock);
    w.finish()
}

fn joined_or_none(list: &Value, sep: &str) -> String {
    let parts: Vec<&str> = items(list).iter().map(str_of).collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(sep)
    }
}

/// Ready endpoints serving the port named `port` (`None`: all ports) as `ip:port,...`, at
/// most three and then `+ N more...`.
pub(super) fn format_endpoint_slices(slices: &[Value], port: Option<&str>) -> String {
    const MAX: usize = 3;
    if slices.is_empty() {
        return "<none>".into();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let ready = |e: &Value| e["conditions"]["ready"].as_bool() != Some(false);
    for slice in slices {
        let endpoints = items(&slice["endpoints"]);
        let ports = items(&slice["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports: addresses alone.
            for e in endpoints.iter().filter(|e| ready(e)) {
                if list.len() < MAX {
                    list.push(str_of(&e["addresses"][0]).to_string());
                }
                count += 1;
            }
            continue;
        }
        for p in ports
            .iter()
            .filter(|p| port.is_none_or(|name| str_of(&p["name"]) == name))
        {
            for e in endpoints.iter().filter(|e| ready(e)) {
                if list.len() < MAX {
                    list.push(join_host_port(str_of(&e["addresses"][0]), int(&p["port"])));
                }
                count += 1;
            }
        }
    }
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) fn render_endpoints(ep: &Value, events: Option<&[Event]>, clock: &Clock) -> String {
    let mut w = Writer::new();
    header(&mut w, ep, true);
    w.write(0, "Subsets:\n");
    for subset in items(&ep["subsets"]) {
        let ips = |key: &str| {
            let list: Vec<&str> = items(&subset[key])
                .iter()
                .map(|a| str_of(&a["ip"]))
                .collect();
            if list.is_empty() {
                "<none>".to_string()
            } else {
                list.join(",")
            }
        };
        put!(w, 1, "Addresses:\t{}\n", ips("addresses"));
        put!(w, 1, "NotReadyAddresses:\t{}\n", ips("notReadyAddresses"));
        let ports = items(&subset["ports"]);
        if !ports.is_empty() {
            w.write(1, "Ports:\n");
            w.write(2, "Name\tPort\tProtocol\n");
            w.write(2, "----\t----\t--------\n");
            for p in ports {
                let name = match str_of(&p["name"]) {
                    "" => "<unset>",
                    n => n,
                };
                put!(
                    w,
                    2,
                    "{name}\t{}\t{}\n",
                    int(&p["port"]),
                    str_of(&p["protocol"])
                );
            }
        }
        w.write(0, "\n");
    }
    events_section(&mut w, events, clock);
    w.finish()
}

pub(super) fn render_endpoint_slice(
    eps: &Value,
    events: Option<&[Event]>,
    clock: &Clock,
) -> String {
    let mut w = Writer::new();
    header(&mut w, eps, true);
    put!(w, 0, "AddressType:\t{}\n", str_of(&eps["addressType"]));
    let ports = items(&eps["ports"]);
    if ports.is_empty() {
        w.write(0, "Ports: <unset>\n");
    } else {
        w.write(0, "Ports:\n");
        w.write(1, "Name\tPort\tProtocol\n");
        w.write(1, "----\t----\t--------\n");
        for p in ports {
            let name = match str_of(&p["name"]) {
                "" => "<unset>",
                n => n,
            };
            let port = p["port"]
                .as_i64()
                .map_or_else(|| "<unset>".into(), |n| n.to_string());
            put!(w, 1, "{name}\t{port}\t{}\n", str_of(&p["protocol"]));
        }
    }
    let endpoints = items(&eps["endpoints"]);
    if endpoints.is_empty() {
        w.write(0, "Endpoints: <none>\n");
    } else {
        w.write(0, "Endpoints:\n");
        let unset = |v: &Value| v.as_str().map_or_else(|| "<unset>".into(), str::to_string);
        for e in endpoints {
            let addrs: Vec<&str> = items(&e["addresses"]).iter().map(str_of).collect();
            put!(
                w,
                1,
                "- Addresses:\t{}\n",
                if addrs.is_empty() {
                    "<none>".to_string()
                } else {
                    addrs.join(", ")
                }
            );
            w.write(2, "Conditions:\n");
            let ready = e["conditions"]["ready"]
                .as_bool()
                .map_or_else(|| "<unset>".into(), |b| b.to_string());
            put!(w, 3, "Ready:\t{ready}\n");
            put!(w, 2, "Hostname:\t{}\n", unset(&e["hostname"]));
            if e["targetRef"].is_object() {
                put!(
                    w,
                    2,
                    "TargetRef:\t{}/{}\n",
                    str_of(&e["targetRef"]["kind"]),
                    str_of(&e["targetRef"]["name"])
                );
            }
            put!(w, 2, "NodeName:\t{}\n", unset(&e["nodeName"]));
            put!(w, 2, "Zone:\t{}\n", unset(&e["zone"]));
        }
    }
    events_section(&mut w, events, clock);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::super::tests::clock;
    use super::*;
    use serde_json::json;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn slice(addrs: &[(&str, bool)], ports: Value) -> Value {
        let endpoints: Vec<Value> = addrs
            .iter()
            .map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready}, "nodeName": "n1"}))
            .collect();
        json!({"addressType": "IPv4", "endpoints": endpoints, "ports": ports})
    }

    #[test]
    fn endpoint_lists() {
        let s = slice(
            &[("10.0.0.1", true), ("10.0.0.2", false), ("fd00::3", true)],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        );
        assert_eq!(
            format_endpoint_slices(std::slice::from_ref(&s), Some("http")),
            "10.0.0.1:8080,[fd00::3]:8080"
        );
        assert_eq!(format_endpoint_slices(&[s], Some("other")), "");
        let many = slice(
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true),
            ],
            json!([{"name": "", "port": 80}]),
        );
        assert_eq!(
            format_endpoint_slices(&[many], Some("")),
            "a:80,b:80,c:80 + 2 more..."
        );
        let headless = slice(&[("10.0.0.9", true)], json!([]));
        assert_eq!(format_endpoint_slices(&[headless], None), "10.0.0.9");
        assert_eq!(format_endpoint_slices(&[], None), "<none>");
    }

    #[test]
    fn renders_a_service() {
        let svc = json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "selector": {"app": "web"}, "type": "NodePort", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
            },
        });
        let slices = [slice(
            &[("10.244.0.5", true)],
            json!([{"name": "", "port": 8080, "protocol": "TCP"}]),
        )];
        let out = render_service(&svc, &slices, Some(&[]), &clock());
        let expected = "\
Name:                     web
Namespace:                default
Labels:                   app=web
Annotations:              <none>
Selector:                 app=web
Type:                     NodePort
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       10.96.0.10
IPs:                      10.96.0.10
Port:                     <unset>  80/TCP
TargetPort:               8080/TCP
NodePort:                 <unset>  30080/TCP
Endpoints:                10.244.0.5:8080
Session Affinity:         None
External Traffic Policy:  Cluster
Events:                   <none>
";
        assert_eq!(out, expected);
    }

    #[test]
    fn renders_endpoints_and_slices() {
        let ep = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 8080, "protocol": "TCP"}]}],
        });
        let out = render_endpoints(&ep, None, &clock());
        assert_eq!(
            out,
            "Name:         web\nNamespace:    default\nLabels:       <none>\nAnnotations:  <none>\nSubsets:\n  Addresses:          10.0.0.1,10.0.0.2\n  NotReadyAddresses:  <none>\n  Ports:\n    Name     Port  Protocol\n    ----     ----  --------\n    <unset>  8080  TCP\n\n"
        );
        let mut s = slice(
            &[("10.0.0.1", true)],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        );
        s["metadata"] = json!({"name": "web-abc", "namespace": "default"});
        let out = render_endpoint_slice(&s, Some(&[]), &clock());
        assert!(
            out.contains("AddressType:  IPv4\nPorts:\n  Name  Port  Protocol\n"),
            "{out}"
        );
        assert!(out.contains("  - Addresses:  10.0.0.1\n    Conditions:\n      Ready:   true\n    Hostname:  <unset>\n    NodeName:  n1\n    Zone:      <unset>\n"), "{out}");
    }
}
