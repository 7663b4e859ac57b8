//! The open log: appending, flushing, syncing, rotating, reading payloads back, and
//! removing old segments.
//!
//! Invariants: the active segment is the newest one; its file holds `written_len` valid
//! bytes (header and whole records) followed by zero fill up to `file_len` (none unless
//! preallocating), and in memory by `buf`, which holds whole frames not yet written.
//! Sealed segments hold no zero fill: it is cut off before the segment is synced for the
//! last time. `durable_lsn <= written_lsn <
//! next_lsn`. Once `poisoned` is set it is never cleared: after a failed write or sync the
//! file's contents are unknown, so nothing more is written (see the module docs).

use std::io;
use std::path::{Path, PathBuf};

use super::frame::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment;
use super::storage::{Storage, StorageFile};
use super::{Lsn, RecordPos, WalError};

/// Limits of a log, validated by [`Wal::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is rotated before a record would make it longer than this many bytes
    /// (a record that alone exceeds it gets a segment of its own). Default 64 MiB;
    /// minimum 64.
    pub max_segment_size: u64,
    /// The largest payload accepted by `append`; a record announcing a longer one on disk
    /// is treated as corrupt. Default 64 MiB. Never lower it below a payload already
    /// written.
    pub max_payload: u32,
    /// Whether each new segment is preallocated to `max_segment_size` bytes of zero fill
    /// (and the active one extended to it on open), so that writing a record does not
    /// change the file's length and the fdatasync after it has only data to flush. Zero
    /// fill at the end of the last segment is not a torn tail (see the module docs).
    /// Default false; the server turns it on.
    pub preallocate: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            max_segment_size: 64 << 20,
            max_payload: 64 << 20,
            preallocate: false,
        }
    }
}

impl WalOptions {
    /// The smallest accepted `max_segment_size`.
    pub const MIN_SEGMENT_SIZE: u64 = 64;
    /// The largest accepted `max_segment_size`: payload offsets within a segment fit 32 bits
    /// (a record too big for any segment still gets one of its own, starting near offset 0).
    pub const MAX_SEGMENT_SIZE: u64 = 4 << 30;

    /// The length new segments are preallocated to, if they are.
    pub fn preallocation(&self) -> Option<u64> {
        self.preallocate.then_some(self.max_segment_size)
    }

    /// Checks the options are in range.
    pub fn validate(&self) -> Result<(), WalError> {
        if self.max_segment_size < Self::MIN_SEGMENT_SIZE {
            return Err(WalError::InvalidOptions {
                reason: "max_segment_size must be at least 64 bytes",
            });
        }
        if self.max_segment_size > Self::MAX_SEGMENT_SIZE {
            return Err(WalError::InvalidOptions {
                reason: "max_segment_size must be at most 4 GiB",
            });
        }
        Ok(())
    }
}

/// The part of a log's state that decides where appended records land: the active
/// segment, its length including buffered frames, and how many records it holds.
///
/// [`Wal::append`] places every record with [`Layout::place`], so a copy taken with
/// [`Wal::layout`] and fed the same payload lengths in the same order predicts each
/// record's position before it is written. The server uses that to know where a job's
/// body will be while the record is still queued for the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    segment: u64,
    end: u64,
    records: u64,
    max_segment_size: u64,
}

impl Layout {
    /// The layout of a log with no records, whose first segment is `segment`.
    pub fn empty(segment: u64, max_segment_size: u64) -> Layout {
        Layout {
            segment,
            end: SEGMENT_HEADER_LEN as u64,
            records: 0,
            max_segment_size,
        }
    }

    /// Places a record with a payload of `payload_len` bytes: returns its payload's
    /// position and whether the active segment is rotated first (a record that would
    /// make a non-empty segment longer than the limit starts a new one).
    pub fn place(&mut self, payload_len: usize) -> (RecordPos, bool) {
        let frame_len = (RECORD_HEADER_LEN + payload_len) as u64;
        let rotates = self.end + frame_len > self.max_segment_size && self.records > 0;
        if rotates {
            self.segment += 1;
            self.end = SEGMENT_HEADER_LEN as u64;
            self.records = 0;
        }
        let pos = RecordPos {
            segment: self.segment,
            offset: self.end + RECORD_HEADER_LEN as u64,
        };
        self.end += frame_len;
        self.records += 1;
        (pos, rotates)
    }

    /// The segment the next record goes to unless it rotates.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The largest segment size the layout rotates at.
    pub fn max_segment_size(&self) -> u64 {
        self.max_segment_size
    }

    /// The active segment's length, including frames not written yet.
    pub fn end(&self) -> u64 {
        self.end
    }
}

pub(super) struct Active<F> {
    pub(super) seq: u64,
    pub(super) file: F,
    /// Bytes of header and records; the next record is written here.
    pub(super) written_len: u64,
    /// The file's length: `written_len` plus any zero fill.
    pub(super) file_len: u64,
    pub(super) records: u64,
}

