//! One client connection: read and decode commands ([`super::input`]), run them in order
//! through the broker, and write the replies once they are released ([`super::outbox`]).
//!
//! Replies are buffered and written when no further command is already waiting in the
//! input, so pipelined commands are answered in one write. Commands that arrive while a
//! reserve is blocked are held and run after it answers, as beanstalkd does; reading on
//! while blocked is also how a hang-up is noticed at once.
//!
//! What a connection holds is bounded ([`ConnectionLimits`]):
//! - input: commands read ahead (while a reserve blocks, or waiting to run in one batch)
//!   stop being read once they hold `--max-input-per-connection` bytes or
//!   [`MAX_PENDING`](super::input::MAX_PENDING) commands; the decoder's own buffer holds at
//!   most one command line and one body;
//! - output: once the replies waiting for a client reach `--max-output-per-connection`, no
//!   further command of that client runs and none is read until they are written, so a
//!   client that does not read its replies is held back by TCP flow control instead of
//!   growing the server's memory. A write that makes no progress for
//!   `--output-stall-timeout` ends the connection;
//! - buffers grown by a burst are given back once the connection is idle again;
//! - time: a command whose first byte arrived more than `--command-timeout` ago and that is
//!   still incomplete ends the connection (a client blocked in `reserve` is waiting, not
//!   sending, and is never timed out).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::auth::Gate;
use super::held::Held;
use super::input::{command_done, shrink_input, ReadAhead, Timed, READ_CAPACITY};
use super::outbox::Outbox;
use super::Broker;
use crate::config::ConnectionSettings;
use crate::engine::{Limits, Outcome};
use crate::protocol::{CommandDecoder, Reply};

/// Buffered reply bytes that force a write even while more commands are waiting.
const FLUSH_AT: usize = 64 * 1024;

/// How much reply output one connection may have waiting, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct OutputLimit {
    /// Waiting reply bytes at which commands stop running until they are written. One
    /// reply is never split, so the buffer can exceed this by at most one reply.
    pub max_bytes: usize,
    /// How long a write may make no progress before the connection is closed.
    pub stall_timeout: Option<Duration>,
}

impl OutputLimit {
    /// The limit `limits` configures (0 means none).
    pub fn new(limits: &Limits) -> OutputLimit {
        OutputLimit {
            max_bytes: no_limit_if_zero(limits.max_output_per_connection),
            stall_timeout: (limits.output_stall_timeout > 0)
                .then(|| Duration::from_secs(limits.output_stall_timeout)),
        }
    }
}

/// `n` as a size, with 0 meaning no limit.
fn no_limit_if_zero(n: u64) -> usize {
    if n == 0 {
        usize::MAX
    } else {
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// Everything one connection is bounded by.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Reply output.
    pub output: OutputLimit,
    /// Bytes of decoded commands held before they run (see [`super::input::item_size`]).
    pub max_input: usize,
    /// Longest time from a command's first byte to its last.
    pub command_timeout: Option<Duration>,
}

impl ConnectionLimits {
    /// The bounds `limits` and `settings` configure.
    pub fn new(limits: &Limits, settings: &ConnectionSettings) -> ConnectionLimits {
        ConnectionLimits {
            output: OutputLimit::new(limits),
            max_input: no_limit_if_zero(settings.max_input_per_connection),
            command_timeout: (settings.command_timeout > 0)
                .then(|| Duration::from_secs(settings.command_timeout)),
        }
    }
}

/// Serves one connection until the client leaves, sends `quit`, or the server shuts down.
#[cfg(test)]
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    broker: Arc<Broker>,
    max_job_size: u32,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    serve_with(reader, writer, broker, max_job_size, limits, shutdown, None).await
}

