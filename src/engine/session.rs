//! Sessions: one per client connection, holding what the protocol ties to a connection.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;

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
    /// Its place in the `waiting` order of the tubes watched (engine-wide, increasing).
    pub seq: u64,
}

/// The tubes one session watches: in `list-tubes-watched` order, with each tube's place,
/// so that watching, ignoring and testing membership cost the same however many are
/// watched.
#[derive(Debug, Default)]
pub struct WatchList {
    order: Vec<TubeId>,
    place: HashMap<TubeId, usize>,
}

impl WatchList {
    /// Whether `tube` is watched.
    pub fn contains(&self, tube: TubeId) -> bool {
        self.place.contains_key(&tube)
    }

    /// Adds `tube` at the end, if it is not watched yet; returns whether it was added.
    pub fn add(&mut self, tube: TubeId) -> bool {
        if self.contains(tube) {
            return false;
        }
        self.place.insert(tube, self.order.len());
        self.order.push(tube);
        true
    }

    /// Removes `tube`, the last watched tube taking its place (as in beanstalkd); returns
    /// whether it was watched.
    pub fn remove(&mut self, tube: TubeId) -> bool {
        let Some(pos) = self.place.remove(&tube) else {
            return false;
        };
        self.order.swap_remove(pos);
        if let Some(&moved) = self.order.get(pos) {
            self.place.insert(moved, pos);
        }
        true
    }

    /// Number of tubes watched.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The watched tubes in order.
    pub fn iter(&self) -> impl Iterator<Item = TubeId> + '_ {
        self.order.iter().copied()
    }
}

/// One client's state.
#[derive(Debug)]
pub struct Session {
    /// The tube `put` goes to.
    pub using: TubeId,
    /// Watched tubes.
    pub watching: WatchList,
    /// Jobs this session has reserved, by TTR deadline.
    pub reserved: BTreeSet<(Timestamp, JobId)>,
    /// The blocked reserve, if any.
    pub wait: Option<Wait>,
    /// Has issued a well-formed put.
    pub producer: bool,
    /// Has issued a reserve.
    pub worker: bool,
    /// Asked for larder's fields in `stats`, `stats-job` and `stats-tube` (`extended-stats`).
    pub extended_stats: bool,
}

impl Session {
    /// A session using and watching `default`.
    pub fn new(default: TubeId) -> Session {
        let mut watching = WatchList::default();
        watching.add(default);
        Session {
            using: default,
            watching,
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
