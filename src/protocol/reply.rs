//! Replies the server sends.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{JobId, TubeName};

/// A job body in a reply: bytes at hand, or a place in the write-ahead log that the server
/// reads when it writes the reply out (bodies live on disk, not in the job index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The bytes.
    Bytes(Bytes),
    /// Where to read them.
    Stored(StoredBody),
}

impl Body {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Stored(s) => s.len as usize,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if they are at hand.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Bytes(b) => Some(b),
            Body::Stored(_) => None,
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::Bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::Bytes(b.into())
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Body {
        Body::Bytes(Bytes::from_static(b))
    }
}

/// A body's place in the log: `len` bytes at `offset` in segment `segment`. The server
/// attaches the open segment `file` while the job cannot move, so the bytes stay readable
/// even if the segment is removed before the reply is written.
#[derive(Clone, Debug)]
pub struct StoredBody {
    /// The segment's sequence number.
    pub segment: u64,
    /// Offset of the first byte in the segment file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// The open segment, once attached.
    pub file: Option<Arc<std::fs::File>>,
}

impl PartialEq for StoredBody {
    fn eq(&self, other: &Self) -> bool {
        (self.segment, self.offset, self.len) == (other.segment, other.offset, other.len)
    }
}

impl Eq for StoredBody {}

/// Where [`Reply::encode`] left room for a stored body: `dst[at..at + len]` must be filled
/// with the bytes `body` names before the buffer is sent.
#[derive(Clone, Debug)]
pub struct BodyHole {
    /// Offset of the room in the buffer.
    pub at: usize,
    /// The body to read into it.
    pub body: StoredBody,
}

/// One server reply. Encoding is byte-identical to beanstalkd 1.12.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `INSERTED <id>`: the job was stored.
    Inserted(JobId),
    /// `BURIED <id>`: a put that was stored buried.
    BuriedId(JobId),
    /// `BURIED`: the job is now buried.
    Buried,
    /// `USING <tube>`
    Using(TubeName),
    /// `RESERVED <id> <bytes>` and the body.
    Reserved {
        /// The job.
        id: JobId,
        /// Its body.
        body: Body,
    },
    /// `FOUND <id> <bytes>` and the body (peek commands).
    Found {
        /// The job.
        id: JobId,
        /// Its body.
        body: Body,
    },
    /// `DEADLINE_SOON`: a job reserved by this client is within its safety margin.
    DeadlineSoon,
    /// `TIMED_OUT`: reserve-with-timeout ran out.
    TimedOut,
    /// `DELETED`
    Deleted,
    /// `RELEASED`
    Released,
    /// `TOUCHED`
    Touched,
    /// `WATCHING <count>`
    Watching(usize),
    /// `NOT_IGNORED`: the client tried to ignore its only watched tube.
    NotIgnored,
    /// `NOT_FOUND`
    NotFound,
    /// `KICKED <count>` (the `kick` command).
    Kicked(u32),
    /// `KICKED` (the `kick-job` command).
    KickedJob,
    /// `OK <bytes>` and a YAML document.
    Ok(Bytes),
    /// `PAUSED`
    Paused,
    /// `DRAINING`: the server accepts no new jobs.
    Draining,
    /// `OUT_OF_MEMORY`
    OutOfMemory,
    /// `INTERNAL_ERROR`
    InternalError,
    /// `CLUSTER_CHANGED`: a `cluster-add` or `cluster-remove` is committed (protocol.md §11).
    ClusterChanged,
    /// `CLUSTER_BUSY`: another membership change is under way (protocol.md §11).
    ClusterBusy,
    /// `NO_QUORUM`: cluster mode, this node cannot reach a leader with a quorum; nothing
    /// was done (larder extension, protocol.md §11).
    NoQuorum,
    /// `BAD_FORMAT`
    BadFormat,
    /// `UNKNOWN_COMMAND`
    UnknownCommand,
    /// `EXPECTED_CRLF`
    ExpectedCrlf,
    /// `JOB_TOO_BIG`
    JobTooBig,
    /// `REFUSED <setting>`: a limit refused the request; nothing was stored (larder's
    /// extension, protocol.md §9).
    Refused(Refusal),
    /// `CONFIGURED` (larder extension: `config-tube` succeeded).
    Configured,
    /// `EXTENDED` (larder extension: `extended-stats` took effect).
    Extended,
    /// `UNKNOWN_SETTING` (larder extension: `config-tube` named no known setting).
    UnknownSetting,
    /// `DELETED <count>` (larder extension: `delete-dead`).
    DeletedCount(u32),
    /// `AUTHENTICATED <roles>` (larder extension: `auth` succeeded; the connection now
    /// has these roles, comma-separated).
    Authenticated(String),
    /// `AUTH_FAILED` (larder extension: `auth` named no token of the auth file).
    AuthFailed,
    /// `AUTH_REQUIRED` (larder extension: the server requires `auth` before this command).
    AuthRequired,
    /// `FORBIDDEN` (larder extension: the connection's roles do not allow this command).
    Forbidden,
}

