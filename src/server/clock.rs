//! The server's clock: wall-clock time that never runs backwards.

use tokio::time::Instant;

use crate::engine::Timestamp;

/// Maps a monotonic clock onto wall-clock nanoseconds since the Unix epoch, fixed at
/// start-up, so engine time never jumps when the system clock is set. Uses tokio's
/// `Instant`, so tests with paused time control it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_start: u64,
    mono_start: Instant,
}

impl Clock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Clock {
        let wall_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            wall_start,
            mono_start: Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.wall_start + self.mono_start.elapsed().as_nanos() as u64)
    }

    /// The monotonic instant corresponding to `at`.
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        let offset = at.0.saturating_sub(self.wall_start);
        self.mono_start + std::time::Duration::from_nanos(offset)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
