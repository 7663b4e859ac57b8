//! Protocol transcripts over real TCP against an in-process server, grouped by the sections
//! of protocol.md. Each step sends raw bytes and checks the exact bytes that come back.

use std::time::Duration;

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

/// A fresh server and one connection to it.
async fn fresh() -> (InProcess, Raw) {
    let server = InProcess::start().await;
    let conn = server.connect().await;
    (server, conn)
}

/// Polls `stats` until `n` clients are blocked in reserve.
async fn wait_for_waiting(c: &mut Raw, n: usize) {
    let deadline = tokio::time::Instant::now() + crate::support::REPLY_TIMEOUT;
    while field(&c.cmd("stats\r\n").await, "current-waiting") != n.to_string() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {n} waiting"
        );
        tokio::task::yield_now().await;
    }
}

/// `key: value` fields of a YAML reply.
fn fields(reply: &str) -> Vec<(String, String)> {
    let yaml = reply.split_once("\r\n").map(|(_, y)| y).unwrap_or_default();
    larder::client::parse_yaml_map(yaml.as_bytes())
}

fn field(reply: &str, key: &str) -> String {
    fields(reply)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key} in {reply:?}"))
}

mod general_rules {
    use super::*;

    #[tokio::test]
    async fn a_224_byte_line_is_accepted_and_a_longer_one_is_bad_format() {
        let (_s, mut c) = fresh().await;
        // "peek" + spaces + "1" + CRLF = 224 bytes: a valid peek of job 1.
        let line224 = format!("peek{}1\r\n", " ".repeat(224 - 7));
        assert_eq!(line224.len(), 224);
        step(&mut c, &line224, "NOT_FOUND\r\n").await;
        let line225 = format!("peek{}1\r\n", " ".repeat(225 - 7));
        step(&mut c, &line225, "BAD_FORMAT\r\n").await;
        let line1000 = format!("{}\r\n", "x".repeat(998));
        step(&mut c, &line1000, "BAD_FORMAT\r\n").await;
        // The connection is still usable and nothing was created.
        step(&mut c, "list-tube-used\r\n", "USING default\r\n").await;
        step(&mut c, "peek 1\r\n", "NOT_FOUND\r\n").await;
    }

