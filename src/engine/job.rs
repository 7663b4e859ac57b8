//! A job's metadata, where its body is, and the retry facts larder keeps beside
//! beanstalkd's.

use super::time::Timestamp;
use super::tube::TubeId;
use crate::protocol::{BuryReason, JobId};

/// Priorities below this are "urgent" in the stats.
pub const URGENT_THRESHOLD: u32 = 1024;

/// Where a job is in its life cycle. Each state names the structure that holds the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// In its tube's ready queue.
    Ready,
    /// Held by a session until `deadline` (its TTR). Which session holds it is in the
    /// engine's set of reservations, under `(deadline, id)`: few jobs are reserved at a
    /// time, and a field in every job would cost them all.
    Reserved {
        /// When the reservation expires.
        deadline: Timestamp,
    },
    /// Becomes ready at `until`.
    Delayed {
        /// When it becomes ready.
        until: Timestamp,
    },
    /// Buried; `seq` orders the tube's buried jobs oldest first.
    Buried {
        /// Order of burial.
        seq: u64,
    },
}

impl JobState {
    /// The state's name as `stats-job` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Reserved { .. } => "reserved",
            JobState::Delayed { .. } => "delayed",
            JobState::Buried { .. } => "buried",
        }
    }
}

/// The lifetime counters beanstalkd reports in `stats-job`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounters {
    /// Times reserved.
    pub reserves: u32,
    /// Times its reservation expired.
    pub timeouts: u32,
    /// Times released.
    pub releases: u32,
    /// Times buried.
    pub buries: u32,
    /// Times kicked.
    pub kicks: u32,
}

/// One job.
#[derive(Clone, Debug)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The tube it belongs to.
    pub tube: TubeId,
    /// Priority: lower is more urgent.
    pub pri: u32,
    /// The delay (seconds) given by its last put or release.
    pub delay: u32,
    /// Time to run in seconds, at least 1.
    pub ttr: u32,
    /// When it was put.
    pub created_at: Timestamp,
    /// Where it is ([`Job::state`], [`Job::set_state`]).
    pub state: PackedState,
    /// Where the body is in the log.
    pub body: BodyRef,
    /// Its lifetime counters and attempts, a byte each while they are small; read and
    /// change them through the engine (`Engine::job_tally`), which knows where a large
    /// count lives.
    pub tally: SmallTally,
}

impl Job {
    /// Where it is.
    pub fn state(&self) -> JobState {
        self.state.get()
    }

    /// Moves it to `state` (the caller keeps the engine's sets in step).
    pub fn set_state(&mut self, state: JobState) {
        self.state = state.into();
    }
}

/// A [`JobState`] in nine bytes aligned to one, so that it packs in beside a job's other
/// small fields; as an enum it takes 16 (an 8-byte time and a tag padded to 8).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PackedState {
    /// Which state: 0 ready, 1 reserved, 2 delayed, 3 buried.
    kind: u8,
    /// The state's time or sequence number, native byte order.
    at: [u8; 8],
}

impl From<JobState> for PackedState {
    fn from(state: JobState) -> PackedState {
        let (kind, at) = match state {
            JobState::Ready => (0, 0),
            JobState::Reserved { deadline } => (1, deadline.0),
            JobState::Delayed { until } => (2, until.0),
            JobState::Buried { seq } => (3, seq),
        };
        PackedState {
            kind,
            at: at.to_ne_bytes(),
        }
    }
}

impl PackedState {
    /// The state.
    pub fn get(self) -> JobState {
        let at = u64::from_ne_bytes(self.at);
        match self.kind {
            0 => JobState::Ready,
            1 => JobState::Reserved {
                deadline: Timestamp(at),
            },
            2 => JobState::Delayed {
                until: Timestamp(at),
            },
            // Only `from` makes one: 3 is the one kind left.
            _ => JobState::Buried { seq: at },
        }
    }
}

impl std::fmt::Debug for PackedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// A job's counts, exact: beanstalkd's lifetime counters and larder's attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The counters `stats-job` reports.
    pub counters: JobCounters,
    /// Reservations that ended without a delete since the job was put or last redriven
    /// (larder's retry accounting).
    pub attempts: u32,
}

/// A [`Tally`] as a job holds it: six bytes while every count is below
/// [`SmallTally::SPILLED`] (most jobs are reserved, released or buried a few times at
/// most). Once a count reaches it, the whole tally moves to the job's notes
/// ([`JobNotes::tally`]) and every byte here reads `SPILLED`; it moves back if the counts
/// shrink again (a redrive resets the attempts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmallTally([u8; 6]);

impl SmallTally {
    /// The byte value that says the tally is in the job's notes.
    pub const SPILLED: u8 = u8::MAX;

    /// The marker that the tally is in the notes.
    pub const ELSEWHERE: SmallTally = SmallTally([Self::SPILLED; 6]);

    fn counts(t: &Tally) -> [u32; 6] {
        let c = &t.counters;
        [
            c.reserves, c.timeouts, c.releases, c.buries, c.kicks, t.attempts,
        ]
    }

