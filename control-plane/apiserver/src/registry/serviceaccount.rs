//! The ServiceAccount admission of Pods (plugin/pkg/admission/serviceaccount): a pod without
//! a service account gets `default`, and one naming another account is refused unless that
//! account exists in its namespace.
//!
//! A missing `default` is let through, unlike Kubernetes: the controller manager creates it
//! in every namespace, but an API server running without one (tests, a cluster being set up)
//! would otherwise refuse every pod. No token is mounted into pods (no projection): nothing
//! in a pod depends on the account beyond its name.

use axum::http::StatusCode;
use futures::future::BoxFuture;
use kproxy_store::Store;
use serde_json::{Value, json};

use crate::object;
use crate::status::{ApiError, ApiResult};

const DEFAULT: &str = "default";
/// Mirror pods (a kubelet's static pods) are not admitted against accounts in Kubernetes.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The account a pod runs as: `serviceAccountName`, else the deprecated `serviceAccount`,
/// else `default`; both fields are set to it, as Kubernetes' v1 conversion shows them.
fn assign(pod: &mut Value) -> Option<String> {
    let spec = pod.get_mut("spec")?.as_object_mut()?;
    let given = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let name = given("serviceAccountName")
        .or_else(|| given("serviceAccount"))
        .unwrap_or_else(|| DEFAULT.to_string());
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    Some(name)
}

/// The pod create hook: see the module docs.
pub fn admit_pod<'a>(store: &'a dyn Store, pod: &'a mut Value) -> BoxFuture<'a, ApiResult<()>> {
    Box::pin(async move {
        let Some(account) = assign(pod) else {
            return Ok(());
        };
        let mirror = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
        if account == DEFAULT || mirror {
            return Ok(());
        }
        let ns = object::namespace(pod).unwrap_or_default().to_string();
        let key = super::by_kind("ServiceAccount")
            .expect("registered")
            .key(Some(&ns), &account);
        if store.get(&key).await?.is_some() {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods \"{}\" is forbidden: error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found",
                object::name(pod).unwrap_or_default()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_default_or_the_deprecated_field() {
        let mut p = json!({"spec": {"containers": []}});
        assert_eq!(assign(&mut p).as_deref(), Some("default"));
        assert_eq!(p["spec"]["serviceAccount"], "default");
        let mut p = json!({"spec": {"serviceAccount": "old"}});
        assert_eq!(assign(&mut p).as_deref(), Some("old"));
        assert_eq!(p["spec"]["serviceAccountName"], "old");
        let mut p = json!({"spec": {"serviceAccountName": "new", "serviceAccount": ""}});
        assert_eq!(assign(&mut p).as_deref(), Some("new"));
    }
}
