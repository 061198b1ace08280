//! `kubectl auth can-i`, `auth can-i --list` and `auth whoami` with the real kubectl against
//! the API server binary, as the admin and as a node (its own kubeconfig, no impersonation);
//! each "no" checked against the real request's refusal. Unprivileged: loopback only.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{self, KUBECTL};
use serde_json::{Value, json};

/// kubectl with one kubeconfig; answers carry the exit code (`can-i` says "no" with 1).
struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .output()
            .expect("run kubectl");
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ kubectl {} (exit {})\n{}{}",
            args.join(" "),
            o.code,
            o.stdout,
            o.stderr
        );
        o
    }

    /// `kubectl auth can-i ARGS`: the answer line and the exit code.
    fn can_i(&self, args: &[&str]) -> (String, i32) {
        let all = [&["auth", "can-i"][..], args].concat();
        let o = self.run(&all);
        (o.stdout.trim().to_string(), o.code)
    }
}

/// A kubeconfig like the admin's, with `token` instead of the admin's token.
fn kubeconfig_with(s: &ApiServer, token: &str, path: &Path) {
    let admin = std::fs::read_to_string(&s.kubeconfig).expect("read kubeconfig");
    let admin_token = s.admin_token();
    assert!(
        admin.contains(&admin_token),
        "the kubeconfig carries the admin token"
    );
    std::fs::write(path, admin.replace(&admin_token, token)).expect("write kubeconfig");
}

fn start(dir: &TempDir) -> (ApiServer, Kubectl) {
    let s = ApiServer::start(dir.path(), &["--store", "memory"]);
    let home = dir.path().join("home-admin");
    std::fs::create_dir_all(&home).unwrap();
    let k = Kubectl {
        kubeconfig: s.kubeconfig.clone(),
        home,
    };
    (s, k)
}

fn as_node(s: &ApiServer, dir: &TempDir, node: &str) -> Kubectl {
    let kubeconfig = dir.path().join(format!("kubeconfig-{node}"));
    kubeconfig_with(s, &s.node_token(node), &kubeconfig);
    let home = dir.path().join(format!("home-{node}"));
    std::fs::create_dir_all(&home).unwrap();
    Kubectl { kubeconfig, home }
}

