//! An in-memory [`Storage`] for tests, with power cuts and injected failures.
//!
//! Each file is a node with its current bytes and its durable bytes (as of its last
//! successful `sync_data`). Each path maps to a node in the current namespace and, as of
//! the last `sync_dir` of its parent, in the durable namespace. [`MemStorage::crash`]
//! replaces the current state with the durable one: unsynced bytes and unsynced creations
//! and removals are lost, as in a power cut. Clones share the same files, so a test keeps
//! a clone to crash or inspect the storage after handing one to the log.
//!
//! Failures: [`MemStorage::fail_write`] and [`MemStorage::fail_sync`] make the Nth later
//! write (or the Nth later `sync_data`/`sync_dir`) fail. A failed write first writes
//! half of its buffer, like a short write before the disk filled; a failed sync makes
//! nothing durable.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Storage, StorageFile};

/// The error an injected failure returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `ENOSPC`: no space left on device.
    NoSpace,
    /// `EIO`: input/output error.
    Io,
    /// `EMFILE`: the process has no file descriptor left.
    NoFiles,
}

impl Fault {
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Fault::NoSpace => libc::ENOSPC,
            Fault::Io => libc::EIO,
            Fault::NoFiles => libc::EMFILE,
        })
    }
}

/// In-memory files; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<u64, Node>,
    next_node: u64,
    epoch: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    writes: u64,
    syncs: u64,
    fail_write_at: Option<(u64, Fault)>,
    fail_sync_at: Option<(u64, Fault)>,
    /// Creates that fail from now on, and with what.
    fail_creates: Option<(u64, Fault)>,
}

#[derive(Debug, Default)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
}

impl State {
    fn node(&mut self, id: u64, epoch: u64) -> io::Result<&mut Node> {
        if epoch != self.epoch {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    fn count_sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        match self.fail_sync_at {
            Some((at, fault)) if at == self.syncs => {
                self.fail_sync_at = None;
                Err(fault.error())
            }
            _ => Ok(()),
        }
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A power cut: every file goes back to its last synced contents and every directory
    /// to its last synced entries. Files open before the crash become unusable.
    pub fn crash(&self) {
        let mut st = self.lock();
        st.epoch += 1;
        st.names = st.durable_names.clone();
        let live: Vec<u64> = st.names.values().copied().collect();
        let mut nodes = std::mem::take(&mut st.nodes);
        for id in live {
            if let Some(mut node) = nodes.remove(&id) {
                node.data = node.synced.clone();
                st.nodes.insert(id, node);
            }
        }
    }

    /// Makes the `nth` append from now on (1 = the next one) fail with `fault`.
    pub fn fail_write(&self, nth: u64, fault: Fault) {
        let mut st = self.lock();
        st.fail_write_at = Some((st.writes + nth, fault));
    }

    /// Makes the next `count` file creations fail with `fault` (nothing is created).
    pub fn fail_creates(&self, count: u64, fault: Fault) {
        self.lock().fail_creates = (count > 0).then_some((count, fault));
    }

    /// Makes the `nth` file or directory sync from now on (1 = the next one) fail.
    pub fn fail_sync(&self, nth: u64, fault: Fault) {
        let mut st = self.lock();
        st.fail_sync_at = Some((st.syncs + nth, fault));
    }

    /// Appends made so far, failed ones included.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// File and directory syncs made so far, failed ones included.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// The current contents of the file at `path`, if it exists.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let id = st.names.get(path)?;
        st.nodes.get(id).map(|n| n.data.clone())
    }

    /// Replaces (or creates) the file at `path` with `bytes`, durably, as a test's way to
    /// tear or corrupt a log between runs.
    pub fn set_file(&self, path: &Path, bytes: &[u8]) {
        let mut st = self.lock();
        let id = match st.names.get(path) {
            Some(&id) => id,
            None => {
                st.next_node += 1;
                let id = st.next_node;
                st.names.insert(path.to_path_buf(), id);
                id
            }
        };
        st.durable_names.insert(path.to_path_buf(), id);
        let node = st.nodes.entry(id).or_default();
        node.data = bytes.to_vec();
        node.synced = bytes.to_vec();
    }
}

impl Storage for MemStorage {
    type File = MemFile;

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<MemFile> {
        let mut st = self.lock();
        if st.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if let Some((left, fault)) = st.fail_creates {
            st.fail_creates = (left > 1).then_some((left - 1, fault));
            return Err(fault.error());
        }
        st.next_node += 1;
        let id = st.next_node;
        st.nodes.insert(id, Node::default());
        st.names.insert(path.to_path_buf(), id);
        Ok(MemFile {
            storage: self.clone(),
            node: id,
            epoch: st.epoch,
            write: true,
        })
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<MemFile> {
        let st = self.lock();
        let &id = st.names.get(path).ok_or_else(not_found)?;
        Ok(MemFile {
            storage: self.clone(),
            node: id,
            epoch: st.epoch,
            write,
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.names.remove(path).map(drop).ok_or_else(not_found)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.count_sync()?;
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, &id) in &st.names {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), id);
            }
        }
        Ok(())
    }
}

