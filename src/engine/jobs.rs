//! Job commands: put, reserve, reserve-job, delete, release, bury, touch, kick, kick-job.

use bytes::Bytes;

use super::job::{BodyRef, Job, JobState, SmallTally};
use super::retry::Ending;
use super::session::SessionId;
use super::time::Timestamp;
use super::{Change, Engine, Outcome};
use crate::protocol::{BuryReason, JobId, Reply};

impl Engine {
    pub(super) fn put(
        &mut self,
        sid: SessionId,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
        now: Timestamp,
    ) -> Reply {
        let Some(tube_id) = self.sessions.get(&sid).map(|s| s.using) else {
            return Reply::InternalError;
        };
        self.mark_producer(sid);
        if self.draining {
            // beanstalkd uses up an id here (protocol.md §3.3).
            self.next_job_id += 1;
            return Reply::Draining;
        }
        if let Err(reason) = self.admit(tube_id, body.len() as u64) {
            self.count_refusal(reason, Some(tube_id));
            return Reply::Refused(reason);
        }
        self.count_admission(tube_id);
        let id = JobId(self.next_job_id);
        self.next_job_id += 1;
        let ttr = ttr.max(1);
        let ready_at = (delay > 0).then(|| now.plus_secs(delay));
        self.changes.push(Change::Put {
            id,
            tube: self.tubes.get(tube_id).name.clone(),
            pri,
            delay,
            ttr,
            created_at: now,
            ready_at,
            body: body.clone(),
        });
        let len = body.len() as u32;
        self.insert_job(
            id,
            tube_id,
            pri,
            delay,
            ttr,
            now,
            BodyRef::in_memory(len),
            Some(body),
        );
        match ready_at {
            Some(until) => self.make_delayed(id, until),
            None => self.make_ready(id, now),
        }
        Reply::Inserted(id)
    }

