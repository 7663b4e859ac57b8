//! PEM certificate and key files, and the TLS crypto provider, for the server and the
//! client alike.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ring crypto provider, which builds without cmake or an assembler.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`.
pub fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {what} {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{what} {} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn read_key(path: &Path, what: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// A root store holding every certificate of the PEM file at `path`.
pub fn read_roots(path: &Path, what: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots
            .add(cert)
            .with_context(|| format!("adding a certificate of {what} {}", path.display()))?;
    }
    Ok(roots)
}
