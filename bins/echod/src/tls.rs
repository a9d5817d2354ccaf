//! TLS as `echod` sets it up: a service's listener (`--tls-cert`,
//! `--tls-key`, `--client-ca`), what it presents and trusts when it calls
//! others (`--client-cert`, `--client-key`, `--ca-file`), and `up
//! --dev-tls`, whose local CA in `<data>/tls` certifies every service;
//! and a service's own certificate from its section of the configuration
//! file ([`ListenerCert`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use echo_crypto::TrustedRoots;
use echo_edge::{Service, cert_reload_job};
use echo_tls::{CertFiles, ClientTls, DevCa, ServerTls};

use crate::args::{ClientCertArgs, TlsArgs};

/// Where `up --dev-tls` keeps its CA and the services' certificates.
pub const DEV_TLS_DIR: &str = "tls";

/// A service's own listener certificate, from its section of the
/// configuration file (`[gateway] tls_cert = …`): for `echod serve
/// <service>` the values of `ECHO_TLS_CERT`, `ECHO_TLS_KEY` and
/// `ECHO_CLIENT_CA` (under the environment and flags); in `echod up` that
/// listener's, where it wins over the shared certificate (`--tls-cert`,
/// the top level's `tls_cert`, `--dev-tls`) and `--client-ca`.
#[derive(Debug, Clone, Default)]
pub struct ListenerCert {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Client certificates this listener requires (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ListenerCert {
    pub fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.client_ca.is_none()
    }

    /// Its keys in a section, each with the variable it stands for in
    /// `echod serve`, and its value.
    pub fn keys(&self) -> [(&'static str, &'static str, Option<&Path>); 3] {
        [
            ("tls_cert", "ECHO_TLS_CERT", self.cert.as_deref()),
            ("tls_key", "ECHO_TLS_KEY", self.key.as_deref()),
            ("client_ca", "ECHO_CLIENT_CA", self.client_ca.as_deref()),
        ]
    }

    /// (variable, value) of what it sets, as `echod serve` reads them.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        self.keys()
            .into_iter()
            .filter_map(|(_, var, path)| path.map(|p| (var, p.display().to_string())))
            .collect()
    }
}

/// The services' own listener certificates, by the name of their section
/// (`identity`, `audit`, `gateway`, `docs`, `parser`).
pub type ListenerCerts = BTreeMap<&'static str, ListenerCert>;

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

/// The TLS of the services `echod up` runs: a listener's own certificate
/// of the configuration file where it has one, else the flags' certificate
/// for every listener, or with `--dev-tls` each service's own from the
/// local CA, which every service trusts.
pub struct PlatformTls {
    dev: Option<DevCa>,
    args: TlsArgs,
    own: ListenerCerts,
    /// What every service trusts: `roots`, and the development CA.
    roots: TrustedRoots,
}

impl PlatformTls {
    pub fn new(
        data_dir: &Path,
        args: &TlsArgs,
        roots: &TrustedRoots,
        dev: bool,
        own: ListenerCerts,
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
            own,
            roots,
        })
    }

    /// The TLS of service `name`. `--client-ca` applies only to listeners
    /// that services alone call (`services_only`: audit, docs, the
    /// parser); browsers cannot show a client certificate to identity or
    /// the gateway. A listener's own `client_ca` (its section's) applies
    /// to it, whichever it is.
    pub fn service(&self, name: &str, services_only: bool) -> anyhow::Result<ServiceTls> {
        let own = self.own.get(name).cloned().unwrap_or_default();
        let client_ca = match &own.client_ca {
            Some(path) => Some(path.clone()),
            None => self.args.client_ca.clone().filter(|_| services_only),
        };
        if let (Some(cert), Some(key)) = (&own.cert, &own.key) {
            let cert = CertFiles::load(cert, key)
                .with_context(|| format!("[{name}] tls_cert / tls_key"))?;
            let server = ServerTls::new(cert.clone(), client_ca.as_deref())
                .with_context(|| format!("[{name}] client_ca"))?;
            return ServiceTls::with_client(
                Some(server),
                Some(cert),
                &self.args.client,
                &self.roots,
            );
        }
        let Some(ca) = &self.dev else {
            if own.client_ca.is_some() && self.args.tls_cert.is_none() {
                anyhow::bail!(
                    "[{name}] client_ca needs a certificate: tls_cert and tls_key in [{name}] \
                     or at the top level (mutual TLS is TLS)"
                );
            }
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
            .with_context(|| format!("the client CA of {name}"))?;
        ServiceTls::with_client(Some(server), Some(cert), &self.args.client, &self.roots)
    }
}
