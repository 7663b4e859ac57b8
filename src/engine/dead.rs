//! Dead letters (larder extensions): listing, redriving and deleting buried jobs in bulk.
//! A dead letter is any buried job; [`super::job::Burial`] says why and when.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::session::SessionId;
use super::time::{Timestamp, NANOS_PER_SEC};
use super::Engine;
use crate::protocol::{BuryReason, DeadFilter, JobId, Reply, MAX_DEAD_BATCH};

/// Nanoseconds in a millisecond.
const NANOS_PER_MILLI: u64 = NANOS_PER_SEC / 1000;

impl Engine {
    /// Ids of the dead letters `filter` selects at `now`, lowest first, at most `limit`
    /// (itself at most [`MAX_DEAD_BATCH`]). Walks the id-ordered index of the tube's (or
    /// the server's) dead letters of each reason asked for, from `filter.from`, merging
    /// them: the cost is the number returned plus those passed over for being buried more
    /// recently than `older-than`, times a logarithm, whatever else is buried.
    pub(super) fn dead_letters(
        &self,
        filter: &DeadFilter,
        limit: u32,
        now: Timestamp,
    ) -> Vec<JobId> {
        let indexes: &[BTreeSet<JobId>; BuryReason::COUNT] = match &filter.tube {
            Some(name) => match self.tubes.find(name) {
                Some(t) => &self.tubes.get(t).dead,
                None => return Vec::new(),
            },
            None => &self.totals.dead,
        };
        if filter.from > filter.to {
            return Vec::new();
        }
        let cutoff = now - filter.older_than_ms.saturating_mul(NANOS_PER_MILLI);
        let old_enough = |id: &JobId| {
            // A burial of unknown time (from an old log) predates the restart.
            filter.older_than_ms == 0
                || self
                    .burial(*id)
                    .is_some_and(|b| b.at.is_none_or(|at| at <= cutoff))
        };
        let mut runs: Vec<_> = BuryReason::ALL
            .into_iter()
            .filter(|r| filter.reason.is_none_or(|want| want == *r))
            .map(|r| {
                indexes[r.index()]
                    .range(filter.from..=filter.to)
                    .filter(|id| old_enough(id))
                    .peekable()
            })
            .collect();
        let limit = limit.min(MAX_DEAD_BATCH) as usize;
        let mut ids = Vec::with_capacity(limit.min(64));
        while ids.len() < limit {
            let next = runs
                .iter_mut()
                .enumerate()
                .filter_map(|(i, run)| run.peek().map(|&&id| (id, i)))
                .min();
            let Some((id, i)) = next else {
                break;
            };
            runs[i].next();
            ids.push(id);
        }
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
                self.tally_of(job).attempts,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, Outcome, ProcessInfo};
    use crate::protocol::{BuryReason, Command, TubeName, TubeSetting};

    fn name(s: &str) -> TubeName {
        TubeName::new(s.as_bytes()).expect("name")
    }

    fn run(e: &mut Engine, sid: SessionId, cmd: Command) -> Reply {
        match e.apply(sid, cmd, Timestamp(10)) {
            Outcome::Reply(r) => r,
            other => panic!("got {other:?}"),
        }
    }

    /// The indexes give what a sort of every buried job gave: lowest ids first, merged
    /// across reasons and tubes, within the id range, at most `limit`.
    #[test]
    fn dead_letters_come_in_id_order_across_reasons_and_tubes() {
        let mut e = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), Timestamp(1));
        let s = e.open_session();
        let mut buried = Vec::new();
        for t in ["t0", "t1"] {
            let cmd = Command::ConfigTube {
                tube: name(t),
                setting: TubeSetting::MaxAttempts,
                value: Some(1),
            };
            assert_eq!(run(&mut e, s, cmd), Reply::Configured);
        }
        for i in 1..=12u64 {
            let tube = ["t0", "t1"][(i % 2) as usize];
            run(&mut e, s, Command::Use(name(tube)));
            let put = Command::Put {
                pri: 0,
                delay: 0,
                ttr: 60,
                body: b"x"[..].into(),
            };
            assert_eq!(run(&mut e, s, put), Reply::Inserted(JobId(i)));
            if i % 4 == 0 {
                continue;
            }
            let id = JobId(i);
            assert!(matches!(
                run(&mut e, s, Command::ReserveJob(id)),
                Reply::Reserved { .. }
            ));
            let reason = if i % 3 == 0 {
                let fail = Command::Fail {
                    id,
                    message: String::new(),
                };
                assert_eq!(run(&mut e, s, fail), Reply::Buried);
                BuryReason::MaxAttempts
            } else {
                assert_eq!(run(&mut e, s, Command::Bury { id, pri: 0 }), Reply::Buried);
                BuryReason::Buried
            };
            buried.push((id, tube, reason));
        }
        let check = |tube: Option<&str>, reason: Option<BuryReason>, from, to, limit| {
            let filter = DeadFilter {
                tube: tube.map(name),
                reason,
                older_than_ms: 0,
                from: JobId(from),
                to: JobId(to),
            };
            let want: Vec<JobId> = buried
                .iter()
                .filter(|(id, t, r)| {
                    tube.is_none_or(|want| want == *t)
                        && reason.is_none_or(|want| want == *r)
                        && (from..=to).contains(&id.0)
                })
                .map(|(id, _, _)| *id)
                .take(limit as usize)
                .collect();
            assert_eq!(
                e.dead_letters(&filter, limit, Timestamp(10)),
                want,
                "{filter}"
            );
        };
        check(None, None, 0, u64::MAX, 1000);
        check(None, None, 0, u64::MAX, 3);
        check(None, None, 5, 10, 1000);
        check(Some("t1"), None, 0, u64::MAX, 4);
        check(Some("t0"), Some(BuryReason::MaxAttempts), 0, u64::MAX, 1000);
        check(None, Some(BuryReason::Buried), 2, 11, 2);
        check(Some("nosuch"), None, 0, u64::MAX, 1000);
        check(None, None, 9, 3, 1000);
        assert!(buried.iter().any(|b| b.2 == BuryReason::MaxAttempts));
    }
}
