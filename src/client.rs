//! A small async beanstalkd client, used by the CLI, the tests and the benchmarks.
//!
//! Commands can be queued and flushed together, then their replies read in order, so the
//! same client drives both request/response use and pipelined load.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::protocol::{
    Body, BuryReason, Command, DeadFilter, JobId, Reply, ReplyDecoder, TubeName, TubeSetting,
};

mod yaml;

pub use yaml::{parse_dead_letters, parse_yaml_list, parse_yaml_map, yaml_scalar};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed. (The cause is part of the message, not a separate source, so an
    /// error chain prints it once.)
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// Reading or writing failed, or the server sent something that is not a reply.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server answered with a reply the call did not expect.
    #[error("{}", describe_unexpected(.0))]
    Unexpected(Reply),
    /// A tube name is not valid.
    #[error("invalid tube name {0:?}")]
    TubeName(String),
    /// The server does not know a larder extension command (it answered `UNKNOWN_COMMAND`):
    /// it is beanstalkd or another server of the protocol.
    #[error(
        "this server does not support {0} (a larder extension; is it beanstalkd or another \
         server of the protocol?)"
    )]
    Unsupported(&'static str),
    /// Setting up TLS failed (a certificate file, or the handshake).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the token.
    #[error("{}", describe_auth_refusal(.0))]
    Auth(Reply),
}

/// What an unexpected reply means to the person running the command.
fn describe_unexpected(reply: &Reply) -> String {
    match reply {
        Reply::Forbidden => "the server refused the command: this token's role does not allow it \
                             (FORBIDDEN; roles are in protocol.md §10)"
            .to_owned(),
        Reply::AuthRequired => "the server requires authentication (AUTH_REQUIRED): give a \
                                token with --token or LARDER_TOKEN"
            .to_owned(),
        other => format!("unexpected reply from server: {other:?}"),
    }
}

