//! TLS on the TCP listener (rustls, ring provider), with certificates read again on SIGHUP.
//!
//! The server configuration in force sits behind a lock that is taken only to clone an
//! `Arc` when a connection is accepted: a reload builds a whole new configuration from
//! the files and swaps it in, so connections already established keep the session they
//! have and new handshakes use the new certificate. A reload that fails (a missing file,
//! a key that does not match) is logged and changes nothing.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::pem::{provider, read_certs, read_key, read_roots};

/// The TLS configuration in force, and the files it is read from.
pub struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate, key and client CA files.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        let config = server_config(files)?;
        Ok(Tls {
            files: files.clone(),
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; on an error the configuration in force stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration now in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = read_key(&files.key, "--tls-key")?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = read_roots(ca, "--tls-client-ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("using --tls-client-ca {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "using --tls-cert {} with --tls-key {}",
            files.cert.display(),
            files.key.display()
        )
    })
}
