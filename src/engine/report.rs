//! Read-only views of the engine for the server's metrics exporter and health checks:
//! the `stats` and extended `stats-tube` documents without a session, the tube names, and
//! whether puts are being refused for the disk floor.

use bytes::Bytes;

use super::time::Timestamp;
use super::Engine;
use crate::protocol::{Reply, TubeName};

impl Engine {
    /// The YAML body `stats` would answer with at `now`, larder's fields included.
    pub fn stats_document(&self, now: Timestamp) -> Bytes {
        match self.stats(true, now) {
            Reply::Ok(body) => body,
            _ => Bytes::new(),
        }
    }

    /// The YAML body of `stats-tube` with larder's fields, if the tube exists.
    pub fn tube_stats_document(&self, name: &TubeName, now: Timestamp) -> Option<Bytes> {
        match self.stats_tube(name, true, now) {
            Reply::Ok(body) => Some(body),
            _ => None,
        }
    }

    /// Whether free space is known to be below `--min-free-disk` (puts are refused).
    pub fn below_disk_floor(&self) -> bool {
        let floor = self.config.limits.min_free_disk;
        floor > 0 && self.free_disk().is_some_and(|free| free < floor)
    }
}
