//! One client connection: decode, execute in order, reply.
//!
//! Replies are buffered and written when no further command is already waiting in the
//! input, so pipelined commands are answered in one write. Commands that arrive while a
//! reserve is blocked are held (at most [`MAX_PENDING`]) and run after it answers, as
//! beanstalkd does; reading on while blocked is also how a hang-up is noticed at once.
//!
//! Output is bounded ([`OutputLimit`]): once the replies waiting for a client reach
//! `--max-output-per-connection`, no further command of that client runs and none is read
//! until they are written, so a client that does not read its replies is held back by
//! TCP flow control instead of growing the server's memory. A write that makes no progress
//! for `--output-stall-timeout` ends the connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::codec::FramedRead;

use super::Broker;
use crate::engine::{Limits, Outcome};
use crate::protocol::{BodyHole, Command, CommandDecoder, ProtocolError, Reply};

/// Most decoded commands held while a reserve is blocked, or run under one lock.
pub const MAX_PENDING: usize = 64;

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
        let max = limits.max_output_per_connection;
        OutputLimit {
            max_bytes: if max == 0 {
                usize::MAX
            } else {
                usize::try_from(max).unwrap_or(usize::MAX)
            },
            stall_timeout: (limits.output_stall_timeout > 0)
                .then(|| Duration::from_secs(limits.output_stall_timeout)),
        }
    }
}

type Item = Result<Command, ProtocolError>;

