//! EndpointSlice and Endpoints controller: for each Service with a selector, slices of at
//! most 100 endpoints (discovery.k8s.io/v1, IPv4) and the legacy core/v1 Endpoints object,
//! rewritten within milliseconds of a pod change (no batching), and only the slices that
//! changed. The `default/kubernetes` Service points at the API server.
//!
//! Built on kube-runtime's `applier` rather than `Controller` so that the process' pod watch
//! both fills the shared pod cache and triggers the Services (a second watch could trigger a
//! reconcile before the cache has the change, and the reconcile would miss it).

mod desired;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt as _, channel::mpsc, stream::BoxStream};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        core::v1::{Endpoints, Service, ServicePort, ServiceSpec},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        WatchStreamExt as _, applier,
        controller::{Action, Config as ApplierConfig},
        reflector::{self, ObjectRef, Store},
        watcher::{self, Event},
    },
};
use tracing::{debug, info, warn};

use desired::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};

use crate::{
    Config, SyncError as Error, api_err as kube_err, drop_managed_fields,
    podcache::{self, CachedPod, PodCache},
};

type SvcKey = (String, String);

/// What this controller last wrote for one Service. Reconciles of one Service never run
/// concurrently, so this is exact for our own writes; the caches may lag behind it.
#[derive(Default)]
struct Written {
    slices: BTreeMap<String, Arc<EndpointSlice>>,
    /// Slices we deleted that the cache may still show.
    deleted: BTreeSet<String>,
    endpoints: Option<Arc<Endpoints>>,
    /// Pods this Service's slices hold (to trigger it when they change or go).
    pods: BTreeSet<Arc<str>>,
}

/// A pod's (namespace, name), sharing the cache's strings.
type PodKey = (Arc<str>, Arc<str>);

struct Ctx {
    client: Client,
    config: Arc<Config>,
    services: Store<Service>,
    pods: PodCache,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    written: Mutex<HashMap<SvcKey, Written>>,
    /// Pod → names of the Services whose slices hold it (usually one).
    members: Mutex<HashMap<PodKey, Vec<Arc<str>>>>,
}

fn rv(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Ctx {
    fn written<T>(&self, f: impl FnOnce(&mut HashMap<SvcKey, Written>) -> T) -> T {
        f(&mut self.written.lock().expect("written lock"))
    }

    /// The Service's slices as they are now: the cache, overridden by our newer writes.
    fn current_slices(&self, key: &SvcKey) -> Vec<Arc<EndpointSlice>> {
        let cached = self.slices.state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(key.0.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&key.1)
                && s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        });
        self.written(|w| {
            let w = w.entry(key.clone()).or_default();
            let mut out: BTreeMap<String, Arc<EndpointSlice>> = BTreeMap::new();
            let in_cache: BTreeSet<String> = cached.iter().map(|s| s.name_any()).collect();
            w.deleted.retain(|n| in_cache.contains(n));
            for s in cached {
                let n = s.name_any();
                if w.deleted.contains(&n) {
                    continue;
                }
                match w.slices.get(&n) {
                    Some(ours) if rv(&ours.metadata) >= rv(&s.metadata) => {}
                    _ => {
                        out.insert(n, s);
                    }
                }
            }
            for (n, s) in &w.slices {
                out.entry(n.clone()).or_insert_with(|| Arc::clone(s));
            }
            out.into_values().collect()
        })
    }

    fn current_endpoints(&self, key: &SvcKey) -> Option<Arc<Endpoints>> {
        let cached = self.endpoints.get(&ObjectRef::new(&key.1).within(&key.0));
        let ours = self.written(|w| w.get(key).and_then(|w| w.endpoints.clone()));
        match (cached, ours) {
            (Some(c), Some(o)) if rv(&c.metadata) > rv(&o.metadata) => Some(c),
            (c, o) => o.or(c),
        }
    }

    /// Records which pods `svc` holds now, so their next change triggers it.
    fn set_members(&self, key: &SvcKey, pods: &BTreeSet<Arc<str>>) {
        let old = self.written(|w| {
            std::mem::replace(&mut w.entry(key.clone()).or_default().pods, pods.clone())
        });
        if old == *pods {
            return;
        }
        let ns: Arc<str> = key.0.as_str().into();
        let svc: Arc<str> = key.1.as_str().into();
        let mut m = self.members.lock().expect("members lock");
        for gone in old.difference(pods) {
            let k = (Arc::clone(&ns), Arc::clone(gone));
            if let Some(services) = m.get_mut(&k) {
                services.retain(|s| *s != svc);
                if services.is_empty() {
                    m.remove(&k);
                }
            }
        }
        for new in pods.difference(&old) {
            let services = m.entry((Arc::clone(&ns), Arc::clone(new))).or_default();
            if !services.contains(&svc) {
                services.push(Arc::clone(&svc));
            }
        }
    }

    /// Services a pod change concerns: those selecting it now and those holding it.
    fn services_of(&self, pod: &CachedPod) -> Vec<ObjectRef<Service>> {
        let ns = &*pod.namespace;
        let mut names: BTreeSet<String> = self
            .members
            .lock()
            .expect("members lock")
            .get(&(Arc::clone(&pod.namespace), Arc::clone(&pod.name)))
            .into_iter()
            .flatten()
            .map(std::string::ToString::to_string)
            .collect();
        for svc in self.services.state() {
            if svc.metadata.namespace.as_deref() == Some(ns)
                && desired::selects(
                    svc.spec.as_ref().and_then(|s| s.selector.as_ref()),
                    &pod.labels,
                )
            {
                names.insert(svc.name_any());
            }
        }
        names
            .into_iter()
            .map(|n| ObjectRef::new(&n).within(ns))
            .collect()
    }

    fn forget(&self, key: &SvcKey) {
        self.set_members(key, &BTreeSet::new());
        self.written(|w| w.remove(key));
    }
}