/// [`serve`], with every command passing `gate` first when authentication is on.
pub async fn serve_with<R, W>(
    reader: R,
    mut writer: W,
    broker: Arc<Broker>,
    max_job_size: u32,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    mut gate: Option<Gate>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = limits.output;
    let (sid, mut inbox) = broker.open_session();
    let reader = Timed {
        inner: reader,
        first_byte: None,
    };
    let mut frames =
        FramedRead::with_capacity(reader, CommandDecoder::new(max_job_size), READ_CAPACITY);
    // Replies waiting until the log records they depend on are durable.
    let mut out = Outbox::new(limit.stall_timeout);
    let flush_at = FLUSH_AT.min(limit.max_bytes);
    let mut pending = ReadAhead {
        items: VecDeque::new(),
        bytes: 0,
        since: None,
    };

    'conn: loop {
        // Gather what is already decodable, without waiting.
        while !pending.full(limits.max_input) {
            match frames.next().now_or_never() {
                Some(Some(Ok(item))) => {
                    command_done(&mut frames);
                    pending.push(item);
                }
                Some(Some(Err(_)) | None) if pending.items.is_empty() => break 'conn,
                Some(Some(Err(_)) | None) => break,
                None => break,
            }
        }
        if pending.items.is_empty() {
            if out.write(&mut writer, &broker).await.is_err() {
                break;
            }
            shrink_input(&mut frames);
            // Until the command now arriving is due; without one, check again after a
            // whole timeout (a command that starts meanwhile is then given its full time).
            let due = limits
                .command_timeout
                .map(|limit| frames.get_ref().first_byte.unwrap_or_else(Instant::now) + limit);
            tokio::select! {
                item = frames.next() => match item {
                    Some(Ok(item)) => {
                        command_done(&mut frames);
                        pending.push(item);
                    }
                    _ => break,
                },
                _ = sleep_until(due) => {
                    let started = frames.get_ref().first_byte;
                    if let (Some(started), Some(limit)) = (started, limits.command_timeout) {
                        if started.elapsed() >= limit {
                            broker.with_engine(|e| e.count_command_timeout());
                            tracing::debug!(
                                seconds = limit.as_secs(),
                                "disconnecting a client that did not finish its command in time"
                            );
                            break;
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
            continue;
        }
        broker.wait_for_log_room().await;
        let arrived = pending.since;
        let mut batch = match &mut gate {
            None => std::mem::take(&mut pending.items),
            Some(gate) => {
                let mut batch = VecDeque::new();
                if !gate
                    .screen(&mut pending.items, &mut batch, |r| out.add(Held::ready(r)))
                    .await
                {
                    break;
                }
                batch
            }
        };
        let puts_before = out.puts();
        let stop = broker.execute(sid, &mut batch, out.replies(), limit.max_bytes);
        out.puts_arrived(puts_before, arrived);
        // What the batch did not run goes back in front of what the gate left.
        if pending.items.is_empty() {
            pending.items = batch;
        } else {
            while let Some(item) = batch.pop_back() {
                pending.items.push_front(item);
            }
        }
        pending.recount();
        match stop {
            None | Some(Outcome::Reply(_)) => {}
            Some(Outcome::Close) => break,
            Some(Outcome::Blocked) => {
                if out.write(&mut writer, &broker).await.is_err() {
                    break;
                }
                let mut hung_up = false;
                let blocked_at = Instant::now();
                let reply = loop {
                    tokio::select! {
                        reply = inbox.recv() => break reply,
                        // Past the input bound, nothing more is read (a hang-up is then
                        // noticed when the reply is written).
                        item = frames.next(), if !pending.full(limits.max_input) => match item {
                            Some(Ok(item)) => {
                                command_done(&mut frames);
                                pending.push(item);
                            }
                            // The client hung up: like beanstalkd, answer TIMED_OUT (it may
                            // only have half-closed) and close, returning its jobs at once.
                            _ => {
                                hung_up = true;
                                break broker
                                    .cancel_wait(sid)
                                    .or_else(|| inbox.try_recv().ok());
                            }
                        },
                        _ = shutdown.changed() => break None,
                    }
                };
                match reply {
                    Some(reply) => {
                        if reply.measure(|(r, _)| matches!(r, Reply::Reserved { .. })) {
                            broker
                                .timings()
                                .reserve_wait
                                .observe_duration(blocked_at.elapsed());
                        }
                        out.add_wakeup(reply);
                    }
                    None => break,
                }
                if hung_up {
                    break;
                }
                // Time spent waiting for the reserve does not count against a command
                // that started to arrive meanwhile.
                if frames.get_ref().first_byte.is_some() {
                    frames.get_mut().first_byte = Some(Instant::now());
                }
            }
        }
        if out.len() >= flush_at && out.write(&mut writer, &broker).await.is_err() {
            break;
        }
    }
    let _ = out.write(&mut writer, &broker).await;
    broker.close_session(sid);
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::engine::{Engine, EngineConfig, ProcessInfo};
    use crate::protocol::{Command, Reply};
    use crate::server::Clock;

    /// A broker holding job 1 with a 60,000-byte body and 300 more tubes with long names, and no
    /// log writer (the tests run only commands that change nothing durable).
    fn broker() -> Arc<Broker> {
        let clock = Clock::new();
        let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), clock.now());
        let sid = engine.open_session();
        let put = Command::Put {
            pri: 0,
            delay: 0,
            ttr: 60,
            body: vec![b'x'; 60_000].into(),
        };
        engine.apply(sid, put, clock.now());
        // 300 tubes with 200-byte names, each kept alive by a job: a `list-tubes` reply of
        // 4 + 10 + 300 * 203 bytes (`---\n`, `- default\n`, then `- <name>\n` each).
        for i in 0..300 {
            let name = format!("{i:0>200}");
            let tube = crate::protocol::TubeName::new(name.as_bytes()).expect("name");
            engine.apply(sid, Command::Use(tube), clock.now());
            let put = Command::Put {
                pri: 0,
                delay: 0,
                ttr: 60,
                body: b"x"[..].into(),
            };
            engine.apply(sid, put, clock.now());
        }
        engine.close_session(sid, clock.now());
        engine.discard_changes();
        Broker::unwritten(engine, clock, 0)
    }

    /// How many `kind` commands (a `cmd-*` counter of `stats`) the engine has run.
    fn count(broker: &Broker, kind: &str) -> u64 {
        broker.with_engine(|e| {
            let sid = e.open_session();
            let reply = e.apply(sid, Command::Stats, Timestamp(0));
            e.close_session(sid, Timestamp(0));
            let Outcome::Reply(Reply::Ok(yaml)) = reply else {
                panic!("stats gave {reply:?}");
            };
            crate::client::parse_yaml_map(&yaml)
                .into_iter()
                .find(|(k, _)| k == &format!("cmd-{kind}"))
                .and_then(|(_, v)| v.parse().ok())
                .expect("counter")
        })
    }

    use crate::engine::Timestamp;

    #[tokio::test]
    async fn commands_stop_running_once_unread_output_reaches_the_limit() {
        let broker = broker();
        // A pipe that holds 1 kB: the client's replies back up at once.
        let (client, server) = tokio::io::duplex(1024);
        let (sr, sw) = tokio::io::split(server);
        let (_stop, stop_rx) = watch::channel(false);
        let limit = ConnectionLimits {
            output: OutputLimit {
                max_bytes: 64 << 10,
                stall_timeout: Some(Duration::from_millis(300)),
            },
            max_input: usize::MAX,
            command_timeout: None,
        };
        let conn = tokio::spawn(serve(sr, sw, broker.clone(), 65_535, limit, stop_rx));
        let (mut cr, mut cw) = tokio::io::split(client);
        // 64 requests for 60 kB each, all readable at once; the client reads nothing.
        cw.write_all(&b"peek 1\r\n".repeat(64)).await.expect("send");
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the stalled connection was not closed")
            .expect("connection task");
        // The first reply fits under 64 kB, the second reaches it: nothing more ran.
        assert_eq!(count(&broker, "peek"), 2);
        assert_eq!(broker.with_engine(|e| e.session_count()), 0);
        let mut got = Vec::new();
        let _ = cr.read_to_end(&mut got).await;
        assert!(
            got.starts_with(b"FOUND 1 60000\r\n"),
            "{:?}",
            &got[..20.min(got.len())]
        );
        assert!(got.len() < 2 * 60_000, "{} bytes arrived", got.len());
    }

    /// The value of `stats` field `name` (larder's fields included).
    fn stat(broker: &Broker, name: &str) -> String {
        broker.with_engine(|e| {
            let sid = e.open_session();
            e.apply(sid, Command::ExtendedStats, Timestamp(0));
            let reply = e.apply(sid, Command::Stats, Timestamp(0));
            e.close_session(sid, Timestamp(0));
            let Outcome::Reply(Reply::Ok(yaml)) = reply else {
                panic!("stats gave {reply:?}");
            };
            crate::client::parse_yaml_map(&yaml)
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no {name} in stats"))
        })
    }

    fn limits(max_input: usize, command_timeout: Option<Duration>) -> ConnectionLimits {
        ConnectionLimits {
            output: OutputLimit {
                max_bytes: usize::MAX,
                stall_timeout: None,
            },
            max_input,
            command_timeout,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_left_unfinished_past_the_timeout_ends_the_connection() {
        let broker = broker();
        let ready = stat(&broker, "current-jobs-ready");
        let (client, server) = tokio::io::duplex(64 << 10);
        let (sr, sw) = tokio::io::split(server);
        let (_stop, stop_rx) = watch::channel(false);
        let limits = limits(usize::MAX, Some(Duration::from_secs(5)));
        let conn = tokio::spawn(serve(sr, sw, broker.clone(), 65_535, limits, stop_rx));
        let (mut cr, mut cw) = tokio::io::split(client);
        let start = Instant::now();
        // A whole command is answered; the next one never gets its last bytes.
        cw.write_all(b"list-tube-used\r\nput 0 0 60 5\r\nhe")
            .await
            .expect("send");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), cr.read_to_end(&mut got))
            .await
            .expect("the connection was not closed")
            .expect("read");
        assert_eq!(got, b"USING default\r\n");
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        conn.await.expect("connection task");
        assert_eq!(stat(&broker, "command-timeout-disconnects"), "1");
        // The half-sent put stored nothing.
        assert_eq!(stat(&broker, "current-jobs-ready"), ready);
        assert_eq!(broker.with_engine(|e| e.session_count()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_waiting_in_reserve_is_never_timed_out() {
        let broker = broker();
        let timers = broker.clone();
        tokio::spawn(async move { timers.run_timers(std::future::pending()).await });
        let (client, server) = tokio::io::duplex(64 << 10);
        let (sr, sw) = tokio::io::split(server);
        let (_stop, stop_rx) = watch::channel(false);
        let limits = limits(usize::MAX, Some(Duration::from_secs(5)));
        tokio::spawn(serve(sr, sw, broker.clone(), 65_535, limits, stop_rx));
        let (mut cr, mut cw) = tokio::io::split(client);
        let start = Instant::now();
        cw.write_all(b"watch other\r\nignore default\r\nreserve-with-timeout 30\r\n")
            .await
            .expect("send");
        let expect = b"WATCHING 2\r\nWATCHING 1\r\nTIMED_OUT\r\n";
        let mut got = vec![0u8; expect.len()];
        cr.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expect);
        assert!(start.elapsed() >= Duration::from_secs(30));
        // Still connected, and serving.
        cw.write_all(b"list-tube-used\r\n").await.expect("send");
        let mut got = vec![0u8; b"USING default\r\n".len()];
        cr.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"USING default\r\n");
        assert_eq!(stat(&broker, "command-timeout-disconnects"), "0");
    }

    #[tokio::test(start_paused = true)]
    async fn commands_behind_a_blocked_reserve_stop_being_read_at_the_input_limit() {
        let broker = broker();
        let (client, server) = tokio::io::duplex(16 << 10);
        let (sr, sw) = tokio::io::split(server);
        let (_stop, stop_rx) = watch::channel(false);
        let limits = limits(4 << 10, None);
        tokio::spawn(serve(sr, sw, broker.clone(), 65_535, limits, stop_rx));
        let (mut cr, mut cw) = tokio::io::split(client);
        cw.write_all(b"watch other\r\nignore default\r\nreserve\r\n")
            .await
            .expect("send");
        let expect = b"WATCHING 2\r\nWATCHING 1\r\n";
        let mut got = vec![0u8; expect.len()];
        cr.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expect);
        // 50 puts of 1,000 bytes behind the blocked reserve (fewer than MAX_PENDING): the
        // server takes about 4 kB of them (and its read buffer and the pipe's 16 kB), then
        // stops reading.
        let mut puts = Vec::new();
        for _ in 0..50 {
            puts.extend_from_slice(b"put 0 0 60 1000\r\n");
            puts.extend_from_slice(&[b'x'; 1000]);
            puts.extend_from_slice(b"\r\n");
        }
        let sent = tokio::time::timeout(Duration::from_secs(3600), cw.write_all(&puts)).await;
        assert!(
            sent.is_err(),
            "the server read every command behind the reserve"
        );
    }

    /// A tube list counts in full against the output limit like a job does: with 64 kB
    /// allowed and 61 kB per `list-tubes`, the second reply reaches the limit and no
    /// further command runs while the client reads nothing.
    #[tokio::test]
    async fn tube_lists_count_in_full_against_the_output_limit() {
        let broker = broker();
        let (client, server) = tokio::io::duplex(1024);
        let (sr, sw) = tokio::io::split(server);
        let (_stop, stop_rx) = watch::channel(false);
        let limit = ConnectionLimits {
            output: OutputLimit {
                max_bytes: 64 << 10,
                stall_timeout: Some(Duration::from_millis(300)),
            },
            max_input: usize::MAX,
            command_timeout: None,
        };
        let conn = tokio::spawn(serve(sr, sw, broker.clone(), 65_535, limit, stop_rx));
        let (mut cr, mut cw) = tokio::io::split(client);
        cw.write_all(&b"list-tubes\r\n".repeat(64))
            .await
            .expect("send");
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the stalled connection was not closed")
            .expect("connection task");
        assert_eq!(count(&broker, "list-tubes"), 2);
        let mut got = Vec::new();
        let _ = cr.read_to_end(&mut got).await;
        assert!(
            got.starts_with(b"OK 60914\r\n---\n- default\n"),
            "{:?}",
            &got[..20.min(got.len())]
        );
    }
}
