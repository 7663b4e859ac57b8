//! Inspection commands: peek, peek-ready, peek-delayed, peek-buried, stats-job, stats-tube,
//! stats. None of them changes state.

use std::fmt::Write;

use super::dead::yaml_quoted;
use super::job::JobState;
use super::session::SessionId;
use super::time::{Timestamp, NANOS_PER_SEC};
use super::tube::TubeId;
use super::Engine;
use crate::protocol::{BuryReason, CommandKind as K, JobId, Reply, TubeName, TubeSetting};

impl Engine {
    fn found(&self, id: Option<JobId>) -> Reply {
        match id.and_then(|id| self.jobs.get(&id)) {
            Some(job) => Reply::Found {
                id: job.id,
                body: self.body_of(job),
            },
            None => Reply::NotFound,
        }
    }

    fn used_tube(&self, sid: SessionId) -> Option<TubeId> {
        self.sessions.get(&sid).map(|s| s.using)
    }

    pub(super) fn peek(&self, id: JobId) -> Reply {
        self.found(Some(id))
    }

    pub(super) fn peek_ready(&self, sid: SessionId) -> Reply {
        let id = self
            .used_tube(sid)
            .and_then(|t| self.tubes.get(t).ready.first().map(|(_, id)| id));
        self.found(id)
    }

    pub(super) fn peek_delayed(&self, sid: SessionId) -> Reply {
        let id = self
            .used_tube(sid)
            .and_then(|t| self.tubes.get(t).delayed.first().map(|&(_, id)| id));
        self.found(id)
    }

    pub(super) fn peek_buried(&self, sid: SessionId) -> Reply {
        let id = self.used_tube(sid).and_then(|t| {
            self.tubes
                .get(t)
                .buried
                .first_key_value()
                .map(|(_, &id)| id)
        });
        self.found(id)
    }

    /// Whether `sid` asked for larder's fields in `stats`, `stats-job` and `stats-tube`.
    pub(super) fn extended(&self, sid: SessionId) -> bool {
        self.sessions.get(&sid).is_some_and(|s| s.extended_stats)
    }

    /// `stats-job`; with `extended`, larder's fields follow beanstalkd's.
    pub(super) fn stats_job(&self, id: JobId, extended: bool, now: Timestamp) -> Reply {
        let Some(job) = self.jobs.get(&id) else {
            return Reply::NotFound;
        };
        let time_left = match job.state() {
            JobState::Reserved { deadline, .. } => now.secs_until(deadline),
            JobState::Delayed { until } => now.secs_until(until),
            JobState::Ready | JobState::Buried { .. } => 0,
        };
        let tally = self.tally_of(job);
        let c = tally.counters;
        let mut y = String::with_capacity(256);
        let _ = write!(
            y,
            "---\nid: {}\ntube: {}\nstate: {}\npri: {}\nage: {}\ndelay: {}\nttr: {}\n\
             time-left: {}\nfile: 0\nreserves: {}\ntimeouts: {}\nreleases: {}\nburies: {}\n\
             kicks: {}\n",
            job.id,
            self.tubes.get(job.tube).name,
            job.state().name(),
            job.pri,
            job.created_at.secs_until(now),
            job.delay,
            job.ttr,
            time_left,
            c.reserves,
            c.timeouts,
            c.releases,
            c.buries,
            c.kicks,
        );
        if !extended {
            return Reply::Ok(y.into());
        }
        let burial = self.burial(id);
        let _ = write!(
            y,
            "attempts: {}\nmax-attempts: {}\nlast-error: {}\nbury-reason: {}\nburied-at: {}\n",
            tally.attempts,
            self.setting(job.tube, TubeSetting::MaxAttempts),
            yaml_quoted(self.last_error(id).unwrap_or("")),
            burial.map_or("none", |b| b.reason.name()),
            burial
                .and_then(|b| b.at)
                .map_or(0, |t| t.0 / (NANOS_PER_SEC / 1000)),
        );
        Reply::Ok(y.into())
    }

    /// `stats-tube`; with `extended`, larder's fields follow beanstalkd's.
    pub(super) fn stats_tube(&self, name: &TubeName, extended: bool, now: Timestamp) -> Reply {
        let Some(id) = self.tubes.find(name) else {
            return Reply::NotFound;
        };
        let t = self.tubes.get(id);
        let (pause, left) = match t.pause {
            Some(p) => (p.nanos / NANOS_PER_SEC, now.secs_until(p.until)),
            None => (0, 0),
        };
        let mut y = String::with_capacity(384);
        let _ = write!(
            y,
            "---\nname: {}\ncurrent-jobs-urgent: {}\ncurrent-jobs-ready: {}\n\
             current-jobs-reserved: {}\ncurrent-jobs-delayed: {}\ncurrent-jobs-buried: {}\n\
             total-jobs: {}\ncurrent-using: {}\ncurrent-watching: {}\ncurrent-waiting: {}\n\
             cmd-delete: {}\ncmd-pause-tube: {}\npause: {}\npause-time-left: {}\n",
            t.name,
            t.urgent,
            t.ready.len(),
            t.reserved,
            t.delayed.len(),
            t.buried.len(),
            t.counters.total_jobs,
            t.using,
            t.watching,
            t.waiting.len(),
            t.counters.deletes,
            t.counters.pauses,
            pause,
            left,
        );
        if !extended {
            return Reply::Ok(y.into());
        }
        for setting in TubeSetting::ALL {
            let v = self.setting(id, setting);
            let _ = writeln!(y, "{setting}: {}", setting.format(v));
        }
        let _ = write!(
            y,
            "current-bytes: {}\nrefused-max-tube-jobs: {}\nrefused-max-tube-bytes: {}\n",
            t.bytes, t.counters.refused_jobs, t.counters.refused_bytes
        );
        for reason in BuryReason::ALL {
            let _ = writeln!(y, "dead-letters-{reason}: {}", t.dead[reason.index()].len());
        }
        let _ = y.write_str("own-settings: \"");
        for (n, (setting, _)) in t.settings.explicit().enumerate() {
            let _ = write!(y, "{}{setting}", if n == 0 { "" } else { "," });
        }
        y.push_str("\"\n");
        Reply::Ok(y.into())
    }

