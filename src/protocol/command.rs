//! Commands a client sends, and the small value types they carry.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::{CommandKind, DeadFilter, TubeSetting};

/// Longest tube name, in bytes.
pub const MAX_TUBE_NAME_LEN: usize = 200;

/// A job's identifier. Ids are assigned by the broker, start at 1 and only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A valid tube name: 1 to [`MAX_TUBE_NAME_LEN`] bytes of `A-Z a-z 0-9 - + / ; . $ _ ( )`,
/// not starting with `-`. Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TubeName(Arc<str>);

impl TubeName {
    /// Checks `name` against the tube name rules.
    pub fn new(name: &[u8]) -> Option<TubeName> {
        let valid = !name.is_empty()
            && name.len() <= MAX_TUBE_NAME_LEN
            && name[0] != b'-'
            && name.iter().all(|&b| is_name_char(b));
        // All name characters are ASCII, so the bytes are valid UTF-8.
        valid.then(|| TubeName(String::from_utf8_lossy(name).into()))
    }

    /// The tube every connection uses and watches when it connects.
    pub fn default_tube() -> TubeName {
        TubeName("default".into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TubeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `b` may appear in a tube name.
pub(crate) fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b)
}

/// One client command. Numbers are kept exactly as sent (a `ttr` of 0 is raised to 1 by the
/// engine, not here), so `decode(encode(c)) == c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `put <pri> <delay> <ttr> <bytes>` followed by the body.
    Put {
        /// Priority: lower is more urgent.
        pri: u32,
        /// Seconds before the job becomes ready.
        delay: u32,
        /// Seconds a worker may hold the job before it is released again.
        ttr: u32,
        /// The job body, without its trailing `\r\n`.
        body: Bytes,
    },
    /// `use <tube>`
    Use(TubeName),
    /// `reserve`
    Reserve,
    /// `reserve-with-timeout <seconds>`
    ReserveWithTimeout(u32),
    /// `reserve-job <id>`
    ReserveJob(JobId),
    /// `delete <id>`
    Delete(JobId),
    /// `release <id> <pri> <delay>`
    Release {
        /// The job.
        id: JobId,
        /// Its new priority.
        pri: u32,
        /// Seconds before it becomes ready again.
        delay: u32,
    },
    /// `bury <id> <pri>`
    Bury {
        /// The job.
        id: JobId,
        /// Its new priority.
        pri: u32,
    },
    /// `touch <id>`
    Touch(JobId),
    /// `watch <tube>`
    Watch(TubeName),
    /// `ignore <tube>`
    Ignore(TubeName),
    /// `peek <id>`
    Peek(JobId),
    /// `peek-ready`
    PeekReady,
    /// `peek-delayed`
    PeekDelayed,
    /// `peek-buried`
    PeekBuried,
    /// `kick <bound>`
    Kick(u32),
    /// `kick-job <id>`
    KickJob(JobId),
    /// `stats-job <id>`
    StatsJob(JobId),
    /// `stats-tube <tube>`
    StatsTube(TubeName),
    /// `stats`
    Stats,
    /// `list-tubes`
    ListTubes,
    /// `list-tube-used`
    ListTubeUsed,
    /// `list-tubes-watched`
    ListTubesWatched,
    /// `pause-tube <tube> <delay>`
    PauseTube {
        /// The tube.
        tube: TubeName,
        /// Seconds to pause for.
        delay: u32,
    },
    /// `quit`
    Quit,
    /// `extended-stats` (larder extension): from now on this connection's `stats`,
    /// `stats-job` and `stats-tube` replies carry larder's fields too.
    ExtendedStats,
    /// `config-tube <tube> <setting> <value>` (larder extension): sets one of a tube's
    /// settings; `value` `None` (`default` on the wire) returns it to the server default.
    ConfigTube {
        /// The tube (created if it does not exist).
        tube: TubeName,
        /// Which setting.
        setting: TubeSetting,
        /// The new value in the setting's unit, or `None` for the server default.
        value: Option<u64>,
    },
    /// `fail <id> <message>` (larder extension): the worker reports that its attempt at a job
    /// it has reserved failed; the job is retried under its tube's policy or dead-lettered.
    Fail {
        /// The job.
        id: JobId,
        /// What went wrong (UTF-8, may be empty).
        message: String,
    },
    /// `list-dead <filter> <limit>` (larder extension): dead letters, lowest id first.
    ListDead {
        /// Which dead letters.
        filter: DeadFilter,
        /// At most this many (capped at [`MAX_DEAD_BATCH`]).
        limit: u32,
    },
    /// `kick-dead <filter> <limit>` (larder extension): redrive dead letters.
    KickDead {
        /// Which dead letters.
        filter: DeadFilter,
        /// At most this many (capped at [`MAX_DEAD_BATCH`]).
        limit: u32,
    },
    /// `delete-dead <filter> <limit>` (larder extension): delete dead letters.
    DeleteDead {
        /// Which dead letters.
        filter: DeadFilter,
        /// At most this many (capped at [`MAX_DEAD_BATCH`]).
        limit: u32,
    },
    /// `auth <token>` (larder extension): authenticates the connection with a token from
    /// the server's `--auth-file`.
    Auth(Token),
    /// `cluster-add <id> <host:port>` (larder extension, cluster mode): makes node `id`,
    /// whose cluster port is at `addr`, a voting member.
    ClusterAdd {
        /// The node's id.
        id: u64,
        /// Its cluster port.
        addr: std::net::SocketAddr,
    },
    /// `cluster-remove <id>` (larder extension, cluster mode): takes node `id` out of the
    /// voting members.
    ClusterRemove(u64),
}

