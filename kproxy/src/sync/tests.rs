use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

use kproxy_common::{
    AffinityMatchKey, Backend, MAGLEV_CLASS_SHIFT, MAX_BACKENDS, MAX_SERVICES, MaglevBucket,
    RevNat, ServiceKey, ServiceValue, backend_state, maglev_size, svc_flags, vip_flags,
};

use super::*;
use crate::model::{
    BackendAddr, BackendState, DesiredState, Frontend, FrontendKey, FrontendKind, Proto,
};

fn fk(last: u8, port: u16) -> FrontendKey {
    FrontendKey {
        addr: Ipv4Addr::new(10, 96, 0, last),
        port,
        proto: Proto::Tcp,
    }
}

fn be(last: u8) -> BackendAddr {
    BackendAddr {
        addr: Ipv4Addr::new(10, 244, 0, last),
        port: 8080,
        proto: Proto::Tcp,
    }
}

const A: BackendState = BackendState::Active;
const T: BackendState = BackendState::Terminating;

fn frontend(backends: &[(BackendAddr, BackendState)]) -> Frontend {
    Frontend {
        service: "default/test".into(),
        kind: FrontendKind::ClusterIp,
        flags: 0,
        affinity_timeout_s: 0,
        backends: backends.iter().copied().collect(),
        algorithm: None,
        source_ranges: Vec::new(),
    }
}

fn desired(frontends: Vec<(FrontendKey, Frontend)>) -> DesiredState {
    DesiredState {
        frontends: frontends.into_iter().collect(),
        ..DesiredState::default()
    }
}

/// The maps as the datapath sees them. Every op is checked against the readers'
/// invariants, so each test also proves its plan's ordering safe.
#[derive(Default)]
struct FakeMaps {
    services: HashMap<ServiceKey, ServiceValue>,
    backends: BTreeMap<u32, Backend>,
    revnats: BTreeMap<u32, RevNat>,
    l2: BTreeSet<u32>,
    vips: BTreeMap<u32, u32>,
    maglev: HashMap<u32, MaglevBucket>,
    members: BTreeSet<AffinityMatchKey>,
    src_ranges: BTreeSet<(u32, kproxy_common::SrcRangeKey)>,
    /// Published tables (first entry, size) whose ids were checked against the backends
    /// since the last backend deletion: tables are big, and only a backend deletion or a
    /// write into a published table (never allowed) can break one.
    checked_tables: std::cell::RefCell<BTreeSet<(u32, u32)>>,
}

impl FakeMaps {
    fn apply(&mut self, ops: &[MapOp]) {
        for (i, op) in ops.iter().enumerate() {
            match *op {
                MapOp::PutBackend { id, backend } => {
                    assert!(id != 0 && id < MAX_BACKENDS);
                    self.backends.insert(id, backend);
                }
                MapOp::PutRevNat { id, revnat } => {
                    assert!(id != 0);
                    self.revnats.insert(u32::from(id), revnat);
                }
                MapOp::PutService { key, value } => {
                    self.services.insert(key, value);
                }
                MapOp::DeleteService { key } => {
                    assert!(
                        self.services.remove(&key).is_some(),
                        "op {i}: {op:?} absent"
                    );
                }
                MapOp::DeleteRevNat { id } => {
                    assert!(
                        self.revnats.remove(&u32::from(id)).is_some(),
                        "op {i}: {op:?} absent"
                    );
                }
                MapOp::DeleteBackend { id } => {
                    assert!(self.backends.remove(&id).is_some(), "op {i}: {op:?} absent");
                    self.checked_tables.borrow_mut().clear();
                }
                MapOp::PutL2 { addr } => {
                    assert!(self.l2.insert(addr), "op {i}: {op:?} already there");
                }
                MapOp::DeleteL2 { addr } => {
                    assert!(self.l2.remove(&addr), "op {i}: {op:?} absent");
                }
                MapOp::PutVip { addr, flags } => {
                    assert_ne!(self.vips.insert(addr, flags), Some(flags), "op {i}: {op:?}");
                }
                MapOp::DeleteVip { addr } => {
                    assert!(self.vips.remove(&addr).is_some(), "op {i}: {op:?} absent");
                }
                MapOp::PutMaglev { bucket, value } => {
                    assert!(bucket < kproxy_common::MAGLEV_ENTRIES / 4);
                    // `checked_tables` is every published table (as of the last op).
                    for (first, size) in self.checked_tables.borrow().iter() {
                        assert!(
                            (bucket + 1) * 4 <= *first || bucket * 4 >= first + size,
                            "op {i}: {op:?} writes into the published table at {first}"
                        );
                    }
                    self.maglev.insert(bucket, value);
                    // No reader sees an unpublished block.
                    continue;
                }
                MapOp::PutAffinityMatch { key } => {
                    assert!(self.members.insert(key), "op {i}: {op:?} already there");
                }
                MapOp::DeleteAffinityMatch { key } => {
                    assert!(self.members.remove(&key), "op {i}: {op:?} absent");
                }
                MapOp::PutSrcRange { prefix_len, key } => {
                    let entry = (prefix_len, key);
                    assert!(
                        self.src_ranges.insert(entry),
                        "op {i}: {op:?} already there"
                    );
                }
                MapOp::DeleteSrcRange { prefix_len, key } => {
                    let entry = (prefix_len, key);
                    assert!(self.src_ranges.remove(&entry), "op {i}: {op:?} absent");
                }
            }
            self.check_readers(&format!("after op {i} {op:?}"));
        }
    }

    /// The backend ids of the Maglev table a slot 0 publishes (`None` without one).
    fn table_of(&self, value: &ServiceValue) -> Option<Vec<u32>> {
        if value.flags & svc_flags::MAGLEV == 0 {
            return None;
        }
        let size = maglev_size((value.flags >> MAGLEV_CLASS_SHIFT) & 0xf);
        assert!(size > 0, "bad size class in {value:?}");
        Some(
            (value.backend_id..value.backend_id + size)
                .map(|e| {
                    self.maglev
                        .get(&(e / 4))
                        .map_or(0, |b| u32::from(b.ids[(e % 4) as usize]))
                })
                .collect(),
        )
    }

    /// A reader of any published frontend finds all its slots, backends and revnat, and
    /// every entry of its Maglev table names a backend.
    fn check_readers(&self, when: &str) {
        let mut published = BTreeSet::new();
        for key in &self.members {
            assert!(
                self.backends.contains_key(&key.backend_id),
                "{when}: affinity member {key:?} without backend"
            );
        }
        for (key, value) in &self.services {
            if key.slot != 0 {
                continue;
            }
            if value.flags & svc_flags::SOURCE_RANGE != 0 {
                assert!(
                    self.src_ranges
                        .iter()
                        .any(|(_, k)| k.revnat_id == value.revnat_id),
                    "{when}: {key:?} restricts sources without any range"
                );
            }
            if value.flags & svc_flags::MAGLEV != 0 {
                assert!(value.count > 0, "{when}: a table without backends");
                let size = maglev_size((value.flags >> MAGLEV_CLASS_SHIFT) & 0xf);
                let range = (value.backend_id, size);
                published.insert(range);
                if !self.checked_tables.borrow().contains(&range) {
                    for id in self.table_of(value).into_iter().flatten() {
                        assert!(
                            self.backends.contains_key(&id),
                            "{when}: Maglev entry {id} of {key:?} names no backend"
                        );
                    }
                }
            }
            assert!(
                self.revnats.contains_key(&u32::from(value.revnat_id)),
                "{when}: revnat {} missing",
                value.revnat_id
            );
            for slot in 1..=value.count {
                let k = ServiceKey { slot, ..*key };
                let Some(v) = self.services.get(&k) else {
                    panic!("{when}: slot {slot} of {key:?} missing");
                };
                assert!(
                    self.backends.contains_key(&v.backend_id),
                    "{when}: backend {} missing",
                    v.backend_id
                );
            }
        }
        *self.checked_tables.borrow_mut() = published;
    }

