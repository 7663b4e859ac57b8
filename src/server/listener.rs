//! Accepting connections (TCP or Unix socket), signals, and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::body_reader::SegmentFiles;
use super::cluster::tls::Stream;
use super::disk_reserve::DiskReserve;
use super::journal::{spawn_writer, Journal};
use super::signals::Drain;
use super::{connection, host_limits, process_info, Broker, Clock};
use crate::config::{ListenAddr, ServerConfig};
use crate::engine::{Engine, EngineConfig};

/// A bound listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix domain socket, removed again when the listener is dropped.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// The TCP address, if this is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".to_owned()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `addr`. TCP sockets get `SO_REUSEADDR`, so a restarted server can take the port
/// at once; a stale Unix socket file left by a previous server is replaced.
pub fn bind(addr: &ListenAddr) -> anyhow::Result<Listener> {
    match addr {
        ListenAddr::Tcp(addr) => bind_tcp(*addr).map(Listener::Tcp),
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.file_type().is_socket() {
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
            }
            let listener = UnixListener::bind(path)
                .with_context(|| format!("binding unix socket {}", path.display()))?;
            Ok(Listener::Unix(listener, path.clone()))
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("creating socket")?;
    socket.set_reuseaddr(true).context("setting SO_REUSEADDR")?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("listening on {addr}"))
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish the command it is running, and returns.
///
/// SIGUSR1 puts the broker in drain mode (puts get `DRAINING`).
pub async fn run(
    listener: Listener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(listener, config, shutdown, Drain::sigusr1()?).await
}

/// [`run`], with drain mode requested by `drain`.
///
/// Start-up order: the data directory is locked, the process switches to `--user` if one
/// is set, and the log is replayed. The listener is already bound and listening, so the
/// address is held and clients can connect, but nothing is accepted until the replay is
/// done: their commands wait. `shutdown` during the replay abandons it and returns `Ok`;
/// a drain request during it is applied once the replay is done.
pub async fn run_with(
    listener: Listener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    mut drain: Drain,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    config.validate()?;
    let security = super::secure::Security::load(&config.security)?;
    let data_dir = crate::datadir::DataDir::open(&config.data_dir)?;
    let metrics = super::metrics::start(&config).await?;
    if let Some(user) = &config.user {
        super::user::become_user(user, data_dir.path())?;
    }
    let clock = Clock::shifted(config.clock_offset_ms);
    let mut engine = Engine::new(
        EngineConfig {
            max_job_size: config.max_job_size,
            limits: config.limits,
            defaults: config.setting_defaults,
            seed: clock.now().0 ^ u64::from(std::process::id()),
        },
        process_info(),
        clock.now(),
    );
    if let Some(cluster) = config.cluster.clone() {
        return run_cluster(
            listener, config, cluster, shutdown, drain, security, data_dir, metrics, clock, engine,
        )
        .await;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let mut replay = {
        let cancel = cancel.clone();
        let dir = data_dir.path().to_path_buf();
        let segment_size = config.segment_size;
        let now = clock.now();
        tokio::task::spawn_blocking(move || {
            super::recovery::recover(&mut engine, &dir, segment_size, now, &cancel)
                .map(|r| r.map(|r| (engine, r)))
        })
    };
    let mut drain_at_start = false;
    let replayed = loop {
        tokio::select! {
            done = &mut replay => break done.context("the log replay thread panicked")??,
            _ = &mut shutdown => {
                cancel.store(true, Ordering::Relaxed);
                replay.await.context("the log replay thread panicked")??;
                tracing::info!("stopped before serving");
                return Ok(());
            }
            _ = drain.requested() => {
                tracing::info!("SIGUSR1 during the replay: drain mode once it is done");
                drain_at_start = true;
            }
        }
    };
    let Some((mut engine, recovered)) = replayed else {
        return Ok(());
    };
    engine.set_draining(drain_at_start);
    let (journal, files, writer) = start_log(&config, recovered.wal, recovered.next_lsn)?;
    let broker = Arc::new(Broker::new(
        engine,
        clock,
        journal.clone(),
        files,
        recovered.last_put_segment,
        config.fsync,
    ));
    serve_clients(
        listener,
        &config,
        shutdown,
        drain,
        Serve {
            security,
            data_dir,
            metrics,
            broker,
            journal,
            writer,
            drain_at_start,
            cluster: None,
        },
    )
    .await
}

/// What a started server serves clients with (see [`serve_clients`]).
struct Serve {
    security: super::secure::Security,
    data_dir: crate::datadir::DataDir,
    metrics: Option<super::metrics::MetricsServer>,
    broker: Arc<Broker>,
    journal: Arc<Journal>,
    writer: std::thread::JoinHandle<()>,
    drain_at_start: bool,
    cluster: Option<super::cluster::node::ClusterNode>,
}

/// The journal over `wal` (whose next record gets `next_lsn`), the open-file cache bodies
/// are read through, and the writer thread, holding the disk reserve if it can be taken.
fn start_log(
    config: &ServerConfig,
    wal: crate::wal::Wal<crate::wal::storage::FsStorage>,
    next_lsn: u64,
) -> anyhow::Result<(Arc<Journal>, Arc<SegmentFiles>, std::thread::JoinHandle<()>)> {
    let journal = Arc::new(Journal::with_backlog(
        next_lsn,
        wal.layout(),
        config.connections.max_log_backlog,
    ));
    let files = Arc::new(SegmentFiles::new(wal.dir().to_path_buf()));
    let mut reserve = DiskReserve::new(
        config.data_dir.join(super::disk_reserve::FILE_NAME),
        config.disk_reserve,
    );
    if let Err(e) = reserve.take() {
        tracing::warn!(
            bytes = config.disk_reserve,
            error = %e,
            "cannot take the disk reserve: refusing new jobs until there is space"
        );
    }
    let writer = spawn_writer(journal.clone(), wal, config.fsync, reserve)
        .context("starting the log writer thread")?;
    Ok((journal, files, writer))
}

/// Makes a new, empty engine with the server's settings (cluster mode rebuilds its engine
/// from the log when it stops leading).
fn fresh_engine(
    config: &ServerConfig,
) -> Box<dyn Fn(crate::engine::Timestamp) -> Engine + Send + Sync> {
    let (max_job_size, limits, defaults) =
        (config.max_job_size, config.limits, config.setting_defaults);
    Box::new(move |now| {
        Engine::new(
            EngineConfig {
                max_job_size,
                limits,
                defaults,
                seed: now.0 ^ u64::from(std::process::id()),
            },
            process_info(),
            now,
        )
    })
}

/// Cluster mode's start-up: reads the raft log, starts the writer, openraft and the cluster
/// port, then serves clients like a single node (followers forward them to the leader).
#[allow(clippy::too_many_arguments)]
async fn run_cluster(
    listener: Listener,
    config: ServerConfig,
    cluster: crate::config::ClusterConfig,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Drain,
    security: super::secure::Security,
    data_dir: crate::datadir::DataDir,
    metrics: Option<super::metrics::MetricsServer>,
    clock: Clock,
    engine: Engine,
) -> anyhow::Result<()> {
    // Read before the log, so that a bad file is reported at once.
    let cluster_tls = match &cluster.tls {
        Some(files) => {
            let tls = Arc::new(super::cluster::tls::ClusterTls::load(files)?);
            tls.spawn_reload()?;
            Some(tls)
        }
        None => None,
    };
    let wal_dir = super::recovery::wal_dir(data_dir.path());
    let recovered = {
        let dir = wal_dir.clone();
        let segment_size = config.segment_size;
        tokio::task::spawn_blocking(move || super::cluster::node::recover(&dir, segment_size))
            .await
            .context("the log replay thread panicked")??
    };
    // The newest snapshot is the engine's starting point; openraft applies the committed
    // entries after it.
    let snapshot_dir = super::cluster::snapshot::dir(data_dir.path());
    let (snapshots, engine, applied) = {
        let mut engine = engine;
        let now = clock.now();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            use super::cluster::snapshot;
            let snapshots = snapshot::Snapshots::open(snapshot_dir)?;
            let mut applied = None;
            if let Some((pin, _)) = snapshots.newest() {
                let path = snapshot::file_path(snapshots.dir(), pin.number());
                let meta = snapshot::load(&path, pin.number(), &mut engine, now)?;
                tracing::info!(snapshot = %meta.snapshot_id, jobs = engine.job_count(), "snapshot loaded");
                applied = meta.last_log_id.map(|l| l.index);
            }
            Ok((snapshots, engine, applied))
        })
        .await
        .context("the snapshot loading thread panicked")??
    };
    let next_lsn = recovered.wal.next_lsn().0;
    let (journal, files, writer) = start_log(&config, recovered.wal, next_lsn)?;
    files.set_snapshot_dir(snapshots.dir().to_path_buf());
    // The writer thread always writes (see `serve_clients`).
    journal.set_clients(usize::MAX);
    let (proposals, batches) = tokio::sync::mpsc::unbounded_channel();
    let broker = Arc::new(Broker::clustered(
        engine,
        clock,
        journal.clone(),
        files,
        proposals,
        fresh_engine(&config),
        applied,
    ));
    let node = super::cluster::node::start(
        &cluster,
        cluster_tls,
        journal.clone(),
        &wal_dir,
        recovered.state,
        broker.clone(),
        batches,
        clock,
        snapshots,
        config.segment_size,
    )
    .await?;
    serve_clients(
        listener,
        &config,
        shutdown,
        drain,
        Serve {
            security,
            data_dir,
            metrics,
            broker,
            journal,
            writer,
            drain_at_start: false,
            cluster: Some(node),
        },
    )
    .await
}

