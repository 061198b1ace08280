//! The service-address map (echo replies for VIPs): writing planned entries and reading
//! them back after a restart.

use aya::maps::{HashMap, Map, MapData, MapError};
use kproxy_common::MAP_VIPS;

use super::{Datapath, DatapathError};

type Vips<'a> = HashMap<&'a mut MapData, u32, u32>;

fn map_err(source: MapError) -> DatapathError {
    DatapathError::Map {
        name: MAP_VIPS,
        source,
    }
}

/// The map, from `Ebpf::maps_disjoint_mut`'s slot for it.
pub(super) fn open(map: Option<&mut Map>) -> Result<Vips<'_>, DatapathError> {
    Vips::try_from(map.ok_or(DatapathError::MissingMap(MAP_VIPS))?).map_err(map_err)
}

pub(super) fn put(vips: &mut Vips<'_>, addr: u32, flags: u32) -> Result<(), DatapathError> {
    vips.insert(addr, flags, 0).map_err(map_err)
}

pub(super) fn delete(vips: &mut Vips<'_>, addr: u32) -> Result<(), DatapathError> {
    match vips.remove(&addr) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

impl Datapath {
    /// The service addresses and their flags.
    pub(super) fn read_vips(&self) -> Result<Vec<(u32, u32)>, DatapathError> {
        let map = self
            .ebpf
            .map(MAP_VIPS)
            .ok_or(DatapathError::MissingMap(MAP_VIPS))?;
        HashMap::<&MapData, u32, u32>::try_from(map)
            .map_err(map_err)?
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)
    }
}
