//! Back-pressure (protocol.md §7): every limit refuses with `REFUSED <setting>`, stores
//! nothing, uses no id, never blocks workers, and holds across a restart; the server's
//! memory stays bounded under a flood.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use larder::config::ServerConfig;
use larder::datadir::FreeSpaceProbe;
use larder::engine::{Limits, SettingDefaults};
use larder::protocol::TubeSetting;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::{ChildServer, InProcess, Raw, SmallDisk, REPLY_TIMEOUT};

/// The value of `key` in a `stats`/`stats-tube` reply.
fn field(reply: &str, key: &str) -> String {
    let yaml = reply.split_once("\r\n").map(|(_, y)| y).unwrap_or_default();
    larder::client::parse_yaml_map(yaml.as_bytes())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key} in {reply:?}"))
}

fn num(reply: &str, key: &str) -> u64 {
    field(reply, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {reply:?}"))
}

/// `stats` fields a refused put must leave as they were.
const UNCHANGED: &[&str] = &[
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "total-jobs",
    "current-jobs",
    "current-bytes",
    "log-records-written",
];

fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("larder-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(dir: &std::path::Path, limits: Limits) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        limits,
        ..ServerConfig::default()
    }
}

fn put(body: &str) -> String {
    format!("put 0 0 60 {}\r\n{body}\r\n", body.len())
}

/// How a test sets its limit: `larder serve` flags, and optionally a `config-tube` line
/// sent before the tube is filled (journaled, so it must hold after the restart too).
struct Setup {
    flags: &'static [&'static str],
    config_tube: Option<&'static str>,
}

