//! Time as the engine sees it: a value passed in, never read from a clock.

use std::ops::{Add, Sub};

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A point in time: nanoseconds since the Unix epoch. Wall-clock based so that deadlines
/// written to the log keep their meaning across a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `secs` whole seconds later.
    pub fn plus_secs(self, secs: u32) -> Timestamp {
        self + u64::from(secs) * NANOS_PER_SEC
    }

    /// Whole seconds from `self` to `later`, truncated toward zero, negative if `later` is
    /// earlier (as beanstalkd's integer arithmetic reports time left).
    pub fn secs_until(self, later: Timestamp) -> i64 {
        (i128::from(later.0) - i128::from(self.0)) as i64 / NANOS_PER_SEC as i64
    }
}

impl Add<u64> for Timestamp {
    type Output = Timestamp;
    fn add(self, nanos: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(nanos))
    }
}

impl Sub<u64> for Timestamp {
    type Output = Timestamp;
    fn sub(self, nanos: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(nanos))
    }
}