/// Serves clients on `listener` until `shutdown` resolves, then closes down in order.
async fn serve_clients(
    listener: Listener,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    mut drain: Drain,
    serve: Serve,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let Serve {
        security,
        data_dir,
        metrics,
        broker,
        journal,
        writer,
        drain_at_start,
        cluster,
    } = serve;
    let mut cluster = cluster;
    let (stop_tx, stop_rx) = watch::channel(false);
    host_limits::measure_free_space(&broker, data_dir.path(), &config.free_space);
    let disk_watch = tokio::spawn(host_limits::watch_free_space(
        broker.clone(),
        data_dir.path().to_path_buf(),
        config.free_space.clone(),
        config.disk_check_interval,
    ));
    let max_connections = host_limits::check_open_files_limit(config.limits.max_connections);
    let gate = host_limits::ConnectionGate::new(max_connections);
    let conn_limits = connection::ConnectionLimits::new(&config.limits, &config.connections);
    let keepalive = (config.connections.tcp_keepalive > 0).then(|| {
        let idle = std::time::Duration::from_secs(config.connections.tcp_keepalive);
        socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle.div_f64(6.0).max(std::time::Duration::from_secs(1)))
    });
    let mut accept_errors = host_limits::AcceptErrors::default();
    let serving = super::secure::Serving {
        broker: broker.clone(),
        max_job_size: config.max_job_size,
        limits: conn_limits,
        shutdown: stop_rx.clone(),
        handshake_timeout: conn_limits.command_timeout,
    };
    let reload = security.spawn_reload()?;
    security.warn_if_open(listener.tcp_addr());

    // The log writer's publishes wake this one task, which wakes the connections waiting on
    // them from inside the runtime (see `wal::commit`): one runtime wake-up per fsync
    // instead of one per waiting connection.
    let relay = tokio::spawn({
        let journal = journal.clone();
        async move { journal.watermark().relay().await }
    });

    let timer_broker = broker.clone();
    let mut timer_stop = stop_rx.clone();
    let timers = tokio::spawn(async move {
        timer_broker
            .run_timers(async move {
                let _ = timer_stop.changed().await;
            })
            .await;
    });

    if !config.compaction {
        tracing::warn!(
            "compaction is off (-n): a long-lived job keeps its log segment, and every later one, on disk"
        );
    }
    let compactor = (config.compaction && cluster.is_none()).then(|| {
        tokio::spawn(super::compact::run(
            broker.clone(),
            config.segment_size,
            stop_rx.clone(),
        ))
    });

    let mut conns = JoinSet::new();
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        addr = %listener.describe(),
        data_dir = %config.data_dir.display(),
        fsync = %config.fsync,
        draining = drain_at_start,
        "larder started: listening"
    );
    super::metrics::serving(metrics.as_ref(), &broker);
    loop {
        // A cluster node never lets its runtime write the log: openraft's replication must
        // go on while the log syncs.
        journal.set_clients(if cluster.is_some() {
            usize::MAX
        } else {
            conns.len()
        });
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            Some(stream) = next_proxied(&mut cluster) => Ok(Accepted::Proxied(stream)),
            _ = broker.deposed() => {
                // No longer the leader: the engine was rebuilt, every session is gone, and
                // no reply still waiting may be sent. Forwarded connections go too (the
                // leader changed).
                tracing::info!(connections = conns.len(), "closing every client connection");
                conns.abort_all();
                continue;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = drain.requested() => {
                tracing::info!("SIGUSR1: entering drain mode");
                broker.set_draining(true);
                continue;
            }
            _ = &mut shutdown => break,
        };
        let admitted = match &accepted {
            Ok(_) => gate.admit(),
            Err(_) => None,
        };
        // A follower forwards a client connection to the leader it knows of, as it is.
        let forward_to = match (&accepted, &cluster) {
            (Ok(Accepted::Tcp(_)), Some(node)) if !broker.is_leader() => {
                node.leader_addr().map(|addr| Upstream {
                    addr,
                    preamble: node.preamble(super::cluster::net::PROXIED_CONNECTION),
                    tls: node.tls(),
                })
            }
            _ => None,
        };
        match (accepted, admitted) {
            (Ok(Accepted::Tcp(stream) | Accepted::Proxied(Stream::Plain(stream))), Some(place)) => {
                let _ = stream.set_nodelay(true);
                if let Some(keepalive) = &keepalive {
                    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(keepalive);
                }
                let security = security.clone();
                let serving = serving.clone();
                conns.spawn(async move {
                    let stream = match forward_to {
                        Some(upstream) => match forward(stream, upstream).await {
                            Ok(()) => {
                                drop(place);
                                return;
                            }
                            Err(stream) => stream,
                        },
                        None => stream,
                    };
                    security.serve_tcp(stream, serving).await;
                    drop(place);
                });
            }
            (Ok(Accepted::Proxied(Stream::Tls(stream))), Some(place)) => {
                // Forwarded over the cluster port's TLS: the client's own bytes (its own
                // TLS included) are inside it.
                let tcp = stream.get_ref().0;
                let peer = tcp
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "tcp".to_owned());
                if let Some(keepalive) = &keepalive {
                    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(keepalive);
                }
                let serve = security.clone().serve_stream(stream, peer, serving.clone());
                conns.spawn(async move {
                    serve.await;
                    drop(place);
                });
            }
            (Ok(Accepted::Unix(stream)), Some(place)) => {
                let serve = security.clone().serve_unix(stream, serving.clone());
                conns.spawn(async move {
                    serve.await;
                    drop(place);
                });
            }
            (Ok(Accepted::Tcp(stream) | Accepted::Proxied(Stream::Plain(stream))), None) => {
                if let Some(refusal) = gate.turn_away(stream, broker.clone()) {
                    conns.spawn(refusal);
                }
            }
            (Ok(Accepted::Proxied(stream @ Stream::Tls(_))), None) => {
                if let Some(refusal) = gate.turn_away(stream, broker.clone()) {
                    conns.spawn(refusal);
                }
            }
            (Ok(Accepted::Unix(stream)), None) => {
                if let Some(refusal) = gate.turn_away(stream, broker.clone()) {
                    conns.spawn(refusal);
                }
            }
            (Err(e), _) => {
                // Out of file descriptors and similar: keep serving the others, and say
                // so once in a while rather than on every attempt.
                accept_errors.failed(&e);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    tracing::info!(connections = conns.len(), "shutting down");
    super::notify::stopping();
    broker.set_stopping();
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    let _ = timers.await;
    if let Some(compactor) = compactor {
        let _ = compactor.await;
    }
    disk_watch.abort();
    if let Some(reload) = reload {
        reload.abort();
    }
    if let Some(node) = &cluster {
        if let Err(e) = node.raft.shutdown().await {
            tracing::warn!(error = %e, "openraft did not stop cleanly");
        }
    }
    // Dropping the relay hands the waking back to the writer's publishes, which the log's
    // last records (and openraft, on a cluster node) may still need.
    relay.abort();
    let _ = relay.await;
    journal.close();
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("waiting for the log writer")?
        .map_err(|_| anyhow::anyhow!("the log writer thread panicked"))?;
    drop(data_dir);
    tracing::info!("stopped: every connection closed and the log flushed");
    Ok(())
}

/// The next client connection a follower forwarded to this node (never, on a single node).
async fn next_proxied(cluster: &mut Option<super::cluster::node::ClusterNode>) -> Option<Stream> {
    match cluster {
        Some(node) => node.proxied.recv().await,
        None => std::future::pending().await,
    }
}

/// Where a follower forwards a client connection: the leader's cluster port, what the
/// connection starts with there, and the cluster's TLS if on.
struct Upstream {
    addr: String,
    preamble: Vec<u8>,
    tls: Option<Arc<super::cluster::tls::ClusterTls>>,
}

/// Forwards `client` to the leader's cluster port and copies bytes both ways until either
/// side closes. Gives the client back if the leader cannot be reached (nor its TLS
/// handshake completed), to be served here (with `NO_QUORUM`).
async fn forward(
    mut client: tokio::net::TcpStream,
    to: Upstream,
) -> Result<(), tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut upstream = match super::cluster::net::dial(&to.addr, to.tls.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(addr = %to.addr, error = %e, "cannot reach the leader to forward a client");
            return Err(client);
        }
    };
    if upstream.write_all(&to.preamble).await.is_err() || upstream.flush().await.is_err() {
        return Err(client);
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    /// A client connection forwarded by a follower: served here, never forwarded again.
    Proxied(Stream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}