/// The scenario every job limit must pass: `fits` puts of `body` into `tube` are stored,
/// the next is refused with `REFUSED <setting>` and changes nothing, workers can still
/// reserve, touch, release, bury, kick and delete, a delete makes room for exactly the
/// next id, and after a restart the server is just as full.
async fn fill_refuse_drain_restart(
    name: &str,
    setup: Setup,
    tube: &str,
    body: &str,
    fits: u64,
    setting: &str,
) {
    let dir = data_dir(name);
    let server = ChildServer::larder_in(&dir, setup.flags);
    let mut p = Raw::connect_extended(server.addr).await;
    if let Some(line) = setup.config_tube {
        assert_eq!(p.cmd(line).await, "CONFIGURED\r\n");
    }
    assert_eq!(
        p.cmd(&format!("use {tube}\r\n")).await,
        format!("USING {tube}\r\n")
    );
    for id in 1..=fits {
        assert_eq!(
            p.cmd(&put(body)).await,
            format!("INSERTED {id}\r\n"),
            "put {id}"
        );
    }
    let refused = format!("REFUSED {setting}\r\n");
    let before = p.cmd("stats\r\n").await;
    let tube_before = p.cmd(&format!("stats-tube {tube}\r\n")).await;
    assert_eq!(p.cmd(&put(body)).await, refused);
    let after = p.cmd("stats\r\n").await;
    for key in UNCHANGED {
        assert_eq!(field(&before, key), field(&after, key), "{key} changed");
    }
    assert_eq!(num(&after, "cmd-put"), num(&before, "cmd-put") + 1);
    let counter = format!("refused-{setting}");
    assert_eq!(num(&after, &counter), num(&before, &counter) + 1);
    let tube_after = p.cmd(&format!("stats-tube {tube}\r\n")).await;
    assert_eq!(
        field(&tube_before, "total-jobs"),
        field(&tube_after, "total-jobs")
    );
    assert_eq!(
        p.cmd("peek-ready\r\n").await,
        format!("FOUND 1 {}\r\n{body}\r\n", body.len())
    );
    // The connection is still usable, and the refused put left no job behind.
    assert_eq!(
        p.cmd(&format!("peek {}\r\n", fits + 1)).await,
        "NOT_FOUND\r\n"
    );

    // Workers drain a full broker; none of their commands is refused.
    let mut w = Raw::connect_extended(server.addr).await;
    assert!(w
        .cmd(&format!("watch {tube}\r\n"))
        .await
        .starts_with("WATCHING "));
    let reserved = format!("RESERVED 1 {}\r\n{body}\r\n", body.len());
    assert_eq!(w.cmd("reserve\r\n").await, reserved);
    assert_eq!(w.cmd("touch 1\r\n").await, "TOUCHED\r\n");
    assert_eq!(w.cmd("release 1 0 0\r\n").await, "RELEASED\r\n");
    assert_eq!(w.cmd("reserve\r\n").await, reserved);
    assert_eq!(w.cmd("bury 1 0\r\n").await, "BURIED\r\n");
    assert_eq!(p.cmd("kick 1\r\n").await, "KICKED 1\r\n");
    assert_eq!(
        p.cmd(&put(body)).await,
        refused,
        "release/bury/kick freed nothing"
    );
    assert_eq!(w.cmd("reserve\r\n").await, reserved);
    assert_eq!(w.cmd("delete 1\r\n").await, "DELETED\r\n");
    // No id was used by the refused puts.
    let next = fits + 1;
    assert_eq!(p.cmd(&put(body)).await, format!("INSERTED {next}\r\n"));
    assert_eq!(p.cmd(&put(body)).await, refused);
    drop((p, w));
    server.kill9();

    // Across a restart the counts are rebuilt from the log: still full.
    let server = ChildServer::larder_in(&dir, setup.flags);
    let mut p = Raw::connect_extended(server.addr).await;
    p.cmd(&format!("use {tube}\r\n")).await;
    assert_eq!(
        p.cmd(&put(body)).await,
        refused,
        "full again after the restart"
    );
    let stats = p.cmd("stats\r\n").await;
    assert_eq!(num(&stats, "current-jobs"), fits);
    assert_eq!(num(&stats, "current-bytes"), fits * body.len() as u64);
    assert_eq!(p.cmd("delete 2\r\n").await, "DELETED\r\n");
    assert_eq!(
        p.cmd(&put(body)).await,
        format!("INSERTED {}\r\n", next + 1)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn max_jobs_refuses_the_put_after_the_limit_and_recovers() {
    let setup = Setup {
        flags: &["--max-jobs", "3"],
        config_tube: None,
    };
    fill_refuse_drain_restart("jobs", setup, "default", "hello", 3, "max-jobs").await;
}

#[tokio::test]
async fn max_bytes_counts_body_bytes_of_jobs_in_every_state() {
    let setup = Setup {
        flags: &["--max-bytes", "25"],
        config_tube: None,
    };
    // Three 8-byte bodies fit in 25 bytes; a fourth would make 32.
    fill_refuse_drain_restart("bytes", setup, "default", "12345678", 3, "max-bytes").await;
}

/// An in-process server whose tubes default to `max-tube-jobs` `n`.
fn tube_jobs_config(dir: &std::path::Path, n: u64) -> ServerConfig {
    let mut setting_defaults = SettingDefaults::default();
    setting_defaults.set(TubeSetting::MaxTubeJobs, n);
    ServerConfig {
        setting_defaults,
        ..config(dir, Limits::DEFAULT)
    }
}

#[tokio::test]
async fn max_tube_jobs_limits_each_tube_and_not_the_others() {
    let setup = Setup {
        flags: &["--max-tube-jobs", "2"],
        config_tube: None,
    };
    fill_refuse_drain_restart("tubejobs", setup, "mail", "x", 2, "max-tube-jobs").await;
    let dir = data_dir("tubejobs-other");
    let server = InProcess::with_config(tube_jobs_config(&dir, 2)).await;
    let mut c = server.connect_extended().await;
    c.cmd("use a\r\n").await;
    assert_eq!(c.cmd(&put("1")).await, "INSERTED 1\r\n");
    assert_eq!(c.cmd(&put("2")).await, "INSERTED 2\r\n");
    assert_eq!(c.cmd(&put("3")).await, "REFUSED max-tube-jobs\r\n");
    c.cmd("use b\r\n").await;
    assert_eq!(c.cmd(&put("3")).await, "INSERTED 3\r\n");
    drop(c);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn max_tube_bytes_set_with_config_tube_limits_that_tube_across_a_restart() {
    let setup = Setup {
        flags: &[],
        config_tube: Some("config-tube big max-tube-bytes 10\r\n"),
    };
    fill_refuse_drain_restart("tubebytes", setup, "big", "12345", 2, "max-tube-bytes").await;
}

#[tokio::test]
async fn tube_limits_are_set_shown_and_reset_at_run_time() {
    let dir = data_dir("tubeconfig");
    let server = InProcess::with_config(tube_jobs_config(&dir, 5)).await;
    let mut c = server.connect_extended().await;
    c.cmd("use q\r\n").await;
    let stats = c.cmd("stats-tube q\r\n").await;
    assert_eq!(
        field(&stats, "max-tube-jobs"),
        "5",
        "the server default shows"
    );
    assert_eq!(field(&stats, "max-tube-bytes"), "0");
    // Bad values are refused precisely and change nothing.
    for bad in ["-1", "1.5", "x", "18446744073709551616", ""] {
        let reply = c
            .cmd(&format!("config-tube q max-tube-jobs {bad}\r\n"))
            .await;
        assert_eq!(reply, "BAD_FORMAT\r\n", "value {bad:?}");
    }
    assert_eq!(
        field(&c.cmd("stats-tube q\r\n").await, "max-tube-jobs"),
        "5"
    );
    assert_eq!(
        c.cmd("config-tube q max-tube-job 1\r\n").await,
        "UNKNOWN_SETTING\r\n"
    );
    assert_eq!(
        c.cmd("config-tube q max-tube-jobs 1\r\n").await,
        "CONFIGURED\r\n"
    );
    assert_eq!(c.cmd(&put("abc")).await, "INSERTED 1\r\n");
    assert_eq!(c.cmd(&put("abc")).await, "REFUSED max-tube-jobs\r\n");
    let stats = c.cmd("stats-tube q\r\n").await;
    assert_eq!(field(&stats, "max-tube-jobs"), "1");
    assert_eq!(num(&stats, "current-bytes"), 3);
    assert_eq!(num(&stats, "refused-max-tube-jobs"), 1);
    assert_eq!(num(&stats, "refused-max-tube-bytes"), 0);
    assert_eq!(
        c.cmd("config-tube q max-tube-jobs default\r\n").await,
        "CONFIGURED\r\n"
    );
    assert_eq!(c.cmd(&put("abc")).await, "INSERTED 2\r\n");
    assert_eq!(
        field(&c.cmd("stats-tube q\r\n").await, "max-tube-jobs"),
        "5"
    );
    // The global stats show the server defaults, not one tube's setting.
    assert_eq!(num(&c.cmd("stats\r\n").await, "max-tube-jobs"), 5);
    drop(c);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_body_larger_than_max_bytes_is_refused_even_on_an_empty_server() {
    let dir = data_dir("hugebody");
    let limits = Limits {
        max_bytes: 4,
        ..Limits::DEFAULT
    };
    let server = InProcess::with_config(config(&dir, limits)).await;
    let mut c = server.connect_extended().await;
    assert_eq!(c.cmd(&put("12345")).await, "REFUSED max-bytes\r\n");
    assert_eq!(c.cmd(&put("1234")).await, "INSERTED 1\r\n");
    assert_eq!(
        c.cmd(&put("")).await,
        "INSERTED 2\r\n",
        "an empty body adds no bytes"
    );
    drop(c);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `stats` until `key` satisfies `ok`.
async fn wait_for_stat(c: &mut Raw, key: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let stats = c.cmd("stats\r\n").await;
        if ok(&field(&stats, key)) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{key} never as wanted: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn min_free_disk_refuses_puts_but_not_deletes_until_space_returns() {
    let dir = data_dir("floor");
    let free = Arc::new(AtomicU64::new(1 << 30));
    let reading = free.clone();
    let config = ServerConfig {
        disk_check_interval: Duration::from_millis(20),
        free_space: FreeSpaceProbe::new(move |_| Ok(reading.load(Ordering::Relaxed))),
        ..config(
            &dir,
            Limits {
                min_free_disk: 1 << 20,
                ..Limits::DEFAULT
            },
        )
    };
    let server = InProcess::with_config(config).await;
    let mut c = server.connect_extended().await;
    assert_eq!(c.cmd(&put("a")).await, "INSERTED 1\r\n");
    assert_eq!(c.cmd(&put("b")).await, "INSERTED 2\r\n");
    free.store(1000, Ordering::Relaxed);
    wait_for_stat(&mut c, "current-free-disk", |v| v == "1000").await;
    assert_eq!(c.cmd(&put("c")).await, "REFUSED min-free-disk\r\n");
    assert_eq!(c.cmd("delete 1\r\n").await, "DELETED\r\n");
    assert_eq!(c.cmd("reserve\r\n").await, "RESERVED 2 1\r\nb\r\n");
    assert_eq!(c.cmd("release 2 0 0\r\n").await, "RELEASED\r\n");
    assert_eq!(c.cmd(&put("c")).await, "REFUSED min-free-disk\r\n");
    free.store(2 << 20, Ordering::Relaxed);
    let stats = wait_for_stat(&mut c, "current-free-disk", |v| v == "2097152").await;
    assert_eq!(num(&stats, "refused-min-free-disk"), 2);
    assert_eq!(c.cmd(&put("c")).await, "INSERTED 3\r\n");
    drop(c);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_floor_above_the_real_free_space_refuses_puts() {
    let server = ChildServer::larder(&["--min-free-disk", "18446744073709551615"]);
    let mut c = Raw::connect_extended(server.addr).await;
    assert_eq!(c.cmd(&put("a")).await, "REFUSED min-free-disk\r\n");
    let stats = c.cmd("stats\r\n").await;
    assert!(num(&stats, "current-free-disk") > 0, "{stats}");
    assert_eq!(num(&stats, "min-free-disk"), u64::MAX);
    assert_eq!(num(&stats, "refused-min-free-disk"), 1);
}

/// A real small filesystem: filling it past the floor with another file makes puts
/// refused while deletes go on; removing the file lets puts in again.
#[tokio::test]
async fn a_small_disk_below_its_floor_refuses_puts_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("floordisk");
    let data = disk.0.join("data");
    // A disk reserve smaller than the default 32 MiB, which a 1 MiB disk cannot hold.
    let server = ChildServer::larder_in(
        &data,
        &["--min-free-disk", "524288", "--disk-reserve", "65536"],
    );
    let mut c = Raw::connect_extended(server.addr).await;
    assert_eq!(c.cmd(&put("a")).await, "INSERTED 1\r\n");
    assert_eq!(c.cmd(&put("b")).await, "INSERTED 2\r\n");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![7u8; 700 << 10]).expect("fill the disk");
    wait_for_stat(&mut c, "current-free-disk", |v| {
        v.parse::<u64>().is_ok_and(|f| f < 524288)
    })
    .await;
    assert_eq!(c.cmd(&put("c")).await, "REFUSED min-free-disk\r\n");
    assert_eq!(c.cmd("delete 1\r\n").await, "DELETED\r\n");
    std::fs::remove_file(&filler).expect("free the disk");
    wait_for_stat(&mut c, "current-free-disk", |v| {
        v.parse::<u64>().is_ok_and(|f| f >= 524288)
    })
    .await;
    assert_eq!(c.cmd(&put("c")).await, "INSERTED 3\r\n");
    server.kill9();
}

#[tokio::test]
async fn a_connection_over_the_limit_is_told_and_closed_and_the_others_go_on() {
    let dir = data_dir("conns");
    let limits = Limits {
        max_connections: 2,
        ..Limits::DEFAULT
    };
    let server = InProcess::with_config(config(&dir, limits)).await;
    let mut a = server.connect().await;
    let mut b = server.connect_extended().await;
    assert_eq!(a.cmd("use t\r\n").await, "USING t\r\n");
    assert_eq!(b.cmd("list-tube-used\r\n").await, "USING default\r\n");
    let mut c = server.connect().await;
    assert_eq!(
        c.try_reply().await.as_deref(),
        Some("REFUSED max-connections\r\n")
    );
    assert!(c.closed().await, "the refused connection stays open");
    drop(c);
    assert_eq!(a.cmd(&put("x")).await, "INSERTED 1\r\n");
    let stats = b.cmd("stats\r\n").await;
    assert_eq!(num(&stats, "refused-max-connections"), 1);
    assert_eq!(num(&stats, "current-connections"), 2);
    assert_eq!(num(&stats, "max-connections"), 2);
    // When one leaves, a new connection is served (once the server has seen it go).
    a.close().await;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut d = server.connect().await;
        d.send(b"list-tube-used\r\n").await;
        match d.try_reply().await.as_deref() {
            Some("USING default\r\n") => break,
            Some("REFUSED max-connections\r\n") => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(b);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `max-tubes` and `max-watches-per-connection` (protocol.md §9.1): a `use`, `watch` or
/// `config-tube` that would create a tube past the limit, or a watch list past its limit,
/// is refused, changes nothing (no tube, no record, the connection's tubes as they were)
/// and leaves the connection usable; existing tubes stay reachable, and dropping a tube
/// makes room again.
#[tokio::test]
async fn tube_and_watch_limits_refuse_new_tubes_and_change_nothing() {
    let dir = data_dir("tubes");
    let limits = Limits {
        max_tubes: 3,
        max_watches_per_connection: 2,
        ..Limits::DEFAULT
    };
    let server = InProcess::with_config(config(&dir, limits)).await;
    let mut a = server.connect_extended().await;
    assert_eq!(a.cmd("use a\r\n").await, "USING a\r\n");
    assert_eq!(a.cmd("watch b\r\n").await, "WATCHING 2\r\n");
    let before = a.cmd("stats\r\n").await;
    assert_eq!(num(&before, "current-tubes"), 3);
    // The watch list is full: checked before the tube count.
    assert_eq!(
        a.cmd("watch c\r\n").await,
        "REFUSED max-watches-per-connection\r\n"
    );
    assert_eq!(a.cmd("watch b\r\n").await, "WATCHING 2\r\n");
    assert_eq!(a.cmd("use c\r\n").await, "REFUSED max-tubes\r\n");
    assert_eq!(
        a.cmd("config-tube c max-attempts 3\r\n").await,
        "REFUSED max-tubes\r\n"
    );
    assert_eq!(a.cmd("list-tube-used\r\n").await, "USING a\r\n");
    assert_eq!(
        a.cmd("list-tubes-watched\r\n").await,
        "OK 18\r\n---\n- default\n- b\n\r\n"
    );
    let mut b = server.connect_extended().await;
    assert_eq!(b.cmd("watch c\r\n").await, "REFUSED max-tubes\r\n");
    assert_eq!(b.cmd("watch a\r\n").await, "WATCHING 2\r\n");
    assert_eq!(b.cmd("use b\r\n").await, "USING b\r\n");
    assert_eq!(b.cmd(&put("x")).await, "INSERTED 1\r\n");
    let after = b.cmd("stats\r\n").await;
    assert_eq!(num(&after, "current-tubes"), 3);
    assert_eq!(num(&after, "refused-max-tubes"), 3);
    assert_eq!(num(&after, "refused-max-watches-per-connection"), 1);
    assert_eq!(num(&after, "max-tubes"), 3);
    assert_eq!(num(&after, "max-watches-per-connection"), 2);
    assert_eq!(num(&after, "cmd-use"), 3, "a refused use still counts");
    assert_eq!(num(&after, "cmd-watch"), 5, "a refused watch still counts");
    assert_eq!(
        num(&after, "log-records-written"),
        num(&before, "log-records-written") + 1,
        "only the put was logged"
    );
    assert_eq!(a.cmd("stats-tube c\r\n").await, "NOT_FOUND\r\n");
    // Tube a loses its last user when `a` moves on, which makes room for c.
    assert_eq!(b.cmd("ignore a\r\n").await, "WATCHING 1\r\n");
    assert_eq!(a.cmd("use default\r\n").await, "USING default\r\n");
    assert_eq!(a.cmd("use c\r\n").await, "USING c\r\n");
    assert_eq!(a.cmd("use d\r\n").await, "REFUSED max-tubes\r\n");
    drop((a, b));
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `chunk` to `stream` until a write makes no progress for `patience`; returns the
/// bytes written.
async fn write_until_blocked(
    stream: &mut tokio::net::TcpStream,
    chunk: &[u8],
    patience: Duration,
    most: usize,
) -> usize {
    let mut sent = 0;
    while sent < most {
        match tokio::time::timeout(patience, stream.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break,
        }
    }
    sent
}

#[tokio::test]
async fn a_client_that_does_not_read_is_paused_then_dropped_without_hurting_others() {
    let dir = data_dir("output");
    let limits = Limits {
        max_output_per_connection: 64 << 10,
        output_stall_timeout: 1,
        ..Limits::DEFAULT
    };
    let server = InProcess::with_config(config(&dir, limits)).await;
    let mut c = server.connect_extended().await;
    let body = "b".repeat(60_000);
    assert_eq!(c.cmd(&put(&body)).await, "INSERTED 1\r\n");
    // Each 8-byte request asks for a 60 kB reply. A server that went on reading would
    // buffer 7,500 times what it reads; this one stops reading, so the writes block.
    let mut deaf = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let requests = b"peek 1\r\n".repeat(1024);
    let most = 256 << 20;
    let sent = write_until_blocked(&mut deaf, &requests, Duration::from_millis(500), most).await;
    assert!(
        sent < most,
        "the server read {sent} bytes of requests without a reader"
    );
    // Meanwhile everyone else is served.
    assert_eq!(
        c.cmd("reserve-with-timeout 0\r\n").await,
        format!("RESERVED 1 60000\r\n{body}\r\n")
    );
    assert_eq!(c.cmd("release 1 0 0\r\n").await, "RELEASED\r\n");
    // Past the stall timeout the deaf client is disconnected.
    wait_for_stat(&mut c, "stalled-output-disconnects", |v| v == "1").await;
    let mut sink = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(REPLY_TIMEOUT, async {
        loop {
            match deaf.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
    let stats = wait_for_stat(&mut c, "current-connections", |v| v == "1").await;
    assert_eq!(num(&stats, "max-output-per-connection"), 64 << 10);
    drop(c);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// VmRSS of process `pid` in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Producers put as fast as they can into a broker at its limits while a worker drains
/// slowly and one client never reads: memory stays bounded, every put is answered
/// `INSERTED` or `REFUSED` with a job limit, and every confirmed job that was not deleted
/// is there, also after a SIGKILL and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_at_the_limits_keeps_memory_bounded_and_loses_nothing() {
    const PRODUCERS: usize = 4;
    const DEPTH: usize = 16;
    const FLOOD: Duration = Duration::from_secs(3);
    let dir = data_dir("flood");
    let flags = [
        "--max-jobs",
        "3000",
        "--max-bytes",
        "2000000",
        "--max-output-per-connection",
        "65536",
        "--output-stall-timeout",
        "1",
    ];
    let server = ChildServer::larder_in(&dir, &flags);
    let pid = server.child.id();
    let baseline = rss_kb(pid);
    let addr = server.addr;
    let body = "f".repeat(1000);

    let mut c = Raw::connect_extended(addr).await;
    assert_eq!(c.cmd(&put(&"p".repeat(60_000))).await, "INSERTED 1\r\n");
    let mut deaf = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let deaf_task = tokio::spawn(async move {
        let requests = b"peek 1\r\n".repeat(1024);
        write_until_blocked(&mut deaf, &requests, Duration::from_millis(500), 1 << 30).await;
        deaf
    });

    let until = Instant::now() + FLOOD;
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let body = body.clone();
        producers.push(tokio::spawn(async move {
            let mut p = Raw::connect(addr).await;
            let (mut inserted, mut refused) = (Vec::new(), 0u64);
            let request = put(&body).repeat(DEPTH);
            while Instant::now() < until {
                p.send(request.as_bytes()).await;
                for _ in 0..DEPTH {
                    let reply = p.line().await;
                    match reply.trim_end().split_once(' ') {
                        Some(("INSERTED", id)) => inserted.push(id.parse::<u64>().expect("id")),
                        Some(("REFUSED", "max-jobs" | "max-bytes")) => refused += 1,
                        _ => panic!("unexpected reply {reply:?}"),
                    }
                }
            }
            (inserted, refused)
        }));
    }
    let worker = tokio::spawn(async move {
        let mut w = Raw::connect(addr).await;
        let mut deleted = BTreeSet::new();
        while Instant::now() < until {
            let reply = w.cmd("reserve-with-timeout 0\r\n").await;
            let Some(rest) = reply.strip_prefix("RESERVED ") else {
                assert_eq!(reply, "TIMED_OUT\r\n");
                continue;
            };
            let id: u64 = rest
                .split(' ')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("id");
            assert_eq!(w.cmd(&format!("delete {id}\r\n")).await, "DELETED\r\n");
            deleted.insert(id);
        }
        deleted
    });
    let mut peak = baseline;
    while Instant::now() < until {
        peak = peak.max(rss_kb(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut confirmed = BTreeSet::from([1]);
    let mut refusals = 0;
    for p in producers {
        let (ids, refused) = p.await.expect("producer");
        confirmed.extend(ids);
        refusals += refused;
    }
    let deleted = worker.await.expect("worker");
    peak = peak.max(rss_kb(pid));
    eprintln!(
        "flood: {} puts confirmed, {refusals} refused, {} deleted; server VmRSS {baseline} kB \
         at start, peak {peak} kB",
        confirmed.len() - 1,
        deleted.len()
    );
    assert!(refusals > 0, "the flood never reached a limit");
    assert!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} kB to {peak} kB"
    );

    let live: Vec<u64> = confirmed.difference(&deleted).copied().collect();
    let check = |mut c: Raw, live: Vec<u64>| async move {
        let stats = c.cmd("stats\r\n").await;
        assert_eq!(num(&stats, "current-jobs"), live.len() as u64, "{stats}");
        for id in live {
            let reply = c.cmd(&format!("stats-job {id}\r\n")).await;
            assert!(reply.starts_with("OK "), "job {id} lost: {reply:?}");
        }
        stats
    };
    let stats = wait_for_stat(&mut c, "stalled-output-disconnects", |v| v == "1").await;
    assert!(num(&stats, "refused-max-jobs") + num(&stats, "refused-max-bytes") == refusals);
    let deaf = deaf_task.await.expect("deaf client");
    check(c, live.clone()).await;
    drop(deaf);
    server.kill9();
    let server = ChildServer::larder_in(&dir, &flags);
    check(Raw::connect_extended(server.addr).await, live).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn larder_stats_shows_the_limits_and_refusals() {
    let server = ChildServer::larder(&["--max-jobs", "7"]);
    let out = std::process::Command::new(crate::support::larder_bin())
        .args(["stats", "--all", "--addr", &server.addr.to_string()])
        .output()
        .expect("run larder stats");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "max-jobs",
        "current-bytes",
        "refused-max-jobs",
        "refused-min-free-disk",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["max-jobs", "7"]),
        "{text}"
    );
}
