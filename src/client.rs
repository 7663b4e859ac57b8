//! A small async beanstalkd client, used by the CLI, the tests and the benchmarks.
//!
//! Commands can be queued and flushed together, then their replies read in order, so the
//! same client drives both request/response use and pipelined load.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::protocol::{Body, Command, JobId, Reply, ReplyDecoder, TubeName};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading or writing failed, or the server sent something that is not a reply.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server answered with a reply the call did not expect.
    #[error("unexpected reply from server: {0:?}")]
    Unexpected(Reply),
    /// A tube name is not valid.
    #[error("invalid tube name {0:?}")]
    TubeName(String),
}

/// A connection to a beanstalkd-protocol server.
pub struct Client {
    reader: FramedRead<OwnedReadHalf, ReplyDecoder>,
    writer: OwnedWriteHalf,
    out: BytesMut,
}

impl Client {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Client::from_stream(stream))
    }

    /// Connects to a socket address.
    pub async fn connect_addr(addr: SocketAddr) -> Result<Client, ClientError> {
        Client::connect(&addr.to_string()).await
    }

    /// Wraps an established stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Client {
            reader: FramedRead::new(r, ReplyDecoder::default()),
            writer: w,
            out: BytesMut::with_capacity(4096),
        }
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
            Some(reply) => Ok(reply?),
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
        match self.call(&cmd).await? {
            Reply::Ok(yaml) => Ok(parse_yaml_map(&yaml)),
            other => Err(ClientError::Unexpected(other)),
        }
    }
}

fn tube_name(tube: &str) -> Result<TubeName, ClientError> {
    TubeName::new(tube.as_bytes()).ok_or_else(|| ClientError::TubeName(tube.to_owned()))
}

/// Parses the flat YAML mappings beanstalkd sends (`key: value` lines after `---`), with
/// double quotes removed from string values.
pub fn parse_yaml_map(yaml: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(yaml)
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(": ")?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Parses the YAML lists beanstalkd sends (`- item` lines after `---`).
pub fn parse_yaml_list(yaml: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(yaml)
        .lines()
        .filter_map(|line| line.strip_prefix("- ").map(str::to_owned))
        .collect()
}
