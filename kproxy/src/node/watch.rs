//! From the API server into the cache: one watcher task per kind, and the events they send
//! applied to the [`NodeProxy`]'s cache, marking the Services to re-plan.

use std::{collections::HashMap, net::Ipv4Addr, time::SystemTime};

use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    },
    jiff,
};
use kproxy::model::{self, TRIGGER_TIME_ANNOTATION};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::mpsc;

use super::{NodeProxy, cache::key_of};

/// One watcher event, tagged with its kind.
///
/// Boxed: the channel's slots are sized by the largest variant, and a Node or a Service
/// is several times the size of an EndpointSlice's inline part.
pub(super) enum Update {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Node(Box<watcher::Event<Node>>),
}

/// One task per watched kind; each forwards its events, and retries with kube-runtime's
/// default back-off when the API server cannot be reached.
pub(super) fn spawn_watchers(client: &Client, node_name: &str, tx: &mpsc::Sender<Update>) {
    fn spawn<K>(
        what: &'static str,
        api: Api<K>,
        cfg: watcher::Config,
        tx: mpsc::Sender<Update>,
        compact: fn(&mut K),
        wrap: fn(watcher::Event<K>) -> Update,
    ) where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        tokio::spawn(async move {
            // Only what kproxy reads is kept (see model::compact_service): the cache holds
            // every Service and slice of the cluster.
            let mut stream = watcher(api, cfg).default_backoff().modify(compact).boxed();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if tx.send(wrap(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(kind = what, %err, "watch failed, retrying with back-off; the datapath is left as it is");
                    }
                }
            }
        });
    }
    spawn(
        "Service",
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        tx.clone(),
        model::compact_service,
        |ev| Update::Service(Box::new(ev)),
    );
    spawn(
        "EndpointSlice",
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        tx.clone(),
        model::compact_slice,
        |ev| Update::Slice(Box::new(ev)),
    );
    spawn(
        "Node",
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        tx.clone(),
        |node| {
            node.metadata.managed_fields = None;
            node.metadata.annotations = None;
        },
        |ev| Update::Node(Box::new(ev)),
    );
}

impl NodeProxy {
    pub(super) fn handle(&mut self, update: Update) {
        match update {
            Update::Service(ev) => self.on_service(*ev),
            Update::Slice(ev) => self.on_slice(*ev),
            Update::Node(ev) => self.on_node(*ev),
        }
    }

    fn on_service(&mut self, ev: watcher::Event<Service>) {
        match ev {
            watcher::Event::Apply(svc) => {
                let key = key_of(&svc.metadata);
                self.cache.services.insert(key.clone(), svc);
                self.dirty.insert(key);
            }
            watcher::Event::Delete(svc) => {
                let key = key_of(&svc.metadata);
                self.cache.services.remove(&key);
                self.reported.remove(&key);
                self.dirty.insert(key);
            }
            watcher::Event::Init => self.cache.relist_services = Some(HashMap::new()),
            watcher::Event::InitApply(svc) => {
                if let Some(buf) = self.cache.relist_services.as_mut() {
                    buf.insert(key_of(&svc.metadata), svc);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.cache.relist_services.take().unwrap_or_default();
                self.dirty.extend(self.cache.replace_services(fresh));
                self.cache.listed[0] = true;
            }
        }
    }

    fn on_slice(&mut self, ev: watcher::Event<EndpointSlice>) {
        match ev {
            watcher::Event::Apply(slice) => {
                let key = key_of(&slice.metadata);
                let trigger = self.trigger_time(&slice);
                let touched = self.cache.insert_slice(key, slice);
                for svc in touched {
                    if let Some(t) = trigger {
                        self.triggers.entry(svc.clone()).or_default().push(t);
                    }
                    self.dirty.insert(svc);
                }
            }
            watcher::Event::Delete(slice) => {
                let key = key_of(&slice.metadata);
                self.dirty.extend(self.cache.remove_slice(&key));
            }
            watcher::Event::Init => self.cache.relist_slices = Some(HashMap::new()),
            watcher::Event::InitApply(slice) => {
                if let Some(buf) = self.cache.relist_slices.as_mut() {
                    buf.insert(key_of(&slice.metadata), slice);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.cache.relist_slices.take().unwrap_or_default();
                self.dirty.extend(self.cache.replace_slices(fresh));
                self.cache.listed[1] = true;
            }
        }
    }

    fn on_node(&mut self, ev: watcher::Event<Node>) {
        let node = match ev {
            watcher::Event::Apply(n) => Some(n),
            watcher::Event::Delete(_) => None,
            watcher::Event::Init => {
                self.cache.relist_node = Some(None);
                return;
            }
            watcher::Event::InitApply(n) => {
                self.cache.relist_node = Some(Some(n));
                return;
            }
            watcher::Event::InitDone => {
                self.cache.listed[2] = true;
                self.cache.relist_node.take().flatten()
            }
        };
        // Only its addresses and zone are used: kept as `node_ips` and `local`, not the
        // object.
        let zone = node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get(kproxy::model::policy::ZONE_LABEL))
            .cloned();
        if zone != self.local.zone {
            tracing::info!(?zone, "node zone changed");
            self.local.zone = zone;
            // Topology hints may now choose other endpoints for any Service.
            self.dirty.extend(self.cache.services.keys().cloned());
        }
        let mut ips = self.base_node_ips.clone();
        let addrs = node
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addresses.as_ref());
        for a in addrs.into_iter().flatten() {
            if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                && let Ok(ip) = a.address.parse::<Ipv4Addr>()
            {
                ips.push(ip);
            }
        }
        ips.sort_unstable();
        ips.dedup();
        if ips != self.node_ips {
            tracing::info!(node_ips = ?ips, "NodePort addresses changed");
            self.node_ips = ips;
            let checks = self.health_checks.values().cloned().collect();
            self.health.update(&checks, &self.node_ips);
            // Only NodePort and LoadBalancer Services have frontends on node addresses.
            for (key, svc) in &self.cache.services {
                let ty = svc.spec.as_ref().and_then(|s| s.type_.as_deref());
                if matches!(ty, Some("NodePort" | "LoadBalancer")) {
                    self.dirty.insert(key.clone());
                }
            }
        }
    }

    /// The slice's trigger time, if it is from after this kproxy started (older ones were
    /// programmed by a previous run; kube-proxy ignores them the same way).
    fn trigger_time(&self, slice: &EndpointSlice) -> Option<SystemTime> {
        let text = slice.annotations().get(TRIGGER_TIME_ANNOTATION)?;
        let ts: jiff::Timestamp = text.parse().ok()?;
        let t = SystemTime::from(ts);
        (t >= self.started).then_some(t)
    }
}
