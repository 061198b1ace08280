//! kctl (control-plane/kctl) against our real API server: the everyday workflow end to end,
//! with kubectl's conventions checked precisely (table headers, column alignment, rows,
//! messages on the right stream, exit codes). The same workflow as `kubectl.rs`, which drives
//! the real kubectl.
#![forbid(unsafe_code)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kproxy_tests::apiserver::{ApiServer, TempDir};
use kproxy_tests::{bin, eventually};
use serde_json::{Map, Value, json};

/// A kctl run still going after this is hung (e.g. a delete waiting for ever), not slow.
const HANG: Duration = Duration::from_mins(2);

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

struct Kctl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kctl {
    fn new(server: &ApiServer, dir: &TempDir) -> Self {
        Self {
            bin: bin("kctl"),
            kubeconfig: server.kubeconfig.clone(),
            home: dir.path().to_path_buf(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // Nothing from the user's own ~/.kube.
            .env("HOME", &self.home)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kctl {args:?}: {e}"));
        let read_all = |mut r: Box<dyn std::io::Read + Send>| {
            thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for kctl") {
                break status;
            }
            if started.elapsed() > HANG {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kctl {args:?} still running after {HANG:?}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let out = Out {
            code: status.code(),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        };
        eprintln!(
            "$ kctl {}  [exit {:?}]\n{}{}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        out
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.code,
            Some(0),
            "kctl {args:?} failed:\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Runs a command that must fail as kubectl does (exit 1, nothing on stdout); returns
    /// its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.code,
            Some(1),
            "kctl {args:?} should exit 1:\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        assert_eq!(out.stdout, "", "kctl {args:?} failed but printed to stdout");
        out.stderr
    }

    /// The object as JSON (`get TYPE NAME -o json`).
    fn json(&self, kind: &str, name: &str) -> Value {
        let out = self.ok(&["get", kind, name, "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("-o json is not JSON ({e}):\n{out}"))
    }

    /// Asserts that `get TYPE NAME` answers NotFound, in kubectl's words.
    fn assert_gone(&self, kind: &str, resource: &str, name: &str) {
        assert_eq!(
            self.fails(&["get", kind, name]),
            format!("Error from server (NotFound): {resource} \"{name}\" not found\n")
        );
    }
}

/// Checks one printed table the way kubectl's tabwriter lays it out (minimum cell width 6,
/// padding 3, no trailing blanks) with exactly `header`; returns the rows' fields.
fn table(text: &str, header: &[&str]) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "no table printed");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        header,
        "header of:\n{text}"
    );
    // Where each field starts: the same for every line, one per column.
    let starts = |line: &str| -> Vec<usize> {
        let b = line.as_bytes();
        (0..b.len())
            .filter(|&i| b[i] != b' ' && (i == 0 || b[i - 1] == b' '))
            .collect()
    };
    let cols = starts(lines[0]);
    let rows: Vec<Vec<String>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    for line in &lines {
        assert_eq!(starts(line), cols, "misaligned line {line:?} in:\n{text}");
        assert_eq!(line.trim_end(), *line, "trailing blanks in:\n{text}");
    }
    for c in 0..cols.len().saturating_sub(1) {
        let widest = lines
            .iter()
            .map(|l| l.split_whitespace().nth(c).map_or(0, str::len))
            .max()
            .unwrap_or(0);
        assert_eq!(
            cols[c + 1] - cols[c],
            (widest + 3).max(6),
            "column {} is not padded like kubectl's in:\n{text}",
            header[c]
        );
    }
    rows
}

/// The blocks `get a,b` prints: one table per kind, a blank line between them.
fn blocks(text: &str) -> Vec<&str> {
    text.split("\n\n").collect()
}

/// kubectl's AGE: `0s`, `5m2s`, `3h`, `12d`, ...
fn is_age(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(['s', 'm', 'h', 'd', 'y'])
}

/// In the default service CIDR, 10.96.0.0/12.
fn in_service_cidr(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|a| u32::from(a) & 0xFFF0_0000 == 0x0A60_0000)
}

/// The value of a `describe` field (`Name:   web` -> `web`), first occurrence.
fn described<'a>(text: &'a str, field: &str) -> &'a str {
    text.lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix(field)?
                .strip_prefix(':')
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("describe lacks {field}:\n{text}"))
}

