//! resource.Quantity (`100m`, `1`, `64Mi`, `1.5Gi`, `1e3`): parsing and exact comparison.
//! Kubernetes rejects a malformed quantity while decoding the body, so callers turn a parse
//! failure into [`Invalid::Decode`](super::Invalid::Decode).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

use super::{Invalid, Path};

pub(crate) const FORMAT_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A quantity in nano-units. Values beyond the i128 range saturate, which keeps the order of
/// anything a cluster can meaningfully express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Quantity {
    nanos: i128,
}

impl Quantity {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'+') => (false, &s[1..]),
            Some(b'-') => (true, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        if num.matches('.').count() > 1 || !num.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let (dec_exp, bin_exp) = suffix_exponents(suffix)?;

        let mut mantissa: i128 = 0;
        for d in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .saturating_mul(10)
                .saturating_add(i128::from(d - b'0'));
        }
        let frac_len = i32::try_from(frac_part.len()).ok()?;
        let exp10 = dec_exp.saturating_add(9).saturating_sub(frac_len);
        let mut nanos = mantissa.saturating_mul(1i128 << bin_exp);
        if exp10 >= 0 {
            nanos = nanos.saturating_mul(pow10(exp10.unsigned_abs()));
        } else {
            // Below one nano-unit Kubernetes rounds up.
            let div = pow10(exp10.unsigned_abs());
            nanos = if div == i128::MAX {
                i128::from(nanos > 0)
            } else {
                nanos.saturating_add(div - 1) / div
            };
        }
        Some(Self {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether this is a whole number (extended resources must be).
    pub(crate) fn is_whole(&self) -> bool {
        self.nanos % NANOS_PER_UNIT == 0
    }

    pub(crate) fn cmp_to(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// (power of ten, power of two) of a suffix.
fn suffix_exponents(suffix: &str) -> Option<(i32, u32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => {
            let digits = s[1..].trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (s[1..].parse::<i32>().ok()?, 0)
        }
        _ => return None,
    })
}

/// 10^e, saturating.
fn pow10(e: u32) -> i128 {
    10i128.checked_pow(e).unwrap_or(i128::MAX)
}

/// Every quantity of a pod spec must parse (container resources, emptyDir size limits).
pub(crate) fn check_pod_spec(spec: &PodSpec, path: &Path) -> Result<(), Invalid> {
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let res_path = path.child(list).index(i).child("resources");
            if let Some(r) = &c.resources {
                check_map(r.limits.as_ref(), &res_path.child("limits"))?;
                check_map(r.requests.as_ref(), &res_path.child("requests"))?;
            }
        }
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            check_one(
                limit,
                &path
                    .child("volumes")
                    .index(i)
                    .child("emptyDir")
                    .child("sizeLimit"),
            )?;
        }
    }
    Ok(())
}

fn check_map(map: Option<&BTreeMap<String, Q>>, path: &Path) -> Result<(), Invalid> {
    for (k, q) in map.into_iter().flatten() {
        check_one(q, &path.key(k))?;
    }
    Ok(())
}

fn check_one(q: &Q, path: &Path) -> Result<(), Invalid> {
    match Quantity::parse(&q.0) {
        Some(_) => Ok(()),
        None => Err(Invalid::Decode(format!("{path}: {FORMAT_MSG}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("0.1"), q("100m"));
        assert_eq!(q(".5"), q("500m"));
        assert_eq!(q("5."), q("5"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1E3"), q("1k"));
        assert_eq!(q("1E"), q("1e18"));
        assert_eq!(q("2e-3"), q("2m"));
        assert_eq!(q("+3"), q("3"));
        assert!(q("-1").is_negative());
        assert_eq!(q("1n"), q("0.000000001"));
        assert!(q("64Mi").is_whole());
        assert!(!q("1500m").is_whole());
    }

    #[test]
    fn orders_exactly() {
        assert_eq!(q("100m").cmp_to(&q("0.1")), Ordering::Equal);
        assert_eq!(q("500m").cmp_to(&q("1")), Ordering::Less);
        assert_eq!(q("1Gi").cmp_to(&q("1G")), Ordering::Greater);
        assert_eq!(q("128Mi").cmp_to(&q("64Mi")), Ordering::Greater);
        // Sub-nano values round up to one nano-unit.
        assert_eq!(q("0.1n").cmp_to(&q("1n")), Ordering::Equal);
        // Absurdly large values saturate instead of overflowing.
        assert_eq!(q("1e100").cmp_to(&q("1Ei")), Ordering::Greater);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "abc", "1.2.3", "1x", "Mi", "1 Mi", "1e", "1e+", "1Ki1", ".", "--1", "1mi",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }
}