/// A limit that refuses work, named on the wire by its setting (`REFUSED max-jobs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// `--max-jobs`: jobs in any state, server-wide.
    MaxJobs,
    /// `--max-bytes`: body bytes of jobs in any state, server-wide.
    MaxBytes,
    /// `max-tube-jobs`: jobs in any state in the put's tube.
    MaxTubeJobs,
    /// `max-tube-bytes`: body bytes of jobs in any state in the put's tube.
    MaxTubeBytes,
    /// `--min-free-disk`: the data directory's filesystem is below its free-space floor.
    MinFreeDisk,
    /// `--max-connections`: the server has as many connections as it takes.
    MaxConnections,
    /// The disk filled and the log has spent its `--disk-reserve`: only work that drains
    /// the broker is taken until space returns.
    LogFull,
    /// The log could not open a file it needs because the process is out of file
    /// descriptors (`ulimit -n`): new jobs are refused until the log has its file.
    OpenFiles,
    /// `--max-tubes`: as many tubes exist as the server allows; `use`, `watch` or
    /// `config-tube` would create another.
    MaxTubes,
    /// `--max-watches-per-connection`: the connection watches as many tubes as it may.
    MaxWatchesPerConnection,
}

impl Refusal {
    /// Every reason, in the order `stats` lists their counters.
    pub const ALL: [Refusal; 10] = [
        Refusal::MaxJobs,
        Refusal::MaxBytes,
        Refusal::MaxTubeJobs,
        Refusal::MaxTubeBytes,
        Refusal::MinFreeDisk,
        Refusal::MaxConnections,
        Refusal::LogFull,
        Refusal::OpenFiles,
        Refusal::MaxTubes,
        Refusal::MaxWatchesPerConnection,
    ];

    /// Number of reasons.
    pub const COUNT: usize = Refusal::ALL.len();

    /// The setting's name, as `REFUSED` and `stats` spell it.
    pub fn setting(self) -> &'static str {
        match self {
            Refusal::MaxJobs => "max-jobs",
            Refusal::MaxBytes => "max-bytes",
            Refusal::MaxTubeJobs => "max-tube-jobs",
            Refusal::MaxTubeBytes => "max-tube-bytes",
            Refusal::MinFreeDisk => "min-free-disk",
            Refusal::MaxConnections => "max-connections",
            Refusal::LogFull => "log-full",
            Refusal::OpenFiles => "open-files",
            Refusal::MaxTubes => "max-tubes",
            Refusal::MaxWatchesPerConnection => "max-watches-per-connection",
        }
    }

    /// The reason a setting name stands for.
    pub fn from_setting(name: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.setting() == name)
    }

    /// A dense index, for counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the limit is about one tube rather than the whole server.
    pub fn per_tube(self) -> bool {
        matches!(self, Refusal::MaxTubeJobs | Refusal::MaxTubeBytes)
    }
}

