//! `runAsNonRoot`: the kubelet refuses to start a container that would run as root when its
//! effective securityContext (the container's over the pod's) asks for a non-root user.

use k8s_openapi::api::core::v1::{Container, Pod};

/// Whether the effective securityContext sets `runAsNonRoot: true` (the image's user must be
/// looked up only then).
pub fn required(pod: &Pod, c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or_else(|| {
            pod.spec
                .as_ref()?
                .security_context
                .as_ref()?
                .run_as_non_root
        })
        == Some(true)
}

/// The user an image runs as (`Config.User`: `user[:group]`): a uid, or a name that cannot be
/// checked. Docker runs an image without a user as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    Uid(i64),
    Name(String),
}

impl ImageUser {
    pub fn parse(user: &str) -> Self {
        let name = user.split(':').next().unwrap_or_default().trim();
        if name.is_empty() {
            return Self::Uid(0);
        }
        name.parse()
            .map_or_else(|_| Self::Name(name.to_string()), Self::Uid)
    }
}

/// The kubelet's verifyRunAsNonRoot, with its messages. `image` is consulted only when no
/// runAsUser is set.
pub fn verify(pod: &Pod, c: &Container, image: impl FnOnce() -> ImageUser) -> Result<(), String> {
    if !required(pod, c) {
        return Ok(());
    }
    let m = &pod.metadata;
    let who = format!(
        "(pod: \"{}_{}({})\", container: {})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default(),
        c.name
    );
    let run_as_user = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.spec.as_ref()?.security_context.as_ref()?.run_as_user);
    match run_as_user {
        Some(0) => Err(format!(
            "container's runAsUser breaks non-root policy {who}"
        )),
        Some(_) => Ok(()),
        None => match image() {
            ImageUser::Uid(0) => Err(format!(
                "container has runAsNonRoot and image will run as root {who}"
            )),
            ImageUser::Uid(_) => Ok(()),
            ImageUser::Name(name) => Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({name}), cannot \
                 verify user is non-root {who}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sc: &serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "securityContext": sc}
        }))
        .unwrap()
    }

    fn container(sc: &serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "securityContext": sc})).unwrap()
    }

    #[test]
    fn image_users_parse() {
        assert_eq!(ImageUser::parse(""), ImageUser::Uid(0));
        assert_eq!(ImageUser::parse("1000"), ImageUser::Uid(1000));
        assert_eq!(ImageUser::parse("1000:1000"), ImageUser::Uid(1000));
        assert_eq!(ImageUser::parse(":50"), ImageUser::Uid(0));
        assert_eq!(
            ImageUser::parse("www-data"),
            ImageUser::Name("www-data".into())
        );
    }

    #[test]
    fn run_as_non_root_refuses_root() {
        let none = serde_json::json!({});
        let yes = serde_json::json!({"runAsNonRoot": true});
        let root = || ImageUser::Uid(0);
        let image_unused = || -> ImageUser { panic!("the image user was looked up") };
        // Not asked for: anything runs.
        assert!(verify(&pod(&none), &container(&none), image_unused).is_ok());
        let e = verify(&pod(&none), &container(&yes), root).unwrap_err();
        assert_eq!(
            e,
            "container has runAsNonRoot and image will run as root \
             (pod: \"p_ns(u1)\", container: c)"
        );
        // The pod's setting applies; the container's overrides it.
        assert!(verify(&pod(&yes), &container(&none), root).is_err());
        let off = serde_json::json!({"runAsNonRoot": false});
        assert!(verify(&pod(&yes), &container(&off), image_unused).is_ok());
        // runAsUser decides without the image.
        let uid0 = serde_json::json!({"runAsNonRoot": true, "runAsUser": 0});
        let e = verify(&pod(&none), &container(&uid0), image_unused).unwrap_err();
        assert!(
            e.starts_with("container's runAsUser breaks non-root policy"),
            "{e}"
        );
        let pod_uid = serde_json::json!({"runAsUser": 1000});
        assert!(verify(&pod(&pod_uid), &container(&yes), image_unused).is_ok());
        // The image's own user.
        assert!(verify(&pod(&yes), &container(&none), || ImageUser::Uid(33)).is_ok());
        let e = verify(&pod(&yes), &container(&none), || {
            ImageUser::Name("nobody".into())
        })
        .unwrap_err();
        assert!(e.contains("non-numeric user (nobody)"), "{e}");
    }
}
