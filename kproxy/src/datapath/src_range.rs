//! The source-range map (`loadBalancerSourceRanges`, an LPM trie): writing planned entries
//! and reading them back after a restart.

use aya::maps::{
    Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use kproxy_common::{MAP_SRC_RANGE, SrcRangeKey};

use super::{Datapath, DatapathError};

type Trie<'a> = LpmTrie<&'a mut MapData, SrcRangeKey, u32>;

fn map_err(source: MapError) -> DatapathError {
    DatapathError::Map {
        name: MAP_SRC_RANGE,
        source,
    }
}

/// The map, from `Ebpf::maps_disjoint_mut`'s slot for it.
pub(super) fn open(map: Option<&mut Map>) -> Result<Trie<'_>, DatapathError> {
    Trie::try_from(map.ok_or(DatapathError::MissingMap(MAP_SRC_RANGE))?).map_err(map_err)
}

pub(super) fn put(
    trie: &mut Trie<'_>,
    prefix_len: u32,
    key: SrcRangeKey,
) -> Result<(), DatapathError> {
    trie.insert(&Key::new(prefix_len, key), 1, 0)
        .map_err(map_err)
}

pub(super) fn delete(
    trie: &mut Trie<'_>,
    prefix_len: u32,
    key: SrcRangeKey,
) -> Result<(), DatapathError> {
    match trie.remove(&Key::new(prefix_len, key)) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

impl Datapath {
    /// The source-range entries: (prefix length, key).
    pub(super) fn read_source_ranges(&self) -> Result<Vec<(u32, SrcRangeKey)>, DatapathError> {
        let map = self
            .ebpf
            .map(MAP_SRC_RANGE)
            .ok_or(DatapathError::MissingMap(MAP_SRC_RANGE))?;
        LpmTrie::<&MapData, SrcRangeKey, u32>::try_from(map)
            .map_err(map_err)?
            .keys()
            .map(|k| k.map(|k| (k.prefix_len(), k.data())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)
    }
}