    /// What a reader sees: frontend → (flags, timeout, active backends, revnat value).
    fn describe(&self) -> BTreeMap<FrontendKey, (u32, u32, Vec<BackendAddr>, RevNat)> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.services {
            let Some((frontend, 0)) = decode_service_key(key) else {
                continue;
            };
            let active = (1..=value.count)
                .map(|slot| {
                    let v = self.services[&ServiceKey { slot, ..*key }];
                    decode_backend(&self.backends[&v.backend_id]).expect("known proto")
                })
                .collect();
            let revnat = self.revnats[&u32::from(value.revnat_id)];
            let flags = value.flags & !(svc_flags::MAGLEV | svc_flags::MAGLEV_CLASS_MASK);
            out.insert(frontend, (flags, value.affinity_timeout_s, active, revnat));
        }
        out
    }

    fn expect_exactly(&self, want: &DesiredState) {
        let got = self.describe();
        let expected: BTreeMap<_, _> = want
            .frontends
            .iter()
            .map(|(k, f)| {
                (
                    *k,
                    (
                        f.flags,
                        f.affinity_timeout_s,
                        f.active().copied().collect(),
                        revnat_value(k),
                    ),
                )
            })
            .collect();
        assert_eq!(got, expected);
        // Nothing left over: slots = frontends + active backends, one revnat per
        // frontend, exactly the listed backends with their states.
        let slots: usize = want
            .frontends
            .values()
            .map(|f| 1 + f.active().count())
            .sum();
        assert_eq!(self.services.len(), slots);
        assert_eq!(self.revnats.len(), want.frontends.len());
        let l2: BTreeSet<u32> = want
            .frontends
            .iter()
            .filter(|(_, f)| f.flags & svc_flags::L2_ANNOUNCE != 0)
            .map(|(k, _)| u32::from(k.addr).to_be())
            .collect();
        assert_eq!(self.l2, l2, "announced LoadBalancer IPs");
        let mut backends = BTreeMap::new();
        for f in want.frontends.values() {
            for (a, s) in &f.backends {
                backends
                    .entry(*a)
                    .and_modify(|x: &mut BackendState| *x = (*x).min(*s))
                    .or_insert(*s);
            }
        }
        let got_backends: BTreeMap<_, _> = self
            .backends
            .values()
            .map(|b| {
                let state = if b.state == backend_state::ACTIVE {
                    A
                } else {
                    T
                };
                (decode_backend(b).expect("known proto"), state)
            })
            .collect();
        assert_eq!(got_backends, backends);
        assert_eq!(self.backends.len(), backends.len(), "one id per backend");
        // Affinity members: exactly the active backends of frontends with affinity.
        let mut members = BTreeSet::new();
        for (key, value) in &self.services {
            if key.slot == 0 && value.flags & svc_flags::AFFINITY != 0 {
                for slot in 1..=value.count {
                    let v = self.services[&ServiceKey { slot, ..*key }];
                    members.insert(AffinityMatchKey {
                        backend_id: v.backend_id,
                        revnat_id: value.revnat_id,
                        _pad: 0,
                    });
                }
            }
        }
        assert_eq!(self.members, members, "affinity membership");
        // Every Maglev table holds exactly the frontend's active backends.
        for (key, value) in &self.services {
            if let Some(table) = self.table_of(value) {
                let ids: BTreeSet<u32> = table.into_iter().collect();
                let active: BTreeSet<u32> = (1..=value.count)
                    .map(|slot| self.services[&ServiceKey { slot, ..*key }].backend_id)
                    .collect();
                assert_eq!(ids, active, "Maglev table of {key:?}");
            }
        }
    }

    fn syncer(&self) -> Syncer {
        Syncer::from_maps(
            self.services.iter().map(|(k, v)| (*k, *v)),
            self.backends.iter().map(|(k, v)| (*k, *v)),
            self.revnats.iter().map(|(k, v)| (*k, *v)),
        )
        .with_l2(self.l2.iter().copied())
        .with_vips(self.vips.iter().map(|(a, f)| (*a, *f)))
        .with_affinity_match(self.members.iter().copied())
        .with_source_ranges(self.src_ranges.iter().copied())
    }
}

/// Plans `want`, applies it to `maps` with the reader checks, and checks the result.
fn sync(syncer: &mut Syncer, maps: &mut FakeMaps, want: &DesiredState) -> Vec<MapOp> {
    let ops = syncer.plan(want).expect("plan");
    maps.apply(&ops);
    maps.expect_exactly(want);
    ops
}

fn skey(f: FrontendKey, slot: u16) -> ServiceKey {
    service_key(&f, slot)
}

fn sval(backend_id: u32, count: u16, revnat_id: u16) -> ServiceValue {
    ServiceValue {
        backend_id,
        count,
        revnat_id,
        flags: 0,
        affinity_timeout_s: 0,
    }
}

fn lb_ip(port: u16) -> (FrontendKey, Frontend) {
    let key = FrontendKey {
        addr: Ipv4Addr::new(172, 30, 0, 1),
        port,
        proto: Proto::Tcp,
    };
    let fe = Frontend {
        kind: FrontendKind::LoadBalancerIp,
        flags: svc_flags::EXTERNAL | svc_flags::L2_ANNOUNCE,
        ..frontend(&[(be(1), A)])
    };
    (key, fe)
}

#[test]
fn loadbalancer_ips_are_announced_while_a_frontend_uses_them() {
    let addr = u32::from(Ipv4Addr::new(172, 30, 0, 1)).to_be();
    let l2_ops = |ops: &[MapOp]| -> Vec<MapOp> {
        ops.iter()
            .copied()
            .filter(|op| matches!(op, MapOp::PutL2 { .. } | MapOp::DeleteL2 { .. }))
            .collect()
    };
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    // Two ports on one address: one announcement.
    let two = desired(vec![
        lb_ip(80),
        lb_ip(443),
        (fk(1, 80), frontend(&[(be(1), A)])),
    ]);
    let ops = sync(&mut s, &mut maps, &two);
    assert_eq!(l2_ops(&ops), [MapOp::PutL2 { addr }]);
    // The announcement comes after the frontend it belongs to.
    let slot0 = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutService { key, .. } if key.slot == 0))
        .expect("a frontend is published");
    assert!(ops.iter().position(|op| *op == MapOp::PutL2 { addr }) > Some(slot0));
    // One port left: still announced, nothing written for it.
    let one = desired(vec![lb_ip(443), (fk(1, 80), frontend(&[(be(1), A)]))]);
    assert_eq!(l2_ops(&sync(&mut s, &mut maps, &one)), []);
    // A restart rewrites nothing.
    let mut restarted = maps.syncer();
    assert_eq!(restarted.plan(&one).expect("plan"), []);
    // Per-service planning: the last port goes, the address is withdrawn.
    let plan = restarted
        .plan_service("default/test", &BTreeMap::new())
        .expect("plan");
    maps.apply(&plan.ops);
    assert_eq!(l2_ops(&plan.ops), [MapOp::DeleteL2 { addr }]);
    assert!(maps.l2.is_empty());
    // A leftover announcement nobody claims is swept.
    let mut stale = Syncer::new().with_l2([addr]);
    let mut maps = FakeMaps {
        l2: [addr].into(),
        ..FakeMaps::default()
    };
    let ops = sync(&mut stale, &mut maps, &desired(vec![]));
    assert_eq!(ops, [MapOp::DeleteL2 { addr }]);
}

