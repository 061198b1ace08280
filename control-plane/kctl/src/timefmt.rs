//! Time formatting and parsing the way kubectl does it: ages like `5m`/`3h2m`
//! (apimachinery's `HumanDuration`, shared with the server's tables), RFC 1123 timestamps in describe output, and Go duration
//! flags like `--timeout=1m30s`.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use jiff::{Timestamp, tz::TimeZone};

/// Age of `t` relative to `now`; `<unknown>` when there is no timestamp.
/// One implementation with the server's AGE column: kproxy-api's.
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    kproxy_api::table::age_since(t, now)
}

/// Go's `time.RFC1123Z` (`Mon, 02 Jan 2006 15:04:05 -0700`) in the given zone.
pub fn rfc1123z(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// Parses a Go duration (`30s`, `1m30s`, `500ms`, `2h`, `0`); a bare number means seconds, as
/// kubectl accepts for `--timeout`.
pub fn parse_go_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s.is_empty() {
        bail!("invalid duration \"\"");
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            bail!("invalid duration {s:?}");
        }
        let value: f64 = rest[..num_len]
            .parse()
            .with_context(|| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => bail!("missing unit in duration {s:?}"),
            unit => bail!("unknown unit {unit:?} in duration {s:?}"),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * scale)
            .with_context(|| format!("invalid duration {s:?}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_without_timestamp_is_unknown() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(age(None, now), "<unknown>");
        assert_eq!(
            age(Some(Timestamp::from_second(999_990).unwrap()), now),
            "10s"
        );
    }

    #[test]
    fn formats_rfc1123z() {
        let t: Timestamp = "2024-03-05T07:08:09Z".parse().unwrap();
        assert_eq!(
            rfc1123z(t, &TimeZone::UTC),
            "Tue, 05 Mar 2024 07:08:09 +0000"
        );
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_mins(90));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_go_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "s", "5x", "1m5", "-3s", "abc"] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