/// A file of a [`MemStorage`].
#[derive(Debug)]
pub struct MemFile {
    storage: MemStorage,
    node: u64,
    epoch: u64,
    write: bool,
}

impl MemFile {
    fn check_write(&self) -> io::Result<()> {
        if self.write {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EBADF))
        }
    }
}

impl StorageFile for MemFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check_write()?;
        let mut st = self.storage.lock();
        st.writes += 1;
        let fail = match st.fail_write_at {
            Some((at, fault)) if at == st.writes => {
                st.fail_write_at = None;
                Some(fault)
            }
            _ => None,
        };
        let node = st.node(self.node, self.epoch)?;
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let written = match fail {
            Some(_) => &buf[..buf.len() / 2],
            None => buf,
        };
        let end = start + written.len();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[start..end].copy_from_slice(written);
        match fail {
            Some(fault) => Err(fault.error()),
            None => Ok(()),
        }
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.check_write()?;
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut st = self.storage.lock();
        let node = st.node(self.node, self.epoch)?;
        if node.data.len() < len {
            node.data.resize(len, 0);
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut st = self.storage.lock();
        let node = st.node(self.node, self.epoch)?;
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| node.data.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let mut st = self.storage.lock();
        Ok(st.node(self.node, self.epoch)?.data.len() as u64)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.check_write()?;
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut st = self.storage.lock();
        st.node(self.node, self.epoch)?.data.resize(len, 0);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.storage.lock();
        st.node(self.node, self.epoch)?;
        st.count_sync()?;
        let node = st.node(self.node, self.epoch)?;
        node.synced.clone_from(&node.data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_and_entries() {
        let s = MemStorage::new();
        let dir = Path::new("/d");
        let a = dir.join("a");
        let mut f = s.create(&a).expect("create");
        f.append(b"one").expect("append");
        f.sync_data().expect("sync");
        s.sync_dir(dir).expect("sync dir");
        f.append(b"two").expect("append");
        let mut g = s.create(&dir.join("b")).expect("create");
        g.append(b"x").expect("append");
        g.sync_data().expect("sync");
        s.crash();
        assert_eq!(s.file(&a), Some(b"one".to_vec()));
        assert_eq!(
            s.file(&dir.join("b")),
            None,
            "creation was never dir-synced"
        );
        assert!(f.append(b"late").is_err(), "handles die in a crash");

        s.remove(&a).expect("remove");
        s.crash();
        assert_eq!(
            s.file(&a),
            Some(b"one".to_vec()),
            "removal was never dir-synced"
        );
    }

    #[test]
    fn injected_faults_hit_the_nth_call_once() {
        let s = MemStorage::new();
        let mut f = s.create(Path::new("/d/a")).expect("create");
        s.fail_write(2, Fault::NoSpace);
        f.append(b"ab").expect("first write");
        let err = f.append(b"cdef").expect_err("second write");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(s.file(Path::new("/d/a")), Some(b"abcd".to_vec()));
        f.append(b"g").expect("third write");

        s.fail_sync(1, Fault::Io);
        let err = f.sync_data().expect_err("sync");
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        s.crash();
        assert_eq!(s.file(Path::new("/d/a")), None);
    }
}
