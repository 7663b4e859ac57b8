//! Per-tube settings (larder's `config-tube` extension): their names, and how each value is
//! written on the wire.
//!
//! [`TubeSetting::spec`] is the one place that maps a setting to its name and unit; adding
//! a setting is a variant, an entry in [`TubeSetting::ALL`] and a line there. Every value is
//! held as a `u64` in the setting's unit, so the log and the engine treat all settings alike.

use std::fmt;

/// How a setting's value is written on the wire, and the `u64` it is held as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A whole number up to `max`.
    Count {
        /// Largest accepted value.
        max: u64,
    },
    /// A duration in whole milliseconds, up to `u32::MAX` seconds.
    Millis,
    /// A decimal number with at most three places, held in thousandths, from `min` to
    /// `max` thousandths.
    Thousandths {
        /// Smallest accepted value, in thousandths.
        min: u64,
        /// Largest accepted value, in thousandths.
        max: u64,
    },
}

/// Largest duration a setting accepts: `u32::MAX` seconds, in milliseconds.
pub const MAX_MILLIS: u64 = u32::MAX as u64 * 1000;

/// A per-tube setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TubeSetting {
    /// Attempts before a job is buried automatically; 0 means unlimited.
    MaxAttempts,
    /// Delay before the first retry after a timeout, disconnect or reported failure (ms);
    /// 0 means no retry delay (beanstalkd's behaviour: ready at once).
    RetryDelay,
    /// Factor the retry delay grows by with each further attempt (thousandths).
    RetryBackoff,
    /// Longest retry delay (ms); 0 means no cap.
    RetryMax,
    /// Fraction of the retry delay that is randomly taken off (thousandths, 0 to 1).
    RetryJitter,
    /// Most jobs (any state) the tube holds; a put beyond gets `REFUSED max-tube-jobs`.
    /// 0 means no limit.
    MaxTubeJobs,
    /// Most body bytes (jobs in any state) the tube holds; a put that would go over gets
    /// `REFUSED max-tube-bytes`. 0 means no limit.
    MaxTubeBytes,
}

impl TubeSetting {
    /// Every setting, in the order `stats-tube` lists them.
    pub const ALL: [TubeSetting; 7] = [
        TubeSetting::MaxAttempts,
        TubeSetting::RetryDelay,
        TubeSetting::RetryBackoff,
        TubeSetting::RetryMax,
        TubeSetting::RetryJitter,
        TubeSetting::MaxTubeJobs,
        TubeSetting::MaxTubeBytes,
    ];

    /// Number of settings.
    pub const COUNT: usize = Self::ALL.len();

    /// Name on the wire, unit, and the value a server uses when not told otherwise.
    pub const fn spec(self) -> (&'static str, Unit, u64) {
        match self {
            TubeSetting::MaxAttempts => (
                "max-attempts",
                Unit::Count {
                    max: u32::MAX as u64,
                },
                0,
            ),
            TubeSetting::RetryDelay => ("retry-delay", Unit::Millis, 0),
            TubeSetting::RetryBackoff => (
                "retry-backoff",
                Unit::Thousandths {
                    min: 1000,
                    max: 1_000_000,
                },
                2000,
            ),
            TubeSetting::RetryMax => ("retry-max", Unit::Millis, 0),
            TubeSetting::RetryJitter => {
                ("retry-jitter", Unit::Thousandths { min: 0, max: 1000 }, 0)
            }
            TubeSetting::MaxTubeJobs => ("max-tube-jobs", Unit::Count { max: u64::MAX }, 0),
            TubeSetting::MaxTubeBytes => ("max-tube-bytes", Unit::Count { max: u64::MAX }, 0),
        }
    }

    /// Dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        self.spec().0
    }

    /// The unit of its values.
    pub fn unit(self) -> Unit {
        self.spec().1
    }

    /// The value used when neither the tube nor the server sets one.
    pub fn builtin_default(self) -> u64 {
        self.spec().2
    }

    /// The setting called `name`.
    pub fn from_name(name: &[u8]) -> Option<TubeSetting> {
        Self::ALL.into_iter().find(|s| s.name().as_bytes() == name)
    }

    /// Parses a value as written on the wire (without `default`, which callers handle).
    pub fn parse(self, text: &[u8]) -> Option<u64> {
        match self.unit() {
            Unit::Count { max } => parse_int(text).filter(|&n| n <= max),
            Unit::Millis => parse_int(text).filter(|&n| n <= MAX_MILLIS),
            Unit::Thousandths { min, max } => {
                parse_thousandths(text).filter(|n| (min..=max).contains(n))
            }
        }
    }

    /// A value as written on the wire.
    pub fn format(self, value: u64) -> String {
        match self.unit() {
            Unit::Count { .. } | Unit::Millis => value.to_string(),
            Unit::Thousandths { .. } => format_thousandths(value),
        }
    }
}

impl fmt::Display for TubeSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decimal digits only, no sign, no overflow, at most 20 digits.
fn parse_int(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `N`, `N.D`, `N.DD` or `N.DDD` as thousandths.
fn parse_thousandths(text: &[u8]) -> Option<u64> {
    let (whole, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b""[..]),
    };
    if frac.len() > 3 || (text.contains(&b'.') && frac.is_empty()) {
        return None;
    }
    let whole = parse_int(whole)?;
    let mut thousandths = if frac.is_empty() { 0 } else { parse_int(frac)? };
    for _ in frac.len()..3 {
        thousandths *= 10;
    }
    whole.checked_mul(1000)?.checked_add(thousandths)
}

/// Thousandths as a decimal without trailing zeros: 2000 → `2`, 1500 → `1.5`.
pub fn format_thousandths(value: u64) -> String {
    let (whole, frac) = (value / 1000, value % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_parses_and_formats_its_own_values() {
        use TubeSetting as S;
        assert_eq!(S::MaxAttempts.parse(b"3"), Some(3));
        assert_eq!(S::MaxAttempts.parse(b"4294967296"), None);
        assert_eq!(S::MaxAttempts.parse(b"-1"), None);
        assert_eq!(S::RetryDelay.parse(b"1500"), Some(1500));
        assert_eq!(S::RetryDelay.parse(b"1.5"), None);
        assert_eq!(S::RetryDelay.parse(b""), None);
        assert_eq!(S::RetryBackoff.parse(b"2"), Some(2000));
        assert_eq!(S::RetryBackoff.parse(b"1.25"), Some(1250));
        assert_eq!(S::RetryBackoff.parse(b"0.5"), None);
        assert_eq!(S::RetryBackoff.parse(b"1."), None);
        assert_eq!(S::RetryBackoff.parse(b"1.0001"), None);
        assert_eq!(S::RetryJitter.parse(b"0.1"), Some(100));
        assert_eq!(S::RetryJitter.parse(b"1"), Some(1000));
        assert_eq!(S::RetryJitter.parse(b"1.001"), None);
        assert_eq!(S::RetryJitter.parse(b".5"), None);
        for s in S::ALL {
            assert_eq!(S::from_name(s.name().as_bytes()), Some(s));
            let v = s.builtin_default();
            assert_eq!(s.parse(s.format(v).as_bytes()), Some(v), "{s}");
        }
        assert_eq!(S::RetryBackoff.format(1500), "1.5");
        assert_eq!(S::RetryJitter.format(25), "0.025");
        assert_eq!(S::from_name(b"max-attempt"), None);
        assert_eq!(
            S::MaxTubeJobs.parse(b"18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(S::MaxTubeBytes.parse(b"18446744073709551616"), None);
        assert_eq!(S::MaxTubeBytes.parse(b"1e6"), None);
    }
}
