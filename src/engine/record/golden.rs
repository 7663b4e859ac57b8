//! The golden records: one record of every kind, as this version writes them, kept in
//! `golden.txt` (one line each: kind code, kind name, payload in hex). The test checks that
//! today's encoder still writes exactly those bytes and that they replay, in order, into
//! the state they describe — so "old kinds stay decodable" is checked, not promised.
//!
//! An encoding never changes in place: a new encoding is a new kind, whose sample is
//! appended here (`LARDER_BLESS_GOLDEN=1 cargo test --lib golden` rewrites the file; review
//! the diff — only added lines are acceptable).

use bytes::Bytes;

use super::{decode, encode, kind_name, RecordKind};
use crate::engine::change::{Change, ImageState};
use crate::engine::job::{Burial, JobCounters};
use crate::engine::{Engine, EngineConfig, Outcome, ProcessInfo, RestoreError, Timestamp};
use crate::protocol::{BuryReason, Command, JobId, Reply, TubeName, TubeSetting};

const GOLDEN: &str = include_str!("golden.txt");

/// The time the samples are written at: 2026-12-02T00:00:00Z.
const T: u64 = 1_796_169_600_000_000_000;
const SEC: u64 = 1_000_000_000;

fn mail() -> TubeName {
    TubeName::new(b"mail").expect("valid tube name")
}

/// One change of every kind, in an order that replays.
fn samples() -> Vec<Change> {
    let burial = Burial {
        reason: BuryReason::MaxAttempts,
        at: Some(Timestamp(T + 30 * SEC)),
    };
    vec![
        Change::ConfigTube {
            tube: mail(),
            setting: TubeSetting::MaxAttempts,
            value: Some(5),
        },
        Change::PauseTube {
            tube: mail(),
            until: Timestamp(T + 3600 * SEC),
        },
        Change::Put {
            id: JobId(1),
            tube: mail(),
            pri: 10,
            delay: 0,
            ttr: 60,
            created_at: Timestamp(T),
            ready_at: None,
            body: Bytes::from_static(b"hello"),
        },
        Change::Reserve { id: JobId(1) },
        Change::Timeout { id: JobId(1) },
        Change::Reserve { id: JobId(1) },
        Change::Release {
            id: JobId(1),
            pri: 5,
            delay: 10,
            ready_at: Some(Timestamp(T + 10 * SEC)),
        },
        Change::Kick { id: JobId(1) },
        Change::Reserve { id: JobId(1) },
        Change::Abandon { id: JobId(1) },
        Change::Reserve { id: JobId(1) },
        Change::Fail {
            id: JobId(1),
            message: "boom".into(),
        },
        Change::Retry {
            id: JobId(1),
            ready_at: Some(Timestamp(T + 20 * SEC)),
        },
        Change::Reserve { id: JobId(1) },
        Change::Bury {
            id: JobId(1),
            pri: 7,
        },
        Change::Kick { id: JobId(1) },
        Change::Reserve { id: JobId(1) },
        Change::DeadLetter {
            id: JobId(1),
            pri: 7,
            reason: BuryReason::MaxAttempts,
            at: Timestamp(T + 30 * SEC),
        },
        Change::JobNotes {
            id: JobId(1),
            attempts: 5,
            last_error: Some("boom".into()),
            burial: Some(burial),
        },
        Change::Image {
            id: JobId(2),
            tube: mail(),
            pri: 3,
            delay: 60,
            ttr: 30,
            created_at: Timestamp(T),
            state: ImageState::Delayed(Timestamp(T + 60 * SEC)),
            counters: JobCounters {
                reserves: 1,
                timeouts: 2,
                releases: 3,
                buries: 4,
                kicks: 5,
            },
            body: Bytes::from_static(b"world"),
        },
        Change::NextId { next: 10 },
        Change::Delete { id: JobId(3) },
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The golden file's text for `changes`.
fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for change in changes {
        let (code, payload) = encode(change);
        out.push_str(&format!("{code} {} {}\n", kind_name(code), hex(&payload)));
    }
    out
}

/// The golden file's records: (kind code, payload).
fn golden_records() -> Vec<(u8, Vec<u8>)> {
    GOLDEN
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split(' ');
            let code = parts
                .next()
                .and_then(|c| c.parse().ok())
                .expect("kind code");
            let _name = parts.next();
            (code, unhex(parts.next().unwrap_or("")))
        })
        .collect()
}

#[test]
fn the_golden_file_holds_one_record_of_every_kind_as_written_today() {
    let samples = samples();
    if std::env::var_os("LARDER_BLESS_GOLDEN").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/engine/record/golden.txt");
        let text = format!(
            "# One record of every kind (code name payload-hex); see golden.rs.\n{}",
            render(&samples)
        );
        std::fs::write(path, text).expect("bless the golden file");
        return;
    }
    let mut kinds: Vec<u8> = golden_records().iter().map(|(k, _)| *k).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let all: Vec<u8> = RecordKind::ALL.iter().map(|k| k.code()).collect();
    assert_eq!(
        kinds, all,
        "the golden file lacks a kind, or has one unknown"
    );
    let body: String = GOLDEN
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body,
        render(&samples),
        "an encoding changed: add a new kind instead"
    );
}

#[test]
fn the_golden_records_decode_and_replay() {
    let records = golden_records();
    assert_eq!(records.len(), samples().len());
    let now = Timestamp(T + 40 * SEC);
    let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
    for ((code, payload), want) in records.into_iter().zip(samples()) {
        let change = decode(code, &Bytes::from(payload)).expect("decodes");
        assert_eq!(change, want);
        match engine.restore(change, None, now) {
            Ok(()) => {}
            // Deleting a job the log no longer has is how replay meets reclaimed segments.
            Err(RestoreError::UnknownJob(JobId(3))) => {}
            Err(e) => panic!("kind {code} does not replay: {e}"),
        }
    }
    engine.finish_restore();
    // Job 1 is a dead letter with its notes; job 2 is delayed; ids go on from 10.
    let sid = engine.open_session();
    engine.apply(sid, Command::ExtendedStats, now);
    let stats = |engine: &mut Engine, cmd: Command| match engine.apply(sid, cmd, now) {
        Outcome::Reply(Reply::Ok(yaml)) => String::from_utf8_lossy(&yaml)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<std::collections::HashMap<_, _>>(),
        other => panic!("{other:?}"),
    };
    let job1 = stats(&mut engine, Command::StatsJob(JobId(1)));
    assert_eq!(job1.get("state").map(String::as_str), Some("buried"));
    assert_eq!(job1.get("attempts").map(String::as_str), Some("5"));
    assert_eq!(job1.get("last-error").map(String::as_str), Some("\"boom\""));
    assert_eq!(
        job1.get("bury-reason").map(String::as_str),
        Some("max-attempts")
    );
    let job2 = stats(&mut engine, Command::StatsJob(JobId(2)));
    assert_eq!(job2.get("state").map(String::as_str), Some("delayed"));
    assert_eq!(job2.get("kicks").map(String::as_str), Some("5"));
    let tube = stats(&mut engine, Command::StatsTube(mail()));
    assert_eq!(tube.get("max-attempts").map(String::as_str), Some("5"));
    assert_ne!(tube.get("pause").map(String::as_str), Some("0"));
    assert_eq!(engine.next_job_id(), 10);
}
