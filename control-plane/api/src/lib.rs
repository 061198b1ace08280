//! What the API server knows about each resource kind it serves: defaults, validation and the
//! columns `kubectl get` prints.
#![forbid(unsafe_code)]

pub mod defaults;
pub mod protobuf;
pub mod qos;
pub mod strict;
pub mod table;
pub mod validate;

mod labels;
