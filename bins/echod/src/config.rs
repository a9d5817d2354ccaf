//! The configuration file (`--config FILE`, `ECHO_CONFIG`): one TOML file
//! for the whole platform, a section per service (`config/keys.rs`).
//!
//! Each key stands for an `ECHO_*` variable. The file is read first; every
//! key whose variable the environment leaves unset becomes that variable;
//! clap then reads variables under flags. So a flag wins over a variable,
//! a variable over the file, and every flag and variable keeps its name
//! and meaning. What has no variable is handed over as it is
//! ([`FileOnly`]): the gateway's routes, rate limits and trusted proxies
//! ([`GatewayFile`]), and each service's own listener certificate
//! (`[gateway] tls_cert = …`, [`ListenerCerts`]), which `echod serve
//! <service>` reads as `ECHO_TLS_CERT` and `echod up` as that listener's.
//!
//! `echod config check` validates the whole configuration as `up` and each
//! `serve` would read it and prints the effective one, secrets redacted;
//! `echod config example` prints every key, commented.

pub mod keys;
pub mod values;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, anyhow};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, Parser};
use echo_gateway::GatewayFile;

use crate::cli::{Cli, Command};
use crate::settings::{self, SECRET_VARS};
use crate::tls::{ListenerCert, ListenerCerts};
use keys::Platform;
use values::{Mode, Value, quoted, redact_url};

/// Reads the file at `path`: every key typed, an unknown key an error with
/// its name and line.
pub fn load(path: &Path) -> anyhow::Result<Platform> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Result<Platform, String> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().replace("unknown field", "unknown key");
        match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("line {line}: {message}")
            }
            None => message,
        }
    })
}

/// The file's keys whose variables the environment (`is_set`) leaves
/// unset. A secret's two variables (`X`, `X_FILE`) go together: the
/// environment setting either one overrides the file's.
fn unset_vars(
    file: &Platform,
    services: &[&str],
    is_set: impl Fn(&str) -> bool,
) -> Result<Vec<(&'static str, String)>, String> {
    Ok(file
        .all_vars(services)?
        .into_iter()
        .filter(|(var, _)| {
            let base = var.strip_suffix("_FILE").unwrap_or(var);
            !is_set(base) && !is_set(&format!("{base}_FILE"))
        })
        .collect())
}

/// What only the file gives (no variable stands for it).
#[derive(Debug, Default)]
pub struct FileOnly {
    /// The gateway's routes, rate limits and trusted proxies.
    pub gateway: GatewayFile,
    /// Each service's own listener certificate, for `echod up`.
    pub listener_certs: ListenerCerts,
}

/// Applies the file named by `--config` / `ECHO_CONFIG` for a command that
/// runs `services`: its keys become their variables where the environment
/// leaves them unset, then what only the file gives is returned,
/// validated. Without a file, nothing (no routes, default limits, no
/// certificate of a service's own).
///
/// The variables are given by running this program again with them
/// (`exec`, same process id, arguments and descriptors), since setting
/// the environment of a running process is `unsafe` in Rust 2024 and this
/// crate forbids unsafe code. The new image finds every variable set and
/// goes on; when nothing is missing nothing is run again.
pub fn apply(path: Option<&Path>, services: &[&str]) -> anyhow::Result<FileOnly> {
    let Some(path) = path else {
        return Ok(FileOnly::default());
    };
    let file = load(path)?;
    let in_file = |e: String| anyhow!("{}: {e}", path.display());
    let missing =
        unset_vars(&file, services, |var| std::env::var_os(var).is_some()).map_err(in_file)?;
    if !missing.is_empty() {
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| OsString::from("echod"));
        let program = std::env::current_exe().context("cannot find the echod binary")?;
        let error = std::process::Command::new(program)
            .arg0(arg0)
            .args(args)
            .envs(missing)
            .exec();
        return Err(anyhow!(error).context("cannot apply the configuration file"));
    }
    let listener_certs = file.listener_certs().map_err(in_file)?;
    let gateway = file.gateway_file().map_err(in_file)?;
    // Validate now, so a bad route stops any command with its name.
    gateway
        .route_table()
        .and_then(|_| gateway.rate_limits())
        .with_context(|| format!("in {}", path.display()))?;
    Ok(FileOnly {
        gateway,
        listener_certs,
    })
}