/// Whether this Service is the API server's own, with an endpoint we were given.
fn apiserver_service(svc: &Service, config: &Config) -> Option<std::net::SocketAddrV4> {
    (svc.metadata.namespace.as_deref() == Some("default")
        && svc.metadata.name.as_deref() == Some("kubernetes"))
    .then_some(config.apiserver_endpoint)
    .flatten()
}

// === writes (one place): slices are created with generateName (which apply cannot do),
// then applied ===

enum Write<'a> {
    Create(&'a EndpointSlice),
    Replace(&'a EndpointSlice),
    Delete(&'a str),
}

async fn write_slice(
    api: &Api<EndpointSlice>,
    w: Write<'_>,
) -> Result<Option<EndpointSlice>, Error> {
    let pp = crate::post_params();
    match w {
        Write::Create(s) => api
            .create(&pp, s)
            .await
            .map(Some)
            .map_err(kube_err("creating an EndpointSlice")),
        Write::Replace(s) => {
            // Server-side apply of the whole slice: the controller owns every field it sets,
            // and fields someone else added (labels, annotations) are kept.
            let name = s.name_any();
            api.patch(&name, &apply_params(), &Patch::Apply(applied(s)))
                .await
                .map(Some)
                .map_err(kube_err(format!("updating EndpointSlice {name}")))
        }
        Write::Delete(name) => match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(kube_err(format!("deleting EndpointSlice {name}"))(e)),
        },
    }
}

async fn write_endpoints(api: &Api<Endpoints>, ep: &Endpoints) -> Result<Endpoints, Error> {
    // Apply creates it when absent; the name is the Service's, so there is no generateName.
    let name = ep.name_any();
    api.patch(&name, &apply_params(), &Patch::Apply(applied(ep)))
        .await
        .map_err(kube_err(format!("writing Endpoints {name}")))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(crate::FIELD_MANAGER).force()
}

/// The object as an apply configuration: no resourceVersion (ownership, not a version, keeps
/// the write safe) and no managedFields (the server refuses them in an apply).
fn applied<K: Clone + serde::Serialize>(obj: &K) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("uid");
        m.remove("creationTimestamp");
        m.remove("generation");
    }
    v
}

// === reconcile ===

#[tracing::instrument(skip_all, fields(service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())))]
async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await;
    ctx.slices.wait_until_ready().await?;
    ctx.endpoints.wait_until_ready().await?;
    let key: SvcKey = (svc.namespace().unwrap_or_default(), svc.name_any());
    let res = sync(&svc, &key, &ctx).await;
    if res.is_err() {
        // Our record may be wrong (someone else wrote or deleted): start from the caches.
        ctx.written(|w| {
            if let Some(w) = w.get_mut(&key) {
                w.slices.clear();
                w.endpoints = None;
            }
        });
    }
    res
}

