//! `describe node`: status, capacity, its lease, and the pods it runs with their requests and
//! limits against what the node can allocate.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::{
    Clock, Writer, annotations_multiline, events_section, items, labels_multiline, str_of,
    string_map,
};
use crate::client::Ctx;
use crate::quantity::{Format, Quantity};

/// Non-terminated pods bound to the node; `None` when the server forbids listing pods.
pub(super) async fn pods_on(ctx: &Ctx, node: &Value) -> Result<Option<Vec<Value>>> {
    let name = str_of(&node["metadata"]["name"]);
    let lp = ListParams {
        field_selector: Some(format!(
            "spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed"
        )),
        ..Default::default()
    };
    let api: Api<Pod> = Api::all(ctx.client.clone());
    match api.list(&lp).await {
        Ok(list) => Ok(Some(
            list.items
                .iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect(),
        )),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The node's heartbeat lease (namespace `kube-node-lease`), or why it could not be read.
pub(super) async fn lease_of(ctx: &Ctx, node: &Value) -> Result<Value, String> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let lease = api
        .get(str_of(&node["metadata"]["name"]))
        .await
        .map_err(|e| crate::errors::render(&e.into()))?;
    serde_json::to_value(&lease).map_err(|e| e.to_string())
}

pub(super) fn render(
    node: &Value,
    pods: Option<&[Value]>,
    lease: &Result<Value, String>,
    events: Option<&[Event]>,
    clock: &Clock,
) -> String {
    let mut w = Writer::new();
    let meta = &node["metadata"];
    let spec = &node["spec"];
    let status = &node["status"];
    put!(w, 0, "Name:\t{}\n", str_of(&meta["name"]));
    let roles = roles(&string_map(&meta["labels"]));
    put!(
        w,
        0,
        "Roles:\t{}\n",
        if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }
    );
    labels_multiline(&mut w, "Labels", &string_map(&meta["labels"]));
    annotations_multiline(&mut w, "Annotations", &string_map(&meta["annotations"]));
    put!(
        w,
        0,
        "CreationTimestamp:\t{}\n",
        clock.rfc(&meta["creationTimestamp"])
    );
    taints(&mut w, &spec["taints"]);
    put!(
        w,
        0,
        "Unschedulable:\t{}\n",
        spec["unschedulable"].as_bool() == Some(true)
    );
    match lease {
        Ok(l) => {
            w.write(0, "Lease:\n");
            let or_unset = |v: &Value, f: &dyn Fn(&Value) -> String| {
                if v.is_null() {
                    "<unset>".to_string()
                } else {
                    f(v)
                }
            };
            put!(
                w,
                1,
                "HolderIdentity:\t{}\n",
                or_unset(&l["spec"]["holderIdentity"], &|v| str_of(v).to_string())
            );
            put!(
                w,
                1,
                "AcquireTime:\t{}\n",
                or_unset(&l["spec"]["acquireTime"], &|v| clock.rfc(v))
            );
            put!(
                w,
                1,
                "RenewTime:\t{}\n",
                or_unset(&l["spec"]["renewTime"], &|v| clock.rfc(v))
            );
        }
        Err(e) => put!(w, 0, "Lease:\tFailed to get lease: {e}\n"),
    }
    let conditions = items(&status["conditions"]);
    if !conditions.is_empty() {
        w.write(
            0,
            "Conditions:\n  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage\n",
        );
        w.write(
            1,
            "----\t------\t-----------------\t------------------\t------\t-------\n",
        );
        for c in conditions {
            put!(
                w,
                1,
                "{} \t{} \t{} \t{} \t{} \t{}\n",
                str_of(&c["type"]),
                str_of(&c["status"]),
                clock.rfc(&c["lastHeartbeatTime"]),
                clock.rfc(&c["lastTransitionTime"]),
                str_of(&c["reason"]),
                str_of(&c["message"])
            );
        }
    }
    w.write(0, "Addresses:\n");
    for a in items(&status["addresses"]) {
        put!(w, 1, "{}:\t{}\n", str_of(&a["type"]), str_of(&a["address"]));
    }
    for (title, key) in [("Capacity", "capacity"), ("Allocatable", "allocatable")] {
        let list = string_map(&status[key]);
        if !list.is_empty() {
            put!(w, 0, "{title}:\n");
            for (name, q) in list {
                put!(w, 0, "  {name}:\t{}\n", canonical(&q));
            }
        }
    }
    let info = &status["nodeInfo"];
    w.write(0, "System Info:\n");
    for (label, key) in [
        ("Machine ID", "machineID"),
        ("System UUID", "systemUUID"),
        ("Boot ID", "bootID"),
        ("Kernel Version", "kernelVersion"),
        ("OS Image", "osImage"),
        ("Operating System", "operatingSystem"),
        ("Architecture", "architecture"),
        ("Container Runtime Version", "containerRuntimeVersion"),
        ("Kubelet Version", "kubeletVersion"),
        // Deprecated, but kubectl 1.33 still prints it.
        ("Kube-Proxy Version", "kubeProxyVersion"),
    ] {
        put!(w, 0, "  {label}:\t{}\n", str_of(&info[key]));
    }
    if !str_of(&spec["podCIDR"]).is_empty() {
        put!(w, 0, "PodCIDR:\t{}\n", str_of(&spec["podCIDR"]));
    }
    let cidrs: Vec<&str> = items(&spec["podCIDRs"]).iter().map(str_of).collect();
    if !cidrs.is_empty() {
        put!(w, 0, "PodCIDRs:\t{}\n", cidrs.join(","));
    }
    if !str_of(&spec["providerID"]).is_empty() {
        put!(w, 0, "ProviderID:\t{}\n", str_of(&spec["providerID"]));
    }
    match pods {
        Some(pods) => node_resources(&mut w, node, pods, clock),
        None => w.write(0, "Pods:\tnot authorized\n"),
    }
    events_section(&mut w, events, clock);
    w.finish()
}

