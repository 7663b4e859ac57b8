//! Retries and dead letters (protocol.md §7): tube settings, attempt counting, automatic
//! dead-lettering, the dead-letter commands, and the `larder tube` / `larder dlq` commands.

use larder::config::ServerConfig;

use crate::support::{InProcess, Raw};

/// Sends `send` and asserts the server answers exactly `expect`.
async fn step(c: &mut Raw, send: &str, expect: &str) {
    c.send(send.as_bytes()).await;
    let got = c.read_exact(expect.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        expect,
        "after sending {send:?}"
    );
}

/// The value of `key` in a YAML reply.
fn field(reply: &str, key: &str) -> String {
    let yaml = reply.split_once("\r\n").map(|(_, y)| y).unwrap_or_default();
    larder::client::parse_yaml_map(yaml.as_bytes())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key} in {reply:?}"))
}

/// A fresh data directory path for a test that restarts its server.
fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("larder-retries-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

mod config_tube {
    use super::*;

    /// protocol.md §7.5: `cmd-config-tube` counts every line that names the command,
    /// `UNKNOWN_SETTING` included, as beanstalkd counts a `pause-tube` with a bad name.
    #[tokio::test]
    async fn cmd_config_tube_counts_unknown_settings_too() {
        let s = InProcess::start().await;
        let mut c = s.connect_extended().await;
        step(
            &mut c,
            "config-tube mail colour 3\r\n",
            "UNKNOWN_SETTING\r\n",
        )
        .await;
        assert_eq!(field(&c.cmd("stats\r\n").await, "cmd-config-tube"), "1");
        step(
            &mut c,
            "config-tube mail max-attempts 2\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        assert_eq!(field(&c.cmd("stats\r\n").await, "cmd-config-tube"), "2");
    }

    #[tokio::test]
    async fn settings_are_set_shown_reset_and_refused_precisely() {
        let s = InProcess::start().await;
        let mut c = s.connect_extended().await;
        // A setting creates the tube and keeps it alive with nobody using it.
        step(
            &mut c,
            "config-tube mail max-attempts 3\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-delay 1500\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-backoff 1.5\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-jitter 0.25\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        let st = c.cmd("stats-tube mail\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "3");
        assert_eq!(field(&st, "retry-delay"), "1500");
        assert_eq!(field(&st, "retry-backoff"), "1.5");
        assert_eq!(field(&st, "retry-max"), "0");
        assert_eq!(field(&st, "retry-jitter"), "0.25");
        let tubes = c.cmd("list-tubes\r\n").await;
        assert!(tubes.contains("- mail\n"), "{tubes}");

        // Refusals change nothing.
        step(
            &mut c,
            "config-tube mail colour 3\r\n",
            "UNKNOWN_SETTING\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail max-attempts x\r\n",
            "BAD_FORMAT\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-jitter 2\r\n",
            "BAD_FORMAT\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail max-attempts  3\r\n",
            "BAD_FORMAT\r\n",
        )
        .await;
        let st = c.cmd("stats-tube mail\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "3");
        assert_eq!(field(&st, "retry-jitter"), "0.25");

        // `default` returns each setting to the server default; with none left, the tube
        // goes away like any unused tube.
        for setting in [
            "max-attempts",
            "retry-delay",
            "retry-backoff",
            "retry-jitter",
        ] {
            step(
                &mut c,
                &format!("config-tube mail {setting} default\r\n"),
                "CONFIGURED\r\n",
            )
            .await;
        }
        step(&mut c, "stats-tube mail\r\n", "NOT_FOUND\r\n").await;
    }

    #[tokio::test]
    async fn settings_survive_a_restart() {
        let dir = data_dir("config");
        let config = ServerConfig {
            data_dir: dir.clone(),
            ..ServerConfig::default()
        };
        let s = InProcess::with_config(config.clone()).await;
        let mut c = s.connect_extended().await;
        step(
            &mut c,
            "config-tube mail max-attempts 7\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-max 60000\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-max default\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube other retry-delay 5\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        c.close().await;
        s.shutdown().await.expect("shutdown");

        let s = InProcess::with_config(config).await;
        let mut c = s.connect_extended().await;
        let st = c.cmd("stats-tube mail\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "7");
        assert_eq!(field(&st, "retry-max"), "0");
        assert_eq!(field(&st, "retry-delay"), "0");
        let st = c.cmd("stats-tube other\r\n").await;
        assert_eq!(field(&st, "retry-delay"), "5");
        c.close().await;
        s.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_setting_outlives_the_reclaiming_of_the_segment_that_held_it() {
        let dir = data_dir("reclaim");
        let config = ServerConfig {
            data_dir: dir.clone(),
            segment_size: 4096,
            fsync: larder::config::FsyncPolicy::Never,
            ..ServerConfig::default()
        };
        let s = InProcess::with_config(config.clone()).await;
        let mut c = s.connect_extended().await;
        step(
            &mut c,
            "config-tube keep max-attempts 9\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        // A pause is state of the same kind: its record must not go with its segment.
        step(&mut c, "pause-tube keep 3600\r\n", "PAUSED\r\n").await;
        // Enough put/delete pairs that the setting's first record is far behind the tail.
        put_and_delete(&mut c, 60, 100, "x").await;
        let st = c.cmd("stats\r\n").await;
        let oldest: u64 = field(&st, "log-oldest-segment").parse().expect("number");
        assert!(oldest > 1, "no segment was reclaimed: {st}");
        c.close().await;
        s.shutdown().await.expect("shutdown");

        let mut s = InProcess::with_config(config).await;
        // Seen once under a loaded full run: the restarted server refused the connection.
        // Say why it stopped if that happens again.
        if let Err(e) = tokio::net::TcpStream::connect(s.addr).await {
            panic!(
                "cannot connect ({e}); server ended with {}",
                s.outcome().await
            );
        }
        let mut c = s.connect_extended().await;
        let st = c.cmd("stats-tube keep\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "9");
        let left: u64 = field(&st, "pause-time-left").parse().expect("number");
        assert!(left > 3000, "the pause was lost: {st}");
        c.close().await;
        s.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Puts `per_round` jobs with `body` and deletes them again, `rounds` times (pipelined),
    /// so the log moves on while nothing stays live.
    async fn put_and_delete(c: &mut Raw, rounds: u64, per_round: usize, body: &str) {
        let batch = format!("put 0 0 60 {}\r\n{body}\r\n", body.len()).repeat(per_round);
        for round in 0..rounds {
            c.send(batch.as_bytes()).await;
            let mut deletes = String::new();
            for _ in 0..per_round {
                let reply = c.reply().await;
                let id = reply.trim().strip_prefix("INSERTED ").expect("inserted");
                deletes.push_str(&format!("delete {id}\r\n"));
            }
            c.send(deletes.as_bytes()).await;
            for _ in 0..per_round {
                assert_eq!(c.reply().await, "DELETED\r\n", "round {round}");
            }
        }
    }

    /// A tube's pause lives in one record; when the jobs move past that record's segment
    /// it is written again instead of being reclaimed with it.
    #[tokio::test]
    async fn a_pause_outlives_the_reclaiming_of_the_segment_that_held_it() {
        let dir = data_dir("pause");
        let config = ServerConfig {
            data_dir: dir.clone(),
            segment_size: 4096,
            fsync: larder::config::FsyncPolicy::Never,
            ..ServerConfig::default()
        };
        let s = InProcess::with_config(config.clone()).await;
        let mut c = s.connect_extended().await;
        let mut watcher = s.connect().await;
        step(&mut watcher, "watch p\r\n", "WATCHING 2\r\n").await;
        step(&mut c, "pause-tube p 3600\r\n", "PAUSED\r\n").await;
        let body = "y".repeat(50);
        // The pause record is now behind a few segments; then a job keeps tube p alive.
        put_and_delete(&mut c, 3, 50, &body).await;
        step(
            &mut c,
            "use p\r\nput 0 0 60 1\r\nx\r\nuse default\r\n",
            "USING p\r\n",
        )
        .await;
        let inserted = c.reply().await;
        assert!(inserted.starts_with("INSERTED "), "{inserted}");
        assert_eq!(c.reply().await, "USING default\r\n");
        watcher.close().await;
        // Reclaiming up to the job's segment removes the segment with the pause record.
        put_and_delete(&mut c, 20, 50, &body).await;
        let st = c.cmd("stats\r\n").await;
        let oldest: u64 = field(&st, "log-oldest-segment").parse().expect("number");
        assert!(oldest > 1, "no segment was reclaimed: {st}");
        c.close().await;
        s.shutdown().await.expect("shutdown");

        let s = InProcess::with_config(config).await;
        let mut c = s.connect().await;
        let st = c.cmd("stats-tube p\r\n").await;
        let left: u64 = field(&st, "pause-time-left").parse().expect("number");
        assert!(left > 3000, "the pause was lost: {st}");
        c.close().await;
        s.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs the `larder` binary.
fn larder(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::larder_bin())
        .args(args)
        .output()
        .expect("run larder")
}

/// Runs `larder args…`, asserts success and returns standard output.
fn larder_ok(args: &[&str]) -> String {
    let out = larder(args);
    assert!(out.status.success(), "larder {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

mod transcripts {
    use super::*;

    #[tokio::test]
    async fn fail_and_the_dead_letter_commands_answer_precisely() {
        let s = InProcess::start().await;
        let mut c = s.connect_extended().await;
        let mut other = s.connect_extended().await;
        step(&mut c, "put 5 0 60 3\r\nabc\r\n", "INSERTED 1\r\n").await;
        // Only the reserving connection may report a failure.
        step(&mut c, "fail 1 nope\r\n", "NOT_FOUND\r\n").await;
        step(&mut c, "fail 9 nope\r\n", "NOT_FOUND\r\n").await;
        step(&mut c, "fail x\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "reserve\r\n", "RESERVED 1 3\r\nabc\r\n").await;
        step(&mut other, "fail 1 not mine\r\n", "NOT_FOUND\r\n").await;
        // Without a policy a failure sends the job straight back, keeping its priority.
        step(&mut c, "fail 1 bad input\r\n", "RELEASED\r\n").await;
        let st = c.cmd("stats-job 1\r\n").await;
        assert_eq!(field(&st, "state"), "ready");
        assert_eq!(field(&st, "pri"), "5");
        assert_eq!(field(&st, "attempts"), "1");
        assert_eq!(field(&st, "last-error"), "bad input");
        // A worker's bury makes a dead letter with reason `buried`.
        step(&mut c, "reserve\r\n", "RESERVED 1 3\r\nabc\r\n").await;
        step(&mut c, "bury 1 7\r\n", "BURIED\r\n").await;
        let list = c.cmd("list-dead * * 0 0 18446744073709551615 5\r\n").await;
        assert!(
            list.contains("- id: 1\n  tube: default\n  reason: buried\n  attempts: 1\n  pri: 7\n"),
            "{list}"
        );
        assert!(
            list.ends_with("  last-error: \"bad input\"\n\r\n"),
            "{list}"
        );
        step(
            &mut c,
            "list-dead * max-attempts 0 0 18446744073709551615 5\r\n",
            "OK 4\r\n---\n\r\n",
        )
        .await;
        step(&mut c, "list-dead * * 0 0 1\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "kick-dead * nosuch 0 0 9 5\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "delete-dead nosuch * 0 0 9 5\r\n", "DELETED 0\r\n").await;
        step(&mut c, "kick-dead default * 0 2 9 5\r\n", "KICKED 0\r\n").await;
        step(&mut c, "kick-dead default * 0 1 1 5\r\n", "KICKED 1\r\n").await;
        let st = c.cmd("stats-job 1\r\n").await;
        assert_eq!(field(&st, "state"), "ready");
        assert_eq!(field(&st, "attempts"), "0");
        assert_eq!(field(&st, "kicks"), "1");
        step(&mut c, "delete-dead * * 0 0 9 5\r\n", "DELETED 0\r\n").await;
        let stats = c.cmd("stats\r\n").await;
        // Lines refused with BAD_FORMAT are not counted.
        assert_eq!(field(&stats, "cmd-fail"), "4");
        assert_eq!(field(&stats, "cmd-kick-dead"), "2");
    }
}

mod attempts {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::support::ChildServer;

    /// Reserves on a fresh connection (so earlier reservations stay held until their TTR),
    /// waiting up to 10 s; returns the connection and the reply.
    async fn reserve_fresh(s: &InProcess) -> (Raw, String) {
        let mut c = s.connect_extended().await;
        c.send(b"watch poison\r\nignore default\r\n").await;
        c.reply().await;
        c.reply().await;
        let reply = c.cmd("reserve-with-timeout 10\r\n").await;
        (c, reply)
    }

    #[tokio::test]
    async fn a_poison_job_is_retried_on_schedule_and_buried_with_reason_max_attempts() {
        let s = InProcess::start().await;
        let mut admin = s.connect_extended().await;
        for (setting, value) in [
            ("max-attempts", "3"),
            ("retry-delay", "400"),
            ("retry-backoff", "2"),
        ] {
            step(
                &mut admin,
                &format!("config-tube poison {setting} {value}\r\n"),
                "CONFIGURED\r\n",
            )
            .await;
        }
        step(
            &mut admin,
            "use poison\r\nput 0 0 1 6\r\npoison\r\n",
            "USING poison\r\nINSERTED 1\r\n",
        )
        .await;
        // Each attempt's worker never deletes: the TTR (1 s) runs out, then the job waits out
        // the retry delay (400 ms, then 800 ms) before it can be reserved again.
        // The server reserved each attempt after the test asked for it (`asked`) and before
        // the reply arrived (`got`), so the next attempt's reply comes at least TTR + delay
        // after `asked`, however slowly replies travel on a loaded machine; the upper bound
        // is loose for the same reason.
        let mut held = Vec::new();
        let (mut asked, mut got) = (Instant::now(), Instant::now());
        for (attempt, delay_ms) in [(1, 0u64), (2, 400), (3, 800)] {
            let asking = Instant::now();
            let (c, reply) = reserve_fresh(&s).await;
            assert_eq!(reply, "RESERVED 1 6\r\npoison\r\n", "attempt {attempt}");
            if attempt > 1 {
                let since_asked = asked.elapsed();
                assert!(
                    since_asked >= Duration::from_millis(1000 + delay_ms),
                    "attempt {attempt} came {since_asked:?} after the last was asked for"
                );
                let since_got = got.elapsed();
                assert!(
                    since_got < Duration::from_millis(1000 + delay_ms + 5000),
                    "attempt {attempt} came {since_got:?} after the last arrived"
                );
            }
            (asked, got) = (asking, Instant::now());
            held.push(c);
            if attempt < 3 {
                // While it waits out the retry delay the job is delayed, not ready.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let st = admin.cmd("stats-job 1\r\n").await;
                    if field(&st, "state") == "delayed" {
                        assert_eq!(field(&st, "attempts"), attempt.to_string());
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "never delayed: {st}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        // The third TTR expiry uses up the budget.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let st = loop {
            let st = admin.cmd("stats-job 1\r\n").await;
            if field(&st, "state") == "buried" {
                break st;
            }
            assert!(tokio::time::Instant::now() < deadline, "never buried: {st}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(field(&st, "bury-reason"), "max-attempts");
        assert_eq!(field(&st, "attempts"), "3");
        assert_eq!(field(&st, "timeouts"), "3");
        let tube = admin.cmd("stats-tube poison\r\n").await;
        assert_eq!(field(&tube, "dead-letters-max-attempts"), "1");
        let list = admin
            .cmd("list-dead poison max-attempts 0 0 18446744073709551615 10\r\n")
            .await;
        assert!(
            list.contains("- id: 1\n  tube: poison\n  reason: max-attempts\n"),
            "{list}"
        );
        let stats = admin.cmd("stats\r\n").await;
        assert_eq!(field(&stats, "total-dead-lettered"), "1");
        assert_eq!(field(&stats, "total-retries-delayed"), "2");
        drop(held);
    }

    #[tokio::test]
    async fn a_reported_failure_shows_in_dlq_show() {
        let server = ChildServer::larder(&["--max-attempts", "1"]);
        let addr = server.addr.to_string();
        let mut c = Raw::connect_extended(server.addr).await;
        step(&mut c, "put 0 0 60 4\r\ntask\r\n", "INSERTED 1\r\n").await;
        step(&mut c, "reserve\r\n", "RESERVED 1 4\r\ntask\r\n").await;
        step(
            &mut c,
            "fail 1 database \"orders\" unreachable\r\n",
            "BURIED\r\n",
        )
        .await;
        let text = larder_ok(&["dlq", "show", "1", "--addr", &addr]);
        assert!(
            text.contains("last-error    database \"orders\" unreachable"),
            "{text}"
        );
        assert!(text.contains("bury-reason   max-attempts"), "{text}");
        assert!(text.contains("body (4 bytes):\ntask"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&larder_ok(&["dlq", "show", "1", "--addr", &addr, "--json"]))
                .expect("json");
        assert_eq!(json["last-error"], "database \"orders\" unreachable");
        assert_eq!(json["bury-reason"], "max-attempts");
        assert_eq!(json["attempts"], 1);
        assert_eq!(json["body"], "task");
        assert_eq!(json["body-encoding"], "utf-8");
        // A job that is not a dead letter, and one that does not exist, are errors.
        step(&mut c, "put 0 0 60 1\r\nx\r\n", "INSERTED 2\r\n").await;
        let out = larder(&["dlq", "show", "2", "--addr", &addr]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a dead letter"));
        let out = larder(&["dlq", "show", "99", "--addr", &addr]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no job 99"));
    }

    #[tokio::test]
    async fn a_restart_between_attempts_keeps_the_count() {
        let dir = data_dir("restart");
        let server = ChildServer::larder_in(&dir, &[]);
        let mut c = Raw::connect_extended(server.addr).await;
        step(
            &mut c,
            "config-tube default max-attempts 3\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(&mut c, "put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n").await;
        step(&mut c, "reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
        step(&mut c, "fail 1 first\r\n", "RELEASED\r\n").await;
        step(&mut c, "reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
        step(&mut c, "release 1 0 0\r\n", "RELEASED\r\n").await;
        // The replies above were sent only once their records were on disk.
        server.kill9();

        let server = ChildServer::larder_in(&dir, &[]);
        let mut c = Raw::connect_extended(server.addr).await;
        let st = c.cmd("stats-job 1\r\n").await;
        assert_eq!(field(&st, "attempts"), "2");
        assert_eq!(field(&st, "last-error"), "first");
        assert_eq!(field(&st, "max-attempts"), "3");
        step(&mut c, "reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
        step(&mut c, "fail 1 third\r\n", "BURIED\r\n").await;
        drop(server);

        // The burial, its reason and the count survive another restart too.
        let server = ChildServer::larder_in(&dir, &[]);
        let mut c = Raw::connect_extended(server.addr).await;
        let st = c.cmd("stats-job 1\r\n").await;
        assert_eq!(field(&st, "state"), "buried");
        assert_eq!(field(&st, "bury-reason"), "max-attempts");
        assert_eq!(field(&st, "attempts"), "3");
        assert_eq!(field(&st, "last-error"), "third");
        // Redrive gives a fresh budget.
        step(&mut c, "kick-job 1\r\n", "KICKED\r\n").await;
        assert_eq!(field(&c.cmd("stats-job 1\r\n").await, "attempts"), "0");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

mod cli {
    use std::time::{Duration, Instant};

    use base64::Engine as _;

    use super::*;
    use crate::support::ChildServer;

    /// A server with `n` jobs in tube `t` buried by a worker (ids from the returned list).
    async fn bury_jobs(c: &mut Raw, tube: &str, bodies: &[&[u8]]) -> Vec<u64> {
        c.send(format!("use {tube}\r\nwatch {tube}\r\n").as_bytes())
            .await;
        c.reply().await;
        c.reply().await;
        let mut ids = Vec::new();
        for body in bodies {
            let mut put = format!("put 0 0 60 {}\r\n", body.len()).into_bytes();
            put.extend_from_slice(body);
            put.extend_from_slice(b"\r\n");
            c.send(&put).await;
            let reply = c.reply().await;
            let id: u64 = reply
                .trim()
                .strip_prefix("INSERTED ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{reply}"));
            c.send(format!("reserve-job {id}\r\nbury {id} 0\r\n").as_bytes())
                .await;
            c.reply().await;
            assert_eq!(c.reply().await, "BURIED\r\n");
            ids.push(id);
        }
        ids
    }

    #[tokio::test]
    async fn tube_config_and_show_set_and_report_the_policy() {
        let server = ChildServer::larder(&["--retry-delay", "2s", "--max-attempts", "4"]);
        let addr = server.addr.to_string();
        let json: serde_json::Value = serde_json::from_str(&larder_ok(&[
            "tube", "show", "default", "--addr", &addr, "--json",
        ]))
        .expect("json");
        assert_eq!(json["max-attempts"], 4);
        assert_eq!(json["retry-delay"], 2000);
        assert_eq!(json["retry-backoff"], 2);

        let text = larder_ok(&[
            "tube",
            "config",
            "mail",
            "--addr",
            &addr,
            "--max-attempts",
            "5",
            "--retry-delay",
            "500ms",
            "--retry-backoff",
            "1.5",
            "--retry-max",
            "5m",
            "--retry-jitter",
            "0.2",
        ]);
        assert!(text.contains("mail: retry-max = 5m\n"), "{text}");
        assert!(text.contains("mail: retry-delay = 500ms\n"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&larder_ok(&[
            "tube", "show", "mail", "--addr", &addr, "--json",
        ]))
        .expect("json");
        assert_eq!(json["name"], "mail");
        assert_eq!(json["max-attempts"], 5);
        assert_eq!(json["retry-delay"], 500);
        assert_eq!(json["retry-backoff"], 1.5);
        assert_eq!(json["retry-max"], 300000);
        assert_eq!(json["retry-jitter"], 0.2);
        assert_eq!(json["dead-letters-max-attempts"], 0);
        // `default` goes back to the server's value.
        larder_ok(&[
            "tube",
            "config",
            "mail",
            "--addr",
            &addr,
            "--retry-delay",
            "default",
        ]);
        let json: serde_json::Value = serde_json::from_str(&larder_ok(&[
            "tube", "show", "mail", "--addr", &addr, "--json",
        ]))
        .expect("json");
        assert_eq!(json["retry-delay"], 2000);

        // The tube's limits are set the same way, and enforced.
        let text = larder_ok(&[
            "tube",
            "config",
            "mail",
            "--addr",
            &addr,
            "--max-tube-jobs",
            "1",
            "--max-tube-bytes",
            "100",
        ]);
        assert!(text.contains("mail: max-tube-jobs = 1\n"), "{text}");
        assert!(text.contains("mail: max-tube-bytes = 100 B\n"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&larder_ok(&[
            "tube", "show", "mail", "--addr", &addr, "--json",
        ]))
        .expect("json");
        assert_eq!(
            (
                json["max-tube-jobs"].clone(),
                json["max-tube-bytes"].clone()
            ),
            (1.into(), 100.into())
        );
        larder_ok(&["put", "--addr", &addr, "--tube", "mail", "one"]);
        let out = larder(&["put", "--addr", &addr, "--tube", "mail", "two"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("max-tube-jobs"),
            "{out:?}"
        );

        // Bad values are refused before anything is sent, with the flag named.
        for (flag, value) in [
            ("--retry-delay", "soon"),
            ("--retry-jitter", "3"),
            ("--max-attempts", "many"),
        ] {
            let out = larder(&["tube", "config", "mail", "--addr", &addr, flag, value]);
            assert_eq!(out.status.code(), Some(1), "{flag} {value}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(&flag[2..]),
                "{out:?}"
            );
        }
        let out = larder(&["tube", "config", "mail", "--addr", &addr]);
        assert_eq!(out.status.code(), Some(1));
        let out = larder(&["tube", "show", "nosuch", "--addr", &addr]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no tube named"));
        let out = larder(&["serve", "--retry-jitter", "2"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("retry-jitter"));
    }

    #[tokio::test]
    async fn dlq_list_filters_and_prints_json() {
        let server = ChildServer::larder(&[]);
        let addr = server.addr.to_string();
        let mut c = Raw::connect_extended(server.addr).await;
        let mail = bury_jobs(&mut c, "mail", &[b"alpha one", b"beta two"]).await;
        let other = bury_jobs(&mut c, "other", &[b"gamma"]).await;
        let list = |extra: &[&str]| -> Vec<serde_json::Value> {
            let mut args = vec!["dlq", "list", "--addr", &addr, "--json"];
            args.extend_from_slice(extra);
            let v: serde_json::Value = serde_json::from_str(&larder_ok(&args)).expect("json");
            v["dead-letters"].as_array().expect("array").clone()
        };
        let all = list(&[]);
        let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().expect("id")).collect();
        assert_eq!(ids, [mail[0], mail[1], other[0]]);
        assert_eq!(all[0]["tube"], "mail");
        assert_eq!(all[0]["bury-reason"], "buried");
        assert_eq!(all[0]["body-preview"], "alpha one");
        assert!(all[0]["buried-at-time"]
            .as_str()
            .expect("time")
            .ends_with('Z'));
        assert_eq!(list(&["--tube", "other"]).len(), 1);
        assert_eq!(list(&["--grep", "two"])[0]["id"], mail[1]);
        assert_eq!(list(&["--limit", "2"]).len(), 2);
        assert!(list(&["--reason", "max-attempts"]).is_empty());
        assert!(list(&["--older-than", "1h"]).is_empty());
        let table = larder_ok(&["dlq", "list", "--addr", &addr]);
        assert!(table.contains("3 dead letters"), "{table}");
        assert!(table.contains("gamma"), "{table}");
        let out = larder(&["dlq", "list", "--addr", &addr, "--reason", "tired"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--reason"));
    }

    #[tokio::test]
    async fn dlq_redrive_honours_its_rate_and_resets_attempts() {
        let server = ChildServer::larder(&[]);
        let addr = server.addr.to_string();
        let mut c = Raw::connect_extended(server.addr).await;
        let bodies: Vec<&[u8]> = vec![b"j"; 6];
        bury_jobs(&mut c, "r", &bodies).await;
        let dry = larder_ok(&["dlq", "redrive", "--addr", &addr, "--dry-run"]);
        assert!(dry.contains("would redrive 6 dead letters"), "{dry}");
        assert_eq!(
            field(&c.cmd("stats-tube r\r\n").await, "current-jobs-buried"),
            "6"
        );

        // Five per second: six kicks need at least five intervals of 200 ms.
        let started = Instant::now();
        let text = larder_ok(&[
            "dlq", "redrive", "--addr", &addr, "--tube", "r", "--rate", "5",
        ]);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1000), "took {took:?}");
        assert!(text.contains("redrove 6 of 6"), "{text}");
        let st = c.cmd("stats-tube r\r\n").await;
        assert_eq!(field(&st, "current-jobs-buried"), "0");
        assert_eq!(field(&st, "current-jobs-ready"), "6");
        assert_eq!(field(&st, "dead-letters-buried"), "0");

        // Without a rate, the server kicks in batches.
        bury_jobs(&mut c, "r", &bodies).await;
        let text = larder_ok(&["dlq", "redrive", "--addr", &addr, "--reason", "buried"]);
        assert!(text.contains("redrove 6 of 6"), "{text}");
        assert_eq!(
            field(&c.cmd("stats-tube r\r\n").await, "current-jobs-ready"),
            "12"
        );
    }

    #[tokio::test]
    async fn dlq_export_round_trips_bodies_and_delete_removes_dead_letters() {
        let server = ChildServer::larder(&[]);
        let addr = server.addr.to_string();
        let mut c = Raw::connect_extended(server.addr).await;
        let bodies: [&[u8]; 3] = [
            b"plain text",
            b"\xff\x00\xfebinary\r\n",
            "caf\u{e9}".as_bytes(),
        ];
        let ids = bury_jobs(&mut c, "x", &bodies).await;
        let text = larder_ok(&["dlq", "export", "--addr", &addr, "--tube", "x"]);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 3);
        for (line, (id, body)) in lines.iter().zip(ids.iter().zip(bodies)) {
            assert_eq!(line["id"], *id);
            let text = line["body"].as_str().expect("body");
            let decoded = match line["body-encoding"].as_str() {
                Some("utf-8") => text.as_bytes().to_vec(),
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .expect("base64"),
                other => panic!("encoding {other:?}"),
            };
            assert_eq!(decoded, body);
        }
        assert_eq!(lines[1]["body-encoding"], "base64");
        assert_eq!(lines[0]["ttr"], 60);

        // By id: only dead letters are deleted.
        step(&mut c, "put 0 0 60 1\r\nz\r\n", "INSERTED 4\r\n").await;
        let id0 = ids[0].to_string();
        let out = larder(&["dlq", "delete", "--addr", &addr, &id0, "4"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 1"));
        assert!(c.cmd("peek 4\r\n").await.starts_with("FOUND 4"));
        step(&mut c, &format!("peek {id0}\r\n"), "NOT_FOUND\r\n").await;
        // By filter: over the confirmation threshold, refused without --yes, then done.
        let out = larder(&[
            "dlq",
            "delete",
            "--addr",
            &addr,
            "--tube",
            "x",
            "--confirm-above",
            "1",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
        let text = larder_ok(&[
            "dlq",
            "delete",
            "--addr",
            &addr,
            "--tube",
            "x",
            "--confirm-above",
            "1",
            "--yes",
        ]);
        assert!(text.contains("deleted 2"), "{text}");
        assert_eq!(
            field(&c.cmd("stats-tube x\r\n").await, "current-jobs-buried"),
            "0"
        );
    }

    #[test]
    fn stats_reports_dead_letters_and_retry_figures() {
        let server = ChildServer::larder(&[]);
        let addr = server.addr.to_string();
        let json: serde_json::Value =
            serde_json::from_str(&larder_ok(&["stats", "--addr", &addr, "--json"])).expect("json");
        for key in [
            "dead-letters-buried",
            "dead-letters-max-attempts",
            "total-attempts",
            "total-retries-delayed",
            "total-dead-lettered",
        ] {
            assert_eq!(json[key], 0, "{key}");
        }
    }
}
