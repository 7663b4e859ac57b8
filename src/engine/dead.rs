//! Dead letters (larder extensions): listing, redriving and deleting buried jobs in bulk.
//! A dead letter is any buried job; [`super::job::Burial`] says why and when.

use std::fmt::Write;

use super::session::SessionId;
use super::time::{Timestamp, NANOS_PER_SEC};
use super::Engine;
use crate::protocol::{DeadFilter, JobId, Reply, MAX_DEAD_BATCH};

/// Nanoseconds in a millisecond.
const NANOS_PER_MILLI: u64 = NANOS_PER_SEC / 1000;

impl Engine {
    /// Ids of the dead letters `filter` selects at `now`, lowest first, at most `limit`
    /// (itself at most [`MAX_DEAD_BATCH`]).
    pub(super) fn dead_letters(
        &self,
        filter: &DeadFilter,
        limit: u32,
        now: Timestamp,
    ) -> Vec<JobId> {
        let tubes: Vec<_> = match &filter.tube {
            Some(name) => self.tubes.find(name).into_iter().collect(),
            None => self.tubes.iter().map(|(id, _)| id).collect(),
        };
        let cutoff = now - filter.older_than_ms.saturating_mul(NANOS_PER_MILLI);
        let mut ids: Vec<JobId> = tubes
            .into_iter()
            .flat_map(|t| self.tubes.get(t).buried.values().copied())
            .filter(|&id| (filter.from..=filter.to).contains(&id))
            .filter(|id| {
                let Some(burial) = self.burial(*id) else {
                    return false;
                };
                filter.reason.is_none_or(|r| r == burial.reason)
                    // A burial of unknown time (from an old log) predates the restart.
                    && (filter.older_than_ms == 0 || burial.at.is_none_or(|at| at <= cutoff))
            })
            .collect();
        ids.sort_unstable();
        ids.truncate(limit.min(MAX_DEAD_BATCH) as usize);
        ids
    }

    /// `list-dead`: a YAML sequence of mappings, one per dead letter.
    pub(super) fn list_dead(&self, filter: &DeadFilter, limit: u32, now: Timestamp) -> Reply {
        let mut y = String::from("---\n");
        for id in self.dead_letters(filter, limit, now) {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let burial = self.burial(id);
            let _ = write!(
                y,
                "- id: {id}\n  tube: {}\n  reason: {}\n  attempts: {}\n  pri: {}\n  \
                 buried-at: {}\n  last-error: {}\n",
                self.tubes.get(job.tube).name,
                burial.map_or("buried", |b| b.reason.name()),
                job.attempts,
                job.pri,
                burial
                    .and_then(|b| b.at)
                    .map_or(0, |t| t.0 / NANOS_PER_MILLI),
                yaml_quoted(self.last_error(id).unwrap_or("")),
            );
        }
        Reply::Ok(y.into())
    }

    /// `kick-dead`: redrives the selected dead letters (fresh attempt budget, ready now).
    pub(super) fn kick_dead(&mut self, filter: &DeadFilter, limit: u32, now: Timestamp) -> Reply {
        let ids = self.dead_letters(filter, limit, now);
        for &id in &ids {
            self.kick_one(id, now);
        }
        Reply::Kicked(ids.len() as u32)
    }

    /// `delete-dead`: deletes the selected dead letters.
    pub(super) fn delete_dead(
        &mut self,
        sid: SessionId,
        filter: &DeadFilter,
        limit: u32,
        now: Timestamp,
    ) -> Reply {
        let ids = self.dead_letters(filter, limit, now);
        let mut deleted = 0;
        for id in ids {
            if self.delete(sid, id) == Reply::Deleted {
                deleted += 1;
            }
        }
        Reply::DeletedCount(deleted)
    }
}

/// `s` as a YAML double-quoted scalar in plain ASCII: `"` and `\` escaped, control and
/// non-ASCII characters as `\xXX`, `\uXXXX` or `\UXXXXXXXX` escapes.
pub fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}
