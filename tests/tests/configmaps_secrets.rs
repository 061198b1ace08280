//! Privileged: ConfigMaps and Secrets end to end with the real kubectl 1.33, the API server
//! and the real kubelet running Docker containers.
//!
//! - `kubectl create configmap|secret generic --from-literal/--from-file`, `get` (kubectl's
//!   columns), `describe` (a Secret's values not shown), `edit`, `delete`;
//! - a pod sees them as volumes (items at their paths, defaultMode and per-item modes as
//!   `stat` reports them, symlinks through `..data`), as `env` (`secretKeyRef`) and `envFrom`
//!   (with a prefix); a change to the ConfigMap reaches the running pod's file;
//! - a pod whose ConfigMap does not exist waits with CreateContainerConfigError and
//!   `configmap "x" not found`, and starts once it is created;
//! - the Secret's value appears in no log of the API server or kubelet.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Instant;

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::kubectl::{KUBECTL, Kubectl, available};
use kproxy_tests::kubelet::{Kubelet, container_status};
use kproxy_tests::{bin, eventually, privileged};
use serde_json::{Value, json};

const BUSYBOX: &str = "kproxy/busybox:1";
const NS: &str = "default";
/// The Secret's value: it must not show up in any log.
const PASSWORD: &str = "hunter2-s3cr3t";

/// API server and kubelet, and a kubectl for them.
struct Env {
    kubelet: Kubelet,
    k: Kubectl,
    api: ApiServer,
    dir: TempDir,
}

impl Env {
    fn start(prefix: &str) -> Self {
        let dir = TempDir::new(prefix);
        let api = ApiServer::start(dir.path(), &[]);
        let kubelet = Kubelet::start(&api, &[]);
        let k = Kubectl::new(&api.kubeconfig, dir.path());
        Self {
            kubelet,
            k,
            api,
            dir,
        }
    }

