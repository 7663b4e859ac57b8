//! Reading job bodies back from the log for `reserve` and `peek` replies.
//!
//! The engine answers with a [`StoredBody`] (segment, offset, length). While the engine's
//! lock is still held, [`SegmentFiles::attach`] gives the reply an open handle on the
//! segment, so the bytes stay readable even if compaction moves the job and the segment
//! is removed before the reply goes out. The connection reads the bytes only after the
//! reply's records are durable, outside every lock: first without blocking
//! (`preadv2(RWF_NOWAIT)` succeeds when the page cache has them, the common case), else
//! on tokio's blocking pool, so a cold read never stalls other connections.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::{Body, Reply, StoredBody};

/// Most segment files kept open for reading; past it the oldest is closed (replies
/// holding it keep it open until they are written). Counted in the descriptors the
/// server keeps for itself (see `host_limits::check_open_files_limit`).
pub const MAX_OPEN_SEGMENTS: usize = 32;

/// Open segment files by sequence number.
pub struct SegmentFiles {
    dir: PathBuf,
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl SegmentFiles {
    /// Files of the log in `dir`.
    pub fn new(dir: PathBuf) -> SegmentFiles {
        SegmentFiles {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<File>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open segment `seq`, opening it if needed.
    pub fn get(&self, seq: u64) -> io::Result<Arc<File>> {
        if let Some(f) = self.lock().get(&seq) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(crate::wal::segment::path(&self.dir, seq))?);
        let mut open = self.lock();
        if open.len() >= MAX_OPEN_SEGMENTS {
            if let Some(&oldest) = open.keys().min() {
                open.remove(&oldest);
            }
        }
        Ok(open.entry(seq).or_insert(file).clone())
    }

    /// Closes segments numbered below `seq` (they have been removed). Replies that hold
    /// one keep it open until they are written.
    pub fn forget_before(&self, seq: u64) {
        self.lock().retain(|&s, _| s >= seq);
    }

    /// Gives a reply's stored body its open segment, if the segment exists yet (one the
    /// writer has not created yet is opened when the reply is written).
    pub fn attach(&self, mut reply: Reply) -> Reply {
        if let Reply::Reserved {
            body: Body::Stored(s),
            ..
        }
        | Reply::Found {
            body: Body::Stored(s),
            ..
        } = &mut reply
        {
            if s.file.is_none() {
                s.file = self.get(s.segment).ok();
            }
        }
        reply
    }

    /// Reads `body` into `dst` (exactly its length). A file that ends too soon is opened
    /// afresh once: a segment whose creation failed for want of space is removed and made
    /// again, and a handle opened in between sees the empty first attempt.
    pub async fn read(&self, body: &StoredBody, dst: &mut [u8]) -> io::Result<()> {
        let file = match &body.file {
            Some(f) => f.clone(),
            None => self.get(body.segment)?,
        };
        match self.read_from(file, body.offset, dst).await {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.lock().remove(&body.segment);
                let file = self.get(body.segment)?;
                self.read_from(file, body.offset, dst).await
            }
            other => other,
        }
    }

    async fn read_from(&self, file: Arc<File>, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        if read_cached(&file, offset, dst)? {
            return Ok(());
        }
        let mut buf = vec![0u8; dst.len()];
        let buf =
            tokio::task::spawn_blocking(move || file.read_exact_at(&mut buf, offset).map(|()| buf))
                .await
                .map_err(io::Error::other)??;
        dst.copy_from_slice(&buf);
        Ok(())
    }
}

/// Reads `dst.len()` bytes at `offset` if the page cache holds them all; returns false
/// (having read nothing useful) if it would have to wait for the disk or the filesystem
/// cannot say.
fn read_cached(file: &File, offset: u64, dst: &mut [u8]) -> io::Result<bool> {
    if dst.is_empty() {
        return Ok(true);
    }
    let mut bufs = [io::IoSliceMut::new(dst)];
    match rustix::io::preadv2(file, &mut bufs, offset, rustix::io::ReadWriteFlags::NOWAIT) {
        Ok(n) if n == bufs[0].len() => Ok(true),
        Ok(_) => Ok(false),
        Err(
            rustix::io::Errno::AGAIN
            | rustix::io::Errno::OPNOTSUPP
            | rustix::io::Errno::NOSYS
            | rustix::io::Errno::INVAL,
        ) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
