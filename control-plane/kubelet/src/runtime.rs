//! The container runtime: Docker through bollard. A pod is a sandbox container (the `pause`
//! image, owner of the pod's network namespace) plus one Docker container per app container
//! and start attempt, all labelled with the pod (see `kproxy_pod_labels`).
//!
//! The pod worker reaches Docker only through [`PodRuntime`], so its plan can be tested
//! without one.

use std::{collections::HashMap, future::Future, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use bollard::{
    Docker,
    errors::Error as DockerError,
    models::{
        ContainerCreateBody, ContainerStateStatusEnum, ExecConfig, HostConfig, HostConfigLogConfig,
    },
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
        StopContainerOptions,
    },
};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use kproxy_apimachinery::quantity::Quantity;
use kproxy_pod_labels as labels;

/// The image of every pod's sandbox, built by `cargo xtask images`.
pub const PAUSE_IMAGE: &str = "kproxy/pause:1";

/// What Docker says about one of a pod's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    pub sandbox: bool,
    /// The spec's container name; empty for the sandbox.
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub state: RunState,
}

#[cfg(test)]
impl Observed {
    /// Attempt `attempt` of the pod's container `name` (image "img"), for unit tests.
    pub fn container(name: &str, attempt: u32, state: RunState) -> Self {
        Self {
            id: format!("{name}-{attempt}"),
            sandbox: false,
            name: name.into(),
            attempt,
            image: "img".into(),
            image_id: "sha256:1".into(),
            state,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Created, never started.
    Created,
    Running {
        started: Timestamp,
        pid: i64,
    },
    Exited {
        code: i32,
        /// Kubernetes' termination reason: Completed, Error or OOMKilled.
        reason: &'static str,
        started: Option<Timestamp>,
        finished: Timestamp,
    },
}

impl RunState {
    pub fn is_running(&self) -> bool {
        matches!(self, RunState::Running { .. })
    }
}

/// The attempts of spec container `name`, oldest first (as the runtime lists them).
pub fn attempts<'a>(observed: &'a [Observed], name: &str) -> Vec<&'a Observed> {
    observed
        .iter()
        .filter(|o| !o.sandbox && o.name == name)
        .collect()
}

/// The newest attempt of spec container `name`.
pub fn current<'a>(observed: &'a [Observed], name: &str) -> Option<&'a Observed> {
    observed.iter().rfind(|o| !o.sandbox && o.name == name)
}

/// What a pod worker does to containers. Docker ([`Runtime`]) implements it.
pub trait PodRuntime: Send + Sync + 'static {
    /// This kubelet's node (events name it).
    fn node(&self) -> &str;
    /// The pod's containers (sandboxes included), oldest attempt first.
    fn pod_containers(&self, uid: &str) -> impl Future<Output = Result<Vec<Observed>>> + Send;
    /// One container; `None` when it is gone.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<Option<Observed>>> + Send;
    /// Creates (does not start) the pod's sandbox; returns its id.
    fn create_sandbox(
        &self,
        pod: &Pod,
        host_network: bool,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Creates (does not start) attempt `attempt` of `container` in the sandbox's namespaces
    /// (and in the process namespace of the container `pid_target`, an ephemeral
    /// container's target).
    fn create_container(
        &self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        ns: Namespaces<'_>,
        env: Vec<String>,
        binds: Vec<String>,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Starts a created container.
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// SIGTERM, then SIGKILL after `grace`. Already stopped or gone is fine.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container, running or not. Gone is fine.
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Where a locally present image came from; `None` when it is not present.
    fn image_origin(&self, image: &str) -> impl Future<Output = Result<Option<Origin>>> + Send;
    /// The user the image runs as (`Config.User`; empty: root).
    fn image_user(&self, image: &str) -> impl Future<Output = Result<String>> + Send;
    /// Pulls `image` from its registry; the error is the engine's message.
    fn pull(&self, image: &str) -> impl Future<Output = std::result::Result<(), String>> + Send;
    /// Runs `cmd` in the container; returns its exit code and (capped) combined output.
    fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
    ) -> impl Future<Output = Result<(i64, String)>> + Send;
}

/// The namespaces a container joins: the sandbox's network and IPC, and optionally another
/// container's processes.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces<'a> {
    pub sandbox: &'a str,
    pub pid_target: Option<&'a str>,
}

/// A present image was built here (no registry digest) or pulled from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Registry,
}