    #[tokio::test]
    async fn an_over_long_line_arriving_in_pieces_is_discarded_to_its_end() {
        let (_s, mut c) = fresh().await;
        for _ in 0..10 {
            c.send(&[b'a'; 100]).await;
        }
        step(
            &mut c,
            "\r\nlist-tube-used\r\n",
            "BAD_FORMAT\r\nUSING default\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn nul_bytes_and_empty_lines_are_rejected() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "st\0ats\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "bogus\0\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "\r\n", "UNKNOWN_COMMAND\r\n").await;
        step(&mut c, "PUT 0 0 1 1\r\n", "UNKNOWN_COMMAND\r\n").await;
    }

    #[tokio::test]
    async fn command_names_match_by_prefix_like_beanstalkd() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "peek\r\n", "UNKNOWN_COMMAND\r\n").await;
        step(&mut c, "peekx\r\n", "UNKNOWN_COMMAND\r\n").await;
        step(&mut c, "peek 1x\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "reservex\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "reserve \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "reserve-job\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "statsx\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "stats \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "list-tube\r\n", "UNKNOWN_COMMAND\r\n").await;
        step(&mut c, "list-tubes \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "peek-ready \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "delete\r\n", "UNKNOWN_COMMAND\r\n").await;
        step(&mut c, "kick\r\n", "UNKNOWN_COMMAND\r\n").await;
    }

    #[tokio::test]
    async fn quit_and_anything_starting_with_quit_close_the_connection() {
        let (s, mut c) = fresh().await;
        c.send(b"quitx\r\nstats\r\n").await;
        assert!(c.closed().await);
        let mut c = s.connect().await;
        c.send(b"quit junk\r\n").await;
        assert!(c.closed().await);
    }

    #[tokio::test]
    async fn numbers_accept_leading_spaces_and_reject_signs_overflow_and_trailing_text() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "put  0  0  1  1\r\nx\r\n", "INSERTED 1\r\n").await;
        step(&mut c, "delete  1\r\n", "DELETED\r\n").await;
        step(&mut c, "delete 1 \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "delete -1\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "delete 18446744073709551616\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "delete 18446744073709551615\r\n", "NOT_FOUND\r\n").await;
        step(&mut c, "put 4294967296 0 0 0\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "put -1 0 1 1\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "put 0 0 1 +1\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "release 1 2\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "bury 1\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "bury 1 2 3\r\n", "BAD_FORMAT\r\n").await;
    }

    #[tokio::test]
    async fn kick_parses_its_bound_like_strtoul() {
        let (_s, mut c) = fresh().await;
        for _ in 0..6 {
            c.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n").await;
            let _ = c.reply().await;
            let reserved = c.reply().await;
            let id = reserved.split(' ').nth(1).expect("id").to_owned();
            step(&mut c, &format!("bury {id} 0\r\n"), "BURIED\r\n").await;
        }
        step(&mut c, "kick 0x3\r\n", "KICKED 0\r\n").await;
        step(&mut c, "kick +0\r\n", "KICKED 0\r\n").await;
        step(&mut c, "kick 4294967297\r\n", "KICKED 1\r\n").await;
        step(&mut c, "kick  \t 2 zz\r\n", "KICKED 2\r\n").await;
        step(&mut c, "kick -1\r\n", "KICKED 3\r\n").await;
        step(&mut c, "kick \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "kick x\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "kick -\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "kick 18446744073709551616\r\n", "BAD_FORMAT\r\n").await;
    }

    #[tokio::test]
    async fn tube_names_follow_the_charset_and_length_rules() {
        let (_s, mut c) = fresh().await;
        let n200 = "a".repeat(200);
        step(
            &mut c,
            &format!("use {n200}\r\n"),
            &format!("USING {n200}\r\n"),
        )
        .await;
        step(&mut c, &format!("use {n200}a\r\n"), "BAD_FORMAT\r\n").await;
        step(&mut c, "use -foo\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "use  foo\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "use foo \r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "use caf\u{e9}\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "use a-+/;.$_()9\r\n", "USING a-+/;.$_()9\r\n").await;
        step(&mut c, "watch -x\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "ignore -x\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "stats-tube  default\r\n", "BAD_FORMAT\r\n").await;
        step(&mut c, "stats-tube\r\n", "BAD_FORMAT\r\n").await;
    }

    #[tokio::test]
    async fn pipelined_commands_are_answered_in_order() {
        let (_s, mut c) = fresh().await;
        let mut send = String::new();
        let mut expect = String::new();
        for i in 1..=50 {
            send.push_str(&format!("put {i} 0 10 2\r\nj{}\r\n", i % 10));
            expect.push_str(&format!("INSERTED {i}\r\n"));
        }
        send.push_str("use other\r\npeek 3\r\nbogus\r\ndelete 50\r\n");
        expect.push_str("USING other\r\nFOUND 3 2\r\nj3\r\nUNKNOWN_COMMAND\r\nDELETED\r\n");
        step(&mut c, &send, &expect).await;
    }

    #[tokio::test]
    async fn commands_after_a_blocked_reserve_wait_for_it() {
        let (s, mut worker) = fresh().await;
        worker
            .send(b"reserve\r\nlist-tube-used\r\nstats-job 1\r\n")
            .await;
        assert!(worker.silent_for(Duration::from_millis(200)).await);
        let mut producer = s.connect().await;
        step(&mut producer, "put 5 0 10 2\r\nhi\r\n", "INSERTED 1\r\n").await;
        assert_eq!(worker.reply().await, "RESERVED 1 2\r\nhi\r\n");
        assert_eq!(worker.reply().await, "USING default\r\n");
        assert_eq!(field(&worker.reply().await, "state"), "reserved");
    }
}

mod errors {
    use super::*;

    #[tokio::test]
    async fn expected_crlf_consumes_the_body_and_an_id() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "put 0 0 1 1\r\nx\r\n", "INSERTED 1\r\n").await;
        // Three bytes where one plus CRLF were due: the last byte is left over as a line.
        step(
            &mut c,
            "put 0 0 1 1\r\nxyz\r\n",
            "EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n",
        )
        .await;
        step(&mut c, "put 0 0 1 1\r\nx\r\n", "INSERTED 3\r\n").await;
        step(&mut c, "peek 2\r\n", "NOT_FOUND\r\n").await;
        let stats = c.cmd("stats\r\n").await;
        assert_eq!(field(&stats, "cmd-put"), "3");
        assert_eq!(field(&stats, "total-jobs"), "2");
    }

    #[tokio::test]
    async fn job_too_big_discards_the_body_and_changes_nothing() {
        let (_s, mut c) = fresh().await;
        let body = "b".repeat(65_536);
        step(
            &mut c,
            &format!("put 0 0 1 65536\r\n{body}\r\nput 0 0 1 1\r\nx\r\n"),
            "JOB_TOO_BIG\r\nINSERTED 1\r\n",
        )
        .await;
        let body = "b".repeat(65_535);
        step(
            &mut c,
            &format!("put 0 0 1 65535\r\n{body}\r\n"),
            "INSERTED 2\r\n",
        )
        .await;
        // The size is checked before trailing text on the line.
        let body = "b".repeat(70_000);
        step(
            &mut c,
            &format!("put 0 0 1 70000 junk\r\n{body}\r\n"),
            "JOB_TOO_BIG\r\n",
        )
        .await;
        let stats = c.cmd("stats\r\n").await;
        assert_eq!(field(&stats, "current-jobs-ready"), "2");
        assert_eq!(field(&stats, "cmd-put"), "4");
    }

    #[tokio::test]
    async fn an_enormous_announced_body_is_refused_without_waiting_for_it() {
        let (_s, mut c) = fresh().await;
        // Beyond u32: a format error, answered at once; no body is expected.
        step(&mut c, "put 0 0 1 1000000000000\r\n", "BAD_FORMAT\r\n").await;
        // Within u32 but over the limit: the body is skipped as it streams in. Send part of
        // it, check nothing is answered yet, then the rest.
        c.send(b"put 0 0 1 3000000\r\n").await;
        let chunk = vec![b'z'; 1_000_000];
        c.send(&chunk).await;
        c.send(&chunk).await;
        assert!(c.silent_for(Duration::from_millis(100)).await);
        c.send(&chunk).await;
        step(
            &mut c,
            "\r\nlist-tube-used\r\n",
            "JOB_TOO_BIG\r\nUSING default\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn a_malformed_put_header_leaves_its_body_to_be_read_as_commands() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 0 0 1 1 junk\r\nx\r\n",
            "BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
        )
        .await;
        step(
            &mut c,
            "put 0 0 1\r\nx\r\n",
            "BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
        )
        .await;
        step(&mut c, "peek 1\r\n", "NOT_FOUND\r\n").await;
        // Like beanstalkd, only the header with trailing text counts as a put.
        let stats = c.cmd("stats\r\n").await;
        assert_eq!(field(&stats, "cmd-put"), "1");
        assert_eq!(field(&stats, "current-producers"), "0");
    }

    #[tokio::test]
    async fn not_found_for_jobs_that_do_not_exist_or_are_not_yours() {
        let (s, mut a) = fresh().await;
        let mut b = s.connect().await;
        step(
            &mut a,
            "put 0 0 10 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        for cmd in [
            "delete 1",
            "release 1 0 0",
            "bury 1 0",
            "touch 1",
            "reserve-job 1",
        ] {
            step(&mut b, &format!("{cmd}\r\n"), "NOT_FOUND\r\n").await;
        }
        for cmd in [
            "delete 9",
            "release 9 0 0",
            "bury 9 0",
            "touch 9",
            "peek 9",
            "kick-job 9",
            "stats-job 9",
            "reserve-job 9",
            "stats-tube nosuch",
            "pause-tube nosuch 1",
        ] {
            step(&mut a, &format!("{cmd}\r\n"), "NOT_FOUND\r\n").await;
        }
        step(&mut b, "peek-ready\r\n", "NOT_FOUND\r\n").await;
        step(&mut b, "peek-delayed\r\n", "NOT_FOUND\r\n").await;
        step(&mut b, "peek-buried\r\n", "NOT_FOUND\r\n").await;
        step(&mut a, "kick-job 1\r\n", "NOT_FOUND\r\n").await;
    }

    #[tokio::test]
    async fn ignoring_the_only_watched_tube_is_refused() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "ignore default\r\n", "NOT_IGNORED\r\n").await;
        step(&mut c, "ignore foo\r\n", "WATCHING 1\r\n").await;
        step(
            &mut c,
            "watch foo\r\nignore default\r\n",
            "WATCHING 2\r\nWATCHING 1\r\n",
        )
        .await;
        step(&mut c, "ignore foo\r\n", "NOT_IGNORED\r\n").await;
    }
}

