//! Checks of `packaging/` against the command line it drives: every
//! command that the compose file, the bootstrap script, the Containerfile
//! and the systemd units run parses as an `echod` command, every `ECHO_*`
//! variable they set is one echod reads, and the Containerfile builds a
//! non-root image without secrets. No image can be built on this project's
//! machines (no registry for base images), so these checks are what stands
//! for one; `systemd-analyze` and the .deb are tested on the binary
//! (`tests/it/packaging.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use yaml_rust2::{Yaml, YamlLoader};

use crate::cli::Cli;
use crate::{audit, docs, gateway, parser, settings, worker};

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

fn read(relative: &str) -> String {
    let path = packaging().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every variable echod reads: the flags' `env` names and the settings
/// that have no flag (secrets, database URLs, logging).
fn variables() -> BTreeSet<String> {
    fn walk(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env() {
                into.insert(name.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut all = BTreeSet::new();
    walk(&Cli::command(), &mut all);
    all.extend(settings::SECRET_VARS.map(|var| format!("{var}_FILE")));
    all.extend(
        [
            settings::MASTER_KEY_VAR,
            settings::DATABASE_URL_VAR,
            settings::LOG_FILTER_VAR,
            settings::LOG_FORMAT_VAR,
            audit::AUDIT_DATABASE_URL_VAR,
            audit::AUDIT_SIGNING_KEY_VAR,
            audit::AUDIT_ORIGIN_VAR,
            docs::LLM_KEY_VAR,
            gateway::SECRET.var,
            worker::SECRET.var,
            docs::SECRET.var,
            parser::SECRET.var,
        ]
        .map(String::from),
    );
    all
}

/// `args` (without the program name) as echod parses them: the error
/// names the file and the command.
fn parses(args: &[String], place: &str) {
    let argv = std::iter::once("echod".to_owned()).chain(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(argv) {
        panic!("{place}: `echod {}` does not parse: {e}", args.join(" "));
    }
}

fn assert_variable(name: &str, known: &BTreeSet<String>, place: &str) {
    assert!(
        known.contains(name),
        "{place}: {name} is not a variable echod reads"
    );
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the compose variable `key = value` hands a secret over as a
/// variable (which `docker inspect` and /proc/PID/environ show): any value
/// of a secret's variable, but a URL without credentials (NATS inside the
/// set's network), and never an interpolation (`${…}` from `.env`).
fn is_secret_in_a_variable(key: &str, value: &str) -> bool {
    settings::SECRET_VARS.contains(&key)
        && (value.contains('$')
            || !url::Url::parse(value).is_ok_and(|url| {
                url.has_host()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && !url.query_pairs().any(|(name, _)| name.contains("password"))
            }))
}

#[test]
fn a_secret_in_a_variable_is_told_from_a_url_without_credentials() {
    for (key, value) in [
        ("ECHO_NATS_URL", "nats://nats:4222"),
        ("ECHO_DOCS_BLOB_URL", "nats://nats:4222"),
        ("ECHO_ISSUER", "${ECHO_ISSUER:?set in .env}"),
        (
            "ECHO_DATABASE_URL_FILE",
            "/run/secrets/identity_database_url",
        ),
    ] {
        assert!(!is_secret_in_a_variable(key, value), "{key}={value}");
    }
    for (key, value) in [
        (
            "ECHO_MASTER_KEY",
            "bWFzdGVyLWtleS1vZi10aGUtY29uZmlnLXRlc3RzISE",
        ),
        ("ECHO_GATEWAY_CLIENT_SECRET", "s3cret"),
        ("ECHO_REDIS_URL", "redis://:password@redis:6379/0"),
        (
            "ECHO_DATABASE_URL",
            "postgres://postgres/identity?password=x",
        ),
        ("ECHO_DATABASE_URL", "${DATABASE_URL}"),
        ("ECHO_QUEUE_URL", ""),
    ] {
        assert!(is_secret_in_a_variable(key, value), "{key}={value}");
    }
}

/// The compose file: every echod service runs a real subcommand with real
/// flags, sets only real variables, takes every secret from a file of
/// compose's `secrets:` (never a variable's value), and runs in the sandbox.
#[test]
fn compose_services_run_real_commands_with_real_variables() {
    let docs =
        YamlLoader::load_from_str(&read("compose/compose.yaml")).expect("compose.yaml is YAML");
    let services = docs[0]["services"].as_hash().expect("a services map");
    let declared: BTreeSet<String> = docs[0]["secrets"]
        .as_hash()
        .expect("a secrets map")
        .keys()
        .map(|name| name.as_str().expect("a secret name").to_owned())
        .collect();
    let known = variables();
    let mut echod_services = BTreeSet::new();
    let mut replicated = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().expect("a service name");
        let place = format!("compose.yaml, service {name}");
        let mounted: BTreeSet<String> = strings(&service["secrets"]).into_iter().collect();
        assert!(
            mounted.is_subset(&declared),
            "{place}: secrets {mounted:?} not all declared"
        );
        if service["image"].as_str() != Some("echod:local") {
            continue;
        }
        echod_services.insert(name.to_owned());
        if service["deploy"]["replicas"].as_i64().unwrap_or(1) > 1 {
            replicated.insert(name.to_owned());
        }
        let command = strings(&service["command"]);
        if service["entrypoint"].is_badvalue() {
            parses(&command, &place);
        }
        for (key, value) in service["environment"]
            .as_hash()
            .expect("an environment map")
        {
            let key = key.as_str().expect("a variable name");
            assert_variable(key, &known, &place);
            let value = value.as_str().unwrap_or_default();
            assert!(
                !is_secret_in_a_variable(key, value),
                "{place}: {key} is a secret given as a variable; use {key}_FILE and a \
                 compose secret"
            );
            if key.ends_with("_FILE") {
                let file = value;
                let secret = file.strip_prefix("/run/secrets/").unwrap_or_else(|| {
                    panic!("{place}: {key} names {file}, not a file of /run/secrets")
                });
                assert!(
                    mounted.contains(secret),
                    "{place}: {key} names the secret {secret}, which the service does not mount"
                );
            }
        }
        assert_eq!(
            service["read_only"].as_bool(),
            Some(true),
            "{place}: read_only"
        );
        assert_eq!(strings(&service["cap_drop"]), ["ALL"], "{place}: cap_drop");
        assert_eq!(
            strings(&service["security_opt"]),
            ["no-new-privileges:true"],
            "{place}: security_opt"
        );
    }
    let wanted = [
        "bootstrap",
        "identity",
        "audit",
        "gateway",
        "docs",
        "parser",
        "worker",
    ];
    assert_eq!(
        echod_services,
        wanted.map(String::from).into(),
        "echod's services"
    );
    for service in ["identity", "audit", "gateway", "docs", "worker"] {
        assert!(replicated.contains(service), "{service} has replicas");
    }
    for backing in ["postgres", "redis", "nats"] {
        assert!(
            services.contains_key(&Yaml::from_str(backing)),
            "{backing} is in the set"
        );
    }
}

/// make-secrets.sh writes every file compose's `secrets:` names, each
/// 0600, and a second run keeps them.
#[test]
fn make_secrets_writes_every_declared_secret() {
    use std::os::unix::fs::PermissionsExt;

    let docs =
        YamlLoader::load_from_str(&read("compose/compose.yaml")).expect("compose.yaml is YAML");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::copy(
        packaging().join("compose/make-secrets.sh"),
        dir.path().join("make-secrets.sh"),
    )
    .expect("a copy of the script");
    let run = || {
        let status = std::process::Command::new("sh")
            .arg(dir.path().join("make-secrets.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("sh runs");
        assert!(status.success(), "make-secrets.sh: {status}");
    };
    run();
    let first = std::fs::read_to_string(dir.path().join("secrets/master_key")).expect("a key");
    run();
    for (name, secret) in docs[0]["secrets"].as_hash().expect("a secrets map") {
        let file = secret["file"].as_str().expect("a file");
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("secret {name:?}: {}: {e}", path.display()));
        assert!(text.trim().len() >= 32, "{file} holds a secret");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let url = std::fs::read_to_string(dir.path().join("secrets/identity_database_url")).unwrap();
    let password = std::fs::read_to_string(dir.path().join("secrets/postgres_password")).unwrap();
    assert!(
        url.contains(password.trim()),
        "the URL carries the password"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets/master_key")).unwrap(),
        first,
        "a second run keeps what exists"
    );
}

/// The bootstrap script's echod commands, continuation lines joined.
#[test]
fn bootstrap_script_runs_real_commands() {
    let script = read("compose/bootstrap.sh").replace("\\\n", " ");
    let mut commands = 0;
    for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((_, rest)) = line.split_once("echod ") else {
            continue;
        };
        let words: Vec<String> = rest
            .split(['|', ';'])
            .next()
            .unwrap_or_default()
            .split_whitespace()
            // A shell expansion stands for one word, as the script quotes it.
            // Redirections (the secrets on standard input) are not arguments.
            .filter(|word| !word.starts_with('<'))
            .map(|word| {
                word.trim_matches('"')
                    .replace("$ECHO_GATEWAY_PUBLIC_URL", "https://gw.example.test")
            })
            .collect();
        parses(&words, "compose/bootstrap.sh");
        commands += 1;
    }
    assert!(
        commands >= 5,
        "the script registers four clients ({commands} commands)"
    );
}

/// The variables the examples name (`echod.env`, `echo.env.example`) are
/// ones echod reads.
#[test]
fn example_settings_name_real_variables() {
    let known = variables();
    for file in ["echod.env", "compose/echo.env.example"] {
        for line in read(file).lines() {
            let line = line.trim_start_matches(['#', ' ']);
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            if name.starts_with("ECHO_") && !name.contains(' ') {
                assert_variable(name, &known, file);
            }
        }
    }
}

/// One Containerfile instruction, continuation lines joined.
struct Instruction {
    keyword: String,
    rest: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    text.replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            Instruction {
                keyword: keyword.to_ascii_uppercase(),
                rest: rest.trim().to_owned(),
            }
        })
        .collect()
}

/// A JSON-array (exec form) instruction's words.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("not exec form: {rest}: {e}"))
}

/// Multi-stage, the final stage non-root with only the binary copied in,
/// no secrets in the image's settings, a locked build, and an entry point
/// that is echod with a default command it parses.
#[test]
fn containerfile_builds_a_non_root_image_without_secrets() {
    let all = instructions(&read("Containerfile"));
    let froms: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].keyword == "FROM")
        .collect();
    assert!(
        froms.len() >= 2,
        "multi-stage: a build stage and a runtime stage"
    );
    assert!(
        all[froms[0]].rest.ends_with(" AS build"),
        "the first stage is `build`"
    );
    let last_stage = &all[*froms.last().expect("a FROM")..];
    let known = variables();
    for instruction in &all {
        let rest = &instruction.rest;
        assert_ne!(
            instruction.keyword, "ADD",
            "COPY, not ADD (no remote or archive sources)"
        );
        if matches!(instruction.keyword.as_str(), "ENV" | "ARG") {
            let upper = rest.to_ascii_uppercase();
            for secret in [
                "SECRET",
                "PASSWORD",
                "TOKEN",
                "MASTER_KEY",
                "SIGNING_KEY",
                "API_KEY",
            ] {
                assert!(!upper.contains(secret), "no secret in the image: {rest}");
            }
        }
        if instruction.keyword == "RUN" && rest.contains("cargo build") {
            assert!(
                rest.contains("--locked"),
                "the build uses Cargo.lock: {rest}"
            );
        }
        if instruction.keyword == "RUN" && rest.contains("apt-get install") {
            assert!(
                rest.contains("--no-install-recommends")
                    && rest.contains("rm -rf /var/lib/apt/lists")
            );
        }
    }
    let users: Vec<&str> = last_stage
        .iter()
        .filter(|i| i.keyword == "USER")
        .map(|i| i.rest.as_str())
        .collect();
    let user = users.last().expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(uid, "" | "0" | "root"),
        "the image runs as a non-root user, not {user}"
    );
    for instruction in last_stage {
        if instruction.keyword == "COPY" {
            assert!(
                instruction.rest.starts_with("--from=build "),
                "the runtime stage copies only the build's output: {}",
                instruction.rest
            );
        }
        if instruction.keyword == "ENV" {
            for pair in instruction.rest.split_whitespace() {
                let name = pair.split('=').next().unwrap_or_default();
                assert_variable(name, &known, "Containerfile ENV");
            }
        }
    }
    let entrypoint = last_stage
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("an ENTRYPOINT");
    assert_eq!(exec_form(&entrypoint.rest), ["/usr/bin/echod"]);
    let cmd = last_stage
        .iter()
        .find(|i| i.keyword == "CMD")
        .expect("a CMD");
    parses(&exec_form(&cmd.rest), "Containerfile CMD");
}

/// The units run `echod up` and `echod serve <service>` for every service
/// `serve` has, as the user echod with its own state directory.
#[test]
fn systemd_units_run_real_commands() {
    let exec_start = |unit: &str| -> Vec<String> {
        let text = read(&format!("systemd/{unit}"));
        for setting in [
            "User=echod",
            "StateDirectory=echod",
            "Environment=ECHO_DATA_DIR=/var/lib/echod",
        ] {
            assert!(text.lines().any(|l| l == setting), "{unit}: {setting}");
        }
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/bin/echod "))
            .unwrap_or_else(|| panic!("{unit} runs /usr/bin/echod"));
        line.split_whitespace().map(String::from).collect()
    };
    parses(&exec_start("echod.service"), "echod.service");
    let template = exec_start("echod@.service");
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("echod serve");
    for service in serve.get_subcommands() {
        let args: Vec<String> = template
            .iter()
            .map(|word| word.replace("%i", service.get_name()))
            .collect();
        parses(&args, &format!("echod@{}.service", service.get_name()));
    }
    let hardening = read("systemd/hardening.conf");
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(
            hardening.lines().any(|l| l == setting),
            "hardening.conf: {setting}"
        );
    }
}
