//! Interface names: the kernel limits them to 15 bytes (IFNAMSIZ - 1).

use crate::{Error, Result};

/// The pod-side interface name inside every sandbox namespace.
pub const POD_IFNAME: &str = "eth0";

const IFNAME_MAX: usize = 15;

/// The host-side veth name for a pod: `kv` + 10 hex digits of a hash of the pod uid.
///
/// FNV-1a (rather than `DefaultHasher`) because the name must stay the same across kubelet
/// builds: a restarted, upgraded kubelet finds and removes the veths of the pods it already ran
/// by recomputing their names.
#[must_use]
pub fn host_ifname(pod_uid: &str) -> String {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(pod_uid.as_bytes());
    let hash = h.finish();
    // 10 hex digits = the top 40 bits.
    format!("kv{:010x}", hash >> 24)
}

/// Checks what the kernel accepts as an interface name (see `dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidIfname {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > IFNAME_MAX {
        return invalid("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("reserved");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return invalid("contains '/', ':', whitespace or NUL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_short_stable_and_distinct() {
        let a = host_ifname("6f1c1a52-3c1e-4d8e-9d1f-5b8c1e2a7b10");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("kv"));
        assert!(a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, host_ifname("6f1c1a52-3c1e-4d8e-9d1f-5b8c1e2a7b10"));
        assert_ne!(a, host_ifname("6f1c1a52-3c1e-4d8e-9d1f-5b8c1e2a7b11"));
        validate_ifname(&a).expect("derived names are valid");
        // Pinned: the name must not change between builds (see host_ifname).
        assert_eq!(host_ifname(""), "kvcbf29ce484");
        assert_eq!(host_ifname("a"), "kvaf63dc4c86");
    }

    #[test]
    fn host_ifnames_do_not_collide_for_many_uids() {
        let names: std::collections::HashSet<_> = (0..10_000)
            .map(|i| host_ifname(&format!("uid-{i}")))
            .collect();
        assert_eq!(names.len(), 10_000);
    }

    #[test]
    fn validate_ifname_rejects_what_the_kernel_rejects() {
        validate_ifname("eth0").unwrap();
        validate_ifname("abcdefghijklmno").unwrap();
        for bad in [
            "",
            "abcdefghijklmnop",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\0",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }
}