#[test]
fn service_addresses_are_listed_while_a_frontend_uses_them() {
    let vip_ops = |ops: &[MapOp]| -> Vec<MapOp> {
        ops.iter()
            .copied()
            .filter(|op| matches!(op, MapOp::PutVip { .. } | MapOp::DeleteVip { .. }))
            .collect()
    };
    let lb = u32::from(Ipv4Addr::new(172, 30, 0, 1)).to_be();
    let cluster = u32::from(fk(1, 80).addr).to_be();
    let node_port = FrontendKey {
        addr: Ipv4Addr::new(192, 0, 2, 2),
        port: 30080,
        proto: Proto::Tcp,
    };
    let np = Frontend {
        kind: FrontendKind::NodePort,
        flags: svc_flags::EXTERNAL | svc_flags::NODEPORT,
        ..frontend(&[(be(1), A)])
    };
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    // Two ports on the LB IP: one external entry; the ClusterIP one internal entry; the
    // node's own address (NodePort) none: the kernel answers it.
    let all = desired(vec![
        lb_ip(80),
        lb_ip(443),
        (fk(1, 80), frontend(&[(be(1), A)])),
        (node_port, np.clone()),
    ]);
    let ops = sync(&mut s, &mut maps, &all);
    assert_eq!(
        vip_ops(&ops),
        [
            MapOp::PutVip {
                addr: cluster,
                flags: 0
            },
            MapOp::PutVip {
                addr: lb,
                flags: vip_flags::EXTERNAL
            },
        ]
    );
    // A restart rewrites nothing.
    assert_eq!(maps.syncer().plan(&all).expect("plan"), []);
    // One LB port left: still listed, nothing written; the ClusterIP goes.
    let fewer = desired(vec![lb_ip(443), (node_port, np)]);
    assert_eq!(
        vip_ops(&sync(&mut s, &mut maps, &fewer)),
        [MapOp::DeleteVip { addr: cluster }]
    );
    // A leftover entry nobody claims is swept.
    let mut stale = Syncer::new().with_vips([(cluster, 0)]);
    let mut maps = FakeMaps {
        vips: [(cluster, 0)].into(),
        ..FakeMaps::default()
    };
    let ops = sync(&mut stale, &mut maps, &desired(vec![]));
    assert_eq!(ops, [MapOp::DeleteVip { addr: cluster }]);
}

#[test]
fn network_byte_order() {
    let key = service_key(&fk(10, 80), 3);
    assert_eq!(key.addr.to_ne_bytes(), [10, 96, 0, 10]);
    assert_eq!(key.port.to_ne_bytes(), [0, 80]);
    assert_eq!(key.proto, kproxy_common::IPPROTO_TCP);
    assert_eq!(key.slot, 3);
    assert_eq!(decode_service_key(&key), Some((fk(10, 80), 3)));
    let b = backend_value(&be(2), T);
    assert_eq!(b.addr.to_ne_bytes(), [10, 244, 0, 2]);
    assert_eq!(b.port.to_ne_bytes(), 8080u16.to_be_bytes());
    assert_eq!(b.state, backend_state::TERMINATING);
    assert_eq!(decode_backend(&b), Some(be(2)));
    let r = revnat_value(&fk(10, 443));
    assert_eq!(r.addr.to_ne_bytes(), [10, 96, 0, 10]);
    assert_eq!(r.port.to_ne_bytes(), 443u16.to_be_bytes());
}

#[test]
fn empty_to_state_in_order() {
    let f = fk(1, 80);
    let want = desired(vec![(f, frontend(&[(be(2), A), (be(1), A), (be(3), T)]))]);
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    let ops = sync(&mut s, &mut maps, &want);
    assert_eq!(
        ops,
        [
            MapOp::PutBackend {
                id: 1,
                backend: backend_value(&be(1), A)
            },
            MapOp::PutBackend {
                id: 2,
                backend: backend_value(&be(2), A)
            },
            MapOp::PutBackend {
                id: 3,
                backend: backend_value(&be(3), T)
            },
            MapOp::PutRevNat {
                id: 1,
                revnat: revnat_value(&f)
            },
            MapOp::PutService {
                key: skey(f, 1),
                value: sval(1, 0, 1)
            },
            MapOp::PutService {
                key: skey(f, 2),
                value: sval(2, 0, 1)
            },
            MapOp::PutService {
                key: skey(f, 0),
                value: sval(0, 2, 1)
            },
            // The service address (echo replies), once its frontend is published.
            MapOp::PutVip {
                addr: u32::from(f.addr).to_be(),
                flags: 0
            },
        ]
    );
    assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(1, f)]);
    assert_eq!(
        s.backend_ids().collect::<Vec<_>>(),
        [(1, be(1)), (2, be(2)), (3, be(3))]
    );
}

#[test]
fn flags_and_timeout_in_every_slot() {
    let f = fk(1, 80);
    let mut fe = frontend(&[(be(1), A)]);
    fe.flags = svc_flags::AFFINITY | svc_flags::EXTERNAL;
    fe.affinity_timeout_s = 60;
    let mut s = Syncer::new();
    let ops = s.plan(&desired(vec![(f, fe.clone())])).expect("plan");
    let values: Vec<ServiceValue> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::PutService { value, .. } => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(values.len(), 2);
    for v in values {
        assert_eq!(v.flags, fe.flags);
        assert_eq!(v.affinity_timeout_s, 60);
        assert_eq!(v.revnat_id, 1);
    }
    // Changing the flags rewrites every slot, slot 0 last.
    fe.flags = 0;
    let ops = s.plan(&desired(vec![(f, fe)])).expect("plan");
    let keys: Vec<u16> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::PutService { key, .. } => Some(key.slot),
            MapOp::DeleteAffinityMatch { .. } | MapOp::PutVip { .. } => None,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(keys, [1, 0]);
    // Without affinity, its membership entry goes (before the slots change).
    assert!(matches!(ops[0], MapOp::DeleteAffinityMatch { .. }));
}

#[test]
fn planning_twice_is_idempotent() {
    let want = desired(vec![
        (fk(1, 80), frontend(&[(be(1), A), (be(2), T)])),
        (fk(2, 53), frontend(&[])),
    ]);
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    assert!(!sync(&mut s, &mut maps, &want).is_empty());
    assert_eq!(s.plan(&want).expect("plan"), []);
}

#[test]
fn add_and_remove_backend_minimal_ops() {
    let f = fk(1, 80);
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync(
        &mut s,
        &mut maps,
        &desired(vec![(f, frontend(&[(be(1), A), (be(2), A)]))]),
    );

    // A backend sorting last: one backend, one slot, then the count.
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(f, frontend(&[(be(1), A), (be(2), A), (be(4), A)]))]),
    );
    assert_eq!(
        ops,
        [
            MapOp::PutBackend {
                id: 3,
                backend: backend_value(&be(4), A)
            },
            MapOp::PutService {
                key: skey(f, 3),
                value: sval(3, 0, 1)
            },
            MapOp::PutService {
                key: skey(f, 0),
                value: sval(0, 3, 1)
            },
        ]
    );

    // Removing the first one shifts the slots: rewrite them, lower the count, then drop
    // the last slot and finally the backend.
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(f, frontend(&[(be(2), A), (be(4), A)]))]),
    );
    assert_eq!(
        ops,
        [
            MapOp::PutService {
                key: skey(f, 1),
                value: sval(2, 0, 1)
            },
            MapOp::PutService {
                key: skey(f, 2),
                value: sval(3, 0, 1)
            },
            MapOp::PutService {
                key: skey(f, 0),
                value: sval(0, 2, 1)
            },
            MapOp::DeleteService { key: skey(f, 3) },
            MapOp::DeleteBackend { id: 1 },
        ]
    );
}

