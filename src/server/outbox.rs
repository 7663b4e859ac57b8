//! A connection's outbox: where its replies wait, encoded, until the log is durable up to
//! the records they depend on, and where they are released and written.
//!
//! The encoded replies are a [`Held`] value ([`super::held`]): the broker adds a batch's
//! replies to it tagged with the log's tail, and [`Outbox::write`] can only reach the bytes
//! through [`Held::release`]. Bodies still in the log are read into the room left for
//! them after the release, so a body is never read before its record is written.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::body_reader::Opening;
use super::held::Held;
use super::Broker;
use crate::protocol::{BodyHole, Reply};

/// Capacity an idle connection's input or output buffer may keep; a buffer grown past it
/// by a burst is replaced by a small one once it is empty.
pub const KEEP_CAPACITY: usize = 64 * 1024;

/// Initial capacity of the output buffer.
const WRITE_CAPACITY: usize = 4096;

/// Body holes an idle outbox may keep room for.
const KEEP_HOLES: usize = 64;

/// Encoded replies, and the room left in them for bodies still in the log.
#[derive(Debug, Default)]
pub struct Replies {
    bytes: BytesMut,
    holes: Vec<BodyHole>,
    /// How many replies `bytes` holds.
    count: usize,
    /// How many of them are `INSERTED`.
    puts: u64,
    /// Segments bodies in `holes` are still to be given a handle on.
    openings: Vec<Opening>,
}

impl Replies {
    fn with_capacity(bytes: usize) -> Replies {
        Replies {
            bytes: BytesMut::with_capacity(bytes),
            ..Replies::default()
        }
    }

    /// Encodes `reply` after the others.
    pub fn push(&mut self, reply: Reply) {
        self.count += 1;
        if let Reply::Inserted(_) = reply {
            self.puts += 1;
        }
        if let Some(hole) = reply.encode(&mut self.bytes) {
            self.holes.push(hole);
        }
    }

    /// Encodes `reply` after the others, with the segment its body is still to be given
    /// a handle on (see [`Replies::open_bodies`]).
    pub fn push_attached(&mut self, (reply, opening): (Reply, Option<Opening>)) {
        self.push(reply);
        self.openings.extend(opening);
    }

    /// Gives the bodies that wait for one a handle on their segment (off the engine's
    /// lock), and lets those segments go.
    pub fn open_bodies(&mut self) {
        for opening in std::mem::take(&mut self.openings) {
            let file = opening.open();
            for hole in &mut self.holes {
                if hole.body.segment == opening.segment() && hole.body.file.is_none() {
                    hole.body.file.clone_from(&file);
                }
            }
        }
    }

    /// Bytes of encoded replies.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    fn count(&self) -> usize {
        self.count
    }

    fn puts(&self) -> u64 {
        self.puts
    }

    /// Empties the buffers, giving back capacity grown by a burst.
    fn recycle(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > KEEP_CAPACITY {
            self.bytes = BytesMut::with_capacity(WRITE_CAPACITY);
        }
        self.holes.clear();
        if self.holes.capacity() > KEEP_HOLES {
            self.holes = Vec::new();
        }
        self.count = 0;
        self.puts = 0;
    }
}

/// Replies waiting to be written, held until the log records they depend on are durable.
pub struct Outbox {
    held: Held<Replies>,
    /// See [`super::connection::OutputLimit::stall_timeout`].
    stall_timeout: Option<Duration>,
    /// When the oldest put answered in `held` was read, for its confirmation time.
    puts_since: Option<Instant>,
}

impl Outbox {
    /// An empty outbox whose writes may make no progress for at most `stall_timeout`.
    pub fn new(stall_timeout: Option<Duration>) -> Outbox {
        Outbox {
            held: Held::ready(Replies::with_capacity(WRITE_CAPACITY)),
            stall_timeout,
            puts_since: None,
        }
    }

    /// Bytes of replies waiting.
    pub fn len(&self) -> usize {
        self.held.measure(Replies::len)
    }

    /// Adds a reply after the others.
    pub fn add(&mut self, reply: Held<Reply>) {
        self.held.merge(reply, Replies::push);
    }

    /// Adds a blocked session's reply after the others, opening the segment of its body
    /// if it was not open yet.
    pub fn add_wakeup(&mut self, reply: super::broker::Wakeup) {
        self.held.merge(reply, Replies::push_attached);
        self.held.update(Replies::open_bodies);
    }

    /// The held replies, for the broker to add a batch's replies to.
    pub fn replies(&mut self) -> &mut Held<Replies> {
        &mut self.held
    }

    /// Notes that the puts answered since the last write and before `puts_before` more
    /// were read at `arrived` (the oldest of a batch).
    pub fn puts_arrived(&mut self, puts_before: u64, arrived: Option<Instant>) {
        if self.puts_since.is_none() && self.held.measure(Replies::puts) > puts_before {
            self.puts_since = arrived;
        }
    }