    /// Adds a new job (state to be set by the caller's `make_*`) and counts it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_job(
        &mut self,
        id: JobId,
        tube: super::TubeId,
        pri: u32,
        delay: u32,
        ttr: u32,
        created_at: Timestamp,
        body: BodyRef,
        bytes: Option<Bytes>,
    ) {
        self.tubes.get_mut(tube).counters.total_jobs += 1;
        self.counters.total_jobs += 1;
        self.index_job(
            Job {
                id,
                tube,
                pri,
                delay,
                ttr,
                created_at,
                state: JobState::Ready.into(),
                body,
                tally: SmallTally::default(),
            },
            bytes,
        );
    }

    pub(super) fn reserve(
        &mut self,
        sid: SessionId,
        timeout: Option<u32>,
        now: Timestamp,
    ) -> Outcome {
        self.mark_worker(sid);
        if self.deadline_soon(sid, now) && !self.any_watched_ready(sid) {
            return Outcome::Reply(Reply::DeadlineSoon);
        }
        self.start_wait(sid, timeout.map(|t| now.plus_secs(t)));
        self.process_queue(now);
        if let Some(pos) = self.wakeups.iter().rposition(|(s, _)| *s == sid) {
            return Outcome::Reply(self.wakeups.remove(pos).1);
        }
        if timeout == Some(0) {
            self.wake_waiter(sid, now);
            if let Some(pos) = self.wakeups.iter().rposition(|(s, _)| *s == sid) {
                return Outcome::Reply(self.wakeups.remove(pos).1);
            }
        }
        Outcome::Blocked
    }

    /// Whether any tube `sid` watches has a ready job, paused or not (beanstalkd's test for
    /// answering `DEADLINE_SOON` at once).
    fn any_watched_ready(&self, sid: SessionId) -> bool {
        self.sessions.get(&sid).is_some_and(|s| {
            s.watching
                .iter()
                .any(|t| !self.tubes.get(t).ready.is_empty())
        })
    }

    pub(super) fn reserve_job(&mut self, sid: SessionId, id: JobId, now: Timestamp) -> Reply {
        match self.jobs.get(&id).map(|j| j.state()) {
            None | Some(JobState::Reserved { .. }) => Reply::NotFound,
            Some(_) => {
                self.detach(id);
                self.reserve_for(sid, id, now)
            }
        }
    }

    /// Whether `id` is reserved by `sid`.
    pub(super) fn reserved_by(&self, sid: SessionId, id: JobId) -> bool {
        match self.jobs.get(&id).map(|j| j.state()) {
            Some(JobState::Reserved { deadline }) => {
                self.reserved.get(&(deadline, id)) == Some(&sid)
            }
            _ => false,
        }
    }

    pub(super) fn delete(&mut self, sid: SessionId, id: JobId) -> Reply {
        let Some(job) = self.jobs.get(&id) else {
            return Reply::NotFound;
        };
        if matches!(job.state(), JobState::Reserved { .. }) && !self.reserved_by(sid, id) {
            return Reply::NotFound;
        }
        self.detach(id);
        let Some(job) = self.unindex_job(id) else {
            return Reply::InternalError;
        };
        self.tubes.get_mut(job.tube).counters.deletes += 1;
        self.drop_tube_if_unused(job.tube);
        self.changes.push(Change::Delete { id });
        Reply::Deleted
    }

    pub(super) fn release(
        &mut self,
        sid: SessionId,
        id: JobId,
        pri: u32,
        delay: u32,
        now: Timestamp,
    ) -> Reply {
        if !self.reserved_by(sid, id) {
            return Reply::NotFound;
        }
        self.detach(id);
        // beanstalkd answers BURIED when a released job could not be queued; larder does so
        // when the release used up the tube's max-attempts.
        if self.end_attempt(id, Ending::Release { pri, delay }, now) {
            Reply::Buried
        } else {
            Reply::Released
        }
    }

    pub(super) fn bury(&mut self, sid: SessionId, id: JobId, pri: u32, now: Timestamp) -> Reply {
        if !self.reserved_by(sid, id) {
            return Reply::NotFound;
        }
        self.detach(id);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.pri = pri;
        }
        self.dead_letter(id, BuryReason::Buried, now);
        Reply::Buried
    }

    pub(super) fn touch(&mut self, sid: SessionId, id: JobId, now: Timestamp) -> Reply {
        if !self.reserved_by(sid, id) {
            return Reply::NotFound;
        }
        self.detach(id);
        let Some(job) = self.jobs.get_mut(&id) else {
            return Reply::InternalError;
        };
        // Re-reserving would count a reserve; set the new deadline directly instead.
        let deadline = now.plus_secs(job.ttr);
        job.set_state(JobState::Reserved { deadline });
        self.tubes.get_mut(job.tube).reserved += 1;
        self.reserved.insert((deadline, id), sid);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.reserved.insert((deadline, id));
        }
        Reply::Touched
    }

    pub(super) fn kick(&mut self, sid: SessionId, bound: u32, now: Timestamp) -> Reply {
        let Some(tube_id) = self.sessions.get(&sid).map(|s| s.using) else {
            return Reply::InternalError;
        };
        let from_buried = !self.tubes.get(tube_id).buried.is_empty();
        let mut kicked = 0;
        while kicked < bound {
            let tube = self.tubes.get(tube_id);
            let next = if from_buried {
                tube.buried.first_key_value().map(|(_, &id)| id)
            } else {
                tube.delayed.first().map(|&(_, id)| id)
            };
            let Some(id) = next else {
                break;
            };
            self.kick_one(id, now);
            kicked += 1;
        }
        Reply::Kicked(kicked)
    }

    pub(super) fn kick_job(&mut self, id: JobId, now: Timestamp) -> Reply {
        match self.jobs.get(&id).map(|j| j.state()) {
            Some(JobState::Buried { .. } | JobState::Delayed { .. }) => {
                self.kick_one(id, now);
                Reply::KickedJob
            }
            _ => Reply::NotFound,
        }
    }

    /// Kicks a buried or delayed job to ready. Kicking a buried job redrives it: its
    /// attempt count starts again from zero.
    pub(super) fn kick_one(&mut self, id: JobId, now: Timestamp) {
        let was = self.detach(id);
        self.change_tally(id, |t| {
            t.counters.kicks += 1;
            if matches!(was, Some(JobState::Buried { .. })) {
                t.attempts = 0;
            }
        });
        self.changes.push(Change::Kick { id });
        self.make_ready(id, now);
    }
}
