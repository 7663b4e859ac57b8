//! The one table of command names.
//!
//! Every command's wire name is spelled once, in the `command_kinds!` invocation below,
//! which generates [`CommandKind`], [`CommandKind::name`] and the decoder's matcher from
//! it. The decoder matches lines with [`CommandKind::match_line`], the encoder writes
//! [`Command::kind`](super::Command::kind)'s name, `stats` prints `cmd-<name>` from it and
//! the metrics exporter labels `larder_commands` by the same field, and the server's role
//! table (`server::auth`) classifies by kind.

/// How a command's name is followed on its line, for the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Args {
    /// The name is followed by a space and the arguments (`put `, `delete `, ...).
    AfterSpace,
    /// The name is matched on its own: it takes no arguments, or (`pause-tube`, `quit`)
    /// reads whatever follows itself.
    Bare,
}

/// The bytes after `name` (and its space, for [`Args::AfterSpace`]) if `line` starts
/// with them. Inlined into [`CommandKind::match_line`] with each name a constant, so the
/// comparisons compile to a few loads rather than calls to `memcmp`.
#[inline(always)]
fn strip<'a>(line: &'a [u8], name: &'static [u8], args: Args) -> Option<&'a [u8]> {
    // Most names are ruled out by their first letter alone.
    if line.first() != name.first() {
        return None;
    }
    let rest = line.strip_prefix(name)?;
    match args {
        Args::Bare => Some(rest),
        Args::AfterSpace => rest.strip_prefix(b" "),
    }
}

/// Generates [`CommandKind`] and its tables from one list, in the decoder's matching order.
macro_rules! command_kinds {
    ($($(#[$doc:meta])* $kind:ident $name:literal $args:ident,)*) => {
        /// The kinds of command: one per [`Command`](super::Command) variant. They are also
        /// the families counted in `stats` (`cmd-*` fields). Declared in beanstalkd's
        /// matching order (see [`CommandKind::match_line`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum CommandKind {
            $($(#[$doc])* $kind,)*
        }

        impl CommandKind {
            /// Every kind, in declaration order (so `ALL[k.index()] == k`).
            pub const ALL: [CommandKind; CommandKind::COUNT] = [$(CommandKind::$kind,)*];

            /// Every kind with how its name is followed, in matching order.
            #[cfg(test)]
            pub(crate) const MATCH_ORDER: [(CommandKind, Args); CommandKind::COUNT] =
                [$((CommandKind::$kind, Args::$args),)*];

            /// The command's name on the wire, as in `stats`' `cmd-<name>` fields.
            pub const fn name(self) -> &'static str {
                match self {
                    $(CommandKind::$kind => $name,)*
                }
            }

            /// The first kind, in declaration order, whose name `line` starts with (followed
            /// by a space, for names that take arguments after one), and the bytes after it.
            /// Order matters where one name is a prefix of another (`reserve-with-timeout `
            /// before `reserve`, `list-tubes-watched` before `list-tubes`, `stats-job `
            /// before `stats`).
            #[inline]
            pub(crate) fn match_line(line: &[u8]) -> Option<(CommandKind, &[u8])> {
                $(
                    if let Some(rest) = strip(line, $name.as_bytes(), Args::$args) {
                        return Some((CommandKind::$kind, rest));
                    }
                )*
                None
            }
        }
    };
}

command_kinds! {
    /// `put`
    Put "put" AfterSpace,
    /// `peek`
    Peek "peek" AfterSpace,
    /// `peek-ready`
    PeekReady "peek-ready" Bare,
    /// `peek-delayed`
    PeekDelayed "peek-delayed" Bare,
    /// `peek-buried`
    PeekBuried "peek-buried" Bare,
    /// `reserve-with-timeout`
    ReserveWithTimeout "reserve-with-timeout" AfterSpace,
    /// `reserve-job`
    ReserveJob "reserve-job" AfterSpace,
    /// `reserve`
    Reserve "reserve" Bare,
    /// `delete`
    Delete "delete" AfterSpace,
    /// `release`
    Release "release" AfterSpace,
    /// `bury`
    Bury "bury" AfterSpace,
    /// `kick`
    Kick "kick" AfterSpace,
    /// `kick-job`
    KickJob "kick-job" AfterSpace,
    /// `touch`
    Touch "touch" AfterSpace,
    /// `stats-job`
    StatsJob "stats-job" AfterSpace,
    /// `stats-tube`
    StatsTube "stats-tube" AfterSpace,
    /// `stats`
    Stats "stats" Bare,
    /// `use`
    Use "use" AfterSpace,
    /// `watch`
    Watch "watch" AfterSpace,
    /// `ignore`
    Ignore "ignore" AfterSpace,
    /// `list-tubes-watched`
    ListTubesWatched "list-tubes-watched" Bare,
    /// `list-tube-used`
    ListTubeUsed "list-tube-used" Bare,
    /// `list-tubes`
    ListTubes "list-tubes" Bare,
    /// `quit`: beanstalkd closes on any line starting with it.
    Quit "quit" Bare,
    /// `pause-tube`: parses its own arguments, spaces optional.
    PauseTube "pause-tube" Bare,
    // larder extensions; none starts with a beanstalkd name above.
    /// `config-tube` (larder extension)
    ConfigTube "config-tube" AfterSpace,
    /// `fail` (larder extension)
    Fail "fail" AfterSpace,
    /// `list-dead` (larder extension)
    ListDead "list-dead" AfterSpace,
    /// `kick-dead` (larder extension)
    KickDead "kick-dead" AfterSpace,
    /// `delete-dead` (larder extension)
    DeleteDead "delete-dead" AfterSpace,
    /// `extended-stats` (larder extension)
    ExtendedStats "extended-stats" Bare,
    /// `auth` (larder extension)
    Auth "auth" AfterSpace,
    /// `cluster-add` (larder extension, cluster mode)
    ClusterAdd "cluster-add" AfterSpace,
    /// `cluster-remove` (larder extension, cluster mode)
    ClusterRemove "cluster-remove" AfterSpace,
}

impl CommandKind {
    /// Number of kinds, for counter arrays.
    pub const COUNT: usize = 34;

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
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
        let mut names: Vec<&str> = CommandKind::ALL.map(CommandKind::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CommandKind::COUNT);
    }

    #[test]
    fn match_line_selects_each_kind_by_its_own_name() {
        for (kind, args) in CommandKind::MATCH_ORDER {
            let line = match args {
                Args::AfterSpace => format!("{kind} 1"),
                Args::Bare => kind.name().to_owned(),
            };
            let (got, rest) = CommandKind::match_line(line.as_bytes()).expect("matches");
            assert_eq!(got, kind, "{line:?}");
            let want: &[u8] = if args == Args::AfterSpace { b"1" } else { b"" };
            assert_eq!(rest, want, "{line:?}");
        }
        assert_eq!(CommandKind::match_line(b"kick-jobs"), None);
        assert_eq!(CommandKind::match_line(b""), None);
        assert_eq!(
            CommandKind::match_line(b"pause-tubex 1"),
            Some((CommandKind::PauseTube, &b"x 1"[..]))
        );
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
