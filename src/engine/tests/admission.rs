//! Whole-engine tests of admission: each limit refuses a put over it, counts the refusal,
//! and frees its use when jobs go.

use crate::engine::{
    Engine, EngineConfig, Limits, Notice, Outcome, ProcessInfo, SettingDefaults, Timestamp,
};
use crate::protocol::{Command, JobId, Refusal, Reply, TubeName, TubeSetting};

fn engine(limits: Limits) -> Engine {
    engine_with(limits, SettingDefaults::default())
}

fn engine_with(limits: Limits, defaults: SettingDefaults) -> Engine {
    Engine::new(
        EngineConfig {
            max_job_size: 1000,
            limits,
            defaults,
            ..EngineConfig::default()
        },
        ProcessInfo::fixed(),
        Timestamp(1),
    )
}

fn put(e: &mut Engine, s: crate::engine::SessionId, body: &'static [u8]) -> Reply {
    let cmd = Command::Put {
        pri: 0,
        delay: 0,
        ttr: 10,
        body: body.into(),
    };
    match e.apply(s, cmd, Timestamp(2)) {
        Outcome::Reply(r) => r,
        other => panic!("put gave {other:?}"),
    }
}

fn cmd(e: &mut Engine, s: crate::engine::SessionId, cmd: Command) -> Reply {
    match e.apply(s, cmd, Timestamp(2)) {
        Outcome::Reply(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refused_put_stores_nothing_and_uses_no_id() {
    let mut e = engine(Limits {
        max_jobs: 2,
        ..Limits::UNLIMITED
    });
    let s = e.open_session();
    assert_eq!(put(&mut e, s, b"a"), Reply::Inserted(JobId(1)));
    assert_eq!(put(&mut e, s, b"b"), Reply::Inserted(JobId(2)));
    assert_eq!(put(&mut e, s, b"c"), Reply::Refused(Refusal::MaxJobs));
    assert_eq!(e.job_count(), 2);
    assert_eq!(e.body_bytes(), 2);
    assert!(e.take_changes().iter().all(|c| matches!(
        c,
        crate::engine::Change::Put { id, .. } if id.0 <= 2
    )));
    assert_eq!(e.refusals(Refusal::MaxJobs), 1);
    assert_eq!(cmd(&mut e, s, Command::Delete(JobId(1))), Reply::Deleted);
    assert_eq!(put(&mut e, s, b"d"), Reply::Inserted(JobId(3)));
}

#[test]
fn bytes_count_bodies_in_every_state_and_free_on_delete() {
    let mut e = engine(Limits {
        max_bytes: 10,
        ..Limits::UNLIMITED
    });
    let s = e.open_session();
    assert_eq!(put(&mut e, s, b"12345"), Reply::Inserted(JobId(1)));
    assert!(matches!(
        cmd(&mut e, s, Command::Reserve),
        Reply::Reserved { .. }
    ));
    assert_eq!(
        cmd(
            &mut e,
            s,
            Command::Bury {
                id: JobId(1),
                pri: 0
            }
        ),
        Reply::Buried
    );
    assert_eq!(put(&mut e, s, b"12345"), Reply::Inserted(JobId(2)));
    assert_eq!(put(&mut e, s, b"1"), Reply::Refused(Refusal::MaxBytes));
    assert_eq!(put(&mut e, s, b""), Reply::Inserted(JobId(3)));
    assert_eq!(e.body_bytes(), 10);
    assert_eq!(cmd(&mut e, s, Command::Delete(JobId(1))), Reply::Deleted);
    assert_eq!(e.body_bytes(), 5);
    assert_eq!(put(&mut e, s, b"12345"), Reply::Inserted(JobId(4)));
}

fn tube(name: &str) -> TubeName {
    TubeName::new(name.as_bytes()).expect("name")
}

#[test]
fn tube_limits_count_only_their_tube() {
    let mut defaults = SettingDefaults::default();
    defaults.set(TubeSetting::MaxTubeJobs, 1);
    defaults.set(TubeSetting::MaxTubeBytes, 4);
    let mut e = engine_with(Limits::UNLIMITED, defaults);
    let s = e.open_session();
    assert_eq!(put(&mut e, s, b"abc"), Reply::Inserted(JobId(1)));
    assert_eq!(put(&mut e, s, b"x"), Reply::Refused(Refusal::MaxTubeJobs));
    cmd(&mut e, s, Command::Use(tube("other")));
    assert_eq!(
        put(&mut e, s, b"abcde"),
        Reply::Refused(Refusal::MaxTubeBytes)
    );
    assert_eq!(put(&mut e, s, b"abcd"), Reply::Inserted(JobId(2)));
    assert_eq!(e.refusals(Refusal::MaxTubeJobs), 1);
    assert_eq!(e.refusals(Refusal::MaxTubeBytes), 1);
}

#[test]
fn a_tube_setting_overrides_the_server_default_and_default_restores_it() {
    let mut defaults = SettingDefaults::default();
    defaults.set(TubeSetting::MaxTubeJobs, 1);
    let mut e = engine_with(Limits::UNLIMITED, defaults);
    let s = e.open_session();
    let config = |value| Command::ConfigTube {
        tube: tube("default"),
        setting: TubeSetting::MaxTubeJobs,
        value,
    };
    assert_eq!(put(&mut e, s, b"a"), Reply::Inserted(JobId(1)));
    assert_eq!(put(&mut e, s, b"b"), Reply::Refused(Refusal::MaxTubeJobs));
    assert_eq!(cmd(&mut e, s, config(Some(2))), Reply::Configured);
    assert_eq!(put(&mut e, s, b"b"), Reply::Inserted(JobId(2)));
    assert_eq!(put(&mut e, s, b"c"), Reply::Refused(Refusal::MaxTubeJobs));
    assert_eq!(cmd(&mut e, s, config(Some(0))), Reply::Configured);
    assert_eq!(put(&mut e, s, b"c"), Reply::Inserted(JobId(3)));
    assert_eq!(cmd(&mut e, s, config(None)), Reply::Configured);
    assert_eq!(put(&mut e, s, b"d"), Reply::Refused(Refusal::MaxTubeJobs));
}

#[test]
fn the_disk_floor_refuses_puts_but_not_deletes_and_lifts() {
    let mut e = engine(Limits {
        min_free_disk: 100,
        ..Limits::UNLIMITED
    });
    let s = e.open_session();
    assert_eq!(put(&mut e, s, b"a"), Reply::Inserted(JobId(1)));
    e.set_free_disk(Some(99));
    assert_eq!(put(&mut e, s, b"b"), Reply::Refused(Refusal::MinFreeDisk));
    assert_eq!(cmd(&mut e, s, Command::Delete(JobId(1))), Reply::Deleted);
    e.set_free_disk(None);
    assert_eq!(put(&mut e, s, b"c"), Reply::Inserted(JobId(2)));
    e.set_free_disk(Some(100));
    assert_eq!(put(&mut e, s, b"d"), Reply::Inserted(JobId(3)));
    assert_eq!(e.refusals(Refusal::MinFreeDisk), 1);
}

#[test]
fn draining_wins_over_limits_and_uses_an_id_as_beanstalkd_does() {
    let mut e = engine(Limits {
        max_jobs: 1,
        ..Limits::UNLIMITED
    });
    let s = e.open_session();
    assert_eq!(put(&mut e, s, b"a"), Reply::Inserted(JobId(1)));
    e.set_draining(true);
    assert_eq!(put(&mut e, s, b"b"), Reply::Draining);
    e.set_draining(false);
    assert_eq!(cmd(&mut e, s, Command::Delete(JobId(1))), Reply::Deleted);
    assert_eq!(put(&mut e, s, b"c"), Reply::Inserted(JobId(3)));
}

#[test]
fn restore_rebuilds_the_counts() {
    let mut e = engine(Limits {
        max_jobs: 2,
        max_bytes: 100,
        ..Limits::UNLIMITED
    });
    let s = e.open_session();
    put(&mut e, s, b"12345");
    put(&mut e, s, b"678");
    cmd(&mut e, s, Command::Delete(JobId(1)));
    let changes = e.take_changes();
    let mut r = engine(Limits {
        max_jobs: 2,
        max_bytes: 100,
        ..Limits::UNLIMITED
    });
    for c in changes {
        r.restore(c, None, Timestamp(3)).expect("restore");
    }
    assert_eq!((r.job_count(), r.body_bytes()), (1, 3));
    let s = r.open_session();
    assert_eq!(put(&mut r, s, b"x"), Reply::Inserted(JobId(3)));
    assert_eq!(put(&mut r, s, b"y"), Reply::Refused(Refusal::MaxJobs));
}

#[test]
fn one_notice_marks_entering_and_one_leaving_a_refusing_state() {
    let mut e = engine(Limits {
        max_jobs: 1,
        min_free_disk: 10,
        ..Limits::UNLIMITED
    });
    let s = e.open_session();
    put(&mut e, s, b"a");
    for _ in 0..5 {
        assert_eq!(put(&mut e, s, b"b"), Reply::Refused(Refusal::MaxJobs));
    }
    cmd(&mut e, s, Command::Delete(JobId(1)));
    assert_eq!(put(&mut e, s, b"c"), Reply::Inserted(JobId(2)));
    e.set_free_disk(Some(5));
    e.set_free_disk(Some(6));
    e.set_free_disk(Some(50));
    assert_eq!(
        e.take_notices(),
        vec![
            Notice::Refusing {
                limit: Refusal::MaxJobs,
                value: 1,
                tube: None,
                jobs: 1,
                bytes: 1,
            },
            Notice::Accepting {
                limit: Refusal::MaxJobs,
                tube: None,
                refused: 5,
            },
            Notice::DiskLow {
                free: Some(5),
                floor: 10,
            },
            Notice::Accepting {
                limit: Refusal::MinFreeDisk,
                tube: None,
                refused: 0,
            },
        ]
    );
    assert!(e.take_notices().is_empty());
}
