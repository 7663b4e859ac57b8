//! Dead letters on the wire (larder extensions): why a job was buried, and the filter the
//! `list-dead`, `kick-dead` and `delete-dead` commands share.

use std::fmt;

use super::{JobId, TubeName};

/// Why a job is buried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuryReason {
    /// A worker buried it (`bury`).
    Buried,
    /// It used up its tube's `max-attempts`.
    MaxAttempts,
}

impl BuryReason {
    /// Every reason, in the order stats list them.
    pub const ALL: [BuryReason; 2] = [BuryReason::Buried, BuryReason::MaxAttempts];

    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index in `0..COUNT`, also the reason's code in log records.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason with index `i`.
    pub fn from_index(i: usize) -> Option<BuryReason> {
        Self::ALL.get(i).copied()
    }

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            BuryReason::Buried => "buried",
            BuryReason::MaxAttempts => "max-attempts",
        }
    }

    /// The reason called `name`.
    pub fn from_name(name: &[u8]) -> Option<BuryReason> {
        Self::ALL.into_iter().find(|r| r.name().as_bytes() == name)
    }
}

impl fmt::Display for BuryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which dead letters (buried jobs) a command applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadFilter {
    /// Only this tube's (`*` on the wire: every tube).
    pub tube: Option<TubeName>,
    /// Only those buried for this reason (`*`: any).
    pub reason: Option<BuryReason>,
    /// Only those buried at least this many milliseconds ago (0: any).
    pub older_than_ms: u64,
    /// Lowest job id, inclusive.
    pub from: JobId,
    /// Highest job id, inclusive.
    pub to: JobId,
}

impl DeadFilter {
    /// Every dead letter.
    pub fn all() -> DeadFilter {
        DeadFilter {
            tube: None,
            reason: None,
            older_than_ms: 0,
            from: JobId(0),
            to: JobId(u64::MAX),
        }
    }
}

impl fmt::Display for DeadFilter {
    /// The filter's wire form: `<tube> <reason> <older-than-ms> <from-id> <to-id>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tube {
            Some(t) => write!(f, "{t} ")?,
            None => f.write_str("* ")?,
        }
        match self.reason {
            Some(r) => write!(f, "{r} ")?,
            None => f.write_str("* ")?,
        }
        write!(f, "{} {} {}", self.older_than_ms, self.from, self.to)
    }
}
