//! IP address and CIDR rules (IsValidIP, ValidateEndpointIP, ValidateCIDR).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{FieldError, Path};

pub(crate) const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
pub(crate) const IPV4_MSG: &str = "must be a valid IPv4 address";
pub(crate) const IPV6_MSG: &str = "must be a valid IPv6 address";
const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// IsValidIP.
pub(crate) fn ip(field: &Path, value: &str) -> Result<IpAddr, FieldError> {
    value
        .parse::<IpAddr>()
        .map_err(|_| FieldError::invalid(field, value, IP_MSG))
}

/// Addresses that make no sense as a destination for service traffic: unspecified, loopback
/// and link-local ones (link-local tends to be node-centric, e.g. metadata services).
pub(crate) fn non_special(field: &Path, value: &str, addr: IpAddr) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut reject = |msg: String| errs.push(FieldError::invalid(field, value, msg));
    if addr.is_unspecified() {
        reject(format!("may not be unspecified ({value})"));
    }
    if addr.is_loopback() {
        reject("may not be in the loopback range (127.0.0.0/8, ::1/128)".into());
    }
    if is_link_local_unicast(addr) {
        reject("may not be in the link-local range (169.254.0.0/16, fe80::/10)".into());
    }
    if is_link_local_multicast(addr) {
        reject("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".into());
    }
    errs
}

fn is_link_local_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_link_local_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    }
}

/// An endpoint address: a valid IP that is not special.
pub(crate) fn endpoint_ip(field: &Path, value: &str) -> Vec<FieldError> {
    match ip(field, value) {
        Ok(addr) => non_special(field, value, addr),
        Err(e) => vec![e],
    }
}

pub(crate) fn ipv4(field: &Path, value: &str) -> Result<Ipv4Addr, FieldError> {
    value
        .parse::<Ipv4Addr>()
        .map_err(|_| FieldError::invalid(field, value, IPV4_MSG))
}

pub(crate) fn ipv6(field: &Path, value: &str) -> Result<Ipv6Addr, FieldError> {
    value
        .parse::<Ipv6Addr>()
        .map_err(|_| FieldError::invalid(field, value, IPV6_MSG))
}

/// ValidateCIDR.
pub(crate) fn cidr(field: &Path, value: &str) -> Option<FieldError> {
    value
        .parse::<ipnet::IpNet>()
        .is_err()
        .then(|| FieldError::invalid(field, value, CIDR_MSG))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Path {
        Path::root("x")
    }

    #[test]
    fn special_addresses() {
        assert!(endpoint_ip(&p(), "10.244.1.2").is_empty());
        assert!(endpoint_ip(&p(), "fd00::1").is_empty());
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "169.254.169.254",
            "224.0.0.5",
            "::1",
            "fe80::1",
            "ff02::1",
            "::",
        ] {
            assert_eq!(endpoint_ip(&p(), bad).len(), 1, "{bad}");
        }
        let e = endpoint_ip(&p(), "10.0.0.300");
        assert_eq!(e[0].detail, IP_MSG);
    }

    #[test]
    fn cidrs() {
        assert!(cidr(&p(), "10.244.1.0/24").is_none());
        assert!(cidr(&p(), "fd00:10:244::/64").is_none());
        assert!(cidr(&p(), "10.244.1.0").is_some());
        assert!(cidr(&p(), "10.244.1.0/33").is_some());
    }
}
