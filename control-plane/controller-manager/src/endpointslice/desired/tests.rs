use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;
use crate::podcache::Phase;

fn svc() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                      {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]
        }
    }))
    .unwrap()
}

fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> CachedPod {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "labels": {"app": "web"}, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                 "ports": [{"name": "http", "containerPort": http_port}]}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" },
             "lastTransitionTime": "2024-01-01T00:00:05Z"}]}
    }))
    .unwrap();
    CachedPod::from_pod(p)
}

fn now() -> Timestamp {
    "2024-01-01T00:01:00Z".parse().unwrap()
}

/// Applies a plan as the API server would (names for created slices, resource versions).
fn apply(existing: &mut Vec<EndpointSlice>, plan: Plan, next: &mut u32) {
    existing.retain(|s| !plan.delete.contains(s.metadata.name.as_ref().unwrap()));
    for u in plan.update {
        let i = existing
            .iter()
            .position(|s| s.metadata.name == u.metadata.name)
            .unwrap();
        existing[i] = u;
    }
    for mut c in plan.create {
        *next += 1;
        c.metadata.name = Some(format!(
            "{}{next}",
            c.metadata.generate_name.clone().unwrap()
        ));
        existing.push(c);
    }
}

#[test]
fn conditions_follow_readiness_and_termination() {
    let mut p = pod("a", "10.0.0.1", true, 8080);
    let c = conditions(&p, false);
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(true), Some(false))
    );
    p.deletion = Some(now());
    let c = conditions(&p, false);
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    // publishNotReadyAddresses: ready regardless.
    let c = conditions(&p, true);
    assert_eq!(c.ready, Some(true));
    let p = pod("b", "10.0.0.2", false, 8080);
    let c = conditions(&p, false);
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(false), Some(false))
    );
}

#[test]
fn named_target_ports_resolve_per_pod() {
    let s = svc();
    let ports = &s.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(
        resolve_port(&pod("a", "10.0.0.1", true, 8080), &ports[0]),
        Some(8080)
    );
    assert_eq!(
        resolve_port(&pod("a", "10.0.0.1", true, 8081), &ports[0]),
        Some(8081)
    );
    assert_eq!(
        resolve_port(&pod("a", "10.0.0.1", true, 8080), &ports[1]),
        Some(9090)
    );
    // A UDP service port does not match a TCP container port of that name.
    let mut udp = ports[0].clone();
    udp.protocol = Some("UDP".into());
    assert_eq!(resolve_port(&pod("a", "10.0.0.1", true, 8080), &udp), None);

    // Pods whose ports resolve differently go to different slices.
    let pods = [
        pod("a", "10.0.0.1", true, 8080),
        pod("b", "10.0.0.2", true, 8081),
    ];
    let w = wanted_for_pods(&s, pods.iter());
    let plan = plan_slices(&s, &w, &[], now());
    assert_eq!(plan.create.len(), 2);
    let mut seen: Vec<i32> = plan
        .create
        .iter()
        .map(|sl| {
            assert_eq!(sl.endpoints.len(), 1);
            sl.ports.as_ref().unwrap()[0].port.unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [8080, 8081]);
}

#[test]
fn pods_without_ip_terminal_or_unselected_are_left_out() {
    let s = svc();
    let mut no_ip = pod("a", "", true, 8080);
    no_ip.ipv4 = None;
    let mut done = pod("b", "10.0.0.2", true, 8080);
    done.phase = Phase::Succeeded;
    let mut other = pod("c", "10.0.0.3", true, 8080);
    other.labels = Arc::new(BTreeMap::from([("app".into(), "db".into())]));
    let mut other_ns = pod("d", "10.0.0.4", true, 8080);
    other_ns.namespace = "elsewhere".into();
    let ok = pod("e", "10.0.0.5", true, 8080);
    let w = wanted_for_pods(&s, [&no_ip, &done, &other, &other_ns, &ok]);
    assert_eq!(w.len(), 1);
    let e = &w[0].endpoint;
    assert_eq!(e.addresses, ["10.0.0.5"]);
    assert_eq!(e.node_name.as_deref(), Some("n1"));
    let r = e.target_ref.as_ref().unwrap();
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
        (Some("Pod"), Some("e"), Some("uid-e"))
    );
    // A Service without a selector selects nothing.
    let mut bare = svc();
    bare.spec.as_mut().unwrap().selector = None;
    assert!(wanted_for_pods(&bare, [&ok]).is_empty());
}

#[test]
fn slices_split_at_100_with_labels_owner_and_trigger_time() {
    let s = svc();
    let pods: Vec<CachedPod> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                true,
                8080,
            )
        })
        .collect();
    let w = wanted_for_pods(&s, pods.iter());
    let plan = plan_slices(&s, &w, &[], now());
    assert_eq!(plan.create.len(), 3);
    let mut sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100, 100]);
    let sl = &plan.create[0];
    let labels = sl.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(labels["team"], "a");
    assert_eq!(sl.metadata.generate_name.as_deref(), Some("web-"));
    let owner = &sl.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", "svc-uid", Some(true))
    );
    // The newest pod change (the Ready transition at :05).
    assert_eq!(
        sl.metadata.annotations.as_ref().unwrap()[TRIGGER_TIME],
        "2024-01-01T00:00:05Z"
    );
}

