//! Production mode (`mode = "production"`, `ECHO_MODE=production`,
//! `--mode production`): the start is refused on any development default
//! that exposes the platform, each refusal naming its setting. What a
//! command exposes is described plainly ([`Exposure`]), so the check does
//! not depend on how each setting is read.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::cli::{Command, Serve};
use crate::settings::{MASTER_KEY_VAR, MasterKeyPlace, master_key_place};
use crate::tls::ListenerCerts;
use crate::up::UpArgs;

/// The opt-in to a master key inside the data directory.
pub const MASTER_KEY_IN_DATA_DIR_VAR: &str = "ECHO_MASTER_KEY_IN_DATA_DIR";

/// A listening socket of a service.
pub struct Listener<'a> {
    /// The setting that gives the address, e.g. `identity.listen
    /// (ECHO_IDENTITY_LISTEN)`.
    pub setting: &'static str,
    pub address: &'a str,
    /// Whether the listener serves TLS.
    pub tls: bool,
}

impl<'a> Listener<'a> {
    /// `tls`: whether the service has a certificate configured
    /// (`--tls-cert`, `up --dev-tls`, or its own in its section of the
    /// configuration file).
    pub fn new(setting: &'static str, address: &'a str, tls: bool) -> Self {
        Self {
            setting,
            address,
            tls,
        }
    }
}

/// What a command exposes.
pub struct Exposure<'a> {
    pub listeners: Vec<Listener<'a>>,
    /// (setting, URL) of the issuer and public URLs the command uses.
    pub urls: Vec<(&'static str, String)>,
    /// Whether the command holds the master key.
    pub master_key: bool,
}

impl<'a> Exposure<'a> {
    /// A service that trusts `issuer` and holds no master key (audit,
    /// docs, the parser, the worker).
    fn service(listener: Option<Listener<'a>>, issuer: &str) -> Self {
        Self {
            listeners: listener.into_iter().collect(),
            urls: vec![(ISSUER, issuer.to_owned())],
            master_key: false,
        }
    }
}

const ISSUER: &str = "issuer (ECHO_ISSUER)";
const PUBLIC_URL: &str = "gateway.public_url (ECHO_GATEWAY_PUBLIC_URL)";

/// The refusals of production mode for `command` (with `own`, the
/// services' own certificates of the configuration file), in one error.
pub fn check_command(
    command: &Command,
    data_dir: &Path,
    own: &ListenerCerts,
) -> anyhow::Result<()> {
    let exposure = match command {
        Command::Up(args) => return check_up(args, data_dir, own),
        Command::Serve { service } => match service.as_ref() {
            Serve::Identity(args) => Exposure {
                listeners: vec![Listener::new(
                    "identity.listen (ECHO_IDENTITY_LISTEN)",
                    &args.identity.identity_listen,
                    args.tls.tls_cert.is_some(),
                )],
                urls: vec![(
                    ISSUER,
                    issuer_of(&args.identity, args.tls.tls_cert.is_some()),
                )],
                master_key: true,
            },
            Serve::Gateway(args) => Exposure {
                listeners: vec![Listener::new(
                    "gateway.listen (ECHO_GATEWAY_LISTEN)",
                    &args.listen,
                    args.tls.tls_cert.is_some(),
                )],
                urls: vec![
                    (ISSUER, args.issuer.issuer.clone()),
                    (
                        PUBLIC_URL,
                        as_served(
                            args.public_url.as_deref(),
                            &args.listen,
                            args.tls.tls_cert.is_some(),
                        ),
                    ),
                ],
                master_key: true,
            },
            Serve::Audit(args) => Exposure::service(
                Some(Listener::new(
                    "audit.listen (ECHO_AUDIT_LISTEN)",
                    &args.audit_listen,
                    args.tls.tls_cert.is_some(),
                )),
                &args.issuer.issuer,
            ),
            Serve::Docs(args) => Exposure::service(
                Some(Listener::new(
                    "docs.listen (ECHO_DOCS_LISTEN)",
                    &args.listen,
                    args.tls.tls_cert.is_some(),
                )),
                &args.issuer.issuer,
            ),
            Serve::Parser(args) => Exposure::service(
                Some(Listener::new(
                    "parser.listen (ECHO_PARSER_LISTEN)",
                    &args.listen,
                    args.tls.tls_cert.is_some(),
                )),
                &args.issuer.issuer,
            ),
            Serve::Worker(args) => Exposure::service(None, &args.issuer.issuer),
        },
        _ => return Ok(()),
    };
    check(&exposure, data_dir)
}

/// The refusals of production mode for `echod up` (and `config check`):
/// a listener serves TLS with the shared certificate (`--tls-cert`,
/// `--dev-tls`) or its own (`own`, from its section of the file).
pub fn check_up(args: &UpArgs, data_dir: &Path, own: &ListenerCerts) -> anyhow::Result<()> {
    let shared = args.dev_tls || args.tls.tls_cert.is_some();
    let tls = |service: &str| shared || own.get(service).is_some_and(|c| c.cert.is_some());
    let exposure = Exposure {
        listeners: vec![
            Listener::new(
                "identity.listen (ECHO_IDENTITY_LISTEN)",
                &args.identity.identity_listen,
                tls("identity"),
            ),
            Listener::new(
                "audit.listen (ECHO_AUDIT_LISTEN)",
                &args.audit_listen,
                tls("audit"),
            ),
            Listener::new(
                "gateway.listen (ECHO_GATEWAY_LISTEN)",
                &args.gateway_listen,
                tls("gateway"),
            ),
            Listener::new(
                "docs.listen (ECHO_DOCS_LISTEN)",
                &args.docs_listen,
                tls("docs"),
            ),
            Listener::new(
                "parser.listen (ECHO_PARSER_LISTEN)",
                &args.parser_listen,
                tls("parser"),
            ),
        ],
        urls: vec![
            (ISSUER, issuer_of(&args.identity, tls("identity"))),
            (
                PUBLIC_URL,
                as_served(
                    args.gateway_public_url.as_deref(),
                    &args.gateway_listen,
                    tls("gateway"),
                ),
            ),
        ],
        master_key: true,
    };
    check(&exposure, data_dir)
}

