//! LoadBalancer IP allocation (the cloud-controller role, like Cilium LB-IPAM or MetalLB):
//! Services of type LoadBalancer with no `loadBalancerClass` (or ours) get an address from
//! the configured pools in `status.loadBalancer.ingress[].ip` with `ipMode: VIP`.
//!
//! One allocator per process (a mutex), rebuilt from the Services' status before the first
//! allocation, so an address is never handed out twice: not with concurrent creates, not
//! across restarts. Released when the Service goes or stops being a LoadBalancer; Services
//! left pending (pool exhausted, requested address taken) are retried when one is released,
//! and show no address meanwhile (one they gave up comes off their status).

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    ops::RangeInclusive,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt as _, channel::mpsc, stream::BoxStream};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::{
    Api, Client, Resource as _, ResourceExt as _,
    api::Patch,
    runtime::{
        WatchStreamExt as _, applier,
        controller::{Action, Config as ApplierConfig},
        reflector::{self, ObjectRef, Store},
        watcher::{self, Event},
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    Config, SyncError as Error, api_err,
    events::{Recorder, Type},
};

/// Our `spec.loadBalancerClass`; Services without a class are ours too.
pub const LB_CLASS: &str = "kproxy.io/lb";

/// A Service, by namespace and name.
pub type SvcKey = (String, String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("requested IP {0} is not in any pool ({1})")]
    NotInPool(Ipv4Addr, String),
    #[error("requested IP {0} is already in use by {1}/{2}")]
    InUse(Ipv4Addr, String, String),
    #[error("no addresses left in pools {0}")]
    Exhausted(String),
}

// === impl Allocator ===

/// Which address of which pool belongs to which Service.
#[derive(Debug)]
pub struct Allocator {
    pools: Vec<Ipv4Net>,
    by_ip: HashMap<Ipv4Addr, SvcKey>,
    by_owner: HashMap<SvcKey, Ipv4Addr>,
    /// Addresses pending Services asked for by `loadBalancerIP`: not handed out to others
    /// automatically, so they get them once free.
    reserved: HashMap<Ipv4Addr, SvcKey>,
}

impl Allocator {
    #[must_use]
    pub fn new(pools: Vec<Ipv4Net>) -> Self {
        Self {
            pools,
            by_ip: HashMap::new(),
            by_owner: HashMap::new(),
            reserved: HashMap::new(),
        }
    }

    fn pools_text(&self) -> String {
        let p: Vec<String> = self.pools.iter().map(ToString::to_string).collect();
        format!("[{}]", p.join(", "))
    }

    /// Usable addresses of a pool: without the network and broadcast addresses, which
    /// some clients treat specially (as Cilium LB-IPAM does by default); /31 and /32 are
    /// used whole.
    fn usable(pool: Ipv4Net) -> RangeInclusive<u32> {
        let (first, last) = (u32::from(pool.network()), u32::from(pool.broadcast()));
        if pool.prefix_len() < 31 {
            first + 1..=last - 1
        } else {
            first..=last
        }
    }

    #[must_use]
    pub fn in_pools(&self, ip: Ipv4Addr) -> bool {
        self.pools
            .iter()
            .any(|p| Self::usable(*p).contains(&u32::from(ip)))
    }

    #[must_use]
    pub fn holder(&self, ip: Ipv4Addr) -> Option<&SvcKey> {
        self.by_ip.get(&ip)
    }

    #[must_use]
    pub fn of(&self, owner: &SvcKey) -> Option<Ipv4Addr> {
        self.by_owner.get(owner).copied()
    }

    #[must_use]
    pub fn allocated(&self) -> usize {
        self.by_ip.len()
    }

    /// Gives `ip` to `owner` (releasing what it had) if it is in a pool and free.
    pub fn claim(&mut self, owner: &SvcKey, ip: Ipv4Addr) -> Result<(), AllocError> {
        if !self.in_pools(ip) {
            return Err(AllocError::NotInPool(ip, self.pools_text()));
        }
        match self.by_ip.get(&ip) {
            Some(o) if o == owner => return Ok(()),
            Some((ns, name)) => return Err(AllocError::InUse(ip, ns.clone(), name.clone())),
            None => {}
        }
        self.release(owner);
        self.by_ip.insert(ip, owner.clone());
        self.by_owner.insert(owner.clone(), ip);
        Ok(())
    }

