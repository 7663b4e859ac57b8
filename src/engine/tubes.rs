//! Tube commands: use, watch, ignore, pause-tube, list-tubes, list-tube-used,
//! list-tubes-watched, and larder's config-tube.

use std::fmt::Write;

use super::session::SessionId;
use super::time::Timestamp;
use super::tube::Pause;
use super::{Change, Engine};
use crate::protocol::{Reply, TubeName, TubeSetting};

impl Engine {
    pub(super) fn use_tube(&mut self, sid: SessionId, name: &TubeName) -> Reply {
        let new = self.tubes.find_or_create(name);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Reply::InternalError;
        };
        let old = std::mem::replace(&mut session.using, new);
        self.tubes.get_mut(new).using += 1;
        self.tubes.get_mut(old).using -= 1;
        self.drop_tube_if_unused(old);
        Reply::Using(name.clone())
    }

    pub(super) fn watch(&mut self, sid: SessionId, name: &TubeName) -> Reply {
        let tube = self.tubes.find_or_create(name);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Reply::InternalError;
        };
        if !session.watching.add(tube) {
            return Reply::Watching(session.watching.len());
        }
        let count = session.watching.len();
        let waiting = session.wait.map(|w| w.seq);
        let t = self.tubes.get_mut(tube);
        t.watching += 1;
        if let Some(seq) = waiting {
            t.waiting.insert(seq, sid);
            self.refresh_serveable(tube);
        }
        Reply::Watching(count)
    }

    pub(super) fn ignore(&mut self, sid: SessionId, name: &TubeName) -> Reply {
        let tube = self.tubes.find(name);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Reply::InternalError;
        };
        let Some(tube) = tube.filter(|&t| session.watching.contains(t)) else {
            return Reply::Watching(session.watching.len());
        };
        if session.watching.len() < 2 {
            return Reply::NotIgnored;
        }
        // The last watched tube takes the ignored one's place, as in beanstalkd.
        session.watching.remove(tube);
        let count = session.watching.len();
        let waiting = session.wait.map(|w| w.seq);
        let t = self.tubes.get_mut(tube);
        t.watching -= 1;
        if let Some(seq) = waiting {
            t.waiting.remove(&seq);
            self.refresh_serveable(tube);
        }
        self.drop_tube_if_unused(tube);
        Reply::Watching(count)
    }

    pub(super) fn pause_tube(&mut self, name: &TubeName, delay: u32, now: Timestamp) -> Reply {
        let Some(id) = self.tubes.find(name) else {
            return Reply::NotFound;
        };
        // A zero delay still pauses for an instant, so waiters are woken when it ends.
        let nanos = (u64::from(delay) * super::NANOS_PER_SEC).max(1);
        let until = now + nanos;
        let tube = self.tubes.get_mut(id);
        if let Some(old) = tube.pause.replace(Pause { nanos, until }) {
            self.pauses.remove(&(old.until, id));
        }
        tube.counters.pauses += 1;
        self.pauses.insert((until, id));
        self.refresh_serveable(id);
        self.changes.push(Change::PauseTube {
            tube: name.clone(),
            until,
        });
        Reply::Paused
    }

    pub(super) fn config_tube(
        &mut self,
        name: &TubeName,
        setting: TubeSetting,
        value: Option<u64>,
    ) -> Reply {
        let id = self.tubes.find_or_create(name);
        self.tubes.get_mut(id).settings.set(setting, value);
        self.changes.push(Change::ConfigTube {
            tube: name.clone(),
            setting,
            value,
        });
        self.drop_tube_if_unused(id);
        Reply::Configured
    }

    pub(super) fn list_tubes(&self) -> Reply {
        yaml_list(
            self.tubes
                .listing_order()
                .iter()
                .map(|&t| self.tube_name(t).as_str()),
        )
    }

    pub(super) fn list_tube_used(&self, sid: SessionId) -> Reply {
        match self.sessions.get(&sid) {
            Some(s) => Reply::Using(self.tubes.get(s.using).name.clone()),
            None => Reply::InternalError,
        }
    }

    pub(super) fn list_tubes_watched(&self, sid: SessionId) -> Reply {
        match self.sessions.get(&sid) {
            Some(s) => yaml_list(s.watching.iter().map(|t| self.tube_name(t).as_str())),
            None => Reply::InternalError,
        }
    }
}

/// A YAML sequence of names, as beanstalkd formats tube lists.
fn yaml_list<'a>(names: impl Iterator<Item = &'a str>) -> Reply {
    let mut out = String::from("---\n");
    for name in names {
        let _ = writeln!(out, "- {name}");
    }
    Reply::Ok(out.into())
}