async fn sync(svc: &Service, key: &SvcKey, ctx: &Ctx) -> Result<Action, Error> {
    let (wanted, members) = if let Some(addr) = apiserver_service(svc, &ctx.config) {
        (desired::wanted_for_apiserver(addr), BTreeSet::new())
    } else if desired::has_selector(svc) {
        let pods = ctx.pods.in_namespace(&key.0);
        let wanted = desired::wanted_for_pods(svc, pods.iter().map(AsRef::as_ref));
        let held: BTreeSet<&str> = wanted
            .iter()
            .filter_map(|w| w.endpoint.target_ref.as_ref()?.name.as_deref())
            .collect();
        let members = pods
            .iter()
            .filter(|p| held.contains(&*p.name))
            .map(|p| Arc::clone(&p.name))
            .collect();
        (wanted, members)
    } else {
        // Without a selector the endpoints are the user's; ours (if the selector was
        // removed) would be stale.
        let stale = ctx.current_slices(key);
        let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.0);
        for s in &stale {
            write_slice(&api, Write::Delete(&s.name_any())).await?;
        }
        ctx.forget(key);
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();

    let existing = ctx.current_slices(key);
    let plan = desired::plan_slices(svc, &wanted, existing.iter().map(AsRef::as_ref), now);
    if !plan.is_empty() {
        debug!(
            create = plan.create.len(),
            update = plan.update.len(),
            delete = plan.delete.len(),
            endpoints = wanted.len(),
            "writing EndpointSlices"
        );
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.0);
    // Create and update before deleting, so the Service never has fewer endpoints
    // than it should in between.
    for s in plan
        .create
        .iter()
        .map(Write::Create)
        .chain(plan.update.iter().map(Write::Replace))
    {
        if let Some(mut done) = write_slice(&api, s).await? {
            done.metadata.managed_fields = None;
            let n = done.name_any();
            ctx.written(|w| {
                let w = w.entry(key.clone()).or_default();
                w.deleted.remove(&n);
                w.slices.insert(n, Arc::new(done));
            });
        }
    }
    for n in &plan.delete {
        write_slice(&api, Write::Delete(n)).await?;
        ctx.written(|w| {
            let w = w.entry(key.clone()).or_default();
            w.slices.remove(n);
            w.deleted.insert(n.clone());
        });
    }
    ctx.set_members(key, &members);

    let cur = ctx.current_endpoints(key);
    if let Some(ep) = desired::endpoints_object(svc, &wanted, cur.as_deref(), now) {
        let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.0);
        let mut done = write_endpoints(&api, &ep).await?;
        done.metadata.managed_fields = None;
        ctx.written(|w| w.entry(key.clone()).or_default().endpoints = Some(Arc::new(done)));
    }
    Ok(Action::requeue(Duration::from_mins(5)))
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's Controller::run hands error_policy owned Arcs"
)]
fn error_policy(svc: Arc<Service>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(service = %svc.name_any(), error = %err, "endpoints sync failed, retrying");
    Action::requeue(Duration::from_millis(200))
}

// === wiring ===

/// Makes sure `default/kubernetes` exists and targets the API server's port.
async fn ensure_kubernetes_service(
    client: &Client,
    addr: std::net::SocketAddrV4,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let port = ServicePort {
        name: Some("https".into()),
        port: 443,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::Int(i32::from(addr.port()))),
        ..Default::default()
    };
    let pp = crate::post_params();
    match api
        .get_opt("kubernetes")
        .await
        .map_err(kube_err("reading default/kubernetes"))?
    {
        None => {
            let svc = Service {
                metadata: ObjectMeta {
                    name: Some("kubernetes".into()),
                    namespace: Some("default".into()),
                    labels: Some(BTreeMap::from([
                        ("component".into(), "apiserver".into()),
                        ("provider".into(), "kubernetes".into()),
                    ])),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    ports: Some(vec![port]),
                    ..Default::default()
                }),
                status: None,
            };
            match api.create(&pp, &svc).await {
                Ok(_) => info!(endpoint = %addr, "created Service default/kubernetes"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(kube_err("creating default/kubernetes")(e)),
            }
        }
        Some(mut svc) => {
            let spec = svc.spec.get_or_insert_default();
            let ok = spec.ports.as_deref().is_some_and(|p| {
                p.len() == 1 && p[0].port == 443 && p[0].target_port == port.target_port
            });
            if !ok || spec.selector.is_some() {
                spec.ports = Some(vec![port]);
                spec.selector = None;
                api.replace("kubernetes", &pp, &svc)
                    .await
                    .map_err(kube_err("updating default/kubernetes"))?;
            }
        }
    }
    Ok(())
}

/// The merged trigger stream the controller runs on.
type Queue = BoxStream<'static, Result<ObjectRef<Service>, watcher::Error>>;

