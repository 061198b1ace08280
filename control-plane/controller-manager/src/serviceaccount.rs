//! ServiceAccounts controller, as kube-controller-manager's `serviceaccount-controller`: every
//! namespace that is not terminating has a ServiceAccount `default`, created when the
//! namespace appears and again whenever it is deleted. (No token Secrets: Kubernetes stopped
//! creating those in 1.24, and pods get no projected token here.)

use std::{convert::Infallible, sync::Arc, time::Duration};

use futures::{StreamExt as _, channel::mpsc};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, ResourceExt as _,
    api::PostParams,
    runtime::{
        controller::{self, Action, ReconcileRequest},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::{
    SyncError as Error, api_err, drop_managed_fields,
    replicaset::informer::{self, Change},
};

/// The account every namespace gets.
pub const DEFAULT: &str = "default";
const RESYNC: Duration = Duration::from_mins(5);

pub struct Ctx {
    client: kube::Client,
    accounts: Store<ServiceAccount>,
}

pub async fn run(client: kube::Client) -> crate::error::Result<()> {
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Namespace>>();
    let namespaces = informer::spawn(
        Api::<Namespace>::all(client.clone()),
        drop_managed_fields,
        {
            let tx = tx.clone();
            move |c: Change<'_, Namespace>| {
                if let Change::Applied { obj } = c {
                    let _ = tx.unbounded_send(ObjectRef::from_obj(obj));
                }
            }
        },
    );
    let accounts = informer::spawn(
        Api::<ServiceAccount>::all(client.clone()),
        drop_managed_fields,
        {
            let (tx, namespaces) = (tx.clone(), namespaces.clone());
            move |c: Change<'_, ServiceAccount>| match c {
                Change::Deleted(sa) if sa.name_any() == DEFAULT => {
                    if let Some(ns) = sa.namespace() {
                        let _ = tx.unbounded_send(ObjectRef::new(&ns));
                    }
                }
                // Accounts deleted while the watch was down: look at every namespace.
                Change::Relisted => {
                    for ns in namespaces.state() {
                        let _ = tx.unbounded_send(ObjectRef::from_obj(&*ns));
                    }
                }
                _ => {}
            }
        },
    );
    // Before the first sync: an account missing from a partial cache would be created again.
    accounts
        .wait_until_ready()
        .await
        .map_err(|_| crate::error::Error::CacheStopped("serviceaccount"))?;
    info!("serviceaccount controller started");
    let ctx = Arc::new(Ctx { client, accounts });
    let queue = rx.map(|r| Ok::<_, Infallible>(ReconcileRequest::from(r)));
    crate::drain(
        "serviceaccount",
        controller::applier(
            |ns, ctx| Box::pin(reconcile(ns, ctx)),
            error_policy,
            ctx,
            namespaces,
            queue,
            controller::Config::default(),
        ),
    )
    .await
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "kube-runtime's applier hands error_policy owned Arcs"
)]
fn error_policy(ns: Arc<Namespace>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(namespace = %ns.name_any(), error = %error, "service account sync failed");
    Action::requeue(Duration::from_secs(1))
}

/// Whether a namespace should have its `default` account: it exists and is not going away.
fn wants_account(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

#[instrument(skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.name_any();
    if !wants_account(&ns)
        || ctx
            .accounts
            .get(&ObjectRef::new(DEFAULT).within(&name))
            .is_some()
    {
        return Ok(Action::requeue(RESYNC));
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": DEFAULT, "namespace": name}
    }))
    .expect("a valid ServiceAccount");
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => info!("created the default service account"),
        // Already there (the cache is behind), or the namespace started terminating.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
        Err(e) => return Err(api_err("creating the default service account")(e)),
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_namespaces_get_no_account() {
        let ns = |v| serde_json::from_value::<Namespace>(v).unwrap();
        assert!(wants_account(&ns(json!({"metadata": {"name": "a"}}))));
        assert!(!wants_account(&ns(
            json!({"metadata": {"name": "a"}, "status": {"phase": "Terminating"}})
        )));
        assert!(!wants_account(&ns(json!({
            "metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}
        }))));
    }
}
