//! Service lookup and backend selection, shared by socket-LB and the per-packet paths.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use kproxy_common::{
    AffinityKey, AffinityMatchKey, AffinityValue, Backend, DropReason, LbCounter,
    MAGLEV_CLASS_SHIFT, MAGLEV_IDS_PER_BUCKET, ServiceKey, ServiceValue, backend_state,
    maglev_size, svc_flags,
};

use crate::{
    config::hash_seed,
    drops,
    maps::{AFFINITY, AFFINITY_MATCH, BACKEND_STATS, BACKENDS, MAGLEV, SERVICES, SVC_STATS},
};

/// The frontend entry (slot 0) for an address/port/protocol, if it is a service.
#[inline(always)]
pub fn lookup_service(addr: u32, port: u16, proto: u8) -> Option<ServiceValue> {
    let key = ServiceKey::new(addr, port, proto, 0);
    // SAFETY: the value is copied out immediately; hash map values stay valid during the
    // RCU read section the program runs in.
    unsafe { SERVICES.get(key) }.copied()
}

/// A selected backend.
#[derive(Clone, Copy)]
pub struct Selected {
    pub id: u32,
    pub backend: Backend,
}

/// The backend with this id, if it exists.
#[inline(always)]
pub fn backend(id: u32) -> Option<Backend> {
    // SAFETY: copied out immediately (see lookup_service).
    unsafe { BACKENDS.get(id) }.copied()
}

/// Picks a backend for a new flow: the client's affine backend if the service has ClientIP
/// affinity and the entry is fresh and still active, else the Maglev table's entry
/// `hash % size` (frontends flagged MAGLEV) or slot `1 + hash % count`.
/// `client` identifies the client for affinity (address or netns cookie).
#[inline(always)]
pub fn select_backend(
    svc_addr: u32,
    svc_port: u16,
    proto: u8,
    svc: &ServiceValue,
    hash: u32,
    client: u64,
) -> Option<Selected> {
    if svc.count == 0 {
        return None;
    }
    let affinity = svc.flags & svc_flags::AFFINITY != 0;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let akey = AffinityKey {
        client,
        revnat_id: svc.revnat_id,
        _pad: [0; 3],
    };
    if affinity {
        // SAFETY: copied out immediately.
        if let Some(a) = unsafe { AFFINITY.get(akey) }.copied() {
            let timeout_ns = u64::from(svc.affinity_timeout_s) * 1_000_000_000;
            if now.wrapping_sub(a.last_used_ns) <= timeout_ns
                && let Some(b) = backend(a.backend_id)
                && b.state == backend_state::ACTIVE
                && is_in_service(svc.revnat_id, a.backend_id)
            {
                touch_affinity(&akey, a.backend_id, now);
                return Some(Selected {
                    id: a.backend_id,
                    backend: b,
                });
            }
        }
    }
    let id = if svc.flags & svc_flags::MAGLEV != 0 {
        maglev_pick(svc, hash)?
    } else {
        #[expect(clippy::cast_possible_truncation, reason = "below count, a u16")]
        let slot = 1 + (hash % u32::from(svc.count)) as u16;
        let key = ServiceKey::new(svc_addr, svc_port, proto, slot);
        // SAFETY: copied out immediately.
        unsafe { SERVICES.get(key) }.copied()?.backend_id
    };
    let backend = backend(id)?;
    if affinity {
        touch_affinity(&akey, id, now);
    }
    Some(Selected { id, backend })
}

/// The backend id at entry `hash % size` of the frontend's Maglev table (which starts at
/// entry `svc.backend_id` of the flat table array).
#[inline(always)]
fn maglev_pick(svc: &ServiceValue, hash: u32) -> Option<u32> {
    let size = maglev_size((svc.flags >> MAGLEV_CLASS_SHIFT) & 0xf);
    if size == 0 {
        return None;
    }
    let entry = svc.backend_id.wrapping_add(hash % size);
    let bucket = MAGLEV.get(entry / MAGLEV_IDS_PER_BUCKET)?;
    let id = u32::from(bucket.ids[(entry % MAGLEV_IDS_PER_BUCKET) as usize & 3]);
    // Id 0 is never a backend: an entry userspace did not write.
    if id == 0 { None } else { Some(id) }
}

#[inline(always)]
fn touch_affinity(key: &AffinityKey, backend_id: u32, now: u64) {
    let v = AffinityValue {
        backend_id,
        _pad: 0,
        last_used_ns: now,
    };
    if AFFINITY.insert(key, v, 0).is_err() {
        drops::count(DropReason::MapFull, 0);
    }
}

/// Whether `backend_id` is still an active backend of the frontend: affinity must not
/// resurrect a backend that left the service. One lookup in the membership map userspace
/// keeps for frontends with affinity, whatever the number of backends.
#[inline(always)]
fn is_in_service(revnat_id: u16, backend_id: u32) -> bool {
    let key = AffinityMatchKey {
        backend_id,
        revnat_id,
        _pad: 0,
    };
    // SAFETY: only the presence is read.
    unsafe { AFFINITY_MATCH.get(key) }.is_some()
}

/// Adds to a service's and a backend's counters.
#[inline(always)]
pub fn count(revnat_id: u16, backend_id: u32, bytes: u64, packets: u64, new_flow: bool) {
    let add = |c: *mut LbCounter| {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += packets;
            (*c).bytes += bytes;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    };
    if let Some(c) = SVC_STATS.get_ptr_mut(u32::from(revnat_id)) {
        add(c);
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend_id) {
        add(c);
    }
}

/// A cheap, well-mixing 32-bit hash of a flow (a Jenkins-style finaliser over the tuple),
/// keyed with the cluster's hash seed so a client cannot pick source ports that all land
/// on one backend.
#[inline(always)]
pub fn flow_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    seeded_flow_hash(hash_seed(), saddr, daddr, sport, dport, proto)
}

#[inline(always)]
pub fn seeded_flow_hash(
    seed: u32,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
) -> u32 {
    let mut h = mix(saddr ^ seed ^ 0x9e37_79b9);
    h = mix(h ^ daddr);
    h = mix(h ^ ((u32::from(sport) << 16) | u32::from(dport)));
    mix(h ^ u32::from(proto))
}

#[inline(always)]
pub fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_spreads_ports() {
        let mut buckets = [0u32; 3];
        for port in 1000u16..4000 {
            let h = seeded_flow_hash(
                0x5eed,
                0x0102_0304,
                0x0a60_000a,
                port.to_be(),
                80u16.to_be(),
                6,
            );
            buckets[(h % 3) as usize] += 1;
        }
        for b in buckets {
            assert!((900..=1100).contains(&b), "uneven spread {buckets:?}");
        }
    }
}