pub async fn run(client: Client, config: Arc<Config>, pods: PodCache) -> crate::error::Result<()> {
    if let Some(addr) = config.apiserver_endpoint {
        // Retried: the Service is also reconciled by the loop below once it exists.
        let mut delay = Duration::from_millis(100);
        while let Err(e) = ensure_kubernetes_service(&client, addr).await {
            warn!(error = %e, "cannot write default/kubernetes yet");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (endpoints, ep_writer) = reflector::store::<Endpoints>();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config,
        services: services.clone(),
        pods,
        slices,
        endpoints,
        written: Mutex::default(),
        members: Mutex::default(),
    });

    let wc = watcher::Config::default;

    let c = Arc::clone(&ctx);
    let svc_events: Queue = watcher::watcher(Api::<Service>::all(client.clone()), wc())
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(svc_writer)
        .filter_map(move |ev| {
            let out = match ev {
                Ok(Event::Apply(s) | Event::InitApply(s)) => Some(Ok(ObjectRef::from_obj(&s))),
                Ok(Event::Delete(s)) => {
                    cleanup_deleted(&c, &s);
                    None
                }
                Ok(Event::Init | Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
        .boxed();

    let c = Arc::clone(&ctx);
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Service>>();
    ctx.pods.subscribe(move |change| {
        let refs = match change {
            podcache::Change::Applied {
                pod,
                relisted: false,
                ..
            }
            | podcache::Change::Deleted(pod) => c.services_of(pod),
            // A (re)list ends with `Relisted`: every Service takes another look then.
            podcache::Change::Applied { relisted: true, .. } => Vec::new(),
            podcache::Change::Relisted => c
                .services
                .state()
                .iter()
                .map(|s| ObjectRef::from_obj(&**s))
                .collect(),
        };
        for r in refs {
            let _ = tx.unbounded_send(r);
        }
    });
    let pod_events: Queue = rx.map(Ok).boxed();

    // Slices and Endpoints changed by someone else bring the Service back to its state;
    // the echo of our own write does not.
    let c = Arc::clone(&ctx);
    let slice_events: Queue = watcher::watcher(
        Api::<EndpointSlice>::all(client.clone()),
        wc().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .modify(drop_managed_fields)
    .reflect(slice_writer)
    .touched_objects()
    .filter_map(move |s| {
        let out = match s {
            Ok(s) => s.labels().get(SERVICE_NAME_LABEL).and_then(|svc| {
                let key = (s.namespace().unwrap_or_default(), svc.clone());
                let ours = c.written(|w| {
                    w.get(&key)
                        .and_then(|w| w.slices.get(&s.name_any()))
                        .is_some_and(|o| rv(&o.metadata) >= rv(&s.metadata))
                });
                (!ours).then(|| Ok(ObjectRef::new(&key.1).within(&key.0)))
            }),
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    })
    .boxed();

    let c = Arc::clone(&ctx);
    let ep_events: Queue = watcher::watcher(Api::<Endpoints>::all(client.clone()), wc())
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(ep_writer)
        .touched_objects()
        .filter_map(move |e| {
            let out = match e {
                Ok(e) => {
                    let key = (e.namespace().unwrap_or_default(), e.name_any());
                    let ours = c.written(|w| {
                        w.get(&key)
                            .and_then(|w| w.endpoints.as_ref())
                            .is_some_and(|o| rv(&o.metadata) >= rv(&e.metadata))
                    });
                    (!ours).then(|| Ok(ObjectRef::new(&key.1).within(&key.0)))
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
        .boxed();

    let queue = futures::stream::select_all([svc_events, pod_events, slice_events, ep_events]);
    info!("endpointslice controller running");
    crate::drain(
        "endpointslice",
        applier(
            |svc, ctx| Box::pin(reconcile(svc, ctx)),
            error_policy,
            Arc::clone(&ctx),
            services,
            queue,
            ApplierConfig::default().concurrency(32),
        ),
    )
    .await
}

/// A deleted Service: its slices go with it (owner references); its Endpoints we delete.
fn cleanup_deleted(ctx: &Arc<Ctx>, svc: &Service) {
    let key: SvcKey = (svc.namespace().unwrap_or_default(), svc.name_any());
    let ours = desired::has_selector(svc) || apiserver_service(svc, &ctx.config).is_some();
    ctx.forget(&key);
    if !ours {
        return;
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.0);
    tokio::spawn(async move {
        match api.delete(&key.1, &DeleteParams::default()).await {
            Ok(_) => debug!(service = %key.1, "deleted Endpoints"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(service = %key.1, error = %e, "cannot delete Endpoints"),
        }
    });
}
