//! Pod volumes as Docker bind mounts: `emptyDir` (a directory per pod under the kubelet's
//! state, shared by the pod's containers and removed with the pod) and `hostPath`. Other
//! volume types need objects this node does not serve (ConfigMaps, Secrets, claims), so a
//! container mounting one waits with CreateContainerConfigError instead of starting without it.

use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Where the pod's emptyDir volumes live.
pub fn pod_dir(state: &Path, uid: &str) -> PathBuf {
    state.join("pods").join(uid)
}

/// A relative path that stays inside its volume.
fn safe_sub_path(sub: &str) -> Result<(), String> {
    let p = Path::new(sub);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "subPath {sub:?} must be a relative path without '..'"
        ));
    }
    Ok(())
}

/// One mount: host path, container path, read-only; directories it needs on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
    /// Created before the container starts (emptyDir, hostPath DirectoryOrCreate, subPath).
    pub create: bool,
}

impl Bind {
    /// Docker's `HostConfig.Binds` form.
    pub fn docker(&self) -> String {
        format!(
            "{}:{}{}",
            self.host.display(),
            self.container,
            if self.read_only { ":ro" } else { "" }
        )
    }
}

/// The binds for `c`'s volumeMounts (pure: paths only).
pub fn binds(pod: &Pod, c: &Container, pod_dir: &Path) -> Result<Vec<Bind>, String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no volume of that name", m.name))?;
        let (mut host, mut create) = if v.empty_dir.is_some() {
            (pod_dir.join("volumes").join(&v.name), true)
        } else if let Some(h) = &v.host_path {
            let kind = h.type_.as_deref().unwrap_or("");
            if !matches!(kind, "" | "Directory" | "DirectoryOrCreate" | "File") {
                return Err(format!(
                    "volume {:?}: hostPath type {kind:?} is not supported by this node",
                    v.name
                ));
            }
            (PathBuf::from(&h.path), kind == "DirectoryOrCreate")
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir and hostPath volumes are supported by this node",
                v.name
            ));
        };
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            safe_sub_path(sub)?;
            host = host.join(sub);
            create = true;
        }
        out.push(Bind {
            host,
            container: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
            create,
        });
    }
    Ok(out)
}

/// Creates the host directories the binds need; returns Docker's bind strings.
pub fn prepare(binds: &[Bind]) -> Result<Vec<String>, String> {
    for b in binds.iter().filter(|b| b.create) {
        std::fs::create_dir_all(&b.host)
            .map_err(|e| format!("creating {}: {e}", b.host.display()))?;
    }
    Ok(binds.iter().map(Bind::docker).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: &serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [], "volumes": volumes}
        }))
        .unwrap()
    }

    fn container(mounts: &serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": mounts})).unwrap()
    }

    #[test]
    fn empty_dirs_and_host_paths_become_binds() {
        let p = pod(&serde_json::json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}}
        ]));
        let c = container(&serde_json::json!([
            {"name": "scratch", "mountPath": "/data"},
            {"name": "scratch", "mountPath": "/sub", "subPath": "a/b"},
            {"name": "logs", "mountPath": "/host-logs", "readOnly": true}
        ]));
        let dir = Path::new("/state/pods/u1");
        let b = binds(&p, &c, dir).unwrap();
        let docker: Vec<String> = b.iter().map(Bind::docker).collect();
        assert_eq!(
            docker,
            [
                "/state/pods/u1/volumes/scratch:/data",
                "/state/pods/u1/volumes/scratch/a/b:/sub",
                "/var/log:/host-logs:ro"
            ]
        );
        assert!(b[0].create && b[1].create && !b[2].create);
    }

    #[test]
    fn unsupported_or_unsafe_mounts_are_refused() {
        let p = pod(&serde_json::json!([
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "sock", "hostPath": {"path": "/run/x.sock", "type": "Socket"}}
        ]));
        let dir = Path::new("/s");
        let err = |m| binds(&p, &container(&m), dir).unwrap_err();
        assert!(
            err(serde_json::json!([{"name": "cfg", "mountPath": "/c"}])).contains("only emptyDir")
        );
        assert!(
            err(serde_json::json!([{"name": "nope", "mountPath": "/c"}])).contains("no volume")
        );
        assert!(err(serde_json::json!([{"name": "sock", "mountPath": "/c"}])).contains("Socket"));
        assert!(
            err(
                serde_json::json!([{"name": "scratch", "mountPath": "/c", "subPath": "../../etc"}])
            )
            .contains("subPath")
        );
        assert!(
            err(serde_json::json!([{"name": "scratch", "mountPath": "/c", "subPath": "/etc"}]))
                .contains("subPath")
        );
    }

    #[test]
    fn prepare_creates_directories() {
        let tmp = std::env::temp_dir().join(format!("kubelet-vol-{}", std::process::id()));
        let b = Bind {
            host: tmp.join("volumes/x"),
            container: "/x".into(),
            read_only: false,
            create: true,
        };
        assert_eq!(
            prepare(std::slice::from_ref(&b)).unwrap(),
            [format!("{}:/x", b.host.display())]
        );
        assert!(b.host.is_dir());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
