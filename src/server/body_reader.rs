//! Reading job bodies back from the log for `reserve` and `peek` replies.
//!
//! The engine answers with a [`StoredBody`] (segment, offset, length). Each reply gets its
//! own open handle on the segment, so the bytes stay readable even if compaction moves the
//! job and the segment is removed before the reply goes out. No file is opened under the
//! engine's lock: there [`SegmentFiles::attach`] only hands out a handle already open, and
//! for a segment not open yet it returns an [`Opening`], which keeps the segment in the log
//! (retention counts [`SegmentFiles::oldest_opening`]) until the reply's task, off the
//! lock, has opened it ([`Opening::open`]). The connection reads the bytes only after the
//! reply's records are durable, outside every lock: first without blocking
//! (`preadv2(RWF_NOWAIT)` succeeds when the page cache has them, the common case), else
//! on tokio's blocking pool, so a cold read never stalls other connections.

use std::collections::{BTreeMap, HashMap};
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
    /// A cluster node's snapshot directory: segment numbers from
    /// [`BodyRef::SNAPSHOT_SEGMENTS`](crate::engine::BodyRef::SNAPSHOT_SEGMENTS) on are
    /// windows of the snapshot files there.
    snapshots: std::sync::OnceLock<PathBuf>,
    open: Mutex<HashMap<u64, Arc<File>>>,
    /// Segments replies are still to open, with how many replies each.
    opening: Mutex<BTreeMap<u64, usize>>,
}

/// A segment a reply is still to open. While it exists the log keeps the segment.
#[derive(Debug)]
pub struct Opening {
    files: Arc<SegmentFiles>,
    segment: u64,
}

impl Opening {
    /// The segment.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Opens the segment (or takes the handle another task opened meanwhile). The segment
    /// may go once the caller has put the handle in its replies and dropped this. `None`
    /// if it cannot be opened (not created yet, say): reading the body tries again and
    /// reports the error.
    pub fn open(&self) -> Option<Arc<File>> {
        self.files.get(self.segment).ok()
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut opening = self.files.lock_opening();
        if let Some(n) = opening.get_mut(&self.segment) {
            *n -= 1;
            if *n == 0 {
                opening.remove(&self.segment);
            }
        }
    }
}

impl std::fmt::Debug for SegmentFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFiles")
            .field("dir", &self.dir)
            .finish()
    }
}

impl SegmentFiles {
    /// Files of the log in `dir`.
    pub fn new(dir: PathBuf) -> SegmentFiles {
        SegmentFiles {
            dir,
            snapshots: std::sync::OnceLock::new(),
            open: Mutex::new(HashMap::new()),
            opening: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<File>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_opening(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.opening.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cluster mode: bodies may also be in the snapshot files in `dir`.
    pub fn set_snapshot_dir(&self, dir: PathBuf) {
        let _ = self.snapshots.set(dir);
    }

    /// Whether a reply is still to open a segment numbered `lo..=hi`.
    pub fn opening_in(&self, lo: u64, hi: u64) -> bool {
        self.lock_opening().range(lo..=hi).next().is_some()
    }

    /// Closes the handles of segments numbered `lo..=hi` (a snapshot file that was
    /// removed). Replies that hold one keep it open until they are written.
    pub fn forget_range(&self, lo: u64, hi: u64) {
        self.lock().retain(|&s, _| s < lo || s > hi);
    }

    fn path(&self, seq: u64) -> PathBuf {
        if seq >= crate::engine::BodyRef::SNAPSHOT_SEGMENTS && seq != u64::MAX {
            if let Some(dir) = self.snapshots.get() {
                let file = (seq - crate::engine::BodyRef::SNAPSHOT_SEGMENTS) >> 16;
                return crate::server::cluster::snapshot::file_path(dir, file);
            }
        }
        crate::wal::segment::path(&self.dir, seq)
    }

    /// The oldest segment a reply is still to open (`u64::MAX` if none): the log keeps it.
    pub fn oldest_opening(&self) -> u64 {
        self.lock_opening()
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// The open segment `seq`, opening it if needed.
    pub fn get(&self, seq: u64) -> io::Result<Arc<File>> {
        if let Some(f) = self.lock().get(&seq) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(self.path(seq))?);
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
        self.lock()
            .retain(|&s, _| s >= seq || s >= crate::engine::BodyRef::SNAPSHOT_SEGMENTS);
    }

    /// Gives a reply's stored body its segment's handle if that is open already. It runs
    /// under the engine's lock, so it opens nothing: for a segment not open yet it returns
    /// an [`Opening`] to open it with once the lock is released.
    pub fn attach(self: &Arc<Self>, mut reply: Reply) -> (Reply, Option<Opening>) {
        let mut opening = None;
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
                s.file = self.lock().get(&s.segment).cloned();
                if s.file.is_none() {
                    *self.lock_opening().entry(s.segment).or_insert(0) += 1;
                    opening = Some(Opening {
                        files: self.clone(),
                        segment: s.segment,
                    });
                }
            }
        }
        (reply, opening)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobId;

    fn found(segment: u64) -> Reply {
        Reply::Found {
            id: JobId(1),
            body: Body::Stored(StoredBody {
                segment,
                offset: 0,
                len: 3,
                file: None,
            }),
        }
    }

    #[test]
    fn a_segment_not_open_yet_is_kept_until_the_reply_has_opened_it() {
        let dir = std::env::temp_dir().join(format!("larder-bodies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(crate::wal::segment::path(&dir, 7), b"abc").expect("segment");
        let files = Arc::new(SegmentFiles::new(dir.clone()));
        assert_eq!(files.oldest_opening(), u64::MAX);
        let (_, first) = files.attach(found(7));
        let (_, second) = files.attach(found(7));
        let first = first.expect("segment 7 is not open yet");
        assert_eq!(files.oldest_opening(), 7);
        // Opened off the lock: now open for the next reply too.
        assert!(first.open().is_some());
        drop(first);
        assert_eq!(files.oldest_opening(), 7, "a second reply still waits");
        drop(second);
        assert_eq!(files.oldest_opening(), u64::MAX);
        let (reply, opening) = files.attach(found(7));
        assert!(opening.is_none());
        let Reply::Found {
            body: Body::Stored(body),
            ..
        } = reply
        else {
            panic!("{reply:?}");
        };
        assert!(body.file.is_some());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
