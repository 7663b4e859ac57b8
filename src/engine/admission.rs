//! Back-pressure: the limits a `put` must pass ([`Engine::admit`]), the use they are
//! measured against, the refusal counters, and the log lines that mark refusing episodes.
//!
//! Use is kept as running totals, updated in the one place a job is created
//! (`insert_job`) and the one place it is removed (`remove_job`), for commands and replay
//! alike, so a restarted server counts exactly what it holds and admission costs a few
//! comparisons. Body bytes are counted from each body's length at put time. A limit of 0
//! means "no limit".
//!
//! An episode of refusals for one limit (and one tube, for the per-tube limits) starts with
//! its first refusal, logged as a warning, and ends with the next put that passes that
//! limit — for `min-free-disk`, when free space is back over the floor; for
//! `max-connections`, when a connection is accepted again — logged with the number refused
//! meanwhile. So a flood of refused puts makes two log lines, not one per put.

use super::notice::Notice;
use super::tube::TubeId;
use super::Engine;
use crate::protocol::{Refusal, TubeName, TubeSetting};

/// The server-wide back-pressure settings. Every field is a documented `larder serve`
/// flag; 0 means no limit (for `min_free_disk`, no floor). The per-tube limits are tube
/// settings ([`TubeSetting::MaxTubeJobs`], [`TubeSetting::MaxTubeBytes`]): set per tube
/// with `config-tube`, their server defaults in `EngineConfig::defaults`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Jobs in any state, server-wide (`--max-jobs`).
    pub max_jobs: u64,
    /// Body bytes of jobs in any state, server-wide (`--max-bytes`).
    pub max_bytes: u64,
    /// Open client connections (`--max-connections`); enforced by the server.
    pub max_connections: u64,
    /// Reply bytes waiting to be written to one client before the server stops reading
    /// its commands (`--max-output-per-connection`); enforced by the server.
    pub max_output_per_connection: u64,
    /// Seconds a client may leave the server's replies unread, while they wait, before it
    /// is disconnected (`--output-stall-timeout`); enforced by the server.
    pub output_stall_timeout: u64,
    /// Free bytes the data directory's filesystem must keep; below it puts are refused
    /// (`--min-free-disk`). The server measures free space and reports it to the engine.
    pub min_free_disk: u64,
    /// Tubes that exist at once, server-wide (`--max-tubes`): `use`, `watch` and
    /// `config-tube` of a new tube beyond it are refused.
    pub max_tubes: u64,
    /// Tubes one connection may watch (`--max-watches-per-connection`).
    pub max_watches_per_connection: u64,
}

impl Limits {
    /// The documented defaults (protocol.md §9.2).
    pub const DEFAULT: Limits = Limits {
        max_jobs: 1_000_000,
        max_bytes: 4 << 30,
        max_connections: 10_000,
        max_output_per_connection: 1 << 20,
        output_stall_timeout: 60,
        min_free_disk: 64 << 20,
        max_tubes: 10_000,
        max_watches_per_connection: 1_000,
    };

