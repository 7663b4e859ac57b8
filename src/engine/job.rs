//! A job's metadata and body.

use bytes::Bytes;

use super::session::SessionId;
use super::time::Timestamp;
use super::tube::TubeId;
use crate::protocol::JobId;

/// Priorities below this are "urgent" in the stats.
pub const URGENT_THRESHOLD: u32 = 1024;

/// Where a job is in its life cycle. Each state names the structure that holds the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// In its tube's ready queue.
    Ready,
    /// Held by a session until `deadline` (its TTR).
    Reserved {
        /// The session holding it.
        by: SessionId,
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
    /// Body length in bytes, as put (counted against the byte limits).
    pub size: u32,
    /// The body.
    pub body: Bytes,
}
