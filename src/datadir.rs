//! The data directory: created on start and locked for the server's lifetime, so two
//! servers never share one (the second gets a clear error and exits non-zero).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Creating the directory or its lock file failed.
    #[error("cannot prepare data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data directory {path} is in use by another larder process (pid {pid})")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The pid recorded by the holder, or "unknown".
        pid: String,
    },
}

/// A locked data directory; the lock is released when this is dropped (or the process
/// dies: the kernel drops `flock` locks with the file descriptor).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// How long opening a data directory waits for its lock. A server that is stopping, or a
/// process forked by one that has not yet exec'd (it shares the lock until then), lets go
/// within moments; another live server keeps it and is reported.
pub const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl DataDir {
    /// Creates `path` if needed and takes its exclusive lock, waiting at most
    /// [`LOCK_GRACE`] for a holder to let go.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        let deadline = std::time::Instant::now() + LOCK_GRACE;
        let rc = loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            let busy = rc != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
            if !busy || std::time::Instant::now() >= deadline {
                break rc;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = std::fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "unknown".to_owned());
                return Err(DataDirError::Locked {
                    path: path.to_owned(),
                    pid,
                });
            }
            return Err(io(err));
        }
        use std::io::Write;
        lock.set_len(0).map_err(io)?;
        write!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Bytes an unprivileged writer can still use on the filesystem holding `path`
/// (statvfs: available blocks times fragment size). One system call, no I/O on the disk.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// How the server measures the data directory's free space for `--min-free-disk`: by
/// default [`free_space`]; tests substitute their own reading.
#[derive(Clone)]
pub struct FreeSpaceProbe(Arc<MeasureFn>);

/// A function from a path to the free bytes of its filesystem.
type MeasureFn = dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync;

impl FreeSpaceProbe {
    /// A probe that calls `f`.
    pub fn new(f: impl Fn(&Path) -> std::io::Result<u64> + Send + Sync + 'static) -> Self {
        FreeSpaceProbe(Arc::new(f))
    }

    /// Free bytes on the filesystem holding `path`.
    pub fn measure(&self, path: &Path) -> std::io::Result<u64> {
        (self.0)(path)
    }
}

impl Default for FreeSpaceProbe {
    fn default() -> Self {
        FreeSpaceProbe::new(free_space)
    }
}

impl std::fmt::Debug for FreeSpaceProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreeSpaceProbe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_locked_directory_fails_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("larder-datadir-{}", std::process::id()));
        let first = DataDir::open(&dir).expect("first open");
        match DataDir::open(&dir) {
            Err(DataDirError::Locked { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = DataDir::open(&dir).expect("open after release");
        assert_eq!(again.path(), dir);
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
