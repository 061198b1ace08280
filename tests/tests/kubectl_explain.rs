//! `kubectl explain` with the real kubectl against a real API server: the OpenAPI v3 object
//! schemas (generated from k8s-openapi) carry the kinds' fields, types and descriptions, for
//! every kind the server serves.
#![forbid(unsafe_code)]

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{Kubectl, available};

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Whether `out` has the field line `name\t<ty>` indented by `indent` spaces.
fn has_field(out: &str, indent: usize, line: &str) -> bool {
    out.lines()
        .any(|l| l.len() > indent && l[..indent].trim().is_empty() && &l[indent..] == line)
}

#[test]
fn kubectl_explain_from_openapi_schemas() {
    if !available() {
        return;
    }
    let dir = TempDir::new("kpt-explain");
    let server = ApiServer::start(dir.path(), &[]);
    let kubectl = Kubectl::new(&server.kubeconfig, dir.path());
    let before = rss_kib(server.daemon.pid());

    let containers = kubectl.ok(&["explain", "pods.spec.containers"]);
    for want in [
        "KIND:       Pod\n",
        "VERSION:    v1\n",
        "FIELD: containers <[]Container>",
        "List of containers belonging to the pod.",
        "A single application container that you want to run within a pod.",
    ] {
        assert!(containers.contains(want), "missing {want:?}");
    }
    assert!(
        has_field(&containers, 2, "name\t<string> -required-"),
        "{containers}"
    );
    assert!(has_field(&containers, 2, "image\t<string>"), "{containers}");
    assert!(
        has_field(&containers, 2, "ports\t<[]ContainerPort>"),
        "{containers}"
    );
    assert!(has_field(&containers, 2, "env\t<[]EnvVar>"), "{containers}");
    assert!(
        containers.contains("Container image name."),
        "field descriptions are printed"
    );

    let deploy = kubectl.ok(&["explain", "deployments", "--recursive"]);
    for want in [
        "GROUP:      apps\n",
        "KIND:       Deployment\n",
        "VERSION:    v1\n",
        "Deployment enables declarative updates for Pods and ReplicaSets.",
    ] {
        assert!(deploy.contains(want), "missing {want:?}");
    }
    assert!(has_field(&deploy, 2, "metadata\t<ObjectMeta>"), "{deploy}");
    assert!(has_field(&deploy, 2, "spec\t<DeploymentSpec>"), "{deploy}");
    assert!(has_field(&deploy, 4, "replicas\t<integer>"), "{deploy}");
    assert!(
        has_field(&deploy, 4, "template\t<PodTemplateSpec> -required-"),
        "{deploy}"
    );
    assert!(
        has_field(&deploy, 8, "containers\t<[]Container> -required-"),
        "{deploy}"
    );
    assert!(has_field(&deploy, 10, "image\t<string>"), "{deploy}");
    assert!(
        has_field(&deploy, 2, "status\t<DeploymentStatus>"),
        "{deploy}"
    );

    let ports = kubectl.ok(&["explain", "svc.spec.ports"]);
    assert!(ports.contains("KIND:       Service\n"), "{ports}");
    assert!(ports.contains("FIELD: ports <[]ServicePort>"), "{ports}");
    assert!(
        has_field(&ports, 2, "port\t<integer> -required-"),
        "{ports}"
    );
    assert!(has_field(&ports, 2, "targetPort\t<IntOrString>"), "{ports}");

    let (ok, _, err) = kubectl.run(&["explain", "pods.spec.bogus"]);
    assert!(!ok);
    assert!(err.contains("field \"bogus\" does not exist"), "{err}");

    // Every kind served from the registry explains (metrics.k8s.io is no stored kind, and the
    // create-only reviews have no schema in Kubernetes either).
    let names = kubectl.ok(&["api-resources", "--verbs=get", "-o", "name"]);
    let mut explained = 0;
    for name in names.lines().filter(|n| !n.ends_with(".metrics.k8s.io")) {
        let out = kubectl.ok(&["explain", name]);
        assert!(
            out.contains("KIND:") && out.contains("FIELDS:"),
            "{name}: {out}"
        );
        let metadata = if name == "events" {
            "metadata\t<ObjectMeta> -required-"
        } else {
            "metadata\t<ObjectMeta>"
        };
        assert!(has_field(&out, 2, metadata), "{name}: {out}");
        explained += 1;
    }
    assert!(explained >= 10, "{names}");

    let after = rss_kib(server.daemon.pid());
    eprintln!(
        "API server RSS: {before} KiB before the documents, {after} KiB after ({:+} KiB)",
        i64::try_from(after).unwrap() - i64::try_from(before).unwrap()
    );
}