#[test]
fn backend_turning_terminating() {
    let f = fk(1, 80);
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync(
        &mut s,
        &mut maps,
        &desired(vec![(f, frontend(&[(be(1), A), (be(2), A)]))]),
    );
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(f, frontend(&[(be(1), A), (be(2), T)]))]),
    );
    assert_eq!(
        ops,
        [
            MapOp::PutBackend {
                id: 2,
                backend: backend_value(&be(2), T)
            },
            MapOp::PutService {
                key: skey(f, 0),
                value: sval(0, 1, 1)
            },
            MapOp::DeleteService { key: skey(f, 2) },
        ]
    );
    // Gone for good: only the backend entry goes.
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(f, frontend(&[(be(1), A)]))]),
    );
    assert_eq!(ops, [MapOp::DeleteBackend { id: 2 }]);
}

#[test]
fn remove_frontend_order() {
    let (f1, f2) = (fk(1, 80), fk(2, 80));
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync(
        &mut s,
        &mut maps,
        &desired(vec![
            (f1, frontend(&[(be(1), A)])),
            (f2, frontend(&[(be(2), A), (be(3), A), (be(4), T)])),
        ]),
    );
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(f1, frontend(&[(be(1), A)]))]),
    );
    assert_eq!(
        ops,
        [
            MapOp::DeleteService { key: skey(f2, 0) },
            MapOp::DeleteService { key: skey(f2, 1) },
            MapOp::DeleteService { key: skey(f2, 2) },
            MapOp::DeleteRevNat { id: 2 },
            MapOp::DeleteBackend { id: 2 },
            MapOp::DeleteBackend { id: 3 },
            MapOp::DeleteBackend { id: 4 },
            MapOp::DeleteVip {
                addr: u32::from(f2.addr).to_be()
            },
        ]
    );
    assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(1, f1)]);
}

#[test]
fn ids_are_stable_and_reused() {
    let fronts = [fk(1, 80), fk(2, 80), fk(3, 80)];
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    let all = |skip: Option<usize>, extra: Option<(FrontendKey, BackendAddr)>| {
        let mut v: Vec<_> = fronts
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(i, f)| {
                (
                    *f,
                    frontend(&[(be(u8::try_from(i + 1).expect("few frontends")), A)]),
                )
            })
            .collect();
        v.extend(extra.map(|(f, b)| (f, frontend(&[(b, A)]))));
        desired(v)
    };
    sync(&mut s, &mut maps, &all(None, None));
    let ids = |s: &Syncer| s.revnat_ids().collect::<BTreeMap<_, _>>();
    assert_eq!(
        ids(&s),
        [(1, fronts[0]), (2, fronts[1]), (3, fronts[2])].into()
    );

    // Removing the middle one keeps the others' ids...
    sync(&mut s, &mut maps, &all(Some(1), None));
    assert_eq!(ids(&s), [(1, fronts[0]), (3, fronts[2])].into());
    // ... and its ids go to the next new frontend and backend.
    let f9 = fk(9, 80);
    let ops = sync(&mut s, &mut maps, &all(Some(1), Some((f9, be(9)))));
    assert_eq!(ids(&s), [(1, fronts[0]), (2, f9), (3, fronts[2])].into());
    assert!(ops.contains(&MapOp::PutBackend {
        id: 2,
        backend: backend_value(&be(9), A)
    }));
    assert_eq!(
        s.backend_ids().collect::<BTreeMap<_, _>>(),
        [(1, be(1)), (2, be(9)), (3, be(3))].into()
    );
}

#[test]
fn ids_are_not_reused_within_one_plan() {
    let (f1, f2) = (fk(1, 80), fk(2, 80));
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync(
        &mut s,
        &mut maps,
        &desired(vec![(f1, frontend(&[(be(1), A)]))]),
    );
    // f1 and be(1) go while f2 and be(2) come: new ids, since slot entries written
    // before the deletes still carry the old ones.
    sync(
        &mut s,
        &mut maps,
        &desired(vec![(f2, frontend(&[(be(2), A)]))]),
    );
    assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(2, f2)]);
    assert_eq!(s.backend_ids().collect::<Vec<_>>(), [(2, be(2))]);
    // Freed afterwards: the next new ones get id 1.
    let f3 = fk(3, 80);
    sync(
        &mut s,
        &mut maps,
        &desired(vec![
            (f2, frontend(&[(be(2), A)])),
            (f3, frontend(&[(be(3), A)])),
        ]),
    );
    assert_eq!(s.revnat_ids().collect::<Vec<_>>(), [(2, f2), (1, f3)]);
}

#[test]
fn shared_backend_lives_while_any_frontend_lists_it() {
    let (f1, f2) = (fk(1, 80), fk(2, 80));
    let shared = be(5);
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![
            (f1, frontend(&[(shared, A)])),
            (f2, frontend(&[(shared, T)])),
        ]),
    );
    // One entry, active because one frontend still sends it new flows.
    assert_eq!(
        ops.iter()
            .filter(|op| matches!(op, MapOp::PutBackend { .. }))
            .count(),
        1
    );
    assert_eq!(s.backend_ids().collect::<Vec<_>>(), [(1, shared)]);

    // f1 goes; f2 still lists it (terminating): it stays, now terminating.
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(f2, frontend(&[(shared, T)]))]),
    );
    assert!(ops.contains(&MapOp::PutBackend {
        id: 1,
        backend: backend_value(&shared, T)
    }));
    assert!(
        !ops.iter()
            .any(|op| matches!(op, MapOp::DeleteBackend { .. }))
    );
    // f2 drops it: now it goes.
    let ops = sync(&mut s, &mut maps, &desired(vec![(f2, frontend(&[]))]));
    assert_eq!(ops, [MapOp::DeleteBackend { id: 1 }]);
}

fn sample() -> DesiredState {
    let mut ext = frontend(&[(be(1), A), (be(3), A)]);
    ext.flags = svc_flags::EXTERNAL | svc_flags::AFFINITY;
    ext.affinity_timeout_s = 600;
    let mut udp = fk(3, 53);
    udp.proto = Proto::Udp;
    let udp_be = BackendAddr {
        proto: Proto::Udp,
        port: 53,
        ..be(7)
    };
    desired(vec![
        (fk(1, 80), frontend(&[(be(1), A), (be(2), A), (be(3), T)])),
        (fk(2, 443), ext),
        (udp, frontend(&[(udp_be, A)])),
        // Same address and port as the UDP one, other protocol: its own revnat id.
        (fk(3, 53), frontend(&[(be(7), A)])),
        (fk(4, 80), frontend(&[])),
    ])
}

#[test]
fn from_maps_round_trip_is_empty_plan() {
    let want = sample();
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync(&mut s, &mut maps, &want);

    let mut restarted = maps.syncer();
    assert_eq!(restarted.plan(&want).expect("plan"), []);
    assert_eq!(restarted, s, "restored mirror, ids, allocators and owners");
    let mut next = want.clone();
    next.frontends.remove(&fk(1, 80));
    next.frontends.insert(fk(5, 80), frontend(&[(be(9), A)]));
    let ops = restarted.plan(&next).expect("plan");
    assert_eq!(ops, s.plan(&next).expect("plan"), "same ids either way");
}