    /// No limit at all (for tests of other things).
    pub const UNLIMITED: Limits = Limits {
        max_jobs: 0,
        max_bytes: 0,
        max_connections: 0,
        max_output_per_connection: 0,
        output_stall_timeout: 0,
        min_free_disk: 0,
        max_tubes: 0,
        max_watches_per_connection: 0,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Whether `used + adding` goes over `limit` (0: no limit).
fn over(limit: u64, used: u64, adding: u64) -> bool {
    limit > 0 && used.saturating_add(adding) > limit
}

/// A run of refusals by one limit.
#[derive(Clone, Debug)]
struct Episode {
    reason: Refusal,
    /// The tube, for per-tube limits.
    tube: Option<TubeName>,
    /// Refusals so far.
    refused: u64,
}

/// The use and refusal figures behind the limits.
#[derive(Clone, Debug, Default)]
pub(super) struct Pressure {
    /// Body bytes of every job.
    pub bytes: u64,
    /// Free bytes on the data directory's filesystem, as last measured by the server.
    pub free_disk: Option<u64>,
    /// Refusals since start, by [`Refusal::index`].
    pub refused: [u64; Refusal::COUNT],
    /// Connections closed because they left their replies unread too long.
    pub stalled_output_disconnects: u64,
    /// Connections closed because a command took longer than `--command-timeout` to arrive.
    pub command_timeout_disconnects: u64,
    /// The log found the disk full and has spent its reserve (the log writer says when
    /// it starts and ends, so no episode is kept for it here).
    pub log_full: bool,
    /// The log is out of file descriptors (the writer says when it starts and ends).
    pub out_of_files: bool,
    episodes: Vec<Episode>,
}

impl Engine {
    /// Whether a job of `size` body bytes may be put into tube `tube` now, and if not, the
    /// limit that refuses it. Checked in this order: the disk floor, the server-wide
    /// limits (jobs, then bytes), then the tube's (jobs, then bytes).
    pub(super) fn admit(&self, tube: TubeId, size: u64) -> Result<(), Refusal> {
        let l = &self.config.limits;
        let p = &self.pressure;
        if p.log_full {
            return Err(Refusal::LogFull);
        }
        if p.out_of_files {
            return Err(Refusal::OpenFiles);
        }
        if self.disk_low() {
            return Err(Refusal::MinFreeDisk);
        }
        if over(l.max_jobs, self.jobs.len() as u64, 1) {
            return Err(Refusal::MaxJobs);
        }
        if over(l.max_bytes, p.bytes, size) {
            return Err(Refusal::MaxBytes);
        }
        let t = self.tubes.get(tube);
        if over(
            self.setting(tube, TubeSetting::MaxTubeJobs),
            t.job_count(),
            1,
        ) {
            return Err(Refusal::MaxTubeJobs);
        }
        if over(self.setting(tube, TubeSetting::MaxTubeBytes), t.bytes, size) {
            return Err(Refusal::MaxTubeBytes);
        }
        Ok(())
    }

    /// Whether free space is known to be below the floor.
    fn disk_low(&self) -> bool {
        let floor = self.config.limits.min_free_disk;
        floor > 0 && self.pressure.free_disk.is_some_and(|f| f < floor)
    }

    /// Counts a refusal by `reason` (of a put into `tube`, for per-tube limits), starting an
    /// episode if none is running.
    pub(super) fn count_refusal(&mut self, reason: Refusal, tube: Option<TubeId>) {
        self.pressure.refused[reason.index()] += 1;
        if let Some(t) = tube {
            let counters = &mut self.tubes.get_mut(t).counters;
            match reason {
                Refusal::MaxTubeJobs => counters.refused_jobs += 1,
                Refusal::MaxTubeBytes => counters.refused_bytes += 1,
                _ => {}
            }
        }
        let value = self.limit_value(reason, tube);
        let tube = tube
            .filter(|_| reason.per_tube())
            .map(|t| self.tubes.get(t).name.clone());
        let p = &mut self.pressure;
        if let Some(e) = p
            .episodes
            .iter_mut()
            .find(|e| e.reason == reason && e.tube == tube)
        {
            e.refused += 1;
            return;
        }
        self.notices.push(Notice::Refusing {
            limit: reason,
            value,
            tube: tube.clone(),
            jobs: self.jobs.len(),
            bytes: p.bytes,
        });
        p.episodes.push(Episode {
            reason,
            tube,
            refused: 1,
        });
    }

    /// The value of the limit behind `reason` (for a put into `tube`).
    fn limit_value(&self, reason: Refusal, tube: Option<TubeId>) -> u64 {
        let l = &self.config.limits;
        let tube_setting = |s| tube.map_or(self.config.defaults.get(s), |t| self.setting(t, s));
        match reason {
            Refusal::MaxJobs => l.max_jobs,
            Refusal::MaxBytes => l.max_bytes,
            Refusal::MaxTubeJobs => tube_setting(TubeSetting::MaxTubeJobs),
            Refusal::MaxTubeBytes => tube_setting(TubeSetting::MaxTubeBytes),
            Refusal::MinFreeDisk => l.min_free_disk,
            Refusal::MaxConnections => l.max_connections,
            Refusal::MaxTubes => l.max_tubes,
            Refusal::MaxWatchesPerConnection => l.max_watches_per_connection,
            Refusal::LogFull | Refusal::OpenFiles => 0,
        }
    }

    /// A put into `tube` passed every limit: ends the episodes of the limits it passed.
    pub(super) fn count_admission(&mut self, tube: TubeId) {
        if self.pressure.episodes.is_empty() {
            return;
        }
        let name = self.tubes.get(tube).name.clone();
        self.end_episodes(|e| match e.reason {
            Refusal::MaxJobs | Refusal::MaxBytes => true,
            Refusal::MaxTubeJobs | Refusal::MaxTubeBytes => e.tube.as_ref() == Some(&name),
            Refusal::MinFreeDisk
            | Refusal::MaxConnections
            | Refusal::LogFull
            | Refusal::OpenFiles
            | Refusal::MaxTubes
            | Refusal::MaxWatchesPerConnection => false,
        });
    }

    /// Something limited by `reason` (a new tube, a new watch) was allowed: ends that
    /// limit's refusal episode, if one is running.
    pub(super) fn count_passed(&mut self, reason: Refusal) {
        if !self.pressure.episodes.is_empty() {
            self.end_episodes(|e| e.reason == reason);
        }
    }

    fn end_episodes(&mut self, ends: impl Fn(&Episode) -> bool) {
        self.pressure.episodes.retain(|e| {
            if !ends(e) {
                return true;
            }
            self.notices.push(Notice::Accepting {
                limit: e.reason,
                tube: e.tube.clone(),
                refused: e.refused,
            });
            false
        });
    }

    /// Sets whether the log has found the disk full (new jobs are refused meanwhile).
    pub fn set_log_full(&mut self, full: bool) {
        self.pressure.log_full = full;
    }

    /// Sets whether the log is out of file descriptors (new jobs are refused meanwhile).
    pub fn set_out_of_files(&mut self, out: bool) {
        self.pressure.out_of_files = out;
    }

    /// Records the free space on the data directory's filesystem (`None`: could not be
    /// measured, which refuses nothing). Crossing the `min-free-disk` floor either way
    /// starts or ends its episode.
    pub fn set_free_disk(&mut self, free: Option<u64>) {
        let was_low = self.disk_low();
        self.pressure.free_disk = free;
        let low = self.disk_low();
        if low && !was_low {
            self.notices.push(Notice::DiskLow {
                free,
                floor: self.config.limits.min_free_disk,
            });
            self.pressure.episodes.push(Episode {
                reason: Refusal::MinFreeDisk,
                tube: None,
                refused: 0,
            });
        } else if was_low && !low {
            self.end_episodes(|e| e.reason == Refusal::MinFreeDisk);
        }
    }

    /// Free bytes on the data directory's filesystem as last measured, if known.
    pub fn free_disk(&self) -> Option<u64> {
        self.pressure.free_disk
    }

    /// Counts a connection the server turned away because of `max-connections`.
    pub fn refuse_connection(&mut self) {
        self.count_refusal(Refusal::MaxConnections, None);
    }

    /// Ends a `max-connections` episode: a connection was accepted.
    pub(super) fn count_connection(&mut self) {
        if !self.pressure.episodes.is_empty() {
            self.end_episodes(|e| e.reason == Refusal::MaxConnections);
        }
    }

    /// Counts a connection the server closed for leaving its replies unread.
    pub fn count_stalled_output(&mut self) {
        self.pressure.stalled_output_disconnects += 1;
    }

    /// Counts a connection the server closed for taking too long to send a command.
    pub fn count_command_timeout(&mut self) {
        self.pressure.command_timeout_disconnects += 1;
    }

    /// Refusals so far by `reason`.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.pressure.refused[reason.index()]
    }

    /// Body bytes of every job.
    pub fn body_bytes(&self) -> u64 {
        self.pressure.bytes
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The `stats` lines for the limits: settings, use, refusals.
    pub(super) fn limit_stats(&self, y: &mut String) {
        use std::fmt::Write;
        let l = &self.config.limits;
        let p = &self.pressure;
        let _ = write!(
            y,
            "max-jobs: {}\nmax-bytes: {}\nmax-tube-jobs: {}\nmax-tube-bytes: {}\n\
             max-connections: {}\nmax-output-per-connection: {}\noutput-stall-timeout: {}\n\
             min-free-disk: {}\nmax-tubes: {}\nmax-watches-per-connection: {}\n\
             current-jobs: {}\ncurrent-bytes: {}\n",
            l.max_jobs,
            l.max_bytes,
            self.config.defaults.get(TubeSetting::MaxTubeJobs),
            self.config.defaults.get(TubeSetting::MaxTubeBytes),
            l.max_connections,
            l.max_output_per_connection,
            l.output_stall_timeout,
            l.min_free_disk,
            l.max_tubes,
            l.max_watches_per_connection,
            self.jobs.len(),
            p.bytes,
        );
        match p.free_disk {
            Some(free) => {
                let _ = writeln!(y, "current-free-disk: {free}");
            }
            None => y.push_str("current-free-disk: unknown\n"),
        }
        for reason in Refusal::ALL {
            let _ = writeln!(y, "refused-{}: {}", reason.setting(), self.refusals(reason));
        }
        let _ = writeln!(
            y,
            "stalled-output-disconnects: {}",
            p.stalled_output_disconnects
        );
        let _ = writeln!(
            y,
            "command-timeout-disconnects: {}",
            p.command_timeout_disconnects
        );
    }
}
