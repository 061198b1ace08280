//! Creating one attempt of a container: its image (pull policy, back-off between failed
//! pulls), its environment and volumes, then the container itself (not started).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Container;
use tracing::{info, warn};

use crate::{
    events::Recorder,
    runtime::{Namespaces, Origin, PodRuntime},
    shared::Shared,
};

/// Why an attempt could not be created or started, as the container's waiting state says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// ErrImagePull, ImagePullBackOff, CreateContainerConfigError, ...
    pub reason: String,
    pub message: String,
    /// When to try again (`None`: at the next resync).
    pub retry: Option<Instant>,
}

impl Failure {
    pub fn new(reason: &str, message: String, retry: Option<Instant>) -> Self {
        Self {
            reason: reason.to_string(),
            message,
            retry,
        }
    }
}

/// Failed pulls of one image reference.
struct PullFailure {
    failures: u32,
    retry_at: Instant,
    message: String,
}

/// The pod's failed pulls, per image reference.
#[derive(Default)]
pub struct Pulls(HashMap<String, PullFailure>);

/// Creates attempt `attempt` of `c` in the namespaces `ns` (pod address `ip`); returns the
/// container's id.
pub async fn create<R: PodRuntime>(
    shared: &Shared<R>,
    pulls: &mut Pulls,
    events: &Recorder<'_>,
    c: &Container,
    attempt: u32,
    ns: Namespaces<'_>,
    ip: Ipv4Addr,
) -> Result<String, Failure> {
    let pod = events.pod;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let image = c.image.clone().unwrap_or_default();
    pulls
        .ensure(
            shared,
            events,
            &c.name,
            &image,
            c.image_pull_policy.as_deref(),
        )
        .await?;
    let config_error = |e| Failure::new("CreateContainerConfigError", e, None);
    if crate::nonroot::required(pod, c) {
        let user = shared
            .runtime
            .image_user(&image)
            .await
            .map_err(|e| Failure::new("ErrImageInspect", format!("{e:#}"), None))?;
        crate::nonroot::verify(pod, c, || crate::nonroot::ImageUser::parse(&user))
            .map_err(config_error)?;
    }
    // A missing ConfigMap or Secret is retried at the next resync, when it may exist.
    let pod_ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let refs = crate::configs::references(pod, [c]);
    let objects = crate::configs::fetch(&shared.client, pod_ns, &refs)
        .await
        .map_err(config_error)?;
    let env = crate::env::build(pod, c, &objects, Some(&ip.to_string()), &shared.node_ip)
        .map_err(config_error)?;
    let pod_dir = crate::volumes::pod_dir(&shared.state_dir, uid);
    let failed_mount = |volume: &str, message: String| {
        // The kubelet's volume manager reports what it could not mount this way.
        events.warning(
            None,
            "FailedMount",
            &format!("MountVolume.SetUp failed for volume \"{volume}\" : {message}"),
        );
        config_error(message)
    };
    crate::configs::write_volumes(pod, c, &pod_dir, &objects)
        .map_err(|(volume, message)| failed_mount(&volume, message))?;
    let binds = crate::volumes::binds(pod, c, &pod_dir).map_err(config_error)?;
    let binds = crate::volumes::prepare(&binds).map_err(|e| failed_mount(&e.volume, e.message))?;
    info!(container = %c.name, attempt, "starting container");
    let created = shared
        .runtime
        .create_container(pod, c, attempt, ns, env, binds)
        .await;
    match created {
        Ok(id) => {
            events.normal(
                Some(&c.name),
                "Created",
                &format!("Created container: {}", c.name),
            );
            Ok(id)
        }
        Err(e) => {
            warn!(container = %c.name, error = %format_args!("{e:#}"), "create failed");
            Err(Failure::new(
                "CreateContainerError",
                format!("{e:#}"),
                Some(Instant::now() + shared.backoff.base),
            ))
        }
    }
}

impl Pulls {
    /// Makes the image present: locally built images (no registry digest) are used as they
    /// are even with `Always`, since no registry has them; otherwise pulls as the policy
    /// says, backing off between failed pulls.
    async fn ensure<R: PodRuntime>(
        &mut self,
        shared: &Shared<R>,
        events: &Recorder<'_>,
        container: &str,
        image: &str,
        policy: Option<&str>,
    ) -> Result<(), Failure> {
        let local = shared
            .runtime
            .image_origin(image)
            .await
            .map_err(|e| Failure::new("ErrImageInspect", format!("{e:#}"), None))?;
        let pull = match (policy.unwrap_or("IfNotPresent"), local) {
            (_, Some(Origin::Local)) | ("Never", Some(_)) => false,
            ("Never", None) => {
                return Err(Failure::new(
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                    None,
                ));
            }
            ("Always", _) => true,
            (_, present) => present.is_none(),
        };
        if !pull {
            events.normal(
                Some(container),
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(());
        }
        let now = Instant::now();
        if let Some(f) = self.0.get(image)
            && f.retry_at > now
        {
            return Err(Failure::new(
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\": {}", f.message),
                Some(f.retry_at),
            ));
        }
        info!(%image, "pulling image");
        events.normal(
            Some(container),
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        match shared.runtime.pull(image).await {
            Ok(()) => {
                self.0.remove(image);
                events.normal(
                    Some(container),
                    "Pulled",
                    &format!("Successfully pulled image \"{image}\""),
                );
                Ok(())
            }
            Err(message) => {
                warn!(%image, error = %message, "pull failed");
                let failures = self.0.get(image).map_or(0, |f| f.failures) + 1;
                let retry_at = now + shared.backoff.delay(failures - 1, Duration::ZERO);
                self.0.insert(
                    image.to_string(),
                    PullFailure {
                        failures,
                        retry_at,
                        message: message.clone(),
                    },
                );
                Err(Failure::new(
                    "ErrImagePull",
                    format!("failed to pull image \"{image}\": {message}"),
                    Some(retry_at),
                ))
            }
        }
    }
}
