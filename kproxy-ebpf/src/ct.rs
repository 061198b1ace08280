//! Connection tracking for the per-packet paths (uplink, pod veths): the fate of a packet
//! entering the node (DNAT of new and tracked flows to a backend, or a refusal when a
//! service has no ready backend) and the frontend a backend's reply must come from. The
//! client's source address is never changed, except for hairpin flows and for external
//! flows to a backend on another node (SNAT, see `snat.rs`).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use kproxy_common::{
    CtKey, CtValue, DropReason, HAIRPIN_ADDR, IPPROTO_TCP, ct_dir, ct_flags, ct_lifetime, svc_flags,
};

use crate::{
    drops, lb,
    maps::CT,
    packet::{Flow, TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN},
    snat::{self, Uplink},
    srcrange,
};

/// What to do with a packet arriving from outside.
pub enum Ingress {
    /// Not for an external frontend: leave it alone.
    Pass,
    /// Rewrite the destination to this backend (and, if `snat` is not 0, the source address
    /// to `snat`: hairpin; with `snat_port` not 0 also the source port, and the packet is
    /// forwarded out of the node: SNAT to a backend on another node).
    Dnat {
        addr: u32,
        port: u16,
        snat: u32,
        snat_port: u16,
    },
    /// An external frontend with no ready backend.
    Reject,
    /// Drop silently (counted): the flow could not be tracked.
    Drop,
}

#[inline(always)]
fn ct_key(f: &Flow, dir: u8) -> CtKey {
    CtKey {
        saddr: f.saddr,
        daddr: f.daddr,
        sport: f.sport,
        dport: f.dport,
        proto: f.proto,
        dir,
        _pad: 0,
    }
}

