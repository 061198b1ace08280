//! Resource quantities (`250m`, `128Mi`, `1.5`, `2e3`): parsing, adding and printing in the
//! canonical form Kubernetes uses (the per-node sums of `describe node`, the kubelet's limits).

use std::fmt;

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(String);

type Result<T> = std::result::Result<T, QuantityError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(QuantityError(format!($($t)*))) };
}

/// How a quantity was written, which decides how sums are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: Ki, Mi, Gi, ...
    BinarySi,
    /// Powers of 1000: n, u, m, k, M, G, ... (also used for `e` exponents).
    DecimalSi,
}

/// A quantity held exactly as a count of nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn zero(format: Format) -> Self {
        Quantity { nanos: 0, format }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let num_end = s
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
            .map_or(s.len(), |(i, _)| i);
        let (number, suffix) = s.split_at(num_end);
        let mantissa_nanos = parse_decimal_nanos(number)
            .ok_or_else(|| QuantityError(format!("invalid quantity {s:?}")))?;
        let (multiplier, divisor, format): (i128, i128, Format) = match suffix {
            "" => (1, 1, Format::DecimalSi),
            "n" => (1, 1_000_000_000, Format::DecimalSi),
            "u" => (1, 1_000_000, Format::DecimalSi),
            "m" => (1, 1_000, Format::DecimalSi),
            "k" => (1_000, 1, Format::DecimalSi),
            "M" => (1_000_000, 1, Format::DecimalSi),
            "G" => (1_000_000_000, 1, Format::DecimalSi),
            "T" => (1_000_000_000_000, 1, Format::DecimalSi),
            "P" => (1_000_000_000_000_000, 1, Format::DecimalSi),
            "E" => (1_000_000_000_000_000_000, 1, Format::DecimalSi),
            "Ki" => (1 << 10, 1, Format::BinarySi),
            "Mi" => (1 << 20, 1, Format::BinarySi),
            "Gi" => (1 << 30, 1, Format::BinarySi),
            "Ti" => (1 << 40, 1, Format::BinarySi),
            "Pi" => (1 << 50, 1, Format::BinarySi),
            "Ei" => (1 << 60, 1, Format::BinarySi),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..]
                    .parse()
                    .map_err(|_| QuantityError(format!("invalid quantity {s:?}")))?;
                if !(-9..=18).contains(&e) {
                    bail!("quantity {s:?} is out of range");
                }
                if e >= 0 {
                    (10i128.pow(e.unsigned_abs()), 1, Format::DecimalSi)
                } else {
                    (1, 10i128.pow(e.unsigned_abs()), Format::DecimalSi)
                }
            }
            _ => bail!("invalid quantity {s:?}: unknown suffix {suffix:?}"),
        };
        let scaled = mantissa_nanos
            .checked_mul(multiplier)
            .ok_or_else(|| QuantityError(format!("quantity {s:?} is out of range")))?;
        // Finer than a nano-unit rounds up, as Kubernetes does.
        let nanos = if scaled % divisor == 0 {
            scaled / divisor
        } else {
            scaled / divisor + scaled.signum()
        };
        Ok(Quantity { nanos, format })
    }

    /// The sum keeps the receiver's format, like `Quantity.Add`.
    // A named method, as in apimachinery's Quantity.Add; sums never overflow (saturating).
    #[allow(clippy::should_implement_trait)]
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
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 { q + 1 } else { q }
}

/// `"1.25"` → 1_250_000_000 nano-units.
fn parse_decimal_nanos(s: &str) -> Option<i128> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let int: i128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let mut frac_nanos: i128 = 0;
    for (i, c) in frac_part.chars().enumerate() {
        let d = i128::from(c.to_digit(10)?);
        if i < 9 {
            frac_nanos += d * 10i128.pow(8 - i as u32);
        } else if d > 0 {
            // Beyond nano precision: round up.
            frac_nanos += 1;
            break;
        }
    }
    let v = int.checked_mul(NANO)?.checked_add(frac_nanos)?;
    Some(if negative { -v } else { v })
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
        for (exp, suffix) in [
            (18, "E"),
            (15, "P"),
            (12, "T"),
            (9, "G"),
            (6, "M"),
            (3, "k"),
            (0, ""),
            (-3, "m"),
            (-6, "u"),
            (-9, "n"),
        ] {
            let unit = 10i128.pow((exp + 9) as u32);
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
        Quantity::parse(s).unwrap()
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
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
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
        for bad in ["", "abc", "1.2.3", "5X", "1e99", "Mi", ".", "--1"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