#[derive(Clone)]
pub struct Runtime {
    pub docker: Docker,
    pub node: String,
    pub logs: LogRotation,
    /// Docker's `HostConfig.CgroupParent` for every container of the node (`--cgroup-parent`):
    /// the node's pods share one cgroup subtree (socket-LB scope, accounting).
    pub cgroup_parent: Option<String>,
}

/// Bounds on each container's log: Docker's json-file driver rotates it at `max_size` bytes
/// and keeps `max_files` files (the kubelet's containerLogMaxSize / containerLogMaxFiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl LogRotation {
    /// The container's `HostConfig.LogConfig`. json-file whatever the daemon's default: its
    /// rotated files are what Docker's logs API (kubectl logs) reads across.
    pub fn log_config(self) -> HostConfigLogConfig {
        HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), self.max_size.to_string()),
                ("max-file".to_string(), self.max_files.to_string()),
            ])),
        }
    }
}

/// Docker says "no such container/image" with a 404.
pub fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn docker_time(s: Option<&str>) -> Option<Timestamp> {
    // Docker reports "0001-01-01T00:00:00Z" for "never".
    s.and_then(|s| s.parse::<Timestamp>().ok())
        .filter(|t| t.as_second() > 0)
}

/// A quantity in Docker's i64 fields (no real limit comes near the bounds).
fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Docker's message without bollard's wrapping, for container statuses.
pub fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

impl Runtime {
    fn filters(&self, extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        let mut labels_f = vec![labels::node_filter(&self.node)];
        labels_f.extend(extra.iter().map(|(k, v)| labels::filter(k, v)));
        HashMap::from([("label".to_string(), labels_f)])
    }

    /// Every pod uid that has containers of this node, running or not.
    pub async fn pod_uids(&self) -> Result<HashMap<String, (String, String)>> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(&[])),
                ..Default::default()
            }))
            .await
            .context("listing the node's containers")?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let l = c.labels?;
                Some((
                    l.get(labels::POD_UID)?.clone(),
                    (
                        l.get(labels::POD_NAMESPACE).cloned().unwrap_or_default(),
                        l.get(labels::POD_NAME).cloned().unwrap_or_default(),
                    ),
                ))
            })
            .collect())
    }

    fn pod_labels<'a>(&'a self, pod: &'a Pod) -> labels::Pod<'a> {
        let m = &pod.metadata;
        labels::Pod {
            node: &self.node,
            uid: m.uid.as_deref().unwrap_or_default(),
            name: m.name.as_deref().unwrap_or_default(),
            namespace: m.namespace.as_deref().unwrap_or_default(),
        }
    }

    /// Creates a container under `name`; a leftover of that name (a dead attempt of an earlier
    /// kubelet run) is removed first. Trying first keeps the common case at one call.
    async fn create_named(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let create = || {
            self.docker.create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body.clone(),
            )
        };
        match create().await {
            Ok(r) => Ok(r.id),
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                // Kubelets may share one Docker engine: only a leftover of this node goes.
                let owner = self
                    .docker
                    .inspect_container(name, None)
                    .await
                    .ok()
                    .and_then(|i| i.config?.labels?.remove(labels::NODE));
                if let Some(other) = owner.filter(|o| *o != self.node) {
                    bail!("container {name} exists and belongs to node {other}");
                }
                self.remove_named(name).await?;
                Ok(create().await.map_err(|e| anyhow!(docker_message(&e)))?.id)
            }
            Err(e) => Err(anyhow!(docker_message(&e))),
        }
    }

    async fn remove_named(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).context(format!("removing container {name}")),
        }
    }
}

impl PodRuntime for Runtime {
    fn node(&self) -> &str {
        &self.node
    }