#[test]
fn recovers_from_an_interrupted_plan() {
    let before = sample();
    let mut after = sample();
    after.frontends.remove(&fk(1, 80));
    after
        .frontends
        .insert(fk(5, 80), frontend(&[(be(9), A), (be(1), A)]));
    after.frontends.insert(fk(2, 443), frontend(&[(be(3), A)]));

    let mut s = Syncer::new();
    let mut base = FakeMaps::default();
    sync(&mut s, &mut base, &before);
    let ops = s.plan(&after).expect("plan");
    // Crash after any prefix of the plan, restart from the maps, sync again.
    for cut in 0..=ops.len() {
        let mut maps = FakeMaps {
            services: base.services.clone(),
            backends: base.backends.clone(),
            revnats: base.revnats.clone(),
            l2: base.l2.clone(),
            vips: base.vips.clone(),
            maglev: base.maglev.clone(),
            members: base.members.clone(),
            src_ranges: base.src_ranges.clone(),
            checked_tables: std::cell::RefCell::default(),
        };
        maps.apply(&ops[..cut]);
        let mut restarted = maps.syncer();
        sync(&mut restarted, &mut maps, &after);
        assert_eq!(restarted.plan(&after).expect("plan"), [], "cut {cut}");
    }
}

#[test]
fn from_maps_cleans_leftovers() {
    let f = fk(1, 80);
    let mut maps = FakeMaps::default();
    let mut s = Syncer::new();
    let want = desired(vec![(f, frontend(&[(be(1), A)]))]);
    sync(&mut s, &mut maps, &want);
    // Junk: a slot beyond the count, an orphan backend, an orphan revnat, a key with an
    // unknown protocol and an unpublished frontend's slot.
    maps.services.insert(skey(f, 2), sval(1, 0, 1));
    maps.backends.insert(40, backend_value(&be(40), A));
    maps.revnats.insert(30, revnat_value(&fk(30, 80)));
    let mut icmp = skey(f, 0);
    icmp.proto = 1;
    maps.services.insert(icmp, sval(0, 0, 1));
    maps.services.insert(skey(fk(7, 80), 1), sval(1, 0, 7));

    let mut restarted = maps.syncer();
    let ops = restarted.plan(&want).expect("plan");
    maps.apply(&ops);
    maps.expect_exactly(&want);
    assert_eq!(restarted.plan(&want).expect("plan"), []);
    // The leftovers' ids are free again.
    assert!(restarted.revnat_alloc.free.contains(&30));
    assert!(restarted.backend_alloc.free.contains(&40));
}

#[test]
fn capacity_errors_leave_state_unchanged() {
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    let small = sample();
    sync(&mut s, &mut maps, &small);
    let before = s.clone();

    let backend_n = |n: u32| BackendAddr {
        addr: Ipv4Addr::from(0x0a00_0000 + n),
        port: 80,
        proto: Proto::Tcp,
    };
    let frontend_n = |n: u32| FrontendKey {
        addr: Ipv4Addr::from(0x6400_0000 + n),
        port: 80,
        proto: Proto::Tcp,
    };

    // More distinct backends than ids.
    let mut big = small.clone();
    for f in 0..2 {
        let list: Vec<_> = (0..40_000)
            .map(|i| (backend_n(f * 40_000 + i), A))
            .collect();
        big.frontends.insert(frontend_n(f), frontend(&list));
    }
    assert!(matches!(
        s.plan(&big),
        Err(SyncError::TooManyBackends { .. })
    ));
    assert_eq!(s, before);

    // More frontends than revnat ids.
    let mut big = small.clone();
    for f in 0..MAX_SERVICES {
        big.frontends.insert(frontend_n(f), frontend(&[]));
    }
    assert!(matches!(
        s.plan(&big),
        Err(SyncError::TooManyFrontends { .. })
    ));
    assert_eq!(s, before);

    // More slots than the service map holds (few backends, shared by many frontends).
    let mut big = small.clone();
    let list: Vec<_> = (0..60_000).map(|i| (backend_n(i), A)).collect();
    let shared = frontend(&list);
    for f in 0..5 {
        big.frontends.insert(frontend_n(f), shared.clone());
    }
    let err = s.plan(&big).expect_err("too many slots");
    assert!(matches!(err, SyncError::TooManySlots { .. }), "{err}");
    assert_eq!(s, before);

    assert_eq!(s.plan(&small).expect("plan"), []);
}

#[test]
fn one_change_among_10000_services_is_a_handful_of_ops() {
    let mut want = DesiredState::default();
    for n in 0..10_000u32 {
        let key = FrontendKey {
            addr: Ipv4Addr::from(0x0a60_0000 + n),
            port: 80,
            proto: Proto::Tcp,
        };
        let backends: Vec<_> = (0..3)
            .map(|b| {
                (
                    BackendAddr {
                        addr: Ipv4Addr::from(0x0af4_0000 + n * 4 + b),
                        port: 8080,
                        proto: Proto::Tcp,
                    },
                    A,
                )
            })
            .collect();
        want.frontends.insert(key, frontend(&backends));
    }
    let mut s = Syncer::new();
    let first = s.plan(&want).expect("plan");
    // Per service: 3 backends, revnat, slot 0, 3 slots, the service address.
    assert_eq!(first.len(), 10_000 * (3 + 1 + 1 + 3 + 1));
    assert_eq!(s.plan(&want).expect("plan"), []);

    // One service: one backend replaced by another.
    let key = FrontendKey {
        addr: Ipv4Addr::from(0x0a60_0000 + 1234),
        port: 80,
        proto: Proto::Tcp,
    };
    let fe = want.frontends.get_mut(&key).expect("frontend");
    let old = *fe.backends.keys().nth(1).expect("backend");
    fe.backends.remove(&old);
    fe.backends.insert(
        BackendAddr {
            addr: Ipv4Addr::new(192, 0, 2, 1),
            ..old
        },
        A,
    );
    let ops = s.plan(&want).expect("plan");
    assert!(ops.len() < 10, "{} ops: {ops:?}", ops.len());
    assert!(!ops.is_empty());
}

// === per-service plans ===

fn svc_frontends(list: &[(FrontendKey, Frontend)]) -> BTreeMap<FrontendKey, Frontend> {
    list.iter().cloned().collect()
}

/// Plans one service, applies it with the reader checks, returns the plan.
fn sync_svc(
    s: &mut Syncer,
    maps: &mut FakeMaps,
    service: &str,
    list: &[(FrontendKey, Frontend)],
) -> ServicePlan {
    let plan = s.plan_service(service, &svc_frontends(list)).expect("plan");
    maps.apply(&plan.ops);
    plan
}

#[test]
fn service_plans_share_backends_across_services() {
    let (f1, f2) = (fk(1, 80), fk(2, 80));
    let shared = be(5);
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    let a = sync_svc(&mut s, &mut maps, "ns/a", &[(f1, frontend(&[(shared, T)]))]);
    assert!(a.ops.contains(&MapOp::PutBackend {
        id: 1,
        backend: backend_value(&shared, T)
    }));
    // b lists it active: the one entry turns active, no second entry.
    let b = sync_svc(
        &mut s,
        &mut maps,
        "ns/b",
        &[(f2, frontend(&[(shared, A), (be(6), A)]))],
    );
    let puts: Vec<_> = b
        .ops
        .iter()
        .filter_map(|op| match op {
            MapOp::PutBackend { id, backend } => Some((*id, *backend)),
            _ => None,
        })
        .collect();
    assert_eq!(
        puts,
        [
            (1, backend_value(&shared, A)),
            (2, backend_value(&be(6), A))
        ]
    );
    // b goes: the shared backend stays for a (terminating again), be(6) goes.
    let gone = sync_svc(&mut s, &mut maps, "ns/b", &[]);
    assert_eq!(gone.released, 1);
    assert!(gone.ops.contains(&MapOp::PutBackend {
        id: 1,
        backend: backend_value(&shared, T)
    }));
    assert!(gone.ops.contains(&MapOp::DeleteBackend { id: 2 }));
    assert!(!gone.ops.contains(&MapOp::DeleteBackend { id: 1 }));
    maps.expect_exactly(&desired(vec![(f1, frontend(&[(shared, T)]))]));
    // a goes: nothing left.
    sync_svc(&mut s, &mut maps, "ns/a", &[]);
    maps.expect_exactly(&DesiredState::default());
    assert!(s.programmed.is_empty() && s.owned.is_empty() && s.backend_refs.is_empty());
}

