//! Which node announces a Service's LoadBalancer IPs by ARP when several nodes could: one at
//! a time, the holder of the Service's Lease (`kproxy-l2-<namespace>.<name>` in
//! kube-system), as Cilium's L2 announcements do.
//!
//! - Candidates are the nodes whose kproxy would announce the Service (with
//!   `externalTrafficPolicy: Local`, only nodes with a local endpoint); the node loop says
//!   which Services it is a candidate for, this task says which it holds.
//! - The holder renews every quarter of the lease duration. Another candidate takes over
//!   once it has seen no renewal for a whole duration, timed on its own clock from when it
//!   saw the record change (as client-go's leader election does), so node clocks need not
//!   agree. Writes carry the resourceVersion read, so two candidates never both win.
//! - A holder that cannot renew for a whole duration stops announcing by itself: a node cut
//!   off from the API server does not keep answering ARP beside the new holder.
//! - A new holder sends gratuitous ARP for the addresses, so clients move at once instead
//!   of probing the old node's MAC first. A lease this node stops being a candidate for is
//!   released at once; [`Election::stop`] releases them all (kproxy node does not: its
//!   pinned datapath keeps announcing across a restart).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

/// Where the leases live.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Every announcement lease's name starts so (the node authorizer lets nodes write these).
pub const LEASE_PREFIX: &str = "kproxy-l2-";
/// The label that marks announcement leases (one list finds them all).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kproxy-l2-announcer");

/// The Services this node is a candidate for (`namespace/name`), each with the addresses
/// it would announce.
pub type Candidacy = BTreeMap<String, Vec<Ipv4Addr>>;

/// A Service whose lease this node won or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub service: String,
    pub held: bool,
}

/// The lease name of a Service `namespace/name`.
#[must_use]
pub fn lease_name(service: &str) -> String {
    format!("{LEASE_PREFIX}{}", service.replacen('/', ".", 1))
}

/// What one candidate does about one lease on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No lease yet.
    Create,
    /// Ours: write a new renewTime.
    Renew,
    /// Ours and renewed recently enough.
    Keep,
    /// Released, or its holder stopped renewing: make it ours.
    TakeOver,
    /// Another candidate holds it.
    Wait,
}

/// The decision for one lease: `holder` as read, `unchanged_for` how long this node has
/// seen the record without a change, `since_renew` how long since this node's last
/// successful write of it.
#[must_use]
pub fn decide(
    me: &str,
    holder: Option<Option<&str>>,
    unchanged_for: Duration,
    since_renew: Option<Duration>,
    duration: Duration,
) -> Action {
    match holder {
        None => Action::Create,
        Some(Some(h)) if h == me => match since_renew {
            Some(d) if d < duration / 4 => Action::Keep,
            _ => Action::Renew,
        },
        Some(None | Some("")) => Action::TakeOver,
        Some(Some(_)) if unchanged_for >= duration => Action::TakeOver,
        Some(Some(_)) => Action::Wait,
    }
}

/// The election task's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name: the holder identity.
    pub identity: String,
    /// The lease duration (whole seconds, at least one).
    pub duration: Duration,
    /// The uplink the gratuitous ARP goes out of (`None`: none is sent).
    pub uplink: Option<String>,
}

/// The running election: tell it the candidacy, hear the changes.
pub struct Election {
    pub wants: watch::Sender<Candidacy>,
    pub changes: mpsc::UnboundedReceiver<Change>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Ends the task without releasing anything, as a crash would.
    pub fn abort(self) {
        self.task.abort();
    }

    /// Releases the leases held and ends the task (bounded: two seconds at most).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

/// The Services whose leases name `identity` as holder now (read once at start, so a
/// restarted kproxy keeps announcing what it held instead of pausing until it renews).
pub async fn held_at_start(client: &Client, identity: &str) -> BTreeSet<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let Ok(list) = api.list(&selector()).await else {
        return BTreeSet::new();
    };
    list.items
        .iter()
        .filter(|l| holder(l) == Some(identity))
        .filter_map(service_of)
        .collect()
}