    /// `t` in bytes, if every count fits below [`SmallTally::SPILLED`].
    pub fn pack(t: &Tally) -> Option<SmallTally> {
        let mut bytes = [0u8; 6];
        for (b, n) in bytes.iter_mut().zip(Self::counts(t)) {
            *b = u8::try_from(n).ok().filter(|&n| n < Self::SPILLED)?;
        }
        Some(SmallTally(bytes))
    }

    /// The tally, unless it is held elsewhere.
    pub fn unpack(self) -> Option<Tally> {
        if self == Self::ELSEWHERE {
            return None;
        }
        let [reserves, timeouts, releases, buries, kicks, attempts] = self.0.map(u32::from);
        Some(Tally {
            counters: JobCounters {
                reserves,
                timeouts,
                releases,
                buries,
                kicks,
            },
            attempts,
        })
    }
}

/// Where a job's body is: a segment of the write-ahead log and the offset of its first
/// byte there, or — until its put record has a place in the log — the engine's own
/// memory ([`BodyRef::is_placed`] is false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRef {
    /// The segment's sequence number.
    pub segment: u64,
    /// Offset of the body's first byte in the segment file.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl BodyRef {
    const IN_MEMORY: u64 = u64::MAX;

    /// Segment numbers from here on are not log segments but 4 GiB windows of a cluster
    /// node's snapshot files: `SNAPSHOT_SEGMENTS + (file number << 16) + window`, the
    /// offset counting from the window's start (see `server::cluster::snapshot`).
    pub const SNAPSHOT_SEGMENTS: u64 = 1 << 62;

    /// Where a body at byte `at` of snapshot file `file` is.
    pub fn in_snapshot(file: u64, at: u64, len: u32) -> BodyRef {
        BodyRef {
            segment: Self::SNAPSHOT_SEGMENTS + (file << 16) + (at >> 32),
            offset: at as u32,
            len,
        }
    }

    /// The snapshot file a body is in, if it is in one.
    pub fn snapshot_file(&self) -> Option<u64> {
        (self.is_placed() && self.segment >= Self::SNAPSHOT_SEGMENTS)
            .then(|| (self.segment - Self::SNAPSHOT_SEGMENTS) >> 16)
    }

    /// The segment numbers of snapshot file `file`'s windows.
    pub fn snapshot_segments(file: u64) -> (u64, u64) {
        let first = Self::SNAPSHOT_SEGMENTS + (file << 16);
        (first, first + 0xffff)
    }

    /// The body's first byte in its file: for a snapshot, counted from the file's start.
    pub fn file_offset(&self) -> u64 {
        match self.snapshot_file() {
            Some(_) => ((self.segment & 0xffff) << 32) + u64::from(self.offset),
            None => u64::from(self.offset),
        }
    }

    /// A body of `len` bytes held in memory.
    pub fn in_memory(len: u32) -> BodyRef {
        BodyRef {
            segment: Self::IN_MEMORY,
            offset: 0,
            len,
        }
    }

    /// Whether the body has a place in the log.
    pub fn is_placed(&self) -> bool {
        self.segment != Self::IN_MEMORY
    }
}

/// What larder remembers about a few jobs beyond beanstalkd's fields, kept in a table
/// beside the jobs (most jobs have none, and a field in every job would cost them all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobNotes {
    /// The message of the last failure a worker reported (`fail`).
    pub last_error: Option<Box<str>>,
    /// Why and when it was buried; present exactly while it is buried.
    pub burial: Option<Burial>,
    /// Its counts, while one is too large for the job's [`SmallTally`].
    pub tally: Option<Tally>,
}

/// Why and when a job was buried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burial {
    /// Why.
    pub reason: BuryReason,
    /// When; `None` for burials replayed from records that did not store it.
    pub at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_64_bytes() {
        // Issue 13: the job table is most of the memory per queued job.
        assert_eq!(std::mem::size_of::<Job>(), 64);
    }

    #[test]
    fn a_packed_state_gives_back_every_state() {
        for at in [0, 1, u64::MAX - 1, u64::MAX] {
            for state in [
                JobState::Ready,
                JobState::Reserved {
                    deadline: Timestamp(at),
                },
                JobState::Delayed {
                    until: Timestamp(at),
                },
                JobState::Buried { seq: at },
            ] {
                assert_eq!(PackedState::from(state).get(), state);
            }
        }
    }

    #[test]
    fn a_small_tally_holds_counts_below_255_exactly() {
        let t = Tally {
            counters: JobCounters {
                reserves: 254,
                timeouts: 1,
                releases: 2,
                buries: 3,
                kicks: 4,
            },
            attempts: 5,
        };
        let small = SmallTally::pack(&t).expect("fits");
        assert_eq!(small.unpack(), Some(t));
        assert_eq!(SmallTally::default().unpack(), Some(Tally::default()));
        for n in [255, 256, u32::MAX] {
            let big = Tally { attempts: n, ..t };
            assert_eq!(SmallTally::pack(&big), None, "{n}");
        }
        assert_eq!(SmallTally::ELSEWHERE.unpack(), None);
    }
}
