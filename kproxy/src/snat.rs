//! SNAT of external flows to backends on other nodes happens in the datapath (kproxy-ebpf
//! `snat.rs`), on source ports `SNAT_PORT_MIN..=SNAT_PORT_MAX` of the node's own address. A
//! port the node's own connections may also pick (its `ip_local_port_range`) could make a
//! reply to such a connection look like an SNAT reply: say so at start.

use kproxy_common::{SNAT_PORT_MAX, SNAT_PORT_MIN};

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The `ip_local_port_range` sysctl's two numbers.
#[must_use]
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Some((lo, hi)),
        _ => None,
    }
}

/// Whether the ephemeral range `lo..=hi` reaches into the SNAT ports.
#[must_use]
pub fn overlaps_snat(lo: u16, hi: u16) -> bool {
    (lo..=hi).contains(&SNAT_PORT_MIN) || (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&lo)
}

/// Warns when this network namespace's ephemeral ports overlap the SNAT ports.
pub fn check_local_port_range() {
    let Some((lo, hi)) = std::fs::read_to_string(LOCAL_PORT_RANGE)
        .ok()
        .as_deref()
        .and_then(parse_port_range)
    else {
        return;
    };
    if overlaps_snat(lo, hi) {
        tracing::warn!(
            local_lo = lo,
            local_hi = hi,
            snat_lo = SNAT_PORT_MIN,
            snat_hi = SNAT_PORT_MAX,
            "ip_local_port_range overlaps the SNAT ports of external flows to remote backends: \
             the node's own connections to a remote backend may lose replies; keep it below snat_lo"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_stays_clear() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert!(!overlaps_snat(32768, 60999));
        assert!(overlaps_snat(1024, 65535));
        assert!(overlaps_snat(61000, 61000));
        assert_eq!(parse_port_range("x"), None);
    }
}