/// Secrets never come from a flag: a URL flag (`--queue-url`, …) carrying
/// a password is refused; its variable or `…_FILE` is the place for it.
pub fn refuse_secret_flags(command: &clap::Command, matches: &ArgMatches) -> anyhow::Result<()> {
    for arg in command.get_arguments() {
        let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
            continue;
        };
        let id = arg.get_id().as_str();
        if !SECRET_VARS.contains(&var) || matches.value_source(id) != Some(ValueSource::CommandLine)
        {
            continue;
        }
        let given = matches
            .get_raw(id)
            .into_iter()
            .flatten()
            .filter_map(|v| v.to_str());
        for value in given {
            if url::Url::parse(value).is_ok_and(|url| url.password().is_some()) {
                anyhow::bail!(
                    "--{} carries a password: secrets never come from a flag; give the URL \
                     by {var} or in a file named by {var}_FILE",
                    arg.get_long().unwrap_or(id)
                );
            }
        }
    }
    if let Some((name, sub)) = matches.subcommand()
        && let Some(sub_command) = command.find_subcommand(name)
    {
        refuse_secret_flags(sub_command, sub)?;
    }
    Ok(())
}

/// The commands whose configuration `config check` validates.
const SERVICES: [&[&str]; 7] = [
    &["up"],
    &["serve", "identity"],
    &["serve", "audit"],
    &["serve", "gateway"],
    &["serve", "docs"],
    &["serve", "parser"],
    &["serve", "worker"],
];

/// `echod config check`: every service's variables (and the file's keys
/// they came from) as `up` and each `serve` read them, every secret that is
/// given readable, production mode's refusals; then the effective
/// configuration, secrets redacted.
pub fn check(data_dir: &Path, mode: Mode, file: &FileOnly) -> anyhow::Result<()> {
    let mut up = None;
    for args in SERVICES {
        let cli = Cli::try_parse_from(std::iter::once("echod").chain(args.iter().copied()))
            .map_err(|e| {
                let text = e.to_string();
                let reason = text.lines().next().unwrap_or_default();
                anyhow!(
                    "echod {}: {}",
                    args.join(" "),
                    reason.trim_start_matches("error: ")
                )
            })?;
        if let Command::Up(args) = cli.command {
            up = Some(args);
        }
    }
    for var in SECRET_VARS {
        settings::secret_var(var)?;
    }
    if mode == Mode::Production
        && let Some(up) = &up
    {
        crate::production::check_up(up, data_dir, &file.listener_certs)?;
    }
    print!("{}", effective(data_dir, mode, file));
    Ok(())
}

/// What clap says of each variable: its default, and the flags that read
/// it.
#[derive(Default)]
struct FlagInfo {
    default: Option<String>,
    flags: Vec<String>,
}

fn flag_info() -> BTreeMap<String, FlagInfo> {
    fn walk(command: &clap::Command, info: &mut BTreeMap<String, FlagInfo>) {
        for arg in command.get_arguments() {
            let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
                continue;
            };
            let entry = info.entry(var.to_owned()).or_default();
            if entry.default.is_none() {
                entry.default = arg
                    .get_default_values()
                    .first()
                    .and_then(|d| d.to_str())
                    .map(str::to_owned);
            }
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                if !entry.flags.contains(&flag) {
                    entry.flags.push(flag);
                }
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, info);
        }
    }
    let mut info = BTreeMap::new();
    walk(&Cli::command(), &mut info);
    info
}

