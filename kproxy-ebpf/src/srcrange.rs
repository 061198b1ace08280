//! `loadBalancerSourceRanges`: whether a client may reach a frontend that has them (Cilium's
//! `lb4_src_range_ok`). One LPM trie lookup keyed by the frontend's revnat id and the
//! client's address, only for frontends flagged [`svc_flags::SOURCE_RANGE`].

use aya_ebpf::maps::{LpmTrie, lpm_trie::Key};
use kproxy_common::{
    MAX_SRC_RANGE_ENTRIES, SRC_RANGE_PREFIX_BASE, ServiceValue, SrcRangeKey, map_name, svc_flags,
};

use crate::maps::named_map;

map_name!(MAP_SRC_RANGE => named_map! {
    pub static SRC_RANGE: LpmTrie<SrcRangeKey, u32> = LpmTrie::pinned(MAX_SRC_RANGE_ENTRIES, 0);
});

/// Whether a packet from `saddr` (network byte order) may use the frontend `svc` (slot 0).
#[inline(always)]
pub fn allowed(svc: &ServiceValue, saddr: u32) -> bool {
    if svc.flags & svc_flags::SOURCE_RANGE == 0 {
        return true;
    }
    let key = Key::new(
        SRC_RANGE_PREFIX_BASE + 32,
        SrcRangeKey {
            revnat_id: svc.revnat_id,
            _pad: 0,
            addr: saddr,
        },
    );
    SRC_RANGE.get(&key).is_some()
}
