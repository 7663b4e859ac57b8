//! Tube commands: use, watch, ignore, pause-tube, list-tubes, list-tube-used,
//! list-tubes-watched, and larder's config-tube.

use std::fmt::Write;

use super::session::SessionId;
use super::time::Timestamp;
use super::tube::{Pause, TubeId};
use super::{Change, Engine};
use crate::protocol::{Refusal, Reply, TubeName, TubeSetting};

impl Engine {
    /// The tube named `name`, created if it does not exist and `--max-tubes` allows one
    /// more.
    fn tube_for(&mut self, name: &TubeName) -> Result<TubeId, Refusal> {
        if let Some(id) = self.tubes.find(name) {
            return Ok(id);
        }
        let max = self.config.limits.max_tubes;
        if max > 0 && self.tubes.len() as u64 >= max {
            self.count_refusal(Refusal::MaxTubes, None);
            return Err(Refusal::MaxTubes);
        }
        self.count_passed(Refusal::MaxTubes);
        Ok(self.tubes.find_or_create(name))
    }

    pub(super) fn use_tube(&mut self, sid: SessionId, name: &TubeName) -> Reply {
        if !self.sessions.contains_key(&sid) {
            return Reply::InternalError;
        }
        let new = match self.tube_for(name) {
            Ok(id) => id,
            Err(refusal) => return Reply::Refused(refusal),
        };
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Reply::InternalError;
        };
        let old = std::mem::replace(&mut session.using, new);
        self.tubes.get_mut(new).using += 1;
        self.tubes.get_mut(old).using -= 1;
        self.drop_tube_if_unused(old);
        Reply::Using(name.clone())
    }

    /// `watch`: refused with `max-watches-per-connection` if the session watches as many
    /// tubes as it may and this one is new to it, then with `max-tubes` if the tube does
    /// not exist and no more may. A refused watch changes nothing.
    pub(super) fn watch(&mut self, sid: SessionId, name: &TubeName) -> Reply {
        let Some(session) = self.sessions.get(&sid) else {
            return Reply::InternalError;
        };
        let existing = self.tubes.find(name);
        if existing.is_some_and(|t| session.watching.contains(t)) {
            return Reply::Watching(session.watching.len());
        }
        let max = self.config.limits.max_watches_per_connection;
        if max > 0 && session.watching.len() as u64 >= max {
            self.count_refusal(Refusal::MaxWatchesPerConnection, None);
            return Reply::Refused(Refusal::MaxWatchesPerConnection);
        }
        let tube = match self.tube_for(name) {
            Ok(id) => id,
            Err(refusal) => return Reply::Refused(refusal),
        };
        self.count_passed(Refusal::MaxWatchesPerConnection);
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Reply::InternalError;
        };
        session.watching.add(tube);
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

    /// `pause-tube`. A zero delay is no pause, as in beanstalkd (whose pause of zero lasts
    /// one nanosecond): a pause in force ends at once and waiters are served. It is
    /// still journaled, as a pause ending `now`, so a replay ends the earlier one too.
    pub(super) fn pause_tube(&mut self, name: &TubeName, delay: u32, now: Timestamp) -> Reply {
        let Some(id) = self.tubes.find(name) else {
            return Reply::NotFound;
        };
        let tube = self.tubes.get_mut(id);
        tube.counters.pauses += 1;
        let pause = (delay > 0).then(|| {
            let nanos = u64::from(delay) * super::NANOS_PER_SEC;
            Pause {
                nanos,
                until: now + nanos,
            }
        });
        if let Some(old) = std::mem::replace(&mut tube.pause, pause) {
            self.pauses.remove(&(old.until, id));
        }
        if let Some(p) = pause {
            self.pauses.insert((p.until, id));
        }
        self.refresh_serveable(id);
        self.changes.push(Change::PauseTube {
            tube: name.clone(),
            until: pause.map_or(now, |p| p.until),
        });
        if pause.is_none() {
            self.process_queue(now);
        }
        Reply::Paused
    }

    pub(super) fn config_tube(
        &mut self,
        name: &TubeName,
        setting: TubeSetting,
        value: Option<u64>,
    ) -> Reply {
        // Setting a value keeps a tube alive, so it must fit under `max-tubes`; returning
        // a setting to its default creates nothing that lasts.
        let id = match value {
            Some(_) => match self.tube_for(name) {
                Ok(id) => id,
                Err(refusal) => return Reply::Refused(refusal),
            },
            None => self.tubes.find_or_create(name),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, Limits, Outcome, ProcessInfo};
    use crate::protocol::{Command, JobId};

    fn name(s: &str) -> TubeName {
        TubeName::new(s.as_bytes()).expect("name")
    }

    fn reply(e: &mut Engine, sid: SessionId, cmd: Command, now: Timestamp) -> Reply {
        match e.apply(sid, cmd, now) {
            Outcome::Reply(r) => r,
            other => panic!("got {other:?}"),
        }
    }

    fn put(e: &mut Engine, sid: SessionId, now: Timestamp) -> Reply {
        let cmd = Command::Put {
            pri: 0,
            delay: 0,
            ttr: 60,
            body: b"x"[..].into(),
        };
        reply(e, sid, cmd, now)
    }

    #[test]
    fn a_zero_pause_ends_a_pause_at_once_and_serves_the_waiter() {
        let now = Timestamp(5);
        let mut e = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
        let (w, p) = (e.open_session(), e.open_session());
        let pause = |delay| Command::PauseTube {
            tube: name("default"),
            delay,
        };
        assert_eq!(reply(&mut e, p, pause(100), now), Reply::Paused);
        assert_eq!(put(&mut e, p, now), Reply::Inserted(JobId(1)));
        assert_eq!(e.apply(w, Command::Reserve, now), Outcome::Blocked);
        assert!(e.take_wakeups().is_empty());
        assert_eq!(reply(&mut e, p, pause(0), now), Reply::Paused);
        let woken = e.take_wakeups();
        assert!(
            matches!(woken.as_slice(), [(s, Reply::Reserved { id: JobId(1), .. })] if *s == w),
            "{woken:?}"
        );
        assert!(!e.is_paused(&name("default")));
        // And at the same instant, a zero pause leaves nothing paused for the next reserve.
        assert_eq!(put(&mut e, p, now), Reply::Inserted(JobId(2)));
        assert_eq!(reply(&mut e, p, pause(0), now), Reply::Paused);
        let got = reply(&mut e, p, Command::ReserveWithTimeout(0), now);
        assert!(
            matches!(got, Reply::Reserved { id: JobId(2), .. }),
            "{got:?}"
        );
    }

    #[test]
    fn the_tube_limit_refuses_new_tubes_only_and_the_watch_limit_counts_per_session() {
        let now = Timestamp(5);
        let config = EngineConfig {
            limits: Limits {
                max_tubes: 2,
                max_watches_per_connection: 2,
                ..Limits::UNLIMITED
            },
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config, ProcessInfo::fixed(), now);
        let s = e.open_session();
        let watch = |t: &str| Command::Watch(name(t));
        assert_eq!(reply(&mut e, s, watch("a"), now), Reply::Watching(2));
        assert_eq!(
            reply(&mut e, s, watch("b"), now),
            Reply::Refused(Refusal::MaxWatchesPerConnection)
        );
        assert_eq!(reply(&mut e, s, watch("a"), now), Reply::Watching(2));
        assert_eq!(
            reply(&mut e, s, Command::Use(name("b")), now),
            Reply::Refused(Refusal::MaxTubes)
        );
        assert_eq!(e.tube_names(), vec![name("default"), name("a")]);
        assert_eq!(
            reply(&mut e, s, Command::Ignore(name("a")), now),
            Reply::Watching(1)
        );
        assert_eq!(
            reply(&mut e, s, Command::Use(name("b")), now),
            Reply::Using(name("b"))
        );
        assert_eq!(e.refusals(Refusal::MaxTubes), 1);
        assert_eq!(e.refusals(Refusal::MaxWatchesPerConnection), 1);
    }
}