/// `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role=<role>`, sorted.
fn roles(labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (k, v) in labels {
        if let Some(role) = k
            .strip_prefix("node-role.kubernetes.io/")
            .filter(|r| !r.is_empty())
        {
            out.insert(role.to_string());
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            out.insert(v.clone());
        }
    }
    out.into_iter().collect()
}

fn taints(w: &mut Writer, list: &Value) {
    w.write(0, "Taints:\t");
    let mut taints: Vec<(String, String)> = items(list)
        .iter()
        .map(|t| {
            let (key, value, effect) =
                (str_of(&t["key"]), str_of(&t["value"]), str_of(&t["effect"]));
            let text = if value.is_empty() {
                format!("{key}:{effect}")
            } else {
                format!("{key}={value}:{effect}")
            };
            (format!("{effect},{key}"), text)
        })
        .collect();
    if taints.is_empty() {
        w.write(0, "<none>\n");
        return;
    }
    taints.sort();
    for (i, (_, text)) in taints.into_iter().enumerate() {
        if i != 0 {
            w.write(0, "\t");
        }
        put!(w, 0, "{text}\n");
    }
}

fn canonical(q: &str) -> String {
    Quantity::parse(q).map_or_else(|_| q.to_string(), |q| q.to_string())
}

/// A pod's total requests or limits (`key`): the containers' sum, or the largest init
/// container's when bigger (init containers run one at a time, before the others).
pub(super) fn pod_totals(pod: &Value, key: &str) -> BTreeMap<String, Quantity> {
    let mut total: BTreeMap<String, Quantity> = BTreeMap::new();
    for c in items(&pod["spec"]["containers"]) {
        for (name, q) in string_map(&c["resources"][key]) {
            if let Ok(q) = Quantity::parse(&q) {
                let sum = total.get(&name).map_or(q, |t| t.add(q));
                total.insert(name, sum);
            }
        }
    }
    for c in items(&pod["spec"]["initContainers"]) {
        for (name, q) in string_map(&c["resources"][key]) {
            if let Ok(q) = Quantity::parse(&q)
                && total
                    .get(&name)
                    .is_none_or(|t| q.milli_value() > t.milli_value())
            {
                total.insert(name, q);
            }
        }
    }
    total
}

fn get_or_zero(map: &BTreeMap<String, Quantity>, name: &str, format: Format) -> Quantity {
    map.get(name)
        .copied()
        .unwrap_or_else(|| Quantity::zero(format))
}

/// Whole percent of `part` in `whole`, by milli-units for CPU and units otherwise.
fn percent(part: &Quantity, whole: &Quantity, milli: bool) -> i128 {
    let (p, w) = if milli {
        (part.milli_value(), whole.milli_value())
    } else {
        (part.value(), whole.value())
    };
    if w == 0 { 0 } else { p * 100 / w }
}

