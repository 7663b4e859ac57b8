//! Tubes: named queues holding ready, delayed and buried jobs, and the sessions waiting on
//! them. A tube lives while a session uses or watches it, it holds a job, or it has a
//! setting of its own; `default` always lives.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ready::ReadySet;
use super::session::SessionId;
use super::settings::TubeSettings;
use super::time::Timestamp;
use crate::protocol::{BuryReason, JobId, TubeName};

/// Index of a live tube in [`Tubes`]. Reused after the tube is dropped; nothing holds a
/// `TubeId` past its tube's life (jobs and sessions keep their tube alive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TubeId(pub u32);

/// Per-tube counters reported by `stats-tube`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TubeCounters {
    /// Jobs ever put into the tube (while it lived).
    pub total_jobs: u64,
    /// `delete` commands that deleted a job of this tube.
    pub deletes: u64,
    /// `pause-tube` commands on this tube.
    pub pauses: u64,
    /// Puts refused by the tube's `max-tube-jobs`.
    pub refused_jobs: u64,
    /// Puts refused by the tube's `max-tube-bytes`.
    pub refused_bytes: u64,
}

/// A pause in force.
#[derive(Clone, Copy, Debug)]
pub struct Pause {
    /// Length of the pause in nanoseconds (at least 1).
    pub nanos: u64,
    /// When it ends.
    pub until: Timestamp,
}

/// One tube.
#[derive(Debug)]
pub struct Tube {
    /// Its name.
    pub name: TubeName,
    /// Ready jobs, most urgent first (priority, then id).
    pub ready: ReadySet,
    /// Delayed jobs, soonest first.
    pub delayed: BTreeSet<(Timestamp, JobId)>,
    /// Buried jobs, oldest burial first.
    pub buried: BTreeMap<u64, JobId>,
    /// Jobs of this tube currently reserved.
    pub reserved: u64,
    /// Body bytes of the tube's jobs, in any state.
    pub bytes: u64,
    /// Ready jobs with an urgent priority.
    pub urgent: u64,
    /// Sessions using this tube.
    pub using: u32,
    /// Sessions watching this tube.
    pub watching: u32,
    /// Sessions blocked in reserve that watch this tube, by the sequence number of their
    /// wait (so in the order they started waiting).
    pub waiting: BTreeMap<u64, SessionId>,
    /// The pause in force, if any.
    pub pause: Option<Pause>,
    /// Counters.
    pub counters: TubeCounters,
    /// Settings the tube sets itself (`config-tube`).
    pub settings: TubeSettings,
    /// Buried jobs that have a [`super::job::Burial`], by [`BuryReason`] index, lowest id
    /// first (the dead-letter commands page through these).
    pub dead: [BTreeSet<JobId>; BuryReason::COUNT],
    /// The entry this tube has in the engine's set of tubes that can serve a waiter now
    /// (its most urgent ready job), if it has one: kept by `Engine::refresh_serveable`.
    pub serveable: Option<(u32, JobId)>,
    /// Its place in [`Tubes`]'s listing order.
    order_pos: usize,
}

impl Tube {
    fn new(name: TubeName) -> Tube {
        Tube {
            name,
            ready: ReadySet::default(),
            delayed: BTreeSet::new(),
            buried: BTreeMap::new(),
            reserved: 0,
            bytes: 0,
            urgent: 0,
            using: 0,
            watching: 0,
            waiting: BTreeMap::new(),
            pause: None,
            counters: TubeCounters::default(),
            settings: TubeSettings::default(),
            dead: Default::default(),
            serveable: None,
            order_pos: 0,
        }
    }

    /// Jobs of any state in this tube.
    pub fn job_count(&self) -> u64 {
        self.ready.len() as u64
            + self.delayed.len() as u64
            + self.buried.len() as u64
            + self.reserved
    }

    fn unused(&self) -> bool {
        self.using == 0
            && self.watching == 0
            && self.job_count() == 0
            && self.waiting.is_empty()
            && self.settings.is_default()
    }
}

/// All live tubes, by id and by name.
#[derive(Debug, Default)]
pub struct Tubes {
    slots: Vec<Option<Tube>>,
    free: Vec<TubeId>,
    by_name: HashMap<TubeName, TubeId>,
    /// Listing order. A dropped tube's place is taken by the last tube, as in beanstalkd,
    /// so `list-tubes` answers in the same order.
    order: Vec<TubeId>,
}

impl Tubes {
    /// The tube with `id`. Panics on a dangling id, which is an engine bug.
    pub fn get(&self, id: TubeId) -> &Tube {
        self.slots[id.0 as usize].as_ref().expect("live tube id")
    }

    /// The tube with `id`, mutably.
    pub fn get_mut(&mut self, id: TubeId) -> &mut Tube {
        self.slots[id.0 as usize].as_mut().expect("live tube id")
    }

    /// Looks a tube up by name.
    pub fn find(&self, name: &TubeName) -> Option<TubeId> {
        self.by_name.get(name).copied()
    }

    /// The tube named `name`, created if it does not exist.
    pub fn find_or_create(&mut self, name: &TubeName) -> TubeId {
        if let Some(id) = self.find(name) {
            return id;
        }
        let mut tube = Tube::new(name.clone());
        tube.order_pos = self.order.len();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id.0 as usize] = Some(tube);
                id
            }
            None => {
                self.slots.push(Some(tube));
                TubeId((self.slots.len() - 1) as u32)
            }
        };
        self.by_name.insert(name.clone(), id);
        self.order.push(id);
        id
    }

    /// Drops the tube if nothing keeps it alive (`default` is never dropped) and returns
    /// it, so the caller can forget its pause.
    pub fn drop_if_unused(&mut self, id: TubeId) -> Option<Tube> {
        let tube = self.get(id);
        if !tube.unused() || tube.name.as_str() == "default" {
            return None;
        }
        let (name, pos) = (tube.name.clone(), tube.order_pos);
        self.by_name.remove(&name);
        self.order.swap_remove(pos);
        if let Some(&moved) = self.order.get(pos) {
            self.get_mut(moved).order_pos = pos;
        }
        self.free.push(id);
        self.slots[id.0 as usize].take()
    }

    /// Live tubes in listing order (see `order`).
    pub fn listing_order(&self) -> &[TubeId] {
        &self.order
    }

    /// Number of live tubes.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// All live tubes.
    pub fn iter(&self) -> impl Iterator<Item = (TubeId, &Tube)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (TubeId(i as u32), t)))
    }
}
