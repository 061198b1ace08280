//! Planning and writing Services: full passes (at start and after a failed write) and
//! passes over the Services that changed.

use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::Service;
use kproxy::{
    metrics,
    model::{self, FrontendKey, SERVICE_PROXY_NAME_LABEL},
    names::{FrontendName, Names},
};
use kube::ResourceExt as _;

use super::{
    NodeProxy, RETRY_MAX, RETRY_MIN,
    claims::{Rank, kind_rank},
    names::NamesUpdate,
};

impl NodeProxy {
    /// Programs what changed, once every kind has been listed.
    pub(super) fn sync(&mut self) {
        if !self.cache.listed.iter().all(|l| *l) || self.retry_at.is_some() {
            return;
        }
        if self.full_pass {
            self.pass_all();
        } else if !self.dirty.is_empty() {
            self.pass_dirty();
        }
    }

    /// Every Service, then a sweep of what none claims.
    fn pass_all(&mut self) {
        let started = Instant::now();
        let mut keys: Vec<String> = self.cache.services.keys().cloned().collect();
        keys.sort();
        // Services gone since they were programmed (their frontends are still owned).
        keys.extend(
            std::mem::take(&mut self.dirty)
                .into_iter()
                .filter(|k| !self.cache.services.contains_key(k)),
        );
        // Every claim first, so who wins a contested frontend does not depend on the order
        // the Services are planned in (and an unchanged cluster writes nothing).
        let built: Vec<model::ServiceFrontends> = keys.iter().map(|k| self.build(k)).collect();
        let mut ops_total = 0;
        for (key, built) in keys.iter().zip(built) {
            match self.program(key, built) {
                Ok(n) => ops_total += n,
                Err(()) => return,
            }
        }
        // Claims changed by this pass marked Services that it planned anyway.
        for key in &keys {
            self.dirty.remove(key);
        }
        let ops = match self.syncer.sweep() {
            Ok(ops) => ops,
            Err(err) => {
                tracing::error!(%err, "cannot plan the sweep of unclaimed entries");
                Vec::new()
            }
        };
        if let Err(err) = self.dp.apply(&ops) {
            self.apply_failed(&err.to_string());
            return;
        }
        ops_total += ops.len();
        metrics::SYNC_OPS.inc_by(ops.len() as u64);
        self.full_pass = false;
        self.backoff = RETRY_MIN;
        let (services, took) = (keys.len(), started.elapsed());
        if self.initial_done {
            tracing::info!(
                services,
                map_ops = ops_total,
                ?took,
                "resync after a failed write done"
            );
        } else {
            // Tests and operators wait for this line: the node serves every Service.
            tracing::info!(services, map_ops = ops_total, ?took, "initial sync done");
        }
        self.initial_done = true;
        metrics::HEALTH.set_synced();
        let _ = self
            .names
            .send(NamesUpdate::Replace(Names::from_syncer(&self.syncer)));
        // Services waiting for a frontend another one gave up during the pass.
        if !self.dirty.is_empty() {
            self.pass_dirty();
        }
    }

    fn pass_dirty(&mut self) {
        let started = Instant::now();
        let mut services = 0;
        let mut ops_total = 0;
        // A Service that gave up frontends puts the Services waiting for one back in
        // `dirty`; a few rounds settle that (each round needs a release to add one).
        for _ in 0..8 {
            if self.dirty.is_empty() {
                break;
            }
            let keys = std::mem::take(&mut self.dirty);
            services += keys.len();
            for key in &keys {
                match self.sync_service(key) {
                    Ok(n) => ops_total += n,
                    Err(()) => return,
                }
            }
        }
        tracing::info!(
            services,
            map_ops = ops_total,
            took = ?started.elapsed(),
            "services synced"
        );
    }