mod lifecycle {
    use super::*;

    #[tokio::test]
    async fn ready_jobs_come_out_by_priority_then_id() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 5 0 10 1\r\na\r\nput 1 0 10 1\r\nb\r\nput 5 0 10 1\r\nc\r\nput 4294967295 0 10 1\r\nd\r\nput 0 0 10 1\r\ne\r\n",
            "INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\n",
        )
        .await;
        step(&mut c, "peek-ready\r\n", "FOUND 5 1\r\ne\r\n").await;
        for (id, body) in [(5, "e"), (2, "b"), (1, "a"), (3, "c"), (4, "d")] {
            step(
                &mut c,
                "reserve\r\n",
                &format!("RESERVED {id} 1\r\n{body}\r\n"),
            )
            .await;
        }
        step(&mut c, "reserve-with-timeout 0\r\n", "TIMED_OUT\r\n").await;
    }

    /// protocol.md §3.3 and §6 (j): the id is taken when the body is complete, so a whole
    /// put that overtakes another connection's half-sent body gets the lower id.
    #[tokio::test]
    async fn a_put_gets_its_id_when_its_body_is_complete() {
        let (s, mut a) = fresh().await;
        let mut b = s.connect().await;
        a.send(b"put 5 0 10 5\r\nfi").await;
        step(&mut b, "put 5 0 10 5\r\nwhole\r\n", "INSERTED 1\r\n").await;
        step(&mut a, "rst\r\n", "INSERTED 2\r\n").await;
        step(&mut b, "reserve\r\n", "RESERVED 1 5\r\nwhole\r\n").await;
        step(&mut b, "reserve\r\n", "RESERVED 2 5\r\nfirst\r\n").await;
    }

    #[tokio::test]
    async fn delayed_jobs_become_ready_when_their_delay_passes() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "put 0 1 10 1\r\nd\r\n", "INSERTED 1\r\n").await;
        step(&mut c, "peek-delayed\r\n", "FOUND 1 1\r\nd\r\n").await;
        step(&mut c, "peek-ready\r\n", "NOT_FOUND\r\n").await;
        step(&mut c, "reserve-with-timeout 0\r\n", "TIMED_OUT\r\n").await;
        assert_eq!(field(&c.cmd("stats-job 1\r\n").await, "state"), "delayed");
        // A blocked reserve is woken by the delay ending.
        step(
            &mut c,
            "reserve-with-timeout 5\r\n",
            "RESERVED 1 1\r\nd\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn ttr_zero_is_raised_to_one_second_and_expiry_returns_the_job() {
        let (s, mut a) = fresh().await;
        step(
            &mut a,
            "put 0 0 0 1\r\nt\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nt\r\n",
        )
        .await;
        assert_eq!(field(&a.cmd("stats-job 1\r\n").await, "ttr"), "1");
        // Another worker blocks and gets the job once the first one's TTR runs out.
        let mut b = s.connect().await;
        step(
            &mut b,
            "reserve-with-timeout 5\r\n",
            "RESERVED 1 1\r\nt\r\n",
        )
        .await;
        let stats = b.cmd("stats-job 1\r\n").await;
        assert_eq!(field(&stats, "timeouts"), "1");
        assert_eq!(field(&stats, "reserves"), "2");
        assert_eq!(field(&b.cmd("stats\r\n").await, "job-timeouts"), "1");
        // The first worker no longer holds it.
        step(&mut a, "delete 1\r\n", "NOT_FOUND\r\n").await;
        step(&mut b, "delete 1\r\n", "DELETED\r\n").await;
    }

    #[tokio::test]
    async fn deadline_soon_when_a_reservation_is_within_its_safety_margin() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 0 0 1 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        // TTR 1 s is inside the 1 s margin at once; nothing else is ready.
        step(&mut c, "reserve\r\n", "DEADLINE_SOON\r\n").await;
        step(&mut c, "reserve-with-timeout 10\r\n", "DEADLINE_SOON\r\n").await;
        // With another job ready, reserve hands it out instead.
        step(
            &mut c,
            "put 0 0 10 1\r\ny\r\nreserve\r\n",
            "INSERTED 2\r\nRESERVED 2 1\r\ny\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn a_blocked_reserve_answers_deadline_soon_when_its_margin_arrives() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 0 0 2 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        c.send(b"reserve\r\n").await;
        assert!(c.silent_for(Duration::from_millis(300)).await);
        assert_eq!(c.reply().await, "DEADLINE_SOON\r\n");
    }

    #[tokio::test]
    async fn touch_extends_a_reservation() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 0 0 2 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        for _ in 0..3 {
            assert!(c.silent_for(Duration::from_millis(700)).await);
            step(&mut c, "touch 1\r\n", "TOUCHED\r\n").await;
        }
        // 2.1 s after reserving, the job is still ours thanks to the touches.
        let stats = c.cmd("stats-job 1\r\n").await;
        assert_eq!(field(&stats, "state"), "reserved");
        assert_eq!(field(&stats, "timeouts"), "0");
    }

    #[tokio::test]
    async fn release_bury_kick_and_their_counters() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 9 0 10 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        step(&mut c, "release 1 3 0\r\n", "RELEASED\r\n").await;
        step(&mut c, "reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
        step(&mut c, "bury 1 7\r\n", "BURIED\r\n").await;
        step(&mut c, "peek-buried\r\n", "FOUND 1 1\r\nx\r\n").await;
        step(&mut c, "reserve-with-timeout 0\r\n", "TIMED_OUT\r\n").await;
        step(&mut c, "kick 5\r\n", "KICKED 1\r\n").await;
        step(&mut c, "reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
        step(&mut c, "release 1 2 100\r\n", "RELEASED\r\n").await;
        step(&mut c, "kick-job 1\r\n", "KICKED\r\n").await;
        let s = c.cmd("stats-job 1\r\n").await;
        assert_eq!(
            ["state", "pri", "delay", "reserves", "releases", "buries", "kicks"]
                .map(|k| field(&s, k)),
            ["ready", "2", "100", "3", "2", "1", "2"].map(String::from)
        );
    }

    #[tokio::test]
    async fn kick_takes_buried_jobs_first_and_delayed_jobs_otherwise() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 0 100 10 1\r\na\r\nput 0 200 10 1\r\nb\r\nput 0 0 10 1\r\nc\r\nreserve\r\n",
            "INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nRESERVED 3 1\r\nc\r\n",
        )
        .await;
        step(&mut c, "bury 3 0\r\n", "BURIED\r\n").await;
        step(&mut c, "kick 10\r\n", "KICKED 1\r\n").await;
        step(&mut c, "kick 1\r\n", "KICKED 1\r\n").await;
        assert_eq!(field(&c.cmd("stats-job 1\r\n").await, "state"), "ready");
        assert_eq!(field(&c.cmd("stats-job 2\r\n").await, "state"), "delayed");
        // kick works on the used tube only.
        step(
            &mut c,
            "use other\r\nkick 10\r\n",
            "USING other\r\nKICKED 0\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn reserve_job_takes_a_ready_delayed_or_buried_job_from_any_tube() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "use t\r\nput 0 100 10 1\r\nd\r\n",
            "USING t\r\nINSERTED 1\r\n",
        )
        .await;
        step(&mut c, "reserve-job 1\r\n", "RESERVED 1 1\r\nd\r\n").await;
        step(&mut c, "reserve-job 1\r\n", "NOT_FOUND\r\n").await;
        step(
            &mut c,
            "bury 1 0\r\nreserve-job 1\r\n",
            "BURIED\r\nRESERVED 1 1\r\nd\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn a_disconnect_returns_reserved_jobs_at_once() {
        let (s, mut a) = fresh().await;
        step(
            &mut a,
            "put 0 0 100 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        let mut b = s.connect().await;
        b.send(b"reserve\r\n").await;
        assert!(b.silent_for(Duration::from_millis(100)).await);
        a.close().await;
        // Well within the 100 s TTR.
        assert_eq!(b.reply().await, "RESERVED 1 1\r\nx\r\n");
        assert_eq!(field(&b.cmd("stats-job 1\r\n").await, "timeouts"), "0");
    }

    #[tokio::test]
    async fn a_hang_up_while_blocked_returns_the_jobs_held() {
        let (s, mut a) = fresh().await;
        step(
            &mut a,
            "put 0 0 100 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        a.send(b"reserve\r\n").await;
        assert!(a.silent_for(Duration::from_millis(100)).await);
        // Half-close: like beanstalkd, the blocked reserve answers TIMED_OUT and the
        // connection closes.
        a.shutdown_write().await;
        assert_eq!(a.reply().await, "TIMED_OUT\r\n");
        let mut b = s.connect().await;
        step(
            &mut b,
            "reserve-with-timeout 5\r\n",
            "RESERVED 1 1\r\nx\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn a_blocked_reserve_is_woken_by_release_and_by_kick() {
        let (s, mut a) = fresh().await;
        step(
            &mut a,
            "put 0 0 100 1\r\nx\r\nreserve\r\n",
            "INSERTED 1\r\nRESERVED 1 1\r\nx\r\n",
        )
        .await;
        let mut b = s.connect().await;
        b.send(b"reserve\r\n").await;
        wait_for_waiting(&mut a, 1).await;
        step(&mut a, "release 1 0 0\r\n", "RELEASED\r\n").await;
        assert_eq!(b.reply().await, "RESERVED 1 1\r\nx\r\n");
        step(&mut b, "bury 1 0\r\n", "BURIED\r\n").await;
        b.send(b"reserve\r\n").await;
        wait_for_waiting(&mut a, 1).await;
        step(&mut a, "kick 1\r\n", "KICKED 1\r\n").await;
        assert_eq!(b.reply().await, "RESERVED 1 1\r\nx\r\n");
        step(&mut b, "release 1 0 100\r\n", "RELEASED\r\n").await;
        b.send(b"reserve\r\n").await;
        wait_for_waiting(&mut a, 1).await;
        step(&mut a, "kick-job 1\r\n", "KICKED\r\n").await;
        assert_eq!(b.reply().await, "RESERVED 1 1\r\nx\r\n");
    }

    #[tokio::test]
    async fn waiting_workers_are_served_in_arrival_order() {
        let (s, mut producer) = fresh().await;
        let mut workers = Vec::new();
        for n in 1..=4 {
            let mut w = s.connect().await;
            w.send(b"reserve\r\n").await;
            // Each is blocked before the next arrives.
            wait_for_waiting(&mut producer, n).await;
            workers.push(w);
        }
        for i in 1..=4 {
            step(
                &mut producer,
                &format!("put 0 0 10 1\r\n{i}\r\n"),
                &format!("INSERTED {i}\r\n"),
            )
            .await;
        }
        for (i, w) in workers.iter_mut().enumerate() {
            let id = i + 1;
            assert_eq!(w.reply().await, format!("RESERVED {id} 1\r\n{id}\r\n"));
        }
    }

    #[tokio::test]
    async fn a_paused_tube_hands_out_nothing_until_the_pause_ends() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "put 0 0 10 1\r\nx\r\npause-tube default 1\r\n",
            "INSERTED 1\r\nPAUSED\r\n",
        )
        .await;
        step(&mut c, "reserve-with-timeout 0\r\n", "TIMED_OUT\r\n").await;
        let t = field(&c.cmd("stats-tube default\r\n").await, "pause");
        assert_eq!(t, "1");
        step(
            &mut c,
            "reserve-with-timeout 5\r\n",
            "RESERVED 1 1\r\nx\r\n",
        )
        .await;
        // A zero pause lasts an instant.
        step(
            &mut c,
            "release 1 0 0\r\npause-tube default 0\r\n",
            "RELEASED\r\nPAUSED\r\n",
        )
        .await;
        step(
            &mut c,
            "reserve-with-timeout 5\r\n",
            "RESERVED 1 1\r\nx\r\n",
        )
        .await;
    }

    #[tokio::test]
    async fn tubes_live_while_used_watched_or_holding_jobs() {
        let (s, mut c) = fresh().await;
        let mut other = s.connect().await;
        step(&mut c, "use a\r\nwatch b\r\n", "USING a\r\nWATCHING 2\r\n").await;
        assert_eq!(
            larder::client::parse_yaml_list(c.cmd("list-tubes\r\n").await.as_bytes()),
            ["default", "a", "b"]
        );
        step(
            &mut c,
            "put 0 0 10 1\r\nx\r\nuse default\r\nignore b\r\n",
            "INSERTED 1\r\nUSING default\r\nWATCHING 1\r\n",
        )
        .await;
        // a holds a job, b is gone; default is always there.
        step(&mut other, "stats-tube b\r\n", "NOT_FOUND\r\n").await;
        assert_eq!(
            larder::client::parse_yaml_list(other.cmd("list-tubes\r\n").await.as_bytes()),
            ["default", "a"]
        );
        step(
            &mut other,
            "delete 1\r\nstats-tube a\r\n",
            "DELETED\r\nNOT_FOUND\r\n",
        )
        .await;
        step(
            &mut other,
            "watch c\r\nwatch d\r\nwatch e\r\nignore default\r\n",
            "WATCHING 2\r\nWATCHING 3\r\nWATCHING 4\r\nWATCHING 3\r\n",
        )
        .await;
        // The last watched tube took the ignored one's place, as in beanstalkd.
        assert_eq!(
            larder::client::parse_yaml_list(other.cmd("list-tubes-watched\r\n").await.as_bytes()),
            ["e", "c", "d"]
        );
    }
}

