//! The parts of Kubernetes' apimachinery that server, controllers and CLI share: the rules for
//! names and labels, label and field selectors, the three patch formats, and the field ownership
//! server-side apply tracks.
#![forbid(unsafe_code)]

pub mod events;
pub mod fields;
pub mod jsonpatch;
pub mod managed;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod selector;
pub mod yaml;