/// Why `auth` did not succeed.
fn describe_auth_refusal(reply: &Reply) -> String {
    match reply {
        Reply::AuthFailed => {
            "authentication failed: the server rejected the token (AUTH_FAILED)".to_owned()
        }
        Reply::UnknownCommand => "authentication failed: the server does not know `auth` \
                                  (UNKNOWN_COMMAND: it runs without --auth-file, or it is \
                                  beanstalkd)"
            .to_owned(),
        other => format!("authentication failed: the server answered {other:?}"),
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

/// The reply to an extension command that the call did not expect: `UNKNOWN_COMMAND` means
/// the server lacks the extension.
fn unexpected_ext(name: &'static str, reply: Reply) -> ClientError {
    match reply {
        Reply::UnknownCommand => ClientError::Unsupported(name),
        other => ClientError::Unexpected(other),
    }
}

/// Opens a TCP connection to `addr`, naming it in the error.
async fn dial(addr: &str) -> Result<TcpStream, ClientError> {
    TcpStream::connect(addr)
        .await
        .map_err(|cause| ClientError::Connect {
            addr: addr.to_owned(),
            cause,
        })
}

/// How to reach a server that uses TLS (`larder … --tls`).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) the server's certificate must chain to; the system's trust
    /// store when `None`.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) and its key, for servers that require one (mutual TLS).
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The name the server's certificate must be valid for; the host of the address when
    /// `None`.
    pub server_name: Option<String>,
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection to a beanstalkd-protocol server.
pub struct Client {
    reader: FramedRead<Reader, ReplyDecoder>,
    writer: Writer,
    out: BytesMut,
    /// `extended-stats` was sent: `Some(true)` if the server took it (`stats`,
    /// `stats-job` and `stats-tube` carry larder's fields), `Some(false)` if it does not know it.
    extended: Option<bool>,
}

impl Client {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, crate::protocol::DEFAULT_MAX_REPLY_BODY).await
    }

    /// Connects to `addr` (`host:port`), accepting reply bodies up to `max_reply` bytes.
    pub async fn connect_with(addr: &str, max_reply: u64) -> Result<Client, ClientError> {
        let stream = dial(addr).await?;
        let mut client = Client::from_stream(stream);
        *client.reader.decoder_mut() = ReplyDecoder::new(max_reply);
        Ok(client)
    }

    /// Connects to a socket address.
    pub async fn connect_addr(addr: SocketAddr) -> Result<Client, ClientError> {
        Client::connect(&addr.to_string()).await
    }

    /// Connects to `addr` over TLS.
    pub async fn connect_tls(addr: &str, tls: &TlsOptions) -> Result<Client, ClientError> {
        let connector = crate::client_tls::connector(tls)?;
        let name = crate::client_tls::server_name(addr, tls.server_name.as_deref())?;
        let stream = dial(addr).await?;
        let _ = stream.set_nodelay(true);
        let stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| ClientError::Tls(format!("handshake with {addr}: {e}")))?;
        Ok(Client::from_io(stream))
    }

    /// Wraps an established stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Client::from_halves(Box::new(r), Box::new(w))
    }

    /// Wraps any established byte stream (a TLS session, for one).
    pub fn from_io(stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Client {
        let (r, w) = tokio::io::split(stream);
        Client::from_halves(Box::new(r), Box::new(w))
    }

    fn from_halves(r: Reader, w: Writer) -> Client {
        Client {
            reader: FramedRead::new(r, ReplyDecoder::default()),
            writer: w,
            out: BytesMut::with_capacity(4096),
            extended: None,
        }
    }

    /// Accepts reply bodies up to `max_reply` bytes from now on (see
    /// [`crate::protocol::DEFAULT_MAX_REPLY_BODY`]).
    pub fn set_max_reply(&mut self, max_reply: u64) {
        *self.reader.decoder_mut() = ReplyDecoder::new(max_reply);
    }

    /// Queues a command without sending it.
    pub fn queue(&mut self, cmd: &Command) {
        cmd.encode(&mut self.out);
    }

    /// Queues raw bytes (for tests of malformed input).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads the next reply.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        match self.reader.next().await {
            Some(Ok(reply)) => Ok(reply),
            // A TLS record (alert or handshake, version 3.x) where a reply should be: the
            // server speaks TLS and this client does not.
            Some(Err(_))
                if matches!(self.reader.read_buffer().get(..2), Some([0x15 | 0x16, 3])) =>
            {
                Err(ClientError::Tls(
                    "the server answered with TLS: connect with --tls (or --tls-ca)".to_owned(),
                ))
            }
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, cmd: &Command) -> Result<Reply, ClientError> {
        self.queue(cmd);
        self.flush().await?;
        self.read_reply().await
    }

    /// Sends raw bytes and reads one reply.
    pub async fn call_raw(&mut self, bytes: &[u8]) -> Result<Reply, ClientError> {
        self.queue_raw(bytes);
        self.flush().await?;
        self.read_reply().await
    }

    /// `auth <token>`; returns the roles the server granted.
    pub async fn auth(&mut self, token: &str) -> Result<String, ClientError> {
        let cmd = Command::Auth(crate::protocol::Token(Bytes::copy_from_slice(
            token.as_bytes(),
        )));
        match self.call(&cmd).await? {
            Reply::Authenticated(roles) => Ok(roles),
            other => Err(ClientError::Auth(other)),
        }
    }

    /// `put`; returns the new job's id.
    pub async fn put(
        &mut self,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: impl Into<Bytes>,
    ) -> Result<JobId, ClientError> {
        let cmd = Command::Put {
            pri,
            delay,
            ttr,
            body: body.into(),
        };
        match self.call(&cmd).await? {
            Reply::Inserted(id) => Ok(id),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// `use`.
    pub async fn use_tube(&mut self, tube: &str) -> Result<(), ClientError> {
        let name = tube_name(tube)?;
        match self.call(&Command::Use(name)).await? {
            Reply::Using(_) => Ok(()),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// `watch`; returns the number of watched tubes.
    pub async fn watch(&mut self, tube: &str) -> Result<usize, ClientError> {
        let name = tube_name(tube)?;
        match self.call(&Command::Watch(name)).await? {
            Reply::Watching(n) => Ok(n),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// `ignore`; returns the number of watched tubes.
    pub async fn ignore(&mut self, tube: &str) -> Result<usize, ClientError> {
        let name = tube_name(tube)?;
        match self.call(&Command::Ignore(name)).await? {
            Reply::Watching(n) => Ok(n),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// `reserve` or, with a timeout, `reserve-with-timeout`. `None` on `TIMED_OUT`.
    pub async fn reserve(
        &mut self,
        timeout: Option<u32>,
    ) -> Result<Option<(JobId, Bytes)>, ClientError> {
        let cmd = match timeout {
            Some(t) => Command::ReserveWithTimeout(t),
            None => Command::Reserve,
        };
        match self.call(&cmd).await? {
            Reply::Reserved {
                id,
                body: Body::Bytes(body),
            } => Ok(Some((id, body))),
            Reply::TimedOut => Ok(None),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// `delete`.
    pub async fn delete(&mut self, id: JobId) -> Result<(), ClientError> {
        match self.call(&Command::Delete(id)).await? {
            Reply::Deleted => Ok(()),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// `stats`, or `stats-tube` when `tube` is given, as ordered key/value pairs.
    pub async fn stats(
        &mut self,
        tube: Option<&str>,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let cmd = match tube {
            Some(t) => Command::StatsTube(tube_name(t)?),
            None => Command::Stats,
        };
        self.extend_stats().await?;
        match self.call(&cmd).await? {
            Reply::Ok(yaml) => Ok(parse_yaml_map(&yaml)),
            other => Err(ClientError::Unexpected(other)),
        }
    }
}

/// One dead letter as `list-dead` describes it (protocol.md §7.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job.
    pub id: JobId,
    /// Its tube.
    pub tube: String,
    /// Why it was buried (`buried`, `max-attempts`).
    pub reason: String,
    /// Attempts since its put or last redrive.
    pub attempts: u32,
    /// Its priority.
    pub pri: u32,
    /// When it was buried, Unix time in ms (0 if unknown).
    pub buried_at_ms: u64,
    /// The last failure a worker reported ("" if none).
    pub last_error: String,
}

impl Client {
    /// `config-tube`: sets `setting` of `tube` to `value` (`None`: the server default).
    pub async fn config_tube(
        &mut self,
        tube: &str,
        setting: TubeSetting,
        value: Option<u64>,
    ) -> Result<(), ClientError> {
        let cmd = Command::ConfigTube {
            tube: tube_name(tube)?,
            setting,
            value,
        };
        match self.call(&cmd).await? {
            Reply::Configured => Ok(()),
            other => Err(unexpected_ext("config-tube", other)),
        }
    }

    /// `list-dead`: up to `limit` dead letters matching `filter`, lowest id first.
    pub async fn list_dead(
        &mut self,
        filter: &DeadFilter,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, ClientError> {
        let cmd = Command::ListDead {
            filter: filter.clone(),
            limit,
        };
        match self.call(&cmd).await? {
            Reply::Ok(yaml) => parse_dead_letters(&yaml),
            other => Err(unexpected_ext("list-dead", other)),
        }
    }

    /// `kick-dead`; returns how many were redriven.
    pub async fn kick_dead(&mut self, filter: &DeadFilter, limit: u32) -> Result<u32, ClientError> {
        let cmd = Command::KickDead {
            filter: filter.clone(),
            limit,
        };
        match self.call(&cmd).await? {
            Reply::Kicked(n) => Ok(n),
            other => Err(unexpected_ext("kick-dead", other)),
        }
    }

    /// `delete-dead`; returns how many were deleted.
    pub async fn delete_dead(
        &mut self,
        filter: &DeadFilter,
        limit: u32,
    ) -> Result<u32, ClientError> {
        let cmd = Command::DeleteDead {
            filter: filter.clone(),
            limit,
        };
        match self.call(&cmd).await? {
            Reply::DeletedCount(n) => Ok(n),
            other => Err(unexpected_ext("delete-dead", other)),
        }
    }

    /// `peek`: the job's body, or `None` if there is no such job.
    pub async fn peek(&mut self, id: JobId) -> Result<Option<Bytes>, ClientError> {
        match self.call(&Command::Peek(id)).await? {
            Reply::Found {
                body: Body::Bytes(body),
                ..
            } => Ok(Some(body)),
            Reply::NotFound => Ok(None),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// Sends `extended-stats` once, so `stats`, `stats-job` and `stats-tube` include larder's
    /// fields;
    /// returns whether the server has them (beanstalkd answers `UNKNOWN_COMMAND`, and its
    /// plain fields are all there is).
    pub async fn extend_stats(&mut self) -> Result<bool, ClientError> {
        if let Some(extended) = self.extended {
            return Ok(extended);
        }
        let extended = match self.call(&Command::ExtendedStats).await? {
            Reply::Extended => true,
            Reply::UnknownCommand => false,
            other => return Err(ClientError::Unexpected(other)),
        };
        self.extended = Some(extended);
        Ok(extended)
    }

    /// `stats-job`, or `None` if there is no such job.
    pub async fn stats_job(
        &mut self,
        id: JobId,
    ) -> Result<Option<Vec<(String, String)>>, ClientError> {
        self.extend_stats().await?;
        match self.call(&Command::StatsJob(id)).await? {
            Reply::Ok(yaml) => Ok(Some(parse_yaml_map(&yaml))),
            Reply::NotFound => Ok(None),
            other => Err(ClientError::Unexpected(other)),
        }
    }
}

/// Whether `reason` names a bury reason the server knows.
pub fn is_bury_reason(reason: &str) -> bool {
    BuryReason::from_name(reason.as_bytes()).is_some()
}

fn tube_name(tube: &str) -> Result<TubeName, ClientError> {
    TubeName::new(tube.as_bytes()).ok_or_else(|| ClientError::TubeName(tube.to_owned()))
}