#[test]
fn only_changed_slices_are_rewritten() {
    let s = svc();
    let mut pods: Vec<CachedPod> = (0..150)
        .map(|i| pod(&format!("p{i}"), &format!("10.0.0.{}", i + 1), true, 8080))
        .collect();
    let mut slices = Vec::new();
    let mut n = 0;
    apply(
        &mut slices,
        plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &[], now()),
        &mut n,
    );
    assert_eq!(slices.len(), 2);

    // Nothing changed: nothing to write.
    let plan = plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &slices, now());
    assert!(plan.is_empty(), "{plan:?}");

    // One pod turns not ready: exactly its slice is updated, with the time of the change.
    let holder = slices
        .iter()
        .find(|sl| sl.endpoints.iter().any(|e| e.addresses[0] == "10.0.0.7"))
        .unwrap()
        .metadata
        .name
        .clone();
    let changed: Timestamp = "2024-01-01T00:00:42Z".parse().unwrap();
    pods[6].ready = false;
    pods[6].ready_since = Some(changed);
    pods[6].conditions_changed = Some(changed);
    let plan = plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &slices, now());
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    assert_eq!(plan.update.len(), 1);
    let u = &plan.update[0];
    assert_eq!(u.metadata.name, holder);
    assert_eq!(
        u.metadata.annotations.as_ref().unwrap()[TRIGGER_TIME],
        "2024-01-01T00:00:42Z"
    );
    let e = u
        .endpoints
        .iter()
        .find(|e| e.addresses[0] == "10.0.0.7")
        .unwrap();
    assert_eq!(e.conditions.as_ref().unwrap().ready, Some(false));
    apply(&mut slices, plan, &mut n);

    // A new pod goes into the slice with room, not a new one.
    pods.push(pod("new", "10.0.1.1", true, 8080));
    let plan = plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &slices, now());
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 1, 0)
    );
    assert_eq!(plan.update[0].endpoints.len(), 51);
    apply(&mut slices, plan, &mut n);

    // Removing pods: their slices are updated (or deleted when emptied); names stay.
    let names: BTreeSet<_> = slices.iter().map(|s| s.metadata.name.clone()).collect();
    pods.truncate(100);
    let plan = plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &slices, now());
    apply(&mut slices, plan, &mut n);
    let total: usize = slices.iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(total, 100);
    assert!(slices.iter().all(|s| names.contains(&s.metadata.name)));
    assert!(plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &slices, now()).is_empty());
}

#[test]
fn a_service_without_endpoints_keeps_one_placeholder() {
    let s = svc();
    let plan = plan_slices(&s, &[], &[], now());
    assert_eq!(plan.create.len(), 1);
    assert!(plan.create[0].endpoints.is_empty() && plan.create[0].ports.is_none());
    let mut slices = Vec::new();
    let mut n = 0;
    apply(&mut slices, plan, &mut n);
    assert!(plan_slices(&s, &[], &slices, now()).is_empty());

    let pods = [pod("a", "10.0.0.1", true, 8080)];
    let plan = plan_slices(&s, &wanted_for_pods(&s, pods.iter()), &slices, now());
    apply(&mut slices, plan, &mut n);
    // Back to none: the slice is emptied, not deleted and recreated.
    let plan = plan_slices(&s, &[], &slices, now());
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 1, 0)
    );
    assert!(plan.update[0].endpoints.is_empty());
}

#[test]
fn legacy_endpoints_split_ready_and_not_ready() {
    let s = svc();
    let mut term = pod("t", "10.0.0.3", true, 8080);
    term.deletion = Some(now());
    term.deletion_grace_seconds = Some(30);
    let pods = [
        pod("a", "10.0.0.1", true, 8080),
        pod("b", "10.0.0.2", false, 8080),
        term,
    ];
    let w = wanted_for_pods(&s, pods.iter());
    let ep = endpoints_object(&s, &w, None, now()).unwrap();
    assert_eq!(ep.metadata.name.as_deref(), Some("web"));
    let subsets = ep.subsets.as_ref().unwrap();
    assert_eq!(subsets.len(), 1);
    let ss = &subsets[0];
    let ips = |l: &Option<Vec<EndpointAddress>>| -> Vec<String> {
        l.iter().flatten().map(|a| a.ip.clone()).collect()
    };
    assert_eq!(ips(&ss.addresses), ["10.0.0.1"]);
    assert_eq!(ips(&ss.not_ready_addresses), ["10.0.0.2"]);
    let ports: Vec<i32> = ss.ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [8080, 9090]);
    // Unchanged → no write.
    assert!(endpoints_object(&s, &w, Some(&ep), now()).is_none());

    // The terminating pod's deletion (now - 30 s grace) is the newest change.
    let sl = plan_slices(&s, &w, &[], now());
    let t = &sl.create[0].metadata.annotations.as_ref().unwrap()[TRIGGER_TIME];
    assert_eq!(t, "2024-01-01T00:00:30Z");

    // publishNotReadyAddresses: everything is an address, terminating pods included.
    let mut s = svc();
    s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let w = wanted_for_pods(&s, pods.iter());
    let ep = endpoints_object(&s, &w, None, now()).unwrap();
    let ss = &ep.subsets.as_ref().unwrap()[0];
    assert_eq!(ips(&ss.addresses).len(), 3);
    assert!(ss.not_ready_addresses.is_none());
}

#[test]
fn apiserver_endpoint() {
    let w = wanted_for_apiserver("192.168.1.5:6443".parse().unwrap());
    let mut s = svc();
    s.metadata.name = Some("kubernetes".into());
    s.spec.as_mut().unwrap().selector = None;
    let plan = plan_slices(&s, &w, &[], now());
    let sl = &plan.create[0];
    assert_eq!(sl.endpoints[0].addresses, ["192.168.1.5"]);
    assert_eq!(sl.ports.as_ref().unwrap()[0].port, Some(6443));
    assert_eq!(sl.ports.as_ref().unwrap()[0].name.as_deref(), Some("https"));
    let ep = endpoints_object(&s, &w, None, now()).unwrap();
    assert_eq!(
        ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip,
        "192.168.1.5"
    );
}