fn node_resources(w: &mut Writer, node: &Value, pods: &[Value], clock: &Clock) {
    let capacity = string_map(&node["status"]["capacity"]);
    let allocatable_raw = string_map(&node["status"]["allocatable"]);
    let allocatable: BTreeMap<String, Quantity> = (if allocatable_raw.is_empty() {
        capacity
    } else {
        allocatable_raw
    })
    .into_iter()
    .filter_map(|(k, v)| Quantity::parse(&v).ok().map(|q| (k, q)))
    .collect();
    let alloc = |name: &str, format| get_or_zero(&allocatable, name, format);
    put!(w, 0, "Non-terminated Pods:\t({} in total)\n", pods.len());
    w.write(
        1,
        "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge\n",
    );
    w.write(
        1,
        "---------\t----\t\t------------\t----------\t---------------\t-------------\t---\n",
    );
    let mut req_total: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut lim_total: BTreeMap<String, Quantity> = BTreeMap::new();
    for pod in pods {
        let req = pod_totals(pod, "requests");
        let lim = pod_totals(pod, "limits");
        let cpu_r = get_or_zero(&req, "cpu", Format::DecimalSi);
        let cpu_l = get_or_zero(&lim, "cpu", Format::DecimalSi);
        let mem_r = get_or_zero(&req, "memory", Format::BinarySi);
        let mem_l = get_or_zero(&lim, "memory", Format::BinarySi);
        put!(
            w,
            1,
            "{}\t{}\t\t{cpu_r} ({}%)\t{cpu_l} ({}%)\t{mem_r} ({}%)\t{mem_l} ({}%)\t{}\n",
            str_of(&pod["metadata"]["namespace"]),
            str_of(&pod["metadata"]["name"]),
            percent(&cpu_r, &alloc("cpu", Format::DecimalSi), true),
            percent(&cpu_l, &alloc("cpu", Format::DecimalSi), true),
            percent(&mem_r, &alloc("memory", Format::BinarySi), false),
            percent(&mem_l, &alloc("memory", Format::BinarySi), false),
            clock.age(&pod["metadata"]["creationTimestamp"])
        );
        for (total, these) in [(&mut req_total, req), (&mut lim_total, lim)] {
            for (name, q) in these {
                let sum = total.get(&name).map_or(q, |t| t.add(q));
                total.insert(name, sum);
            }
        }
    }
    w.write(
        0,
        "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n",
    );
    w.write(1, "Resource\tRequests\tLimits\n");
    w.write(1, "--------\t--------\t------\n");
    for (name, format, milli) in [
        ("cpu", Format::DecimalSi, true),
        ("memory", Format::BinarySi, false),
        ("ephemeral-storage", Format::BinarySi, false),
    ] {
        let r = get_or_zero(&req_total, name, format);
        let l = get_or_zero(&lim_total, name, format);
        let a = alloc(name, format);
        put!(
            w,
            1,
            "{name}\t{r} ({}%)\t{l} ({}%)\n",
            percent(&r, &a, milli),
            percent(&l, &a, milli)
        );
    }
    for name in allocatable.keys().filter(|n| n.starts_with("hugepages-")) {
        let r = get_or_zero(&req_total, name, Format::BinarySi);
        let l = get_or_zero(&lim_total, name, Format::BinarySi);
        let a = alloc(name, Format::BinarySi);
        put!(
            w,
            1,
            "{name}\t{r} ({}%)\t{l} ({}%)\n",
            percent(&r, &a, false),
            percent(&l, &a, false)
        );
    }
    let standard = ["cpu", "memory", "ephemeral-storage", "storage", "pods"];
    for name in allocatable
        .keys()
        .filter(|n| !standard.contains(&n.as_str()) && !n.starts_with("hugepages-"))
    {
        let r = get_or_zero(&req_total, name, Format::DecimalSi);
        let l = get_or_zero(&lim_total, name, Format::DecimalSi);
        put!(w, 1, "{name}\t{r}\t{l}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::clock;
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({
            "metadata": {"name": "node-a", "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"kubernetes.io/hostname": "node-a", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"],
                "taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-05-01T11:59:50Z",
                    "lastTransitionTime": "2024-05-01T10:00:10Z", "reason": "KubeletReady", "message": "ready"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-a"}],
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "example.com/gpu": "1"},
                "nodeInfo": {"kernelVersion": "6.18.0", "operatingSystem": "linux", "architecture": "amd64", "kubeletVersion": "kproxy-0.1.0"},
            },
        })
    }

    fn pod(name: &str, cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": mem}}}]}})
    }

    #[test]
    fn roles_and_totals() {
        let labels = BTreeMap::from([
            ("node-role.kubernetes.io/worker".to_string(), String::new()),
            ("kubernetes.io/role".to_string(), "edge".to_string()),
            ("node-role.kubernetes.io/".to_string(), String::new()),
        ]);
        assert_eq!(roles(&labels), ["edge", "worker"]);
        let p = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "100m"}}}, {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "32Mi"}}}],
        }});
        let t = pod_totals(&p, "requests");
        assert_eq!(t["cpu"].to_string(), "1");
        assert_eq!(t["memory"].to_string(), "64Mi");
        assert!(pod_totals(&p, "limits").is_empty());
    }

    #[test]
    fn renders_a_node() {
        let lease =
            Ok(json!({"spec": {"holderIdentity": "node-a", "renewTime": "2024-05-01T11:59:55Z"}}));
        let pods = [pod("web", "250m", "128Mi"), pod("db", "500m", "1Gi")];
        let out = render(&node(), Some(&pods), &lease, Some(&[]), &clock());
        let expected = "\
Name:               node-a
Roles:              control-plane
Labels:             kubernetes.io/hostname=node-a
                    node-role.kubernetes.io/control-plane=
Annotations:        <none>
CreationTimestamp:  Wed, 01 May 2024 10:00:00 +0000
Taints:             b:NoExecute
                    dedicated=infra:NoSchedule
Unschedulable:      false
Lease:
  HolderIdentity:  node-a
  AcquireTime:     <unset>
  RenewTime:       Wed, 01 May 2024 11:59:55 +0000
Conditions:
  Type    Status  LastHeartbeatTime                 LastTransitionTime                Reason         Message
  ----    ------  -----------------                 ------------------                ------         -------
  Ready   True    Wed, 01 May 2024 11:59:50 +0000   Wed, 01 May 2024 10:00:10 +0000   KubeletReady   ready
Addresses:
  InternalIP:  192.168.1.10
  Hostname:    node-a
Capacity:
  cpu:     2
  memory:  4Gi
  pods:    110
Allocatable:
  cpu:              2
  example.com/gpu:  1
  memory:           4Gi
  pods:             110
System Info:
  Machine ID:                 
  System UUID:                
  Boot ID:                    
  Kernel Version:             6.18.0
  OS Image:                   
  Operating System:           linux
  Architecture:               amd64
  Container Runtime Version:  
  Kubelet Version:            kproxy-0.1.0
  Kube-Proxy Version:         
PodCIDR:                      10.244.0.0/24
PodCIDRs:                     10.244.0.0/24
Non-terminated Pods:          (2 in total)
  Namespace                   Name    CPU Requests  CPU Limits  Memory Requests  Memory Limits  Age
  ---------                   ----    ------------  ----------  ---------------  -------------  ---
  default                     web     250m (12%)    0 (0%)      128Mi (3%)       128Mi (3%)     60m
  default                     db      500m (25%)    0 (0%)      1Gi (25%)        1Gi (25%)      60m
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource           Requests      Limits
  --------           --------      ------
  cpu                750m (37%)    0 (0%)
  memory             1152Mi (28%)  1152Mi (28%)
  ephemeral-storage  0 (0%)        0 (0%)
  example.com/gpu    0             0
Events:              <none>
";
        assert_eq!(out, expected);
    }

    #[test]
    fn unauthorized_pods_and_missing_lease() {
        let out = render(
            &node(),
            None,
            &Err(
                "Error from server (NotFound): leases.coordination.k8s.io \"node-a\" not found"
                    .into(),
            ),
            None,
            &clock(),
        );
        assert!(
            out.contains("Lease:              Failed to get lease: Error from server (NotFound)"),
            "{out}"
        );
        assert!(
            out.contains("Pods:                         not authorized\n"),
            "{out}"
        );
        assert!(!out.contains("Events"), "{out}");
    }
}
