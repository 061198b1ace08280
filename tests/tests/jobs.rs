//! Jobs and ServiceAccounts end to end with the real kubectl: an API server, the real
//! controller manager (its Job and ServiceAccount controllers among the defaults), the
//! scheduler and a real kubelet running the Jobs' pods in Docker (`kproxy/busybox:1`).
//!
//! - `kubectl create job` and `kubectl wait --for=condition=complete`; a Job of 3 completions
//!   2 at a time ends with 3 succeeded pods, never more than 2 running;
//! - a failing Job stops after `backoffLimit` + 1 failed pods: Failed, BackoffLimitExceeded;
//! - `activeDeadlineSeconds` stops a running Job: its pod deleted, Failed, DeadlineExceeded;
//! - `ttlSecondsAfterFinished` deletes a finished Job and its pod;
//! - every namespace gets a `default` ServiceAccount (again after it is deleted), and a pod
//!   naming a missing account is refused with Kubernetes' message.
#![forbid(unsafe_code)]

use std::{collections::HashSet, path::Path};

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, ServiceAccount},
};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    control, eventually,
    kubectl::{Kubectl, available},
    kubelet::Kubelet,
    privileged,
};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

const IMAGE: &str = "kproxy/busybox:1";

/// The Job manifest `name` running `sh -c SCRIPT`, with `spec` merged in.
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers write the JSON inline as json! literals"
)]
fn job_manifest(name: &str, script: &str, spec: Value) -> Value {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            // `sleep` as PID 1 ignores SIGTERM: a stopped pod must not wait 30 s.
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}]
        }}}
    });
    for (k, v) in spec.as_object().unwrap() {
        job["spec"][k] = v.clone();
    }
    job
}

fn apply(k: &Kubectl, dir: &Path, manifest: &Value) {
    let file = dir.join(format!(
        "{}.json",
        manifest["metadata"]["name"].as_str().unwrap()
    ));
    std::fs::write(&file, manifest.to_string()).unwrap();
    k.ok(&["apply", "-f", file.to_str().unwrap()]);
}

fn job_pods(kubelet: &Kubelet, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(kubelet.client(), "default");
    kubelet
        .block_on(
            pods.list(
                &ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")),
            ),
        )
        .expect("list pods")
        .items
}

