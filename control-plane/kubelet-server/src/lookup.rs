//! Finding a pod's container in Docker through the labels the kubelet puts on it.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::ListContainersOptions;

use kproxy_pod_labels as labels;

use crate::error::HttpError;

/// One Docker container of the wanted pod container (any pod uid, any attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub pod_uid: String,
    pub attempt: u32,
    /// Docker's creation time, Unix seconds.
    pub created: i64,
    pub running: bool,
    /// False while Docker has created it but never started it.
    pub started: bool,
}

impl Candidate {
    /// None for containers without the labels the kubelet sets (not ours to serve).
    fn from_summary(c: &ContainerSummary) -> Option<Self> {
        let labels = c.labels.as_ref()?;
        Some(Self {
            id: c.id.clone()?,
            pod_uid: labels.get(labels::POD_UID)?.clone(),
            attempt: labels.get(labels::ATTEMPT)?.parse().ok()?,
            created: c.created.unwrap_or_default(),
            running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            started: c.state != Some(ContainerSummaryStateEnum::CREATED),
        })
    }
}

/// Why no container was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No container at all for this pod container (not created yet, or removed).
    Container,
    /// The current container exists but no earlier attempt does.
    Previous,
}

/// The container a request means. A pod deleted and recreated under the same name has a new
/// uid; the newest uid (by its newest container) is the pod. Within it the highest attempt
/// is the current container and the next lower one the previous (the kubelet may have
/// removed older attempts, so "next lower" is not necessarily attempt - 1).
pub fn select(cands: &[Candidate], previous: bool) -> Result<&Candidate, Missing> {
    let mut newest: HashMap<&str, (i64, u32)> = HashMap::new();
    for c in cands {
        let e = newest.entry(&c.pod_uid).or_insert((c.created, c.attempt));
        *e = (*e).max((c.created, c.attempt));
    }
    let uid = newest
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
        .map(|(uid, _)| *uid)
        .ok_or(Missing::Container)?;
    let mut of_pod: Vec<&Candidate> = cands.iter().filter(|c| c.pod_uid == uid).collect();
    of_pod.sort_by(|a, b| b.attempt.cmp(&a.attempt).then(b.created.cmp(&a.created)));
    let index = usize::from(previous);
    of_pod.get(index).copied().ok_or(if previous {
        Missing::Previous
    } else {
        Missing::Container
    })
}

/// Kubernetes' words for a missing container.
pub fn missing_error(missing: Missing, pod: &str, container: &str) -> HttpError {
    match missing {
        Missing::Container => {
            HttpError::not_found(format!("container {container:?} in pod {pod:?} not found"))
        }
        Missing::Previous => HttpError::bad_request(format!(
            "previous terminated container {container:?} in pod {pod:?} not found"
        )),
    }
}

/// Kubernetes' words for a container that exists but has not started yet (no log yet).
pub fn waiting_error(pod: &str, container: &str) -> HttpError {
    HttpError::bad_request(format!(
        "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
    ))
}

/// Exec and attach need the container running; Kubernetes' words when it is not.
pub fn ensure_running(target: &Candidate, pod: &str, container: &str) -> Result<(), HttpError> {
    if target.running {
        Ok(())
    } else {
        Err(HttpError::bad_request(format!(
            "container {container:?} in pod {pod:?} is not running"
        )))
    }
}

/// This node's Docker containers (stopped ones too) of `namespace/pod` whose kind label is
/// `kind`, narrowed by the label filters `more`.
pub async fn pod_containers(
    docker: &Docker,
    node: &str,
    namespace: &str,
    pod: &str,
    kind: &str,
    more: &[String],
) -> Result<Vec<ContainerSummary>, HttpError> {
    let mut label = vec![
        labels::node_filter(node),
        labels::filter(labels::POD_NAMESPACE, namespace),
        labels::filter(labels::POD_NAME, pod),
        labels::filter(labels::KIND, kind),
    ];
    label.extend_from_slice(more);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), label)])),
            ..Default::default()
        }))
        .await
        .map_err(|e| HttpError::docker("listing containers", &e))
}

/// The Docker container for `namespace/pod`'s `container` on this node.
pub async fn find(
    docker: &Docker,
    node: &str,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<Candidate, HttpError> {
    let list = pod_containers(
        docker,
        node,
        namespace,
        pod,
        labels::KIND_CONTAINER,
        &[labels::filter(labels::CONTAINER_NAME, container)],
    )
    .await?;
    let cands: Vec<Candidate> = list.iter().filter_map(Candidate::from_summary).collect();
    select(&cands, previous)
        .cloned()
        .map_err(|m| missing_error(m, pod, container))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn c(id: &str, uid: &str, attempt: u32, created: i64) -> Candidate {
        Candidate {
            id: id.into(),
            pod_uid: uid.into(),
            attempt,
            created,
            running: false,
            started: true,
        }
    }

    fn pick(cands: &[Candidate], previous: bool) -> Result<&str, Missing> {
        select(cands, previous).map(|c| c.id.as_str())
    }

    #[test]
    fn current_and_previous_attempts() {
        let cands = [
            c("a0", "u", 0, 10),
            c("a2", "u", 2, 30),
            c("a1", "u", 1, 20),
        ];
        assert_eq!(pick(&cands, false), Ok("a2"));
        assert_eq!(pick(&cands, true), Ok("a1"));
        // Attempt 1 was removed: the previous is the next lower one that exists.
        let gap = [c("a0", "u", 0, 10), c("a2", "u", 2, 30)];
        assert_eq!(pick(&gap, true), Ok("a0"));
    }

    #[test]
    fn missing_containers() {
        assert_eq!(pick(&[], false), Err(Missing::Container));
        assert_eq!(pick(&[], true), Err(Missing::Container));
        assert_eq!(pick(&[c("a0", "u", 0, 1)], true), Err(Missing::Previous));
        let e = missing_error(Missing::Previous, "p", "c");
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "previous terminated container \"c\" in pod \"p\" not found"
        );
        assert_eq!(
            missing_error(Missing::Container, "p", "c").code,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_newest_pod_uid_wins() {
        // A pod recreated under the same name: its attempt 0 is newer than the old pod's
        // attempt 5, and the old pod's containers are never its "previous".
        let cands = [c("old5", "old", 5, 50), c("new0", "new", 0, 60)];
        assert_eq!(pick(&cands, false), Ok("new0"));
        assert_eq!(pick(&cands, true), Err(Missing::Previous));
    }

    #[test]
    fn reads_the_kubelets_labels() {
        let mut s = ContainerSummary {
            id: Some("abc".into()),
            created: Some(7),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            labels: Some(HashMap::from([
                (labels::POD_UID.to_string(), "u1".to_string()),
                (labels::ATTEMPT.to_string(), "3".to_string()),
            ])),
            ..Default::default()
        };
        assert_eq!(
            Candidate::from_summary(&s),
            Some(Candidate {
                id: "abc".into(),
                pod_uid: "u1".into(),
                attempt: 3,
                created: 7,
                running: true,
                started: true,
            })
        );
        s.state = Some(ContainerSummaryStateEnum::CREATED);
        assert_eq!(
            Candidate::from_summary(&s).map(|c| (c.running, c.started)),
            Some((false, false))
        );
        s.labels
            .as_mut()
            .unwrap()
            .insert(labels::ATTEMPT.into(), "x".into());
        assert_eq!(Candidate::from_summary(&s), None, "a bad attempt label");
    }
}
