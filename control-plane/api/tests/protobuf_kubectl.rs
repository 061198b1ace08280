//! Real request bodies of kubectl v1.33 (`application/vnd.kubernetes.protobuf`), decoded and
//! compared with the JSON the same kubectl prints for `--dry-run=client -o json`.
//!
//! Fixtures (tests/fixtures/protobuf): NAME.pb is the body kubectl sent for the command in the
//! test's comment (from its `-v=10` request log), NAME.json its dry-run output; both written by
//! `scripts/capture_kubectl_protobuf.py`.

use std::path::PathBuf;

use kproxy_api::protobuf::decode;
use serde_json::Value;

fn fixture(name: &str) -> (Vec<u8>, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protobuf");
    let body = std::fs::read(dir.join(format!("{name}.pb"))).unwrap();
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    (body, serde_json::from_str(&json).unwrap())
}

fn check(name: &str) {
    let (body, want) = fixture(name);
    let got = decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        got,
        want,
        "{name}:\n got {}\nwant {}",
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&want).unwrap()
    );
}

/// `kubectl create deployment web --image=httpd --replicas=2 --port=80`
#[test]
fn create_deployment_with_replicas_and_port() {
    check("deployment-web");
}

/// `kubectl create namespace x`
#[test]
fn create_namespace() {
    check("namespace-x");
}

/// `kubectl create service nodeport s --tcp=80:8080`
#[test]
fn create_nodeport_service() {
    check("service-nodeport-s");
}

/// `kubectl create deployment d --image=i -- sh -c "echo hi"`
#[test]
fn create_deployment_with_command() {
    check("deployment-d-command");
}

/// Every truncation of a real body is an error, never a panic or a partial object, except
/// at the envelope's own field boundaries, which protobuf cannot tell from a shorter valid
/// message: right after the TypeMeta (4 magic + 2 + 21 bytes: an empty Deployment), and
/// before the trailing empty contentEncoding and contentType (2 bytes each: the same object).
#[test]
fn truncated_bodies_are_errors() {
    let (body, want) = fixture("deployment-web");
    let n = body.len();
    for len in 0..n {
        match decode(&body[..len]) {
            Err(_) => {}
            Ok(v) if len == 27 => {
                assert_eq!(v["kind"], "Deployment");
                assert_eq!(v["spec"]["template"]["spec"]["containers"], Value::Null);
            }
            Ok(v) if len == n - 4 || len == n - 2 => assert_eq!(v, want),
            Ok(v) => panic!("prefix of {len} bytes decoded to {v}"),
        }
    }
}

/// `kubectl create secret generic s --from-literal=user=admin --from-literal=empty=`:
/// map<string, bytes> in base64, an empty value kept.
#[test]
fn create_secret() {
    check("secret-generic-s");
}

/// `kubectl create quota q --hard=cpu=1500m,memory=1Gi,pods=10`: map<string, Quantity>.
#[test]
fn create_quota() {
    check("quota-q");
}

/// `kubectl create poddisruptionbudget p --selector=app=web --min-available=50%`: a string
/// IntOrString, and status counters that Go's JSON keeps at zero (no omitempty).
#[test]
fn create_pod_disruption_budget() {
    check("pdb-p");
}
