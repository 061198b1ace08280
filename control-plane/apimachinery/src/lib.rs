//! The parts of Kubernetes' apimachinery that server, controllers and CLI share: the rules for
//! names and labels, label and field selectors, and the three patch formats.
#![forbid(unsafe_code)]

pub mod names;
pub mod patch;
pub mod quantity;
pub mod selector;
