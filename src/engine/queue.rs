//! Moving jobs between states, and handing ready jobs to waiting sessions. Every state
//! transition goes through [`Engine::detach`] and one of the `make_*`/`reserve_for`
//! functions, which keep the per-tube, per-session and global sets in step.

use super::job::{Burial, JobState, URGENT_THRESHOLD};
use super::session::{SessionId, Wait};
use super::time::Timestamp;
use super::{Change, Engine, SAFETY_MARGIN};
use crate::protocol::{JobId, Reply};

impl Engine {
    /// Takes job `id` out of whatever set holds it, leaving its state stale until the caller
    /// sets a new one. Returns the state it was in.
    pub(super) fn detach(&mut self, id: JobId) -> Option<JobState> {
        let job = self.jobs.get(&id)?;
        let (state, tube_id, pri) = (job.state(), job.tube, job.pri);
        let tube = self.tubes.get_mut(tube_id);
        match state {
            JobState::Ready => {
                tube.ready.remove(&(pri, id));
                self.totals.ready -= 1;
                if pri < URGENT_THRESHOLD {
                    tube.urgent -= 1;
                    self.totals.urgent -= 1;
                }
                self.refresh_serveable(tube_id);
            }
            JobState::Delayed { until } => {
                tube.delayed.remove(&(until, id));
                self.delayed.remove(&(until, id));
            }
            JobState::Buried { seq } => {
                tube.buried.remove(&seq);
                self.totals.buried -= 1;
                if let Some(burial) = self.notes.get_mut(&id).and_then(|n| n.burial.take()) {
                    tube.dead[burial.reason.index()].remove(&id);
                    self.totals.dead[burial.reason.index()].remove(&id);
                }
                self.tidy_notes(id);
            }
            JobState::Reserved { deadline } => {
                tube.reserved -= 1;
                let by = self.reserved.remove(&(deadline, id));
                if let Some(s) = by.and_then(|by| self.sessions.get_mut(&by)) {
                    s.reserved.remove(&(deadline, id));
                }
            }
        }
        Some(state)
    }

    /// Puts a detached or new job in its tube's ready set, without serving waiters.
    pub(super) fn insert_ready(&mut self, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.set_state(JobState::Ready);
        let tube_id = job.tube;
        let tube = self.tubes.get_mut(tube_id);
        tube.ready.insert((job.pri, id));
        self.totals.ready += 1;
        if job.pri < URGENT_THRESHOLD {
            tube.urgent += 1;
            self.totals.urgent += 1;
        }
        self.refresh_serveable(tube_id);
    }

    /// Brings tube `id`'s entry in `serveable` up to date: present, under its most urgent
    /// ready job, exactly when the tube is unpaused and has both a waiter and a ready job.
    /// Called wherever one of those changes.
    pub(super) fn refresh_serveable(&mut self, id: super::TubeId) {
        let tube = self.tubes.get_mut(id);
        let want = if tube.pause.is_none() && !tube.waiting.is_empty() {
            tube.ready.first()
        } else {
            None
        };
        if want == tube.serveable {
            return;
        }
        if let Some(old) = std::mem::replace(&mut tube.serveable, want) {
            self.serveable.remove(&(old, id));
        }
        if let Some(new) = want {
            self.serveable.insert((new, id));
        }
    }

    /// Makes a detached or new job ready and serves any session waiting for it.
    pub(super) fn make_ready(&mut self, id: JobId, now: Timestamp) {
        self.insert_ready(id);
        self.process_queue(now);
    }

    /// Makes a detached or new job delayed until `until`.
    pub(super) fn make_delayed(&mut self, id: JobId, until: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.set_state(JobState::Delayed { until });
        self.tubes.get_mut(job.tube).delayed.insert((until, id));
        self.delayed.insert((until, id));
    }

    /// Buries a detached job at the end of its tube's buried list, noting why and when.
    pub(super) fn make_buried(&mut self, id: JobId, burial: Burial) {
        let seq = self.next_bury_seq;
        self.next_bury_seq += 1;
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.set_state(JobState::Buried { seq });
        let tube = self.tubes.get_mut(job.tube);
        tube.buried.insert(seq, id);
        tube.dead[burial.reason.index()].insert(id);
        self.totals.buried += 1;
        self.totals.dead[burial.reason.index()].insert(id);
        self.notes_mut(id).burial = Some(burial);
        self.change_tally(id, |t| t.counters.buries += 1);
    }

    /// Changes why and when buried job `id` was buried, keeping its place in the tube's
    /// buried list.
    pub(super) fn rebury_as(&mut self, id: JobId, burial: Burial) {
        let Some(tube) = self.jobs.get(&id).map(|j| j.tube) else {
            return;
        };
        let old = self.notes_mut(id).burial.replace(burial);
        let dead = &mut self.tubes.get_mut(tube).dead;
        let totals = &mut self.totals.dead;
        if let Some(old) = old {
            dead[old.reason.index()].remove(&id);
            totals[old.reason.index()].remove(&id);
        }
        dead[burial.reason.index()].insert(id);
        totals[burial.reason.index()].insert(id);
    }

