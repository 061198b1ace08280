//! The real kubectl (/usr/bin/kubectl, which runs the bundled client matching our /version)
//! against our API server: the everyday workflow end to end.
#![forbid(unsafe_code)]

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{Kubectl, available};

fn header(out: &str) -> Vec<&str> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

#[test]
fn kubectl_everyday_workflow() {
    if !available() {
        return;
    }
    let dir = TempDir::new("kpt-kubectl");
    let s = ApiServer::start(dir.path(), &[]);
    let k = Kubectl::new(&s.kubeconfig, dir.path());

    let v = k.ok(&["version", "-o", "json"]);
    assert!(v.contains("\"minor\": \"33\""), "{v}");

    assert!(
        k.ok(&[
            "create",
            "deployment",
            "web",
            "--image=httpd",
            "--replicas=2"
        ])
        .contains("deployment.apps/web created")
    );
    assert!(
        k.ok(&[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
            "--type=NodePort"
        ])
        .contains("service/web exposed")
    );

    let svc = k.ok(&["get", "svc", "web"]);
    assert_eq!(
        header(&svc),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = svc.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1], row[3]), ("web", "NodePort", "<none>"));
    assert!(row[2].starts_with("10."), "{svc}");
    assert!(
        row[4].starts_with("80:3") && row[4].ends_with("/TCP"),
        "{svc}"
    );
    assert_eq!(
        k.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.selector.app}"]),
        "web"
    );

    let deploy = k.ok(&["get", "deploy", "-o", "wide"]);
    assert_eq!(
        header(&deploy),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        deploy.lines().nth(1).unwrap().contains("app=web"),
        "{deploy}"
    );

    let describe = k.ok(&["describe", "deployment", "web"]);
    for needle in [
        "Name:",
        "web",
        "Replicas:",
        "Selector:",
        "app=web",
        "Image:",
        "httpd",
    ] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle}:\n{describe}"
        );
    }
    assert!(k.ok(&["describe", "svc", "web"]).contains("NodePort:"));

    assert!(
        k.ok(&["scale", "deployment", "web", "--replicas=3"])
            .contains("deployment.apps/web scaled")
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );

    // apply: create, configure, unchanged; a pod shows the wide columns.
    let manifest = dir.path().join("app.yaml");
    let write = |image: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\n  labels:\n    app: box\nspec:\n  containers:\n  - name: box\n    image: {image}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: box\nspec:\n  selector:\n    app: box\n  ports:\n  - port: 8080\n"
            ),
        )
        .unwrap();
    };
    write("kecho:1");
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.contains("pod/box created") && out.contains("service/box created"),
        "{out}"
    );
    write("kecho:2");
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.contains("pod/box configured") && out.contains("service/box unchanged"),
        "{out}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "box",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "kecho:2"
    );
    let pods = k.ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        &header(&pods)[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    );
    assert!(pods.contains("box") && pods.contains("Pending"), "{pods}");

    // Errors are kubectl's.
    let (ok, _, err) = k.run(&["get", "svc", "nope"]);
    assert!(
        !ok && err.contains("Error from server (NotFound): services \"nope\" not found"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["create", "deployment", "Bad_Name", "--image=x"]);
    assert!(!ok && err.contains("Invalid"), "{err}");

    // delete, by file and by name.
    let out = k.ok(&["delete", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.contains("pod \"box\" deleted") && out.contains("service \"box\" deleted"),
        "{out}"
    );
    assert!(
        k.ok(&["delete", "deployment", "web"])
            .contains("deployment.apps \"web\" deleted")
    );
    assert!(
        k.ok(&["delete", "svc", "web"])
            .contains("service \"web\" deleted")
    );
    let (ok, _, err) = k.run(&["get", "deploy", "web"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}