    /// Pod `name` on the node: container `main` of busybox sleeping, with `extra` merged
    /// into the container and `volumes`.
    fn pod(&self, name: &str, extra: &Value, volumes: &Value) {
        let mut c = json!({
            "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "exec sleep 3600"],
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        self.kubelet.create_pod(
            NS,
            name,
            json!({"terminationGracePeriodSeconds": 1, "containers": [c], "volumes": volumes}),
        );
    }

    fn wait_running(&self, name: &str) {
        self.kubelet.wait_pod(NS, name, "main running", |p| {
            container_status(p, "main")
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some())
        });
    }

    /// `kubectl exec NAME -- sh -c SCRIPT`'s output.
    fn exec(&self, name: &str, script: &str) -> String {
        self.k.ok(&["exec", name, "--", "sh", "-c", script])
    }
}

#[test]
fn configmaps_and_secrets_reach_pods() {
    if !privileged("configmaps_and_secrets_reach_pods") || !available() {
        return;
    }
    let mut env = Env::start("kpt-cfg");
    let k = &env.k;
    let props = env.dir.path().join("app.properties");
    std::fs::write(&props, "color=blue\n").unwrap();
    let token = env.dir.path().join("token.txt");
    std::fs::write(&token, "tok-1").unwrap();

    let out = k.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=MODE=fast",
        &format!("--from-file={}", props.display()),
    ]);
    assert_eq!(out.trim(), "configmap/app created");
    let out = k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        &format!("--from-literal=password={PASSWORD}"),
        &format!("--from-file=token={}", token.display()),
    ]);
    assert_eq!(out.trim(), "secret/creds created");

    let get = k.ok(&["get", "cm", "app"]);
    let words: Vec<Vec<&str>> = get
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(words[1][..2], ["app", "2"]);
    let get = k.ok(&["get", "secret", "creds"]);
    let words: Vec<Vec<&str>> = get
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(words[1][..3], ["creds", "Opaque", "2"]);
    let described = k.ok(&["describe", "secret", "creds"]);
    assert!(
        described.contains(&format!("password:  {} bytes", PASSWORD.len())),
        "{described}"
    );
    assert!(!described.contains(PASSWORD), "describe shows no values");
    let described = k.ok(&["describe", "configmap", "app"]);
    assert!(described.contains("color=blue"), "{described}");
    let v = k.json(&["get", "secret", "creds"]);
    assert_eq!(v["type"], "Opaque");
    assert!(v["data"]["password"].is_string(), "base64 on the wire");

    env.pod(
        "reader",
        &json!({
            "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
            "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CFG_"}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"},
                             {"name": "sec", "mountPath": "/etc/sec"}],
        }),
        &json!([
            {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o640, "items": [
                {"key": "app.properties", "path": "conf/app.properties"},
                {"key": "MODE", "path": "mode", "mode": 0o600}]}},
            {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        ]),
    );
    env.wait_running("reader");
    assert_eq!(
        env.exec("reader", "echo $PW $CFG_MODE").trim(),
        format!("{PASSWORD} fast")
    );
    assert_eq!(
        env.exec("reader", "cat /etc/cfg/conf/app.properties"),
        "color=blue\n"
    );
    assert_eq!(env.exec("reader", "cat /etc/cfg/mode"), "fast");
    assert_eq!(
        env.exec(
            "reader",
            "stat -L -c %a /etc/cfg/conf/app.properties /etc/cfg/mode /etc/sec/password"
        ),
        "640\n600\n400\n"
    );
    assert_eq!(
        env.exec("reader", "ls /etc/cfg")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["conf", "mode"]
    );
    assert_eq!(
        env.exec("reader", "readlink /etc/sec/token").trim(),
        "..data/token"
    );
    assert_eq!(env.exec("reader", "cat /etc/sec/token"), "tok-1");
    let (ok, _, err) = k.run(&["exec", "reader", "--", "sh", "-c", "echo x > /etc/cfg/new"]);
    assert!(!ok && err.contains("Read-only file system"), "{err}");

    // An update reaches the running pod's file (within a sync period).
    let changed = Instant::now();
    k.ok(&[
        "patch",
        "configmap",
        "app",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"app.properties":"color=green\n"}}"#,
    ]);
    eventually("the new ConfigMap value in the pod's file", || {
        k.run(&[
            "exec",
            "reader",
            "--",
            "cat",
            "/etc/cfg/conf/app.properties",
        ])
        .1 == "color=green\n"
    });
    eprintln!(
        "ConfigMap update reached the pod in {:?}",
        changed.elapsed()
    );
    // kubectl edit (the editor a script) changes it again.
    let edited = Command::new(KUBECTL)
        .args(["edit", "configmap", "app"])
        .env("KUBECONFIG", &k.kubeconfig)
        .env("HOME", &k.home)
        .env("KUBE_EDITOR", "sed -i s/color=green/color=red/")
        .output()
        .expect("kubectl edit");
    assert!(
        edited.status.success(),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&edited.stdout).trim(),
        "configmap/app edited"
    );
    eventually("the edited value in the pod's file", || {
        k.run(&[
            "exec",
            "reader",
            "--",
            "cat",
            "/etc/cfg/conf/app.properties",
        ])
        .1 == "color=red\n"
    });

    // Over 1 MiB is refused as Kubernetes does.
    let big = env.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let (ok, _, err) = k.run(&[
        "create",
        "configmap",
        "big",
        &format!("--from-file={}", big.display()),
    ]);
    assert!(!ok);
    assert!(
        err.contains("Too long: must have at most 1048576 bytes"),
        "{err}"
    );

    // kctl makes the same objects.
    let kctl = |args: &[&str]| {
        let out = Command::new(bin("kctl"))
            .args(args)
            .env("KUBECONFIG", &k.kubeconfig)
            .env("HOME", &k.home)
            .output()
            .expect("run kctl");
        assert!(
            out.status.success(),
            "kctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = kctl(&[
        "create",
        "configmap",
        "from-kctl",
        "--from-literal=a=1",
        &format!("--from-file={}", props.display()),
    ]);
    assert_eq!(out.trim(), "configmap/from-kctl created");
    let out = kctl(&[
        "create",
        "secret",
        "generic",
        "kctl-creds",
        "--from-literal=user=me",
    ]);
    assert_eq!(out.trim(), "secret/kctl-creds created");
    let v = k.json(&["get", "configmap", "from-kctl"]);
    assert_eq!(
        v["data"],
        json!({"a": "1", "app.properties": "color=blue\n"})
    );
    let described = kctl(&["describe", "secret", "creds"]);
    assert!(
        described.contains(&format!("password:  {} bytes", PASSWORD.len())),
        "{described}"
    );
    assert!(
        !described.contains(PASSWORD),
        "kctl describe shows no values"
    );
    let v = k.json(&["get", "secret", "kctl-creds"]);
    assert_eq!(v["type"], "Opaque");
    assert_eq!(v["data"], json!({"user": "bWU="}));

    let out = k.ok(&["delete", "configmap", "app"]);
    assert_eq!(out.trim(), "configmap \"app\" deleted");
    let out = k.ok(&["delete", "secret", "creds"]);
    assert_eq!(out.trim(), "secret \"creds\" deleted");

    assert!(
        !env.api.daemon.logged(PASSWORD),
        "the secret's value is in the API server's log"
    );
    assert!(
        !env.kubelet.logged(PASSWORD),
        "the secret's value is in the kubelet's log"
    );
}

#[test]
fn a_pod_waits_for_its_configmap() {
    if !privileged("a_pod_waits_for_its_configmap") || !available() {
        return;
    }
    let env = Env::start("kpt-cfg-wait");
    let k = &env.k;
    env.pod(
        "waiter",
        &json!({
            "envFrom": [{"configMapRef": {"name": "later"}}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
        }),
        &json!([{"name": "cfg", "configMap": {"name": "later"}}]),
    );
    env.kubelet
        .wait_pod(NS, "waiter", "CreateContainerConfigError", |p| {
            container_status(p, "main")
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| {
                    w.reason.as_deref() == Some("CreateContainerConfigError")
                        && w.message.as_deref() == Some("configmap \"later\" not found")
                })
        });
    let get = k.ok(&["get", "pod", "waiter"]);
    assert!(get.contains("CreateContainerConfigError"), "{get}");
    let created = Instant::now();
    k.ok(&[
        "create",
        "configmap",
        "later",
        "--from-literal=greeting=hello",
    ]);
    env.wait_running("waiter");
    eprintln!(
        "the pod started {:?} after its ConfigMap was created",
        created.elapsed()
    );
    assert_eq!(
        env.exec("waiter", "echo $greeting; cat /etc/cfg/greeting")
            .trim(),
        "hello\nhello"
    );
}