/// The block YAML kubectl prints (mappings, sequences, plain, quoted and flow-empty scalars)
/// as JSON, to check `-o yaml` field by field against `-o json`.
fn parse_yaml(text: &str) -> Value {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && *l != "---")
        .map(String::from)
        .collect();
    assert!(!lines.is_empty(), "empty YAML");
    let mut i = 0;
    let v = yaml_block(&mut lines, &mut i, 0);
    assert_eq!(
        i,
        lines.len(),
        "YAML not understood from {:?}:\n{text}",
        lines.get(i)
    );
    v
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_item(line: &str, ind: usize) -> bool {
    indent(line) == ind && line[ind..].starts_with("- ")
}

fn yaml_block(lines: &mut [String], i: &mut usize, ind: usize) -> Value {
    if is_item(&lines[*i], ind) {
        let mut items = Vec::new();
        while *i < lines.len() && is_item(&lines[*i], ind) {
            let rest = lines[*i][ind + 2..].to_string();
            if !rest.starts_with(['"', '\'']) && yaml_entry(&rest).is_some() {
                // A mapping whose first key follows the dash: the dash is indentation.
                lines[*i].replace_range(ind..ind + 2, "  ");
                items.push(yaml_block(lines, i, ind + 2));
            } else {
                items.push(yaml_scalar(&rest));
                *i += 1;
            }
        }
        return Value::Array(items);
    }
    let mut map = Map::new();
    while *i < lines.len() && indent(&lines[*i]) == ind && !is_item(&lines[*i], ind) {
        let line = lines[*i].clone();
        let (key, rest) =
            yaml_entry(&line[ind..]).unwrap_or_else(|| panic!("not a YAML entry: {line:?}"));
        *i += 1;
        let value = if !rest.is_empty() {
            yaml_scalar(rest)
        } else if *i < lines.len() && (indent(&lines[*i]) > ind || is_item(&lines[*i], ind)) {
            let child = indent(&lines[*i]);
            yaml_block(lines, i, child)
        } else {
            Value::Null
        };
        assert!(
            map.insert(key.clone(), value).is_none(),
            "duplicate YAML key {key}"
        );
    }
    Value::Object(map)
}

/// `key: value` or `key:` (value on the next lines).
fn yaml_entry(s: &str) -> Option<(String, &str)> {
    let (key, rest) = match s.strip_suffix(':') {
        Some(k) if !k.contains(": ") => (k, ""),
        _ => s.split_once(": ")?,
    };
    let key = match yaml_scalar(key) {
        Value::String(k) => k,
        other => other.to_string(),
    };
    Some((key, rest))
}

