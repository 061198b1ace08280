//! Resource quantities (`250m`, `128Mi`, `1.5`, `2e3`), as Kubernetes' `resource.Quantity`:
//! parsing (the API server's validation, the scheduler's and kubelet's arithmetic), exact
//! comparison, adding, and printing in the canonical form (the per-node sums of `describe node`).

use std::cmp::Ordering;
use std::fmt;

/// The message Kubernetes gives for a malformed quantity (`resource.ErrFormatWrong`).
pub const FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not `[+-]digits[.digits]suffix`.
    #[error("invalid quantity {input:?}")]
    Invalid { input: String },
    /// The number is fine, the suffix is none Kubernetes knows.
    #[error("invalid quantity {input:?}: unknown suffix {suffix:?}")]
    UnknownSuffix { input: String, suffix: String },
    /// Well formed, but too large to count exactly in nano-units (only [`Quantity::parse`]).
    #[error("quantity {input:?} is out of range")]
    OutOfRange { input: String },
}

type Result<T> = std::result::Result<T, QuantityError>;

/// How a quantity was written, which decides how sums are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: Ki, Mi, Gi, ...
    BinarySi,
    /// Powers of 1000: n, u, m, k, M, G, ... (also used for `e` exponents).
    DecimalSi,
}

/// A quantity held exactly as a count of nano-units.
///
/// Equality and order compare values only (`1Ki == 1024`), as `Quantity.Cmp` does; the format
/// only decides how the quantity prints.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    #[must_use]
    pub fn zero(format: Format) -> Self {
        Quantity { nanos: 0, format }
    }

    /// Parses `s` for arithmetic: the value must be exact, so a quantity beyond the range of
    /// nano-units (about 10^29 units) is an error. Surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (q, exact) = Self::parse_inner(s)?;
        if !exact {
            return Err(QuantityError::OutOfRange {
                input: s.to_owned(),
            });
        }
        Ok(q)
    }

    /// Parses `s` as the API server decodes it: every well-formed quantity is accepted, and
    /// values beyond the range of nano-units saturate (Kubernetes caps them too), which keeps
    /// the order of anything a cluster can meaningfully express.
    pub fn parse_saturating(s: &str) -> Result<Self> {
        Self::parse_inner(s).map(|(q, _)| q)
    }

    /// The quantity and whether it is exact (false: it saturated).
    fn parse_inner(s: &str) -> Result<(Self, bool)> {
        let invalid = || QuantityError::Invalid {
            input: s.to_owned(),
        };
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'+') => (false, &s[1..]),
            Some(b'-') => (true, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.matches('.').count() > 1 || !number.bytes().any(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let (dec_exp, bin_exp, format) = suffix_exponents(suffix).ok_or_else(|| {
            if suffix.starts_with(['e', 'E']) {
                invalid()
            } else {
                QuantityError::UnknownSuffix {
                    input: s.to_owned(),
                    suffix: suffix.to_owned(),
                }
            }
        })?;
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // Trailing zeros of the fraction change nothing but the digit count.
        let frac_part = frac_part.trim_end_matches('0');
        let mut value = Saturating::default();
        for d in int_part.bytes().chain(frac_part.bytes()) {
            value.mul(Some(10));
            value.add(i128::from(d - b'0'));
        }
        value.mul(Some(1i128 << bin_exp));
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| invalid())?;
        let exp10 = dec_exp.saturating_add(9).saturating_sub(frac_len);
        if exp10 >= 0 {
            value.mul(pow10(exp10.unsigned_abs()));
        } else {
            // Below one nano-unit Kubernetes rounds up (away from zero).
            value.div_ceil(pow10(exp10.unsigned_abs()));
        }
        let nanos = if negative { -value.n } else { value.n };
        Ok((Quantity { nanos, format }, value.exact))
    }

    /// The sum keeps the receiver's format, like `Quantity.Add`.
    // A named method, as in apimachinery's Quantity.Add; sums never overflow (saturating).
    #[expect(
        clippy::should_implement_trait,
        reason = "Kubernetes' Quantity.Add keeps the receiver's format, which `+` would hide"
    )]
    #[must_use]
    pub fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }

    /// Value in thousandths (kubectl compares CPU in milli-units), rounded up.
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// Value in whole units, rounded up.
    pub fn value(&self) -> i128 {
        ceil_div(self.nanos, NANO)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether this is a whole number (extended resources must be).
    pub fn is_whole(&self) -> bool {
        self.nanos % NANO == 0
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// A non-negative count that sticks at `i128::MAX` and remembers that it did.
struct Saturating {
    n: i128,
    exact: bool,
}

impl Default for Saturating {
    fn default() -> Self {
        Self { n: 0, exact: true }
    }
}

impl Saturating {
    /// `by` is `None` when the factor itself is beyond i128.
    fn mul(&mut self, by: Option<i128>) {
        if self.n != 0 {
            self.set(by.and_then(|by| self.n.checked_mul(by)));
        }
    }

    fn add(&mut self, by: i128) {
        self.set(self.n.checked_add(by));
    }

    fn div_ceil(&mut self, by: Option<i128>) {
        self.n = match by {
            Some(by) => self.n.div_euclid(by) + i128::from(self.n.rem_euclid(by) != 0),
            // A divisor beyond i128 leaves less than one nano-unit, which rounds up.
            None => i128::from(self.n > 0),
        };
    }

    fn set(&mut self, n: Option<i128>) {
        match n {
            Some(n) if self.exact => self.n = n,
            _ => {
                self.n = i128::MAX;
                self.exact = false;
            }
        }
    }
}

/// (power of ten, power of two, format) of a suffix.
fn suffix_exponents(suffix: &str) -> Option<(i32, u32, Format)> {
    let dec = |e| (e, 0, Format::DecimalSi);
    let bin = |e| (0, e, Format::BinarySi);
    Some(match suffix {
        "" => dec(0),
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        s if s.starts_with(['e', 'E']) => {
            let digits = s[1..].trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            dec(s[1..].parse::<i32>().ok()?)
        }
        _ => return None,
    })
}

/// 10^e, if it fits.
fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 { q + 1 } else { q }
}

impl fmt::Display for Quantity {
    /// The canonical form: the largest suffix that keeps the number whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        if self.format == Format::BinarySi && self.nanos % NANO == 0 {
            let units = self.nanos / NANO;
            // Small binary quantities read better in decimal (Kubernetes does the same).
            if units.abs() >= 1024 {
                for (shift, suffix) in [
                    (60, "Ei"),
                    (50, "Pi"),
                    (40, "Ti"),
                    (30, "Gi"),
                    (20, "Mi"),
                    (10, "Ki"),
                ] {
                    let unit = 1i128 << shift;
                    if units % unit == 0 {
                        return write!(f, "{}{suffix}", units / unit);
                    }
                }
                return write!(f, "{units}");
            }
        }
        // (nano-units per unit of the suffix, suffix)
        for (unit, suffix) in [
            (NANO * 1_000_000_000_000_000_000, "E"),
            (NANO * 1_000_000_000_000_000, "P"),
            (NANO * 1_000_000_000_000, "T"),
            (NANO * 1_000_000_000, "G"),
            (NANO * 1_000_000, "M"),
            (NANO * 1_000, "k"),
            (NANO, ""),
            (1_000_000, "m"),
            (1_000, "u"),
        ] {
            if self.nanos % unit == 0 {
                return write!(f, "{}{suffix}", self.nanos / unit);
            }
        }
        write!(f, "{}n", self.nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s} should parse: {e}"))
    }

    #[test]
    fn parses_and_prints_canonically() {
        for (input, canonical) in [
            ("100m", "100m"),
            ("0.5", "500m"),
            ("1", "1"),
            ("1500", "1500"),
            ("2000", "2k"),
            ("1.5Gi", "1536Mi"),
            ("128Mi", "128Mi"),
            ("1024Ki", "1Mi"),
            ("512", "512"),
            ("1e3", "1k"),
            ("5E-3", "5m"),
            ("2G", "2G"),
            ("0", "0"),
            ("+3", "3"),
            ("-250m", "-250m"),
            ("1n", "1n"),
            ("0.0000000001", "1n"),
            ("0e100", "0"),
            ("1.50000000000000000000000000000000000000000", "1500m"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
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
    fn sub_nano_values_round_up_after_scaling() {
        // 1e-10 k is 1e-7: exactly 100n, not a nano-unit rounded up first and then scaled.
        assert_eq!(q("0.0000000001k").to_string(), "100n");
        // 1.024e-7 rounds up to 103n.
        assert_eq!(q("0.0000000001Ki").to_string(), "103n");
        assert_eq!(q("1e-20").to_string(), "1n");
        assert_eq!(q("-0.1n").to_string(), "-1n");
    }

    #[test]
    fn orders_exactly() {
        assert_eq!(q("100m").cmp(&q("0.1")), Ordering::Equal);
        assert_eq!(q("500m").cmp(&q("1")), Ordering::Less);
        assert_eq!(q("1Gi").cmp(&q("1G")), Ordering::Greater);
        assert_eq!(q("128Mi").cmp(&q("64Mi")), Ordering::Greater);
        // Sub-nano values round up to one nano-unit.
        assert_eq!(q("0.1n").cmp(&q("1n")), Ordering::Equal);
    }

    #[test]
    fn saturates_only_when_asked() {
        let huge = Quantity::parse_saturating("1e100").expect("well formed");
        // Absurdly large values saturate instead of overflowing.
        assert_eq!(huge.cmp(&q("1Ei")), Ordering::Greater);
        assert!(
            Quantity::parse_saturating("-1e100")
                .expect("well formed")
                .is_negative()
        );
        assert_eq!(
            Quantity::parse("1e100"),
            Err(QuantityError::OutOfRange {
                input: "1e100".into()
            })
        );
        assert_eq!(
            Quantity::parse_saturating("1e-100").expect("well formed"),
            q("1n")
        );
    }

    #[test]
    fn sums_keep_the_first_format() {
        assert_eq!(q("250m").add(q("500m")).to_string(), "750m");
        assert_eq!(q("1Gi").add(q("512Mi")).to_string(), "1536Mi");
        assert_eq!(q("64Mi").add(q("128Mi")).to_string(), "192Mi");
        assert_eq!(
            Quantity::zero(Format::DecimalSi).add(q("1")).to_string(),
            "1"
        );
        assert_eq!(Quantity::zero(Format::BinarySi).to_string(), "0");
    }

    #[test]
    fn values_round_up() {
        assert_eq!(q("1500m").milli_value(), 1500);
        assert_eq!(q("1500m").value(), 2);
        assert_eq!(q("2Ki").value(), 2048);
        assert_eq!(q("1n").milli_value(), 1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.2.3", "5X", "1e99", "Mi", ".", "--1", "1x", "1 Mi", "1e", "1e+", "1Ki1",
            "1mi",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
            if bad != "1e99" {
                assert!(
                    Quantity::parse_saturating(bad).is_err(),
                    "{bad:?} should not parse"
                );
            }
        }
        assert!(matches!(
            Quantity::parse("5X"),
            Err(QuantityError::UnknownSuffix { suffix, .. }) if suffix == "X"
        ));
    }

    #[test]
    fn saturating_counter_sticks() {
        let mut s = Saturating {
            n: i128::MAX / 2,
            exact: true,
        };
        s.mul(Some(3));
        assert!(!s.exact);
        s.div_ceil(Some(10));
        assert!(!s.exact, "a saturated value stays inexact");
        let mut zero = Saturating::default();
        zero.mul(None);
        assert!(
            zero.exact && zero.n == 0,
            "zero times anything is exactly zero"
        );
    }
}