    /// `stats`: beanstalkd's fields, in its order; with `extended`, larder's follow.
    /// Every figure is a running total: the cost does not grow with tubes or sessions.
    pub(super) fn stats(&self, extended: bool, now: Timestamp) -> Reply {
        let t = &self.totals;
        let (urgent, ready, buried) = (t.urgent, t.ready, t.buried);
        let (reserved, delayed) = (self.reserved.len(), self.delayed.len());
        let (producers, workers, waiting) = (t.producers, t.workers, t.waiting);
        let cmd = |k: K| self.counters.commands[k.index()];
        let p = &self.process;
        let cpu = (p.cpu_times)();
        let mut y = String::with_capacity(1536);
        let _ = write!(
            y,
            "---\ncurrent-jobs-urgent: {urgent}\ncurrent-jobs-ready: {ready}\n\
             current-jobs-reserved: {reserved}\ncurrent-jobs-delayed: {delayed}\n\
             current-jobs-buried: {buried}\n"
        );
        let counted = [
            K::Put,
            K::Peek,
            K::PeekReady,
            K::PeekDelayed,
            K::PeekBuried,
            K::Reserve,
            K::ReserveWithTimeout,
            K::Delete,
            K::Release,
            K::Use,
            K::Watch,
            K::Ignore,
            K::Bury,
            K::Kick,
            K::Touch,
            K::Stats,
            K::StatsJob,
            K::StatsTube,
            K::ListTubes,
            K::ListTubeUsed,
            K::ListTubesWatched,
            K::PauseTube,
        ];
        for kind in counted {
            let _ = writeln!(y, "cmd-{kind}: {}", cmd(kind));
        }
        let _ = write!(
            y,
            "job-timeouts: {}\ntotal-jobs: {}\nmax-job-size: {}\ncurrent-tubes: {}\n\
             current-connections: {}\ncurrent-producers: {producers}\n\
             current-workers: {workers}\ncurrent-waiting: {waiting}\n\
             total-connections: {}\npid: {}\nversion: \"{}\"\n\
             rusage-utime: {}.{:06}\nrusage-stime: {}.{:06}\nuptime: {}\n\
             binlog-oldest-index: 0\nbinlog-current-index: 0\nbinlog-records-migrated: 0\n\
             binlog-records-written: 0\nbinlog-max-size: 0\ndraining: {}\nid: {}\n\
             hostname: {}\nos: {}\nplatform: {}\n",
            self.counters.timeouts,
            self.counters.total_jobs,
            self.config.max_job_size,
            self.tubes.len(),
            self.sessions.len(),
            self.counters.total_connections,
            p.pid,
            p.version,
            cpu.user_micros / 1_000_000,
            cpu.user_micros % 1_000_000,
            cpu.system_micros / 1_000_000,
            cpu.system_micros % 1_000_000,
            self.started_at.secs_until(now).max(0),
            self.draining,
            p.instance_id,
            p.hostname,
            p.os,
            p.platform,
        );
        if !extended {
            return Reply::Ok(y.into());
        }
        let l = &self.log;
        let per_fsync = if l.fsyncs == 0 {
            0.0
        } else {
            l.records_written as f64 / l.fsyncs as f64
        };
        let _ = write!(
            y,
            "log-fsync: {}\nlog-segments: {}\nlog-oldest-segment: {}\nlog-current-segment: {}\n\
             log-records-written: {}\nlog-fsyncs: {}\nlog-records-per-fsync: {per_fsync:.2}\n\
             log-bytes: {}\nlog-live-bytes: {}\nlog-segments-removed: {}\nlog-jobs-compacted: {}\n",
            l.fsync,
            l.segments,
            l.oldest_segment,
            l.current_segment,
            l.records_written,
            l.fsyncs,
            l.bytes,
            self.live_bytes(),
            l.segments_removed,
            l.jobs_compacted,
        );
        self.limit_stats(&mut y);
        self.retry_stats(&mut y);
        if let Some(cluster) = &self.cluster_yaml {
            y.push_str(cluster);
        }
        Reply::Ok(y.into())
    }

    /// larder's retry and dead-letter fields of `stats` (§7 of protocol.md).
    fn retry_stats(&self, y: &mut String) {
        for reason in BuryReason::ALL {
            let n = self.totals.dead[reason.index()].len();
            let _ = writeln!(y, "dead-letters-{reason}: {n}");
        }
        let c = &self.counters;
        let _ = write!(
            y,
            "total-attempts: {}\ntotal-retries-delayed: {}\ntotal-dead-lettered: {}\n",
            c.attempts, c.retries_delayed, c.dead_lettered
        );
        for kind in [
            K::ConfigTube,
            K::Fail,
            K::ListDead,
            K::KickDead,
            K::DeleteDead,
            K::ExtendedStats,
        ] {
            let _ = writeln!(y, "cmd-{kind}: {}", c.commands[kind.index()]);
        }
    }
}
