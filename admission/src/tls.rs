//! rustls server configuration: TLS 1.2 and 1.3 only, a certificate that can be swapped while
//! serving (cert-manager rotates the Secret, kubelet updates the files), optional client
//! certificate verification of the API server with a CA bundle that is reloaded the same way.
//!
//! Everything here reads files: callers run it on a blocking thread, never on async workers.

use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate in service; `swap` replaces it for new handshakes only.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
        })
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

/// Why a certificate, key or CA bundle could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate PEM: {0}")]
    CertificatePem(pem::Error),
    #[error("certificate file holds no CERTIFICATE block")]
    NoCertificate,
    #[error("key file holds no private key")]
    NoKey,
    #[error("key PEM: {0}")]
    KeyPem(pem::Error),
    #[error("unsupported private key: {0}")]
    UnsupportedKey(rustls::Error),
    #[error("certificate and key do not match: {0}")]
    Mismatch(rustls::Error),
    /// A fault of the pair of files named.
    #[error("{} / {}: {source}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: Box<TlsError>,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(rcgen::Error),
    #[error("{}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("client CA {}: {source}", path.display())]
    ClientCaRejected {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{0}")]
    Config(rustls::Error),
}

/// Builds a [`CertifiedKey`] from PEM text.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(TlsError::CertificatePem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey,
        e => TlsError::KeyPem(e),
    })?;
    let signing = ring::sign::any_supported_type(&key).map_err(TlsError::UnsupportedKey)?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(TlsError::Mismatch)?;
    Ok(ck)
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Development mode: generated at start, never reloaded.
    SelfSigned,
}

impl CertSource {
    /// Reads the certificate; returns it with a fingerprint of the file contents.
    pub fn load(&self) -> Result<(CertifiedKey, String), TlsError> {
        match self {
            CertSource::Files { cert, key } => {
                let c = read(cert)?;
                let k = read(key)?;
                let fp = hex::encode(Sha256::new().chain_update(&c).chain_update(&k).finalize());
                Ok((
                    certified_key(&c, &k).map_err(|e| TlsError::Pair {
                        cert: cert.clone(),
                        key: key.clone(),
                        source: Box::new(e),
                    })?,
                    fp,
                ))
            }
            CertSource::SelfSigned => {
                let (cert, key) = self_signed()?;
                Ok((
                    certified_key(cert.as_bytes(), key.as_bytes())?,
                    String::new(),
                ))
            }
        }
    }

    /// The fingerprint of the files now, without parsing (cheap change detection).
    pub fn fingerprint(&self) -> Option<String> {
        match self {
            CertSource::Files { cert, key } => fingerprint(&[cert, key]),
            CertSource::SelfSigned => None,
        }
    }
}

/// A digest of the files' contents (contents, not mtimes: a Secret or ConfigMap update swaps
/// a symlink and keeps old mtimes); `None` if one cannot be read.
pub fn fingerprint(paths: &[&Path]) -> Option<String> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(std::fs::read(p).ok()?);
    }
    Some(hex::encode(h.finalize()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, as (cert PEM, key PEM).
pub fn self_signed() -> Result<(String, String), TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let cert = rcgen::generate_simple_self_signed(names).map_err(TlsError::Generate)?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

/// The verifier of client certificates signed by the CA bundle at `path`.
pub fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let pem = read(path)?;
    let fault = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| fault(e.to_string()))?;
        roots.add(cert).map_err(|e| fault(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fault("no CA certificate found".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|source| TlsError::ClientCaRejected {
            path: path.to_path_buf(),
            source,
        })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The server configuration: TLS 1.2+, HTTP/1.1 only (see RELIABILITY.md: one request at a
/// time per connection, so the connection cap and timeouts bound requests too), client
/// certificates checked by `client_ca` if given.
pub fn server_config(
    certs: Arc<CertStore>,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_are_read_and_their_faults_named() {
        let (cert, key) = self_signed().unwrap();
        assert!(certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
        let err = |c: &str, k: &str| {
            certified_key(c.as_bytes(), k.as_bytes())
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(err("", &key), "certificate file holds no CERTIFICATE block");
        assert_eq!(err(&cert, ""), "key file holds no private key");
        assert_eq!(err(&cert, &cert), "key file holds no private key");
        let (other_cert, _) = self_signed().unwrap();
        assert!(
            err(&other_cert, &key).starts_with("certificate and key do not match"),
            "{}",
            err(&other_cert, &key)
        );
    }
}
