//! Ownership as Kubernetes' ControllerRefManager decides it (shared by the ReplicaSet and
//! Deployment controllers): a child is ours when its controller ownerReference names our
//! uid; an orphan matching our selector is adopted; a child of ours that no longer matches
//! is released.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as ApiSelector, ObjectMeta, OwnerReference,
};
use kproxy_apimachinery::selector::{LabelSelector, SelectorError};
use kube::{
    Resource,
    runtime::reflector::{ObjectRef, Store},
};

use crate::controller_in;

/// The controller ownerReference of an object, if any.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    controller_in(meta.owner_references.as_deref().unwrap_or_default())
}

/// What ownership decisions read of a candidate child (an object's metadata, or a cached pod).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Child<'a> {
    pub owners: &'a [OwnerReference],
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub deleting: bool,
}

impl<'a> Child<'a> {
    pub(crate) fn of(meta: &'a ObjectMeta) -> Self {
        Self {
            owners: meta.owner_references.as_deref().unwrap_or_default(),
            labels: meta.labels.as_ref(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// `namespace/name`, the key of expectations and logs.
pub(crate) fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The controller reference a child gets: `controller` and `blockOwnerDeletion` set, so a
/// foreground deletion of the owner waits for it.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let mut r = owner.controller_owner_ref(&())?;
    r.block_owner_deletion = Some(true);
    Some(r)
}

/// The API selector as a matcher. An empty selector matches nothing here (Kubernetes'
/// controllers refuse to select everything; validation rejects it anyway).
pub(crate) fn matcher(sel: &ApiSelector) -> Result<Option<LabelSelector>, SelectorError> {
    let s = LabelSelector::from_api(sel)?;
    Ok((!s.is_empty()).then_some(s))
}

pub(crate) fn matches(
    sel: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    sel.is_some_and(|s| s.matches(labels.unwrap_or(&EMPTY)))
}

/// The owners an event about `child` (in namespace `ns`) concerns: its controller when that
/// is a `K`, else, for an orphan, every `K` of the namespace whose selector matches (one of
/// them may adopt it).
pub(crate) fn owners_to_sync<K>(
    ns: &str,
    child: Child<'_>,
    owners: &Store<K>,
    selector: impl Fn(&K) -> Option<&ApiSelector>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    if let Some(owner) = controller_in(child.owners) {
        return if owner.kind == K::kind(&()) && owner.api_version == K::api_version(&()) {
            vec![ObjectRef::new(&owner.name).within(ns)]
        } else {
            Vec::new()
        };
    }
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .filter(|o| {
            let sel = selector(o).and_then(|s| matcher(s).ok().flatten());
            matches(sel.as_ref(), child.labels)
        })
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// What to do with one candidate child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Ours and still matching.
    Keep,
    /// An orphan that matches: add our controller reference.
    Adopt,
    /// Ours but no longer matching: remove our reference.
    Release,
    /// Someone else's, or not matching and not ours.
    Ignore,
}

/// ControllerRefManager's decision for one child. An owner being deleted adopts nothing
/// and releases nothing (its children go with it).
pub(crate) fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    child: &ObjectMeta,
    selector: Option<&LabelSelector>,
) -> Claim {
    claim_child(owner_uid, owner_deleting, Child::of(child), selector)
}

pub(crate) fn claim_child(
    owner_uid: &str,
    owner_deleting: bool,
    child: Child<'_>,
    selector: Option<&LabelSelector>,
) -> Claim {
    let matching = matches(selector, child.labels);
    match controller_in(child.owners) {
        Some(r) if r.uid == owner_uid => {
            if matching || owner_deleting {
                Claim::Keep
            } else {
                Claim::Release
            }
        }
        None if matching && !owner_deleting && !child.deleting => Claim::Adopt,
        // Another controller's child, or an orphan we may not adopt.
        Some(_) | None => Claim::Ignore,
    }
}

/// The child's ownerReferences after adopting (ours added) or releasing (ours removed).
pub(crate) fn owner_refs_after(
    child: &ObjectMeta,
    ours: &OwnerReference,
    adopt: bool,
) -> Vec<OwnerReference> {
    refs_after(
        child.owner_references.as_deref().unwrap_or_default(),
        ours,
        adopt,
    )
}

/// [`owner_refs_after`] on the references themselves.
pub(crate) fn refs_after(
    refs: &[OwnerReference],
    ours: &OwnerReference,
    adopt: bool,
) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> =
        refs.iter().filter(|r| r.uid != ours.uid).cloned().collect();
    if adopt {
        refs.push(ours.clone());
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], owner: Option<(&str, bool)>) -> ObjectMeta {
        ObjectMeta {
            name: Some("p".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            owner_references: owner.map(|(uid, controller)| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(controller),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn claims_like_the_controller_ref_manager() {
        let sel = LabelSelector::parse("app=web").unwrap();
        let s = Some(&sel);
        assert_eq!(
            claim("u1", false, &meta(&[("app", "web")], Some(("u1", true))), s),
            Claim::Keep
        );
        assert_eq!(
            claim("u1", false, &meta(&[("app", "db")], Some(("u1", true))), s),
            Claim::Release
        );
        assert_eq!(
            claim("u1", true, &meta(&[("app", "db")], Some(("u1", true))), s),
            Claim::Keep,
            "an owner being deleted releases nothing"
        );
        assert_eq!(
            claim("u1", false, &meta(&[("app", "web")], Some(("u2", true))), s),
            Claim::Ignore
        );
        assert_eq!(
            claim("u1", false, &meta(&[("app", "web")], None), s),
            Claim::Adopt
        );
        assert_eq!(
            claim(
                "u1",
                false,
                &meta(&[("app", "web")], Some(("u2", false))),
                s
            ),
            Claim::Adopt,
            "a non-controller owner does not prevent adoption"
        );
        assert_eq!(
            claim("u1", true, &meta(&[("app", "web")], None), s),
            Claim::Ignore
        );
        assert_eq!(
            claim("u1", false, &meta(&[("app", "db")], None), s),
            Claim::Ignore
        );
        assert_eq!(
            claim("u1", false, &meta(&[("app", "web")], None), None),
            Claim::Ignore,
            "an empty selector adopts nothing"
        );
    }

    #[test]
    fn adopting_and_releasing_edit_only_our_reference() {
        let child = meta(&[], Some(("other", false)));
        let ours = OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        };
        let adopted = owner_refs_after(&child, &ours, true);
        assert_eq!(adopted.len(), 2);
        let child = ObjectMeta {
            owner_references: Some(adopted),
            ..child
        };
        let released = owner_refs_after(&child, &ours, false);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].uid, "other");
    }
}