    /// The address for `owner`: the requested one, else the one it has, else the lowest
    /// free one.
    pub fn allocate(
        &mut self,
        owner: &SvcKey,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, AllocError> {
        if let Some(ip) = requested {
            return self.claim(owner, ip).map(|()| ip);
        }
        if let Some(ip) = self.of(owner) {
            return Ok(ip);
        }
        let free = self
            .pools
            .iter()
            .flat_map(|p| Self::usable(*p).map(Ipv4Addr::from))
            .find(|ip| {
                !self.by_ip.contains_key(ip) && self.reserved.get(ip).is_none_or(|o| o == owner)
            });
        let ip = free.ok_or_else(|| AllocError::Exhausted(self.pools_text()))?;
        self.claim(owner, ip)?;
        Ok(ip)
    }

    /// Keeps `ip` for `owner`, which asked for it and waits until it is free.
    pub fn reserve(&mut self, owner: &SvcKey, ip: Ipv4Addr) {
        self.unreserve(owner);
        self.reserved.entry(ip).or_insert_with(|| owner.clone());
    }

    pub fn unreserve(&mut self, owner: &SvcKey) {
        self.reserved.retain(|_, o| o != owner);
    }

    /// The Service is gone or no longer ours: its address and its reservation go.
    pub fn forget(&mut self, owner: &SvcKey) -> Option<Ipv4Addr> {
        self.unreserve(owner);
        self.release(owner)
    }

    pub fn release(&mut self, owner: &SvcKey) -> Option<Ipv4Addr> {
        let ip = self.by_owner.remove(owner)?;
        self.by_ip.remove(&ip);
        Some(ip)
    }
}

// === what a Service wants (pure) ===

/// Whether this controller serves the Service: type LoadBalancer, no class or ours.
#[must_use]
pub fn wants_ip(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") && ours_by_class(svc)
}

/// No `loadBalancerClass`, or ours (whatever the type).
fn ours_by_class(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref())
        .is_none_or(|c| c == LB_CLASS)
}

/// `spec.loadBalancerIP`, if set: `Err` with the text when it is not an IPv4 address.
fn requested_ip(svc: &Service) -> Result<Option<Ipv4Addr>, String> {
    match svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|s| !s.is_empty())
    {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| s.to_string()),
    }
}