/// Starts the election; `held` is what [`held_at_start`] found.
#[must_use]
pub fn spawn(client: Client, config: Config, held: BTreeSet<String>) -> Election {
    let (wants, wants_rx) = watch::channel(Candidacy::new());
    let (tx, changes) = mpsc::unbounded_channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let mut state = State {
        api: Api::namespaced(client, LEASE_NAMESPACE),
        config,
        seen: HashMap::new(),
        renewed: held.iter().map(|s| (s.clone(), Instant::now())).collect(),
        held,
        tx,
    };
    let task = tokio::spawn(async move { state.run(wants_rx, stop_rx).await });
    Election {
        wants,
        changes,
        stop: Some(stop),
        task,
    }
}

fn selector() -> ListParams {
    ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// The Service a lease stands for (kept in an annotation: names do not round-trip).
fn service_of(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(SERVICE_ANNOTATION)
        .cloned()
}

const SERVICE_ANNOTATION: &str = "kproxy.io/service";

/// What tells a live holder from a dead one: the holder and its last renewTime.
type Record = (Option<String>, Option<String>);

struct State {
    api: Api<Lease>,
    config: Config,
    /// Per lease: the record last read and when it was first read so.
    seen: HashMap<String, (Record, Instant)>,
    /// Per Service: when this node last wrote its lease successfully.
    renewed: HashMap<String, Instant>,
    held: BTreeSet<String>,
    tx: mpsc::UnboundedSender<Change>,
}

impl State {
    async fn run(
        &mut self,
        mut wants: watch::Receiver<Candidacy>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let tick = (self.config.duration / 8).max(Duration::from_millis(100));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = interval.tick() => {}
                r = wants.changed() => if r.is_err() { break },
            }
            let candidacy = wants.borrow_and_update().clone();
            self.round(&candidacy).await;
        }
        self.release_all().await;
    }

    /// One look at every lease: create, renew, take over or wait; release what is no longer
    /// wanted; drop what could not be renewed in time.
    async fn round(&mut self, candidacy: &Candidacy) {
        if candidacy.is_empty() && self.held.is_empty() {
            // Nothing to win, renew or release: no read (every node would otherwise list the
            // leases 8 times a duration).
            return;
        }
        let leases: HashMap<String, Lease> = match self.api.list(&selector()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter_map(|l| Some((l.metadata.name.clone()?, l)))
                .collect(),
            Err(err) => {
                tracing::debug!(%err, "listing the L2 announcement leases");
                self.expire_unrenewed();
                return;
            }
        };
        let now = Instant::now();
        for (service, addrs) in candidacy {
            let name = lease_name(service);
            let lease = leases.get(&name);
            let record = lease.map(|l| {
                let spec = l.spec.as_ref();
                (
                    spec.and_then(|s| s.holder_identity.clone()),
                    spec.and_then(|s| s.renew_time.as_ref())
                        .map(|t| t.0.to_string()),
                )
            });
            let unchanged_for = match (&record, self.seen.get(&name)) {
                (Some(r), Some((old, at))) if old == r => now.duration_since(*at),
                _ => {
                    if let Some(r) = &record {
                        self.seen.insert(name.clone(), (r.clone(), now));
                    }
                    Duration::ZERO
                }
            };
            let action = decide(
                &self.config.identity,
                record.as_ref().map(|(h, _)| h.as_deref()),
                unchanged_for,
                self.renewed.get(service).map(|t| now.duration_since(*t)),
                self.config.duration,
            );
            let wrote = match action {
                Action::Keep | Action::Wait => continue,
                Action::Create => {
                    self.api
                        .create(&PostParams::default(), &self.new_lease(service))
                        .await
                }
                Action::Renew | Action::TakeOver => {
                    let Some(lease) = lease else { continue };
                    let next = self.written(lease, action == Action::TakeOver);
                    self.api.replace(&name, &PostParams::default(), &next).await
                }
            };
            match wrote {
                Ok(_) => {
                    self.renewed.insert(service.clone(), Instant::now());
                    if self.held.insert(service.clone()) {
                        tracing::info!(service, lease = name, ?action, "L2 announcement lease won");
                        if let Some(uplink) = &self.config.uplink
                            && let Err(err) = crate::garp::announce(uplink, addrs)
                        {
                            tracing::warn!(%err, service, "gratuitous ARP not sent");
                        }
                        let _ = self.tx.send(Change {
                            service: service.clone(),
                            held: true,
                        });
                    }
                }
                // Lost a race (409) or the server is away: the next round reads again.
                Err(err) => tracing::debug!(%err, service, ?action, "L2 lease write failed"),
            }
        }
        let unwanted: Vec<String> = self
            .held
            .iter()
            .filter(|s| !candidacy.contains_key(*s))
            .cloned()
            .collect();
        for service in unwanted {
            if let Some(lease) = leases.get(&lease_name(&service)) {
                self.release(lease).await;
            }
            self.lose(&service);
        }
        self.expire_unrenewed();
    }

    /// Held leases not renewed for a whole duration are lost: another node may hold them.
    fn expire_unrenewed(&mut self) {
        let now = Instant::now();
        let stale: Vec<String> = self
            .held
            .iter()
            .filter(|s| {
                self.renewed
                    .get(*s)
                    .is_none_or(|t| now.duration_since(*t) >= self.config.duration)
            })
            .cloned()
            .collect();
        for service in stale {
            tracing::warn!(
                service,
                "L2 announcement lease not renewed in time: not announcing"
            );
            self.lose(&service);
        }
    }

    fn lose(&mut self, service: &str) {
        self.renewed.remove(service);
        if self.held.remove(service) {
            let _ = self.tx.send(Change {
                service: service.to_string(),
                held: false,
            });
        }
    }

    fn new_lease(&self, service: &str) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(service)),
                namespace: Some(LEASE_NAMESPACE.into()),
                labels: Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into()),
                annotations: Some([(SERVICE_ANNOTATION.into(), service.into())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.duration_secs()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// `lease` renewed by this node, or taken over (a new acquireTime, one more transition).
    fn written(&self, lease: &Lease, take_over: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut next = lease.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_secs());
        spec.renew_time = Some(now.clone());
        if take_over {
            spec.acquire_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Gives a held lease up at once (no holder), so another candidate need not wait.
    async fn release(&self, lease: &Lease) {
        if holder(lease) != Some(self.config.identity.as_str()) {
            return;
        }
        let Some(name) = lease.metadata.name.as_deref() else {
            return;
        };
        let mut next = lease.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.holder_identity = None;
        }
        if let Err(err) = self.api.replace(name, &PostParams::default(), &next).await {
            tracing::debug!(%err, lease = name, "releasing the L2 lease");
        }
    }

    async fn release_all(&mut self) {
        let Ok(list) = self.api.list(&selector()).await else {
            return;
        };
        for lease in &list.items {
            if service_of(lease).is_some_and(|s| self.held.contains(&s)) {
                self.release(lease).await;
            }
        }
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(2);

    #[test]
    fn decisions() {
        let ms = Duration::from_millis;
        assert_eq!(decide("a", None, ms(0), None, D), Action::Create);
        // Ours: renewed every quarter duration.
        assert_eq!(
            decide("a", Some(Some("a")), ms(0), Some(ms(100)), D),
            Action::Keep
        );
        assert_eq!(
            decide("a", Some(Some("a")), ms(0), Some(ms(500)), D),
            Action::Renew
        );
        // Ours from before a restart: renewed at once.
        assert_eq!(decide("a", Some(Some("a")), ms(0), None, D), Action::Renew);
        // Released.
        assert_eq!(decide("a", Some(None), ms(0), None, D), Action::TakeOver);
        assert_eq!(
            decide("a", Some(Some("")), ms(0), None, D),
            Action::TakeOver
        );
        // Another's: wait while it renews, take over after a whole silent duration.
        assert_eq!(
            decide("a", Some(Some("b")), ms(1999), None, D),
            Action::Wait
        );
        assert_eq!(
            decide("a", Some(Some("b")), ms(2000), None, D),
            Action::TakeOver
        );
    }

    #[test]
    fn lease_names() {
        assert_eq!(lease_name("default/web"), "kproxy-l2-default.web");
        // Neither namespaces nor Service names have dots: no two Services share a lease.
        assert_ne!(lease_name("a-b/c"), lease_name("a/b-c"));
    }
}
