//! Resource quantities live in kproxy-apimachinery (shared with the kubelet).
pub use kproxy_apimachinery::quantity::*;