impl Reply {
    /// Appends the wire form of this reply to `dst`. A stored body is not read here: its
    /// room is left zeroed and returned, and the caller fills it before sending.
    #[must_use = "a stored body's room must be filled before the buffer is sent"]
    pub fn encode(&self, dst: &mut BytesMut) -> Option<BodyHole> {
        let word: &[u8] = match self {
            Reply::Inserted(id) => return line2(dst, b"INSERTED ", id.0),
            Reply::BuriedId(id) => return line2(dst, b"BURIED ", id.0),
            Reply::Reserved { id, body } => return with_body(dst, b"RESERVED ", Some(*id), body),
            Reply::Found { id, body } => return with_body(dst, b"FOUND ", Some(*id), body),
            Reply::Using(tube) => {
                dst.reserve(8 + tube.as_str().len());
                dst.put_slice(b"USING ");
                dst.put_slice(tube.as_str().as_bytes());
                dst.put_slice(b"\r\n");
                return None;
            }
            Reply::Ok(body) => {
                return with_body(dst, b"OK ", None, &Body::Bytes(body.clone()));
            }
            Reply::Watching(n) => return line2(dst, b"WATCHING ", *n as u64),
            Reply::Kicked(n) => return line2(dst, b"KICKED ", u64::from(*n)),
            Reply::Refused(r) => {
                let name = r.setting().as_bytes();
                dst.reserve(10 + name.len());
                dst.put_slice(b"REFUSED ");
                dst.put_slice(name);
                dst.put_slice(b"\r\n");
                return None;
            }
            Reply::DeletedCount(n) => return line2(dst, b"DELETED ", u64::from(*n)),
            Reply::Authenticated(roles) => {
                dst.reserve(16 + roles.len());
                dst.put_slice(b"AUTHENTICATED ");
                dst.put_slice(roles.as_bytes());
                dst.put_slice(b"\r\n");
                return None;
            }
            Reply::AuthFailed => b"AUTH_FAILED\r\n",
            Reply::AuthRequired => b"AUTH_REQUIRED\r\n",
            Reply::Forbidden => b"FORBIDDEN\r\n",
            Reply::Buried => b"BURIED\r\n",
            Reply::DeadlineSoon => b"DEADLINE_SOON\r\n",
            Reply::TimedOut => b"TIMED_OUT\r\n",
            Reply::Deleted => b"DELETED\r\n",
            Reply::Released => b"RELEASED\r\n",
            Reply::Touched => b"TOUCHED\r\n",
            Reply::NotIgnored => b"NOT_IGNORED\r\n",
            Reply::NotFound => b"NOT_FOUND\r\n",
            Reply::KickedJob => b"KICKED\r\n",
            Reply::Paused => b"PAUSED\r\n",
            Reply::Draining => b"DRAINING\r\n",
            Reply::OutOfMemory => b"OUT_OF_MEMORY\r\n",
            Reply::InternalError => b"INTERNAL_ERROR\r\n",
            Reply::NoQuorum => b"NO_QUORUM\r\n",
            Reply::ClusterChanged => b"CLUSTER_CHANGED\r\n",
            Reply::ClusterBusy => b"CLUSTER_BUSY\r\n",
            Reply::BadFormat => b"BAD_FORMAT\r\n",
            Reply::UnknownCommand => b"UNKNOWN_COMMAND\r\n",
            Reply::ExpectedCrlf => b"EXPECTED_CRLF\r\n",
            Reply::JobTooBig => b"JOB_TOO_BIG\r\n",
            Reply::Configured => b"CONFIGURED\r\n",
            Reply::Extended => b"EXTENDED\r\n",
            Reply::UnknownSetting => b"UNKNOWN_SETTING\r\n",
        };
        dst.put_slice(word);
        None
    }

    /// The reply's wire form as a new buffer; `None` if it names a stored body.
    pub fn to_bytes(&self) -> Option<Bytes> {
        let mut buf = BytesMut::new();
        match self.encode(&mut buf) {
            None => Some(buf.freeze()),
            Some(_) => None,
        }
    }
}

fn line2(dst: &mut BytesMut, word: &[u8], n: u64) -> Option<BodyHole> {
    let mut num = itoa::Buffer::new();
    let n = num.format(n);
    dst.reserve(word.len() + n.len() + 2);
    dst.put_slice(word);
    dst.put_slice(n.as_bytes());
    dst.put_slice(b"\r\n");
    None
}

fn with_body(dst: &mut BytesMut, word: &[u8], id: Option<JobId>, body: &Body) -> Option<BodyHole> {
    let mut num = itoa::Buffer::new();
    dst.reserve(word.len() + 44 + body.len());
    dst.put_slice(word);
    if let Some(id) = id {
        dst.put_slice(num.format(id.0).as_bytes());
        dst.put_u8(b' ');
    }
    dst.put_slice(num.format(body.len()).as_bytes());
    dst.put_slice(b"\r\n");
    let hole = match body {
        Body::Bytes(b) => {
            dst.put_slice(b);
            None
        }
        Body::Stored(s) => {
            let at = dst.len();
            dst.put_bytes(0, s.len as usize);
            Some(BodyHole {
                at,
                body: s.clone(),
            })
        }
    };
    dst.put_slice(b"\r\n");
    hole
}