mod yaml {
    use super::*;

    #[tokio::test]
    async fn stats_job_has_every_field_in_order() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "use jobs\r\nput 3 0 0 1\r\nx\r\n",
            "USING jobs\r\nINSERTED 1\r\n",
        )
        .await;
        // Exactly beanstalkd's fields, unless the connection asks for larder's.
        let plain = "---\nid: 1\ntube: jobs\nstate: ready\npri: 3\nage: 0\ndelay: 0\nttr: 1\n\
                     time-left: 0\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\n\
                     kicks: 0\n";
        step(
            &mut c,
            "stats-job 1\r\n",
            &format!("OK {}\r\n{plain}\r\n", plain.len()),
        )
        .await;
        step(&mut c, "extended-stats\r\n", "EXTENDED\r\n").await;
        let expect = format!(
            "{plain}attempts: 0\nmax-attempts: 0\nlast-error: \"\"\nbury-reason: none\n\
             buried-at: 0\n"
        );
        step(
            &mut c,
            "stats-job 1\r\n",
            &format!("OK {}\r\n{expect}\r\n", expect.len()),
        )
        .await;
    }

    #[tokio::test]
    async fn stats_tube_has_every_field_in_order() {
        let (_s, mut c) = fresh().await;
        step(
            &mut c,
            "use t\r\nput 1 0 10 1\r\nx\r\nput 2000 0 10 1\r\ny\r\nput 0 50 10 1\r\nz\r\n",
            "USING t\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n",
        )
        .await;
        let plain = "---\nname: t\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 2\n\
                     current-jobs-reserved: 0\ncurrent-jobs-delayed: 1\ncurrent-jobs-buried: 0\n\
                     total-jobs: 3\ncurrent-using: 1\ncurrent-watching: 0\ncurrent-waiting: 0\n\
                     cmd-delete: 0\ncmd-pause-tube: 0\npause: 0\npause-time-left: 0\n";
        step(
            &mut c,
            "stats-tube t\r\n",
            &format!("OK {}\r\n{plain}\r\n", plain.len()),
        )
        .await;
        step(&mut c, "extended-stats\r\n", "EXTENDED\r\n").await;
        let expect = format!(
            "{plain}max-attempts: 0\nretry-delay: 0\nretry-backoff: 2\nretry-max: 0\n\
             retry-jitter: 0\nmax-tube-jobs: 0\nmax-tube-bytes: 0\ncurrent-bytes: 3\n\
             refused-max-tube-jobs: 0\nrefused-max-tube-bytes: 0\n\
             dead-letters-buried: 0\ndead-letters-max-attempts: 0\nown-settings: \"\"\n"
        );
        step(
            &mut c,
            "stats-tube t\r\n",
            &format!("OK {}\r\n{expect}\r\n", expect.len()),
        )
        .await;
    }

    /// beanstalkd 1.12's `stats` fields, in its order.
    const BEANSTALKD_STATS: &str = "current-jobs-urgent current-jobs-ready \
        current-jobs-reserved current-jobs-delayed current-jobs-buried cmd-put cmd-peek \
        cmd-peek-ready cmd-peek-delayed cmd-peek-buried cmd-reserve cmd-reserve-with-timeout \
        cmd-delete cmd-release cmd-use cmd-watch cmd-ignore cmd-bury cmd-kick cmd-touch \
        cmd-stats cmd-stats-job cmd-stats-tube cmd-list-tubes cmd-list-tube-used \
        cmd-list-tubes-watched cmd-pause-tube job-timeouts total-jobs max-job-size \
        current-tubes current-connections current-producers current-workers \
        current-waiting total-connections pid version rusage-utime rusage-stime uptime \
        binlog-oldest-index binlog-current-index binlog-records-migrated \
        binlog-records-written binlog-max-size draining id hostname os platform";

    fn keys(reply: &str) -> Vec<String> {
        fields(reply).into_iter().map(|(k, _)| k).collect()
    }

    /// Client libraries compare `stats` with beanstalkd's whole (a Python client's
    /// documentation test prints it sorted), so larder's fields need `extended-stats`.
    #[tokio::test]
    async fn plain_stats_is_exactly_beanstalkds_field_set() {
        let (_s, mut c) = fresh().await;
        let st = c.cmd("stats\r\n").await;
        assert_eq!(
            keys(&st),
            BEANSTALKD_STATS.split_whitespace().collect::<Vec<_>>()
        );
        assert!(st.ends_with("\n\r\n"), "{st:?}");
    }

    #[tokio::test]
    async fn extended_stats_has_every_beanstalkd_field_in_order_then_larders() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "extended-stats\r\n", "EXTENDED\r\n").await;
        let keys = keys(&c.cmd("stats\r\n").await);
        let expect = "current-jobs-urgent current-jobs-ready current-jobs-reserved \
            current-jobs-delayed current-jobs-buried cmd-put cmd-peek cmd-peek-ready \
            cmd-peek-delayed cmd-peek-buried cmd-reserve cmd-reserve-with-timeout cmd-delete \
            cmd-release cmd-use cmd-watch cmd-ignore cmd-bury cmd-kick cmd-touch cmd-stats \
            cmd-stats-job cmd-stats-tube cmd-list-tubes cmd-list-tube-used \
            cmd-list-tubes-watched cmd-pause-tube job-timeouts total-jobs max-job-size \
            current-tubes current-connections current-producers current-workers \
            current-waiting total-connections pid version rusage-utime rusage-stime uptime \
            binlog-oldest-index binlog-current-index binlog-records-migrated \
            binlog-records-written binlog-max-size draining id hostname os platform \
            log-fsync log-segments log-oldest-segment log-current-segment log-records-written \
            log-fsyncs log-records-per-fsync log-bytes log-live-bytes log-segments-removed \
            log-jobs-compacted max-jobs max-bytes max-tube-jobs max-tube-bytes \
            max-connections max-output-per-connection output-stall-timeout min-free-disk \
            max-tubes max-watches-per-connection \
            current-jobs current-bytes current-free-disk refused-max-jobs refused-max-bytes \
            refused-max-tube-jobs refused-max-tube-bytes refused-min-free-disk \
            refused-max-connections refused-log-full refused-open-files refused-max-tubes \
            refused-max-watches-per-connection stalled-output-disconnects \
            command-timeout-disconnects \
            dead-letters-buried dead-letters-max-attempts \
            total-attempts total-retries-delayed total-dead-lettered cmd-config-tube cmd-fail \
            cmd-list-dead cmd-kick-dead cmd-delete-dead cmd-extended-stats";
        assert_eq!(keys, expect.split_whitespace().collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn stats_reports_the_write_ahead_log() {
        let (_s, mut c) = fresh().await;
        step(&mut c, "extended-stats\r\n", "EXTENDED\r\n").await;
        for i in 1..=3 {
            step(
                &mut c,
                "put 0 0 10 1\r\nx\r\n",
                &format!("INSERTED {i}\r\n"),
            )
            .await;
        }
        let st = c.cmd("stats\r\n").await;
        assert_eq!(field(&st, "log-fsync"), "always");
        assert_eq!(field(&st, "log-segments"), "1");
        assert_eq!(field(&st, "log-current-segment"), "1");
        assert_eq!(field(&st, "log-records-written"), "3");
        let fsyncs: u64 = field(&st, "log-fsyncs").parse().expect("number");
        assert!(
            (1..=3).contains(&fsyncs),
            "{fsyncs} fsyncs for 3 sequential puts"
        );
        // beanstalkd's binlog fields stay as a server without -b reports them.
        assert_eq!(field(&st, "binlog-records-written"), "0");
    }

    #[tokio::test]
    async fn stats_counts_connections_producers_workers_and_waiters() {
        let (s, mut c) = fresh().await;
        let mut w = s.connect().await;
        w.send(b"reserve\r\n").await;
        assert!(w.silent_for(Duration::from_millis(100)).await);
        step(&mut c, "put 0 50 10 1\r\nx\r\n", "INSERTED 1\r\n").await;
        let st = c.cmd("stats\r\n").await;
        let got = [
            "current-connections",
            "current-producers",
            "current-workers",
            "current-waiting",
            "total-jobs",
            "current-jobs-delayed",
            "cmd-put",
            "cmd-reserve",
            "cmd-stats",
            "max-job-size",
            "draining",
        ]
        .map(|k| field(&st, k));
        assert_eq!(
            got,
            ["2", "1", "1", "1", "1", "1", "1", "1", "1", "65535", "false"].map(String::from)
        );
    }
}