/// Seconds of the monotonic clock, the unit of [`CtValue::expires_s`].
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "seconds wrap every 136 years; expiries are compared wrapping"
)]
fn now_s() -> u32 {
    // SAFETY: helper without preconditions.
    (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32
}

/// Whether the packet closes its direction of the connection (TCP FIN or RST).
#[inline(always)]
fn closes(f: &Flow) -> bool {
    f.proto == IPPROTO_TCP && f.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0
}

/// Whether the packet opens a TCP connection (SYN without ACK).
#[inline(always)]
fn is_new_syn(f: &Flow) -> bool {
    f.proto == IPPROTO_TCP && f.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
}

/// How long an entry lives after this packet: per protocol, and for TCP per state.
#[inline(always)]
fn lifetime(f: &Flow, closing: bool) -> u32 {
    if f.proto != IPPROTO_TCP {
        ct_lifetime::NON_TCP
    } else if closing {
        ct_lifetime::TCP_CLOSING
    } else if f.tcp_flags & TCP_FLAG_ACK == 0 {
        ct_lifetime::TCP_SYN
    } else {
        ct_lifetime::TCP_ESTABLISHED
    }
}

/// Pushes out the expiry of a tracked entry for packet `f`, in place (no map update).
#[inline(always)]
fn ct_refresh(entry: *mut CtValue, f: &Flow, now: u32) {
    // A later fragment has no TCP flags to go by; its first fragment refreshed the entry.
    if !f.l4_hdr {
        return;
    }
    // SAFETY: `entry` points into a CT map value, valid for the program's RCU section;
    // concurrent writers only store the same kind of plain values.
    unsafe {
        let mut flags = (*entry).flags;
        if closes(f) {
            flags |= ct_flags::CLOSING;
        }
        let expires = now.wrapping_add(lifetime(f, flags & ct_flags::CLOSING != 0));
        if (*entry).expires_s != expires {
            (*entry).expires_s = expires;
        }
        if (*entry).flags != flags {
            (*entry).flags = flags;
        }
    }
}

/// Whether a tracked forward entry may keep carrying the flow: not expired, not a new
/// connection (SYN) over a closing one, and its backend and service still exist (a backend
/// id may have been reused for another address, so the address is compared too).
#[inline(always)]
fn ct_usable(ct: &CtValue, f: &Flow, now: u32) -> bool {
    if ct.expires_s.wrapping_sub(now).cast_signed() < 0 {
        return false;
    }
    if is_new_syn(f) && ct.flags & ct_flags::CLOSING != 0 {
        return false;
    }
    match lb::backend(ct.backend_id) {
        Some(b) if b.addr == ct.nat_addr && b.port == ct.nat_port => {}
        _ => return false,
    }
    matches!(lb::lookup_service(f.daddr, f.dport, f.proto), Some(svc) if svc.revnat_id == ct.revnat_id && srcrange::allowed(&svc, f.saddr))
}

/// The reply entry of a forward entry for flow `f` (client `f.saddr`, or the hairpin
/// address; SNAT flows have their own, see [`snat_reply_key`]): where the backend's packets
/// come from and go to.
#[inline(always)]
fn reply_key(f: &Flow, backend_addr: u32, backend_port: u16, hairpin: bool) -> CtKey {
    CtKey {
        saddr: backend_addr,
        daddr: if hairpin { HAIRPIN_ADDR } else { f.saddr },
        sport: backend_port,
        dport: f.sport,
        proto: f.proto,
        dir: ct_dir::REPLY,
        _pad: 0,
    }
}

/// The reply entry of an SNAT flow whose forward entry is `ct`: backend → node address and
/// allocated port.
#[inline(always)]
fn snat_reply_key(f: &Flow, ct: &CtValue) -> CtKey {
    CtKey {
        saddr: ct.nat_addr,
        daddr: ct.snat_addr,
        sport: ct.nat_port,
        dport: ct.snat_port,
        proto: f.proto,
        dir: ct_dir::REPLY,
        _pad: 0,
    }
}

/// Whether the SNAT reply entry `v` belongs to client flow `f` (another flow may hold the
/// port once this one's entry expired).
#[inline(always)]
fn is_reply_of(v: &CtValue, f: &Flow) -> bool {
    v.snat_addr == f.saddr
        && v.snat_port == f.sport
        && v.nat_addr == f.daddr
        && v.nat_port == f.dport
}

/// For a tracked SNAT flow: whether it still holds its source port. Its reply entry lives
/// at least as long as the forward one (a one-way flow must not lose its port); one that
/// was evicted or expired is taken back if no other flow holds the port meanwhile.
#[inline(always)]
fn snat_port_held(f: &Flow, ct: &CtValue, now: u32) -> bool {
    let key = snat_reply_key(f, ct);
    let expires = now.wrapping_add(lifetime(f, ct.flags & ct_flags::CLOSING != 0 || closes(f)));
    if let Some(entry) = CT.get_ptr_mut(key) {
        // SAFETY: copied out of a live map value.
        let v = unsafe { *entry };
        if is_reply_of(&v, f) {
            if v.expires_s.wrapping_sub(expires).cast_signed() < 0 {
                // SAFETY: as in ct_refresh.
                unsafe { (*entry).expires_s = expires };
            }
            return true;
        }
    }
    let value = CtValue {
        nat_addr: f.daddr,
        nat_port: f.dport,
        revnat_id: ct.revnat_id,
        backend_id: ct.backend_id,
        snat_addr: f.saddr,
        expires_s: expires,
        flags: 0,
        snat_port: f.sport,
    };
    snat::take(&key, &value, now)
}

/// Deletes the reply entry of an unusable forward entry `ct` of flow `f`, unless (SNAT)
/// another flow holds that port by now.
#[inline(always)]
fn remove_reply(f: &Flow, ct: &CtValue) {
    if ct.snat_port == 0 {
        let _ = CT.remove(reply_key(f, ct.nat_addr, ct.nat_port, ct.snat_addr != 0));
        return;
    }
    let key = snat_reply_key(f, ct);
    // SAFETY: copied out at once.
    if matches!(unsafe { CT.get(key) }, Some(v) if is_reply_of(v, f)) {
        let _ = CT.remove(key);
    }
}

/// An SNAT flow's reply arriving from outside (backend → this node's address and an SNAT
/// port): the entry that translates it back (source: the frontend, destination: the
/// client's `snat_addr`/`snat_port`), refreshed. Packets to other ports cost nothing.
#[inline(always)]
pub fn snat_reply(f: &Flow, bytes: u64) -> Option<CtValue> {
    if !snat::is_snat_port(f.dport) {
        return None;
    }
    let entry = CT.get_ptr_mut(ct_key(f, ct_dir::REPLY))?;
    // SAFETY: copied out of a live map value.
    let v = unsafe { *entry };
    let now = now_s();
    if v.snat_port == 0 || !snat::live(&v, now) {
        return None;
    }
    ct_refresh(entry, f, now);
    lb::count(v.revnat_id, v.backend_id, bytes, 1, false);
    Some(v)
}

/// Decides the fate of a packet entering the node (from the uplink, or from a pod): tracked
/// flows keep their backend (also when it is terminating) while the entry is usable; new
/// flows, and flows whose backend or service went away, get a backend by flow hash or
/// ClientIP affinity and a connection tracking entry for both directions. A TCP flow moved
/// off a removed backend lands mid-stream on a new one, which answers with a RST: the
/// client sees a reset, never a black hole.
/// `uplink`: the packet came from outside through it; only frontends reachable from
/// outside are served, and a backend behind the uplink gets an SNAT flow.
#[inline(always)]
pub fn ingress_decision(f: &Flow, bytes: u64, uplink: Option<Uplink>) -> Ingress {
    let external_only = uplink.is_some();
    let fwd = ct_key(f, ct_dir::FORWARD);
    let now = now_s();
    if let Some(entry) = CT.get_ptr_mut(fwd) {
        // SAFETY: copied out of a live map value.
        let ct = unsafe { *entry };
        if ct_usable(&ct, f, now) && (ct.snat_port == 0 || snat_port_held(f, &ct, now)) {
            ct_refresh(entry, f, now);
            lb::count(ct.revnat_id, ct.backend_id, bytes, 1, false);
            return Ingress::Dnat {
                addr: ct.nat_addr,
                port: ct.nat_port,
                snat: ct.snat_addr,
                snat_port: ct.snat_port,
            };
        }
        // The old backend's reply entry would only linger until garbage collection.
        remove_reply(f, &ct);
    }
    let Some(svc) = lb::lookup_service(f.daddr, f.dport, f.proto) else {
        // A new connection straight to a non-service address: a reply entry for its tuple can
        // only be left by an earlier service flow from the same source port (closing entries
        // live 10 s), and must not rewrite this connection's SYN-ACK to come from that
        // service.
        if is_new_syn(f) {
            let _ = CT.remove(reply_key(f, f.daddr, f.dport, false));
        }
        return Ingress::Pass;
    };
    if external_only && svc.flags & svc_flags::EXTERNAL == 0 {
        return Ingress::Pass;
    }
    if !srcrange::allowed(&svc, f.saddr) {
        drops::count(DropReason::SourceRange, bytes);
        return Ingress::Drop;
    }
    let hash = lb::flow_hash(f.saddr, f.daddr, f.sport, f.dport, f.proto);
    let Some(sel) = lb::select_backend(f.daddr, f.dport, f.proto, &svc, hash, u64::from(f.saddr))
    else {
        lb::count(svc.revnat_id, 0, bytes, 1, false);
        drops::count(DropReason::NoBackend, bytes);
        if svc.flags & svc_flags::DROP_NO_BACKEND != 0 {
            return Ingress::Drop;
        }
        return Ingress::Reject;
    };
    let hairpin = sel.backend.addr == f.saddr;
    let snat = if hairpin { HAIRPIN_ADDR } else { 0 };
    let closing = closes(f);
    let entry = |nat_addr, nat_port, snat_addr, snat_port| CtValue {
        nat_addr,
        nat_port,
        revnat_id: svc.revnat_id,
        backend_id: sel.id,
        snat_addr,
        expires_s: now.wrapping_add(lifetime(f, closing)),
        flags: if closing { ct_flags::CLOSING } else { 0 },
        snat_port,
    };
    if let Some(node) = uplink.and_then(|u| u.snat_source(f, sel.backend.addr)) {
        // A backend on another node: the reply entry (backend → node:port) reserves the port.
        let mut reply = CtKey {
            saddr: sel.backend.addr,
            daddr: node,
            sport: sel.backend.port,
            dport: 0,
            proto: f.proto,
            dir: ct_dir::REPLY,
            _pad: 0,
        };
        let reply_entry = entry(f.daddr, f.dport, f.saddr, f.sport);
        let Some(port) = snat::alloc_port(&mut reply, &reply_entry, hash, now) else {
            drops::count(DropReason::SnatNoPort, bytes);
            return Ingress::Drop;
        };
        let fwd_entry = entry(sel.backend.addr, sel.backend.port, node, port);
        if CT.insert(fwd, fwd_entry, 0).is_err() {
            let _ = CT.remove(reply);
            drops::count(DropReason::CtInsertFailed, bytes);
            return Ingress::Drop;
        }
        lb::count(svc.revnat_id, sel.id, bytes, 1, true);
        return Ingress::Dnat {
            addr: sel.backend.addr,
            port: sel.backend.port,
            snat: node,
            snat_port: port,
        };
    }
    let reply = reply_key(f, sel.backend.addr, sel.backend.port, hairpin);
    // Reply entry first: the backend's answer must never find the forward entry alone.
    let reply_entry = entry(f.daddr, f.dport, if hairpin { f.saddr } else { 0 }, 0);
    if CT.insert(reply, reply_entry, 0).is_err()
        || CT
            .insert(fwd, entry(sel.backend.addr, sel.backend.port, snat, 0), 0)
            .is_err()
    {
        // The backend's answer could not be translated back: drop, the client retries.
        let _ = CT.remove(reply);
        drops::count(DropReason::CtInsertFailed, bytes);
        return Ingress::Drop;
    }
    lb::count(svc.revnat_id, sel.id, bytes, 1, true);
    Ingress::Dnat {
        addr: sel.backend.addr,
        port: sel.backend.port,
        snat,
        snat_port: 0,
    }
}

/// The frontend a backend's reply must appear to come from, if the packet belongs to a
/// tracked, unexpired flow; refreshes the entry.
#[inline(always)]
pub fn reply_lookup(f: &Flow, bytes: u64) -> Option<CtValue> {
    let key = ct_key(f, ct_dir::REPLY);
    let entry = CT.get_ptr_mut(key)?;
    // SAFETY: copied out of a live map value.
    let v = unsafe { *entry };
    let now = now_s();
    // SNAT replies are translated where they enter (`snat_reply`), never here.
    if v.expires_s.wrapping_sub(now).cast_signed() < 0 || v.snat_port != 0 {
        return None;
    }
    ct_refresh(entry, f, now);
    lb::count(v.revnat_id, v.backend_id, bytes, 1, false);
    Some(v)
}
