//! State changes as values: what the write-ahead log will store.
//!
//! Every command or timer event that changes durable state emits one [`Change`]. Together
//! with the order they were emitted in, they are enough to rebuild every job and tube
//! setting. The server journals them to the write-ahead log.

use bytes::Bytes;

use super::job::JobCounters;
use super::time::Timestamp;
use crate::protocol::{BuryReason, JobId, TubeName, TubeSetting};

/// A job's state as an [`Change::Image`] records it. A reserved job is recorded as ready:
/// that is what it becomes after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Ready.
    Ready,
    /// Delayed until then.
    Delayed(Timestamp),
    /// Buried.
    Buried,
}

/// One durable state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A job was created.
    Put {
        /// Its id.
        id: JobId,
        /// Its tube.
        tube: TubeName,
        /// Priority.
        pri: u32,
        /// Delay in seconds as given.
        delay: u32,
        /// Time to run in seconds (after raising 0 to 1).
        ttr: u32,
        /// When it was put.
        created_at: Timestamp,
        /// When it becomes ready, if delayed.
        ready_at: Option<Timestamp>,
        /// The body.
        body: Bytes,
    },
    /// A job was reserved (its `reserves` counter grew).
    Reserve {
        /// The job.
        id: JobId,
    },
    /// A job was deleted.
    Delete {
        /// The job.
        id: JobId,
    },
    /// A reserved job was released.
    Release {
        /// The job.
        id: JobId,
        /// New priority.
        pri: u32,
        /// Delay in seconds as given.
        delay: u32,
        /// When it becomes ready, if delayed.
        ready_at: Option<Timestamp>,
    },
    /// A reserved job was buried.
    Bury {
        /// The job.
        id: JobId,
        /// New priority.
        pri: u32,
    },
    /// A buried or delayed job was kicked to ready.
    Kick {
        /// The job.
        id: JobId,
    },
    /// A reservation ran past its TTR.
    Timeout {
        /// The job.
        id: JobId,
    },
    /// A live job's whole state and body, written again at the head of the log by
    /// compaction so the segment holding its put can be removed. On replay it replaces
    /// whatever earlier records said about the job (or creates it).
    Image {
        /// Its id.
        id: JobId,
        /// Its tube.
        tube: TubeName,
        /// Priority.
        pri: u32,
        /// Delay in seconds as last given.
        delay: u32,
        /// Time to run in seconds.
        ttr: u32,
        /// When it was put.
        created_at: Timestamp,
        /// Its state.
        state: ImageState,
        /// Lifetime counters.
        counters: JobCounters,
        /// The body.
        body: Bytes,
    },
    /// The next job id is at least `next` (written again when the newest put's record
    /// is all that keeps an old segment, so ids are never reused after it is reclaimed).
    NextId {
        /// The lowest id a new job may get.
        next: u64,
    },
    /// A tube was paused.
    PauseTube {
        /// The tube.
        tube: TubeName,
        /// When the pause ends.
        until: Timestamp,
    },
    /// A tube setting was set, or (`value` `None`) returned to the server default.
    ConfigTube {
        /// The tube.
        tube: TubeName,
        /// The setting.
        setting: TubeSetting,
        /// Its new value, in the setting's unit.
        value: Option<u64>,
    },
    /// A reservation ended because the reserving connection went away (an attempt).
    Abandon {
        /// The job.
        id: JobId,
    },
    /// A worker reported that its attempt failed (an attempt), with a message.
    Fail {
        /// The job.
        id: JobId,
        /// The worker's message.
        message: Box<str>,
    },
    /// A job whose attempt just ended goes back under its tube's retry policy: delayed until
    /// `ready_at`, or ready at once.
    Retry {
        /// The job.
        id: JobId,
        /// When it becomes ready, if delayed.
        ready_at: Option<Timestamp>,
    },
    /// A job was buried, by a worker or for running out of attempts.
    DeadLetter {
        /// The job.
        id: JobId,
        /// Its priority from now on.
        pri: u32,
        /// Why.
        reason: BuryReason,
        /// When.
        at: Timestamp,
    },
    /// A job's retry facts, written after its [`Change::Image`] so compaction keeps them:
    /// the attempt count, the last reported failure and, for a buried job, why and when.
    JobNotes {
        /// The job.
        id: JobId,
        /// Its attempt count.
        attempts: u32,
        /// The last failure a worker reported.
        last_error: Option<Box<str>>,
        /// Why and when it was buried, if it is.
        burial: Option<super::job::Burial>,
    },
}
