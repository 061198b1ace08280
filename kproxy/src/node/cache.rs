//! The watched Services and EndpointSlices, indexed by the Service each slice belongs to.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kproxy::model::{self, namespace_of};

const KINDS: usize = 3;

/// The watched objects. Keys are `namespace/name`.
#[derive(Default)]
pub(super) struct Cache {
    pub(super) services: HashMap<String, Service>,
    pub(super) slices: HashMap<String, EndpointSlice>,
    /// Service key → keys of its slices.
    pub(super) slices_of: HashMap<String, BTreeSet<String>>,
    /// Objects of a re-list in progress, swapped in at its end.
    pub(super) relist_services: Option<HashMap<String, Service>>,
    pub(super) relist_slices: Option<HashMap<String, EndpointSlice>>,
    #[expect(
        clippy::option_option,
        reason = "outer: a re-list is under way; inner: whether it found the Node"
    )]
    pub(super) relist_node: Option<Option<Node>>,
    /// Which kinds have completed their first list.
    pub(super) listed: [bool; KINDS],
}

pub(super) fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        namespace_of(meta),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The Service key a slice belongs to.
fn slice_owner(slice: &EndpointSlice) -> Option<String> {
    let svc = model::slice_service(slice)?;
    Some(format!("{}/{svc}", namespace_of(&slice.metadata)))
}

impl Cache {
    pub(super) fn insert_slice(&mut self, key: String, slice: EndpointSlice) -> Vec<String> {
        let mut touched = self.remove_slice(&key);
        if let Some(owner) = slice_owner(&slice) {
            self.slices_of
                .entry(owner.clone())
                .or_default()
                .insert(key.clone());
            // An update of a slice touches its Service once (its trigger time counts once).
            if !touched.contains(&owner) {
                touched.push(owner);
            }
        }
        self.slices.insert(key, slice);
        touched
    }

    /// Removes a slice; returns the Service it belonged to.
    pub(super) fn remove_slice(&mut self, key: &str) -> Vec<String> {
        let Some(old) = self.slices.remove(key) else {
            return Vec::new();
        };
        let Some(owner) = slice_owner(&old) else {
            return Vec::new();
        };
        if let Some(set) = self.slices_of.get_mut(&owner) {
            set.remove(key);
            if set.is_empty() {
                self.slices_of.remove(&owner);
            }
        }
        vec![owner]
    }

    /// Takes a re-list's Services; returns the keys of those gone, new or different (an
    /// unchanged Service need not be re-planned).
    pub(super) fn replace_services(&mut self, fresh: HashMap<String, Service>) -> Vec<String> {
        let old = std::mem::replace(&mut self.services, fresh);
        let gone = old.keys().filter(|k| !self.services.contains_key(*k));
        let changed = self
            .services
            .iter()
            .filter(|(k, svc)| old.get(*k) != Some(*svc))
            .map(|(k, _)| k);
        gone.chain(changed).cloned().collect()
    }

    /// Takes a re-list's slices; returns the Services of those gone, new or different.
    pub(super) fn replace_slices(&mut self, fresh: HashMap<String, EndpointSlice>) -> Vec<String> {
        let gone: Vec<String> = self
            .slices
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for key in gone {
            touched.extend(self.remove_slice(&key));
        }
        for (key, slice) in fresh {
            if self.slices.get(&key) != Some(&slice) {
                touched.extend(self.insert_slice(key, slice));
            }
        }
        touched
    }

    pub(super) fn slices_for(&self, service: &str) -> Vec<&EndpointSlice> {
        self.slices_of
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect()
    }
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn slices_are_indexed_by_their_service() {
        let slice = |name: &str, svc: &str| {
            let mut s = EndpointSlice {
                address_type: "IPv4".into(),
                ..EndpointSlice::default()
            };
            s.metadata.name = Some(name.into());
            s.metadata.namespace = Some("ns".into());
            s.metadata.labels = Some(BTreeMap::from([(
                model::SERVICE_NAME_LABEL.to_string(),
                svc.to_string(),
            )]));
            s
        };
        let mut cache = Cache::default();
        assert_eq!(
            cache.insert_slice("ns/a-1".into(), slice("a-1", "a")),
            ["ns/a"]
        );
        cache.insert_slice("ns/a-2".into(), slice("a-2", "a"));
        assert_eq!(cache.slices_for("ns/a").len(), 2);
        // An update touches its Service once.
        assert_eq!(
            cache.insert_slice("ns/a-2".into(), slice("a-2", "a")),
            ["ns/a"]
        );
        // Relabelled to another Service: both are touched.
        assert_eq!(
            cache.insert_slice("ns/a-2".into(), slice("a-2", "b")),
            ["ns/a", "ns/b"]
        );
        assert_eq!(cache.slices_for("ns/a").len(), 1);
        assert_eq!(cache.remove_slice("ns/a-1"), ["ns/a"]);
        assert!(cache.slices_for("ns/a").is_empty());
        assert!(!cache.slices_of.contains_key("ns/a"));

        // A re-list touches only the Services of slices gone, new or different.
        cache.insert_slice("ns/c-1".into(), slice("c-1", "c"));
        cache.insert_slice("ns/d-1".into(), slice("d-1", "d"));
        let mut changed = slice("d-1", "d");
        changed.metadata.resource_version = Some("2".into());
        let fresh = HashMap::from([
            ("ns/a-2".to_string(), slice("a-2", "b")),
            ("ns/d-1".to_string(), changed),
            ("ns/e-1".to_string(), slice("e-1", "e")),
        ]);
        let touched: BTreeSet<String> = cache.replace_slices(fresh).into_iter().collect();
        assert_eq!(
            touched,
            BTreeSet::from(["ns/c", "ns/d", "ns/e"].map(String::from))
        );
        assert_eq!(cache.slices.len(), 3);
        assert!(cache.slices_for("ns/c").is_empty());
        assert_eq!(cache.slices_for("ns/e").len(), 1);
    }

    #[test]
    fn relisted_services_touch_only_what_changed() {
        let svc = |name: &str, rv: &str| {
            let mut s = Service::default();
            s.metadata.name = Some(name.into());
            s.metadata.resource_version = Some(rv.into());
            (format!("ns/{name}"), s)
        };
        let mut cache = Cache::default();
        let first = cache.replace_services(HashMap::from([svc("a", "1"), svc("b", "1")]));
        assert_eq!(first.len(), 2);
        let mut touched =
            cache.replace_services(HashMap::from([svc("a", "1"), svc("b", "2"), svc("c", "1")]));
        touched.sort();
        assert_eq!(touched, ["ns/b", "ns/c"]);
        let mut gone = cache.replace_services(HashMap::from([svc("b", "2")]));
        gone.sort();
        assert_eq!(gone, ["ns/a", "ns/c"]);
    }
}
