//! The one table of command names.
//!
//! Every command's wire name is spelled here once, as [`CommandKind::name`]. The decoder
//! matches lines against [`CommandKind::MATCH_ORDER`], the encoder writes
//! [`Command::kind`](super::Command::kind)'s name, `stats` prints `cmd-<name>` from it and
//! the metrics exporter labels `larder_commands` by the same field, and the server's role
//! table ([`crate::server`]'s auth module) classifies by kind.

/// The kinds of command: one per [`Command`](super::Command) variant. They are also the
/// families counted in `stats` (`cmd-*` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum CommandKind {
    Put,
    Peek,
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Reserve,
    ReserveWithTimeout,
    ReserveJob,
    Delete,
    Release,
    Use,
    Watch,
    Ignore,
    Bury,
    Kick,
    KickJob,
    Touch,
    Stats,
    StatsJob,
    StatsTube,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube,
    Quit,
    ConfigTube,
    Fail,
    ListDead,
    KickDead,
    DeleteDead,
    ExtendedStats,
    Auth,
}

/// How a command's name is followed on its line, for the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Args {
    /// The name is followed by a space and the arguments (`put `, `delete `, ...).
    AfterSpace,
    /// The name is matched on its own: it takes no arguments, or (`pause-tube`, `quit`)
    /// reads whatever follows itself.
    Bare,
}

impl CommandKind {
    /// Number of kinds, for counter arrays.
    pub const COUNT: usize = 32;

    /// Every kind, in declaration order (so `ALL[k.index()] == k`).
    pub const ALL: [CommandKind; CommandKind::COUNT] = {
        use CommandKind as K;
        [
            K::Put,
            K::Peek,
            K::PeekReady,
            K::PeekDelayed,
            K::PeekBuried,
            K::Reserve,
            K::ReserveWithTimeout,
            K::ReserveJob,
            K::Delete,
            K::Release,
            K::Use,
            K::Watch,
            K::Ignore,
            K::Bury,
            K::Kick,
            K::KickJob,
            K::Touch,
            K::Stats,
            K::StatsJob,
            K::StatsTube,
            K::ListTubes,
            K::ListTubeUsed,
            K::ListTubesWatched,
            K::PauseTube,
            K::Quit,
            K::ConfigTube,
            K::Fail,
            K::ListDead,
            K::KickDead,
            K::DeleteDead,
            K::ExtendedStats,
            K::Auth,
        ]
    };

    /// Command names in beanstalkd's matching order: a line selects the first entry whose
    /// name (plus a space, for [`Args::AfterSpace`]) it starts with. Order matters where
    /// one name is a prefix of another (`reserve-with-timeout ` before `reserve`,
    /// `list-tubes-watched` before `list-tubes`, `stats-job ` before `stats`).
    pub(crate) const MATCH_ORDER: [(CommandKind, Args); CommandKind::COUNT] = {
        use Args::{AfterSpace as S, Bare as B};
        use CommandKind as K;
        [
            (K::Put, S),
            (K::Peek, S),
            (K::PeekReady, B),
            (K::PeekDelayed, B),
            (K::PeekBuried, B),
            (K::ReserveWithTimeout, S),
            (K::ReserveJob, S),
            (K::Reserve, B),
            (K::Delete, S),
            (K::Release, S),
            (K::Bury, S),
            (K::Kick, S),
            (K::KickJob, S),
            (K::Touch, S),
            (K::StatsJob, S),
            (K::StatsTube, S),
            (K::Stats, B),
            (K::Use, S),
            (K::Watch, S),
            (K::Ignore, S),
            (K::ListTubesWatched, B),
            (K::ListTubeUsed, B),
            (K::ListTubes, B),
            (K::Quit, B),
            (K::PauseTube, B),
            // larder extensions; none starts with a beanstalkd name above.
            (K::ConfigTube, S),
            (K::Fail, S),
            (K::ListDead, S),
            (K::KickDead, S),
            (K::DeleteDead, S),
            (K::ExtendedStats, B),
            (K::Auth, S),
        ]
    };

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The command's name on the wire, as in `stats`' `cmd-<name>` fields.
    pub const fn name(self) -> &'static str {
        use CommandKind as K;
        match self {
            K::Put => "put",
            K::Peek => "peek",
            K::PeekReady => "peek-ready",
            K::PeekDelayed => "peek-delayed",
            K::PeekBuried => "peek-buried",
            K::Reserve => "reserve",
            K::ReserveWithTimeout => "reserve-with-timeout",
            K::ReserveJob => "reserve-job",
            K::Delete => "delete",
            K::Release => "release",
            K::Use => "use",
            K::Watch => "watch",
            K::Ignore => "ignore",
            K::Bury => "bury",
            K::Kick => "kick",
            K::KickJob => "kick-job",
            K::Touch => "touch",
            K::Stats => "stats",
            K::StatsJob => "stats-job",
            K::StatsTube => "stats-tube",
            K::ListTubes => "list-tubes",
            K::ListTubeUsed => "list-tube-used",
            K::ListTubesWatched => "list-tubes-watched",
            K::PauseTube => "pause-tube",
            K::Quit => "quit",
            K::ConfigTube => "config-tube",
            K::Fail => "fail",
            K::ListDead => "list-dead",
            K::KickDead => "kick-dead",
            K::DeleteDead => "delete-dead",
            K::ExtendedStats => "extended-stats",
            K::Auth => "auth",
        }
    }
}

impl std::fmt::Display for CommandKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_list_every_kind_once() {
        for (i, k) in CommandKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
        let mut seen = [false; CommandKind::COUNT];
        for (k, _) in CommandKind::MATCH_ORDER {
            assert!(!seen[k.index()], "{k:?} twice in MATCH_ORDER");
            seen[k.index()] = true;
        }
        let mut names: Vec<&str> = CommandKind::ALL.map(CommandKind::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CommandKind::COUNT);
    }

    #[test]
    fn no_entry_shadows_a_later_one() {
        // A line selecting a later entry must not also start with an earlier entry's
        // prefix, or the later command could never be decoded.
        let prefix = |(k, args): (CommandKind, Args)| match args {
            Args::AfterSpace => format!("{} ", k.name()),
            Args::Bare => k.name().to_owned(),
        };
        let order = CommandKind::MATCH_ORDER;
        for (i, &earlier) in order.iter().enumerate() {
            for &later in &order[i + 1..] {
                assert!(
                    !prefix(later).starts_with(&prefix(earlier)),
                    "{later:?} is shadowed by {earlier:?}"
                );
            }
        }
    }
}
