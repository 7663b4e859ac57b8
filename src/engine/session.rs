//! Sessions: one per client connection, holding what the protocol ties to a connection.

use std::collections::BTreeSet;

use super::time::Timestamp;
use super::tube::TubeId;
use crate::protocol::JobId;

/// Identifies a session for its whole life; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// A blocked reserve.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// When `reserve-with-timeout` gives up; `None` for plain `reserve`.
    pub timeout_at: Option<Timestamp>,
    /// The time this wait is registered under in the engine's wake set.
    pub wake_at: Timestamp,
}

/// One client's state.
#[derive(Debug)]
pub struct Session {
    /// The tube `put` goes to.
    pub using: TubeId,
    /// Watched tubes, in the order they were watched.
    pub watching: Vec<TubeId>,
    /// Jobs this session has reserved, by TTR deadline.
    pub reserved: BTreeSet<(Timestamp, JobId)>,
    /// The blocked reserve, if any.
    pub wait: Option<Wait>,
    /// Has issued a well-formed put.
    pub producer: bool,
    /// Has issued a reserve.
    pub worker: bool,
    /// Asked for larder's fields in `stats-job` and `stats-tube` (`extended-stats`).
    pub extended_stats: bool,
}

impl Session {
    /// A session using and watching `default`.
    pub fn new(default: TubeId) -> Session {
        Session {
            using: default,
            watching: vec![default],
            reserved: BTreeSet::new(),
            wait: None,
            producer: false,
            worker: false,
            extended_stats: false,
        }
    }

    /// The earliest TTR deadline among this session's reservations.
    pub fn soonest_deadline(&self) -> Option<Timestamp> {
        self.reserved.first().map(|&(d, _)| d)
    }
}
