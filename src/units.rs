//! The one syntax of sizes and durations on the command line, and how they are shown.
//!
//! - A **size** is bytes: a bare number (`65535`, beanstalkd's `-z` meaning), or a number
//!   with a unit: `B`, decimal `KB` `MB` `GB` `TB` (powers of 1000) or binary `KiB` `MiB`
//!   `GiB` `TiB` (powers of 1024), case-insensitive, with or without a space (`10MiB`,
//!   `1.5 GB`). Parsing is the `bytesize` crate's.
//! - A **duration** is a number with a unit (`500ms`, `30s`, `5m`, `1h`, `1h30m`; humantime's
//!   syntax), or a bare `0`. Where beanstalkd gives a flag or command argument a meaning in
//!   seconds (`put`'s delay and TTR, `reserve-with-timeout`, `--output-stall-timeout`), a bare
//!   number is seconds ([`parse_seconds`]); everywhere else a bare number other than 0 is
//!   rejected, because it cannot be told whether it means seconds or milliseconds.
//!
//! Output shows units the same way: [`show_size`] and [`show_millis`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A byte count given on the command line ([`parse_size`]). Shown as its exact binary
/// multiple when it is one (`64MiB`), else as plain bytes, so `--help` defaults read well
/// and parse back to the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        parse_size(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (unit, name) in UNITS {
            if self.0 >= unit && self.0 % unit == 0 {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Parses a size: bytes, bare or with a unit (module docs).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let starts_with_digit = t.bytes().next().is_some_and(|b| b.is_ascii_digit());
    match t.parse::<bytesize::ByteSize>() {
        Ok(size) if starts_with_digit => Ok(size.as_u64()),
        _ => Err(format!(
            "{text:?} is not a size: give bytes, or a number with a unit such as 512KiB, \
             10MiB, 1GiB or 1GB"
        )),
    }
}

/// Parses a duration that needs a unit (`500ms`, `30s`, `5m`); a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() {
        return match t.parse::<u64>() {
            Ok(0) => Ok(Duration::ZERO),
            _ => Err(format!(
                "{text:?} has no unit: write {t}s for seconds or {t}ms for milliseconds"
            )),
        };
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 30s, 5m or 1h ({e})"))
}

/// Parses a duration in whole seconds where beanstalkd defines the unit as seconds: a bare
/// number is seconds, and a unit is accepted if the result is whole seconds (`2m`, `1500ms`
/// is refused).
pub fn parse_seconds(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let d = match t.parse::<u64>() {
        Ok(n) => Duration::from_secs(n),
        Err(_) => humantime::parse_duration(t).map_err(|e| {
            format!("{text:?} is not seconds or a duration like 30s, 5m or 1h ({e})")
        })?,
    };
    if d.subsec_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of seconds"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{text:?} is over 4294967295 seconds"))
}

/// A clap value parser for [`parse_seconds`].
pub fn seconds_arg(text: &str) -> Result<u32, String> {
    parse_seconds(text)
}

/// A byte count for people: `65535 B`, `64.0 MiB (67108864 B)`.
pub fn show_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!(
            "{} ({bytes} B)",
            bytesize::ByteSize::b(bytes).display().iec()
        )
    }
}

/// Milliseconds for people: `0`, `1500ms`, `30s`, `5m`, `1h 30m`.
pub fn show_millis(ms: u64) -> String {
    if ms == 0 {
        return "0".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms))
        .to_string()
        .replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_bare_bytes_or_units() {
        assert_eq!(parse_size("65535"), Ok(65535));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10 mib"), Ok(10 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "ten", "-1", "1 parsec", "GiB", "1e3x"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_display_as_they_parse() {
        for n in [0, 1, 65535, 1 << 20, 64 << 20, 4 << 30, (1 << 20) + 1] {
            assert_eq!(Size(n).to_string().parse::<Size>(), Ok(Size(n)));
        }
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
        assert_eq!(Size(65535).to_string(), "65535");
    }

    #[test]
    fn durations_need_a_unit_except_zero() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        let err = parse_duration("5").expect_err("no unit");
        assert!(err.contains("5s") && err.contains("5ms"), "{err}");
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn seconds_are_bare_or_whole_with_a_unit() {
        assert_eq!(parse_seconds("5"), Ok(5));
        assert_eq!(parse_seconds("2s"), Ok(2));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert!(parse_seconds("1500ms").is_err());
        assert!(parse_seconds("4294967296").is_err());
        assert!(parse_seconds("-1").is_err());
    }

    #[test]
    fn shown_values_carry_units() {
        assert_eq!(show_millis(1500), "1s500ms");
        assert_eq!(show_millis(30_000), "30s");
        assert_eq!(show_millis(0), "0");
        assert_eq!(show_size(100), "100 B");
        assert!(
            show_size(64 << 20).starts_with("64.0 MiB"),
            "{}",
            show_size(64 << 20)
        );
    }
}
