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
    /// Where it is.
    pub state: JobState,
    /// Lifetime counters.
    pub counters: JobCounters,
    /// Where the body is in the log.
    pub body: BodyRef,
    /// Reservations that ended without a delete since the job was put or last redriven
    /// (larder's retry accounting; beanstalkd's counters are in `counters`). It fills what
    /// was padding; rarer facts live in the engine's notes table ([`JobNotes`]).
    pub attempts: u32,
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
    fn retry_accounting_keeps_a_job_at_96_bytes() {
        // attempts fills the padding after the counters; the rest lives in the notes table.
        assert!(
            std::mem::size_of::<Job>() <= 96,
            "{}",
            std::mem::size_of::<Job>()
        );
    }
}
