//! A connection's input: commands decoded ahead of running them, and the clock on the
//! command now arriving (for `--command-timeout`).
//!
//! The decoder itself is [`crate::protocol::CommandDecoder`]; what is read ahead is bounded
//! by [`MAX_PENDING`] commands and `--max-input-per-connection` bytes (see
//! [`super::connection`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::outbox::KEEP_CAPACITY;
use crate::protocol::{Command, CommandDecoder, ProtocolError, MAX_LINE_LEN};

/// Most decoded commands held while a reserve is blocked, or run under one lock.
pub const MAX_PENDING: usize = 64;

/// Initial capacity of the input buffer.
pub const READ_CAPACITY: usize = 8192;

pub type Item = Result<Command, ProtocolError>;

/// The memory a decoded command is counted as holding: its body, and a whole line.
pub fn item_size(item: &Item) -> usize {
    match item {
        Ok(Command::Put { body, .. }) => body.len() + MAX_LINE_LEN,
        _ => MAX_LINE_LEN,
    }
}

/// Commands decoded and not yet run, with the bytes they are counted as holding.
pub struct ReadAhead {
    pub items: VecDeque<Item>,
    pub bytes: usize,
    /// When the oldest of them was read (a put's arrival, for its confirmation time).
    pub since: Option<Instant>,
}

impl ReadAhead {
    pub fn push(&mut self, item: Item) {
        self.since.get_or_insert_with(Instant::now);
        self.bytes += item_size(&item);
        self.items.push_back(item);
    }

    /// Whether no more commands may be read until some run.
    pub fn full(&self, max_bytes: usize) -> bool {
        self.items.len() >= MAX_PENDING || self.bytes >= max_bytes
    }

    /// Counts again after some commands ran.
    pub fn recount(&mut self) {
        if self.items.is_empty() {
            self.since = None;
        }
        self.bytes = self.items.iter().map(item_size).sum();
    }
}

/// A reader that remembers when the bytes of the command now arriving began to arrive.
pub struct Timed<R> {
    pub inner: R,
    /// When the first byte not yet part of a whole command was read; `None` between
    /// commands.
    pub first_byte: Option<Instant>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Timed<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.first_byte.get_or_insert_with(Instant::now);
        }
        read
    }
}

pub type Frames<R> = FramedRead<Timed<R>, CommandDecoder>;

/// Notes that a whole command was decoded: the clock for the next one starts now if some
/// of it is already here, else with its first byte.
pub fn command_done<R>(frames: &mut Frames<R>) {
    let between = frames.read_buffer().is_empty() && frames.decoder().between_commands();
    frames.get_mut().first_byte = (!between).then(Instant::now);
}

/// Gives back an input buffer grown by a burst, once it is empty.
pub fn shrink_input<R>(frames: &mut Frames<R>) {
    let buf = frames.read_buffer_mut();
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = BytesMut::with_capacity(READ_CAPACITY);
    }
}
