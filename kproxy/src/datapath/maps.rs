//! Runtime configuration (the config map the programs read per packet) and the
//! load-balancer maps: applying planned operations, reading them back after a restart.

use aya::maps::{Array, HashMap, MapData};
use kproxy_common::{
    AffinityMatchKey, Backend, MAP_AFFINITY_MATCH, MAP_BACKENDS, MAP_CONFIG, MAP_L2, MAP_MAGLEV,
    MAP_REVNAT, MAP_SERVICES, MaglevBucket, RevNat, ServiceKey, ServiceValue, config,
};

use super::{Datapath, DatapathError};
use crate::sync::MapOp;

impl Datapath {
    pub(super) fn set_config(&mut self, slot: u32, value: u32) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(MAP_CONFIG)
            .ok_or(DatapathError::MissingMap(MAP_CONFIG))?;
        crate::pinned::write_config(map, slot, value).map_err(|source| DatapathError::Map {
            name: MAP_CONFIG,
            source,
        })
    }

    /// Switches aya-log debug events on or off; takes effect for the next packet.
    pub fn set_debug_events(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_config(config::DEBUG_EVENTS, u32::from(on))
    }

    /// Limits socket-LB to the sockets of one network namespace (its cookie), or lifts the
    /// limit (`None`).
    pub fn set_socket_lb_netns(&mut self, cookie: Option<u64>) -> Result<(), DatapathError> {
        let c = cookie.unwrap_or(0);
        #[expect(clippy::cast_possible_truncation, reason = "the cookie's low 32 bits")]
        let lo = c as u32;
        self.set_config(config::SOCK_LB_NETNS_HI, (c >> 32) as u32)?;
        self.set_config(config::SOCK_LB_NETNS_LO, lo)
    }

    /// Extends socket-LB's namespace scope to processes under one cgroup v2 directory (its
    /// id and depth below the root, see `socket_lb::cgroup_scope`), or lifts that (`None`).
    pub fn set_socket_lb_cgroup(
        &mut self,
        cgroup: Option<(u64, u32)>,
    ) -> Result<(), DatapathError> {
        let (id, level) = cgroup.unwrap_or((0, 0));
        #[expect(clippy::cast_possible_truncation, reason = "the id's low 32 bits")]
        let lo = id as u32;
        // The id last: a level alone changes nothing while the id is 0.
        self.set_config(config::SOCK_LB_CGROUP_LEVEL, level)?;
        self.set_config(config::SOCK_LB_CGROUP_HI, (id >> 32) as u32)?;
        self.set_config(config::SOCK_LB_CGROUP_LO, lo)
    }

    /// The address ARP replies for LoadBalancer IPs come from (the uplink's MAC).
    pub fn set_uplink_mac(&mut self, mac: [u8; 6]) -> Result<(), DatapathError> {
        self.set_config(
            config::UPLINK_MAC_0,
            u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
        )?;
        self.set_config(
            config::UPLINK_MAC_4,
            u32::from_ne_bytes([mac[4], mac[5], 0, 0]),
        )
    }

    /// Chooses where external traffic is load balanced on the uplink: tc ingress (`true`)
    /// or XDP (`false`).
    pub fn set_lb_in_tc(&mut self, on: bool) -> Result<(), DatapathError> {
        self.set_config(config::LB_IN_TC, u32::from(on))
    }

    /// The load-balancing hash seed: `cluster_seed` (`--lb-hash-seed`, the same on every
    /// node), else the one a previous kproxy kept in the pinned config map, else a new
    /// random one. It is stored in the config map (the flow hash reads it per packet) and
    /// remembered with `default` for [`Datapath::restore_syncer`]. Kept across restarts
    /// because a new seed would move every flow without a CT entry and make every Maglev
    /// table be written again.
    pub fn set_lb(
        &mut self,
        default: crate::model::LbAlgorithm,
        cluster_seed: Option<u64>,
    ) -> Result<u64, DatapathError> {
        let stored = {
            let map = self
                .ebpf
                .map(MAP_CONFIG)
                .ok_or(DatapathError::MissingMap(MAP_CONFIG))?;
            let arr =
                Array::<&MapData, u32>::try_from(map).map_err(|source| DatapathError::Map {
                    name: MAP_CONFIG,
                    source,
                })?;
            let part = |i| arr.get(&i, 0).unwrap_or(0);
            (u64::from(part(config::HASH_SEED_HI)) << 32) | u64::from(part(config::HASH_SEED_LO))
        };
        let seed = match cluster_seed {
            Some(seed) => seed,
            None if stored != 0 => stored,
            None if legacy_seed(&self.bpffs_dir) != 0 => legacy_seed(&self.bpffs_dir),
            None => loop {
                let seed = rand::random::<u64>();
                if seed != 0 {
                    break seed;
                }
            },
        };
        if seed != stored {
            #[expect(clippy::cast_possible_truncation, reason = "the seed's low 32 bits")]
            let lo = seed as u32;
            self.set_config(config::HASH_SEED_LO, lo)?;
            self.set_config(config::HASH_SEED_HI, (seed >> 32) as u32)?;
        }
        self.lb = super::LbSettings {
            default,
            seed,
            tables_valid: seed == stored,
        };
        Ok(seed)
    }

    /// Applies planned map operations in order.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<(), DatapathError> {
        let [svc, be, rn, l2, mg, am, sr, vp] = self.ebpf.maps_disjoint_mut([
            MAP_SERVICES,
            MAP_BACKENDS,
            MAP_REVNAT,
            MAP_L2,
            MAP_MAGLEV,
            MAP_AFFINITY_MATCH,
            kproxy_common::MAP_SRC_RANGE,
            kproxy_common::MAP_VIPS,
        ]);
        let mut vips = super::vips::open(vp, &mut self.vips)?;
        let mut ranges = super::src_range::open(sr)?;
        let map_err = |name| move |source| DatapathError::Map { name, source };
        let mut maglev = Array::<&mut MapData, MaglevBucket>::try_from(
            mg.ok_or(DatapathError::MissingMap(MAP_MAGLEV))?,
        )
        .map_err(map_err(MAP_MAGLEV))?;
        let mut members = HashMap::<&mut MapData, AffinityMatchKey, u32>::try_from(
            am.ok_or(DatapathError::MissingMap(MAP_AFFINITY_MATCH))?,
        )
        .map_err(map_err(MAP_AFFINITY_MATCH))?;
        let mut services = HashMap::<&mut MapData, ServiceKey, ServiceValue>::try_from(
            svc.ok_or(DatapathError::MissingMap(MAP_SERVICES))?,
        )
        .map_err(map_err(MAP_SERVICES))?;
        let mut backends = HashMap::<&mut MapData, u32, Backend>::try_from(
            be.ok_or(DatapathError::MissingMap(MAP_BACKENDS))?,
        )
        .map_err(map_err(MAP_BACKENDS))?;
        let mut revnat = HashMap::<&mut MapData, u32, RevNat>::try_from(
            rn.ok_or(DatapathError::MissingMap(MAP_REVNAT))?,
        )
        .map_err(map_err(MAP_REVNAT))?;
        let mut l2 = HashMap::<&mut MapData, u32, u32>::try_from(
            l2.ok_or(DatapathError::MissingMap(MAP_L2))?,
        )
        .map_err(map_err(MAP_L2))?;
        let mut removed = std::collections::BTreeSet::new();
        for op in ops {
            match op {
                MapOp::PutBackend { id, backend } => backends
                    .insert(id, backend, 0)
                    .map_err(map_err(MAP_BACKENDS))?,
                MapOp::PutRevNat { id, revnat: r } => revnat
                    .insert(u32::from(*id), r, 0)
                    .map_err(map_err(MAP_REVNAT))?,
                MapOp::PutService { key, value } => services
                    .insert(key, value, 0)
                    .map_err(map_err(MAP_SERVICES))?,
                MapOp::DeleteService { key } => {
                    ignore_missing(services.remove(key)).map_err(map_err(MAP_SERVICES))?;
                }
                MapOp::DeleteRevNat { id } => {
                    ignore_missing(revnat.remove(&u32::from(*id))).map_err(map_err(MAP_REVNAT))?;
                }
                MapOp::DeleteBackend { id } => {
                    // The sockets connected to it are terminated below (`sock_term`).
                    if let Ok(b) = backends.get(id, 0) {
                        removed.insert(super::sock_term::Removed {
                            addr: b.addr,
                            port: b.port,
                            proto: b.proto,
                        });
                    }
                    ignore_missing(backends.remove(id)).map_err(map_err(MAP_BACKENDS))?;
                }
                MapOp::PutL2 { addr } => l2.insert(addr, 1, 0).map_err(map_err(MAP_L2))?,
                MapOp::DeleteL2 { addr } => {
                    ignore_missing(l2.remove(addr)).map_err(map_err(MAP_L2))?;
                }
                MapOp::PutVip { addr, flags } => vips.put(*addr, *flags)?,
                MapOp::DeleteVip { addr } => vips.delete(*addr)?,
                MapOp::PutMaglev { bucket, value } => {
                    maglev.set(*bucket, value, 0).map_err(map_err(MAP_MAGLEV))?;
                }
                MapOp::PutAffinityMatch { key } => members
                    .insert(key, 1, 0)
                    .map_err(map_err(MAP_AFFINITY_MATCH))?,
                MapOp::DeleteAffinityMatch { key } => {
                    ignore_missing(members.remove(key)).map_err(map_err(MAP_AFFINITY_MATCH))?;
                }
                MapOp::PutSrcRange { prefix_len, key } => {
                    super::src_range::put(&mut ranges, *prefix_len, *key)?;
                }
                MapOp::DeleteSrcRange { prefix_len, key } => {
                    super::src_range::delete(&mut ranges, *prefix_len, *key)?;
                }
            }
        }
        if !removed.is_empty() {
            self.terminate_sockets(&removed);
        }
        Ok(())
    }

    /// A syncer that mirrors what the pinned maps hold now (after a restart: what the
    /// previous kproxy wrote), so the next plan rewrites nothing that is right already.
    pub fn restore_syncer(&self) -> Result<crate::sync::Syncer, DatapathError> {
        let (s, b, r) = self.read_lb_maps()?;
        Ok(crate::sync::Syncer::from_maps(s, b, r)
            .with_l2(self.read_l2()?)
            .with_vips(self.read_vips())
            .with_affinity_match(self.read_affinity_match()?)
            .with_source_ranges(self.read_source_ranges()?)
            .with_lb(self.lb.default, self.lb.seed, self.lb.tables_valid))
    }

    /// The affinity membership entries.
    fn read_affinity_match(&self) -> Result<Vec<AffinityMatchKey>, DatapathError> {
        let map_err = |source| DatapathError::Map {
            name: MAP_AFFINITY_MATCH,
            source,
        };
        let map = self
            .ebpf
            .map(MAP_AFFINITY_MATCH)
            .ok_or(DatapathError::MissingMap(MAP_AFFINITY_MATCH))?;
        HashMap::<&MapData, AffinityMatchKey, u32>::try_from(map)
            .map_err(map_err)?
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)
    }

    /// The announced LoadBalancer IPs (network byte order).
    fn read_l2(&self) -> Result<Vec<u32>, DatapathError> {
        let map = self
            .ebpf
            .map(MAP_L2)
            .ok_or(DatapathError::MissingMap(MAP_L2))?;
        let l2 =
            HashMap::<&MapData, u32, u32>::try_from(map).map_err(|source| DatapathError::Map {
                name: MAP_L2,
                source,
            })?;
        l2.keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DatapathError::Map {
                name: MAP_L2,
                source,
            })
    }

    /// The current contents of the service, backend and reverse-NAT maps (after a restart
    /// they hold what the previous kproxy wrote).
    #[expect(clippy::type_complexity, reason = "three plain entry lists")]
    fn read_lb_maps(
        &self,
    ) -> Result<
        (
            Vec<(ServiceKey, ServiceValue)>,
            Vec<(u32, Backend)>,
            Vec<(u32, RevNat)>,
        ),
        DatapathError,
    > {
        crate::pinned::read_lb_maps_from(
            self.ebpf
                .map(MAP_SERVICES)
                .ok_or(DatapathError::MissingMap(MAP_SERVICES))?,
            self.ebpf
                .map(MAP_BACKENDS)
                .ok_or(DatapathError::MissingMap(MAP_BACKENDS))?,
            self.ebpf
                .map(MAP_REVNAT)
                .ok_or(DatapathError::MissingMap(MAP_REVNAT))?,
        )
        .map_err(|(name, source)| DatapathError::Map { name, source })
    }
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// The hash seed an older kproxy kept in its config map (`kproxy_config_v3`, the layout
/// before the socket-LB cgroup slots), so an upgrade keeps every flow's backend; 0 without.
fn legacy_seed(dir: &std::path::Path) -> u64 {
    let Ok(map) = crate::pinned::open_pinned(dir, "kproxy_config_v3") else {
        return 0;
    };
    let Ok(arr) = Array::<MapData, u32>::try_from(aya::maps::Map::Array(map)) else {
        return 0;
    };
    let part = |i| arr.get(&i, 0).unwrap_or(0);
    (u64::from(part(config::HASH_SEED_HI)) << 32) | u64::from(part(config::HASH_SEED_LO))
}
