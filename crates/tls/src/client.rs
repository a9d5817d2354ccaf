//! Whom a service trusts when it calls another, and the certificate it
//! presents: the one place outgoing TLS is configured.

use std::sync::Arc;
use std::time::Duration;

use echo_crypto::TrustedRoots;
use rustls::ClientConfig;

use crate::{CertFiles, PROTOCOL_VERSIONS, TlsError, provider};

/// The longest a connection may take to open, whatever the request's
/// timeout: a peer that does not answer the handshake is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Outgoing TLS: the [`TrustedRoots`] (the system's roots plus the CAs of
/// `ECHO_CA_FILE`, the same PostgreSQL, Redis and NATS trust), TLS 1.2 and
/// 1.3 only, and optionally a client
/// certificate presented to listeners that ask for one (mutual TLS; the
/// pair is the caller's [`CertFiles`], so a renewal reaches calls too).
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts `roots`; presents `identity` when a listener asks for a
    /// client certificate.
    pub fn new(roots: &TrustedRoots, identity: Option<Arc<CertFiles>>) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots.root_store());
        let mut config = match identity {
            Some(pair) => builder.with_client_cert_resolver(pair),
            None => builder.with_no_client_auth(),
        };
        // Calls between services are HTTP/1.1 (pooled connections).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration, for clients other than reqwest (the
    /// gateway's upstream connector).
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The HTTP client services call each other with: this trust and
    /// identity, `timeout` per request (connecting at most 5 s of it), no
    /// redirects followed (a redirect could carry a bearer token
    /// elsewhere).
    pub fn http_client(&self, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(ClientConfig::clone(&self.config))
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                // Only a broken system (no DNS resolver) gets here; the
                // default client trusts the system's roots only, so a call
                // that needed more fails rather than trusts less.
                tracing::error!(error = %e, "cannot build the HTTP client; using the default one");
                reqwest::Client::new()
            })
    }
}

/// The system's roots only, no client certificate.
impl Default for ClientTls {
    fn default() -> Self {
        // The only failure left without an identity is a provider without
        // TLS 1.2 and 1.3, which aws-lc-rs is not.
        Self::new(&TrustedRoots::system(), None).expect("aws-lc-rs implements TLS 1.2 and 1.3")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Default`'s `expect` rests on constants: the provider and
    /// [`PROTOCOL_VERSIONS`] agree (what rustls checks), whatever the roots.
    #[test]
    fn the_default_is_built_from_a_provider_that_speaks_our_versions() {
        assert!(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(PROTOCOL_VERSIONS)
                .is_ok()
        );
        let tls = ClientTls::default();
        assert_eq!(tls.rustls_config().alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