fn ingress(svc: &Service) -> &[LoadBalancerIngress] {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

/// The ingress IPs in the Service's status.
#[must_use]
pub fn status_ips(svc: &Service) -> Vec<Ipv4Addr> {
    ingress(svc)
        .iter()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn status_is(svc: &Service, ip: Ipv4Addr) -> bool {
    let ingress = ingress(svc);
    ingress.len() == 1
        && ingress[0].ip.as_deref() == Some(ip.to_string().as_str())
        && ingress[0].ip_mode.as_deref() == Some("VIP")
}

/// What to do with one Service, decided under the allocator's lock.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write this address to the status (newly allocated: `fresh`).
    Assign { ip: Ipv4Addr, fresh: bool },
    /// The status is right.
    Keep,
    /// Not ours (any more): clear our status if `clear`.
    Release { clear: bool },
    /// Cannot allocate: stay pending and say why; clear the status if it shows a pool
    /// address (one given up, or another Service's).
    Pending { why: String, clear: bool },
}

/// Decides for `svc` and updates `alloc` accordingly.
pub fn decide(alloc: &mut Allocator, svc: &Service) -> Decision {
    let key: SvcKey = (svc.namespace().unwrap_or_default(), svc.name_any());
    if !wants_ip(svc) {
        let had = alloc.forget(&key).is_some();
        // The type changed away: our address leaves the status too. Another class's
        // status is not ours to touch.
        let clear =
            ours_by_class(svc) && (had || status_ips(svc).iter().any(|ip| alloc.in_pools(*ip)));
        return Decision::Release { clear };
    }
    let requested = match requested_ip(svc) {
        Ok(r) => r,
        Err(bad) => {
            alloc.forget(&key);
            return pending(
                alloc,
                svc,
                format!("spec.loadBalancerIP {bad:?} is not an IPv4 address"),
            );
        }
    };
    let had = alloc.of(&key);
    // After a restart (or a lost write) the status is the record: keep what it shows.
    let result = match (requested, had) {
        (None, None) => match status_ips(svc).into_iter().find(|ip| alloc.in_pools(*ip)) {
            Some(ip) if alloc.claim(&key, ip).is_ok() => Ok(ip),
            _ => alloc.allocate(&key, None),
        },
        _ => alloc.allocate(&key, requested),
    };
    if result.is_ok() {
        alloc.unreserve(&key);
    }
    match result {
        Ok(ip) if status_is(svc, ip) => Decision::Keep,
        Ok(ip) => Decision::Assign {
            ip,
            fresh: had != Some(ip),
        },
        Err(e) => {
            if let Some(ip) = requested {
                // Asked for another address than it has: it gives the old one up, and
                // waits for the one it asked for.
                alloc.release(&key);
                if matches!(e, AllocError::InUse(..)) {
                    alloc.reserve(&key, ip);
                }
            }
            pending(alloc, svc, e.to_string())
        }
    }
}

/// A pending Service holds no address, so a pool address its status shows is not its own.
fn pending(alloc: &Allocator, svc: &Service, why: String) -> Decision {
    let clear = status_ips(svc).iter().any(|ip| alloc.in_pools(*ip));
    Decision::Pending { why, clear }
}

// === controller ===

struct State {
    alloc: Allocator,
    rebuilt: bool,
    /// Services waiting for an address, and the last reason told in an event.
    pending: BTreeMap<SvcKey, String>,
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    state: Mutex<State>,
    recorder: Recorder,
    /// Reconciles pending Services (after an address is released).
    wake: mpsc::UnboundedSender<ObjectRef<Service>>,
}

impl Ctx {
    fn state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("lbipam lock"))
    }

    /// Lets the pending Services try again: an address was released.
    fn wake_pending(&self) {
        let pending: Vec<SvcKey> = self.state(|s| s.pending.keys().cloned().collect());
        for (ns, name) in pending {
            let _ = self.wake.unbounded_send(ObjectRef::new(&name).within(&ns));
        }
    }
}

/// Marks the addresses the Services' status shows as used, before anything is allocated.
fn rebuild(state: &mut State, services: &[Arc<Service>]) {
    let mut sorted: Vec<&Arc<Service>> = services.iter().collect();
    // Oldest first: if two Services show the same address, the older keeps it.
    sorted.sort_by_key(|s| s.metadata.creation_timestamp.clone());
    for svc in sorted {
        if !wants_ip(svc) {
            continue;
        }
        let key: SvcKey = (svc.namespace().unwrap_or_default(), svc.name_any());
        if let Some(ip) = status_ips(svc)
            .into_iter()
            .find(|ip| state.alloc.in_pools(*ip))
            && let Err(e) = state.alloc.claim(&key, ip)
        {
            warn!(service = %format!("{}/{}", key.0, key.1), error = %e, "address shown twice; this Service gets a new one");
        }
    }
    state.rebuilt = true;
    info!(
        allocated = state.alloc.allocated(),
        "LoadBalancer allocations rebuilt from Service status"
    );
}

async fn write_status(
    api: &Api<Service>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let pp = crate::patch_params();
    api.patch_status(name, &pp, &Patch::Merge(json!({ "status": status })))
        .await
        .map(|_| ())
}

