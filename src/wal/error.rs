//! The log's one error type. Every variant that concerns a file names it; corruption also
//! names the byte offset, so an operator can find it with `larder wal dump`.

use std::io;
use std::path::PathBuf;

use super::frame::{BadRecord, HeaderProblem};
use super::Lsn;

/// What went wrong in the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation, such as "append to" or "sync".
        op: &'static str,
        /// The file or directory operated on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A segment's header is not a valid version-1 header.
    #[error("{}: {problem}", path.display())]
    BadHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong with it.
        problem: HeaderProblem,
    },
    /// A record is invalid and the torn-tail rule does not apply to it.
    #[error("{} at byte {offset}: {problem}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Offset of the invalid record's first byte in the file.
        offset: u64,
        /// What is wrong with the record.
        problem: BadRecord,
    },
    /// A segment's number does not follow its predecessor's: segments are missing.
    #[error("{}: segment {found} follows segment {previous}; the ones between are missing", path.display())]
    MissingSegment {
        /// The segment file after the gap.
        path: PathBuf,
        /// The sequence number of the segment before the gap.
        previous: u64,
        /// The sequence number after the gap.
        found: u64,
    },
    /// A segment's first LSN does not continue its predecessor's records.
    #[error("{}: first LSN is {found}, expected {expected}", path.display())]
    LsnGap {
        /// The segment file.
        path: PathBuf,
        /// The LSN after the previous segment's last record.
        expected: Lsn,
        /// The first LSN in the segment's header.
        found: Lsn,
    },
    /// The only segment of a log that does not start at segment 1 has a torn header, so
    /// the log's next LSN cannot be known.
    #[error("{}: the log's only segment has an unfinished header", path.display())]
    TornOnlySegment {
        /// The segment file.
        path: PathBuf,
    },
    /// An append was refused because its payload is larger than the configured maximum.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The filesystem is full. Nothing is lost and the log is not poisoned: the bytes that
    /// did not fit were cut off again (or the half-created segment removed), so the same
    /// call can be retried once there is space.
    #[error("no space left to {op} {}", path.display())]
    NoSpace {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
    },
    /// The process is out of file descriptors (EMFILE or ENFILE) and could not open the
    /// next segment. Nothing is lost and the log is not poisoned: no file was created, so
    /// the same call can be retried once descriptors are free.
    #[error("out of file descriptors to {op} {}", path.display())]
    NoFiles {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
    },
    /// A write or sync failed earlier; the log accepts nothing more until reopened.
    #[error("the log failed an earlier write or sync and must be reopened")]
    Poisoned,
    /// The options passed to [`super::Wal::open`] are out of range.
    #[error("invalid WAL options: {reason}")]
    InvalidOptions {
        /// Which option and why.
        reason: &'static str,
    },
    /// `read_payload` was asked for bytes that are not in the log.
    #[error("no payload of {len} bytes at segment {segment} offset {offset}")]
    BadPosition {
        /// The segment asked for.
        segment: u64,
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u32,
    },
}

impl WalError {
    /// Whether an I/O error means the filesystem is full.
    pub(crate) fn is_no_space(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::ENOSPC)
    }

    /// Whether an I/O error means the process or the system has no file descriptor left.
    pub(crate) fn is_out_of_files(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }

    /// Whether the error leaves the log as it was, so the call can be retried later.
    pub fn is_temporary(&self) -> bool {
        matches!(self, WalError::NoSpace { .. } | WalError::NoFiles { .. })
    }

    /// Wraps an I/O error with the operation and the path it concerned.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| WalError::Io { op, path, source }
    }
}
