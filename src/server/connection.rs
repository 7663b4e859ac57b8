//! One client connection: decode, execute in order, reply.
//!
//! Replies are buffered and written when no further command is already waiting in the
//! input, so pipelined commands are answered in one write. Commands that arrive while a
//! reserve is blocked are held (at most [`MAX_PENDING`]) and run after it answers, as
//! beanstalkd does; reading on while blocked is also how a hang-up is noticed at once.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::codec::FramedRead;

use super::Broker;
use crate::engine::Outcome;
use crate::protocol::{BodyHole, Command, CommandDecoder, ProtocolError, Reply};

/// Most decoded commands held while a reserve is blocked, or run under one lock.
pub const MAX_PENDING: usize = 64;

/// Buffered reply bytes that force a write even while more commands are waiting.
const FLUSH_AT: usize = 64 * 1024;

type Item = Result<Command, ProtocolError>;

/// Serves one connection until the client leaves, sends `quit`, or the server shuts down.
pub async fn serve<R, W>(
    reader: R,
    mut writer: W,
    broker: Arc<Broker>,
    max_job_size: u32,
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
    };
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
        let (stop, lsn) = broker.execute(sid, &mut pending, |reply| out.push(&reply));
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
        if out.bytes.len() >= FLUSH_AT && out.write(&mut writer, &broker).await.is_err() {
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
        writer.write_all(&self.bytes).await?;
        self.bytes.clear();
        Ok(())
    }
}
