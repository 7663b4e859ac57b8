//! Replies the server sends.

use bytes::{BufMut, Bytes, BytesMut};

use super::{JobId, TubeName};

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
        body: Bytes,
    },
    /// `FOUND <id> <bytes>` and the body (peek commands).
    Found {
        /// The job.
        id: JobId,
        /// Its body.
        body: Bytes,
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
    /// `BAD_FORMAT`
    BadFormat,
    /// `UNKNOWN_COMMAND`
    UnknownCommand,
    /// `EXPECTED_CRLF`
    ExpectedCrlf,
    /// `JOB_TOO_BIG`
    JobTooBig,
    /// `CONFIGURED` (larder extension: `config-tube` succeeded).
    Configured,
    /// `UNKNOWN_SETTING` (larder extension: `config-tube` named no known setting).
    UnknownSetting,
    /// `DELETED <count>` (larder extension: `delete-dead`).
    DeletedCount(u32),
}

impl Reply {
    /// Appends the wire form of this reply to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let word: &[u8] = match self {
            Reply::Inserted(id) => return line2(dst, b"INSERTED ", id.0),
            Reply::BuriedId(id) => return line2(dst, b"BURIED ", id.0),
            Reply::Using(tube) => {
                dst.reserve(8 + tube.as_str().len());
                dst.put_slice(b"USING ");
                dst.put_slice(tube.as_str().as_bytes());
                dst.put_slice(b"\r\n");
                return;
            }
            Reply::Reserved { id, body } => return with_body(dst, b"RESERVED ", Some(*id), body),
            Reply::Found { id, body } => return with_body(dst, b"FOUND ", Some(*id), body),
            Reply::Ok(body) => return with_body(dst, b"OK ", None, body),
            Reply::Watching(n) => return line2(dst, b"WATCHING ", *n as u64),
            Reply::Kicked(n) => return line2(dst, b"KICKED ", u64::from(*n)),
            Reply::DeletedCount(n) => return line2(dst, b"DELETED ", u64::from(*n)),
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
            Reply::BadFormat => b"BAD_FORMAT\r\n",
            Reply::UnknownCommand => b"UNKNOWN_COMMAND\r\n",
            Reply::ExpectedCrlf => b"EXPECTED_CRLF\r\n",
            Reply::JobTooBig => b"JOB_TOO_BIG\r\n",
            Reply::Configured => b"CONFIGURED\r\n",
            Reply::UnknownSetting => b"UNKNOWN_SETTING\r\n",
        };
        dst.put_slice(word);
    }

    /// The reply's wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn line2(dst: &mut BytesMut, word: &[u8], n: u64) {
    let mut num = itoa::Buffer::new();
    let n = num.format(n);
    dst.reserve(word.len() + n.len() + 2);
    dst.put_slice(word);
    dst.put_slice(n.as_bytes());
    dst.put_slice(b"\r\n");
}

fn with_body(dst: &mut BytesMut, word: &[u8], id: Option<JobId>, body: &Bytes) {
    let mut num = itoa::Buffer::new();
    dst.reserve(word.len() + 44 + body.len());
    dst.put_slice(word);
    if let Some(id) = id {
        dst.put_slice(num.format(id.0).as_bytes());
        dst.put_u8(b' ');
    }
    dst.put_slice(num.format(body.len()).as_bytes());
    dst.put_slice(b"\r\n");
    dst.put_slice(body);
    dst.put_slice(b"\r\n");
}
