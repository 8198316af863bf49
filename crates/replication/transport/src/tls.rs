//! Mutual TLS settings (rustls, ring provider) for peer links and for the client protocol.
//!
//! Every node presents its certificate and key and trusts one CA (a self-signed
//! certificate may be its own CA). Both ends verify each other: the server side requires
//! a client certificate issued by the CA, the client side checks the server's
//! certificate against the CA and [`TlsSettings::server_name`], a name that every node's
//! certificate must carry as a subject alternative name (for example one cluster-wide
//! DNS name such as `mako-cluster`).
//!
//! [`TlsSettings`] keeps the rustls configurations public, so a blocking (std::net)
//! server or client can use them directly, e.g. with
//! `rustls::StreamOwned::new(rustls::ServerConnection::new(settings.server.clone())?, tcp)`
//! and `rustls::ClientConnection::new(settings.client.clone(), settings.server_name.clone())?`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS settings could not be built; each names the file (or PEM input) at fault.
#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text could not be parsed.
    #[error("{what}: malformed PEM: {detail}")]
    Pem {
        /// The input (e.g. `certificate file node.pem`).
        what: String,
        /// The parser's message.
        detail: String,
    },
    /// The input holds no certificate.
    #[error("{what}: no certificate found")]
    NoCertificate {
        /// The input.
        what: String,
    },
    /// rustls refused a certificate or key (e.g. the key does not match the certificate).
    #[error("{what}: {source}")]
    Rejected {
        /// The input.
        what: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The client-certificate verifier could not be built from the CA.
    #[error("{what}: cannot verify client certificates with it: {source}")]
    Verifier {
        /// The CA input.
        what: String,
        /// rustls' reason.
        source: rustls::server::VerifierBuilderError,
    },
}

/// Mutual-TLS configuration of one node: its server and client sides and the name it
/// expects in its peers' certificates.
#[derive(Clone)]
pub struct TlsSettings {
    /// Accepting side: presents this node's certificate, requires a client certificate from the CA.
    pub server: Arc<ServerConfig>,
    /// Connecting side: presents this node's certificate, trusts the CA only.
    pub client: Arc<ClientConfig>,
    /// Name checked in the server's certificate when connecting.
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Reads the node's certificate chain, its private key and the CA certificate(s) from
/// PEM files; peers must present certificates for `server_name` issued by that CA.
pub fn load(
    cert_pem: &Path,
    key_pem: &Path,
    ca_pem: &Path,
    server_name: &str,
) -> Result<TlsSettings, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let (cert, key, ca) = (read(cert_pem)?, read(key_pem)?, read(ca_pem)?);
    build(
        (&format!("certificate file {}", cert_pem.display()), &cert),
        (&format!("key file {}", key_pem.display()), &key),
        (&format!("CA file {}", ca_pem.display()), &ca),
        server_name,
    )
}

/// Like [`load`], from PEM text in memory.
pub fn from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
    server_name: &str,
) -> Result<TlsSettings, TlsError> {
    build(
        ("certificate PEM", cert_pem),
        ("key PEM", key_pem),
        ("CA PEM", ca_pem),
        server_name,
    )
}

/// The crypto provider every configuration here uses (ring), independent of any
/// process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

fn build(
    (cert_what, cert_pem): (&str, &[u8]),
    (key_what, key_pem): (&str, &[u8]),
    (ca_what, ca_pem): (&str, &[u8]),
    server_name: &str,
) -> Result<TlsSettings, TlsError> {
    let chain = certs(cert_what, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: key_what.to_string(),
        detail: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certs(ca_what, ca_pem)? {
        roots.add(ca).map_err(|source| TlsError::Rejected {
            what: ca_what.to_string(),
            source,
        })?;
    }
    let roots = Arc::new(roots);
    let server_name = ServerName::try_from(server_name.to_string())
        .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
    let rejected = |what: &str| {
        let what = what.to_string();
        move |source| TlsError::Rejected { what, source }
    };

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|source| TlsError::Verifier {
            what: ca_what.to_string(),
            source,
        })?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected(cert_what))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(rejected(key_what))?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected(cert_what))?
        .with_root_certificates(roots.as_ref().clone())
        .with_client_auth_cert(chain, key)
        .map_err(rejected(key_what))?;
    Ok(TlsSettings {
        server: Arc::new(server),
        client: Arc::new(client),
        server_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_input() {
        let e = from_pem(b"", b"", b"", "x").unwrap_err().to_string();
        assert!(
            e.contains("certificate PEM") && e.contains("no certificate"),
            "{e}"
        );
        let e = load(
            Path::new("/nonexistent/node.pem"),
            Path::new("k"),
            Path::new("c"),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/node.pem"), "{e}");
    }
}