/// Identity's issuer: given, or `http(s)://<listen address>` as it serves.
fn issuer_of(args: &crate::identity::IdentityArgs, tls: bool) -> String {
    as_served(args.issuer.as_deref(), &args.identity_listen, tls)
}

/// A URL given, or the one a listener on `listen` serves (https with TLS).
fn as_served(given: Option<&str>, listen: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    given.map_or_else(|| format!("{scheme}://{listen}"), str::to_owned)
}

/// Every refusal for `exposure`, in one error (one line each), or none.
pub fn check(exposure: &Exposure<'_>, data_dir: &Path) -> anyhow::Result<()> {
    let mut refusals = Vec::new();
    for listener in &exposure.listeners {
        if !listener.tls && !is_loopback_address(listener.address) {
            refusals.push(format!(
                "{}: {} is not a loopback address and serves no TLS; listen on 127.0.0.1 \
                 behind a TLS proxy, or give the service a certificate",
                listener.setting, listener.address
            ));
        }
    }
    for (setting, url) in &exposure.urls {
        if let Ok(parsed) = url::Url::parse(url)
            && parsed.scheme() == "http"
            && !parsed.host_str().is_some_and(is_loopback_host)
        {
            refusals.push(format!(
                "{setting}: {url} is http on an address other than loopback; use https"
            ));
        }
    }
    if exposure.master_key
        && let MasterKeyPlace::File(path) = master_key_place(data_dir)
        && is_inside(&path, data_dir)
    {
        let opted_in = match std::env::var(MASTER_KEY_IN_DATA_DIR_VAR).ok().as_deref() {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(other) => {
                anyhow::bail!("{MASTER_KEY_IN_DATA_DIR_VAR} is {other:?}: it is true or false")
            }
        };
        if !opted_in {
            refusals.push(format!(
                "master_key_file ({MASTER_KEY_VAR}_FILE): the master key {} is inside the data \
                 directory, next to what it seals; keep it elsewhere ({MASTER_KEY_VAR}_FILE or \
                 {MASTER_KEY_VAR}), or accept it with master_key_in_data_dir = true \
                 ({MASTER_KEY_IN_DATA_DIR_VAR}=true)",
                path.display()
            ));
        }
    }
    if refusals.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "production mode refuses to start on development defaults:\n  {}",
        refusals.join("\n  ")
    )
}

/// `host:port` whose host is a loopback address (or a name that resolves
/// only to loopback addresses, like `localhost`).
fn is_loopback_address(address: &str) -> bool {
    match address.to_socket_addrs() {
        Ok(resolved) => {
            let ips: Vec<IpAddr> = resolved.map(|a| a.ip()).collect();
            !ips.is_empty() && ips.iter().all(IpAddr::is_loopback)
        }
        Err(_) => false,
    }
}

/// A URL's host that is a loopback address or `localhost`; a name is not
/// looked up (what it resolves to here says nothing of the browsers).
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `path` lies under `dir` (both made absolute, links resolved
/// where they exist).
fn is_inside(path: &Path, dir: &Path) -> bool {
    let absolute = |p: &Path| -> PathBuf {
        std::fs::canonicalize(p)
            .or_else(|_| {
                // Not there yet (a first run): resolve its parent.
                let parent = p.parent().map(std::fs::canonicalize).transpose()?;
                Ok::<_, std::io::Error>(match (parent, p.file_name()) {
                    (Some(parent), Some(name)) => parent.join(name),
                    _ => std::path::absolute(p)?,
                })
            })
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_owned())
    };
    absolute(path).starts_with(absolute(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_told_from_the_rest() {
        assert!(is_loopback_address("127.0.0.1:8081"));
        assert!(is_loopback_address("[::1]:8081"));
        assert!(is_loopback_address("localhost:8081"));
        assert!(!is_loopback_address("0.0.0.0:8081"));
        assert!(!is_loopback_address("[::]:8081"));
        assert!(is_loopback_host("127.0.0.1") && is_loopback_host("[::1]"));
        assert!(!is_loopback_host("idp.example.com") && !is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn a_listener_with_tls_may_face_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let exposure = |tls| Exposure {
            listeners: vec![Listener {
                setting: "identity.listen (ECHO_IDENTITY_LISTEN)",
                address: "0.0.0.0:8081",
                tls,
            }],
            urls: vec![(ISSUER, "https://idp.example.com".to_owned())],
            master_key: false,
        };
        assert!(check(&exposure(true), dir.path()).is_ok());
        let refused = check(&exposure(false), dir.path()).unwrap_err().to_string();
        assert!(refused.contains("identity.listen"), "{refused}");
    }

    #[test]
    fn a_path_inside_the_data_directory_is_found_however_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(is_inside(&data.join("master.key"), &data));
        assert!(is_inside(&data.join("../data/master.key"), &data));
        assert!(!is_inside(&dir.path().join("master.key"), &data));
    }
}
