//! TLS as `echod` sets it up: a service's listener (`--tls-cert`,
//! `--tls-key`, `--client-ca`), what it presents and trusts when it calls
//! others (`--client-cert`, `--client-key`, `--ca-file`), and `up
//! --dev-tls`, whose local CA in `<data>/tls` certifies every service.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use echo_crypto::TrustedRoots;
use echo_edge::{Service, cert_reload_job};
use echo_tls::{CertFiles, ClientTls, DevCa, ServerTls};

use crate::args::{ClientCertArgs, TlsArgs};

/// Where `up --dev-tls` keeps its CA and the services' certificates.
pub const DEV_TLS_DIR: &str = "tls";

/// One service's TLS.
#[derive(Clone)]
pub struct ServiceTls {
    /// Its listener's, when it serves HTTPS.
    pub server: Option<ServerTls>,
    /// Its calls to other services'.
    pub client: ClientTls,
    /// A client certificate of its own (not the listener's), reloaded by
    /// a job of the service.
    client_cert: Option<Arc<CertFiles>>,
}

impl ServiceTls {
    /// From a service's flags, trusting `roots` on its calls.
    pub fn from_args(tls: &TlsArgs, roots: &TrustedRoots) -> anyhow::Result<Self> {
        let cert = match (&tls.tls_cert, &tls.tls_key) {
            (Some(cert), Some(key)) => {
                Some(CertFiles::load(cert, key).context("--tls-cert / --tls-key")?)
            }
            _ => None,
        };
        let server = match (&cert, &tls.client_ca) {
            (Some(cert), client_ca) => Some(
                ServerTls::new(cert.clone(), client_ca.as_deref())
                    .context("--client-ca (ECHO_CLIENT_CA)")?,
            ),
            (None, Some(_)) => anyhow::bail!(
                "--client-ca (ECHO_CLIENT_CA) needs --tls-cert and --tls-key: mutual TLS is TLS"
            ),
            (None, None) => None,
        };
        Self::with_client(server, cert, &tls.client, roots)
    }

    /// A service without a listener (the worker).
    pub fn client_only(client: &ClientCertArgs, roots: &TrustedRoots) -> anyhow::Result<Self> {
        Self::with_client(None, None, client, roots)
    }

    /// Presents `--client-cert` if given, else `listener_cert`.
    fn with_client(
        server: Option<ServerTls>,
        listener_cert: Option<Arc<CertFiles>>,
        client: &ClientCertArgs,
        roots: &TrustedRoots,
    ) -> anyhow::Result<Self> {
        let own = match (&client.client_cert, &client.client_key) {
            (Some(cert), Some(key)) => {
                Some(CertFiles::load(cert, key).context("--client-cert / --client-key")?)
            }
            _ => None,
        };
        let identity = own.clone().or(listener_cert);
        let client = ClientTls::new(roots, identity).context("--client-cert / --client-key")?;
        Ok(Self {
            server,
            client,
            client_cert: own,
        })
    }

    /// The scheme of its URL.
    pub fn scheme(&self) -> &'static str {
        if self.server.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `<scheme>://<address>` of its listener.
    pub fn url_of(&self, listener: &tokio::net::TcpListener) -> anyhow::Result<String> {
        Ok(format!("{}://{}", self.scheme(), listener.local_addr()?))
    }

    /// `service` with this TLS: HTTPS on its listener, and the reload of
    /// its own client certificate.
    pub fn apply(&self, service: Service) -> Service {
        let service = match &self.server {
            Some(server) => service.with_tls(server.clone()),
            None => service,
        };
        match &self.client_cert {
            Some(files) => service.with_job(cert_reload_job(files.clone())),
            None => service,
        }
    }
}

/// The TLS of the services `echod up` runs: the flags' certificate for
/// every listener, or with `--dev-tls` each service's own from the local
/// CA, which every service trusts.
pub struct PlatformTls {
    dev: Option<DevCa>,
    args: TlsArgs,
    /// What every service trusts: `roots`, and the development CA.
    roots: TrustedRoots,
}

impl PlatformTls {
    pub fn new(
        data_dir: &Path,
        args: &TlsArgs,
        roots: &TrustedRoots,
        dev: bool,
    ) -> anyhow::Result<Self> {
        let dev = if dev {
            let dir = data_dir.join(DEV_TLS_DIR);
            let ca = DevCa::open_or_create(&dir)
                .with_context(|| format!("the development CA in {}", dir.display()))?;
            tracing::info!(ca = %ca.ca_path().display(), "development TLS: trust this CA");
            Some(ca)
        } else {
            None
        };
        let roots = match &dev {
            Some(ca) => roots
                .and_ca_file(&ca.ca_path())
                .context("the development CA")?,
            None => roots.clone(),
        };
        Ok(Self {
            dev,
            args: args.clone(),
            roots,
        })
    }

    /// The TLS of service `name`. `--client-ca` applies only to listeners
    /// that services alone call (`services_only`: audit, docs, the
    /// parser); browsers cannot show a client certificate to identity or
    /// the gateway.
    pub fn service(&self, name: &str, services_only: bool) -> anyhow::Result<ServiceTls> {
        let client_ca = self.args.client_ca.clone().filter(|_| services_only);
        let Some(ca) = &self.dev else {
            let args = TlsArgs {
                client_ca,
                ..self.args.clone()
            };
            return ServiceTls::from_args(&args, &self.roots);
        };
        let issued = ca
            .issue(name)
            .with_context(|| format!("the development certificate of {name}"))?;
        let cert = CertFiles::load(&issued.cert, &issued.key)?;
        let server = ServerTls::new(cert.clone(), client_ca.as_deref())
            .context("--client-ca (ECHO_CLIENT_CA)")?;
        ServiceTls::with_client(Some(server), Some(cert), &self.args.client, &self.roots)
    }
}
