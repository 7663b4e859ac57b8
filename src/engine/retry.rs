//! Retries: counting attempts, the backoff schedule, dead-lettering a job that used up its
//! tube's `max-attempts`, and larder's `fail` command.
//!
//! Every reservation that ends without a delete — TTR expiry, `release`, `fail`, or the
//! worker's disconnect — goes through [`Engine::end_attempt`], which counts the attempt and
//! decides where the job goes. A tube without a retry policy (`retry-delay` 0 and
//! `max-attempts` 0) gets beanstalkd's behaviour exactly; only the count is extra.

use super::job::Burial;
use super::time::Timestamp;
use super::{Change, Engine, SessionId};
use crate::protocol::{BuryReason, JobId, Reply, TubeSetting, MAX_MILLIS};

/// Nanoseconds in a millisecond.
pub(super) const NANOS_PER_MILLI: u64 = 1_000_000;

/// How a reservation ended.
#[derive(Clone, Debug)]
pub(super) enum Ending {
    /// Its TTR ran out.
    Timeout,
    /// Its worker disconnected.
    Abandon,
    /// Its worker reported a failure with this message.
    Fail(Box<str>),
    /// Its worker released it with a priority and delay of its own.
    Release {
        /// New priority.
        pri: u32,
        /// Delay in seconds.
        delay: u32,
    },
}

/// The retry delay in milliseconds after attempt number `attempt` (1 for the first failed
/// attempt): `base × backoff^(attempt−1)`, at most `cap` (0: no cap), then shortened by up to
/// `jitter` of itself, as `random` (in `[0, 1)`) picks. `backoff` and `jitter` are in
/// thousandths. A `base` of 0 means no delay.
pub fn backoff_delay(
    base: u64,
    backoff: u64,
    cap: u64,
    jitter: u64,
    attempt: u32,
    random: f64,
) -> u64 {
    if base == 0 {
        return 0;
    }
    let growth = (backoff as f64 / 1000.0).powi(attempt.saturating_sub(1).min(10_000) as i32);
    let limit = if cap == 0 {
        MAX_MILLIS
    } else {
        cap.min(MAX_MILLIS)
    };
    let delay = (base as f64 * growth).min(limit as f64);
    let spread = delay * (jitter.min(1000) as f64 / 1000.0) * random.clamp(0.0, 1.0);
    (delay - spread).round() as u64
}

/// The last error a TTR expiry records (protocol.md §7.3): stock clients cannot send `fail`,
/// so the way the attempt ended is the best reason there is. Replay rebuilds it from the
/// attempt count, so the log carries no text for it.
pub(super) fn timeout_note(attempt: u32) -> Box<str> {
    format!("ttr expired (attempt {attempt})").into()
}

/// The last error a worker's disconnect records (see [`timeout_note`]).
pub(super) fn abandon_note(attempt: u32) -> Box<str> {
    format!("worker disconnected (attempt {attempt})").into()
}

impl Engine {
    /// Counts an attempt for detached job `id`, whose reservation just ended as `ending`,
    /// and puts the job where its tube's policy says: buried if it has used up
    /// `max-attempts`, else where the worker's release put it, else back after the retry
    /// delay (ready at once without one). Returns whether it was buried.
    pub(super) fn end_attempt(&mut self, id: JobId, ending: Ending, now: Timestamp) -> bool {
        let Some(tally) = self.change_tally(id, |t| {
            t.attempts = t.attempts.saturating_add(1);
            match ending {
                Ending::Timeout => t.counters.timeouts += 1,
                Ending::Release { .. } => t.counters.releases += 1,
                Ending::Abandon | Ending::Fail(_) => {}
            }
        }) else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        let (attempts, tube) = (tally.attempts, job.tube);
        let mut released_until = None;
        match ending {
            Ending::Timeout => {
                self.counters.timeouts += 1;
                self.notes_mut(id).last_error = Some(timeout_note(attempts));
                self.changes.push(Change::Timeout { id });
            }
            Ending::Abandon => {
                self.notes_mut(id).last_error = Some(abandon_note(attempts));
                self.changes.push(Change::Abandon { id });
            }
            Ending::Fail(message) => {
                self.notes_mut(id).last_error = Some(message.clone());
                self.changes.push(Change::Fail { id, message });
            }
            Ending::Release { pri, delay } => {
                job.pri = pri;
                job.delay = delay;
                let ready_at = (delay > 0).then(|| now.plus_secs(delay));
                self.changes.push(Change::Release {
                    id,
                    pri,
                    delay,
                    ready_at,
                });
                released_until = Some(ready_at);
            }
        }
        self.counters.attempts += 1;
        let max = self.setting(tube, TubeSetting::MaxAttempts);
        if max > 0 && u64::from(attempts) >= max {
            self.dead_letter(id, BuryReason::MaxAttempts, now);
            return true;
        }
        let ready_at = match released_until {
            Some(ready_at) => ready_at,
            None => {
                let ms = self.retry_delay(tube, attempts);
                let ready_at = (ms > 0).then(|| now + ms.saturating_mul(NANOS_PER_MILLI));
                if ready_at.is_some() {
                    self.counters.retries_delayed += 1;
                    self.changes.push(Change::Retry { id, ready_at });
                }
                ready_at
            }
        };
        match ready_at {
            Some(until) => self.make_delayed(id, until),
            None => self.make_ready(id, now),
        }
        false
    }

