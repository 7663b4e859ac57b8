//! The write-ahead log: a directory of append-only segment files holding checksummed,
//! numbered records of opaque bytes. It knows nothing of jobs; the engine owns what a
//! record's kind and payload mean.
//!
//! # On-disk format, version 1
//!
//! A log directory holds segment files named `{seq:020}.wal`: the segment's sequence number,
//! a `u64` counting from 1, zero-padded to 20 digits so names sort in order
//! ([`segment`] owns the naming). Other files in the directory are ignored. Sequence
//! numbers of the segments present are contiguous; older ones may have been removed.
//!
//! Each segment starts with a 40-byte header; all integers are little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"LARDRWAL"` |
//! | 8 | 4 | format version, `u32`, = 1 |
//! | 12 | 4 | header length, `u32`, = 40 |
//! | 16 | 8 | segment sequence number, `u64`, equal to the one in the file name |
//! | 24 | 8 | first LSN, `u64`: the LSN of the segment's first record |
//! | 32 | 4 | CRC32C of bytes 0..32, `u32` |
//! | 36 | 4 | reserved, 0 |
//!
//! Records follow the header back to back, each a 9-byte frame header and a payload:
//!
//! | size | field |
//! |---|---|
//! | 4 | payload length, `u32` |
//! | 4 | CRC32C over the kind byte followed by the payload, `u32` |
//! | 1 | kind, `u8` (meaning owned by the caller) |
//! | length | payload |
//!
//! A record's LSN is its number in the whole log: 1 for the first record ever written, +1
//! per record, continuing across segments (so a segment's first LSN is its predecessor's
//! first LSN plus its record count). A payload length above the configured maximum
//! ([`WalOptions::max_payload`]) is treated like a bad checksum; the maximum must never be
//! lowered below a payload already written. A record's position ([`RecordPos`]) is the
//! segment number and the file offset of its payload.
//!
//! # Torn tails and corruption
//!
//! A crash can leave the end of the last segment unfinished. When opening, only in the
//! **last** segment, an invalid record (header incomplete, length beyond the end of the
//! file, over the maximum, or CRC mismatch) is a *torn tail* if everything from its start
//! to the end of the file could be an unfinished write: the record is incomplete, or it is
//! complete but followed only by zero bytes. The file is then truncated at the record's
//! start and synced, and [`OpenReport::truncated_bytes`] says how much was cut (the caller
//! logs a warning). A last segment whose header is incomplete, or is all zeros followed
//! only by zeros, was being created when the crash came: it is removed (and the directory
//! synced) and counted the same way.
//!
//! Anything else is corruption and an error naming the segment file and byte offset
//! ([`WalError::Corrupt`]): an invalid record in a segment other than the last, or an
//! invalid record followed by more non-zero data. A segment other than the last must end
//! exactly at a record boundary.
//!
//! # Zero fill (preallocated segments)
//!
//! With [`WalOptions::preallocate`], a segment is created at its full size: its header,
//! then zero bytes up to [`WalOptions::max_segment_size`] (allocated with `fallocate` where
//! the file system has it), made durable with the header. Records are then written into
//! the fill, so the fdatasync after a write never has to record a new file size. In the
//! **last** segment, a record boundary followed only by zero bytes to the end of the file
//! is its clean end: no record frame is all zeros (its CRC covers the kind byte, and the
//! CRC32C of a zero kind with an empty payload is not zero), so the first all-zero frame
//! header marks where writing stopped. The log keeps the length written in memory; on open
//! it is the end of the last valid record. A torn record before the fill is cut as above
//! and the fill restored behind it. A segment is sealed by cutting its fill off before its
//! last sync, so segments other than the last never hold any; zero bytes after the records
//! of one are corruption. Logs written with and without preallocation read the same. A bad magic, unknown version, wrong header length or bad
//! header CRC is a [`WalError::BadHeader`] naming the file.
//!
//! # Durability
//!
//! Group commit: one writer appends the records of many commands, syncs once, and then
//! publishes the synced LSN to a [`commit::Watermark`], which every command waiting on a
//! record at or below it (to send its reply) is released by.
//!
//! [`Wal::append`] only buffers ([`Wal::append_parts`] takes a payload in two parts, such
//! as a job's fields and its body, and buffers the same frame as for the joined payload,
//! its CRC computed over both); [`Wal::flush`] writes the buffer with one write call at the
//! end of the last record;
//! [`Wal::sync`] flushes and fdatasyncs, and what it returns is the durable LSN. A segment
//! is rotated before a record would take it past [`WalOptions::max_segment_size`] (a
//! record larger than that gets a segment to itself): the old segment is flushed, its zero
//! fill cut off, and synced (sealed), the new one is created, its header written (and its
//! fill allocated) and synced, and the directory synced. The directory is also synced after removing segments and after
//! removing a torn segment on open.
//!
//! After any failed write or sync the log is *poisoned*: every later append, flush, sync
//! or removal returns [`WalError::Poisoned`], because what reached the disk is unknown
//! (a failed fsync may have dropped dirty pages). Records up to the last durable LSN are
//! safe; reopen the log to recover the rest that made it.
//!
//! # Changing the format
//!
//! To change anything above, bump [`frame::FORMAT_VERSION`], keep a reader for every older
//! version (dispatching on the version field, which stays at offset 8, with the header
//! length at offset 12 so a reader can find the first record), keep the golden segment of
//! each old version under `tests/data/wal-v{N}/` with its test, add one for the new
//! version, and update this section. A build never writes an old version; it may read one
//! and continue in a new segment of the new version.

pub mod commit;
pub mod error;
pub mod frame;
mod log;
#[cfg(test)]
mod prealloc_tests;
mod recover;
pub mod segment;
pub mod storage;
#[cfg(test)]
mod tests;
mod verify;

pub use error::WalError;
pub use log::{Layout, Wal, WalOptions};
pub use recover::OpenReport;
pub use verify::{dump, verify, verify_with, Dump, DumpEntry, VerifyReport};

/// A log sequence number: the number of a record in the whole log, from 1. `Lsn(0)` means
/// "no record".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a record's payload lives: its segment and the payload's offset in that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordPos {
    /// The segment's sequence number.
    pub segment: u64,
    /// Offset of the payload's first byte in the segment file.
    pub offset: u64,
}

/// A record read from the log, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's kind byte.
    pub kind: u8,
    /// The record's payload.
    pub payload: &'a [u8],
    /// Where the payload is.
    pub pos: RecordPos,
}

/// A record read from the log, owning its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's kind byte.
    pub kind: u8,
    /// The record's payload.
    pub payload: Vec<u8>,
    /// Where the payload is.
    pub pos: RecordPos,
}

impl From<RecordRef<'_>> for Record {
    fn from(r: RecordRef<'_>) -> Record {
        Record {
            lsn: r.lsn,
            kind: r.kind,
            payload: r.payload.to_vec(),
            pos: r.pos,
        }
    }
}
