//! Where job bodies are: the job index keeps only a [`BodyRef`] per job; the bytes are in
//! the write-ahead log (or, for a put not yet placed in a log, in `mem_bodies`). Replies
//! carry a [`Body`] the server reads from the log when it writes them.
//!
//! Per segment, the engine counts live jobs and body bytes ([`SegmentUse`]): the oldest
//! segment holding a live body bounds what the log may reclaim, and the counts say which
//! segments are worth compacting.

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;

use super::change::{Change, ImageState};
use super::job::{BodyRef, Job, JobState};
use super::{Engine, SegmentUse};
use crate::protocol::{Body, JobId, StoredBody, TubeName};

impl Engine {
    /// Adds `job` to the index, with its body bytes if they are not in a log, and counts
    /// its body against the byte limits.
    pub(super) fn index_job(&mut self, job: Job, bytes: Option<Bytes>) {
        let size = u64::from(job.body.len);
        self.tubes.get_mut(job.tube).bytes += size;
        self.pressure.bytes += size;
        if job.body.is_placed() {
            self.count_segment(job.body, true);
        } else if let Some(bytes) = bytes {
            self.mem_bodies.insert(job.id, bytes);
        }
        self.jobs.insert(job.id, job);
    }

    /// Removes a job from the index and uncounts its body (the caller has detached it
    /// from every queue; dropping an unused tube is the caller's too).
    pub(super) fn unindex_job(&mut self, id: JobId) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        let size = u64::from(job.body.len);
        self.tubes.get_mut(job.tube).bytes -= size;
        self.pressure.bytes -= size;
        self.notes.remove(&id);
        if job.body.is_placed() {
            self.count_segment(job.body, false);
        } else {
            self.mem_bodies.remove(&id);
        }
        Some(job)
    }

    fn count_segment(&mut self, at: BodyRef, add: bool) {
        let entry = self.segment_use.entry(at.segment).or_default();
        if add {
            entry.jobs += 1;
            entry.bytes += u64::from(at.len);
        } else {
            entry.jobs = entry.jobs.saturating_sub(1);
            entry.bytes = entry.bytes.saturating_sub(u64::from(at.len));
            if entry.jobs == 0 {
                self.segment_use.remove(&at.segment);
            }
        }
    }

    /// Records that job `id`'s body now lives in the log at `at` (its put record, or a
    /// copy written by compaction), dropping any in-memory copy. Returns false if the job
    /// is gone.
    pub fn place_body(&mut self, id: JobId, at: BodyRef) -> bool {
        let Some(old) = self.jobs.get(&id).map(|j| j.body) else {
            return false;
        };
        if old.is_placed() {
            self.count_segment(old, false);
        } else {
            self.mem_bodies.remove(&id);
        }
        self.count_segment(at, true);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.body = at;
        }
        true
    }

    /// The body of `job`, for a reply.
    pub(super) fn body_of(&self, job: &Job) -> Body {
        body_from(&self.mem_bodies, job)
    }

    /// Queues an [`Change::Image`] of job `id` with `body` (its bytes, read from `from`),
    /// so compaction can move it off the segment at `from`. Returns false, queuing
    /// nothing, if the job is gone or its body has moved since. A reserved job is imaged
    /// as ready (what a restart makes it); its reservation carries on.
    pub fn relocate(&mut self, id: JobId, from: BodyRef, body: Bytes) -> bool {
        match self.jobs.get(&id) {
            Some(job) if job.body == from && body.len() == from.len as usize => {}
            _ => return false,
        }
        let changes = self.image_of(id, body);
        self.changes.extend(changes);
        true
    }

    /// The records that recreate job `id` with `body` as it is now (an
    /// [`Change::Image`], and its [`Change::JobNotes`] if it has any): what compaction
    /// writes, and what a cluster snapshot holds for each job. A reserved job is imaged as
    /// ready. Empty if the job is gone.
    pub fn image_of(&self, id: JobId, body: Bytes) -> Vec<Change> {
        let Some(job) = self.jobs.get(&id) else {
            return Vec::new();
        };
        let tally = self.tally_of(job);
        let state = match job.state() {
            JobState::Ready | JobState::Reserved { .. } => ImageState::Ready,
            JobState::Delayed { until } => ImageState::Delayed(until),
            JobState::Buried { .. } => ImageState::Buried,
        };
        let mut changes = vec![Change::Image {
            id,
            tube: self.tubes.get(job.tube).name.clone(),
            pri: job.pri,
            delay: job.delay,
            ttr: job.ttr,
            created_at: job.created_at,
            state,
            counters: tally.counters,
            body,
        }];
        let notes = self
            .notes
            .get(&id)
            .filter(|n| n.last_error.is_some() || n.burial.is_some());
        if tally.attempts > 0 || notes.is_some() {
            changes.push(Change::JobNotes {
                id,
                attempts: tally.attempts,
                last_error: notes.and_then(|n| n.last_error.clone()),
                burial: notes.and_then(|n| n.burial),
            });
        }
        changes
    }

    /// Points job `id`'s body at `to` if it is at `from` now (the same bytes, copied
    /// elsewhere: a cluster snapshot). Returns whether it did.
    pub fn rebase_body(&mut self, id: JobId, from: BodyRef, to: BodyRef) -> bool {
        match self.jobs.get(&id) {
            Some(job) if job.body == from && from.len == to.len => self.place_body(id, to),
            _ => false,
        }
    }

    /// Whether a live job's body is in a segment numbered `lo..=hi`.
    pub fn has_live_bodies_in(&self, lo: u64, hi: u64) -> bool {
        self.segment_use.range(lo..=hi).next().is_some()
    }

    /// The live jobs' ids with their bodies' places, from id `from` on, at most `limit`
    /// of them; and where to continue (`None` at the end).
    pub fn bodies_from(&self, from: JobId, limit: usize) -> (Vec<(JobId, BodyRef)>, Option<JobId>) {
        let mut iter = self.jobs.range_from(from);
        let found = iter
            .by_ref()
            .take(limit)
            .map(|job| (job.id, job.body))
            .collect();
        (found, iter.next().map(|job| job.id))
    }

    /// Queues a [`Change::PauseTube`] for every paused tube, so a pause survives the
    /// removal of the segment that recorded it.
    pub fn journal_pauses(&mut self) {
        let pauses = self.pauses_in_force();
        self.changes.extend(pauses);
    }

    /// A [`Change::PauseTube`] for every paused tube.
    pub fn pauses_in_force(&self) -> Vec<Change> {
        self.pauses
            .iter()
            .map(|&(until, tube)| Change::PauseTube {
                tube: self.tubes.get(tube).name.clone(),
                until,
            })
            .collect()
    }

    /// Whether the tube named `name` is paused now.
    pub fn is_paused(&self, name: &TubeName) -> bool {
        self.tubes
            .find(name)
            .is_some_and(|t| self.tubes.get(t).pause.is_some())
    }

    /// Up to `limit` live jobs whose body is in `segment`, with their body's place,
    /// scanning at most `scan` jobs from id `from` on; also returns where to continue
    /// (`None` when the scan reached the end). Bounded so the engine lock is held briefly.
    pub fn jobs_in_segment(
        &self,
        segment: u64,
        from: JobId,
        scan: usize,
    ) -> (Vec<(JobId, BodyRef)>, Option<JobId>) {
        let mut found = Vec::new();
        let mut iter = self.jobs.range_from(from);
        for job in iter.by_ref().take(scan) {
            if job.body.segment == segment {
                found.push((job.id, job.body));
            }
        }
        (found, iter.next().map(|job| job.id))
    }

    /// The oldest log segment holding a live job's body, if any (a cluster snapshot's
    /// windows are not log segments).
    pub fn oldest_live_segment(&self) -> Option<u64> {
        self.segment_use
            .keys()
            .next()
            .copied()
            .filter(|&s| s < BodyRef::SNAPSHOT_SEGMENTS)
    }

    /// Live jobs and bytes per log segment, oldest segment first.
    pub fn segment_use(&self) -> impl Iterator<Item = (u64, SegmentUse)> + '_ {
        self.segment_use.iter().map(|(&s, &u)| (s, u))
    }

    /// Body bytes of all live jobs.
    pub fn live_bytes(&self) -> u64 {
        let placed: u64 = self.segment_use.values().map(|u| u.bytes).sum();
        placed
            + self
                .mem_bodies
                .values()
                .map(|b| b.len() as u64)
                .sum::<u64>()
    }
}

/// The body of `job`, for a reply, given the engine's in-memory bodies.
pub(super) fn body_from(mem_bodies: &HashMap<JobId, Bytes>, job: &Job) -> Body {
    if job.body.is_placed() {
        return Body::Stored(StoredBody {
            segment: job.body.segment,
            offset: job.body.file_offset(),
            len: job.body.len,
            file: None,
        });
    }
    Body::Bytes(mem_bodies.get(&job.id).cloned().unwrap_or_default())
}
