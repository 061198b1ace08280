//! Which Service gets a frontend several Services claim.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::jiff;
use kproxy::model::{FrontendKey, FrontendKind};

/// Precedence of a claim on a frontend, lowest first: the kind (a ClusterIP is allocated
/// by the API server, so it beats an address a user wrote), then the older Service, then
/// namespace/name. A total order, so the winner does not depend on the order events arrive
/// in, and a restart picks the same one.
pub(super) type Rank = (u8, Option<jiff::Timestamp>, String);

pub(super) const fn kind_rank(kind: FrontendKind) -> u8 {
    match kind {
        FrontendKind::ClusterIp => 0,
        FrontendKind::LoadBalancerIp => 1,
        FrontendKind::NodePort => 2,
        FrontendKind::ExternalIp => 3,
    }
}

/// Which Services claim which frontends.
#[derive(Default)]
pub(super) struct Claims {
    /// Frontend → its claims (the rank ends with the Service's key).
    by_frontend: HashMap<FrontendKey, BTreeSet<Rank>>,
    by_service: HashMap<String, Vec<(FrontendKey, Rank)>>,
}

impl Claims {
    /// The Service that gets `frontend`.
    pub(super) fn winner(&self, frontend: FrontendKey) -> Option<&str> {
        self.by_frontend
            .get(&frontend)
            .and_then(BTreeSet::first)
            .map(|rank| rank.2.as_str())
    }

    /// Replaces the claims of `service`; returns the other Services that won or lost a
    /// frontend by it (they must be re-planned).
    pub(super) fn set(
        &mut self,
        service: &str,
        claims: Vec<(FrontendKey, Rank)>,
    ) -> BTreeSet<String> {
        let old = self.by_service.remove(service).unwrap_or_default();
        let mut touched: BTreeSet<FrontendKey> = old.iter().map(|(k, _)| *k).collect();
        touched.extend(claims.iter().map(|(k, _)| *k));
        let before: Vec<Option<String>> = touched
            .iter()
            .map(|k| self.winner(*k).map(str::to_string))
            .collect();
        for (key, rank) in old {
            if let Some(set) = self.by_frontend.get_mut(&key) {
                set.remove(&rank);
                if set.is_empty() {
                    self.by_frontend.remove(&key);
                }
            }
        }
        for (key, rank) in &claims {
            self.by_frontend
                .entry(*key)
                .or_default()
                .insert(rank.clone());
        }
        if !claims.is_empty() {
            self.by_service.insert(service.to_string(), claims);
        }
        let mut others = BTreeSet::new();
        for (key, was) in touched.iter().zip(before) {
            let now = self.winner(*key).map(str::to_string);
            if now != was {
                others.extend([was, now].into_iter().flatten().filter(|s| s != service));
            }
        }
        others
    }
}
#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use kproxy::model;

    use super::*;

    #[test]
    fn contested_frontend_goes_to_the_clusterip_then_the_oldest() {
        let vip = FrontendKey {
            addr: Ipv4Addr::new(10, 96, 0, 1),
            port: 80,
            proto: model::Proto::Tcp,
        };
        let t = |s: i64| Some(jiff::Timestamp::from_second(s).unwrap());
        let mut claims = Claims::default();
        // An externalIP claim arrives first and wins while alone.
        assert!(
            claims
                .set("ns/a", vec![(vip, (3, t(1), "ns/a".into()))])
                .is_empty()
        );
        assert_eq!(claims.winner(vip), Some("ns/a"));
        // A ClusterIP claim beats it even though younger; a wins no more: re-plan it.
        let others = claims.set("ns/z", vec![(vip, (0, t(9), "ns/z".into()))]);
        assert_eq!(others, BTreeSet::from(["ns/a".to_string()]));
        assert_eq!(claims.winner(vip), Some("ns/z"));
        // Among equal kinds the older Service wins, whatever its name.
        claims.set("ns/b", vec![(vip, (0, t(5), "ns/b".into()))]);
        assert_eq!(claims.winner(vip), Some("ns/b"));
        // The winner gone: the next in rank gets it and is told.
        let others = claims.set("ns/b", Vec::new());
        assert_eq!(others, BTreeSet::from(["ns/z".to_string()]));
        assert_eq!(claims.winner(vip), Some("ns/z"));
        claims.set("ns/z", Vec::new());
        claims.set("ns/a", Vec::new());
        assert!(claims.by_frontend.is_empty() && claims.by_service.is_empty());
    }
}