    async fn pod_containers(&self, uid: &str) -> Result<Vec<Observed>> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(&[(labels::POD_UID, uid)])),
                ..Default::default()
            }))
            .await
            .context("listing the pod's containers")?;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let Some(id) = c.id else { continue };
            match self.inspect(&id).await {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|o| (o.sandbox, o.name.clone(), o.attempt));
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<Option<Observed>> {
        let info = match self.docker.inspect_container(id, None).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).context(format!("inspecting container {id}")),
        };
        let l = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let st = info.state.unwrap_or_default();
        let started = docker_time(st.started_at.as_deref());
        let state = match st.status {
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING,
            ) => RunState::Running {
                started: started.unwrap_or_else(Timestamp::now),
                pid: st.pid.unwrap_or(0),
            },
            Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
            _ => {
                let code = st
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1);
                RunState::Exited {
                    code,
                    reason: if st.oom_killed == Some(true) {
                        "OOMKilled"
                    } else if code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    },
                    started,
                    finished: docker_time(st.finished_at.as_deref())
                        .or(started)
                        .unwrap_or_else(Timestamp::now),
                }
            }
        };
        let parsed = labels::parse(&l);
        Ok(Some(Observed {
            id: info.id.unwrap_or_else(|| id.to_string()),
            sandbox: parsed.sandbox,
            name: parsed.container.to_string(),
            attempt: parsed.attempt,
            image: info.config.and_then(|c| c.image).unwrap_or_default(),
            image_id: info.image.unwrap_or_default(),
            state,
        }))
    }

    async fn create_sandbox(&self, pod: &Pod, host_network: bool) -> Result<String> {
        let m = &pod.metadata;
        let (name, ns, uid) = (
            m.name.as_deref().unwrap_or_default(),
            m.namespace.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default(),
        );
        let l = self.pod_labels(pod).sandbox();
        let hostname: String = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.to_string())
            .chars()
            .take(63)
            .collect();
        let body = ContainerCreateBody {
            image: Some(PAUSE_IMAGE.into()),
            hostname: (!host_network).then_some(hostname),
            labels: Some(l),
            host_config: Some(HostConfig {
                network_mode: Some(if host_network { "host" } else { "none" }.into()),
                // The app containers join its IPC namespace too.
                ipc_mode: Some("shareable".into()),
                log_config: Some(self.logs.log_config()),
                cgroup_parent: self.cgroup_parent.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker_name = labels::sandbox_name(name, ns, uid);
        self.create_named(&docker_name, body).await.context(
            "creating the pod sandbox (is the kproxy/pause:1 image built? `cargo xtask images`)",
        )
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| anyhow!(docker_message(&e)))
    }

    async fn create_container(
        &self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        ns: Namespaces<'_>,
        env: Vec<String>,
        binds: Vec<String>,
    ) -> Result<String> {
        let m = &pod.metadata;
        let l = self.pod_labels(pod).container(&container.name, attempt);
        let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
        let memory = limits
            .and_then(|l| l.get("memory"))
            .map(|q| Quantity::parse(&q.0).map(|q| saturate(q.value())))
            .transpose()
            .context("resources.limits.memory")?;
        let nano_cpus = limits
            .and_then(|l| l.get("cpu"))
            .map(|q| Quantity::parse(&q.0).map(|q| saturate(q.milli_value() * 1_000_000)))
            .transpose()
            .context("resources.limits.cpu")?;
        // Requests become relative CPU weight, as Kubernetes' milliCPU → cpu.shares.
        let cpu_shares = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| Quantity::parse(&q.0).map(|q| saturate(q.milli_value() * 1024 / 1000).max(2)))
            .transpose()
            .context("resources.requests.cpu")?;
        let join = format!("container:{}", ns.sandbox);
        let mut body = ContainerCreateBody {
            image: container.image.clone(),
            entrypoint: container.command.clone(),
            cmd: container.args.clone(),
            env: Some(env),
            working_dir: container.working_dir.clone(),
            // Kept open for `kubectl attach` (the kubelet's Stdin/StdinOnce/Tty); with
            // stdinOnce the end of the first attach's stdin closes it.
            tty: container.tty,
            open_stdin: container.stdin,
            stdin_once: container.stdin_once,
            attach_stdin: container.stdin,
            labels: Some(l),
            host_config: Some(HostConfig {
                network_mode: Some(join.clone()),
                ipc_mode: Some(join),
                pid_mode: ns.pid_target.map(|id| format!("container:{id}")),
                binds: (!binds.is_empty()).then_some(binds),
                cpu_shares,
                init: Some(true),
                log_config: Some(self.logs.log_config()),
                cgroup_parent: self.cgroup_parent.clone(),
                memory,
                nano_cpus,
                ..Default::default()
            }),
            ..Default::default()
        };
        apply_security(pod, container, &mut body);
        let docker_name = labels::container_name(
            &container.name,
            m.name.as_deref().unwrap_or_default(),
            m.namespace.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default(),
            attempt,
        );
        self.create_named(&docker_name, body).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    ..Default::default()
                }),
            )
            .await
        {
            // 304: already stopped; 404: gone.
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(e).context(format!("stopping container {id}")),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.remove_named(id).await
    }

    async fn image_origin(&self, image: &str) -> Result<Option<Origin>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(if i.repo_digests.unwrap_or_default().is_empty() {
                Origin::Local
            } else {
                Origin::Registry
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).context(format!("inspecting image {image}")),
        }
    }

    async fn image_user(&self, image: &str) -> Result<String> {
        let i = self
            .docker
            .inspect_image(image)
            .await
            .with_context(|| format!("inspecting image {image}"))?;
        Ok(i.config.and_then(|c| c.user).unwrap_or_default())
    }

    async fn pull(&self, image: &str) -> std::result::Result<(), String> {
        let (repo, tag) = split_image(image);
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_string()),
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(docker_message(&e)),
            }
        }
        Ok(())
    }

    async fn exec(&self, id: &str, cmd: Vec<String>) -> Result<(i64, String)> {
        let exec = self
            .docker
            .create_exec(
                id,
                ExecConfig {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow!(docker_message(&e)))?;
        let mut out = String::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| anyhow!(docker_message(&e)))?
        {
            while let Some(chunk) = output.next().await {
                let chunk = chunk.map_err(|e| anyhow!(docker_message(&e)))?;
                if out.len() < 10 * 1024 {
                    out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        }
        let code = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| anyhow!(docker_message(&e)))?
            .exit_code
            .unwrap_or(-1);
        Ok((code, out))
    }
}

