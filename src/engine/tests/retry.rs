//! Whole-engine tests of retries: attempts counted across every way a reservation ends,
//! the backoff applied, dead-lettering at `max-attempts`, `fail`, and the dead-letter
//! commands.

use bytes::Bytes;

use crate::engine::retry::NANOS_PER_MILLI;
use crate::engine::{
    Change, Engine, EngineConfig, JobState, Outcome, ProcessInfo, SessionId, Timestamp,
    NANOS_PER_SEC,
};
use crate::protocol::{BuryReason, Command, DeadFilter, JobId, Reply, TubeName, TubeSetting};

const SEC: u64 = NANOS_PER_SEC;
const MS: u64 = NANOS_PER_MILLI;
const T0: Timestamp = Timestamp(1_800_000_000 * SEC);

struct World {
    e: Engine,
    s: SessionId,
    now: Timestamp,
}

impl World {
    /// An engine with tube `t` configured by `settings` (name, value) and one session
    /// using and watching only `t`.
    fn new(settings: &[(&str, &str)]) -> World {
        let mut e = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), T0);
        let s = e.open_session();
        let mut w = World { e, s, now: T0 };
        for (name, value) in settings {
            let setting = TubeSetting::from_name(name.as_bytes()).expect("setting");
            let value = setting.parse(value.as_bytes()).expect("value");
            let reply = w.cmd(Command::ConfigTube {
                tube: tube(),
                setting,
                value: Some(value),
            });
            assert_eq!(reply, Reply::Configured);
        }
        w.cmd(Command::Use(tube()));
        w.cmd(Command::Watch(tube()));
        w.cmd(Command::Ignore(TubeName::default_tube()));
        w
    }

    fn cmd(&mut self, c: Command) -> Reply {
        self.cmd_as(self.s, c)
    }

    fn cmd_as(&mut self, s: SessionId, c: Command) -> Reply {
        match self.e.apply(s, c, self.now) {
            Outcome::Reply(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn put(&mut self, ttr: u32) -> JobId {
        match self.cmd(Command::Put {
            pri: 10,
            delay: 0,
            ttr,
            body: Bytes::from_static(b"job"),
        }) {
            Reply::Inserted(id) => id,
            other => panic!("put: {other:?}"),
        }
    }

    fn reserve(&mut self) -> Reply {
        self.cmd(Command::ReserveWithTimeout(0))
    }

    fn advance(&mut self, nanos: u64) {
        self.now = self.now + nanos;
        self.e.tick(self.now);
    }

    fn attempts(&self, id: JobId) -> u32 {
        self.e.job_tally(id).expect("job").attempts
    }

    fn state(&self, id: JobId) -> JobState {
        self.e.job(id).expect("job").state()
    }

    fn stats_job(&mut self, id: JobId) -> Vec<(String, String)> {
        assert_eq!(self.cmd(Command::ExtendedStats), Reply::Extended);
        match self.cmd(Command::StatsJob(id)) {
            Reply::Ok(y) => yaml_map(&y),
            other => panic!("stats-job: {other:?}"),
        }
    }
}

fn tube() -> TubeName {
    TubeName::new(b"work").expect("tube")
}

/// `key: value` lines of a YAML reply, quotes kept off (the client's parser is not in
/// the loom build).
fn yaml_map(y: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(y)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

fn get(fields: &[(String, String)], key: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn every_way_a_reservation_ends_without_delete_counts_one_attempt() {
    let mut w = World::new(&[]);
    let id = w.put(1);
    // TTR expiry.
    assert!(matches!(w.reserve(), Reply::Reserved { .. }));
    w.advance(SEC);
    assert_eq!(w.attempts(id), 1);
    assert_eq!(w.e.last_error(id), Some("ttr expired (attempt 1)"));
    // Release.
    w.reserve();
    let release = Command::Release {
        id,
        pri: 10,
        delay: 0,
    };
    assert_eq!(w.cmd(release), Reply::Released);
    assert_eq!(w.attempts(id), 2);
    // Reported failure, with its message kept.
    w.reserve();
    let fail = Command::Fail {
        id,
        message: "boom".into(),
    };
    assert_eq!(w.cmd(fail), Reply::Released);
    assert_eq!(w.attempts(id), 3);
    assert_eq!(w.e.last_error(id), Some("boom"));
    // Disconnect.
    w.reserve();
    w.e.close_session(w.s, w.now);
    assert_eq!(w.attempts(id), 4);
    assert_eq!(w.e.last_error(id), Some("worker disconnected (attempt 4)"));
    assert_eq!(w.state(id), JobState::Ready);
    // Touch and peek do not end a reservation; a worker's bury is not an attempt.
    w.s = w.e.open_session();
    w.cmd(Command::Watch(tube()));
    w.reserve();
    w.cmd(Command::Touch(id));
    w.cmd(Command::Bury { id, pri: 3 });
    assert_eq!(w.attempts(id), 4);
    // Without a policy nothing else changed: every end sent the job straight back.
    let f = w.stats_job(id);
    assert_eq!(get(&f, "attempts"), "4");
    assert_eq!(get(&f, "bury-reason"), "buried");
    assert_eq!(get(&f, "buried-at"), (w.now.0 / MS).to_string());
    assert_eq!(get(&f, "last-error"), "worker disconnected (attempt 4)");
    assert_eq!(get(&f, "timeouts"), "1");
    assert_eq!(get(&f, "releases"), "1");
}

#[test]
fn a_tube_without_policy_returns_timed_out_jobs_at_once_with_no_retry_record() {
    let mut w = World::new(&[]);
    let id = w.put(1);
    w.reserve();
    w.e.take_changes();
    w.advance(SEC);
    assert_eq!(w.state(id), JobState::Ready);
    assert_eq!(w.e.take_changes(), [Change::Timeout { id }]);
}

#[test]
fn timeouts_and_disconnects_retry_on_the_backoff_schedule() {
    let mut w = World::new(&[
        ("retry-delay", "1000"),
        ("retry-backoff", "3"),
        ("retry-max", "5000"),
    ]);
    let id = w.put(1);
    for expected_ms in [1000, 3000, 5000, 5000] {
        assert!(matches!(w.reserve(), Reply::Reserved { .. }));
        w.advance(SEC);
        assert_eq!(
            w.state(id),
            JobState::Delayed {
                until: w.now + expected_ms * MS
            }
        );
        // Not a moment early.
        w.advance(expected_ms * MS - 1);
        assert!(matches!(w.state(id), JobState::Delayed { .. }));
        w.advance(1);
        assert_eq!(w.state(id), JobState::Ready);
    }
    // A disconnect is retried the same way.
    w.reserve();
    w.e.close_session(w.s, w.now);
    assert_eq!(
        w.state(id),
        JobState::Delayed {
            until: w.now + 5000 * MS
        }
    );
    assert_eq!(w.attempts(id), 5);
}

#[test]
fn jitter_shortens_retry_delays_within_its_bounds() {
    let mut w = World::new(&[("retry-delay", "8000"), ("retry-jitter", "0.5")]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let id = w.put(1);
        w.reserve();
        w.advance(SEC);
        let JobState::Delayed { until } = w.state(id) else {
            panic!("not delayed");
        };
        let ms = (until.0 - w.now.0) / MS;
        assert!((4000..=8000).contains(&ms), "{ms}");
        seen.insert(ms);
        w.cmd(Command::Delete(id));
    }
    assert!(seen.len() > 1, "jitter never varied: {seen:?}");
}

#[test]
fn a_release_keeps_the_workers_delay_and_a_failure_uses_the_policy() {
    let mut w = World::new(&[("retry-delay", "2000")]);
    let id = w.put(10);
    w.reserve();
    let release = Command::Release {
        id,
        pri: 5,
        delay: 7,
    };
    assert_eq!(w.cmd(release), Reply::Released);
    assert_eq!(
        w.state(id),
        JobState::Delayed {
            until: w.now.plus_secs(7)
        }
    );
    w.cmd(Command::KickJob(id));
    w.reserve();
    let fail = Command::Fail {
        id,
        message: String::new(),
    };
    assert_eq!(w.cmd(fail), Reply::Released);
    // Second attempt: 2000 ms × 2 (the default backoff).
    assert_eq!(
        w.state(id),
        JobState::Delayed {
            until: w.now + 4000 * MS
        }
    );
    // fail is only for the caller's own reservation.
    let other = w.e.open_session();
    let fail = Command::Fail {
        id,
        message: "x".into(),
    };
    assert_eq!(w.cmd_as(other, fail), Reply::NotFound);
    assert_eq!(w.attempts(id), 2);
}

#[test]
fn a_job_out_of_attempts_is_buried_with_its_reason_and_redrive_resets_the_budget() {
    let mut w = World::new(&[("max-attempts", "3"), ("retry-delay", "1000")]);
    let id = w.put(1);
    // Attempt 1 times out, attempt 2 is released, attempt 3 fails: out of attempts.
    w.reserve();
    w.advance(SEC);
    w.advance(1000 * MS);
    w.reserve();
    let release = Command::Release {
        id,
        pri: 10,
        delay: 0,
    };
    assert_eq!(w.cmd(release), Reply::Released);
    w.reserve();
    let fail = Command::Fail {
        id,
        message: "poison".into(),
    };
    assert_eq!(w.cmd(fail), Reply::Buried);
    assert!(matches!(w.state(id), JobState::Buried { .. }));
    let f = w.stats_job(id);
    assert_eq!(get(&f, "bury-reason"), "max-attempts");
    assert_eq!(get(&f, "attempts"), "3");
    assert_eq!(get(&f, "max-attempts"), "3");
    assert_eq!(get(&f, "last-error"), "poison");
    let Reply::Ok(y) = w.cmd(Command::StatsTube(tube())) else {
        panic!("stats-tube");
    };
    let t = yaml_map(&y);
    assert_eq!(get(&t, "dead-letters-max-attempts"), "1");
    assert_eq!(get(&t, "dead-letters-buried"), "0");

    // Redrive: a fresh budget, lifetime counters kept, reason gone.
    assert_eq!(w.cmd(Command::KickJob(id)), Reply::KickedJob);
    let f = w.stats_job(id);
    assert_eq!(get(&f, "attempts"), "0");
    assert_eq!(get(&f, "bury-reason"), "none");
    assert_eq!(get(&f, "reserves"), "3");
    assert_eq!(get(&f, "kicks"), "1");
    // Three more attempts are needed to bury it again; the third is a timeout.
    w.reserve();
    w.cmd(Command::Release {
        id,
        pri: 10,
        delay: 0,
    });
    w.reserve();
    w.cmd(Command::Release {
        id,
        pri: 10,
        delay: 0,
    });
    assert_eq!(w.state(id), JobState::Ready);
    w.reserve();
    w.advance(SEC);
    assert!(matches!(w.state(id), JobState::Buried { .. }));
    // Kicking a delayed job is not a redrive.
    let id2 = w.put(1);
    w.reserve();
    w.advance(SEC);
    assert_eq!(w.attempts(id2), 1);
    w.cmd(Command::Kick(10));
    // kick takes buried jobs first: the dead letter is redriven, id2 stays delayed.
    assert_eq!(w.attempts(id), 0);
    assert_eq!(w.attempts(id2), 1);
}

#[test]
fn dead_letters_are_listed_redriven_and_deleted_by_filter() {
    let mut w = World::new(&[("max-attempts", "1")]);
    let a = w.put(1);
    let b = w.put(1);
    let c = w.put(1);
    // a: out of attempts; b: buried by a worker later; c: ready.
    w.reserve();
    w.cmd(Command::Fail {
        id: a,
        message: "quote \" and \u{e9}".into(),
    });
    w.advance(10 * SEC);
    w.reserve();
    w.cmd(Command::Bury { id: b, pri: 1 });
    let list =
        |w: &mut World, filter: DeadFilter| match w.cmd(Command::ListDead { filter, limit: 10 }) {
            Reply::Ok(y) => String::from_utf8(y.to_vec()).expect("utf-8"),
            other => panic!("{other:?}"),
        };
    let all = list(&mut w, DeadFilter::all());
    assert_eq!(all.matches("- id: ").count(), 2, "{all}");
    assert!(all.contains("- id: 1\n  tube: work\n  reason: max-attempts\n  attempts: 1\n"));
    assert!(
        all.contains("  last-error: \"quote \\\" and \\xe9\"\n"),
        "{all}"
    );
    let mut old = DeadFilter::all();
    old.older_than_ms = 5000;
    let older = list(&mut w, old.clone());
    assert_eq!(older.matches("- id: ").count(), 1, "{older}");
    assert!(older.contains("- id: 1\n"));
    let mut by_reason = DeadFilter::all();
    by_reason.reason = Some(BuryReason::Buried);
    assert!(list(&mut w, by_reason.clone()).contains("- id: 2\n"));
    let mut range = DeadFilter::all();
    range.from = JobId(2);
    assert_eq!(list(&mut w, range).matches("- id: ").count(), 1);
    let mut elsewhere = DeadFilter::all();
    elsewhere.tube = Some(TubeName::default_tube());
    assert_eq!(list(&mut w, elsewhere), "---\n");

    // Redrive the worker-buried one; delete the other; c is never touched.
    let kick = Command::KickDead {
        filter: by_reason,
        limit: 10,
    };
    assert_eq!(w.cmd(kick), Reply::Kicked(1));
    assert_eq!(w.state(b), JobState::Ready);
    let delete = Command::DeleteDead {
        filter: DeadFilter::all(),
        limit: 10,
    };
    assert_eq!(w.cmd(delete), Reply::DeletedCount(1));
    assert!(w.e.job(a).is_none());
    assert!(w.e.job(c).is_some());
    let delete = Command::DeleteDead {
        filter: DeadFilter::all(),
        limit: 10,
    };
    assert_eq!(w.cmd(delete), Reply::DeletedCount(0));
}

#[test]
fn replaying_the_changes_rebuilds_attempts_errors_and_burials() {
    let mut w = World::new(&[("max-attempts", "2"), ("retry-delay", "500")]);
    let a = w.put(1);
    let b = w.put(1);
    w.reserve();
    w.cmd(Command::Fail {
        id: a,
        message: "first".into(),
    });
    w.reserve();
    w.advance(SEC);
    w.reserve();
    w.advance(SEC);
    w.reserve();
    w.e.close_session(w.s, w.now);
    let mut log = Vec::new();
    log.extend(w.e.take_changes());
    let mut restored = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), w.now);
    for change in log {
        restored.restore(change, None, w.now).expect("restore");
    }
    for id in [a, b] {
        let (x, y) = (w.e.job(id).expect("job"), restored.job(id).expect("job"));
        assert_eq!(w.e.job_tally(id), restored.job_tally(id), "job {id}");
        assert_eq!(w.e.job_notes(id), restored.job_notes(id), "job {id}");
        assert_eq!(x.state(), y.state(), "job {id}");
    }
    assert_eq!(restored.job_tally(a).expect("a").attempts, 2);
}

#[test]
fn counts_past_a_byte_stay_exact_in_stats_and_across_a_restore() {
    let mut w = World::new(&[]);
    let id = w.put(60);
    for _ in 0..300 {
        assert!(matches!(w.reserve(), Reply::Reserved { .. }));
        let released = w.cmd(Command::Release {
            id,
            pri: 10,
            delay: 0,
        });
        assert_eq!(released, Reply::Released);
    }
    assert!(matches!(w.reserve(), Reply::Reserved { .. }));
    assert_eq!(w.cmd(Command::Bury { id, pri: 10 }), Reply::Buried);
    assert_eq!(w.cmd(Command::KickJob(id)), Reply::KickedJob);
    let fields = w.stats_job(id);
    let counts: Vec<String> = ["reserves", "releases", "buries", "kicks", "attempts"]
        .iter()
        .map(|k| get(&fields, k))
        .collect();
    // The kick redrove the buried job: its attempts start again.
    assert_eq!(counts, ["301", "300", "1", "1", "0"]);
    assert_eq!(
        w.e.job(id).expect("job").tally,
        crate::engine::SmallTally::ELSEWHERE
    );

    let mut restored = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), w.now);
    for change in w.e.take_changes() {
        restored.restore(change, None, w.now).expect("restore");
    }
    assert_eq!(restored.job_tally(id), w.e.job_tally(id));
}

#[test]
fn a_tally_moves_back_into_the_job_when_its_counts_fit_again() {
    let mut w = World::new(&[]);
    let id = w.put(60);
    let spilled = w.e.change_tally(id, |t| t.attempts = 255).expect("job");
    assert_eq!(spilled.attempts, 255);
    assert_eq!(
        w.e.job_notes(id).and_then(|n| n.tally),
        Some(spilled),
        "255 does not fit a byte"
    );
    assert_eq!(w.e.job_tally(id), Some(spilled));
    w.e.change_tally(id, |t| t.attempts = 254);
    assert_eq!(
        w.e.job_notes(id),
        None,
        "the notes entry held only the tally"
    );
    assert_eq!(w.e.job_tally(id).map(|t| t.attempts), Some(254));
}
