//! Facts about the process and host that `stats` reports. The engine never reads them from
//! the system itself: the server supplies them.

use std::sync::Arc;

/// CPU time used by the process, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User time.
    pub user_micros: u64,
    /// System time.
    pub system_micros: u64,
}

/// Process and host facts for `stats`.
#[derive(Clone)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Version string.
    pub version: String,
    /// Random per-process instance id, hex.
    pub instance_id: String,
    /// Host name.
    pub hostname: String,
    /// Operating system version (uname's version).
    pub os: String,
    /// Machine architecture (uname's machine).
    pub platform: String,
    /// Reads the process's CPU times when `stats` is asked for.
    pub cpu_times: Arc<dyn Fn() -> CpuTimes + Send + Sync>,
}

impl ProcessInfo {
    /// Fixed values, for tests.
    pub fn fixed() -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            instance_id: "0000000000000000".to_owned(),
            hostname: "localhost".to_owned(),
            os: "test".to_owned(),
            platform: "test".to_owned(),
            cpu_times: Arc::new(CpuTimes::default),
        }
    }
}

impl std::fmt::Debug for ProcessInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessInfo")
            .field("pid", &self.pid)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Figures about the write-ahead log for `stats` (larder's own fields, after beanstalkd's).
/// The server refreshes them; the engine only reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The fsync policy (`always`, `every=MS`, `never`).
    pub fsync: String,
    /// Segment files in the log.
    pub segments: u64,
    /// Number of the oldest segment.
    pub oldest_segment: u64,
    /// Number of the segment being written.
    pub current_segment: u64,
    /// Records written since the server started.
    pub records_written: u64,
    /// fdatasync calls since the server started.
    pub fsyncs: u64,
    /// Bytes in the log's segments.
    pub bytes: u64,
    /// Segments removed since the server started.
    pub segments_removed: u64,
    /// Jobs copied forward by compaction since the server started.
    pub jobs_compacted: u64,
}
