//! Lookups in the generated message table: by index, by fully qualified name, and the root
//! message of an object's apiVersion and kind.

use super::generated::MESSAGES;
use super::table::Message;

pub(super) fn message(index: u16) -> &'static Message {
    &MESSAGES[usize::from(index)]
}

/// The index of the message with this fully qualified name.
pub(super) fn find(name: &str) -> Option<u16> {
    let i = MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok()?;
    u16::try_from(i).ok()
}

const META: &str = "k8s.io.apimachinery.pkg.apis.meta";

/// The message of an object of `kind` in `api_version` ("v1", "apps/v1",
/// "discovery.k8s.io/v1", ...): the kind in the group's package, else in meta/v1, where the
/// option and status kinds that every group version serves live (DeleteOptions, Status, ...).
pub(super) fn root(api_version: &str, kind: &str) -> Option<u16> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if !plain(kind) || !plain(version) {
        return None;
    }
    let package = match group {
        "" => format!("k8s.io.api.core.{version}"),
        "meta.k8s.io" => format!("{META}.{version}"),
        g => {
            let g = g.strip_suffix(".k8s.io").unwrap_or(g);
            if !plain(g) {
                return None;
            }
            format!("k8s.io.api.{g}.{version}")
        }
    };
    find(&format!("{package}.{kind}")).or_else(|| find(&format!("{META}.v1.{kind}")))
}

#[cfg(test)]
mod tests {
    use super::super::table::{INLINE, Ty};
    use super::*;

    #[test]
    fn table_is_sorted_and_consistent() {
        assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        for m in &MESSAGES {
            assert!(
                m.fields.windows(2).all(|w| w[0].num < w[1].num),
                "{}",
                m.name
            );
            for f in m.fields {
                if let Ty::Msg(i) = f.ty {
                    assert!(usize::from(i) < MESSAGES.len(), "{}.{}", m.name, f.name);
                }
                assert!(
                    f.go & INLINE == 0 || matches!(f.ty, Ty::Msg(_)),
                    "{}",
                    f.name
                );
            }
        }
    }

    #[test]
    fn finds_messages_and_fields() {
        let pod = message(find("k8s.io.api.core.v1.Pod").unwrap());
        let spec = &pod.fields[pod.field_index(2).unwrap()];
        assert_eq!(spec.name, "spec");
        assert!(pod.field_index(99).is_none());
        assert!(find("k8s.io.api.core.v1.Nope").is_none());
    }

    #[test]
    fn roots_by_api_version_and_kind() {
        let name = |v, k| root(v, k).map(|i| message(i).name);
        assert_eq!(name("v1", "Pod"), Some("k8s.io.api.core.v1.Pod"));
        assert_eq!(
            name("apps/v1", "Deployment"),
            Some("k8s.io.api.apps.v1.Deployment")
        );
        assert_eq!(
            name("discovery.k8s.io/v1", "EndpointSlice"),
            Some("k8s.io.api.discovery.v1.EndpointSlice")
        );
        assert_eq!(
            name("coordination.k8s.io/v1", "Lease"),
            Some("k8s.io.api.coordination.v1.Lease")
        );
        assert_eq!(
            name("autoscaling/v1", "Scale"),
            Some("k8s.io.api.autoscaling.v1.Scale")
        );
        assert_eq!(
            name("policy/v1", "Eviction"),
            Some("k8s.io.api.policy.v1.Eviction")
        );
        assert_eq!(name("batch/v1", "Job"), Some("k8s.io.api.batch.v1.Job"));
        assert_eq!(
            name("apps/v1", "DeleteOptions"),
            Some("k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        );
        assert_eq!(
            name("meta.k8s.io/v1", "Status"),
            Some("k8s.io.apimachinery.pkg.apis.meta.v1.Status")
        );
        assert_eq!(name("v1", "Nope"), None);
        assert_eq!(name("networking.k8s.io/v1", "Ingress"), None);
        assert_eq!(name("v1", "v1.Pod"), None);
        assert_eq!(name("a.b/v1", "Pod"), None);
        assert_eq!(name("", "Pod"), None);
        assert_eq!(name("apps/v1", ""), None);
    }
}
