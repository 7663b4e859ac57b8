//! Mutual TLS on the cluster port (`--cluster-tls-cert`, `--cluster-tls-key`,
//! `--cluster-tls-ca`): every member presents its certificate both when it accepts and when
//! it dials, and checks the other side's against the cluster's CA. A dialling member checks
//! the certificate against the host it dials (an IP address in most configurations, so the
//! certificates need IP SANs).
//!
//! [`Stream`] is a cluster-port connection either way, plain or TLS, so that the raft RPCs,
//! the forwarded client connections and the token check above them do not depend on it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::ClusterTlsFiles;
use crate::pem::{provider, read_certs, read_key, read_roots};

/// The acceptor and the connector of a member, from its `--cluster-tls-*` files. SIGHUP
/// reads the files again ([`ClusterTls::reload`]): connections made after that use the new
/// certificate and CA, connections already made keep the session they have.
pub struct ClusterTls {
    files: ClusterTlsFiles,
    sides: RwLock<(TlsAcceptor, TlsConnector)>,
}

impl ClusterTls {
    /// Reads the certificate, key and CA files; any that cannot be read or used is an
    /// error naming its flag and file.
    pub fn load(files: &ClusterTlsFiles) -> anyhow::Result<ClusterTls> {
        Ok(ClusterTls {
            files: files.clone(),
            sides: RwLock::new(sides(files)?),
        })
    }

    /// Reads the files again; on an error the configuration in force stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let new = sides(&self.files)?;
        *self.sides.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn current(&self) -> (TlsAcceptor, TlsConnector) {
        self.sides.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The server side of the handshake on a connection accepted on the cluster port.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Stream> {
        let (acceptor, _) = self.current();
        let stream = acceptor.accept(stream).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    /// The client side of the handshake on a connection to `addr` (`host:port`): the
    /// member's certificate must name `host`.
    pub async fn connect(&self, stream: TcpStream, addr: &str) -> io::Result<Stream> {
        let name = crate::client_tls::server_name(addr, None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (_, connector) = self.current();
        let stream = connector.connect(name, stream).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    /// Reloads the files on every SIGHUP, logging the outcome, until the runtime stops.
    pub fn spawn_reload(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler for the cluster port")?;
        let this = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match this.reload() {
                    Ok(()) => tracing::info!("SIGHUP: cluster TLS certificates reloaded"),
                    Err(e) => tracing::error!(
                        error = %format!("{e:#}"),
                        "SIGHUP: cluster TLS reload failed; the certificates in force stay"
                    ),
                }
            }
        });
        Ok(())
    }
}

/// The acceptor and the connector the files make.
fn sides(files: &ClusterTlsFiles) -> anyhow::Result<(TlsAcceptor, TlsConnector)> {
    let certs = read_certs(&files.cert, "--cluster-tls-cert")?;
    let key = read_key(&files.key, "--cluster-tls-key")?;
    let roots = Arc::new(read_roots(&files.ca, "--cluster-tls-ca")?);
    let provider = provider();
    let pair = || {
        format!(
            "using --cluster-tls-cert {} with --cluster-tls-key {}",
            files.cert.display(),
            files.key.display()
        )
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .with_context(|| format!("using --cluster-tls-ca {}", files.ca.display()))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .with_context(pair)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .with_context(pair)?;
    Ok((
        TlsAcceptor::from(Arc::new(server)),
        TlsConnector::from(Arc::new(client)),
    ))
}

/// A connection to or from the cluster port.
pub enum Stream {
    /// Plain TCP (no `--cluster-tls-*`).
    Plain(TcpStream),
    /// Mutual TLS over TCP, either side.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// A read half of a [`Stream`].
pub type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// A write half of a [`Stream`].
pub type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Its two halves, used from separate places (a plain stream is split without a lock,
    /// as it was before TLS).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
