//! Promises 1–4 against the real binary: state survives restarts, confirmed work survives
//! SIGKILL at random moments, deleted jobs never return, ids are never reused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};

use crate::support::{ChildServer, Raw, SmallDisk};

fn field(reply: &str, key: &str) -> String {
    let yaml = reply.split_once("\r\n").map(|(_, y)| y).unwrap_or_default();
    larder::client::parse_yaml_map(yaml.as_bytes())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key} in {reply:?}"))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("larder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn every_job_state_and_counter_survives_a_kill() {
    let dir = temp_dir("restart");
    let server = ChildServer::larder_in(&dir, &[]);
    let mut c = Raw::connect(server.addr).await;
    let script = [
        ("use jobs\r\n", "USING jobs\r\n"),
        ("put 5 0 60 1\r\na\r\n", "INSERTED 1\r\n"),
        ("put 1 100 60 1\r\nb\r\n", "INSERTED 2\r\n"),
        ("put 2 0 60 1\r\nc\r\n", "INSERTED 3\r\n"),
        ("put 3 0 60 1\r\nd\r\n", "INSERTED 4\r\n"),
        ("put 9 0 60 1\r\ne\r\n", "INSERTED 5\r\n"),
        ("delete 5\r\n", "DELETED\r\n"),
        (
            "watch jobs\r\nignore default\r\n",
            "WATCHING 2\r\nWATCHING 1\r\n",
        ),
        ("reserve\r\n", "RESERVED 3 1\r\nc\r\n"),
        ("release 3 7 0\r\n", "RELEASED\r\n"),
        ("reserve\r\n", "RESERVED 4 1\r\nd\r\n"),
        ("bury 4 8\r\n", "BURIED\r\n"),
        ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
    ];
    for (send, expect) in script {
        c.send(send.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&c.read_exact(expect.len()).await),
            expect
        );
    }
    // Job 1 is still reserved when the server dies.
    server.kill9();

    let server = ChildServer::larder_in(&dir, &[]);
    let mut c = Raw::connect(server.addr).await;
    let expect = [
        (1, "ready", "5", "1", "0", "0"),
        (2, "delayed", "1", "0", "0", "0"),
        (3, "ready", "7", "1", "1", "0"),
        (4, "buried", "8", "1", "0", "1"),
    ];
    for (id, state, pri, reserves, releases, buries) in expect {
        let s = c.cmd(&format!("stats-job {id}\r\n")).await;
        assert_eq!(
            ["tube", "state", "pri", "reserves", "releases", "buries"].map(|k| field(&s, k)),
            ["jobs", state, pri, reserves, releases, buries].map(String::from),
            "job {id}: {s}"
        );
    }
    let left: i64 = field(&c.cmd("stats-job 2\r\n").await, "time-left")
        .parse()
        .expect("n");
    assert!(
        (95..=100).contains(&left),
        "delay kept its deadline: {left}"
    );
    assert_eq!(c.cmd("peek 5\r\n").await, "NOT_FOUND\r\n");
    assert_eq!(c.cmd("peek 1\r\n").await, "FOUND 1 1\r\na\r\n");
    // Ids continue after the highest one ever used.
    assert_eq!(c.cmd("put 0 0 1 1\r\nz\r\n").await, "INSERTED 6\r\n");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ids_are_never_reused_even_after_every_job_is_deleted_and_two_restarts() {
    let dir = temp_dir("ids");
    let mut next = 1;
    for _ in 0..3 {
        let server = ChildServer::larder_in(&dir, &[]);
        let mut c = Raw::connect(server.addr).await;
        for _ in 0..3 {
            assert_eq!(
                c.cmd("put 0 0 1 1\r\nx\r\n").await,
                format!("INSERTED {next}\r\n")
            );
            assert_eq!(c.cmd(&format!("delete {next}\r\n")).await, "DELETED\r\n");
            next += 1;
        }
        server.kill9();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What clients were told.
#[derive(Default)]
struct Confirmed {
    /// Puts answered INSERTED, with their bodies.
    puts: BTreeMap<u64, Vec<u8>>,
    /// Deletes answered DELETED.
    deleted: BTreeSet<u64>,
    /// Deletes sent (a delete that reached the log but whose reply was lost may have
    /// removed its job).
    deleting: BTreeSet<u64>,
}

#[tokio::test]
async fn confirmed_work_survives_sigkill_at_random_moments() {
    let dir = temp_dir("crash");
    let confirmed = Arc::new(Mutex::new(Confirmed::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x001a_2de5);
    // Small segments, so reclamation and compaction run (and get killed) too.
    let args = ["--wal-segment-size", "16384"];
    for round in 0..6 {
        let server = ChildServer::larder_in(&dir, &args);
        let addr = server.addr;
        let mut tasks = Vec::new();
        for p in 0..3u64 {
            let confirmed = confirmed.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut client) = larder::client::Client::connect_addr(addr).await else {
                    return;
                };
                for i in 0.. {
                    let body = format!("r{round}p{p}i{i}").into_bytes();
                    match client.put(1, 0, 60, body.clone()).await {
                        Ok(id) => {
                            confirmed.lock().expect("lock").puts.insert(id.0, body);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        let confirmed_w = confirmed.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = larder::client::Client::connect_addr(addr).await else {
                return;
            };
            loop {
                let Ok(Some((id, _))) = client.reserve(Some(1)).await else {
                    return;
                };
                confirmed_w.lock().expect("lock").deleting.insert(id.0);
                if client.delete(id).await.is_err() {
                    return;
                }
                confirmed_w.lock().expect("lock").deleted.insert(id.0);
            }
        }));
        // Let the load run a random while, then cut it off mid-flight.
        tokio::time::sleep(std::time::Duration::from_millis(rng.gen_range(50..400))).await;
        server.kill9();
        for t in tasks {
            let _ = t.await;
        }
        // The kill hit a preallocated log: the newest segment is at its full size (zero
        // fill after its records), unless the kill came while it was being created.
        let newest = std::fs::read_dir(dir.join("wal"))
            .expect("wal dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .max()
            .expect("a segment");
        let len = std::fs::metadata(&newest).expect("segment").len();
        assert!(
            len == 16384 || len <= 40,
            "round {round}: newest segment {} is {len} bytes, not preallocated",
            newest.display()
        );

        let server = ChildServer::larder_in(&dir, &args);
        let mut c = Raw::connect(server.addr).await;
        let (puts, deleted, deleting) = {
            let guard = confirmed.lock().expect("lock");
            (
                guard.puts.clone(),
                guard.deleted.clone(),
                guard.deleting.clone(),
            )
        };
        assert!(!puts.is_empty(), "round {round}: no put was confirmed");
        for (id, body) in &puts {
            let reply = c.cmd(&format!("peek {id}\r\n")).await;
            if deleted.contains(id) {
                assert_eq!(
                    reply, "NOT_FOUND\r\n",
                    "round {round}: deleted job {id} came back"
                );
            } else if deleting.contains(id) && reply == "NOT_FOUND\r\n" {
                // Its delete reached the log; the reply was cut off by the kill.
            } else {
                let expect = format!(
                    "FOUND {id} {}\r\n{}\r\n",
                    body.len(),
                    String::from_utf8_lossy(body)
                );
                assert_eq!(
                    reply, expect,
                    "round {round}: confirmed job {id} lost or changed"
                );
            }
        }
        let max = puts.keys().max().copied().unwrap_or(0);
        let reply = c.cmd("put 0 0 60 1\r\nn\r\n").await;
        let id: u64 = reply
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("id");
        assert!(
            id > max,
            "round {round}: id {id} reused (max confirmed {max})"
        );
        assert_eq!(c.cmd(&format!("delete {id}\r\n")).await, "DELETED\r\n");
        server.kill9();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn log_segments_are_reclaimed_as_jobs_are_deleted() {
    let dir = temp_dir("reclaim");
    let args = ["--wal-segment-size", "4096"];
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    let body = "b".repeat(100);
    let mut id = 0;
    for _ in 0..30 {
        let mut send = String::new();
        let mut expect = String::new();
        for _ in 0..100 {
            id += 1;
            send.push_str(&format!("put 0 0 60 100\r\n{body}\r\ndelete {id}\r\n"));
            expect.push_str(&format!("INSERTED {id}\r\nDELETED\r\n"));
        }
        c.send(send.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&c.read_exact(expect.len()).await),
            expect
        );
    }
    // 3,000 puts of ~140 bytes and their deletes fill ~120 segments of 4 KiB; only the
    // segment with the newest put and the active one need to stay. Reclamation runs after
    // each batch the writer syncs, so one more confirmed command has let it catch up.
    assert_eq!(
        c.cmd("put 0 0 60 1\r\nx\r\n").await,
        format!("INSERTED {}\r\n", id + 1)
    );
    let segments = std::fs::read_dir(dir.join("wal")).expect("wal dir").count();
    assert!(segments <= 3, "{segments} segments left");
    server.kill9();
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(
        c.cmd(&format!("peek {}\r\n", id + 1)).await,
        format!("FOUND {} 1\r\nx\r\n", id + 1)
    );
    assert_eq!(
        c.cmd("put 0 0 60 1\r\ny\r\n").await,
        format!("INSERTED {}\r\n", id + 2)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Long-lived buried and delayed jobs pin the first segments; compaction copies them
/// forward so the log stays a small multiple of the live data, and they keep their exact
/// state, priority, counters and body across a kill.
#[tokio::test]
async fn compaction_keeps_the_log_small_around_long_lived_jobs() {
    let dir = temp_dir("compact");
    let args = ["--wal-segment-size", "4096"];
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect_extended(server.addr).await;
    assert_eq!(c.cmd("use keep\r\n").await, "USING keep\r\n");
    assert_eq!(c.cmd("put 5 0 60 6\r\nburied\r\n").await, "INSERTED 1\r\n");
    assert_eq!(
        c.cmd("put 6 3600 60 7\r\ndelayed\r\n").await,
        "INSERTED 2\r\n"
    );
    assert_eq!(c.cmd("watch keep\r\n").await, "WATCHING 2\r\n");
    assert_eq!(c.cmd("reserve\r\n").await, "RESERVED 1 6\r\nburied\r\n");
    assert_eq!(c.cmd("bury 1 9\r\n").await, "BURIED\r\n");
    assert_eq!(c.cmd("use default\r\n").await, "USING default\r\n");
    let body = "c".repeat(100);
    let mut id = 2;
    for _ in 0..30 {
        let mut send = String::new();
        let mut expect = String::new();
        for _ in 0..100 {
            id += 1;
            send.push_str(&format!("put 0 0 60 100\r\n{body}\r\ndelete {id}\r\n"));
            expect.push_str(&format!("INSERTED {id}\r\nDELETED\r\n"));
        }
        c.send(send.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&c.read_exact(expect.len()).await),
            expect
        );
    }
    // ~120 segments were written. Without compaction the first one (holding jobs 1 and 2)
    // would keep them all; the compactor runs in the background, so poll its figures.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let segments = loop {
        // A confirmed command lets the writer reclaim what compaction freed.
        assert_eq!(
            c.cmd("put 0 0 60 1\r\nx\r\n").await,
            format!("INSERTED {}\r\n", id + 1)
        );
        id += 1;
        assert_eq!(c.cmd(&format!("delete {id}\r\n")).await, "DELETED\r\n");
        let segments = std::fs::read_dir(dir.join("wal")).expect("wal dir").count();
        if segments <= 4 || std::time::Instant::now() > deadline {
            break segments;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let stats = c.cmd("stats\r\n").await;
    assert!(segments <= 4, "{segments} segments left; {stats}");
    assert!(
        field(&stats, "log-jobs-compacted")
            .parse::<u64>()
            .expect("number")
            >= 2
    );
    assert_eq!(field(&stats, "log-live-bytes"), "13");
    server.kill9();

    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("peek 1\r\n").await, "FOUND 1 6\r\nburied\r\n");
    assert_eq!(c.cmd("peek 2\r\n").await, "FOUND 2 7\r\ndelayed\r\n");
    let j1 = c.cmd("stats-job 1\r\n").await;
    assert_eq!(
        (field(&j1, "state"), field(&j1, "pri"), field(&j1, "tube")),
        ("buried".into(), "9".into(), "keep".into())
    );
    assert_eq!(
        (field(&j1, "reserves"), field(&j1, "buries")),
        ("1".into(), "1".into())
    );
    let j2 = c.cmd("stats-job 2\r\n").await;
    assert_eq!(
        (field(&j2, "state"), field(&j2, "pri")),
        ("delayed".into(), "6".into())
    );
    let left: u64 = field(&j2, "time-left").parse().expect("number");
    assert!((3000..=3600).contains(&left), "time-left {left}");
    assert_eq!(c.cmd(&format!("peek {}\r\n", id)).await, "NOT_FOUND\r\n");
    assert_eq!(
        c.cmd("put 0 0 60 1\r\ny\r\n").await,
        format!("INSERTED {}\r\n", id + 1)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With no new puts, the newest put's record must not pin the log forever: a job that is
/// reserved and released again and again writes records without end, and the log stays
/// small (compaction moves the job, a next-id record takes over from the put). Ids are
/// still never reused after a restart.
#[tokio::test]
async fn the_log_stays_small_when_only_old_jobs_are_worked_on() {
    let dir = temp_dir("noputs");
    let args = ["--wal-segment-size", "4096"];
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("put 0 0 60 4\r\nwork\r\n").await, "INSERTED 1\r\n");
    let round = "reserve\r\nrelease 1 0 0\r\n".repeat(100);
    let expect = "RESERVED 1 4\r\nwork\r\nRELEASED\r\n".repeat(100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut rounds = 0;
    let segments = loop {
        c.send(round.as_bytes()).await;
        assert_eq!(
            String::from_utf8_lossy(&c.read_exact(expect.len()).await),
            expect
        );
        rounds += 1;
        let segments = std::fs::read_dir(dir.join("wal")).expect("wal dir").count();
        // ~40 segments' worth of records written by now, far more than may stay.
        if (rounds >= 30 && segments <= 4) || std::time::Instant::now() > deadline {
            break segments;
        }
    };
    let stats = c.cmd("stats\r\n").await;
    assert!(
        segments <= 4,
        "{segments} segments left after {rounds} rounds; {stats}"
    );
    server.kill9();
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(
        field(&c.cmd("stats-job 1\r\n").await, "releases"),
        (rounds * 100).to_string()
    );
    assert_eq!(c.cmd("put 0 0 60 1\r\nn\r\n").await, "INSERTED 2\r\n");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A clean stop (SIGTERM) leaves what a crash leaves: a reserved job is ready after the
/// restart, and its reservation is not counted as an attempt (with `max-attempts 1` that
/// would bury it).
#[tokio::test]
async fn a_clean_stop_returns_reserved_jobs_without_counting_an_attempt() {
    let dir = temp_dir("stop");
    let args = ["--retry-delay", "60s", "--max-attempts", "1"];
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("put 0 0 60 2\r\nhi\r\n").await, "INSERTED 1\r\n");
    assert_eq!(c.cmd("reserve\r\n").await, "RESERVED 1 2\r\nhi\r\n");
    assert!(server.terminate().success());
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect_extended(server.addr).await;
    let job = c.cmd("stats-job 1\r\n").await;
    assert_eq!(
        (
            field(&job, "state"),
            field(&job, "attempts"),
            field(&job, "reserves")
        ),
        ("ready".into(), "0".into(), "1".into())
    );
    // A TTR expiry: the job's counter survives a restart, the server's `job-timeouts`
    // counts since start (as beanstalkd's does).
    assert_eq!(c.cmd("put 0 0 1 1\r\nt\r\n").await, "INSERTED 2\r\n");
    assert_eq!(c.cmd("reserve-job 2\r\n").await, "RESERVED 2 1\r\nt\r\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while field(&c.cmd("stats\r\n").await, "job-timeouts") != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the TTR never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.kill9();
    let server = ChildServer::larder_in(&dir, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(field(&c.cmd("stats-job 2\r\n").await, "timeouts"), "1");
    assert_eq!(field(&c.cmd("stats\r\n").await, "job-timeouts"), "0");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The disk fills under a stream of puts: what was confirmed is on disk, puts are then
/// refused with `REFUSED log-full` (never a dropped connection or a hang), deletes go on
/// working in the reserved space, and once deleting frees segments the server takes its
/// reserve back and accepts puts again; a restart shows exactly the confirmed state.
#[tokio::test]
async fn a_full_disk_refuses_puts_keeps_deletes_working_and_recovers() {
    let disk = SmallDisk::mount("fulldisk");
    let data = disk.0.join("data");
    // No free-space floor: this test is about the log meeting a full disk by itself
    // (the floor, which would refuse every put on a 1 MiB disk, is tested in `limits`).
    let args = [
        "--min-free-disk",
        "0",
        "--disk-reserve",
        "262144",
        "--wal-segment-size",
        "131072",
    ];
    let server = ChildServer::larder_in(&data, &args);
    let mut c = Raw::connect_extended(server.addr).await;
    let body = "f".repeat(60_000);
    let mut confirmed = Vec::new();
    // 1 MiB holds at most ~17 such jobs; keep going until the server refuses.
    let mut refused = false;
    for _ in 0..40 {
        let reply = c
            .cmd(&format!("put 0 0 60 {}\r\n{body}\r\n", body.len()))
            .await;
        if reply == "REFUSED log-full\r\n" {
            refused = true;
            break;
        }
        let id: u64 = reply
            .strip_prefix("INSERTED ")
            .and_then(|r| r.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("unexpected {reply:?}"));
        confirmed.push(id);
    }
    assert!(refused, "the disk never filled");
    assert!(!confirmed.is_empty(), "nothing fitted at all");
    let stats = c.cmd("stats\r\n").await;
    assert_eq!(field(&stats, "current-jobs"), confirmed.len().to_string());
    assert!(
        field(&stats, "refused-log-full")
            .parse::<u64>()
            .expect("number")
            >= 1
    );
    // Workers drain a full disk: every delete is confirmed.
    let (keep, drain) = confirmed.split_at(1);
    for id in drain {
        assert_eq!(c.cmd(&format!("delete {id}\r\n")).await, "DELETED\r\n");
    }
    // Deleting freed whole segments; the server takes its reserve back and puts work
    // again (it retries every 250 ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let new_id = loop {
        let reply = c.cmd("put 0 0 60 5\r\nagain\r\n").await;
        if let Some(id) = reply.strip_prefix("INSERTED ") {
            break id.trim_end().to_string();
        }
        assert_eq!(reply, "REFUSED log-full\r\n");
        assert!(
            std::time::Instant::now() < deadline,
            "puts still refused after the disk was drained"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    server.kill9();
    let server = ChildServer::larder_in(&data, &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(
        c.cmd(&format!("peek {}\r\n", keep[0])).await,
        format!("FOUND {} {}\r\n{body}\r\n", keep[0], body.len())
    );
    for id in drain {
        assert_eq!(c.cmd(&format!("peek {id}\r\n")).await, "NOT_FOUND\r\n");
    }
    assert_eq!(
        c.cmd(&format!("peek {new_id}\r\n")).await,
        format!("FOUND {new_id} 5\r\nagain\r\n")
    );
    drop(server);
}
