//! Rebuilding state from the log: [`Engine::restore`] applies one decoded record during
//! replay, before any client connects. Replay reaches the state the records describe as of
//! `now`, with the promise-3 twist that a job reserved before the restart is ready again
//! (reservations die with their connections). Restoring emits no new changes.

use super::change::{Change, ImageState};
use super::job::{BodyRef, Job, JobState};
use super::time::Timestamp;
use super::tube::Pause;
use super::Engine;
use crate::protocol::JobId;

/// A record that does not fit the state rebuilt so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A record names a job that no earlier record created, or that was deleted.
    #[error("record for unknown job {0}")]
    UnknownJob(JobId),
    /// A put record reuses the id of a live job.
    #[error("job {0} is put twice")]
    DuplicateJob(JobId),
}

impl Engine {
    /// Applies one replayed record at time `now`. For a put read from a log, `body_at`
    /// says where its body is and the change's own body bytes are ignored (recovery
    /// passes none); without it the body is kept in memory.
    pub fn restore(
        &mut self,
        change: Change,
        body_at: Option<BodyRef>,
        now: Timestamp,
    ) -> Result<(), RestoreError> {
        let result = self.restore_one(change, body_at, now);
        self.changes.clear();
        self.wakeups.clear();
        result
    }

    fn restore_one(
        &mut self,
        change: Change,
        body_at: Option<BodyRef>,
        now: Timestamp,
    ) -> Result<(), RestoreError> {
        match change {
            Change::Put {
                id,
                tube,
                pri,
                delay,
                ttr,
                created_at,
                ready_at,
                body,
            } => {
                if self.jobs.contains_key(&id) {
                    return Err(RestoreError::DuplicateJob(id));
                }
                let tube_id = self.tubes.find_or_create(&tube);
                self.next_job_id = self.next_job_id.max(id.0.saturating_add(1));
                let (at, bytes) = match body_at {
                    Some(at) => (at, None),
                    None => (BodyRef::in_memory(body.len() as u32), Some(body)),
                };
                self.insert_job(id, tube_id, pri, delay, ttr, created_at, at, bytes);
                self.place(id, ready_at, now);
            }
            // A reservation ends with the restart: the job is ready again, whichever state
            // (ready, delayed or buried, for reserve-job) it was reserved from.
            Change::Reserve { id } => {
                self.job_mut(id)?.counters.reserves += 1;
                self.detach(id);
                self.insert_ready(id);
            }
            Change::Timeout { id } => {
                self.job_mut(id)?.counters.timeouts += 1;
                self.counters.timeouts += 1;
            }
            Change::Delete { id } => {
                self.job_mut(id)?;
                self.detach(id);
                if let Some(job) = self.unindex_job(id) {
                    self.drop_tube_if_unused(job.tube);
                }
            }
            Change::Release {
                id,
                pri,
                delay,
                ready_at,
            } => {
                // Detach before changing the priority: the ready set is keyed by it.
                self.job_mut(id)?;
                self.detach(id);
                let job = self.job_mut(id)?;
                job.pri = pri;
                job.delay = delay;
                job.counters.releases += 1;
                self.place(id, ready_at, now);
            }
            Change::Bury { id, pri } => {
                self.job_mut(id)?;
                self.detach(id);
                self.job_mut(id)?.pri = pri;
                self.make_buried(id);
            }
            Change::Kick { id } => {
                self.job_mut(id)?.counters.kicks += 1;
                self.detach(id);
                self.insert_ready(id);
            }
            Change::Image {
                id,
                tube,
                pri,
                delay,
                ttr,
                created_at,
                state,
                counters,
                body,
            } => {
                let bytes = body_at.is_none().then_some(body.clone());
                let at = body_at.unwrap_or(BodyRef::in_memory(body.len() as u32));
                if self.jobs.contains_key(&id) {
                    self.detach(id);
                    self.unindex_job(id);
                    let tube_id = self.tubes.find_or_create(&tube);
                    self.index_job(
                        Job {
                            id,
                            tube: tube_id,
                            pri,
                            delay,
                            ttr,
                            created_at,
                            state: JobState::Ready,
                            counters,
                            body: at,
                        },
                        bytes,
                    );
                } else {
                    let tube_id = self.tubes.find_or_create(&tube);
                    self.next_job_id = self.next_job_id.max(id.0.saturating_add(1));
                    self.insert_job(id, tube_id, pri, delay, ttr, created_at, at, bytes);
                    self.job_mut(id)?.counters = counters;
                }
                match state {
                    ImageState::Ready => self.insert_ready(id),
                    ImageState::Delayed(until) => self.place(id, Some(until), now),
                    ImageState::Buried => {
                        self.make_buried(id);
                        self.job_mut(id)?.counters = counters;
                    }
                }
            }
            Change::ConfigTube {
                tube,
                setting,
                value,
            } => {
                let id = self.tubes.find_or_create(&tube);
                self.tubes.get_mut(id).settings.set(setting, value);
                self.drop_tube_if_unused(id);
            }
            Change::PauseTube { tube, until } => {
                if let Some(tube_id) = self.tubes.find(&tube) {
                    let t = self.tubes.get_mut(tube_id);
                    if let Some(old) = t.pause.take() {
                        self.pauses.remove(&(old.until, tube_id));
                    }
                    if until > now {
                        let nanos = until.0 - now.0;
                        self.tubes.get_mut(tube_id).pause = Some(Pause { nanos, until });
                        self.pauses.insert((until, tube_id));
                    }
                }
            }
        }
        Ok(())
    }

    fn job_mut(&mut self, id: JobId) -> Result<&mut Job, RestoreError> {
        self.jobs.get_mut(&id).ok_or(RestoreError::UnknownJob(id))
    }

    /// Puts a detached job where `ready_at` says it belongs at `now`.
    fn place(&mut self, id: JobId, ready_at: Option<Timestamp>, now: Timestamp) {
        match ready_at {
            Some(until) if until > now => self.make_delayed(id, until),
            _ => self.insert_ready(id),
        }
    }
}