    /// Plans and writes one Service. `Err` when the write failed: a full pass is then
    /// scheduled with back-off.
    fn sync_service(&mut self, key: &str) -> Result<usize, ()> {
        let built = self.build(key);
        self.program(key, built)
    }

    /// The Service's frontends as its objects say, and its claims on them updated.
    fn build(&mut self, key: &str) -> model::ServiceFrontends {
        let svc = self.cache.services.get(key);
        let built = match svc {
            Some(svc) => {
                if let Some(reason) = skip_reason(svc, self.proxy_name.as_deref()) {
                    tracing::info!(service = key, reason, "service not proxied");
                    model::ServiceFrontends::default()
                } else {
                    let slices = self.cache.slices_for(key);
                    model::build_service(svc, &slices, &self.node_ips, &self.local)
                }
            }
            None => model::ServiceFrontends::default(),
        };
        let mut built = built;
        if let Some(l2) = self.l2.as_mut() {
            l2.filter(key, &mut built);
        }
        let created = svc
            .and_then(|s| s.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        let claims: Vec<(FrontendKey, Rank)> = built
            .frontends
            .iter()
            .map(|(k, fe)| (*k, (kind_rank(fe.kind), created, key.to_string())))
            .collect();
        self.dirty.extend(self.claims.set(key, claims));
        built
    }

    /// Plans and writes what `build` gave, without the frontends another Service has
    /// precedence on.
    fn program(&mut self, key: &str, mut built: model::ServiceFrontends) -> Result<usize, ()> {
        let started = Instant::now();
        let health = built.health.take();
        let mut problems: Vec<(&'static str, String)> = std::mem::take(&mut built.problems)
            .into_iter()
            .map(|p| ("InvalidInput", p))
            .collect();
        built.frontends.retain(|frontend, _| match self.claims.winner(*frontend) {
            Some(winner) if winner != key => {
                problems.push((
                    "FrontendConflict",
                    format!("frontend {frontend} is already used by Service {winner}, not programmed"),
                ));
                false
            }
            _ => true,
        });
        let before: Vec<(FrontendKey, u16)> = self
            .syncer
            .owned(key)
            .filter_map(|k| Some((*k, self.syncer.revnat_id(k)?)))
            .collect();
        let (ops, released) = match self.syncer.plan_service(key, &built.frontends) {
            Ok(plan) => {
                // Conflicts here are a winner meeting a previous owner that has not given
                // the frontend up yet (it is re-planned in this pass): no Event.
                if plan.conflicts.is_empty() {
                    self.conflicted.remove(key);
                } else {
                    self.conflicted.insert(key.to_string());
                }
                for frontend in &plan.maglev_fallbacks {
                    problems.push((
                        "MaglevTableFull",
                        format!(
                            "no room for the Maglev table of frontend {frontend} (the datapath holds {} Maglev entries in all): new flows pick a random backend",
                            kproxy_common::MAGLEV_ENTRIES
                        ),
                    ));
                }
                if plan.maglev_fallbacks.is_empty() {
                    self.maglev_waiting.remove(key);
                } else {
                    self.maglev_waiting.insert(key.to_string());
                }
                if plan.maglev_freed {
                    // Table room came free: Services degraded to the random pick retry.
                    self.dirty
                        .extend(self.maglev_waiting.iter().filter(|s| *s != key).cloned());
                }
                (plan.ops, plan.released)
            }
            Err(err) => {
                // The syncer is unchanged: whatever this Service had stays programmed.
                problems.push((
                    "CapacityExceeded",
                    format!("cannot program this Service: {err}"),
                ));
                (Vec::new(), 0)
            }
        };
        if let Err(err) = self.dp.apply(&ops) {
            self.dirty.insert(key.to_string());
            self.apply_failed(&err.to_string());
            return Err(());
        }
        self.set_health_check(key, health);
        let n = ops.len();
        metrics::SYNC_OPS.inc_by(n as u64);
        metrics::observe_sync(started.elapsed());
        if let Some(times) = self.triggers.remove(key) {
            let now = SystemTime::now();
            for t in times {
                if let Ok(d) = now.duration_since(t) {
                    metrics::NETWORK_PROGRAMMING.observe(d.as_secs_f64());
                }
            }
        }
        if released > 0 && !self.conflicted.is_empty() {
            // Someone may be waiting for what this Service gave up.
            self.dirty.extend(self.conflicted.iter().cloned());
        }
        tracing::debug!(service = key, map_ops = n, "service synced");
        self.names_changed(key, before);
        self.report(key, problems);
        Ok(n)
    }

    /// Serves (or stops serving) the Service's healthCheckNodePort.
    fn set_health_check(&mut self, key: &str, check: Option<(u16, model::HealthCheck)>) {
        let changed = match check {
            Some(check) => self.health_checks.insert(key.to_string(), check.clone()) != Some(check),
            None => self.health_checks.remove(key).is_some(),
        };
        if changed {
            let by_port = self.health_checks.values().cloned().collect();
            self.health.update(&by_port, &self.node_ips);
        }
    }

    fn apply_failed(&mut self, err: &str) {
        // Some writes may have landed: the maps are the truth. Rebuild from them and do a
        // full pass after a back-off (a full pass re-plans every Service and sweeps).
        tracing::error!(%err, retry_in = ?self.backoff, "writing the maps failed; retrying");
        metrics::MANIFEST_ERRORS.inc();
        match self.dp.restore_syncer() {
            Ok(syncer) => self.syncer = syncer,
            Err(err) => tracing::error!(%err, "cannot read the maps back"),
        }
        self.full_pass = true;
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// Sends the names of `service`'s frontends after its plan: those it had (`before`,
    /// with their revnat ids) and no longer has are gone, the others are (re)named. A
    /// plan changes no other Service's names.
    fn names_changed(&self, service: &str, before: Vec<(FrontendKey, u16)>) {
        let mut changes: Vec<(u16, Option<FrontendName>)> = before
            .into_iter()
            .filter(|(key, id)| self.syncer.revnat_id(key) != Some(*id))
            .map(|(_, id)| (id, None))
            .collect();
        for key in self.syncer.owned(service) {
            if let Some(id) = self.syncer.revnat_id(key) {
                changes.push((id, Names::frontend(&self.syncer, key)));
            }
        }
        if !changes.is_empty() {
            let _ = self.names.send(NamesUpdate::Changes(changes));
        }
    }
}

/// Whether a proxy named `proxy_name` serves `svc`: kube-proxy's rule for the
/// service-proxy-name label (absent: every default proxy; present: only that proxy).
fn serves(svc: &Service, proxy_name: Option<&str>) -> bool {
    match svc.labels().get(SERVICE_PROXY_NAME_LABEL) {
        None => true,
        Some(name) => proxy_name == Some(name.as_str()),
    }
}

/// Why kproxy leaves `svc` alone, if it does.
pub(super) fn skip_reason(svc: &Service, proxy_name: Option<&str>) -> Option<&'static str> {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        Some("ExternalName")
    } else if spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        Some("headless")
    } else if !serves(svc, proxy_name) {
        Some("service-proxy-name of another proxy")
    } else {
        None
    }
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labelled(value: Option<&str>) -> Service {
        let mut svc = Service::default();
        svc.metadata.labels =
            value.map(|v| BTreeMap::from([(SERVICE_PROXY_NAME_LABEL.to_string(), v.to_string())]));
        svc
    }
    #[test]
    fn service_proxy_name_rule() {
        assert!(serves(&labelled(None), None));
        assert!(serves(&labelled(None), Some("kproxy")));
        assert!(!serves(&labelled(Some("other")), None));
        assert!(!serves(&labelled(Some("other")), Some("kproxy")));
        assert!(serves(&labelled(Some("kproxy")), Some("kproxy")));
    }
}
