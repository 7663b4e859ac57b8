//! The cluster port: raft RPCs between nodes, and clients proxied by followers.
//!
//! A connection to `--cluster-listen` starts with one byte saying what it carries, then the
//! cluster's shared token (`[length u8][token]`, length 0 when there is none), checked in
//! constant time; a connection with another token, an unknown type, or no preamble within
//! [`HANDSHAKE_TIMEOUT`] is closed. Then:
//!
//! - `R`: raft RPCs. Each request is a frame `[length u32 LE][type u8][bincode body]`
//!   (type 1 AppendEntries, 2 Vote, 3 InstallSnapshot) and is answered by a frame
//!   `[length u32 LE][bincode Result<response, RaftError>]`, one at a time.
//! - `P`: a client connection a follower forwards as it is; the rest of the stream is the
//!   client's own bytes (TLS included), served like a connection accepted on the client
//!   port.
//!
//! With `--cluster-tls-*`, every connection to and from the port is mutual TLS (see
//! [`super::tls`]) and all of the above travels inside it; a connection whose handshake
//! fails, or does not finish within [`HANDSHAKE_TIMEOUT`], is closed before anything is
//! read from it.
//!
//! At most [`MAX_CLUSTER_CONNECTIONS`] raft connections are served at once (members need one
//! each way); further ones are closed at once. Frames are read as their bytes arrive, up to
//! [`MAX_FRAME`], so a peer cannot make a node allocate more than it sends.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::tls::{ClusterTls, ReadHalf, Stream, WriteHalf};
use super::{LarderRaft, NodeId};
use crate::server::auth::FailureLog;

/// First byte of a raft RPC connection.
pub const RAFT_CONNECTION: u8 = b'R';
/// First byte of a proxied client connection.
pub const PROXIED_CONNECTION: u8 = b'P';

/// Largest frame either side accepts: an AppendEntries of at most `max_payload_entries` (16)
/// proposals of at most 1 MiB each fits inside it.
pub const MAX_FRAME: usize = 32 << 20;

/// Raft connections served at once.
pub const MAX_CLUSTER_CONNECTIONS: usize = 64;

/// Time a new connection has to finish its TLS handshake (if on) and send its type and
/// token; also the longest a member waits for its own TLS handshake when it dials.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes a connection of type `kind` starts with.
pub fn preamble(kind: u8, token: Option<&[u8]>) -> Vec<u8> {
    let token = token.unwrap_or_default();
    let token = &token[..token.len().min(255)];
    let mut out = Vec::with_capacity(2 + token.len());
    out.push(kind);
    // The token's length is checked when it is read from its file (1..=255).
    out.push(token.len() as u8);
    out.extend_from_slice(token);
    out
}

const APPEND_ENTRIES: u8 = 1;
const VOTE: u8 = 2;
const INSTALL_SNAPSHOT: u8 = 3;

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::deserialize(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let len = r.read_u32_le().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a cluster frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    // Grown as the bytes arrive, not allocated up front from the announced length.
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a cluster frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
            )
        })?;
    w.write_u32_le(len).await?;
    for p in parts {
        w.write_all(p).await?;
    }
    w.flush().await
}

/// Makes one [`Peer`] per member openraft replicates to.
#[derive(Clone)]
pub struct Network {
    /// Addresses to dial instead of a member's own (`--peer-route`).
    pub routes: BTreeMap<NodeId, String>,
    /// The cluster's shared token.
    pub token: Option<Vec<u8>>,
    /// Mutual TLS among members, if on.
    pub tls: Option<Arc<ClusterTls>>,
}

/// Connects to the cluster port at `addr` (`host:port`), with the TLS handshake when `tls`
/// is on (bounded by [`HANDSHAKE_TIMEOUT`]).
pub async fn dial(addr: &str, tls: Option<&ClusterTls>) -> io::Result<Stream> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(stream, addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake with {addr} within {HANDSHAKE_TIMEOUT:?}"),
                )
            })?,
    }
}

impl RaftNetworkFactory<LarderRaft> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: self
                .routes
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            token: self.token.clone(),
            tls: self.tls.clone(),
            conn: None,
        }
    }
}

type Conn = (BufReader<ReadHalf>, BufWriter<WriteHalf>);

/// One member, as openraft sends to it: one connection, dialled when first needed and
/// again after any failure.
pub struct Peer {
    target: NodeId,
    addr: String,
    token: Option<Vec<u8>>,
    tls: Option<Arc<ClusterTls>>,
    conn: Option<Conn>,
}

/// How one RPC failed before the member answered.
enum Failed {
    /// Could not connect: openraft backs off.
    Unreachable(io::Error),
    /// The connection failed midway, or took too long.
    Network(io::Error),
}

impl Peer {
    async fn connect(&mut self) -> Result<&mut Conn, Failed> {
        if self.conn.is_none() {
            let stream = dial(&self.addr, self.tls.as_deref())
                .await
                .map_err(Failed::Unreachable)?;
            let (r, w) = stream.into_split();
            let mut w = BufWriter::new(w);
            w.write_all(&preamble(RAFT_CONNECTION, self.token.as_deref()))
                .await
                .map_err(Failed::Unreachable)?;
            self.conn = Some((BufReader::new(r), w));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Failed::Unreachable(io::Error::other("no connection")))
    }

