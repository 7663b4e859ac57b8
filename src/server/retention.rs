//! Which log segment each tube setting and pause in force was last written to, so that
//! those records can be written again before the segment holding them is removed.
//!
//! A `config-tube` or `pause-tube` record stays in force long after the jobs around it are
//! gone. The writer may remove a segment only once nothing in it is needed, so when the
//! oldest such record is all that keeps an old segment, the broker writes it again at
//! the head of the log ([`SettingRecords::relog`]), a bounded number per batch of
//! changes. Replaying a setting twice changes nothing, and the newest record wins.
//!
//! The records in force may keep the newest [`SettingRecords::window`] segments: as many
//! as they fill, and one more. Only records older than that (and older than what the
//! jobs keep) are written again, so settings that fill several segments are not chased
//! around the log: each is rewritten about once per window of new log written.
//!
//! Cost: noting a record and finding the oldest are `O(log n)` in the settings in force;
//! each batch rewrites at most [`RELOG_PER_BATCH`] records.

use std::collections::{BTreeSet, HashMap};

use crate::engine::{Change, Engine};
use crate::protocol::{TubeName, TubeSetting};

/// Most setting records written again per batch of changes.
pub const RELOG_PER_BATCH: usize = 64;

/// What a setting record is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Config(TubeName, TubeSetting),
    Pause(TubeName),
}

/// The segment of the newest record of each setting and pause in force.
#[derive(Debug, Default)]
pub struct SettingRecords {
    /// Segment and framed size of each record.
    by_key: HashMap<Key, (u64, u64)>,
    by_segment: BTreeSet<(u64, Key)>,
    /// Framed bytes of all the records.
    bytes: u64,
}

impl SettingRecords {
    /// Notes that `change`, if it sets a tube setting or pauses a tube, was written to
    /// `segment` in a record of `size` bytes (framing included).
    pub fn note(&mut self, change: &Change, segment: u64, size: u64) {
        match change {
            Change::ConfigTube {
                tube,
                setting,
                value: Some(_),
            } => self.set(Key::Config(tube.clone(), *setting), Some((segment, size))),
            Change::ConfigTube {
                tube,
                setting,
                value: None,
            } => self.set(Key::Config(tube.clone(), *setting), None),
            Change::PauseTube { tube, .. } => {
                self.set(Key::Pause(tube.clone()), Some((segment, size)))
            }
            _ => {}
        }
    }

    fn set(&mut self, key: Key, place: Option<(u64, u64)>) {
        if let Some((old, size)) = self.by_key.remove(&key) {
            self.by_segment.remove(&(old, key.clone()));
            self.bytes -= size;
        }
        if let Some((segment, size)) = place {
            self.by_segment.insert((segment, key.clone()));
            self.by_key.insert(key, (segment, size));
            self.bytes += size;
        }
    }

    /// How many of the newest segments (of `segment_size` bytes) the records may keep:
    /// as many as they fill, and one more.
    pub fn window(&self, segment_size: u64) -> u64 {
        self.bytes / segment_size.max(1) + 2
    }

    /// The oldest segment holding a record in force (`u64::MAX` if none). A pause that has
    /// ended may still count until the next [`SettingRecords::relog`] drops it.
    pub fn oldest(&self) -> u64 {
        self.by_segment.first().map_or(u64::MAX, |(s, _)| *s)
    }

    /// How many records are tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The records, as `engine` has them now, of up to `max` of the oldest settings and
    /// pauses written before segment `below`; ones no longer in force (a pause that
    /// ended) are forgotten instead. The caller journals the returned changes and
    /// [`SettingRecords::note`]s where they land.
    pub fn relog(&mut self, engine: &Engine, below: u64, max: usize) -> Vec<Change> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((segment, key)) = self.by_segment.first().cloned() else {
                break;
            };
            if segment >= below {
                break;
            }
            let now = match &key {
                Key::Config(tube, setting) => engine.setting_in_force(tube, *setting),
                Key::Pause(tube) => engine.pause_in_force(tube),
            };
            match now {
                // Moved out of the way until it is noted where it lands.
                Some(change) => {
                    let size = self.by_key.get(&key).map_or(0, |&(_, size)| size);
                    self.set(key, Some((u64::MAX, size)));
                    out.push(change);
                }
                None => self.set(key, None),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, ProcessInfo, Timestamp};
    use crate::protocol::Command;

    fn tube(name: &str) -> TubeName {
        TubeName::new(name.as_bytes()).expect("tube name")
    }

    fn config(name: &str, value: Option<u64>) -> Change {
        Change::ConfigTube {
            tube: tube(name),
            setting: TubeSetting::MaxAttempts,
            value,
        }
    }

    #[test]
    fn the_oldest_record_is_found_and_replaced_records_move_on() {
        let mut r = SettingRecords::default();
        assert_eq!(r.oldest(), u64::MAX);
        r.note(&config("a", Some(3)), 5, 100);
        r.note(&config("b", Some(3)), 7, 100);
        assert_eq!(r.oldest(), 5);
        assert_eq!(r.window(150), 3);
        r.note(&config("a", Some(4)), 9, 100);
        assert_eq!(r.oldest(), 7);
        r.note(&config("b", None), 10, 0);
        assert_eq!(r.oldest(), 9);
        assert_eq!(r.len(), 1);
        assert_eq!(r.window(150), 2);
    }

    #[test]
    fn relog_rewrites_at_most_max_of_the_oldest_and_drops_what_is_no_longer_in_force() {
        let now = Timestamp(1_000_000_000);
        let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
        let sid = engine.open_session();
        let mut r = SettingRecords::default();
        for i in 0..10 {
            let name = format!("t{i}");
            let cmd = Command::ConfigTube {
                tube: tube(&name),
                setting: TubeSetting::MaxAttempts,
                value: Some(i + 1),
            };
            engine.apply(sid, cmd, now);
            r.note(&config(&name, Some(i + 1)), i, 40);
        }
        // A pause record for a tube that is not paused any more.
        r.note(
            &Change::PauseTube {
                tube: tube("gone"),
                until: now,
            },
            0,
            40,
        );
        engine.discard_changes();
        let first = r.relog(&engine, 6, 4);
        assert_eq!(first.len(), 4);
        // Oldest first: t0 (segment 0) and the ended pause come first; the pause is dropped.
        assert!(first.contains(&config("t0", Some(1))), "{first:?}");
        for c in &first {
            r.note(c, 20, 40);
        }
        let second = r.relog(&engine, 6, 64);
        // t4 and t5 remain below segment 6; t6.. are not due.
        assert_eq!(second, vec![config("t4", Some(5)), config("t5", Some(6))]);
        for c in &second {
            r.note(c, 20, 40);
        }
        assert_eq!(r.oldest(), 6);
        assert!(r.relog(&engine, 6, 64).is_empty());
        assert_eq!(r.len(), 10);
    }
}
