//! Accepting connections, signals, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{connection, process_info, Broker, Clock};
use crate::config::ServerConfig;
use crate::engine::{Engine, EngineConfig};

/// Binds `addr` with `SO_REUSEADDR`, so a restarted server can take the port at once.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
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
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let clock = Clock::new();
    let engine = Engine::new(
        EngineConfig {
            max_job_size: config.max_job_size,
        },
        process_info(),
        clock.now(),
    );
    let broker = Arc::new(Broker::new(engine, clock));
    let (stop_tx, stop_rx) = watch::channel(false);

    let timer_broker = broker.clone();
    let mut timer_stop = stop_rx.clone();
    let timers = tokio::spawn(async move {
        timer_broker
            .run_timers(async move {
                let _ = timer_stop.changed().await;
            })
            .await;
    });

    let mut drain = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("installing SIGUSR1 handler")?;
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    tracing::info!(addr = %listener.local_addr()?, "listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(connection::serve(
                        stream,
                        broker.clone(),
                        config.max_job_size,
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and similar: keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = drain.recv() => {
                tracing::info!("SIGUSR1: entering drain mode");
                broker.set_draining(true);
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(connections = conns.len(), "shutting down");
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    let _ = timers.await;
    Ok(())
}