async fn clear_status(api: &Api<Service>, name: &str, id: String) -> Result<(), Error> {
    match write_status(api, name, json!({"loadBalancer": {"ingress": null}})).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(api_err(format!("writing the status of Service {id}"))(e)),
        Ok(()) => debug!("LoadBalancer IP released"),
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())))]
async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.services.wait_until_ready().await?;
    let key: SvcKey = (svc.namespace().unwrap_or_default(), svc.name_any());
    let decision = ctx.state(|s| {
        if !s.rebuilt {
            rebuild(s, &ctx.services.state());
        }
        let d = decide(&mut s.alloc, &svc);
        if !matches!(d, Decision::Pending { .. }) {
            s.pending.remove(&key);
        }
        d
    });
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.0);
    let id = format!("{}/{}", key.0, key.1);
    match decision {
        Decision::Keep => Ok(Action::await_change()),
        Decision::Assign { ip, fresh } => {
            let status =
                json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}});
            match write_status(&api, &key.1, status).await {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    ctx.state(|s| s.alloc.forget(&key));
                    ctx.wake_pending();
                    return Ok(Action::await_change());
                }
                Err(e) => return Err(api_err(format!("writing the status of Service {id}"))(e)),
            }
            info!(%ip, "LoadBalancer IP assigned");
            if fresh {
                ctx.recorder.publish(
                    &svc.object_ref(&()),
                    Type::Normal,
                    "IPAllocated",
                    &format!("Assigned IP [\"{ip}\"]"),
                );
            }
            Ok(Action::await_change())
        }
        Decision::Release { clear } => {
            if clear {
                clear_status(&api, &key.1, id).await?;
            }
            ctx.wake_pending();
            Ok(Action::await_change())
        }
        Decision::Pending { why, clear } => {
            if clear {
                // What it showed may be handed out again: off its status first.
                clear_status(&api, &key.1, id.clone()).await?;
                ctx.wake_pending();
            }
            let new =
                ctx.state(|s| s.pending.insert(key.clone(), why.clone()).as_ref() != Some(&why));
            if new {
                warn!(reason = %why, "LoadBalancer IP pending");
                ctx.recorder.publish(
                    &svc.object_ref(&()),
                    Type::Warning,
                    "AllocationFailed",
                    &format!("Failed to allocate IP for \"{id}\": {why}"),
                );
            }
            // Woken when an address is released; this is only the safety net.
            Ok(Action::requeue(Duration::from_mins(1)))
        }
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(svc: Arc<Service>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(service = %svc.name_any(), error = %err, "LoadBalancer IP sync failed, retrying");
    Action::requeue(Duration::from_millis(500))
}

/// The merged trigger stream the controller runs on.
type Queue = BoxStream<'static, Result<ObjectRef<Service>, watcher::Error>>;

