//! `spec.loadBalancerSourceRanges`: the client ranges a LoadBalancer IP admits, parsed the
//! way kube-proxy reads them, and their entries in the datapath's source-range map.
//!
//! As in kube-proxy's iptables mode (and Cilium's default), only the LoadBalancer ingress
//! IPs are restricted: the ClusterIP, externalIPs and NodePorts of the same Service are not.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use kproxy_common::{SRC_RANGE_PREFIX_BASE, SrcRangeKey, svc_flags};

/// An IPv4 prefix, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// Why a range was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not a valid CIDR (e.g. 10.9.8.0/24)")]
    Invalid(String),
}

impl Cidr {
    /// The range with host bits cleared (Kubernetes accepts "10.0.0.1/8" in this field).
    #[must_use]
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        }
    }

    /// Whether `addr` is in the range.
    #[must_use]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        Self::new(addr, self.len).addr == self.addr
    }

    /// The range's key in the source-range map for the frontend with `revnat_id`:
    /// (LPM prefix length, key data).
    #[must_use]
    pub fn map_key(&self, revnat_id: u16) -> (u32, SrcRangeKey) {
        (
            SRC_RANGE_PREFIX_BASE + u32::from(self.len),
            SrcRangeKey {
                revnat_id,
                _pad: 0,
                addr: u32::from(self.addr).to_be(),
            },
        )
    }

    /// The frontend and range of a map key (inverse of [`Cidr::map_key`]).
    #[must_use]
    pub fn from_map_key(prefix_len: u32, key: &SrcRangeKey) -> Option<(u16, Self)> {
        let len = u8::try_from(prefix_len.checked_sub(SRC_RANGE_PREFIX_BASE)?).ok()?;
        (len <= 32).then(|| {
            (
                key.revnat_id,
                Self::new(Ipv4Addr::from(u32::from_be(key.addr)), len),
            )
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `a.b.c.d/len`, surrounding spaces allowed (a historical leniency of the field).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || CidrError::Invalid(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let len: u8 = len.parse().map_err(|_| invalid())?;
        if len > 32 {
            return Err(invalid());
        }
        Ok(Self::new(addr, len))
    }
}

/// The IPv4 ranges of a Service's `loadBalancerSourceRanges`, sorted and deduplicated;
/// IPv6 ranges are skipped (kproxy serves IPv4), invalid ones described in `problems`.
/// Empty: the LoadBalancer IPs admit every client (kube-proxy ignores invalid entries too).
#[must_use]
pub fn parse_all(ranges: &[String], problems: &mut Vec<String>) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = ranges
        .iter()
        .filter(|r| !r.contains(':'))
        .filter_map(|r| match r.parse() {
            Ok(cidr) => Some(cidr),
            Err(err) => {
                problems.push(format!("loadBalancerSourceRanges: {err}, skipped"));
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The [`svc_flags::SOURCE_RANGE`] bit and the ranges of a frontend in a Service with
/// `ranges`: only LoadBalancer IPs (`lb_ip`) are restricted.
#[must_use]
pub fn for_frontend(lb_ip: bool, ranges: &[Cidr]) -> (u32, Vec<Cidr>) {
    if lb_ip && !ranges.is_empty() {
        (svc_flags::SOURCE_RANGE, ranges.to_vec())
    } else {
        (0, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c: Cidr = " 10.1.2.3/8 ".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!c.contains(Ipv4Addr::new(11, 0, 0, 1)));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
        let host: Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(host.contains(Ipv4Addr::new(192, 0, 2, 7)));
        for bad in ["10.0.0.0", "10.0.0.0/33", "nope/8", "10.0.0/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_all_skips_ipv6_and_reports_invalid() {
        let mut problems = Vec::new();
        let ranges = [
            "10.0.0.0/8",
            "2001:db8::/32",
            "bad",
            "10.0.0.0/8",
            "192.0.2.0/24",
        ]
        .map(String::from);
        let got = parse_all(&ranges, &mut problems);
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "192.0.2.0/24"]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("\"bad\""));
    }

    #[test]
    fn map_keys_round_trip() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        let (len, key) = c.map_key(7);
        assert_eq!(len, SRC_RANGE_PREFIX_BASE + 24);
        assert_eq!(key.addr.to_ne_bytes(), [192, 0, 2, 0]);
        assert_eq!(Cidr::from_map_key(len, &key), Some((7, c)));
        assert_eq!(Cidr::from_map_key(5, &key), None);
    }

    #[test]
    fn only_loadbalancer_ips_are_restricted() {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "type": "LoadBalancer", "clusterIP": "10.96.0.10",
                "externalIPs": ["192.0.2.50"],
                "loadBalancerSourceRanges": ["10.1.0.0/16", "oops"],
                "ports": [{"port": 80, "nodePort": 30080}]
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "172.30.0.1"}]}}
        }))
        .expect("service");
        let built = crate::model::build_service(
            &svc,
            &[],
            &[Ipv4Addr::new(192, 0, 2, 1)],
            &crate::model::policy::Locality::default(),
        );
        assert_eq!(built.problems.len(), 1, "{:?}", built.problems);
        assert_eq!(built.frontends.len(), 4);
        for fe in built.frontends.values() {
            let restricted = fe.kind == crate::model::FrontendKind::LoadBalancerIp;
            assert_eq!(
                fe.flags & svc_flags::SOURCE_RANGE != 0,
                restricted,
                "{fe:?}"
            );
            assert_eq!(fe.source_ranges.len(), usize::from(restricted), "{fe:?}");
        }
    }
}