/// Serves one connection until the client leaves, sends `quit`, or the server shuts down.
pub async fn serve<R, W>(
    reader: R,
    mut writer: W,
    broker: Arc<Broker>,
    max_job_size: u32,
    limit: OutputLimit,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (sid, mut inbox) = broker.open_session();
    let mut frames = FramedRead::with_capacity(reader, CommandDecoder::new(max_job_size), 8192);
    // Replies waiting to be written, and the log LSN they depend on.
    let mut out = Pending {
        bytes: BytesMut::with_capacity(4096),
        holes: Vec::new(),
        replies: 0,
        lsn: 0,
        stall_timeout: limit.stall_timeout,
    };
    let flush_at = FLUSH_AT.min(limit.max_bytes);
    let mut pending: VecDeque<Item> = VecDeque::new();

    'conn: loop {
        // Gather what is already decodable, without waiting.
        while pending.len() < MAX_PENDING {
            match frames.next().now_or_never() {
                Some(Some(Ok(item))) => pending.push_back(item),
                Some(Some(Err(_)) | None) if pending.is_empty() => break 'conn,
                Some(Some(Err(_)) | None) => break,
                None => break,
            }
        }
        if pending.is_empty() {
            if out.write(&mut writer, &broker).await.is_err() {
                break;
            }
            tokio::select! {
                item = frames.next() => match item {
                    Some(Ok(item)) => pending.push_back(item),
                    _ => break,
                },
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let (stop, lsn) = broker.execute(sid, &mut pending, |reply| {
            out.push(&reply);
            out.bytes.len() < limit.max_bytes
        });
        out.lsn = out.lsn.max(lsn);
        match stop {
            None | Some(Outcome::Reply(_)) => {}
            Some(Outcome::Close) => break,
            Some(Outcome::Blocked) => {
                if out.write(&mut writer, &broker).await.is_err() {
                    break;
                }
                let mut hung_up = false;
                let reply = loop {
                    tokio::select! {
                        reply = inbox.recv() => break reply,
                        item = frames.next(), if pending.len() < MAX_PENDING => match item {
                            Some(Ok(item)) => pending.push_back(item),
                            // The client hung up: like beanstalkd, answer TIMED_OUT (it may
                            // only have half-closed) and close, returning its jobs at once.
                            _ => {
                                hung_up = true;
                                break broker
                                    .cancel_wait(sid)
                                    .map(|r| (r, 0))
                                    .or_else(|| inbox.try_recv().ok());
                            }
                        },
                        _ = shutdown.changed() => break None,
                    }
                };
                match reply {
                    Some((reply, lsn)) => {
                        out.push(&reply);
                        out.lsn = out.lsn.max(lsn);
                    }
                    None => break,
                }
                if hung_up {
                    break;
                }
            }
        }
        if out.bytes.len() >= flush_at && out.write(&mut writer, &broker).await.is_err() {
            break;
        }
    }
    let _ = out.write(&mut writer, &broker).await;
    broker.close_session(sid);
}

/// Encoded replies not yet written, the room left in them for bodies still in the log,
/// and the LSN they depend on.
struct Pending {
    bytes: BytesMut,
    holes: Vec<BodyHole>,
    /// How many replies `bytes` holds.
    replies: usize,
    lsn: u64,
    /// See [`OutputLimit::stall_timeout`].
    stall_timeout: Option<Duration>,
}

impl Pending {
    fn push(&mut self, reply: &Reply) {
        self.replies += 1;
        if let Some(hole) = reply.encode(&mut self.bytes) {
            self.holes.push(hole);
        }
    }

    /// Waits until the replies' changes are durable, reads the bodies they carry, then
    /// writes them. If the log has failed (an I/O error writing or syncing it), every
    /// reply is replaced by `INTERNAL_ERROR`: a client never gets a confirmation the log
    /// cannot back, and from then on every command gets that answer until the server is
    /// restarted. A body that cannot be read ends the connection (its reserved job goes
    /// back to ready).
    async fn write(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        broker: &Broker,
    ) -> std::io::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let replies = std::mem::take(&mut self.replies);
        if broker.durable(self.lsn).await.is_err() {
            self.bytes.clear();
            self.holes.clear();
            for _ in 0..replies {
                self.bytes.extend_from_slice(b"INTERNAL_ERROR\r\n");
            }
        }
        for hole in self.holes.drain(..) {
            let room = self
                .bytes
                .get_mut(hole.at..hole.at + hole.body.len as usize)
                .ok_or_else(|| std::io::Error::other("reply body out of place"))?;
            if let Err(e) = broker.files().read(&hole.body, room).await {
                tracing::error!(
                    segment = hole.body.segment,
                    offset = hole.body.offset,
                    error = %e,
                    "cannot read a job body from the log; closing the connection"
                );
                self.bytes.clear();
                return Err(e);
            }
        }
        let result = self.write_out(writer, broker).await;
        // After a failure the rest is dropped too: the connection is ending.
        self.bytes.clear();
        result
    }

    /// Writes every buffered byte, failing if one write takes no byte for the stall
    /// timeout (the client is not reading).
    async fn write_out(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        broker: &Broker,
    ) -> std::io::Result<()> {
        let mut done = 0;
        while done < self.bytes.len() {
            let write = writer.write(&self.bytes[done..]);
            let n = match self.stall_timeout {
                None => write.await?,
                Some(limit) => match tokio::time::timeout(limit, write).await {
                    Ok(n) => n?,
                    Err(_) => {
                        broker.with_engine(|e| e.count_stalled_output());
                        tracing::warn!(
                            waiting = self.bytes.len() - done,
                            seconds = limit.as_secs(),
                            "disconnecting a client that left its replies unread"
                        );
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                },
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::config::FsyncPolicy;
    use crate::engine::{Engine, EngineConfig, ProcessInfo};
    use crate::protocol::Reply;
    use crate::server::bodies::SegmentFiles;
    use crate::server::journal::Journal;
    use crate::server::Clock;
    use crate::wal::Layout;

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
        let journal = Arc::new(Journal::new(1, Layout::empty(1, 1 << 20)));
        let files = Arc::new(SegmentFiles::new(std::env::temp_dir()));
        Arc::new(Broker::new(
            engine,
            clock,
            journal,
            files,
            0,
            FsyncPolicy::Never,
        ))
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
        let limit = OutputLimit {
            max_bytes: 64 << 10,
            stall_timeout: Some(Duration::from_millis(300)),
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

    /// A tube list counts in full against the output limit like a job does: with 64 kB
    /// allowed and 61 kB per `list-tubes`, the second reply reaches the limit and no
    /// further command runs while the client reads nothing.
    #[tokio::test]
    async fn tube_lists_count_in_full_against_the_output_limit() {
        let broker = broker();
        let (client, server) = tokio::io::duplex(1024);
        let (sr, sw) = tokio::io::split(server);
        let (_stop, stop_rx) = watch::channel(false);
        let limit = OutputLimit {
            max_bytes: 64 << 10,
            stall_timeout: Some(Duration::from_millis(300)),
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
