//! The notes table: [`JobNotes`] of the jobs that have any (a reported failure, a
//! burial), by id. An entry exists only while it holds something and never outlives its job
//! ([`Engine::unindex_job`] drops it).

use super::job::{Burial, Job, JobNotes, SmallTally, Tally};
use super::Engine;
use crate::protocol::JobId;

impl Engine {
    /// Job `id`'s notes, if it has any.
    pub fn job_notes(&self, id: JobId) -> Option<&JobNotes> {
        self.notes.get(&id)
    }

    /// The message of the last failure reported for job `id`.
    pub fn last_error(&self, id: JobId) -> Option<&str> {
        self.notes.get(&id).and_then(|n| n.last_error.as_deref())
    }

    /// Why and when job `id` was buried, while it is buried.
    pub fn burial(&self, id: JobId) -> Option<Burial> {
        self.notes.get(&id).and_then(|n| n.burial)
    }

    /// Job `id`'s counters and attempts.
    pub fn job_tally(&self, id: JobId) -> Option<Tally> {
        self.jobs.get(&id).map(|job| self.tally_of(job))
    }

    /// `job`'s counters and attempts.
    pub(super) fn tally_of(&self, job: &Job) -> Tally {
        job.tally.unpack().unwrap_or_else(|| {
            self.notes
                .get(&job.id)
                .and_then(|n| n.tally)
                .unwrap_or_default()
        })
    }

    /// Changes job `id`'s counters and attempts with `change`, keeping them in the job
    /// while they fit and in its notes while not. Returns the new tally, or `None` if the
    /// job is gone.
    pub(super) fn change_tally(
        &mut self,
        id: JobId,
        change: impl FnOnce(&mut Tally),
    ) -> Option<Tally> {
        let job = self.jobs.get_mut(&id)?;
        let spilled = job.tally.unpack().is_none();
        let mut tally = job.tally.unpack().unwrap_or_else(|| {
            self.notes
                .get(&id)
                .and_then(|n| n.tally)
                .unwrap_or_default()
        });
        change(&mut tally);
        match SmallTally::pack(&tally) {
            Some(small) => {
                job.tally = small;
                if spilled {
                    self.notes_mut(id).tally = None;
                    self.tidy_notes(id);
                }
            }
            None => {
                job.tally = SmallTally::ELSEWHERE;
                self.notes_mut(id).tally = Some(tally);
            }
        }
        Some(tally)
    }

    /// Job `id`'s notes, created empty if absent.
    pub(super) fn notes_mut(&mut self, id: JobId) -> &mut JobNotes {
        self.notes.entry(id).or_default()
    }

    /// Drops job `id`'s notes if nothing is left in them.
    pub(super) fn tidy_notes(&mut self, id: JobId) {
        if self
            .notes
            .get(&id)
            .is_some_and(|n| *n == JobNotes::default())
        {
            self.notes.remove(&id);
        }
    }
}
