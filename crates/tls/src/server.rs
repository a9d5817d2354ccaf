//! A listener's TLS configuration.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::files::read_certificates;
use crate::{CertFiles, PROTOCOL_VERSIONS, TlsError, provider};

/// How a listener speaks TLS: its certificate (reloaded by the runner when
/// the files change), TLS 1.2 and 1.3 only, HTTP/2 or HTTP/1.1 by ALPN,
/// and, with a client CA, mutual TLS.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    cert: Arc<CertFiles>,
}

impl ServerTls {
    /// Serves `cert`; with `client_ca` (a PEM file of CA certificates), a
    /// handshake without a client certificate signed by one of them fails.
    /// The CA file is read once, here.
    pub fn new(cert: Arc<CertFiles>, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let provider = provider();
        let clients = match client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certificates(path)? {
                    roots.add(ca).map_err(|e| TlsError::Invalid {
                        path: path.to_owned(),
                        detail: format!("not a CA certificate: {e}"),
                    })?;
                }
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(format!("client CA {}: {e}", path.display())))?
            }
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert,
        })
    }

    /// The rustls configuration handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The certificate served, for its reload job.
    pub fn cert(&self) -> &Arc<CertFiles> {
        &self.cert
    }
}
