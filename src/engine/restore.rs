//! Rebuilding state from the log: [`Engine::replay`] decodes one record as read from the
//! log and applies it — the one replay path, for the server's recovery and for `larder wal
//! verify` alike — and [`Engine::restore`] applies one decoded change. Both run before any
//! client connects. Replay reaches the state the records describe as of
//! `now`, with the promise-3 twist that a job reserved before the restart is ready again
//! (reservations die with their connections). Restoring emits no new changes.

use super::change::{Change, ImageState};
use super::job::{BodyRef, Burial, Job, JobCounters, JobState, SmallTally, Tally};
use super::time::Timestamp;
use super::tube::Pause;
use super::Engine;
use crate::protocol::{BuryReason, JobId};

/// What [`Engine::replay`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Applied; `keeps_next_id` if the record holds the highest job id so far (a put or a
    /// next-id record), which the log must keep.
    Applied {
        /// The record is a put or a next-id record.
        keeps_next_id: bool,
    },
    /// About a job whose earlier records were reclaimed with their segment (the job was
    /// deleted): nothing to do.
    Skipped,
}

/// A record that cannot be replayed, and where it is.
#[derive(Debug, thiserror::Error)]
#[error("record {lsn} in segment {segment} at offset {offset}: {cause}")]
pub struct ReplayError {
    /// Its LSN.
    pub lsn: u64,
    /// Its segment.
    pub segment: u64,
    /// Where its payload starts in the segment.
    pub offset: u64,
    /// Why.
    pub cause: String,
}

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
    /// Replays the record of `kind` with `payload`, found at `offset` of `segment` with LSN
    /// `lsn`, as of `now`. Bodies stay in the log: only the metadata is decoded, and a put
    /// or image points its job at its body's place in the segment.
    pub fn replay(
        &mut self,
        kind: u8,
        payload: &[u8],
        (lsn, segment, offset): (u64, u64, u64),
        now: Timestamp,
    ) -> Result<Replayed, ReplayError> {
        let fail = |cause: String| ReplayError {
            lsn,
            segment,
            offset,
            cause,
        };
        let (change, body) =
            super::record::decode_metadata(kind, payload).map_err(|e| fail(e.to_string()))?;
        let body_at = match body {
            Some((start, len)) => {
                let at = u32::try_from(offset + start as u64)
                    .map_err(|_| fail("body offset past 4 GiB".to_owned()))?;
                Some(BodyRef {
                    segment,
                    offset: at,
                    len,
                })
            }
            None => None,
        };
        let keeps_next_id = matches!(change, Change::Put { .. } | Change::NextId { .. });
        match self.restore(change, body_at, now) {
            Ok(()) => Ok(Replayed::Applied { keeps_next_id }),
            Err(RestoreError::UnknownJob(_)) => Ok(Replayed::Skipped),
            Err(e) => Err(fail(e.to_string())),
        }
    }

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
                self.job_mut(id)?;
                self.change_tally(id, |t| t.counters.reserves += 1);
                self.detach(id);
                self.insert_ready(id);
            }
            // Each way a reservation ends without a delete counts an attempt.
            Change::Timeout { id } => {
                self.job_mut(id)?;
                let attempts = self.attempt(id, |t| t.counters.timeouts += 1);
                self.notes_mut(id).last_error = Some(super::retry::timeout_note(attempts));
                // `job-timeouts` in `stats` counts since this start, as beanstalkd's does
                // after a binlog replay: replay leaves it alone.
            }
            Change::Abandon { id } => {
                self.job_mut(id)?;
                let attempts = self.attempt(id, |_| {});
                self.notes_mut(id).last_error = Some(super::retry::abandon_note(attempts));
            }
            Change::Fail { id, message } => {
                self.job_mut(id)?;
                self.attempt(id, |_| {});
                self.notes_mut(id).last_error = Some(message);
            }
            Change::Retry { id, ready_at } => {
                self.job_mut(id)?;
                self.detach(id);
                self.place(id, ready_at, now);
            }
            Change::DeadLetter {
                id,
                pri,
                reason,
                at,
            } => {
                self.job_mut(id)?;
                self.detach(id);
                self.job_mut(id)?.pri = pri;
                self.make_buried(
                    id,
                    Burial {
                        reason,
                        at: Some(at),
                    },
                );
            }
            Change::Delete { id } => {
                self.job_mut(id)?;
                self.detach(id);
                // Unused tubes are dropped by `finish_restore`, not here: a pause record
                // earlier in the log may belong to a tube that a later put uses again.
                self.unindex_job(id);
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
                self.attempt(id, |t| t.counters.releases += 1);
                self.place(id, ready_at, now);
            }
            // Written by versions that did not record when or why.
            Change::Bury { id, pri } => {
                self.job_mut(id)?;
                self.detach(id);
                self.job_mut(id)?.pri = pri;
                self.make_buried(
                    id,
                    Burial {
                        reason: BuryReason::Buried,
                        at: None,
                    },
                );
            }
            Change::Kick { id } => {
                self.job_mut(id)?;
                let was = self.detach(id);
                self.change_tally(id, |t| {
                    t.counters.kicks += 1;
                    if matches!(was, Some(JobState::Buried { .. })) {
                        t.attempts = 0;
                    }
                });
                self.insert_ready(id);
            }
            Change::ConfigTube {
                tube,
                setting,
                value,
            } => {
                let id = self.tubes.find_or_create(&tube);
                self.tubes.get_mut(id).settings.set(setting, value);
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
                            state: JobState::Ready.into(),
                            body: at,
                            tally: SmallTally::default(),
                        },
                        bytes,
                    );
                } else {
                    let tube_id = self.tubes.find_or_create(&tube);
                    self.next_job_id = self.next_job_id.max(id.0.saturating_add(1));
                    self.insert_job(id, tube_id, pri, delay, ttr, created_at, at, bytes);
                }
                self.set_counters(id, counters)?;
                match state {
                    ImageState::Ready => self.insert_ready(id),
                    ImageState::Delayed(until) => self.place(id, Some(until), now),
                    ImageState::Buried => {
                        // A following job-notes record says why and when, if known.
                        self.make_buried(
                            id,
                            Burial {
                                reason: BuryReason::Buried,
                                at: None,
                            },
                        );
                        self.set_counters(id, counters)?;
                    }
                }
            }
            Change::JobNotes {
                id,
                attempts,
                last_error,
                burial,
            } => {
                let buried = matches!(self.job_mut(id)?.state(), JobState::Buried { .. });
                self.change_tally(id, |t| t.attempts = attempts);
                self.notes_mut(id).last_error = last_error;
                if let (Some(burial), true) = (burial, buried) {
                    self.rebury_as(id, burial);
                }
                self.tidy_notes(id);
            }
            // The tube may not exist yet: what kept it alive when it was paused (a
            // watcher, say) is not in the log, and the jobs that keep it alive now may come
            // later. [`Engine::finish_restore`] drops it if nothing does by the end.
            Change::NextId { next } => {
                self.next_job_id = self.next_job_id.max(next);
            }
            Change::PauseTube { tube, until } => {
                let tube_id = self.tubes.find_or_create(&tube);
                let t = self.tubes.get_mut(tube_id);
                if let Some(old) = t.pause.take() {
                    self.pauses.remove(&(old.until, tube_id));
                }
                if until > now {
                    let nanos = until.0 - now.0;
                    self.tubes.get_mut(tube_id).pause = Some(Pause { nanos, until });
                    self.pauses.insert((until, tube_id));
                }
                self.refresh_serveable(tube_id);
            }
        }
        Ok(())
    }

    /// Ends a replay: drops the tubes nothing keeps alive (a tube whose jobs are all gone,
    /// or one a pause record created), as a running server would have. Replay itself
    /// drops none, since what keeps a tube alive may come later in the log.
    pub fn finish_restore(&mut self) {
        let ids: Vec<_> = self.tubes.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.drop_tube_if_unused(id);
        }
    }

    fn job_mut(&mut self, id: JobId) -> Result<&mut Job, RestoreError> {
        self.jobs.get_mut(&id).ok_or(RestoreError::UnknownJob(id))
    }

    /// Counts an attempt for job `id`, changing its tally with `also` too (the counter
    /// the attempt's ending bumps). Returns its attempts.
    fn attempt(&mut self, id: JobId, also: impl FnOnce(&mut Tally)) -> u32 {
        self.change_tally(id, |t| {
            t.attempts = t.attempts.saturating_add(1);
            also(t);
        })
        .map_or(0, |t| t.attempts)
    }

    /// Sets job `id`'s lifetime counters, as an image record gives them.
    fn set_counters(&mut self, id: JobId, counters: JobCounters) -> Result<(), RestoreError> {
        self.change_tally(id, |t| t.counters = counters)
            .map(|_| ())
            .ok_or(RestoreError::UnknownJob(id))
    }

    /// Puts a detached job where `ready_at` says it belongs at `now`.
    fn place(&mut self, id: JobId, ready_at: Option<Timestamp>, now: Timestamp) {
        match ready_at {
            Some(until) if until > now => self.make_delayed(id, until),
            _ => self.insert_ready(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, ProcessInfo};
    use crate::protocol::TubeName;
    use bytes::Bytes;

    fn put(id: u64, tube: &TubeName) -> Change {
        Change::Put {
            id: JobId(id),
            tube: tube.clone(),
            pri: 0,
            delay: 0,
            ttr: 60,
            created_at: Timestamp(1),
            ready_at: None,
            body: Bytes::from_static(b"x"),
        }
    }

    /// A worker watched `t` (which the log does not record) when it was paused; its only
    /// job was deleted and another put later. The pause must survive the replay.
    #[test]
    fn a_pause_survives_its_tube_emptying_during_replay() {
        let now = Timestamp(1_000_000_000);
        let t = TubeName::new(b"t").expect("name");
        let mut e = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
        let log = [
            put(1, &t),
            Change::PauseTube {
                tube: t.clone(),
                until: Timestamp(now.0 + 3_600 * crate::engine::NANOS_PER_SEC),
            },
            Change::Delete { id: JobId(1) },
            put(2, &t),
        ];
        for change in log {
            e.restore(change, None, now).expect("restore");
        }
        e.finish_restore();
        assert!(e.is_paused(&t));
        // A tube that nothing uses at the end is dropped, pause and all.
        let u = TubeName::new(b"u").expect("name");
        let mut e = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
        e.restore(put(1, &u), None, now).expect("restore");
        e.restore(Change::Delete { id: JobId(1) }, None, now)
            .expect("restore");
        e.finish_restore();
        assert!(!e.is_paused(&u));
        assert_eq!(e.tube_names().len(), 1, "only default is left");
    }
}
