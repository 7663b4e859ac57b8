//! What stands between an accepted socket and its commands: the TLS handshake (TCP only)
//! and the authentication gate, and their reload on SIGHUP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::auth::{Auth, FailureLog};
use super::connection::{self, ConnectionLimits};
use super::tls::Tls;
use super::Broker;
use crate::config::SecurityConfig;

/// TLS and authentication as configured; either may be off.
#[derive(Clone)]
pub struct Security {
    tls: Option<Arc<Tls>>,
    auth: Option<Arc<Auth>>,
    /// Rate limit for the log lines about failed handshakes.
    handshake_log: Arc<Mutex<FailureLog>>,
}

/// What every connection is served with.
#[derive(Clone)]
pub struct Serving {
    /// The engine.
    pub broker: Arc<Broker>,
    /// `--max-job-size`.
    pub max_job_size: u32,
    /// The connection's bounds.
    pub limits: ConnectionLimits,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Longest a TLS handshake may take (`--command-timeout`).
    pub handshake_timeout: Option<Duration>,
}

impl Security {
    /// Reads the certificate, key and auth files `config` names.
    pub fn load(config: &SecurityConfig) -> anyhow::Result<Security> {
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(Tls::load(files)?)),
            None => None,
        };
        Ok(Security {
            tls,
            auth: Auth::load(config)?,
            handshake_log: Arc::default(),
        })
    }

    /// Logs a warning when `addr` is reachable from other hosts and neither TLS nor
    /// authentication is on.
    pub fn warn_if_open(&self, addr: Option<SocketAddr>) {
        if let Some(addr) = addr {
            if !addr.ip().is_loopback() && self.tls.is_none() && self.auth.is_none() {
                tracing::warn!(
                    %addr,
                    "listening beyond this host with neither TLS nor authentication: anyone \
                     who reaches the port can read, delete and pause every job \
                     (see --tls-cert and --auth-file)"
                );
            }
        }
        if let Some(tls) = &self.tls {
            tracing::info!(mutual = tls.mutual(), "TLS on the TCP listener");
        }
    }

    /// Reads the TLS and auth files again at every SIGHUP; connections already open keep
    /// what they have. Does nothing (and leaves SIGHUP alone) when both are off.
    pub fn spawn_reload(&self) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        if self.tls.is_none() && self.auth.is_none() {
            return Ok(None);
        }
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let this = self.clone();
        Ok(Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                this.reload();
            }
        })))
    }

    fn reload(&self) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: TLS reload failed; the certificates in force stay")
                }
            }
        }
        if let Some(auth) = &self.auth {
            match auth.reload() {
                Ok(()) => tracing::info!("SIGHUP: auth file reloaded"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: auth file reload failed; the entries in force stay")
                }
            }
        }
    }

    /// Serves an accepted TCP connection: the TLS handshake first when TLS is on.
    pub async fn serve_tcp(self, stream: tokio::net::TcpStream, s: Serving) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "tcp".to_owned());
        if self.tls.is_none() {
            let gate = self.auth.as_ref().map(|a| a.gate(peer, None));
            let (r, w) = stream.into_split();
            return serve(r, w, s, gate).await;
        }
        self.serve_stream(stream, peer, s).await
    }

    /// Serves a connection from `peer` over any byte stream (a client connection a follower
    /// forwarded over the cluster port's TLS, say) as a TCP connection: the TLS handshake
    /// first when TLS is on.
    pub async fn serve_stream<S>(self, stream: S, peer: String, s: Serving)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let Some(tls) = &self.tls else {
            let gate = self.auth.as_ref().map(|a| a.gate(peer, None));
            let (r, w) = tokio::io::split(stream);
            return serve(r, w, s, gate).await;
        };
        let handshake = tls.acceptor().accept(stream);
        let stream = match s.handshake_timeout {
            Some(limit) => match tokio::time::timeout(limit, handshake).await {
                Ok(done) => done,
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            None => handshake.await,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                let mut log = self.handshake_log.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(left_out) = log.admit(std::time::Instant::now()) {
                    tracing::info!(%peer, error = %e, left_out, "TLS handshake failed");
                }
                return;
            }
        };
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let gate = self.auth.as_ref().map(|a| a.gate(peer, cert));
        let (r, w) = tokio::io::split(stream);
        serve(r, w, s, gate).await
    }

    /// Serves an accepted Unix socket connection (never TLS; authentication still applies).
    pub async fn serve_unix(self, stream: tokio::net::UnixStream, s: Serving) {
        let gate = self.auth.as_ref().map(|a| a.gate("unix".to_owned(), None));
        let (r, w) = stream.into_split();
        serve(r, w, s, gate).await
    }
}

async fn serve<R, W>(r: R, w: W, s: Serving, gate: Option<super::auth::Gate>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    connection::serve_with(r, w, s.broker, s.max_job_size, s.limits, s.shutdown, gate).await
}
