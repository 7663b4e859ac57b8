//! The server's clock: wall-clock time that never runs backwards.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::time::Instant;

use crate::engine::Timestamp;

/// Maps a monotonic clock onto wall-clock nanoseconds since the Unix epoch, fixed at
/// start-up, so engine time never jumps when the system clock is set. Uses tokio's
/// `Instant`, so tests with paused time control it.
///
/// A cluster node that becomes leader may move it forward ([`Clock::advance_to`]) so that
/// it is not behind the times the previous leader recorded; it never moves back.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_start: u64,
    mono_start: Instant,
    /// Nanoseconds added to the wall clock, shared by every copy of this clock (one small
    /// allocation per clock made, which lives as long as the process).
    shift: &'static AtomicI64,
}

impl Clock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Clock {
        Clock::shifted(0)
    }

    /// A clock `shift_ms` milliseconds off the current wall-clock time (for tests of
    /// clocks that disagree: the hidden `--clock-offset-ms`).
    pub fn shifted(shift_ms: i64) -> Clock {
        let wall_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            wall_start,
            mono_start: Instant::now(),
            shift: Box::leak(Box::new(AtomicI64::new(shift_ms.saturating_mul(1_000_000)))),
        }
    }

    fn start(&self) -> u64 {
        self.wall_start
            .saturating_add_signed(self.shift.load(Ordering::Relaxed))
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.start() + self.mono_start.elapsed().as_nanos() as u64)
    }

    /// The monotonic instant corresponding to `at`.
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        let offset = at.0.saturating_sub(self.start());
        self.mono_start + std::time::Duration::from_nanos(offset)
    }

    /// Moves the clock forward to `floor` if it is behind it; returns by how much.
    pub fn advance_to(&self, floor: Timestamp) -> Option<std::time::Duration> {
        let behind = floor.0.checked_sub(self.now().0).filter(|&b| b > 0)?;
        let behind = i64::try_from(behind).unwrap_or(i64::MAX);
        self.shift.fetch_add(behind, Ordering::Relaxed);
        Some(std::time::Duration::from_nanos(behind as u64))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_moves_forward_to_a_floor_and_never_back() {
        let clock = Clock::new();
        let copy = clock;
        let now = clock.now();
        let floor = Timestamp(now.0 + 60_000_000_000);
        let moved = clock.advance_to(floor).expect("moved");
        assert!(moved.as_secs() >= 59, "{moved:?}");
        assert!(copy.now() >= floor, "a copy of the clock did not move");
        assert!(clock.advance_to(now).is_none(), "moved back");
        // Deadlines map to instants on the moved clock.
        let soon = Timestamp(copy.now().0 + 1_000_000_000);
        let wait = clock
            .instant_at(soon)
            .saturating_duration_since(Instant::now());
        assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
        assert!(wait >= std::time::Duration::from_millis(900), "{wait:?}");
    }
}
