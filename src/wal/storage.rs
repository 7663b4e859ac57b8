//! The file operations the log needs, behind a small synchronous trait.
//!
//! [`FsStorage`] is the real file system; [`MemStorage`] keeps files in memory, remembers
//! which bytes and which directory entries are durable, can lose everything else in a
//! [`MemStorage::crash`], and can fail a chosen write or sync. The log only ever appends
//! to a file, truncates it, reads it at an offset, and syncs it; it never overwrites bytes
//! in place. Errors are plain `io::Error`s: the log adds the path and the operation.

mod mem;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub use mem::{Fault, MemFile, MemStorage};

/// A directory tree the log keeps its segment files in.
pub trait Storage {
    /// An open segment file.
    type File: StorageFile;

    /// Creates `dir` and its parents if they do not exist.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new, empty file opened for writing and reading; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file, for writing and reading if `write`, else read-only.
    fn open(&self, path: &Path, write: bool) -> io::Result<Self::File>;
    /// The names of the regular files directly in `dir` (names that are not UTF-8 are
    /// left out: they cannot be segment names).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the creation and removal of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file of a [`Storage`].
pub trait StorageFile {
    /// Appends all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let end = self.size()?;
        self.write_at(end, buf)
    }
    /// Writes all of `buf` at `offset`, extending the file if it ends before.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes the file at least `len` bytes long, the new bytes reading as zeros, with
    /// their blocks allocated where the file system can (`fallocate`); otherwise extends
    /// it as `set_len` would. Never shortens it.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
    /// Fills `buf` from the file at `offset`; an error if the file ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The file's current length.
    fn size(&self) -> io::Result<u64>;
    /// Truncates (or extends with zeros) the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's contents and length durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system. Directory handles used for syncs are opened once and kept, so
/// that syncing a directory never needs a new file descriptor (a process out of them
/// could otherwise fail the log on a sync).
#[derive(Debug, Default)]
pub struct FsStorage {
    dirs: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, File>>,
}

impl FsStorage {
    /// A file system with no directory handle open yet.
    pub fn new() -> FsStorage {
        FsStorage::default()
    }
}

impl Storage for FsStorage {
    type File = File;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<File> {
        OpenOptions::new().read(true).write(write).open(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = dirs.get(dir) {
            return handle.sync_all();
        }
        let handle = File::open(dir)?;
        handle.sync_all()?;
        dirs.insert(dir.to_path_buf(), handle);
        Ok(())
    }
}

impl StorageFile for File {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if self.size()? >= len {
            return Ok(());
        }
        let len =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: fallocate on a descriptor this `File` owns; no memory is passed.
        let rc = unsafe { libc::fallocate(self.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // File systems without fallocate (FUSE, some network ones): a sparse extension
            // still gives the file its final length, so a later fdatasync need not record
            // a new size.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => File::set_len(self, len as u64),
            _ => Err(err),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Reads a whole file into memory.
pub(crate) fn read_all<F: StorageFile>(file: &F) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.size()?)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file too large to read"))?;
    let mut buf = vec![0u8; len];
    file.read_at(0, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<S: Storage>(s: &S, dir: &Path) {
        s.create_dir_all(dir).expect("mkdir");
        let path = dir.join("a.wal");
        let mut f = s.create(&path).expect("create");
        assert!(s.create(&path).is_err(), "create must not reuse a file");
        f.append(b"hello ").expect("append");
        f.append(b"world").expect("append");
        assert_eq!(f.size().expect("size"), 11);
        let mut buf = [0u8; 5];
        f.read_at(6, &mut buf).expect("read");
        assert_eq!(&buf, b"world");
        assert!(f.read_at(8, &mut buf).is_err(), "read past end");
        f.set_len(5).expect("truncate");
        f.append(b"!").expect("append after truncate");
        f.allocate(10).expect("allocate");
        assert_eq!(f.size().expect("size"), 10);
        let mut buf = [9u8; 4];
        f.read_at(6, &mut buf).expect("read zero fill");
        assert_eq!(buf, [0; 4]);
        f.write_at(6, b"ab").expect("write into the zero fill");
        f.allocate(4).expect("allocate never shortens");
        assert_eq!(f.size().expect("size"), 10);
        f.set_len(8).expect("cut the zero fill");
        f.sync_data().expect("sync");
        let g = s.open(&path, false).expect("open");
        assert_eq!(read_all(&g).expect("read all"), b"hello!ab");
        assert_eq!(s.list(dir).expect("list"), vec!["a.wal".to_string()]);
        s.sync_dir(dir).expect("sync dir");
        s.remove(&path).expect("remove");
        assert!(s.list(dir).expect("list").is_empty());
        assert!(s.open(&path, true).is_err());
    }

    #[test]
    fn fs_storage_behaves_as_the_trait_says() {
        let dir = std::env::temp_dir().join(format!("larder-storage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        exercise(&FsStorage::new(), &dir);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn mem_storage_behaves_as_the_trait_says() {
        exercise(&MemStorage::new(), Path::new("/log"));
    }
}