fn yaml_scalar(s: &str) -> Value {
    assert!(
        !s.starts_with(['|', '>', '&', '*', '!']),
        "YAML construct this test does not parse: {s:?}"
    );
    match s {
        "{}" => json!({}),
        "[]" => json!([]),
        "null" | "~" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        // What kubectl double-quotes is a JSON string as far as these objects go.
        _ if s.starts_with('"') => serde_json::from_str(s)
            .unwrap_or_else(|e| panic!("bad double-quoted YAML scalar {s:?}: {e}")),
        _ if s.starts_with('\'') && s.len() >= 2 && s.ends_with('\'') => {
            Value::String(s[1..s.len() - 1].replace("''", "'"))
        }
        _ => s
            .parse::<i64>()
            .map_or_else(|_| Value::String(s.to_string()), Value::from),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn pod_and_service(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\n  labels:\n    app: box\nspec:\n  containers:\n  - name: box\n    image: {image}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: box\nspec:\n  selector:\n    app: box\n  ports:\n  - port: 8080\n"
    )
}

const DEPLOY_HEADER: [&str; 5] = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
const SVC_HEADER: [&str; 6] = [
    "NAME",
    "TYPE",
    "CLUSTER-IP",
    "EXTERNAL-IP",
    "PORT(S)",
    "AGE",
];

#[test]
fn kctl_everyday_workflow() {
    let dir = TempDir::new("kpt-kctl");
    let s = ApiServer::start(dir.path(), &[]);
    let k = Kctl::new(&s, &dir);

    // version: this client, and the server's Kubernetes version.
    let client_line = format!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
    let v = k.ok(&["version"]);
    let lines: Vec<&str> = v.lines().collect();
    assert_eq!(lines.len(), 2, "{v}");
    assert_eq!(lines[0], client_line);
    assert!(lines[1].starts_with("Server Version: v1.33."), "{v}");
    assert_eq!(k.ok(&["version", "--client"]), format!("{client_line}\n"));

    assert_eq!(
        k.ok(&[
            "create",
            "deployment",
            "web",
            "--image=httpd",
            "--replicas=2"
        ]),
        "deployment.apps/web created\n"
    );
    assert_eq!(
        k.ok(&[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
            "--type=NodePort"
        ]),
        "service/web exposed\n"
    );

    // get svc: one aligned row, a cluster IP from the service CIDR and a node port.
    let svc = k.ok(&["get", "svc", "web"]);
    let rows = table(&svc, &SVC_HEADER);
    assert_eq!(rows.len(), 1, "{svc}");
    let row = &rows[0];
    assert_eq!(
        (row[0].as_str(), row[1].as_str(), row[3].as_str()),
        ("web", "NodePort", "<none>"),
        "{svc}"
    );
    let cluster_ip = row[2].clone();
    assert!(
        in_service_cidr(&cluster_ip),
        "{cluster_ip} not in 10.96.0.0/12"
    );
    let node_port: u16 = row[4]
        .strip_prefix("80:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("PORT(S) {:?} is not 80:<nodePort>/TCP", row[4]));
    assert!(
        (30000..=32767).contains(&node_port),
        "node port {node_port}"
    );
    assert!(is_age(&row[5]), "AGE {:?}", row[5]);
    let svc_json = k.json("svc", "web");
    assert_eq!(svc_json["spec"]["clusterIP"], cluster_ip.as_str());
    assert_eq!(svc_json["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(svc_json["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc_json["spec"]["ports"][0]["nodePort"], node_port);

    // get deploy -o wide: the extra columns.
    let deploy = k.ok(&["get", "deploy", "-o", "wide"]);
    let rows = table(
        &deploy,
        &[
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
        ],
    );
    assert_eq!(rows.len(), 1, "{deploy}");
    let row = &rows[0];
    assert_eq!(row[0], "web");
    assert!(row[1].ends_with("/2"), "READY {:?}", row[1]);
    assert!(is_age(&row[4]), "AGE {:?}", row[4]);
    assert_eq!(&row[5..], ["httpd", "httpd", "app=web"], "{deploy}");

    // -o yaml and -o json: the same object, spec.replicas included.
    let yaml = k.ok(&["get", "deploy", "web", "-o", "yaml"]);
    let from_yaml = parse_yaml(&yaml);
    let from_json = k.json("deploy", "web");
    assert_eq!(from_json["apiVersion"], "apps/v1");
    assert_eq!(from_json["kind"], "Deployment");
    assert_eq!(from_json["metadata"]["name"], "web");
    assert_eq!(from_json["metadata"]["namespace"], "default");
    assert_eq!(from_json["spec"]["replicas"], 2);
    assert_eq!(
        from_json["spec"]["selector"]["matchLabels"],
        json!({"app": "web"})
    );
    assert_eq!(
        from_json["spec"]["template"]["spec"]["containers"][0]["image"],
        "httpd"
    );
    assert_eq!(
        from_yaml, from_json,
        "-o yaml and -o json disagree:\n{yaml}"
    );
    assert!(
        yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\n"),
        "{yaml}"
    );

    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "name"]),
        "deployment.apps/web\n"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "-o", "name"]),
        "deployment.apps/web\n"
    );

    // A comma list: one table per kind, in the order asked, names as kind/name.
    let both = k.ok(&["get", "svc,deploy"]);
    let parts = blocks(&both);
    assert_eq!(parts.len(), 2, "{both}");
    let svc_rows = table(parts[0], &SVC_HEADER);
    assert_eq!(svc_rows.len(), 1, "{both}");
    assert_eq!(svc_rows[0][0], "service/web");
    let deploy_rows = table(parts[1], &DEPLOY_HEADER);
    assert_eq!(deploy_rows.len(), 1, "{both}");
    assert_eq!(deploy_rows[0][0], "deployment.apps/web");
    assert_eq!(
        k.ok(&["get", "svc,deploy", "-o", "name"]),
        "service/web\ndeployment.apps/web\n"
    );

    // describe.
    let describe = k.ok(&["describe", "deployment", "web"]);
    assert_eq!(described(&describe, "Name"), "web");
    assert_eq!(described(&describe, "Namespace"), "default");
    assert_eq!(described(&describe, "Selector"), "app=web");
    assert!(
        described(&describe, "Replicas").starts_with("2 desired | "),
        "{describe}"
    );
    assert_eq!(described(&describe, "Image"), "httpd");
    let describe = k.ok(&["describe", "svc", "web"]);
    assert_eq!(described(&describe, "Name"), "web");
    assert_eq!(described(&describe, "Type"), "NodePort");
    assert_eq!(described(&describe, "IP"), cluster_ip);
    assert_eq!(described(&describe, "Port"), "<unset>  80/TCP");
    assert_eq!(described(&describe, "TargetPort"), "8080/TCP");
    assert_eq!(
        described(&describe, "NodePort"),
        format!("<unset>  {node_port}/TCP")
    );

    // scale.
    assert_eq!(
        k.ok(&["scale", "deployment", "web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(k.json("deploy", "web")["spec"]["replicas"], 3);
    assert!(
        described(&k.ok(&["describe", "deploy", "web"]), "Replicas").starts_with("3 desired"),
        "describe after scale"
    );

    // apply a multi-document file: created, unchanged, then configured where it changed.
    let manifest = dir.path().join("app.yaml");
    let manifest_arg = manifest.to_str().unwrap();
    write(&manifest, &pod_and_service("kecho:1"));
    assert_eq!(
        k.ok(&["apply", "-f", manifest_arg]),
        "pod/box created\nservice/box created\n"
    );
    assert_eq!(
        k.ok(&["apply", "-f", manifest_arg]),
        "pod/box unchanged\nservice/box unchanged\n"
    );
    write(&manifest, &pod_and_service("kecho:2"));
    assert_eq!(
        k.ok(&["apply", "-f", manifest_arg]),
        "pod/box configured\nservice/box unchanged\n"
    );
    assert_eq!(
        k.json("pod", "box")["spec"]["containers"][0]["image"],
        "kecho:2"
    );

    // apply a directory: manifests found recursively (YAML and JSON), other files skipped.
    let tree = dir.path().join("manifests");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    write(
        &tree.join("cache.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cache\n  labels:\n    app: cache\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: cache\n  template:\n    metadata:\n      labels:\n        app: cache\n    spec:\n      containers:\n      - name: redis\n        image: redis:7\n",
    );
    write(
        &tree.join("sub/cache-svc.json"),
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cache", "labels": {"app": "cache"}}, "spec": {"selector": {"app": "cache"}, "ports": [{"port": 6379}]}}"#,
    );
    write(&tree.join("README.txt"), "not a manifest\n");
    let tree_arg = tree.to_str().unwrap();
    assert_eq!(
        k.ok(&["apply", "-f", tree_arg]),
        "deployment.apps/cache created\nservice/cache created\n"
    );
    assert_eq!(k.json("deploy", "cache")["spec"]["replicas"], 1);
    assert_eq!(k.json("svc", "cache")["spec"]["ports"][0]["port"], 6379);

    // A pod in another namespace, for -A.
    let team = dir.path().join("team.yaml");
    write(
        &team,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  namespace: team\nspec:\n  containers:\n  - name: job\n    image: busybox\n",
    );
    assert_eq!(
        k.ok(&["apply", "-f", team.to_str().unwrap()]),
        "namespace/team created\npod/job created\n"
    );
    let pods = k.ok(&["get", "pods", "-A"]);
    let rows = table(
        &pods,
        &["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
    );
    let fields: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r[..5].iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        fields,
        [
            ["default", "box", "0/1", "Pending", "0"],
            ["team", "job", "0/1", "Pending", "0"],
        ],
        "{pods}"
    );
    let pods = k.ok(&["get", "pods"]);
    let rows = table(&pods, &["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(rows.len(), 1, "only the default namespace:\n{pods}");
    assert_eq!(rows[0][0], "box");

    // Label selection; an empty answer is a notice on stderr, not an error.
    let deploy = k.ok(&["get", "deploy", "-l", "app=web"]);
    let rows = table(&deploy, &DEPLOY_HEADER);
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["web"],
        "{deploy}"
    );
    let svc = k.ok(&["get", "svc", "-l", "app=web"]);
    let rows = table(&svc, &SVC_HEADER);
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["web"],
        "{svc}"
    );
    assert_eq!(
        k.ok(&["get", "svc", "-l", "app=web", "-o", "name"]),
        "service/web\n"
    );
    for args in [
        &["get", "svc", "-l", "app=nothing"][..],
        &["get", "svc,deploy", "-l", "app=nothing"][..],
    ] {
        let out = k.run(args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert_eq!(
            out.stderr, "No resources found in default namespace.\n",
            "{args:?}"
        );
    }
    let out = k.run(&["get", "pods", "-n", "team", "-l", "app=nothing"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", "No resources found in team namespace.\n")
    );

    // delete: by file, by name, by selector; each object reported and then really gone.
    assert_eq!(
        k.ok(&["delete", "-f", manifest_arg]),
        "pod \"box\" deleted\nservice \"box\" deleted\n"
    );
    k.assert_gone("pod", "pods", "box");
    k.assert_gone("svc", "services", "box");
    assert_eq!(
        k.ok(&["delete", "-f", tree_arg]),
        "deployment.apps \"cache\" deleted\nservice \"cache\" deleted\n"
    );
    k.assert_gone("deploy", "deployments.apps", "cache");
    k.assert_gone("svc", "services", "cache");
    assert_eq!(
        k.ok(&["delete", "pod", "job", "-n", "team"]),
        "pod \"job\" deleted\n"
    );
    assert_eq!(
        k.ok(&["delete", "deployment", "web"]),
        "deployment.apps \"web\" deleted\n"
    );
    k.assert_gone("deploy", "deployments.apps", "web");
    assert_eq!(
        k.ok(&["delete", "svc", "-l", "app=web"]),
        "service \"web\" deleted\n"
    );
    k.assert_gone("svc", "services", "web");

    // Nothing left to show, and nothing left to delete.
    let out = k.run(&["get", "svc,deploy"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", "No resources found in default namespace.\n")
    );
    let out = k.run(&["delete", "svc", "-l", "app=web"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", "No resources found\n")
    );
}

#[test]
fn kctl_errors_are_kubectls() {
    let dir = TempDir::new("kpt-kctl-err");
    let s = ApiServer::start(dir.path(), &[]);
    let k = Kctl::new(&s, &dir);

    assert_eq!(
        k.fails(&["get", "svc", "nope"]),
        "Error from server (NotFound): services \"nope\" not found\n"
    );
    assert_eq!(
        k.fails(&["delete", "deployment", "nope"]),
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );

    // The server's Invalid message on stderr (the prefix differs: kubectl says
    // `error: failed to create deployment: ...`); nothing is created.
    let err = k.fails(&["create", "deployment", "Bad_Name", "--image=x"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("\"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"),
        "{err}"
    );
    let out = k.run(&["get", "deploy"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );

    // An unknown type is the client's error, as with kubectl.
    assert_eq!(
        k.fails(&["get", "widgets"]),
        "error: the server doesn't have a resource type \"widgets\"\n"
    );

    // logs: no node agent serves pods/log yet, which must read as a clear, single error
    // about this pod and container (not a bare 404 or a crash).
    let pod = dir.path().join("pod.yaml");
    write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: main\n    image: kecho:1\n",
    );
    assert_eq!(
        k.ok(&["apply", "-f", pod.to_str().unwrap()]),
        "pod/box created\n"
    );
    let err = k.fails(&["logs", "box"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("log") && err.contains("\"box\"") && err.contains("\"main\""),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    // A pod that does not exist is the server's NotFound (kubectl 1.33 words it
    // `error: error from server (NotFound): pods "nope" not found in namespace "default"`).
    let err = k.fails(&["logs", "nope"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("(NotFound): pods \"nope\" not found"), "{err}");
}

/// `kctl get -w`, running until killed; its stdout collected line by line.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(k: &Kctl, args: &[&str]) -> Self {
        let mut child = k
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start kctl {args:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("  -w| {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether a printed row satisfies `pred` (fields split on blanks).
    fn has_row(&self, pred: impl Fn(&[&str]) -> bool) -> bool {
        self.lines()
            .iter()
            .any(|l| pred(&l.split_whitespace().collect::<Vec<_>>()))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kctl_get_watch_prints_changes() {
    let dir = TempDir::new("kpt-kctl-watch");
    let s = ApiServer::start(dir.path(), &[]);
    let k = Kctl::new(&s, &dir);
    assert_eq!(
        k.ok(&[
            "create",
            "deployment",
            "web",
            "--image=httpd",
            "--replicas=2"
        ]),
        "deployment.apps/web created\n"
    );

    let mut w = Watch::start(&k, &["get", "deploy", "-w"]);
    eventually("kctl get -w prints the current rows", || {
        w.has_row(|r| r.first() == Some(&"web"))
    });
    let first = w.lines();
    assert_eq!(
        first[0].split_whitespace().collect::<Vec<_>>(),
        DEPLOY_HEADER,
        "{first:?}"
    );
    let row: Vec<&str> = first[1].split_whitespace().collect();
    assert_eq!(row[0], "web", "{first:?}");
    assert!(row[1].ends_with("/2"), "{first:?}");

    // Changes made while watching: a modification and a new object, a row each.
    assert_eq!(
        k.ok(&["scale", "deployment", "web", "--replicas=5"]),
        "deployment.apps/web scaled\n"
    );
    eventually("kctl get -w prints the scaled deployment", || {
        w.has_row(|r| r.len() == 5 && r[0] == "web" && r[1].ends_with("/5"))
    });
    assert_eq!(
        k.ok(&["create", "deployment", "api", "--image=nginx"]),
        "deployment.apps/api created\n"
    );
    eventually("kctl get -w prints the new deployment", || {
        w.has_row(|r| r.len() == 5 && r[0] == "api" && r[1].ends_with("/1"))
    });

    // A watch runs until stopped, and prints its header once.
    assert!(
        w.child.try_wait().expect("poll kctl get -w").is_none(),
        "kctl get -w exited on its own; printed:\n{}",
        w.lines().join("\n")
    );
    let lines = w.lines();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("NAME")).count(),
        1,
        "{lines:?}"
    );
    drop(w);
}