/// The container's securityContext (falling back to the pod's) in Docker's terms: user and
/// group, supplemental groups, privileged, capabilities, read-only root, no-new-privileges.
fn apply_security(pod: &Pod, c: &Container, body: &mut ContainerCreateBody) {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|p| p.run_as_user));
    let group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|p| p.run_as_group));
    body.user = match (user, group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        // A group alone keeps the image's user.
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    };
    let hc = body.host_config.get_or_insert_with(HostConfig::default);
    hc.group_add = psc
        .and_then(|p| p.supplemental_groups.clone())
        .filter(|g| !g.is_empty())
        .map(|g| g.iter().map(i64::to_string).collect());
    if let Some(sc) = sc {
        hc.privileged = sc.privileged;
        hc.readonly_rootfs = sc.read_only_root_filesystem;
        if let Some(caps) = &sc.capabilities {
            hc.cap_add.clone_from(&caps.add);
            hc.cap_drop.clone_from(&caps.drop);
        }
        if sc.allow_privilege_escalation == Some(false) {
            hc.security_opt = Some(vec!["no-new-privileges".into()]);
        }
    }
}

/// `repo[:tag][@digest]` → (repo, tag), with Docker's default tag.
pub fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    match image.rsplit_once(':') {
        // A colon inside the last path segment is a tag; before a '/' it is a registry port.
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repo_and_tag() {
        assert_eq!(split_image("httpd"), ("httpd", "latest"));
        assert_eq!(split_image("kproxy/pause:1"), ("kproxy/pause", "1"));
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(
            split_image("registry:5000/team/app:v2"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(split_image("app@sha256:abc"), ("app", "sha256:abc"));
    }

    #[test]
    fn security_context_maps_to_docker() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [],
                     "securityContext": {"runAsUser": 1000, "runAsGroup": 2000,
                                         "supplementalGroups": [3000]}}
        }))
        .unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "securityContext": {"runAsUser": 1500, "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}
        }))
        .unwrap();
        let mut body = ContainerCreateBody::default();
        apply_security(&pod, &c, &mut body);
        assert_eq!(
            body.user.as_deref(),
            Some("1500:2000"),
            "container wins, pod's group"
        );
        let hc = body.host_config.unwrap();
        assert_eq!(hc.group_add, Some(vec!["3000".to_string()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        let mut plain = ContainerCreateBody::default();
        apply_security(&pod, &Container::default(), &mut plain);
        assert_eq!(plain.user.as_deref(), Some("1000:2000"));
        assert_eq!(plain.host_config.unwrap().privileged, None);
    }

    #[test]
    fn docker_never_time_is_none() {
        assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), None);
        assert!(docker_time(Some("2026-11-26T22:01:34.123456789Z")).is_some());
        assert_eq!(docker_time(None), None);
    }

    #[test]
    fn logs_rotate_with_json_file() {
        let lc = LogRotation {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
        .log_config();
        assert_eq!(lc.typ.as_deref(), Some("json-file"));
        let c = lc.config.unwrap();
        assert_eq!(c["max-size"], "10485760");
        assert_eq!(c["max-file"], "5");
    }
}