#[test]
fn service_removal_deletes_its_frontends_in_order() {
    let (f1, f2, f3) = (fk(1, 80), fk(1, 443), fk(2, 80));
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync_svc(
        &mut s,
        &mut maps,
        "ns/a",
        &[
            (f1, frontend(&[(be(1), A), (be(2), A)])),
            (f2, frontend(&[(be(1), A)])),
        ],
    );
    sync_svc(&mut s, &mut maps, "ns/b", &[(f3, frontend(&[(be(1), A)]))]);
    // a keeps f2 only: f1 is unpublished first, then its slots, then its revnat.
    let plan = sync_svc(&mut s, &mut maps, "ns/a", &[(f2, frontend(&[(be(1), A)]))]);
    assert_eq!(
        plan.ops,
        [
            MapOp::DeleteService { key: skey(f1, 0) },
            MapOp::DeleteService { key: skey(f1, 1) },
            MapOp::DeleteService { key: skey(f1, 2) },
            MapOp::DeleteRevNat { id: 1 },
            MapOp::DeleteBackend { id: 2 },
        ]
    );
    assert_eq!(s.owned["ns/a"].iter().copied().collect::<Vec<_>>(), [f2]);
    // Re-planning an unchanged service writes nothing.
    assert_eq!(
        sync_svc(&mut s, &mut maps, "ns/b", &[(f3, frontend(&[(be(1), A)]))]).ops,
        []
    );
}

#[test]
fn conflicting_frontend_is_reported_and_taken_once_released() {
    let (vip, other) = (fk(1, 80), fk(2, 80));
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync_svc(&mut s, &mut maps, "ns/a", &[(vip, frontend(&[(be(1), A)]))]);
    let b_list = [
        (vip, frontend(&[(be(2), A)])),
        (other, frontend(&[(be(2), A)])),
    ];
    let plan = sync_svc(&mut s, &mut maps, "ns/b", &b_list);
    assert_eq!(
        plan.conflicts,
        [Conflict {
            frontend: vip,
            owner: "ns/a".into()
        }]
    );
    // a's frontend is untouched, b's other frontend is programmed.
    let mut want = desired(vec![(vip, frontend(&[(be(1), A)]))]);
    want.frontends.insert(other, frontend(&[(be(2), A)]));
    maps.expect_exactly(&want);
    // a goes; b planned again takes the address.
    assert_eq!(sync_svc(&mut s, &mut maps, "ns/a", &[]).released, 1);
    let plan = sync_svc(&mut s, &mut maps, "ns/b", &b_list);
    assert!(plan.conflicts.is_empty());
    maps.expect_exactly(&desired(b_list.to_vec()));
}

#[test]
fn service_capacity_error_leaves_state_unchanged() {
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync_svc(
        &mut s,
        &mut maps,
        "ns/a",
        &[(fk(1, 80), frontend(&[(be(1), A)]))],
    );
    let before = s.clone();
    let list: Vec<_> = (0..MAX_BACKENDS)
        .map(|n| {
            (
                BackendAddr {
                    addr: Ipv4Addr::from(0x0a00_0000 + n),
                    port: 80,
                    proto: Proto::Tcp,
                },
                A,
            )
        })
        .collect();
    let err = s
        .plan_service("ns/big", &svc_frontends(&[(fk(2, 80), frontend(&list))]))
        .expect_err("too many backends");
    assert!(matches!(err, SyncError::TooManyBackends { .. }), "{err}");
    assert_eq!(s, before);
    // The other service keeps being programmed.
    let plan = sync_svc(
        &mut s,
        &mut maps,
        "ns/c",
        &[(fk(3, 80), frontend(&[(be(3), A)]))],
    );
    assert!(!plan.ops.is_empty());
}

#[test]
fn restart_with_service_plans_and_sweep() {
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    let a = [(fk(1, 80), frontend(&[(be(1), A), (be(2), T)]))];
    let b = [(fk(2, 80), frontend(&[(be(2), A)]))];
    let c = [(fk(3, 80), frontend(&[(be(3), T), (be(4), A)]))];
    for (name, list) in [("ns/a", &a[..]), ("ns/b", &b[..]), ("ns/c", &c[..])] {
        sync_svc(&mut s, &mut maps, name, list);
    }
    // Unchanged cluster: zero writes.
    let mut restarted = maps.syncer();
    for (name, list) in [("ns/a", &a[..]), ("ns/b", &b[..]), ("ns/c", &c[..])] {
        assert_eq!(
            sync_svc(&mut restarted, &mut maps, name, list).ops,
            [],
            "{name}"
        );
    }
    assert_eq!(restarted.sweep().expect("sweep"), []);
    assert_eq!(restarted, s);
    // c deleted while kproxy was down: the sweep removes it, with its terminating
    // backend that no slot showed.
    let mut restarted = maps.syncer();
    for (name, list) in [("ns/a", &a[..]), ("ns/b", &b[..])] {
        assert_eq!(
            sync_svc(&mut restarted, &mut maps, name, list).ops,
            [],
            "{name}"
        );
    }
    let ops = restarted.sweep().expect("sweep");
    maps.apply(&ops);
    let mut want = desired(a.to_vec());
    want.frontends.extend(b.iter().cloned());
    maps.expect_exactly(&want);
    assert!(ops.contains(&MapOp::DeleteBackend { id: 3 }), "{ops:?}");
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn service_plans_match_the_whole_state_plan_on_random_inputs() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut services: BTreeMap<String, Vec<(FrontendKey, Frontend)>> = BTreeMap::new();
        let (mut inc, mut inc_maps) = (Syncer::new(), FakeMaps::default());
        let (mut whole, mut whole_maps) = (Syncer::new(), FakeMaps::default());
        for step in 0..60 {
            let n = rng.below(8);
            let name = format!("ns/s{n}");
            let list: Vec<_> = if rng.below(4) == 0 {
                Vec::new()
            } else {
                // Each service has its own addresses; backends come from a small
                // shared pool, so services share them.
                (0..=rng.below(3))
                    .map(|p| {
                        let key = fk(u8::try_from(n).unwrap() + 1, 80 + u16::try_from(p).unwrap());
                        let bes: Vec<_> = (0..rng.below(5))
                            .map(|_| {
                                let state = if rng.below(3) == 0 { T } else { A };
                                (be(u8::try_from(rng.below(10)).unwrap() + 1), state)
                            })
                            .collect();
                        let mut fe = frontend(&bes);
                        fe.service = name.clone();
                        (key, fe)
                    })
                    .collect()
            };
            sync_svc(&mut inc, &mut inc_maps, &name, &list);
            if list.is_empty() {
                services.remove(&name);
            } else {
                services.insert(name, list);
            }
            let want = desired(services.values().flatten().cloned().collect());
            sync(&mut whole, &mut whole_maps, &want);
            inc_maps.expect_exactly(&want);
            assert_eq!(
                inc_maps.describe(),
                whole_maps.describe(),
                "seed {seed} step {step}"
            );
            // The two planners agree on what they remember.
            assert_eq!(
                whole.plan(&want).expect("plan"),
                [],
                "seed {seed} step {step}"
            );
            assert_eq!(
                inc.clone().plan(&want).expect("plan"),
                [],
                "seed {seed} step {step}"
            );
        }
        // A restart then every service planned and a sweep: zero writes.
        let mut r = inc_maps.syncer();
        for (name, list) in &services {
            assert_eq!(sync_svc(&mut r, &mut inc_maps, name, list).ops, []);
        }
        assert_eq!(r.sweep().expect("sweep"), [], "seed {seed}");
    }
}