    async fn exchange(&mut self, kind: u8, body: &[u8]) -> Result<Vec<u8>, Failed> {
        let (r, w) = self.connect().await?;
        write_frame(w, &[&[kind], body])
            .await
            .map_err(Failed::Network)?;
        read_frame(r).await.map_err(Failed::Network)
    }

    /// Sends one request and decodes its answer, within `ttl`; any failure drops the
    /// connection so the next call dials again.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: u8,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        RaftError<NodeId, E>: DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = match tokio::time::timeout(ttl, self.exchange(kind, &body)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(Failed::Unreachable(e))) => {
                self.conn = None;
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(Failed::Network(e))) => {
                self.conn = None;
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
            Err(_) => {
                self.conn = None;
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from member {} within {ttl:?}", self.target),
                );
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&answer).map_err(|e| {
            self.conn = None;
            RPCError::Network(NetworkError::new(&e))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<LarderRaft> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<LarderRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(APPEND_ENTRIES, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<LarderRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(INSTALL_SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(VOTE, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// Serves the cluster port until the listener fails: raft RPCs go to `raft`, proxied client
/// connections to `proxied`; every connection must complete the TLS handshake when `tls`
/// is on, then present `token`.
pub async fn serve(
    listener: TcpListener,
    raft: Raft<LarderRaft>,
    proxied: mpsc::Sender<Stream>,
    token: Option<Vec<u8>>,
    tls: Option<Arc<ClusterTls>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLUSTER_CONNECTIONS));
    let token = Arc::new(token);
    // Failed TLS handshakes are logged a few a second at most, however many strangers try.
    let refusals: Arc<Mutex<FailureLog>> = Arc::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cluster port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CLUSTER_CONNECTIONS,
                "cluster port: too many connections; closing a new one"
            );
            continue;
        };
        let raft = raft.clone();
        let proxied = proxied.clone();
        let token = token.clone();
        let tls = tls.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let opened = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                open(stream, tls.as_deref(), &peer, &refusals),
            )
            .await;
            let (stream, kind, presented) = match opened {
                Ok(Ok(Some(opened))) => opened,
                // A failed TLS handshake, logged already.
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        tracing::debug!(%peer, error = %e, "cluster connection ended");
                    }
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "cluster port: no handshake in time; closed");
                    return;
                }
            };
            if let Err(e) = serve_one(stream, kind, presented, raft, proxied, &token, slot).await {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "cluster connection ended");
                }
            }
        });
    }
}

/// The TLS handshake when `tls` is on (`None` if it fails: logged here, rate-limited),
/// then the connection's type and token.
async fn open(
    stream: TcpStream,
    tls: Option<&ClusterTls>,
    peer: &str,
    refusals: &Mutex<FailureLog>,
) -> io::Result<Option<(Stream, u8, Vec<u8>)>> {
    let mut stream = match tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => stream,
            Err(e) => {
                let mut log = refusals.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(left_out) = log.admit(std::time::Instant::now()) {
                    tracing::warn!(%peer, error = %e, left_out, "cluster port: TLS handshake failed; closed");
                }
                return Ok(None);
            }
        },
    };
    let (kind, token) = handshake(&mut stream).await?;
    Ok(Some((stream, kind, token)))
}

/// Reads a connection's type and token.
async fn handshake(stream: &mut Stream) -> io::Result<(u8, Vec<u8>)> {
    let kind = stream.read_u8().await?;
    let len = stream.read_u8().await?;
    let mut token = vec![0; usize::from(len)];
    stream.read_exact(&mut token).await?;
    Ok((kind, token))
}

async fn serve_one(
    stream: Stream,
    kind: u8,
    presented: Vec<u8>,
    raft: Raft<LarderRaft>,
    proxied: mpsc::Sender<Stream>,
    token: &Option<Vec<u8>>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> io::Result<()> {
    let expected = token.as_deref().unwrap_or_default();
    if !crate::server::auth::constant_time_eq(&presented, expected) {
        tracing::warn!("cluster port: a connection with the wrong token was closed");
        return Ok(());
    }
    match kind {
        RAFT_CONNECTION => {}
        PROXIED_CONNECTION => {
            // The client port's accept loop takes it from here, through its connection gate.
            drop(slot);
            let _ = proxied.send(stream).await;
            return Ok(());
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cluster port: unknown connection type {other}"),
            ))
        }
    }
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
    loop {
        let frame = read_frame(&mut r).await?;
        let (&kind, body) = frame
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "an empty cluster frame"))?;
        let answer = match kind {
            APPEND_ENTRIES => encode(&raft.append_entries(decode(body)?).await)?,
            VOTE => encode(&raft.vote(decode(body)?).await)?,
            INSTALL_SNAPSHOT => encode(&raft.install_snapshot(decode(body)?).await)?,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cluster port: unknown request type {other}"),
                ))
            }
        };
        write_frame(&mut w, &[&answer]).await?;
    }
}
