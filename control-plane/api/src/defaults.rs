//! Defaulting, as the Kubernetes API server applies it to every object it accepts
//! (pkg/apis/*/v1/defaults.go): fields a client left out get the value Kubernetes would store.
//!
//! Works on the wire form and only fills in what is absent (or null), so it is idempotent and
//! never touches a value the client set — a value of the wrong type is left for validation to
//! reject. Metadata bookkeeping and address allocation are the server's business.

pub mod batch;
mod daemonset;
mod secret;

use serde_json::{Map, Value, json};

type Obj = Map<String, Value>;

/// Fills in the defaults of `kind` on `obj`.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => {
            if let Some(spec) = child(root, "spec") {
                pod_spec(spec, true);
            }
        }
        "Service" => {
            if let Some(spec) = child(root, "spec") {
                service_spec(spec);
            }
        }
        "Deployment" => {
            if let Some(spec) = child(root, "spec") {
                deployment_spec(spec);
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = child(root, "spec") {
                set(spec, "replicas", json!(1));
                template(spec);
            }
        }
        "Job" => batch::job(root),
        "DaemonSet" => daemonset::daemon_set(root),
        "Namespace" => namespace(root),
        "Secret" => secret::secret(root),
        "Node" => node(root),
        "Endpoints" => {
            for subset in objects(root, "subsets") {
                for port in objects(subset, "ports") {
                    set(port, "protocol", json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            for port in objects(root, "ports") {
                set(port, "name", json!(""));
                set(port, "protocol", json!("TCP"));
            }
        }
        _ => {}
    }
}

/// `map[key]` as an object, created when absent or null. `None` when it holds something else.
fn child<'a>(map: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// `map[key]` as an object if the client gave one.
fn existing<'a>(map: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The objects in the array `map[key]` (non-objects skipped).
fn objects<'a>(map: &'a mut Obj, key: &str) -> impl Iterator<Item = &'a mut Obj> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Sets `map[key]` unless the client gave a value.
fn set(map: &mut Obj, key: &str, value: Value) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = value;
    }
}

fn str_of<'a>(map: &'a Obj, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// SetDefaults_PodSpec (and, for a Pod itself, SetDefaults_Pod).
fn pod_spec(spec: &mut Obj, is_pod: bool) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    if is_pod {
        set(spec, "enableServiceLinks", json!(true));
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["initContainers", "containers"] {
        for c in objects(spec, list) {
            container(c, host_network);
            if is_pod {
                requests_from_limits(c);
            }
        }
    }
    // SetDefaults_EphemeralContainer: the container defaults (they have no resources).
    for c in objects(spec, "ephemeralContainers") {
        container(c, host_network);
    }
    for v in objects(spec, "volumes") {
        volume(v);
    }
}

/// SetDefaults_Container and what hangs off a container.
fn container(c: &mut Obj, host_network: bool) {
    let policy = pull_policy(str_of(c, "image").unwrap_or_default());
    set(c, "imagePullPolicy", json!(policy));
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    for port in objects(c, "ports") {
        set(port, "protocol", json!("TCP"));
        // With the host's network namespace the container port is the host port.
        if host_network && let Some(cp) = port.get("containerPort").cloned() {
            set(port, "hostPort", cp);
        }
    }
    for env in objects(c, "env") {
        let field_ref = existing(env, "valueFrom").and_then(|vf| existing(vf, "fieldRef"));
        if let Some(fr) = field_ref {
            set(fr, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            http_get(p);
        }
    }
    if let Some(lc) = existing(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = existing(lc, hook) {
                http_get(h);
            }
        }
    }
}

/// SetDefaults_HTTPGetAction on a handler that has one.
fn http_get(handler: &mut Obj) {
    if let Some(h) = existing(handler, "httpGet") {
        set(h, "path", json!("/"));
        set(h, "scheme", json!("HTTP"));
    }
}

/// Always for `:latest` and untagged images (the tag may move), IfNotPresent otherwise.
fn pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // A ':' after the last '/' is a tag; before it, a registry port.
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match (tag, digest) {
        (Some("latest"), _) => "Always",
        (Some(_), _) | (None, Some(_)) => "IfNotPresent",
        // An unparsable reference gets no tag in Kubernetes either.
        (None, None) if image.is_empty() => "IfNotPresent",
        (None, None) => "Always",
    }
}

/// A Pod's containers request what they are limited to unless they say otherwise (only for
/// Pods: templates keep what their author wrote).
fn requests_from_limits(c: &mut Obj) {
    let Some(res) = existing(c, "resources") else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    if let Some(requests) = child(res, "requests") {
        for (k, v) in limits {
            set(requests, &k, v);
        }
    }
}

/// SetDefaults_Volume and the defaults of its sources.
fn volume(v: &mut Obj) {
    if v.keys().all(|k| k == "name") {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = existing(v, source) {
            set(s, "defaultMode", json!(0o644));
        }
    }
    if let Some(hp) = existing(v, "hostPath") {
        set(hp, "type", json!(""));
    }
}

/// SetDefaults_Service. ipFamilies / ipFamilyPolicy are what the API server's allocation sets
/// on a single-stack IPv4 cluster.
fn service_spec(spec: &mut Obj) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let ty = str_of(spec, "type").unwrap_or("ClusterIP").to_string();
    for port in objects(spec, "ports") {
        set(port, "protocol", json!("TCP"));
        let unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset && let Some(p) = port.get("port").cloned() {
            port.insert("targetPort".into(), p);
        }
    }
    if str_of(spec, "sessionAffinity") == Some("ClientIP") {
        let timeout = child(spec, "sessionAffinityConfig").and_then(|c| child(c, "clientIP"));
        if let Some(client_ip) = timeout {
            set(client_ip, "timeoutSeconds", json!(10800));
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
}

/// SetDefaults_Deployment (apps/v1).
fn deployment_spec(spec: &mut Obj) {
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = child(spec, "strategy") {
        set(strategy, "type", json!("RollingUpdate"));
        if str_of(strategy, "type") == Some("RollingUpdate")
            && let Some(ru) = child(strategy, "rollingUpdate")
        {
            set(ru, "maxUnavailable", json!("25%"));
            set(ru, "maxSurge", json!("25%"));
        }
    }
    template(spec);
}

/// The pod template of a workload gets the pod spec defaults.
fn template(spec: &mut Obj) {
    if let Some(ps) = child(spec, "template").and_then(|t| child(t, "spec")) {
        pod_spec(ps, false);
    }
}

fn namespace(root: &mut Obj) {
    // SetDefaults_Namespace: the immutable label selecting a namespace by name.
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from);
    if let Some(name) = name
        && let Some(labels) = child(root, "metadata").and_then(|m| child(m, "labels"))
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = child(root, "spec") {
        set(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(root, "status") {
        set(status, "phase", json!("Active"));
    }
}

/// SetDefaults_NodeStatus: allocatable is the capacity unless the kubelet says otherwise.
fn node(root: &mut Obj) {
    let Some(status) = existing(root, "status") else {
        return;
    };
    if let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned() {
        set(status, "allocatable", capacity);
    }
}

#[cfg(test)]
mod tests;