// === Maglev tables and affinity membership ===

const SEED: u64 = 0x5eed_1234;

fn maglev_lb(backends: &[(BackendAddr, BackendState)], affinity: bool) -> (FrontendKey, Frontend) {
    let (key, fe) = lb_ip(80);
    let fe = Frontend {
        algorithm: Some(LbAlgorithm::Maglev),
        flags: fe.flags | if affinity { svc_flags::AFFINITY } else { 0 },
        affinity_timeout_s: if affinity { 60 } else { 0 },
        ..frontend(backends)
    };
    (key, fe)
}

fn with_seed(s: Syncer) -> Syncer {
    s.with_lb(LbAlgorithm::Random, SEED, true)
}

/// The published table of `key`, as backend addresses.
fn table_addrs(maps: &FakeMaps, key: FrontendKey) -> Vec<BackendAddr> {
    let slot0 = maps.services[&skey(key, 0)];
    maps.table_of(&slot0)
        .expect("a Maglev table")
        .into_iter()
        .map(|id| decode_backend(&maps.backends[&id]).expect("known proto"))
        .collect()
}

fn ten() -> Vec<(BackendAddr, BackendState)> {
    (1..=10).map(|i| (be(i), A)).collect()
}

#[test]
fn maglev_frontends_get_a_table_and_removal_moves_only_its_entries() {
    let mut s = with_seed(Syncer::new());
    let mut maps = FakeMaps::default();
    let (key, fe) = maglev_lb(&ten(), false);
    sync(&mut s, &mut maps, &desired(vec![(key, fe)]));
    let before = table_addrs(&maps, key);
    assert_eq!(before.len(), 16381);
    let slot0 = maps.services[&skey(key, 0)];
    assert_eq!((slot0.flags >> MAGLEV_CLASS_SHIFT) & 0xf, 6);

    let nine: Vec<_> = ten().into_iter().filter(|(b, _)| *b != be(4)).collect();
    let (key, fe) = maglev_lb(&nine, false);
    sync(&mut s, &mut maps, &desired(vec![(key, fe)]));
    let after = table_addrs(&maps, key);
    let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    let own = moved.iter().filter(|(b, _)| **b == be(4)).count();
    assert_eq!(
        own,
        before.iter().filter(|b| **b == be(4)).count(),
        "all of be(4)'s move"
    );
    // Maglev moves a few others too (see maglev::tests): at most 11 % in all.
    assert!(
        moved.len() <= 16381 * 11 / 100,
        "{} moved, {own} of them be(4)'s",
        moved.len()
    );
    // Written into another block: the published table was never rewritten in place.
    assert_ne!(maps.services[&skey(key, 0)].backend_id, slot0.backend_id);
    // Unchanged input: nothing to write.
    let (key, fe) = maglev_lb(&nine, false);
    assert_eq!(s.plan(&desired(vec![(key, fe)])).expect("plan"), []);
}

#[test]
fn only_external_frontends_use_maglev_and_the_default_applies() {
    let mut s = Syncer::new().with_lb(LbAlgorithm::Maglev, SEED, true);
    let mut maps = FakeMaps::default();
    let (lb_key, lb_fe) = lb_ip(80);
    let lb_fe = Frontend {
        backends: ten().into_iter().collect(),
        ..lb_fe
    };
    let cluster = Frontend {
        algorithm: Some(LbAlgorithm::Maglev),
        ..frontend(&ten())
    };
    let random_lb = Frontend {
        algorithm: Some(LbAlgorithm::Random),
        ..lb_fe.clone()
    };
    let (other_lb, _) = lb_ip(81);
    sync(
        &mut s,
        &mut maps,
        &desired(vec![
            (lb_key, lb_fe),
            (fk(1, 80), cluster),
            (other_lb, random_lb),
        ]),
    );
    let maglev = |k| maps.services[&skey(k, 0)].flags & svc_flags::MAGLEV != 0;
    assert!(maglev(lb_key), "the default (maglev) applies to an LB IP");
    assert!(!maglev(fk(1, 80)), "ClusterIPs keep the hash pick");
    assert!(!maglev(other_lb), "the annotation overrides the default");
}

#[test]
fn a_restart_keeps_maglev_tables_unless_the_seed_changed() {
    let mut s = with_seed(Syncer::new());
    let mut maps = FakeMaps::default();
    let want = desired(vec![maglev_lb(&ten(), true)]);
    sync(&mut s, &mut maps, &want);
    let mut same = with_seed(maps.syncer());
    assert_eq!(
        same.plan(&want).expect("plan"),
        [],
        "same seed: nothing to write"
    );

    let mut reseeded = maps.syncer().with_lb(LbAlgorithm::Random, SEED + 1, false);
    let ops = sync(&mut reseeded, &mut maps, &want);
    let tables = ops
        .iter()
        .filter(|op| matches!(op, MapOp::PutMaglev { .. }))
        .count();
    assert_eq!(tables, 16381usize.div_ceil(4), "one table rewritten");
    // And its old block is free again: a third table generation reuses it.
    assert_eq!(reseeded.plan(&want).expect("plan"), []);
}

#[test]
fn maglev_blocks_are_freed_when_frontends_go_or_switch() {
    let mut s = with_seed(Syncer::new());
    let mut maps = FakeMaps::default();
    let (key, fe) = maglev_lb(&ten(), false);
    sync(&mut s, &mut maps, &desired(vec![(key, fe.clone())]));
    let random = Frontend {
        algorithm: Some(LbAlgorithm::Random),
        ..fe.clone()
    };
    sync(&mut s, &mut maps, &desired(vec![(key, random)]));
    assert_eq!(
        s.maglev_alloc,
        crate::maglev::BlockAlloc::new(),
        "switched off: freed"
    );
    sync(&mut s, &mut maps, &desired(vec![(key, fe)]));
    sync(&mut s, &mut maps, &desired(vec![]));
    assert_eq!(
        s.maglev_alloc,
        crate::maglev::BlockAlloc::new(),
        "deleted: freed"
    );
    assert!(s.tables.is_empty());
}

#[test]
fn affinity_membership_covers_any_number_of_backends() {
    let mut s = with_seed(Syncer::new());
    let mut maps = FakeMaps::default();
    let many: Vec<_> = (1..=100).map(|i| (be(i), A)).collect();
    let (key, fe) = maglev_lb(&many, true);
    sync(&mut s, &mut maps, &desired(vec![(key, fe)]));
    assert_eq!(maps.members.len(), 100);
    // A backend that leaves (or terminates) leaves the membership first.
    let fewer: Vec<_> = (1..=100)
        .map(|i| (be(i), if i == 70 { T } else { A }))
        .collect();
    let (key, fe) = maglev_lb(&fewer, true);
    let ops = sync(&mut s, &mut maps, &desired(vec![(key, fe)]));
    assert!(matches!(ops[0], MapOp::PutBackend { .. }), "{:?}", ops[0]);
    assert!(
        matches!(ops[1], MapOp::DeleteAffinityMatch { .. }),
        "{:?}",
        ops[1]
    );
    assert_eq!(maps.members.len(), 99);
    sync(&mut s, &mut maps, &desired(vec![]));
    assert!(maps.members.is_empty());
}