    /// `INSERTED` replies waiting.
    pub fn puts(&self) -> u64 {
        self.held.measure(Replies::puts)
    }

    /// Waits until the replies' changes are durable, reads the bodies they carry, then
    /// writes them. If the log has failed (an I/O error writing or syncing it), every
    /// reply is replaced by `INTERNAL_ERROR`: a client never gets a confirmation the log
    /// cannot back, and from then on every command gets that answer until the server is
    /// restarted. A body that cannot be read ends the connection (its reserved job goes
    /// back to ready).
    pub async fn write(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        broker: &Broker,
    ) -> std::io::Result<()> {
        if self.len() == 0 {
            return Ok(());
        }
        let count = self.held.measure(Replies::count);
        let puts_since = self.puts_since.take();
        let held = std::mem::replace(&mut self.held, Held::ready(Replies::default()));
        let mut replies = match held.release(&broker.watermark()).await {
            Ok(replies) => replies,
            Err(_) => {
                let mut failed = Replies::with_capacity(WRITE_CAPACITY);
                for _ in 0..count {
                    failed.bytes.extend_from_slice(b"INTERNAL_ERROR\r\n");
                }
                failed
            }
        };
        let result = fill_and_write(&mut replies, writer, broker, self.stall_timeout).await;
        if let (Ok(()), Some(since)) = (&result, puts_since) {
            let waited = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            broker.timings().put_confirm.observe_n(waited, replies.puts);
        }
        // After a failure the rest is dropped too: the connection is ending.
        replies.recycle();
        self.held = Held::ready(replies);
        result
    }
}

/// Reads the bodies `replies` leave room for, then writes them all.
async fn fill_and_write(
    replies: &mut Replies,
    writer: &mut (impl AsyncWrite + Unpin),
    broker: &Broker,
    stall_timeout: Option<Duration>,
) -> std::io::Result<()> {
    for hole in &replies.holes {
        let room = replies
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
            return Err(e);
        }
    }
    write_out(&replies.bytes, writer, broker, stall_timeout).await
}

/// Writes every byte of `bytes`, failing if one write takes no byte for the stall timeout
/// (the client is not reading).
async fn write_out(
    bytes: &[u8],
    writer: &mut (impl AsyncWrite + Unpin),
    broker: &Broker,
    stall_timeout: Option<Duration>,
) -> std::io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        let write = writer.write(&bytes[done..]);
        let n = match stall_timeout {
            None => write.await?,
            Some(limit) => match tokio::time::timeout(limit, write).await {
                Ok(n) => n?,
                Err(_) => {
                    broker.with_engine(|e| e.count_stalled_output());
                    tracing::warn!(
                        waiting = bytes.len() - done,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Engine, EngineConfig, ProcessInfo};
    use crate::server::Clock;
    use crate::wal::Lsn;

    /// A broker with an empty engine and no log writer: `lsn` is the last durable record.
    fn broker(durable: u64) -> Arc<Broker> {
        let clock = Clock::new();
        let engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), clock.now());
        Broker::unwritten(engine, clock, durable)
    }

    #[tokio::test]
    async fn the_output_buffer_is_given_back_after_a_burst() {
        let broker = broker(0);
        let mut out = Outbox::new(None);
        out.add(Held::ready(Reply::Ok(bytes::Bytes::from(vec![
            b'y';
            1 << 20
        ]))));
        assert!(out.held.measure(|r| r.bytes.capacity()) >= 1 << 20);
        let mut sink = tokio::io::sink();
        out.write(&mut sink, &broker).await.expect("write");
        assert_eq!(out.len(), 0);
        let kept = out.held.measure(|r| r.bytes.capacity());
        assert!(kept <= KEEP_CAPACITY, "{kept} bytes kept");
    }

    #[tokio::test]
    async fn replies_wait_for_the_records_they_depend_on() {
        let broker = broker(3);
        let mut out = Outbox::new(None);
        out.add(Held::ready(Reply::Deleted));
        out.add(Held::after(
            Reply::Inserted(crate::protocol::JobId(9)),
            Lsn(4),
        ));
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut write = Box::pin(out.write(&mut server, &broker));
        assert!(futures_util::FutureExt::now_or_never(&mut write).is_none());
        broker.watermark().publish(4);
        write.await.expect("write");
        drop(server);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
            .await
            .expect("read");
        assert_eq!(got, b"DELETED\r\nINSERTED 9\r\n");
    }

    #[tokio::test]
    async fn after_the_log_fails_every_held_reply_becomes_internal_error() {
        let broker = broker(3);
        broker.watermark().fail(std::io::Error::other("disk gone"));
        let mut out = Outbox::new(None);
        out.add(Held::ready(Reply::Deleted));
        out.add(Held::after(
            Reply::Inserted(crate::protocol::JobId(9)),
            Lsn(4),
        ));
        let mut got = Vec::new();
        out.write(&mut got, &broker).await.expect("write");
        assert_eq!(got, b"INTERNAL_ERROR\r\nINTERNAL_ERROR\r\n");
    }
}