    /// Reserves a detached job for `sid` until now + its TTR. Returns the reply carrying it.
    pub(super) fn reserve_for(&mut self, sid: SessionId, id: JobId, now: Timestamp) -> Reply {
        let Some(job) = self.jobs.get_mut(&id) else {
            return Reply::InternalError;
        };
        let deadline = now.plus_secs(job.ttr);
        job.set_state(JobState::Reserved { deadline });
        let body = super::body_refs::body_from(&self.mem_bodies, job);
        self.tubes.get_mut(job.tube).reserved += 1;
        self.reserved.insert((deadline, id), sid);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.reserved.insert((deadline, id));
        }
        self.change_tally(id, |t| t.counters.reserves += 1);
        self.mark_worker(sid);
        self.changes.push(Change::Reserve { id });
        Reply::Reserved { id, body }
    }

    /// Whether `sid` holds a reservation within the safety margin of its deadline.
    pub(super) fn deadline_soon(&self, sid: SessionId, now: Timestamp) -> bool {
        self.sessions
            .get(&sid)
            .and_then(|s| s.soonest_deadline())
            .is_some_and(|d| now >= d - SAFETY_MARGIN)
    }

    /// Blocks `sid` in reserve until a job, its timeout or its safety margin.
    pub(super) fn start_wait(&mut self, sid: SessionId, timeout_at: Option<Timestamp>) {
        let seq = self.next_wait_seq;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        self.next_wait_seq += 1;
        let margin_at = session.soonest_deadline().map(|d| d - SAFETY_MARGIN);
        let wake_at = match (timeout_at, margin_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if session.wait.is_none() {
            self.totals.waiting += 1;
        }
        session.wait = Some(Wait {
            timeout_at,
            wake_at: wake_at.unwrap_or(Timestamp(u64::MAX)),
            seq,
        });
        let watching: Vec<_> = session.watching.iter().collect();
        for t in watching {
            self.tubes.get_mut(t).waiting.insert(seq, sid);
            self.refresh_serveable(t);
        }
        if let Some(at) = wake_at {
            self.wakes.insert((at, sid));
        }
    }

    /// Ends `sid`'s blocked reserve, if any, without replying.
    pub(super) fn stop_wait(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(wait) = session.wait.take() else {
            return;
        };
        self.totals.waiting -= 1;
        self.wakes.remove(&(wait.wake_at, sid));
        let watching: Vec<_> = session.watching.iter().collect();
        for t in watching {
            self.tubes.get_mut(t).waiting.remove(&wait.seq);
            self.refresh_serveable(t);
        }
    }

    /// A waiting session's timer fired: answer `DEADLINE_SOON` or `TIMED_OUT`.
    pub(super) fn wake_waiter(&mut self, sid: SessionId, now: Timestamp) {
        let timeout_at = self
            .sessions
            .get(&sid)
            .and_then(|s| s.wait)
            .and_then(|w| w.timeout_at);
        let reply = if self.deadline_soon(sid, now) {
            Reply::DeadlineSoon
        } else if timeout_at.is_some_and(|t| t <= now) {
            Reply::TimedOut
        } else {
            // The reservation that set this timer is gone; wait on with a fresh timer.
            self.stop_wait(sid);
            self.start_wait(sid, timeout_at);
            return;
        };
        self.stop_wait(sid);
        self.wakeups.push((sid, reply));
    }

    /// Ends every pause due at `now`.
    pub(super) fn expire_pauses(&mut self, now: Timestamp) {
        while let Some(&(until, tube)) = self.pauses.first() {
            if until > now {
                break;
            }
            self.pauses.remove(&(until, tube));
            self.tubes.get_mut(tube).pause = None;
            self.refresh_serveable(tube);
        }
    }

    /// Serves waiting sessions: while some unpaused tube has both a waiter and a ready job,
    /// the most urgent such job goes to the longest-waiting session of its tube. Pauses due
    /// at `now` end first. Each job served costs a few ordered-set operations per tube its
    /// session watches, whatever the number of tubes.
    pub(super) fn process_queue(&mut self, now: Timestamp) {
        self.expire_pauses(now);
        while let Some(&((_, id), t)) = self.serveable.first() {
            let Some(&sid) = self.tubes.get(t).waiting.values().next() else {
                return;
            };
            self.stop_wait(sid);
            self.detach(id);
            let reply = self.reserve_for(sid, id, now);
            self.wakeups.push((sid, reply));
        }
    }
}
