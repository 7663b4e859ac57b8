//! The disk reserve: a file of `--disk-reserve` bytes in the data directory that holds
//! space back for when the disk fills (beanstalkd's binlog reserves space for the same
//! reason). The log writer releases it the first time a write finds no space, so the
//! records already accepted get written and workers can go on deleting, releasing and
//! burying while new jobs are refused; it takes the space back once there is room again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

/// The reserve file's name in the data directory.
pub const FILE_NAME: &str = "wal-reserve";

/// The reserve file and whether it currently holds its space.
pub struct DiskReserve {
    path: PathBuf,
    size: u64,
    held: bool,
}

impl DiskReserve {
    /// A reserve of `size` bytes at `path`, not yet taken.
    pub fn new(path: PathBuf, size: u64) -> DiskReserve {
        DiskReserve {
            path,
            size,
            held: false,
        }
    }

    /// Whether the reserve currently holds its space (always true when it is 0 bytes).
    pub fn is_held(&self) -> bool {
        self.held || self.size == 0
    }

    /// Takes the space (again). Fails, leaving no file behind, if there is not enough.
    pub fn take(&mut self) -> io::Result<()> {
        if self.is_held() {
            return Ok(());
        }
        let result = self.allocate();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        self.held = result.is_ok();
        result
    }

    fn allocate(&self) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.size) {
            Ok(()) => {}
            // Filesystems without fallocate: write the bytes out.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
                write_zeros(&file, self.size)?
            }
            Err(e) => return Err(e.into()),
        }
        // No sync: the blocks are the filesystem's to account for at once, and a reserve
        // lost in a crash is simply taken again at the next start.
        Ok(())
    }

    /// Gives the space back to the filesystem; returns false if there was none held.
    pub fn release(&mut self) -> bool {
        if !self.held {
            return false;
        }
        self.held = false;
        match std::fs::remove_file(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot remove the disk reserve");
                false
            }
        }
    }
}

fn write_zeros(mut file: &File, size: u64) -> io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_holds_its_space_until_released() {
        let dir = std::env::temp_dir().join(format!("larder-reserve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(FILE_NAME);
        let mut r = DiskReserve::new(path.clone(), 1 << 16);
        assert!(!r.is_held());
        r.take().expect("take");
        assert!(r.is_held());
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 1 << 16);
        assert!(r.release());
        assert!(!path.exists());
        assert!(!r.release(), "nothing left to release");
        r.take().expect("take again");
        assert!(path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