#[test]
fn a_crash_in_a_maglev_plan_is_repaired_after_a_restart() {
    let mut s = with_seed(Syncer::new());
    let mut base = FakeMaps::default();
    let before = desired(vec![maglev_lb(&ten(), true)]);
    let nine: Vec<_> = ten().into_iter().filter(|(b, _)| *b != be(2)).collect();
    let after = desired(vec![maglev_lb(&nine, true), maglev_lb(&ten(), false)]);
    let after = DesiredState {
        frontends: after
            .frontends
            .into_iter()
            .enumerate()
            .map(|(i, (k, f))| {
                (
                    FrontendKey {
                        port: 80 + u16::try_from(i).unwrap(),
                        ..k
                    },
                    f,
                )
            })
            .collect(),
        ..DesiredState::default()
    };
    sync(&mut s, &mut base, &before);
    let ops = s.plan(&after).expect("plan");
    for cut in 0..=ops.len() {
        let mut maps = FakeMaps {
            services: base.services.clone(),
            backends: base.backends.clone(),
            revnats: base.revnats.clone(),
            l2: base.l2.clone(),
            vips: base.vips.clone(),
            maglev: base.maglev.clone(),
            members: base.members.clone(),
            src_ranges: base.src_ranges.clone(),
            checked_tables: std::cell::RefCell::default(),
        };
        maps.apply(&ops[..cut]);
        let mut restarted = with_seed(maps.syncer());
        sync(&mut restarted, &mut maps, &after);
        assert_eq!(restarted.plan(&after).expect("plan"), [], "cut {cut}");
    }
}

#[test]
fn a_full_table_array_degrades_to_the_random_pick_and_recovers() {
    let mut s = with_seed(Syncer::new());
    let mut maps = FakeMaps::default();
    // 41 backends take the largest tables (65,521 entries): 32 fill the array.
    let many: Vec<_> = (1..=41).map(|i| (be(i), A)).collect();
    let fits = kproxy_common::MAGLEV_ENTRIES / 65_536;
    let svc = |port: u16| {
        let (key, fe) = maglev_lb(&many, false);
        let key = FrontendKey { port, ..key };
        let name = format!("ns/s{port}");
        let fe = Frontend {
            service: name.clone(),
            ..fe
        };
        (name, key, fe)
    };
    for port in 1..=u16::try_from(fits).expect("small") {
        let (name, key, fe) = svc(port);
        let plan = sync_svc(&mut s, &mut maps, &name, &[(key, fe)]);
        assert!(plan.maglev_fallbacks.is_empty());
    }
    // One more: programmed (the sync does not fail), but with the random pick.
    let (name, extra, fe) = svc(1000);
    let plan = sync_svc(&mut s, &mut maps, &name, &[(extra, fe.clone())]);
    assert_eq!(plan.maglev_fallbacks, [extra]);
    let slot0 = maps.services[&skey(extra, 0)];
    assert_eq!(slot0.flags & svc_flags::MAGLEV, 0);
    assert_eq!(slot0.count, 41);
    assert_eq!(s.maglev_fallbacks().collect::<Vec<_>>(), [&extra]);
    // Another service going frees a block; re-planning the waiting one takes it.
    let plan = sync_svc(&mut s, &mut maps, "ns/s1", &[]);
    assert!(plan.maglev_freed);
    let plan = sync_svc(&mut s, &mut maps, &name, &[(extra, fe)]);
    assert!(plan.maglev_fallbacks.is_empty());
    assert!(!plan.maglev_freed);
    assert_ne!(maps.services[&skey(extra, 0)].flags & svc_flags::MAGLEV, 0);
    assert_eq!(s.maglev_fallbacks().count(), 0);
    assert_eq!(
        maps.table_of(&maps.services[&skey(extra, 0)])
            .map(|t| t.len()),
        Some(65_521)
    );
}

#[test]
fn source_ranges_follow_their_frontend() {
    let cidr = |s: &str| s.parse::<crate::source_ranges::Cidr>().expect("cidr");
    let (key, fe) = lb_ip(80);
    let with = |ranges: &[&str]| Frontend {
        flags: fe.flags | svc_flags::SOURCE_RANGE,
        source_ranges: ranges.iter().map(|r| cidr(r)).collect(),
        ..fe.clone()
    };
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    // FakeMaps checks after every op that a flagged slot 0 has a range.
    sync(
        &mut s,
        &mut maps,
        &desired(vec![(key, with(&["10.0.0.0/8", "192.0.2.0/24"]))]),
    );
    assert_eq!(maps.src_ranges.len(), 2);
    let ops = sync(
        &mut s,
        &mut maps,
        &desired(vec![(key, with(&["192.0.2.0/24", "198.51.100.0/24"]))]),
    );
    let kinds: Vec<bool> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::PutSrcRange { .. } => Some(true),
            MapOp::DeleteSrcRange { .. } => Some(false),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [true, false], "one range added, one removed");
    let revnat = s.revnat_id(&key).expect("id");
    assert!(maps.src_ranges.iter().all(|(_, k)| k.revnat_id == revnat));
    // A restart: the mirror comes back from the map, and an unchanged plan writes nothing.
    let mut restored = Syncer::from_maps(
        maps.services.iter().map(|(k, v)| (*k, *v)),
        maps.backends.iter().map(|(k, v)| (*k, *v)),
        maps.revnats.iter().map(|(k, v)| (*k, *v)),
    )
    .with_source_ranges(maps.src_ranges.iter().copied());
    let ops = restored
        .plan(&desired(vec![(
            key,
            with(&["192.0.2.0/24", "198.51.100.0/24"]),
        )]))
        .expect("plan");
    assert!(
        !ops.iter()
            .any(|op| matches!(op, MapOp::PutSrcRange { .. } | MapOp::DeleteSrcRange { .. })),
        "{ops:?}"
    );
    // Ranges dropped from the Service, then the Service itself.
    sync(&mut s, &mut maps, &desired(vec![(key, fe.clone())]));
    assert!(maps.src_ranges.is_empty());
    sync(
        &mut s,
        &mut maps,
        &desired(vec![(key, with(&["10.0.0.0/8"]))]),
    );
    sync(&mut s, &mut maps, &desired(vec![]));
    assert!(maps.src_ranges.is_empty());
}

#[test]
fn a_sweep_keeps_the_source_ranges_of_claimed_frontends() {
    let cidr = |s: &str| s.parse::<crate::source_ranges::Cidr>().expect("cidr");
    let (key, fe) = lb_ip(80);
    let list = [(
        key,
        Frontend {
            flags: fe.flags | svc_flags::SOURCE_RANGE,
            source_ranges: vec![cidr("192.0.2.0/24")],
            ..fe
        },
    )];
    let mut s = Syncer::new();
    let mut maps = FakeMaps::default();
    sync_svc(&mut s, &mut maps, "ns/lb", &list);
    assert_eq!(maps.src_ranges.len(), 1);
    // Node mode sweeps after its first full pass, and after a restart.
    assert_eq!(s.sweep().expect("sweep"), []);
    let mut restarted = maps.syncer();
    assert_eq!(sync_svc(&mut restarted, &mut maps, "ns/lb", &list).ops, []);
    assert_eq!(restarted.sweep().expect("sweep"), []);
    assert_eq!(maps.src_ranges.len(), 1);
}
