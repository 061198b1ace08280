//! Human names for map ids (revnat id → service, backend id → address), saved next to the
//! pinned maps' state so `kproxy dump` in another process can label what it reads.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use kproxy_common::{LbCounter, backend_state};
use serde::{Deserialize, Serialize};

use crate::{
    model::{BackendState, FrontendKey, Proto},
    pinned::{PinnedError, PinnedLb},
    sync::Syncer,
};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct FrontendName {
    pub service: String,
    pub kind: String,
    /// Terminating backend ids (not in the slots, still serving their flows).
    pub terminating: Vec<u32>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Names {
    pub frontends: BTreeMap<u16, FrontendName>,
}

impl Names {
    /// The names of what the syncer last planned (after a successful `plan`, exactly the
    /// desired state's frontends).
    #[must_use]
    pub fn from_syncer(syncer: &Syncer) -> Self {
        let frontends = syncer
            .revnat_ids()
            .filter_map(|(id, key)| Some((id, Self::frontend(syncer, &key)?)))
            .collect();
        Self { frontends }
    }

    /// The name of one programmed frontend (`None` if the syncer has no such frontend).
    #[must_use]
    pub fn frontend(syncer: &Syncer, key: &FrontendKey) -> Option<FrontendName> {
        let fe = syncer.frontend(key)?;
        let terminating = fe
            .backends
            .iter()
            .filter(|(_, s)| **s == BackendState::Terminating)
            .filter_map(|(b, _)| syncer.backend_id(b))
            .collect();
        Some(FrontendName {
            service: fe.service.clone(),
            kind: fe.kind.to_string(),
            terminating,
        })
    }

    /// Applies the changes of one plan: revnat id → its new name, or `None` when gone.
    pub fn apply(&mut self, changes: Vec<(u16, Option<FrontendName>)>) {
        for (id, name) in changes {
            match name {
                Some(name) => {
                    self.frontends.insert(id, name);
                }
                None => {
                    self.frontends.remove(&id);
                }
            }
        }
    }
}

/// The names file for a bpffs directory (one per datapath instance).
#[must_use]
pub fn names_path(bpffs: &Path) -> PathBuf {
    let flat: String = bpffs
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new("/run/kproxy").join(format!("names{flat}.json"))
}

pub fn save_names(bpffs: &Path, names: &Names) -> std::io::Result<()> {
    let path = names_path(bpffs);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(names).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

#[must_use]
pub fn load_names(bpffs: &Path) -> Option<Names> {
    serde_json::from_slice(&std::fs::read(names_path(bpffs)).ok()?).ok()
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CounterRow {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl From<LbCounter> for CounterRow {
    fn from(c: LbCounter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
            new_flows: c.new_flows,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendRow {
    pub id: u32,
    /// `address:port`.
    pub backend: String,
    pub address: std::net::Ipv4Addr,
    pub port: u16,
    pub state: &'static str,
    pub counter: CounterRow,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceRow {
    pub revnat_id: u16,
    /// `address:port/protocol`.
    pub frontend: String,
    pub address: std::net::Ipv4Addr,
    pub port: u16,
    /// `TCP`, `UDP` (`?` for a protocol this build does not know).
    pub protocol: String,
    /// [`kproxy_common::svc_flags`] bits.
    pub flags: u32,
    pub kind: String,
    pub service: String,
    pub active_backends: u16,
    pub counter: CounterRow,
    pub backends: Vec<BackendRow>,
}

fn fmt_addr(addr: u32, port: u16) -> String {
    format!(
        "{}:{}",
        std::net::Ipv4Addr::from(addr.to_ne_bytes()),
        u16::from_be(port)
    )
}

/// The service table as the datapath sees it: every frontend (slot 0) with its backends
/// and the per-CPU counters summed, labelled with `names`.
pub fn service_table(lb: &PinnedLb, names: &Names) -> Result<Vec<ServiceRow>, PinnedError> {
    let (services, backends, _) = lb.entries()?;
    let backends: BTreeMap<u32, kproxy_common::Backend> = backends.into_iter().collect();
    let slots: std::collections::HashMap<_, _> = services.iter().map(|(k, v)| (*k, *v)).collect();
    let mut rows = Vec::new();
    for (key, val) in services.iter().filter(|(k, _)| k.slot == 0) {
        let proto = Proto::from_ip_proto(key.proto).map_or("?".to_string(), |p| p.to_string());
        let name = names
            .frontends
            .get(&val.revnat_id)
            .cloned()
            .unwrap_or_default();
        let mut ids: Vec<u32> = (1..=val.count)
            .filter_map(|slot| {
                let mut k = *key;
                k.slot = slot;
                slots.get(&k).map(|v| v.backend_id)
            })
            .collect();
        ids.extend(name.terminating.iter().copied());
        let backend_rows = ids
            .into_iter()
            .map(|id| {
                let b = backends.get(&id).copied().unwrap_or_default();
                Ok(BackendRow {
                    id,
                    backend: fmt_addr(b.addr, b.port),
                    address: std::net::Ipv4Addr::from(b.addr.to_ne_bytes()),
                    port: u16::from_be(b.port),
                    state: if b.state == backend_state::TERMINATING {
                        "terminating"
                    } else {
                        "active"
                    },
                    counter: lb.counter(true, id)?.into(),
                })
            })
            .collect::<Result<Vec<_>, PinnedError>>()?;
        rows.push(ServiceRow {
            revnat_id: val.revnat_id,
            frontend: format!("{}/{proto}", fmt_addr(key.addr, key.port)),
            address: std::net::Ipv4Addr::from(key.addr.to_ne_bytes()),
            port: u16::from_be(key.port),
            protocol: proto,
            flags: val.flags,
            kind: name.kind,
            service: name.service,
            active_backends: val.count,
            counter: lb.counter(false, u32::from(val.revnat_id))?.into(),
            backends: backend_rows,
        });
    }
    rows.sort_by(|a, b| a.frontend.cmp(&b.frontend));
    Ok(rows)
}