/// The rows of `kubectl auth can-i --list`, split on whitespace runs of 2+ (the columns).
fn rows(list: &str) -> Vec<Vec<String>> {
    list.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

fn has_row(list: &str, row: &[&str]) -> bool {
    rows(list).iter().any(|r| r == row)
}

#[test]
fn admin_may_do_everything() {
    if !kubectl::available() {
        return;
    }
    let dir = TempDir::new("kpt-auth-admin");
    let (_s, k) = start(&dir);
    assert_eq!(k.can_i(&["create", "pods"]), ("yes".into(), 0));
    assert_eq!(
        k.can_i(&["delete", "nodes/other"]),
        ("yes".into(), 0),
        "cluster-scoped, with a name"
    );
    assert_eq!(k.can_i(&["get", "/metrics"]), ("yes".into(), 0));
    assert_eq!(
        k.can_i(&["create", "deployments.apps", "-n", "kube-system"]),
        ("yes".into(), 0)
    );

    let list = k.run(&["auth", "can-i", "--list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(
        rows(&list.stdout)[0],
        ["Resources", "Non-Resource URLs", "Resource Names", "Verbs"]
    );
    assert!(
        has_row(&list.stdout, &["*.*", "[]", "[]", "[*]"]),
        "{}",
        list.stdout
    );
    assert!(
        has_row(&list.stdout, &["[*]", "[]", "[*]"]),
        "{}",
        list.stdout
    );

    let who = k.run(&["auth", "whoami"]);
    assert_eq!(who.code, 0, "{}", who.stderr);
    assert!(
        has_row(&who.stdout, &["ATTRIBUTE", "VALUE"]),
        "{}",
        who.stdout
    );
    assert!(
        has_row(&who.stdout, &["Username", "kproxy-admin"]),
        "{}",
        who.stdout
    );
    assert!(
        has_row(
            &who.stdout,
            &["Groups", "[system:masters system:authenticated]"]
        ),
        "{}",
        who.stdout
    );
    let json_out = k.run(&["auth", "whoami", "-o", "json"]);
    let v: Value = serde_json::from_str(&json_out.stdout).expect("whoami -o json");
    assert_eq!(v["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(v["kind"], "SelfSubjectReview");
    assert_eq!(
        v["status"]["userInfo"],
        json!({"username": "kproxy-admin", "groups": ["system:masters", "system:authenticated"]})
    );
}

#[test]
fn a_node_sees_its_own_rights() {
    if !kubectl::available() {
        return;
    }
    let dir = TempDir::new("kpt-auth-node");
    let (s, admin) = start(&dir);
    for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        });
        let r = s.http().post("/api/v1/namespaces/default/pods", &pod);
        assert_eq!(r.code, 201, "{:?}", r.body);
    }
    let n1 = as_node(&s, &dir, "n1");

    assert_eq!(n1.can_i(&["update", "nodes/n1"]), ("yes".into(), 0));
    assert_eq!(n1.can_i(&["update", "nodes/n2"]), ("no".into(), 1));
    assert_eq!(n1.can_i(&["delete", "nodes/other"]), ("no".into(), 1));
    assert_eq!(n1.can_i(&["create", "deployments"]), ("no".into(), 1));
    assert_eq!(n1.can_i(&["list", "deployments"]), ("yes".into(), 0));
    assert_eq!(
        n1.can_i(&["patch", "pods/mine", "--subresource=status"]),
        ("yes".into(), 0)
    );
    assert_eq!(
        n1.can_i(&["patch", "pods/theirs", "--subresource=status"]),
        (
            "no - node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
                .into(),
            1
        )
    );
    assert_eq!(
        n1.can_i(&["get", "pods/mine", "--subresource=log"]),
        ("no".into(), 1)
    );
    assert_eq!(n1.can_i(&["get", "/metrics"]), ("no".into(), 1));
    assert_eq!(n1.can_i(&["get", "/healthz"]), ("yes".into(), 0));
    assert_eq!(
        n1.can_i(&["update", "leases/n1", "-n", "kube-node-lease"]),
        ("yes".into(), 0)
    );
    assert_eq!(n1.can_i(&["update", "leases/n1"]), ("no".into(), 1));
    // The "no"s are what the requests get.
    let del = n1.run(&["delete", "pod", "theirs", "--wait=false"]);
    assert_ne!(del.code, 0);
    assert!(
        del.stderr.contains("Forbidden") || del.stderr.contains("forbidden"),
        "{}",
        del.stderr
    );
    let top = n1.run(&["get", "--raw", "/metrics"]);
    assert_ne!(top.code, 0);
    assert!(admin.run(&["get", "--raw", "/metrics"]).code == 0);

    let list = n1.run(&["auth", "can-i", "--list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    for row in [
        &["nodes", "[]", "[n1]", "[create update patch delete]"][..],
        &["pods/status", "[]", "[mine]", "[update patch]"],
        &["pods", "[]", "[mine]", "[delete]"],
        &["nodes/status", "[]", "[n1]", "[update patch]"],
        &["events", "[]", "[]", "[get list watch create patch]"],
        &["deployments.apps", "[]", "[]", "[get list watch]"],
        &[
            "selfsubjectreviews.authentication.k8s.io",
            "[]",
            "[]",
            "[create]",
        ],
        &["[/healthz]", "[]", "[get]"],
    ] {
        assert!(
            has_row(&list.stdout, row),
            "no row {row:?} in\n{}",
            list.stdout
        );
    }
    assert!(!list.stdout.contains("*.*"), "{}", list.stdout);
    assert!(
        !list
            .stdout
            .contains("leases.coordination.k8s.io   []   [n1]")
    );
    let lease_ns = n1.run(&["auth", "can-i", "--list", "-n", "kube-node-lease"]);
    assert!(
        has_row(
            &lease_ns.stdout,
            &[
                "leases.coordination.k8s.io",
                "[]",
                "[n1]",
                "[create update patch delete]"
            ]
        ),
        "{}",
        lease_ns.stdout
    );

    let who = n1.run(&["auth", "whoami", "-o", "json"]);
    let v: Value = serde_json::from_str(&who.stdout).expect("whoami -o json");
    assert_eq!(
        v["status"]["userInfo"],
        json!({"username": "system:node:n1", "groups": ["system:nodes", "system:authenticated"]})
    );
}

#[test]
fn an_unknown_token_is_refused() {
    if !kubectl::available() {
        return;
    }
    let dir = TempDir::new("kpt-auth-anon");
    let (s, _) = start(&dir);
    let kubeconfig = dir.path().join("kubeconfig-bad");
    kubeconfig_with(&s, "not-a-token", &kubeconfig);
    let home = dir.path().join("home-bad");
    std::fs::create_dir_all(&home).unwrap();
    let k = Kubectl { kubeconfig, home };
    for args in [
        &["auth", "can-i", "create", "pods"][..],
        &["auth", "whoami"],
        &["auth", "can-i", "--list"],
    ] {
        let o = k.run(args);
        assert_eq!(o.code, 1);
        assert!(o.stderr.contains("Unauthorized"), "{}", o.stderr);
    }
}