pub async fn run(client: Client, config: Arc<Config>) -> crate::error::Result<()> {
    let (services, writer) = reflector::store::<Service>();
    let (wake, woken) = mpsc::unbounded();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        services: services.clone(),
        state: Mutex::new(State {
            alloc: Allocator::new(config.lb_pools.clone()),
            rebuilt: false,
            pending: BTreeMap::new(),
        }),
        recorder: Recorder::new(client.clone(), "lb-ipam"),
        wake,
    });
    let c = Arc::clone(&ctx);
    let events: Queue = watcher::watcher(Api::<Service>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .filter_map(move |ev| {
            let out = match ev {
                Ok(Event::Apply(s) | Event::InitApply(s)) => Some(Ok(ObjectRef::from_obj(&s))),
                Ok(Event::Delete(s)) => {
                    let key: SvcKey = (s.namespace().unwrap_or_default(), s.name_any());
                    let freed = c.state(|st| {
                        st.pending.remove(&key);
                        // Only once rebuilt: before that the allocator is not the record.
                        st.rebuilt.then(|| st.alloc.forget(&key)).flatten()
                    });
                    if let Some(ip) = freed {
                        info!(service = %format!("{}/{}", key.0, key.1), %ip, "LoadBalancer IP released");
                        c.wake_pending();
                    }
                    None
                }
                Ok(Event::Init | Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
        .boxed();
    let queue = futures::stream::select(events, woken.map(Ok).boxed());
    info!(pools = ?config.lb_pools, "lbipam controller running");
    crate::drain(
        "lbipam",
        applier(
            |svc, ctx| Box::pin(reconcile(svc, ctx)),
            error_policy,
            ctx,
            services,
            queue,
            ApplierConfig::default().concurrency(64),
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(n: &str) -> SvcKey {
        ("default".into(), n.into())
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the JSON inline as json! literals"
    )]
    fn svc(name: &str, spec: serde_json::Value, status: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn lb(name: &str) -> Service {
        svc(name, json!({"type": "LoadBalancer"}), json!({}))
    }

    #[test]
    fn allocates_distinct_addresses_until_exhausted() {
        // A /30 has two usable addresses (network and broadcast are skipped).
        let mut a = Allocator::new(vec!["172.30.0.0/30".parse().unwrap()]);
        let x = a.allocate(&key("a"), None).unwrap();
        let y = a.allocate(&key("b"), None).unwrap();
        assert_eq!(
            (x, y),
            ("172.30.0.1".parse().unwrap(), "172.30.0.2".parse().unwrap())
        );
        // Asking again gives the same address, not a second one.
        assert_eq!(a.allocate(&key("a"), None).unwrap(), x);
        assert_eq!(
            a.allocate(&key("c"), None),
            Err(AllocError::Exhausted("[172.30.0.0/30]".into()))
        );
        assert_eq!(a.release(&key("a")), Some(x));
        assert_eq!(a.allocate(&key("c"), None).unwrap(), x);
        assert_eq!(a.allocated(), 2);
    }

    #[test]
    fn several_pools_are_used_in_order() {
        let mut a = Allocator::new(vec![
            "172.30.0.0/31".parse().unwrap(),
            "172.31.0.0/24".parse().unwrap(),
        ]);
        let ips: Vec<Ipv4Addr> = (0..3)
            .map(|i| a.allocate(&key(&i.to_string()), None).unwrap())
            .collect();
        // A /31 has both addresses usable (RFC 3021).
        assert_eq!(
            ips,
            ["172.30.0.0", "172.30.0.1", "172.31.0.1"].map(|s| s.parse::<Ipv4Addr>().unwrap())
        );
    }

    #[test]
    fn explicit_addresses() {
        let mut a = Allocator::new(vec!["172.30.0.0/24".parse().unwrap()]);
        let want: Ipv4Addr = "172.30.0.77".parse().unwrap();
        assert_eq!(a.allocate(&key("a"), Some(want)), Ok(want));
        assert_eq!(
            a.allocate(&key("b"), Some(want)),
            Err(AllocError::InUse(want, "default".into(), "a".into()))
        );
        assert!(matches!(
            a.allocate(&key("b"), Some("10.0.0.1".parse().unwrap())),
            Err(AllocError::NotInPool(..))
        ));
        // The automatic allocation skips the taken one; and changing the request moves it.
        assert_eq!(
            a.allocate(&key("c"), None).unwrap(),
            "172.30.0.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            a.allocate(&key("a"), Some("172.30.0.78".parse().unwrap())),
            Ok("172.30.0.78".parse().unwrap())
        );
        assert_eq!(a.holder(want), None);
        // A reserved address is not handed out automatically, only to who asked for it.
        let mut a = Allocator::new(vec!["172.30.0.0/30".parse().unwrap()]);
        let first: Ipv4Addr = "172.30.0.1".parse().unwrap();
        a.allocate(&key("x"), Some(first)).unwrap();
        assert!(a.allocate(&key("wants"), Some(first)).is_err());
        a.reserve(&key("wants"), first);
        a.release(&key("x"));
        assert_eq!(
            a.allocate(&key("auto"), None).unwrap(),
            "172.30.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert!(matches!(
            a.allocate(&key("auto2"), None),
            Err(AllocError::Exhausted(_))
        ));
        assert_eq!(a.allocate(&key("wants"), Some(first)), Ok(first));
        a.unreserve(&key("wants"));
        assert_eq!(a.forget(&key("wants")), Some(first));
        assert_eq!(a.allocate(&key("auto2"), None), Ok(first));
    }

    #[test]
    fn decisions() {
        let mut a = Allocator::new(vec!["172.30.0.0/24".parse().unwrap()]);
        let d = decide(&mut a, &lb("a"));
        assert_eq!(
            d,
            Decision::Assign {
                ip: "172.30.0.1".parse().unwrap(),
                fresh: true
            }
        );
        // Once written, nothing to do.
        let written = svc(
            "a",
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {"ingress": [{"ip": "172.30.0.1", "ipMode": "VIP"}]}}),
        );
        assert_eq!(decide(&mut a, &written), Decision::Keep);
        // Another class: not ours, status untouched.
        let other = svc(
            "o",
            json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}),
            json!({}),
        );
        assert_eq!(decide(&mut a, &other), Decision::Release { clear: false });
        // Our class explicitly: served.
        let ours = svc(
            "k",
            json!({"type": "LoadBalancer", "loadBalancerClass": LB_CLASS}),
            json!({}),
        );
        assert!(matches!(decide(&mut a, &ours), Decision::Assign { .. }));
        // Type changed away: released and the status cleared.
        let was = svc(
            "a",
            json!({"type": "ClusterIP"}),
            json!({"loadBalancer": {"ingress": [{"ip": "172.30.0.1", "ipMode": "VIP"}]}}),
        );
        assert_eq!(decide(&mut a, &was), Decision::Release { clear: true });
        assert_eq!(a.holder("172.30.0.1".parse().unwrap()), None);
        // A requested address that is taken: pending, with the reason.
        let req = svc(
            "r",
            json!({"type": "LoadBalancer", "loadBalancerIP": "172.30.0.2"}),
            json!({}),
        );
        let Decision::Pending { why, clear } = decide(&mut a, &req) else {
            panic!()
        };
        assert!(why.contains("in use by default/k"), "{why}");
        assert!(!clear, "nothing shown, nothing to clear");
        let bad = svc(
            "r",
            json!({"type": "LoadBalancer", "loadBalancerIP": "nope"}),
            json!({}),
        );
        assert!(matches!(decide(&mut a, &bad), Decision::Pending { .. }));
        // One that had an address asks for a taken one: its old address is free again and
        // comes off its status, so no two Services show it.
        let had = svc(
            "h",
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {"ingress": [{"ip": "172.30.0.1", "ipMode": "VIP"}]}}),
        );
        assert_eq!(decide(&mut a, &had), Decision::Keep);
        let mut moved = had.clone();
        moved.spec.as_mut().unwrap().load_balancer_ip = Some("172.30.0.2".into());
        let Decision::Pending { clear, .. } = decide(&mut a, &moved) else {
            panic!()
        };
        assert!(clear);
        assert_eq!(a.holder("172.30.0.1".parse().unwrap()), None);
    }

    #[test]
    fn rebuild_keeps_what_the_status_shows() {
        let shown = |name: &str, ip: &str, created: &str| {
            let mut s = svc(
                name,
                json!({"type": "LoadBalancer"}),
                json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}),
            );
            s.metadata.creation_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()),
            );
            Arc::new(s)
        };
        let mut st = State {
            alloc: Allocator::new(vec!["172.30.0.0/24".parse().unwrap()]),
            rebuilt: false,
            pending: BTreeMap::new(),
        };
        let old = shown("old", "172.30.0.1", "2024-01-01T00:00:00Z");
        let dup = shown("dup", "172.30.0.1", "2024-01-02T00:00:00Z");
        let other = shown("x", "172.30.0.2", "2024-01-01T00:00:00Z");
        rebuild(&mut st, &[dup.clone(), old.clone(), other]);
        assert!(st.rebuilt);
        assert_eq!(
            st.alloc.holder("172.30.0.1".parse().unwrap()),
            Some(&key("old"))
        );
        // A new Service does not get an address that is shown already.
        let Decision::Assign { ip, .. } = decide(&mut st.alloc, &lb("new")) else {
            panic!()
        };
        assert_eq!(ip, "172.30.0.3".parse::<Ipv4Addr>().unwrap());
        // The duplicate is moved to a free address.
        let Decision::Assign { ip, fresh } = decide(&mut st.alloc, &dup) else {
            panic!()
        };
        assert_eq!((ip, fresh), ("172.30.0.4".parse().unwrap(), true));
        assert_eq!(decide(&mut st.alloc, &old), Decision::Keep);
    }
}