/// The effective configuration as TOML: each key's value (from the file,
/// the environment, or the global flags), else its default, commented;
/// URLs' passwords redacted, secrets never shown; a service's own
/// certificate in its section.
fn effective(data_dir: &Path, mode: Mode, file: &FileOnly) -> String {
    let info = flag_info();
    let mut out = String::from(
        "# The effective configuration (file < ECHO_* variables < flags), secrets redacted.\n",
    );
    let mut section = "";
    for key in keys::all() {
        if key.section != section {
            section = key.section;
            let _ = write!(out, "\n[{section}]\n");
            let own = file.listener_certs.get(section).map(ListenerCert::keys);
            for (name, _, path) in own.into_iter().flatten() {
                if let Some(path) = path {
                    let _ = writeln!(out, "{name} = {}", quoted(&path.display().to_string()));
                }
            }
        }
        let value = match key.var {
            "ECHO_DATA_DIR" => Some(data_dir.display().to_string()),
            "ECHO_MODE" => Some(mode.to_env()),
            var => std::env::var(var).ok(),
        };
        // A key with an example has no default of one value (the issuer's
        // is identity's listen address).
        let default = match key.example {
            Some(_) => None,
            None => info.get(key.var).and_then(|i| i.default.as_deref()),
        };
        let secret_set = key
            .var
            .strip_suffix("_FILE")
            .filter(|base| SECRET_VARS.contains(base) && std::env::var_os(base).is_some());
        let _ = match (value, default, secret_set) {
            (Some(value), _, _) => writeln!(out, "{} = {}", key.name, (key.toml)(&value)),
            (None, _, Some(base)) => writeln!(out, "# {}: {base} is set (not shown)", key.name),
            (None, Some(default), None) => {
                writeln!(out, "{} = {}  # default", key.name, (key.toml)(default))
            }
            (None, None, None) => writeln!(out, "# {}: not set", key.name),
        };
    }
    let _ = writeln!(out, "\n# The gateway's routes:");
    for route in &file.gateway.routes {
        let _ = writeln!(
            out,
            "#   {} -> {} (audience {})",
            route.prefix,
            redact_url(&route.upstream),
            route.audience
        );
    }
    out
}

/// `echod config example`: every key, its meaning, its variable and
/// flags, set to its default, or commented with an example where the key
/// has one (no default, or a default that is not one value).
pub fn example() -> String {
    let info = flag_info();
    let mut out = String::from(
        "# Echo's configuration: `echod --config FILE …` or ECHO_CONFIG=FILE.\n\
         # Each key stands for the ECHO_* variable named above it: a variable set in\n\
         # the environment wins over the file, a flag over both. Secrets are never\n\
         # written here: a secret's key names the file that holds it. A key shown\n\
         # commented has no default of its own. docs/configuration.md says more.\n",
    );
    let mut section = "";
    for key in keys::all() {
        if key.section != section {
            if section == "gateway" {
                out.push_str(GATEWAY_ROUTES_EXAMPLE);
            }
            section = key.section;
            let _ = write!(out, "\n[{section}]\n");
            if LISTENERS.contains(&section) {
                out.push_str(&LISTENER_CERT_EXAMPLE.replace("SERVICE", section));
            }
        }
        out.push('\n');
        for line in wrap(key.doc.trim(), 76) {
            let _ = writeln!(out, "# {line}");
        }
        let flags = info
            .get(key.var)
            .map(|i| i.flags.join(", "))
            .unwrap_or_default();
        let _ = match flags.as_str() {
            "" => writeln!(out, "# variable {}", key.var),
            flags => writeln!(out, "# variable {}, flag {flags}", key.var),
        };
        let default = info.get(key.var).and_then(|i| i.default.as_deref());
        let _ = match (key.example, default) {
            (Some(example), _) => writeln!(out, "# {} = {}", key.name, (key.toml)(example)),
            (None, Some(default)) => writeln!(out, "{} = {}", key.name, (key.toml)(default)),
            (None, None) => writeln!(out, "# {} =", key.name),
        };
    }
    out
}

/// The sections of services with a listener: each may have a certificate
/// of its own.
const LISTENERS: [&str; 5] = ["identity", "audit", "gateway", "docs", "parser"];

/// A service's own listener certificate, commented.
const LISTENER_CERT_EXAMPLE: &str = r#"
# This service's own listener certificate (no variable; docs/tls.md): for
# `echod serve SERVICE` these stand for ECHO_TLS_CERT, ECHO_TLS_KEY and
# ECHO_CLIENT_CA and win over the top level's tls_cert, tls_key and
# client_ca; in `echod up` they serve this listener, where they win over
# the shared certificate (tls_cert, dev_tls) and client_ca.
# tls_cert = "/etc/echo/tls/SERVICE.pem"
# tls_key = "/etc/echo/tls/SERVICE-key.pem"
# client_ca = "/etc/echo/tls/clients.pem"
"#;

