//! Messages whose JSON is not an object of their fields (Go types with their own JSON
//! marshalling), and the value formats Kubernetes' JSON uses for them.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// A message with a hand-written JSON form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    /// meta.v1.Time {seconds, nanos}: RFC 3339 in whole seconds; zero is `null`.
    Time,
    /// meta.v1.MicroTime: RFC 3339 with six fractional digits; zero is `null`.
    MicroTime,
    /// meta.v1.Duration {duration ns}: Go's duration string ("1h0m0s").
    Duration,
    /// resource.Quantity and QuantityValue {string}: the string.
    Quantity,
    /// intstr.IntOrString {type, intVal, strVal}: a number or a string.
    IntOrString,
    /// runtime.RawExtension {raw}: the embedded object itself.
    RawExtension,
    /// meta.v1.FieldsV1 {Raw}: the raw JSON.
    FieldsV1,
    /// meta.v1.Verbs {items}: a JSON array of strings.
    Verbs,
    /// runtime.Unknown: only valid as the outer envelope.
    Unknown,
}

impl Special {
    pub(super) fn of(message: &str) -> Option<Special> {
        Some(match message {
            "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
            "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
            "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
            "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => Special::FieldsV1,
            // ExtraValue (a user's extra attributes) is the same repeated-string wrapper.
            "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs"
            | "k8s.io.api.authentication.v1.ExtraValue"
            | "k8s.io.api.authorization.v1.ExtraValue" => Special::Verbs,
            "k8s.io.apimachinery.pkg.api.resource.Quantity"
            | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => Special::Quantity,
            "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
            "k8s.io.apimachinery.pkg.runtime.RawExtension" => Special::RawExtension,
            "k8s.io.apimachinery.pkg.runtime.Unknown" => Special::Unknown,
            _ => return None,
        })
    }

    /// The JSON of the Go zero value.
    pub(super) fn zero(self) -> Value {
        match self {
            Special::Time
            | Special::MicroTime
            | Special::RawExtension
            | Special::FieldsV1
            | Special::Verbs
            | Special::Unknown => Value::Null,
            Special::Duration => json!("0s"),
            Special::Quantity => json!("0"),
            Special::IntOrString => json!(0),
        }
    }
}

/// Go's zero time.Time (0001-01-01T00:00:00Z) in Unix seconds: Kubernetes writes it as `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// A timestamp as Kubernetes' JSON writes it: `None` for Go's zero time, an error outside the
/// years 0..=9999 that RFC 3339 can hold. `micro` keeps six fractional digits (MicroTime),
/// else the fraction is dropped (Time keeps whole seconds only).
pub(super) fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Result<Option<String>, String> {
    // Time's protobuf decoding ignores nanos; MicroTime's time.Unix carries nanoseconds
    // outside [0, 1e9) into the seconds.
    let nanos = if micro { nanos } else { 0 };
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(|| format!("seconds {seconds} out of range"))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    if seconds == GO_ZERO_TIME && nanos == 0 {
        return Ok(None);
    }
    let out_of_range = || format!("time {seconds}s is outside the years 0 to 9999");
    // Keep the nanosecond value in range for jiff (it is below 1e9 here).
    let ts = jiff::Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0))
        .map_err(|_| out_of_range())?;
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    if !(0..=9999).contains(&dt.year()) {
        return Err(out_of_range());
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    if micro {
        let _ = write!(s, ".{:06}", dt.subsec_nanosecond() / 1000);
    }
    s.push('Z');
    Ok(Some(s))
}

/// Go's time.Duration.String: "1h0m0s", "1.5s", "2ms", "-3µs", "0s".
pub(super) fn go_duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Under a second: the largest unit that keeps the integer part non-zero.
        let (prec, unit) = match u {
            0 => return "0s".to_string(),
            1..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (frac, int) = fraction(u, prec);
        let _ = write!(out, "{int}{frac}{unit}");
    } else {
        let (frac, secs) = fraction(u, 9);
        u = secs / 60;
        out = format!("{}{frac}s", secs % 60);
        if u > 0 {
            out = format!("{}m{out}", u % 60);
            u /= 60;
            if u > 0 {
                out = format!("{u}h{out}");
            }
        }
    }
    if nanos < 0 {
        out.insert(0, '-');
    }
    out
}

/// `v / 10^prec` as integer part and "." + fraction without trailing zeros ("" if none).
fn fraction(v: u64, prec: u32) -> (String, u64) {
    let p = 10u64.pow(prec);
    let (int, frac) = (v / p, v % p);
    if frac == 0 {
        return (String::new(), int);
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), int)
}

/// Standard base64 with padding, as Go's encoding/json writes []byte.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            rfc3339(1_704_164_645, 0, false).unwrap().unwrap(),
            "2024-01-02T03:04:05Z"
        );
        // Time drops the fraction; MicroTime keeps microseconds.
        assert_eq!(
            rfc3339(1_704_164_645, 123_456_789, false).unwrap().unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            rfc3339(1_704_164_645, 123_456_789, true).unwrap().unwrap(),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            rfc3339(0, 0, true).unwrap().unwrap(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(-1, 0, false).unwrap().unwrap(),
            "1969-12-31T23:59:59Z"
        );
        // Nanoseconds beyond a second carry over, as time.Unix does.
        assert_eq!(
            rfc3339(0, 1_500_000_000, true).unwrap().unwrap(),
            "1970-01-01T00:00:01.500000Z"
        );
        assert_eq!(
            rfc3339(0, -1, true).unwrap().unwrap(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339(0, -1, false).unwrap().unwrap(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(rfc3339(GO_ZERO_TIME, 0, false).unwrap(), None);
        assert_eq!(rfc3339(GO_ZERO_TIME, 0, true).unwrap(), None);
        assert_eq!(
            rfc3339(GO_ZERO_TIME, 1000, true).unwrap().unwrap(),
            "0001-01-01T00:00:00.000001Z"
        );
        assert!(rfc3339(GO_ZERO_TIME * 2, 0, false).is_err());
        assert!(rfc3339(300_000_000_000, 0, false).is_err());
        assert!(rfc3339(i64::MAX, 1_000_000_000, false).is_err());
    }

    #[test]
    fn durations_as_go_prints_them() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-5_000_000, "-5ms"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ];
        for (ns, want) in cases {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn base64_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn specials_by_name() {
        assert_eq!(
            Special::of("k8s.io.apimachinery.pkg.apis.meta.v1.Time"),
            Some(Special::Time)
        );
        assert_eq!(Special::of("k8s.io.api.core.v1.Pod"), None);
        assert_eq!(Special::IntOrString.zero(), json!(0));
        assert_eq!(Special::Time.zero(), Value::Null);
    }
}