    /// Buries detached job `id` for `reason` at `now`, keeping its priority.
    pub(super) fn dead_letter(&mut self, id: JobId, reason: BuryReason, now: Timestamp) {
        let Some(pri) = self.jobs.get(&id).map(|j| j.pri) else {
            return;
        };
        if reason == BuryReason::MaxAttempts {
            self.counters.dead_lettered += 1;
        }
        self.changes.push(Change::DeadLetter {
            id,
            pri,
            reason,
            at: now,
        });
        self.make_buried(
            id,
            Burial {
                reason,
                at: Some(now),
            },
        );
    }

    /// The retry delay (ms) for tube `tube` after attempt `attempt`, jitter drawn now.
    fn retry_delay(&mut self, tube: super::TubeId, attempt: u32) -> u64 {
        let base = self.setting(tube, TubeSetting::RetryDelay);
        if base == 0 {
            return 0;
        }
        let jitter = self.setting(tube, TubeSetting::RetryJitter);
        let random = if jitter == 0 { 0.0 } else { self.random() };
        backoff_delay(
            base,
            self.setting(tube, TubeSetting::RetryBackoff),
            self.setting(tube, TubeSetting::RetryMax),
            jitter,
            attempt,
            random,
        )
    }

    /// A pseudo-random number in `[0, 1)` (splitmix64), for jitter. The delay it produces is
    /// logged, so replay never needs to draw it again.
    fn random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `fail <id> <message>`: only for a job reserved by `sid`.
    pub(super) fn fail(
        &mut self,
        sid: SessionId,
        id: JobId,
        message: String,
        now: Timestamp,
    ) -> Reply {
        if !self.reserved_by(sid, id) {
            return Reply::NotFound;
        }
        self.detach(id);
        if self.end_attempt(id, Ending::Fail(message.into()), now) {
            Reply::Buried
        } else {
            Reply::Released
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_schedule_grows_caps_and_jitters_within_bounds() {
        // 1 s, doubling, capped at 5 s.
        let schedule: Vec<u64> = (1..=5)
            .map(|a| backoff_delay(1000, 2000, 5000, 0, a, 0.0))
            .collect();
        assert_eq!(schedule, [1000, 2000, 4000, 5000, 5000]);
        // A factor of 1 keeps the delay; no cap lets it grow to the largest duration.
        assert_eq!(backoff_delay(700, 1000, 0, 0, 9, 0.0), 700);
        assert_eq!(backoff_delay(1000, 1_000_000, 0, 0, 50, 0.0), MAX_MILLIS);
        assert_eq!(backoff_delay(1000, 1500, 0, 0, 3, 0.0), 2250);
        // No base delay, no policy.
        assert_eq!(backoff_delay(0, 2000, 0, 500, 3, 0.7), 0);
        // Jitter 0.25 takes off up to a quarter, never adds.
        for r in [0.0, 0.1, 0.5, 0.999_999] {
            let d = backoff_delay(4000, 2000, 0, 250, 2, r);
            assert!((6000..=8000).contains(&d), "{d} for {r}");
        }
        assert_eq!(backoff_delay(4000, 2000, 0, 250, 2, 0.0), 8000);
        assert_eq!(backoff_delay(4000, 2000, 0, 250, 2, 0.5), 7000);
        // Full jitter may reach zero but no further.
        assert_eq!(backoff_delay(4000, 1000, 0, 1000, 1, 0.999_999_9), 0);
    }
}
