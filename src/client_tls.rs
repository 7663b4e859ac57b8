//! The client side of TLS: a rustls connector from PEM files, and the name the server's
//! certificate is checked against.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::client::{ClientError, TlsOptions};
use crate::pem::{provider, read_certs, read_key, read_roots};

/// A connector trusting `tls.ca` (or the system's trust store), presenting `tls.identity`
/// if set.
pub fn connector(tls: &TlsOptions) -> Result<TlsConnector, ClientError> {
    let err = |e: anyhow::Error| ClientError::Tls(format!("{e:#}"));
    let roots = match &tls.ca {
        Some(ca) => read_roots(ca, "--tls-ca").map_err(err)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ClientError::Tls(
                    "no trusted CA certificate in the system's store; name one with --tls-ca"
                        .to_owned(),
                ));
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &tls.identity {
        Some((cert, key)) => {
            let certs = read_certs(cert, "--tls-cert").map_err(err)?;
            let key = read_key(key, "--tls-key").map_err(err)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `name`, or else the host part of `addr` (`host:port`, `[v6]:port`).
pub fn server_name(addr: &str, name: Option<&str>) -> Result<ServerName<'static>, ClientError> {
    let host = match name {
        Some(name) => name,
        None => addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Tls(format!("{host:?} is not a server name: {e}")))
}
