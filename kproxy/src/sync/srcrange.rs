//! The source-range map (`loadBalancerSourceRanges`): planning its entries per frontend and
//! mirroring them. Ranges a frontend gains are written before its slot 0 publishes
//! [`svc_flags::SOURCE_RANGE`] (a flagged frontend never has an empty set, which would drop
//! every client); ranges it loses go after its slot 0 (or its removal).
//!
//! [`svc_flags::SOURCE_RANGE`]: kproxy_common::svc_flags::SOURCE_RANGE

use std::collections::{BTreeMap, BTreeSet};

use kproxy_common::{MAX_SRC_RANGE_ENTRIES, SrcRangeKey};

use super::{Changes, MapOp, SyncError, Syncer};
use crate::{model::FrontendKey, source_ranges::Cidr};

/// The ranges in the map, by revnat id.
pub(super) type SrcRanges = BTreeMap<u16, BTreeSet<Cidr>>;

/// The two halves of a source-range plan.
pub(super) struct RangeOps {
    /// Before the slot 0s.
    pub puts: Vec<MapOp>,
    /// After the slot 0s and removals.
    pub deletes: Vec<MapOp>,
}

fn put(revnat_id: u16, cidr: Cidr) -> MapOp {
    let (prefix_len, key) = cidr.map_key(revnat_id);
    MapOp::PutSrcRange { prefix_len, key }
}

fn delete(revnat_id: u16, cidr: Cidr) -> MapOp {
    let (prefix_len, key) = cidr.map_key(revnat_id);
    MapOp::DeleteSrcRange { prefix_len, key }
}

impl Syncer {
    /// The source-range writes for `changes`; a sweep (`Some(live)`, the revnat ids some
    /// frontend has) also deletes the ranges of the other ids (a restart, an interrupted run).
    pub(super) fn plan_source_ranges(
        &self,
        changes: &Changes<'_>,
        revnat_of: impl Fn(&FrontendKey) -> Option<u16>,
        sweep: Option<&BTreeSet<u16>>,
    ) -> Result<RangeOps, SyncError> {
        let mut ops = RangeOps {
            puts: Vec::new(),
            deletes: Vec::new(),
        };
        let mut entries = self.src_range_entries;
        let mut seen = BTreeSet::new();
        let none = BTreeSet::new();
        for (key, want) in changes {
            let Some(revnat_id) = revnat_of(key) else {
                continue;
            };
            seen.insert(revnat_id);
            let want: BTreeSet<Cidr> = want
                .map(|(_, fe)| fe.source_ranges.iter().copied().collect())
                .unwrap_or_default();
            let have = self.src_ranges.get(&revnat_id).unwrap_or(&none);
            for cidr in want.difference(have) {
                ops.puts.push(put(revnat_id, *cidr));
                entries += 1;
            }
            for cidr in have.difference(&want) {
                ops.deletes.push(delete(revnat_id, *cidr));
                entries -= 1;
            }
        }
        if let Some(live) = sweep {
            for (revnat_id, cidrs) in &self.src_ranges {
                if !seen.contains(revnat_id) && !live.contains(revnat_id) {
                    for cidr in cidrs {
                        ops.deletes.push(delete(*revnat_id, *cidr));
                        entries -= 1;
                    }
                }
            }
        }
        if entries > MAX_SRC_RANGE_ENTRIES as usize {
            return Err(SyncError::TooManySourceRanges {
                needed: entries,
                max: MAX_SRC_RANGE_ENTRIES,
            });
        }
        Ok(ops)
    }

    /// Records a source-range op (planned, or an entry read back with `put == true`).
    pub(super) fn mirror_src_range(&mut self, prefix_len: u32, key: SrcRangeKey, put: bool) {
        let Some((revnat_id, cidr)) = Cidr::from_map_key(prefix_len, &key) else {
            return;
        };
        if put {
            if self.src_ranges.entry(revnat_id).or_default().insert(cidr) {
                self.src_range_entries += 1;
            }
        } else if let Some(cidrs) = self.src_ranges.get_mut(&revnat_id) {
            if cidrs.remove(&cidr) {
                self.src_range_entries -= 1;
            }
            if cidrs.is_empty() {
                self.src_ranges.remove(&revnat_id);
            }
        }
    }

    /// What the source-range map holds (restored next to [`Syncer::from_maps`]).
    #[must_use]
    pub fn with_source_ranges(
        mut self,
        keys: impl IntoIterator<Item = (u32, SrcRangeKey)>,
    ) -> Self {
        for (prefix_len, key) in keys {
            self.mirror_src_range(prefix_len, key, true);
        }
        self
    }
}