/// The gateway's structured part, commented (docs/gateway.md).
const GATEWAY_ROUTES_EXAMPLE: &str = r#"
# The gateway's routes, rate limits and trusted proxies (docs/gateway.md,
# "Routing to upstreams"); no variable. The gateway's own file before this
# one had these keys at the top level, which is still read.
# trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
#
# [gateway.rate_limit]
# per_ip = { per_second = 50, burst = 100 }
# per_user = { per_second = 20, burst = 40 }
#
# [[gateway.routes]]
# prefix = "/api/orders"
# upstream = "http://127.0.0.1:9000"
# audience = "orders"
# roles = ["user"]
# strip_prefix = true
# timeout = "30s"
"#;

/// `text` in lines of at most `width` characters, cut between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let error =
            parse("mode = \"production\"\n\n[identity]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n")
                .unwrap_err();
        assert!(error.starts_with("line 5:"), "{error}");
        assert!(error.contains("unknown key `lisen`"), "{error}");
        let error = parse("[identiy]\n").unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("identiy"),
            "{error}"
        );
        let error = parse("[docs]\nllm_timeout = \"soon\"\n").unwrap_err();
        assert!(
            error.starts_with("line 2:") && error.contains("soon"),
            "{error}"
        );
    }

    #[test]
    fn the_environment_overrides_the_file_and_a_secret_goes_whole() {
        let file = parse(
            "[identity]\nlisten = \"127.0.0.1:1\"\nlockout_after = 12\ndatabase_url_file = \"/x\"\n",
        )
        .unwrap();
        let set = ["ECHO_LOCKOUT_AFTER", "ECHO_DATABASE_URL"];
        let vars = unset_vars(&file, &["identity"], |var| set.contains(&var)).unwrap();
        assert_eq!(
            vars,
            [("ECHO_IDENTITY_LISTEN", "127.0.0.1:1".to_owned())],
            "ECHO_DATABASE_URL overrides the file's database_url_file"
        );
    }

    #[test]
    fn a_services_own_certificate_wins_for_its_serve_and_stays_its_own_in_up() {
        let file = parse(
            "tls_cert = \"/all.pem\"\ntls_key = \"/all.key\"\n\
             [identity]\ntls_cert = \"/id.pem\"\ntls_key = \"/id.key\"\nclient_ca = \"/ca.pem\"\n\
             [docs]\nclient_ca = \"/docs-ca.pem\"\n",
        )
        .unwrap();
        let env = |services: &[&str]| -> BTreeMap<&str, String> {
            unset_vars(&file, services, |_| false)
                .unwrap()
                .into_iter()
                .collect()
        };
        let identity = env(&["identity"]);
        assert_eq!(identity["ECHO_TLS_CERT"], "/id.pem");
        assert_eq!(identity["ECHO_TLS_KEY"], "/id.key");
        assert_eq!(identity["ECHO_CLIENT_CA"], "/ca.pem");
        let audit = env(&["audit"]);
        assert_eq!(audit["ECHO_TLS_CERT"], "/all.pem");
        assert!(!audit.contains_key("ECHO_CLIENT_CA"));
        let docs = env(&["docs"]);
        assert_eq!(docs["ECHO_TLS_CERT"], "/all.pem", "the shared certificate");
        assert_eq!(docs["ECHO_CLIENT_CA"], "/docs-ca.pem");
        // `up`: the shared certificate as its variables, each service's
        // own as its listener's.
        let up = env(&["identity", "audit", "docs"]);
        assert_eq!(up["ECHO_TLS_CERT"], "/all.pem");
        assert!(!up.contains_key("ECHO_CLIENT_CA"));
        let own = file.listener_certs().unwrap();
        assert_eq!(
            own.keys().copied().collect::<Vec<_>>(),
            ["docs", "identity"]
        );
        assert_eq!(own["identity"].cert.as_deref(), Some(Path::new("/id.pem")));
        assert_eq!(own["docs"].cert, None);
        // The environment still wins over the file.
        let vars = unset_vars(&file, &["identity"], |var| var == "ECHO_TLS_CERT").unwrap();
        assert!(vars.iter().all(|(var, _)| *var != "ECHO_TLS_CERT"));
        let half = parse("[docs]\ntls_cert = \"/d.pem\"\n").unwrap();
        for services in [&["docs"][..], &["docs", "parser"]] {
            let error = unset_vars(&half, services, |_| false).unwrap_err();
            assert!(
                error.contains("[docs]") && error.contains("tls_key"),
                "{error}"
            );
        }
        let unknown = parse("[docs]\ntls_certificate = \"/d.pem\"\n").unwrap_err();
        assert!(
            unknown.contains("line 2") && unknown.contains("tls_certificate"),
            "{unknown}"
        );
    }

    #[test]
    fn the_gateway_part_comes_from_one_place() {
        let route = "prefix = \"/api/x\"\nupstream = \"http://127.0.0.1:9\"\naudience = \"x\"\n";
        let legacy = parse(&format!(
            "trusted_proxies = [\"10.0.0.0/8\"]\n[[routes]]\n{route}"
        ))
        .unwrap()
        .gateway_file()
        .unwrap();
        let sectioned = parse(&format!(
            "[gateway]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[[gateway.routes]]\n{route}"
        ))
        .unwrap()
        .gateway_file()
        .unwrap();
        for file in [&legacy, &sectioned] {
            assert_eq!(file.routes.len(), 1);
            assert_eq!(file.trusted_proxies, ["10.0.0.0/8"]);
        }
        let both = parse(&format!("[[routes]]\n{route}[[gateway.routes]]\n{route}")).unwrap();
        assert!(both.gateway_file().unwrap_err().contains("routes"));
    }

    /// A flag added with a variable and no key fails here: every variable a
    /// flag reads is a key of the file (but the file's own).
    #[test]
    fn every_variable_a_flag_reads_is_a_key() {
        let keyed: Vec<&str> = keys::all().map(|k| k.var).collect();
        for var in flag_info().keys() {
            if var != "ECHO_CONFIG" {
                assert!(
                    keyed.contains(&var.as_str()),
                    "{var} has no key in config/keys.rs"
                );
            }
        }
    }

    /// Every secret can come from a file, and that file is a key.
    #[test]
    fn every_secret_has_a_file_key() {
        for var in SECRET_VARS {
            let file = format!("{var}_FILE");
            assert!(keys::all().any(|k| k.var == file), "{file}");
        }
    }

    /// A key added without an example fails here: the example shows every
    /// key, and with every line uncommented it is a valid file.
    #[test]
    fn the_example_shows_every_key_and_parses_uncommented() {
        let example = example();
        assert!(parse(&example).is_ok(), "{example}");
        let info = flag_info();
        for key in keys::all() {
            let has_default = info.get(key.var).is_some_and(|i| i.default.is_some());
            assert!(
                has_default || key.example.is_some(),
                "{}.{} has neither a default nor an example",
                key.section,
                key.name
            );
        }
        let mut section = String::new();
        let uncommented: String = example
            .lines()
            .map(|line| {
                if let Some(header) = line.strip_prefix('[') {
                    section = header.trim_end_matches(']').to_owned();
                }
                let bare = line.trim_start_matches("# ");
                let is_key = keys::all()
                    .any(|k| k.section == section && bare.starts_with(&format!("{} = ", k.name)));
                let is_cert = LISTENERS.contains(&section.as_str())
                    && ListenerCert::default()
                        .keys()
                        .iter()
                        .any(|(name, _, _)| bare.starts_with(&format!("{name} = ")));
                if is_key || is_cert { bare } else { line }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let set: Vec<&str> = file
            .vars_of_keys()
            .into_iter()
            .map(|(var, _)| var)
            .collect();
        for key in keys::all() {
            assert!(set.contains(&key.var), "{} is not in the example", key.var);
        }
        let certs = file.listener_certs().unwrap();
        for section in LISTENERS {
            let own = &certs[section];
            assert!(own.cert.is_some() && own.key.is_some() && own.client_ca.is_some());
        }
    }

    /// docs/configuration.md documents every key and its variable.
    #[test]
    fn the_documentation_names_every_key() {
        let doc = include_str!("../../../docs/configuration.md");
        for key in keys::all() {
            assert!(doc.contains(&format!("`{}`", key.var)), "{}", key.var);
            assert!(doc.contains(&format!("`{}`", key.name)), "{}", key.name);
        }
    }
}
