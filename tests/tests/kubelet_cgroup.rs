//! Privileged: the kubelet's node placement flags. `--cgroup-parent` puts every container of
//! the node (sandbox included) under one cgroup, also in the cgroup v2 hierarchy where
//! kproxy's `--socket-lb-cgroup` finds it; `--cluster-cidr` exempts traffic to the cluster's
//! pods from the node's masquerade rule.
#![forbid(unsafe_code)]

use std::{path::Path, process::Command};

use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    kubelet::{KIND_LABEL, KIND_SANDBOX, Kubelet, POD_UID_LABEL, inspect, is_ready, uid},
    privileged, sh, unique,
};
use serde_json::json;

/// The cgroup parent's directories in every hierarchy, removed on drop (after the kubelet
/// and its containers: declare it first).
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join(&self.0));
        }
    }
}

#[test]
fn pods_land_in_the_cgroup_parent_and_keep_cluster_sources() {
    if !privileged("pods_land_in_the_cgroup_parent_and_keep_cluster_sources") {
        return;
    }
    let parent = CgroupParent(unique("kpt-cgp"));
    let dir = TempDir::new("kpt-klcg-api");
    let api = ApiServer::start(dir.path(), &[]);
    let cgroup_parent = format!("/{}", parent.0);
    let k = Kubelet::start(
        &api,
        &[
            "--cgroup-parent",
            &cgroup_parent,
            "--cluster-cidr",
            "10.251.0.0/16",
        ],
    );
    k.create_pod(
        "default",
        "web",
        json!({"containers": [{"name": "httpd", "image": "kproxy/httpd:1"}]}),
    );
    let pod = k.wait_pod("default", "web", "Running and Ready", is_ready);
    let ids = k.pod_containers(&uid(&pod));
    assert_eq!(ids.len(), 2, "sandbox and httpd: {ids:?}");
    let mut sandboxes = 0;
    for id in &ids {
        let info = inspect(id);
        assert_eq!(info["HostConfig"]["CgroupParent"], cgroup_parent, "{id}");
        let pid = info["State"]["Pid"].as_i64().expect("running");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        // "0::/PATH" is the cgroup v2 (unified) membership socket-LB looks at.
        let v2 = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        assert!(
            v2.starts_with(&format!("{cgroup_parent}/")),
            "{id}: {v2} not under {cgroup_parent}"
        );
        if info["Config"]["Labels"][KIND_LABEL] == KIND_SANDBOX {
            sandboxes += 1;
        }
        assert!(info["Config"]["Labels"][POD_UID_LABEL].is_string());
    }
    assert_eq!(sandboxes, 1);
    assert!(
        Path::new("/sys/fs/cgroup/unified").join(&parent.0).is_dir()
            || Path::new("/sys/fs/cgroup").join(&parent.0).is_dir()
    );

    let nat = sh(Command::new("iptables").args(["-w", "-t", "nat", "-S", "POSTROUTING"]));
    let ours: Vec<&str> = nat
        .lines()
        .filter(|l| l.contains(&format!("\"kproxy podnet {}\"", k.bridge)))
        .collect();
    assert_eq!(
        ours,
        [format!(
            "-A POSTROUTING -s {} ! -d 10.251.0.0/16 -m comment --comment \"kproxy podnet {}\" -j MASQUERADE",
            k.cidr, k.bridge
        )],
        "{nat}"
    );
}
