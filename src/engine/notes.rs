//! The notes table: [`JobNotes`] of the jobs that have any (a reported failure, a
//! burial), by id. An entry exists only while it holds something and never outlives its job
//! ([`Engine::unindex_job`] drops it).

use super::job::{Burial, JobNotes};
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