/// An open write-ahead log; see the module docs for the format and durability rules.
pub struct Wal<S: Storage> {
    storage: S,
    dir: PathBuf,
    options: WalOptions,
    oldest_seq: u64,
    active: Active<S::File>,
    buf: Vec<u8>,
    next_lsn: Lsn,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    poisoned: bool,
}

impl<S: Storage> std::fmt::Debug for Wal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("oldest_seq", &self.oldest_seq)
            .field("active_seq", &self.active.seq)
            .field("next_lsn", &self.next_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Wal<S> {
    /// A log whose recovered contents, all durable, end with `active`.
    pub(super) fn from_parts(
        storage: S,
        dir: PathBuf,
        options: WalOptions,
        oldest_seq: u64,
        active: Active<S::File>,
        next_lsn: Lsn,
    ) -> Self {
        let last = Lsn(next_lsn.0 - 1);
        Wal {
            storage,
            dir,
            options,
            oldest_seq,
            active,
            buf: Vec::new(),
            next_lsn,
            written_lsn: last,
            durable_lsn: last,
            poisoned: false,
        }
    }

    /// Adds a record to the in-memory buffer and returns its LSN and position. Nothing
    /// reaches the file until [`Wal::flush`] or [`Wal::sync`], except that when the record
    /// does not fit the active segment, the segment is sealed and the next one created
    /// first (which writes and syncs).
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<(Lsn, RecordPos), WalError> {
        self.append_parts(kind, payload, &[])
    }

    /// [`Wal::append`] of a record whose payload is `head` followed by `tail`, given in
    /// two parts so a caller holding them apart (a job's fields and its body) need not join
    /// them: the record, its CRC and its position are those of the joined payload.
    pub fn append_parts(
        &mut self,
        kind: u8,
        head: &[u8],
        tail: &[u8],
    ) -> Result<(Lsn, RecordPos), WalError> {
        self.check_poisoned()?;
        let len = head.len() + tail.len();
        if len > self.options.max_payload as usize {
            return Err(WalError::PayloadTooLarge {
                len,
                max: self.options.max_payload,
            });
        }
        let (pos, rotates) = self.layout().place(len);
        if rotates {
            let rotated = self.rotate();
            self.poison_on_error(rotated)?;
        }
        debug_assert_eq!(pos, self.layout().place(len).0);
        frame::encode_record_parts(&mut self.buf, kind, head, tail);
        let lsn = self.next_lsn;
        self.next_lsn.0 += 1;
        self.active.records += 1;
        Ok((lsn, pos))
    }

    /// Writes the buffered records to the active segment in one write call.
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        let flushed = self.write_buf();
        self.poison_on_error(flushed)
    }

    /// Flushes and fdatasyncs the active segment; returns the durable LSN (every record
    /// up to it is on stable storage; `Lsn(0)` if there are none).
    pub fn sync(&mut self) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        let synced = self.write_buf().and_then(|()| self.sync_active());
        self.poison_on_error(synced)?;
        Ok(self.durable_lsn)
    }

    /// Reads `len` bytes of payload at `pos`, from disk or, if not flushed yet, from the
    /// buffer. Works on a poisoned log too.
    pub fn read_payload(&self, pos: RecordPos, len: u32) -> Result<Vec<u8>, WalError> {
        let bad = || WalError::BadPosition {
            segment: pos.segment,
            offset: pos.offset,
            len,
        };
        let end = pos.offset.checked_add(u64::from(len)).ok_or_else(bad)?;
        if pos.segment < self.oldest_seq
            || pos.segment > self.active.seq
            || pos.offset < (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64
        {
            return Err(bad());
        }
        let mut out = vec![0u8; len as usize];
        if pos.segment == self.active.seq {
            if pos.offset >= self.active.written_len {
                let start = (pos.offset - self.active.written_len) as usize;
                let src = self.buf.get(start..start + len as usize).ok_or_else(bad)?;
                out.copy_from_slice(src);
                return Ok(out);
            }
            if end > self.active.written_len {
                return Err(bad());
            }
            let path = segment::path(&self.dir, pos.segment);
            self.active
                .file
                .read_at(pos.offset, &mut out)
                .map_err(WalError::io("read", path))?;
            return Ok(out);
        }
        let path = segment::path(&self.dir, pos.segment);
        let file = self
            .storage
            .open(&path, false)
            .map_err(WalError::io("open", &path))?;
        match file.read_at(pos.offset, &mut out) {
            Ok(()) => Ok(out),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(bad()),
            Err(e) => Err(WalError::io("read", path)(e)),
        }
    }

    /// Removes every segment numbered below `seq` (never the active one) and syncs the
    /// directory. Returns how many were removed.
    pub fn remove_segments_before(&mut self, seq: u64) -> Result<u64, WalError> {
        self.check_poisoned()?;
        let upto = seq.min(self.active.seq);
        if upto <= self.oldest_seq {
            return Ok(0);
        }
        let removed = self.remove_range(upto);
        self.poison_on_error(removed)
    }

    fn remove_range(&mut self, upto: u64) -> Result<u64, WalError> {
        let first = self.oldest_seq;
        for seq in first..upto {
            let path = segment::path(&self.dir, seq);
            match self.storage.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(WalError::io("remove", path)(e)),
            }
            self.oldest_seq = seq + 1;
        }
        self.storage
            .sync_dir(&self.dir)
            .map_err(WalError::io("sync", &self.dir))?;
        Ok(upto - first)
    }

    /// Where the next appended records will land (see [`Layout`]).
    pub fn layout(&self) -> Layout {
        Layout {
            segment: self.active.seq,
            end: self.active.written_len + self.buf.len() as u64,
            records: self.active.records,
            max_segment_size: self.options.max_segment_size,
        }
    }

    /// The LSN up to which records are known to be on stable storage.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The LSN the next appended record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The sequence number of the segment being appended to.
    pub fn active_segment(&self) -> u64 {
        self.active.seq
    }

    /// The sequence number of the oldest segment still present.
    pub fn oldest_segment(&self) -> u64 {
        self.oldest_seq
    }

    /// Whether a failed write or sync has stopped the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> WalOptions {
        self.options
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_error<T>(&mut self, r: Result<T, WalError>) -> Result<T, WalError> {
        // A full disk or a lack of descriptors leaves the log as it was (see `write_buf`
        // and `rotate`).
        if r.as_ref().is_err_and(|e| !e.is_temporary()) {
            self.poisoned = true;
        }
        r
    }

    fn write_buf(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = segment::path(&self.dir, self.active.seq);
        let at = self.active.written_len;
        if let Err(e) = self.active.file.write_at(at, &self.buf) {
            if !WalError::is_no_space(&e) {
                return Err(WalError::io("append to", path)(e));
            }
            // Part of the buffer may have reached the file: cut it off (and any zero fill
            // with it) so the file again ends at a record boundary and a retry writes the
            // buffer whole.
            self.active
                .file
                .set_len(at)
                .map_err(WalError::io("truncate", &path))?;
            self.active.file_len = at;
            return Err(WalError::NoSpace {
                op: "append to",
                path,
            });
        }
        self.active.written_len += self.buf.len() as u64;
        self.active.file_len = self.active.file_len.max(self.active.written_len);
        self.buf.clear();
        self.written_lsn = Lsn(self.next_lsn.0 - 1);
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        if self.durable_lsn < self.written_lsn {
            let path = segment::path(&self.dir, self.active.seq);
            self.active
                .file
                .sync_data()
                .map_err(WalError::io("sync", path))?;
            self.durable_lsn = self.written_lsn;
        }
        Ok(())
    }

    /// Seals the active segment (its records written, its zero fill cut off, synced) and
    /// makes the next one active.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.write_buf()?;
        if self.active.file_len > self.active.written_len {
            let path = segment::path(&self.dir, self.active.seq);
            self.active
                .file
                .set_len(self.active.written_len)
                .map_err(WalError::io("truncate", &path))?;
            self.active.file_len = self.active.written_len;
            // Synced even if every record already is: the new length must be durable
            // before a later segment exists.
            self.active
                .file
                .sync_data()
                .map_err(WalError::io("sync", path))?;
            self.durable_lsn = self.written_lsn;
        }
        self.sync_active()?;
        let seq = self.active.seq + 1;
        let created = segment::create(
            &self.storage,
            &self.dir,
            seq,
            self.next_lsn,
            self.options.preallocation(),
        );
        let (file, file_len) = match created {
            Ok(file) => file,
            // Nothing was created (creating the file is the only step that needs a new
            // descriptor: the directory's is kept open by the storage).
            Err(WalError::Io {
                op: "create",
                path,
                source,
            }) if WalError::is_out_of_files(&source) => {
                return Err(WalError::NoFiles { op: "create", path });
            }
            Err(WalError::Io { op, source, .. }) if WalError::is_no_space(&source) => {
                // Remove the half-created segment, so the log ends where it did and a
                // retry creates it afresh.
                let path = segment::path(&self.dir, seq);
                match self.storage.remove(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(WalError::io("remove", path)(e)),
                }
                self.storage
                    .sync_dir(&self.dir)
                    .map_err(WalError::io("sync", &self.dir))?;
                return Err(WalError::NoSpace { op, path });
            }
            Err(e) => return Err(e),
        };
        self.active = Active {
            seq,
            file,
            written_len: SEGMENT_HEADER_LEN as u64,
            file_len,
            records: 0,
        };
        Ok(())
    }
}
