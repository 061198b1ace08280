//! Time formatting and parsing the way kubectl does it: ages like `5m`/`3h2m`
//! (apimachinery's `HumanDuration`), RFC 1123 timestamps in describe output, and Go duration
//! flags like `--timeout=1m30s`.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use jiff::{Timestamp, tz::TimeZone};

/// kubectl's approximate age of something, e.g. `45s`, `7m3s`, `3h`, `2d5h`, `1y30d`.
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let seconds = d.as_secs();
    // Up to two seconds in the future counts as "now" (clock skew between client and server).
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        let years = hours / 24 / 365;
        return if days == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{days}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of `t` relative to `now`; `<unknown>` when there is no timestamp.
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".into(),
    }
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
    use jiff::SignedDuration;

    fn hd(secs: i64) -> String {
        human_duration(SignedDuration::from_secs(secs))
    }

    #[test]
    fn human_durations_follow_kubectl() {
        assert_eq!(hd(-5), "<invalid>");
        assert_eq!(hd(-1), "0s");
        assert_eq!(hd(0), "0s");
        assert_eq!(hd(119), "119s");
        assert_eq!(hd(120), "2m");
        assert_eq!(hd(7 * 60 + 3), "7m3s");
        assert_eq!(hd(45 * 60), "45m");
        assert_eq!(hd(3 * 3600), "3h");
        assert_eq!(hd(3 * 3600 + 120), "3h2m");
        assert_eq!(hd(30 * 3600), "30h");
        assert_eq!(hd(2 * 86400 + 5 * 3600), "2d5h");
        assert_eq!(hd(3 * 86400), "3d");
        assert_eq!(hd(100 * 86400), "100d");
        assert_eq!(hd(800 * 86400), "2y70d");
        assert_eq!(hd(365 * 3 * 86400), "3y");
        assert_eq!(hd(365 * 10 * 86400), "10y");
    }

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
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
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