/// A secret sent with `auth` (larder extension). Holds the bytes exactly as sent; whether
/// they form a valid token is decided by the server, which answers `BAD_FORMAT` when
/// authentication is on and `UNKNOWN_COMMAND` (beanstalkd's reply) when it is off. Its
/// `Debug` form never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub Bytes);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// Most dead letters one `list-dead`, `kick-dead` or `delete-dead` handles.
pub const MAX_DEAD_BATCH: u32 = 1000;

impl Command {
    /// The family this command is counted under.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Put { .. } => CommandKind::Put,
            Command::Use(_) => CommandKind::Use,
            Command::Reserve => CommandKind::Reserve,
            Command::ReserveWithTimeout(_) => CommandKind::ReserveWithTimeout,
            Command::ReserveJob(_) => CommandKind::ReserveJob,
            Command::Delete(_) => CommandKind::Delete,
            Command::Release { .. } => CommandKind::Release,
            Command::Bury { .. } => CommandKind::Bury,
            Command::Touch(_) => CommandKind::Touch,
            Command::Watch(_) => CommandKind::Watch,
            Command::Ignore(_) => CommandKind::Ignore,
            Command::Peek(_) => CommandKind::Peek,
            Command::PeekReady => CommandKind::PeekReady,
            Command::PeekDelayed => CommandKind::PeekDelayed,
            Command::PeekBuried => CommandKind::PeekBuried,
            Command::Kick(_) => CommandKind::Kick,
            Command::KickJob(_) => CommandKind::KickJob,
            Command::StatsJob(_) => CommandKind::StatsJob,
            Command::StatsTube(_) => CommandKind::StatsTube,
            Command::Stats => CommandKind::Stats,
            Command::ListTubes => CommandKind::ListTubes,
            Command::ListTubeUsed => CommandKind::ListTubeUsed,
            Command::ListTubesWatched => CommandKind::ListTubesWatched,
            Command::PauseTube { .. } => CommandKind::PauseTube,
            Command::Quit => CommandKind::Quit,
            Command::ConfigTube { .. } => CommandKind::ConfigTube,
            Command::Fail { .. } => CommandKind::Fail,
            Command::ListDead { .. } => CommandKind::ListDead,
            Command::KickDead { .. } => CommandKind::KickDead,
            Command::DeleteDead { .. } => CommandKind::DeleteDead,
            Command::ExtendedStats => CommandKind::ExtendedStats,
            Command::Auth(_) => CommandKind::Auth,
            Command::ClusterAdd { .. } => CommandKind::ClusterAdd,
            Command::ClusterRemove(_) => CommandKind::ClusterRemove,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tube_names_follow_the_charset_and_length_rules() {
        assert!(TubeName::new(b"default").is_some());
        assert!(TubeName::new(b"a+b/c;d.e$f_g(h)-i").is_some());
        assert!(TubeName::new(b"").is_none());
        assert!(TubeName::new(b"-lead").is_none());
        assert!(TubeName::new(b"sp ace").is_none());
        assert!(TubeName::new(b"caf\xc3\xa9").is_none());
        assert!(TubeName::new(&[b'a'; 200]).is_some());
        assert!(TubeName::new(&[b'a'; 201]).is_none());
    }
}