fn phases(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

fn get_job(kubelet: &Kubelet, name: &str) -> Option<Job> {
    let jobs: Api<Job> = Api::namespaced(kubelet.client(), "default");
    kubelet.block_on(jobs.get_opt(name)).expect("get job")
}

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[test]
fn jobs_run_to_completion_fail_and_expire_with_real_kubectl() {
    if !privileged("jobs_run_to_completion_fail_and_expire_with_real_kubectl") || !available() {
        return;
    }
    let dir = TempDir::new("kpt-jobs");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = control::controller_manager(&api, &["--controllers", "job,serviceaccount"]);
    let _sched = control::scheduler(&api, &[]);
    let kubelet = Kubelet::start(&api, &[]);
    let k = Kubectl::new(&api.kubeconfig, dir.path());

    // Everything starts at once; each Job is then checked on its own.
    k.ok(&[
        "create",
        "job",
        "hello",
        &format!("--image={IMAGE}"),
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    apply(
        &k,
        dir.path(),
        &job_manifest(
            "three",
            "sleep 2",
            json!({"completions": 3, "parallelism": 2}),
        ),
    );
    apply(
        &k,
        dir.path(),
        &job_manifest("failing", "exit 3", json!({"backoffLimit": 1})),
    );
    apply(
        &k,
        dir.path(),
        &job_manifest("slow", "sleep 300", json!({"activeDeadlineSeconds": 4})),
    );
    apply(
        &k,
        dir.path(),
        &job_manifest("brief", "exit 0", json!({"ttlSecondsAfterFinished": 3})),
    );

    // kubectl create job + kubectl wait.
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=120s",
    ]);
    let hello = get_job(&kubelet, "hello").expect("job hello");
    assert_eq!(hello.status.as_ref().and_then(|s| s.succeeded), Some(1));
    assert!(condition(&hello, "SuccessCriteriaMet").is_some());
    assert!(hello.status.as_ref().unwrap().completion_time.is_some());
    let pods = job_pods(&kubelet, "hello");
    assert_eq!(phases(&pods), ["Succeeded"]);
    let owner = &pods[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "hello"));
    assert_eq!(
        pods[0]
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("default")
    );

    // completions 3, parallelism 2: the third pod only once one of the first two finished.
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "--timeout=120s",
    ]);
    let mut pods = job_pods(&kubelet, "three");
    assert_eq!(phases(&pods), ["Succeeded", "Succeeded", "Succeeded"]);
    pods.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let finished = |p: &Pod| {
        p.status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.clone())
            .expect("a finished container")
            .0
    };
    let first_done = finished(&pods[0]).min(finished(&pods[1]));
    let third_created = pods[2].metadata.creation_timestamp.clone().unwrap().0;
    assert!(
        // Timestamps have whole seconds.
        third_created + jiff::SignedDuration::from_secs(1) > first_done,
        "the third pod ({third_created}) started before any of the first two finished ({first_done})"
    );
    let three = get_job(&kubelet, "three").unwrap();
    let status = three.status.clone().unwrap();
    assert_eq!(
        (status.succeeded, status.failed, status.active),
        (Some(3), None, None)
    );
    let table = k.ok(&["get", "jobs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("three "))
        .expect("job three listed");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..3], ["three", "Complete", "3/3"]);

    // backoffLimit 1: the second failure fails the Job, no third pod.
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=120s",
    ]);
    let failing = get_job(&kubelet, "failing").unwrap();
    assert_eq!(
        condition(&failing, "Failed"),
        Some((
            "BackoffLimitExceeded".to_string(),
            "Job has reached the specified backoff limit".to_string()
        ))
    );
    assert!(condition(&failing, "FailureTarget").is_some());
    assert_eq!(failing.status.as_ref().unwrap().failed, Some(2));
    assert_eq!(phases(&job_pods(&kubelet, "failing")), ["Failed", "Failed"]);
    let described = k.ok(&["get", "job", "failing"]);
    assert!(described.contains("Failed"), "{described}");

    // activeDeadlineSeconds: the running pod is stopped, then the Job fails.
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=120s",
    ]);
    let slow = get_job(&kubelet, "slow").unwrap();
    assert_eq!(
        condition(&slow, "Failed").map(|c| c.0),
        Some("DeadlineExceeded".to_string())
    );
    eventually("the slow job's pod is gone", || {
        job_pods(&kubelet, "slow").is_empty()
    });

    // ttlSecondsAfterFinished: the finished Job and its pod are deleted.
    eventually("job brief deleted after its TTL", || {
        get_job(&kubelet, "brief").is_none() && job_pods(&kubelet, "brief").is_empty()
    });
    let (ok, _, err) = k.run(&["get", "job", "brief"]);
    assert!(
        !ok && err.contains("jobs.batch \"brief\" not found"),
        "{err}"
    );
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    if !available() {
        return;
    }
    let dir = TempDir::new("kpt-sa");
    let api = ApiServer::start(dir.path(), &[]);
    let _cm = control::controller_manager(&api, &["--controllers", "serviceaccount"]);
    let k = Kubectl::new(&api.kubeconfig, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(control::client(&api));

    let names = |ns: &str| -> HashSet<String> {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        rt.block_on(sas.list(&ListParams::default()))
            .expect("list service accounts")
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    };
    // The namespaces that existed at start.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        eventually(&format!("default service account in {ns}"), || {
            names(ns).contains("default")
        });
    }
    // A new namespace.
    k.ok(&["create", "namespace", "team-a"]);
    eventually("default service account in team-a", || {
        names("team-a").contains("default")
    });
    let table = k.ok(&["get", "serviceaccounts", "-n", "team-a"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SECRETS", "AGE"]);
    assert!(table.lines().any(|l| l.starts_with("default ")), "{table}");
    // Deleted: created again.
    let uid = |ns: &str| {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        rt.block_on(sas.get_opt("default"))
            .unwrap()
            .and_then(|s| s.metadata.uid)
    };
    let first = uid("team-a").unwrap();
    k.ok(&["delete", "serviceaccount", "default", "-n", "team-a"]);
    eventually("default service account recreated in team-a", || {
        uid("team-a").is_some_and(|u| u != first)
    });

    // A pod naming an account that does not exist is refused as Kubernetes does; once the
    // account exists it is accepted.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "robotic", "namespace": "team-a"},
        "spec": {"serviceAccountName": "robot",
                 "containers": [{"name": "c", "image": IMAGE}]}
    });
    let file = dir.path().join("pod.json");
    std::fs::write(&file, pod.to_string()).unwrap();
    let (ok, _, err) = k.run(&["create", "-f", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(
            "pods \"robotic\" is forbidden: error looking up service account team-a/robot: serviceaccount \"robot\" not found"
        ),
        "{err}"
    );
    k.ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    k.ok(&["create", "-f", file.to_str().unwrap()]);
}
