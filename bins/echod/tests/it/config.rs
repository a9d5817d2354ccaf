//! Issue 15, "One configuration": the file (`--config`, `ECHO_CONFIG`)
//! under variables under flags, unknown keys refused by name and line,
//! secrets from files, `echod config check | example`, and production
//! mode's refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use echo_testkit::PgTestDb;

use super::{Hop, SECRET, echod, start, start_up, up_on_free_ports};

/// The variables every secret can come from (`X`, or `X_FILE`).
const SECRET_VARS: [&str; 17] = [
    "ECHO_MASTER_KEY",
    "ECHO_AUDIT_SIGNING_KEY",
    "ECHO_GATEWAY_CLIENT_SECRET",
    "ECHO_DOCS_CLIENT_SECRET",
    "ECHO_PARSER_CLIENT_SECRET",
    "ECHO_WORKER_CLIENT_SECRET",
    "ECHO_LLM_API_KEY",
    "ECHO_DATABASE_URL",
    "ECHO_AUDIT_DATABASE_URL",
    "ECHO_DOCS_DATABASE_URL",
    "ECHO_DOCS_BLOB_URL",
    "ECHO_QUEUE_URL",
    "ECHO_NATS_URL",
    "ECHO_REDIS_URL",
    "ECHO_RATE_LIMIT_URL",
    "ECHO_SMTP_PASSWORD",
    "ECHO_CLIENT_REGISTRATION_TOKEN",
];

/// A master key (32 bytes, base64url), as `ECHO_MASTER_KEY` takes it.
const MASTER_KEY: &str = "bWFzdGVyLWtleS1vZi10aGUtY29uZmlnLXRlc3RzISE";

/// `echod` with none of the configuration's variables from the test's
/// own environment.
fn bare(dir: &Path) -> Command {
    let mut cmd = echod(dir);
    cmd.env_remove("ECHO_CONFIG").env_remove("ECHO_MODE");
    for var in SECRET_VARS {
        cmd.env_remove(var).env_remove(format!("{var}_FILE"));
    }
    cmd
}

/// Writes `text` to `<dir>/<name>`; its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `echod --config <file> config check`.
fn check(dir: &Path, file: &Path) -> Output {
    bare(dir)
        .arg("--config")
        .arg(file)
        .args(["config", "check"])
        .output()
        .unwrap()
}

/// Asserts `out` failed with every one of `needles` on stderr; its stderr.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    stderr
}

/// Identity's issuer as its discovery document states it.
async fn issuer_of(cmd: Command) -> String {
    let server = start(cmd, 1);
    let discovery: serde_json::Value = reqwest::get(format!(
        "http://{}/.well-known/openid-configuration",
        server.ready[0]
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    discovery["issuer"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_setting_comes_from_the_file_under_its_variable_under_its_flag() {
    let dir = echo_testkit::data_dir();
    let file = write(
        dir.path(),
        "echo.toml",
        "issuer = \"http://from-file.test\"\n[identity]\nlisten = \"127.0.0.1:0\"\n",
    );
    let serve = || {
        let mut cmd = bare(dir.path());
        cmd.arg("--config")
            .arg(&file)
            .args(["serve", "identity"])
            .env("ECHO_MASTER_KEY", MASTER_KEY)
            .env_remove("ECHO_ISSUER");
        cmd
    };
    assert_eq!(issuer_of(serve()).await, "http://from-file.test");
    let mut env = serve();
    env.env("ECHO_ISSUER", "http://from-env.test");
    assert_eq!(issuer_of(env).await, "http://from-env.test");
    let mut flag = serve();
    flag.env("ECHO_ISSUER", "http://from-env.test")
        .args(["--issuer", "http://from-flag.test"]);
    assert_eq!(issuer_of(flag).await, "http://from-flag.test");
    // ECHO_CONFIG names the file as --config does.
    let mut by_var = bare(dir.path());
    by_var
        .args(["serve", "identity"])
        .env("ECHO_CONFIG", &file)
        .env("ECHO_MASTER_KEY", MASTER_KEY)
        .env_remove("ECHO_ISSUER");
    assert_eq!(issuer_of(by_var).await, "http://from-file.test");
}

#[test]
fn an_unknown_key_or_a_bad_value_is_refused_with_its_name_and_line() {
    let dir = echo_testkit::data_dir();
    let file = write(
        dir.path(),
        "echo.toml",
        "mode = \"development\"\n\n[identity]\nlisten = \"127.0.0.1:0\"\nlisen = \"x\"\n",
    );
    for args in [
        &["serve", "identity"][..],
        &["user", "list"],
        &["config", "check"],
    ] {
        let out = bare(dir.path())
            .arg("--config")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        assert_refused(&out, &["echo.toml", "line 5", "unknown key `lisen`"]);
    }
    write(dir.path(), "echo.toml", "[queue]\nlease = \"soon\"\n");
    let out = check(dir.path(), &file);
    assert_refused(&out, &["line 2", "soon", "duration"]);
    write(dir.path(), "echo.toml", "[identiy]\n");
    let out = check(dir.path(), &file);
    assert_refused(&out, &["line 1", "identiy"]);
    // The file holds no secret: a URL with a password is refused.
    write(
        dir.path(),
        "echo.toml",
        "[identity]\ndatabase_url = \"postgres://echo:hunter2@db/echo\"\n",
    );
    let out = check(dir.path(), &file);
    let stderr = assert_refused(&out, &["line 2", "password", "_file"]);
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_missing_or_unreadable_secret_file_is_refused_by_name() {
    let dir = echo_testkit::data_dir();
    for var in SECRET_VARS {
        let file_var = format!("{var}_FILE");
        let missing = dir.path().join("no-such-secret");
        let out = bare(dir.path())
            .args(["config", "check"])
            .env(&file_var, &missing)
            .output()
            .unwrap();
        assert_refused(&out, &[&file_var, "no-such-secret"]);
        // A directory cannot be read as a file.
        let out = bare(dir.path())
            .args(["config", "check"])
            .env(&file_var, dir.path())
            .output()
            .unwrap();
        assert_refused(&out, &[&file_var, "cannot read"]);
        let both = write(dir.path(), "secret", "s3cret-value-of-the-test\n");
        let out = bare(dir.path())
            .args(["config", "check"])
            .env(&file_var, &both)
            .env(var, "s3cret-value-of-the-test")
            .output()
            .unwrap();
        assert_refused(&out, &[var, "both set"]);
    }
}

#[test]
fn config_check_prints_the_effective_configuration_without_a_secret() {
    let dir = echo_testkit::data_dir();
    let llm_key = write(dir.path(), "llm.key", "llm-key-canary\n");
    let file = write(
        dir.path(),
        "echo.toml",
        &format!(
            "[gateway]\npublic_url = \"http://127.0.0.1:18080\"\nsession_idle = \"10m\"\n\
             [docs]\nllm_api_key_file = {llm_key:?}\n"
        ),
    );
    let out = bare(dir.path())
        .arg("--config")
        .arg(&file)
        .args(["config", "check"])
        .env("ECHO_GATEWAY_SESSION_IDLE", "20m")
        .env(
            "ECHO_DATABASE_URL",
            "postgres://echo:url-password-canary@127.0.0.1/echo",
        )
        .env("ECHO_MASTER_KEY", "master-key-canary")
        .env("ECHO_GATEWAY_CLIENT_SECRET", "client-secret-canary")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for canary in [
        "url-password-canary",
        "master-key-canary",
        "client-secret-canary",
        "llm-key-canary",
    ] {
        assert!(!stdout.contains(canary), "{canary} shown: {stdout}");
    }
    for line in [
        "public_url = \"http://127.0.0.1:18080\"",
        "session_idle = \"20m\"",
        "database_url = \"postgres://echo:REDACTED@127.0.0.1/echo\"",
        "listen = \"127.0.0.1:8081\"  # default",
        "# master_key_file: ECHO_MASTER_KEY is set (not shown)",
    ] {
        assert!(stdout.contains(line), "{line:?} not in: {stdout}");
    }

    // A variable a service would refuse is refused here, with the reason.
    let out = bare(dir.path())
        .args(["config", "check"])
        .env("ECHO_WORKER_LEASE", "soon")
        .output()
        .unwrap();
    assert_refused(&out, &["soon", "--lease"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn the_example_passes_config_check_and_shows_every_section() {
    let dir = echo_testkit::data_dir();
    let out = bare(dir.path())
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let example = text(&out.stdout);
    for section in [
        "[identity]",
        "[audit]",
        "[gateway]",
        "[docs]",
        "[parser]",
        "[worker]",
        "[queue]",
    ] {
        assert!(example.contains(section), "{section}");
    }
    assert!(
        example.contains("# variable ECHO_IDENTITY_LISTEN, flag --listen"),
        "{example}"
    );
    let file = write(dir.path(), "example.toml", &example);
    let out = check(dir.path(), &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn the_gateways_file_of_before_is_still_read() {
    let dir = echo_testkit::data_dir();
    let file = write(
        dir.path(),
        "gateway.toml",
        "trusted_proxies = [\"10.0.0.0/8\"]\n\n[[routes]]\nprefix = \"/api/orders\"\n\
         upstream = \"http://127.0.0.1:9000\"\naudience = \"orders\"\n",
    );
    let out = bare(dir.path())
        .args(["config", "check"])
        .env("ECHO_CONFIG", &file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("/api/orders -> http://127.0.0.1:9000 (audience orders)"),
        "{stdout}"
    );
    // A route the gateway would refuse stops the start with its name.
    write(
        dir.path(),
        "gateway.toml",
        "[[gateway.routes]]\nprefix = \"/login\"\nupstream = \"http://127.0.0.1:9000\"\naudience = \"x\"\n",
    );
    let out = bare(dir.path())
        .args(["config", "check"])
        .env("ECHO_CONFIG", &file)
        .output()
        .unwrap();
    assert_refused(&out, &["gateway.toml", "/login"]);
}

#[test]
fn a_secret_is_refused_from_a_flag() {
    let dir = echo_testkit::data_dir();
    for (args, flag) in [
        (
            &["serve", "docs", "--docs-database-url"][..],
            "--docs-database-url",
        ),
        (&["serve", "docs", "--blob-url"], "--blob-url"),
        (&["serve", "worker", "--queue-url"], "--queue-url"),
        (&["up", "--nats-url"], "--nats-url"),
        (&["serve", "gateway", "--redis-url"], "--redis-url"),
        (
            &["serve", "identity", "--rate-limit-url"],
            "--rate-limit-url",
        ),
    ] {
        let out = bare(dir.path())
            .args(args)
            .arg("postgres://echo:flag-password@127.0.0.1/x")
            .output()
            .unwrap();
        let stderr = assert_refused(&out, &[flag, "carries a password", "_FILE"]);
        assert!(!stderr.contains("flag-password"), "{stderr}");
    }
}

/// Every first-party secret from a file named by the configuration file:
/// the master key, the checkpoint key and each client's secret; `up`
/// registers the clients with them and nothing of theirs is created in the
/// data directory.
#[tokio::test]
async fn up_reads_every_secret_from_the_files_the_configuration_names() {
    let dir = echo_testkit::data_dir();
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, value: &str| write(secrets.path(), name, &format!("{value}\n"));
    let clients = ["gateway", "docs", "parser", "worker"];
    let mut config = format!(
        "master_key_file = {:?}\n[audit]\nsigning_key_file = {:?}\n",
        secret_file("master", MASTER_KEY),
        secret_file("audit", "c2lnbmluZy1rZXktb2YtdGhlLWNvbmZpZy10ZXN0ISE"),
    );
    for client in clients {
        let path = secret_file(client, &format!("{client}-{SECRET}"));
        config.push_str(&format!("[{client}]\nclient_secret_file = {path:?}\n"));
    }
    let file = write(secrets.path(), "echo.toml", &config);
    let mut up = up_on_free_ports(dir.path());
    up.arg("--config").arg(&file).env_remove("ECHO_CONFIG");
    for var in SECRET_VARS {
        up.env_remove(var).env_remove(format!("{var}_FILE"));
    }
    let server = start_up(up);
    let http = reqwest::Client::new();
    for client in clients {
        let token = http
            .post(format!("http://{}/token", server.addr))
            .basic_auth(client, Some(format!("{client}-{SECRET}")))
            .form(&[("grant_type", "client_credentials"), ("audience", "audit")])
            .send()
            .await
            .unwrap();
        assert_eq!(token.status(), 200, "{client}");
    }
    for made in [
        "master.key",
        "audit-signing.key",
        "gateway-client.secret",
        "docs-client.secret",
        "parser-client.secret",
        "worker-client.secret",
    ] {
        assert!(!dir.path().join(made).exists(), "{made} was created");
    }
}

/// The database, queue and session stores' URLs from files: nothing of
/// theirs is kept in the data directory.
#[tokio::test]
async fn up_reads_the_store_urls_from_files() {
    let mut dbs = Vec::new();
    for name in ["identity", "audit", "docs", "queue"] {
        dbs.push(PgTestDb::create(&format!("config_urls_{name}")).await);
    }
    let redis = echo_testkit::redis_url();
    let dir = echo_testkit::data_dir();
    let urls = tempfile::tempdir().unwrap();
    let mut up = up_on_free_ports(dir.path());
    for (var, url) in [
        ("ECHO_DATABASE_URL", &dbs[0].url),
        ("ECHO_AUDIT_DATABASE_URL", &dbs[1].url),
        ("ECHO_DOCS_DATABASE_URL", &dbs[2].url),
        ("ECHO_QUEUE_URL", &dbs[3].url),
        ("ECHO_REDIS_URL", &redis),
    ] {
        up.env_remove(var)
            .env(format!("{var}_FILE"), write(urls.path(), var, url));
    }
    up.env_remove("ECHO_NATS_URL_FILE").env(
        "ECHO_REDIS_PREFIX",
        format!("echo:config-test:{}:", std::process::id()),
    );
    let server = start_up(up);
    drop(server);
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".db") || name.contains(".db-"))
        .collect();
    assert!(kept.is_empty(), "SQLite files kept: {kept:?}");
    for db in dbs {
        db.drop_db().await;
    }
}

#[test]
fn production_mode_refuses_each_development_default_by_name() {
    let dir = echo_testkit::data_dir();
    let refused = |cmd: &mut Command, needles: &[&str]| {
        let out = cmd.output().unwrap();
        assert_refused(&out, &[&["production mode refuses"][..], needles].concat());
    };
    let production = || {
        let mut cmd = bare(dir.path());
        cmd.args(["--mode", "production"])
            .env("ECHO_MASTER_KEY", MASTER_KEY);
        cmd
    };
    // A listener off loopback without TLS (and the issuer derived from it).
    refused(
        production().args(["serve", "identity", "--listen", "0.0.0.0:0"]),
        &[
            "identity.listen (ECHO_IDENTITY_LISTEN)",
            "0.0.0.0:0",
            "TLS",
            "issuer (ECHO_ISSUER)",
        ],
    );
    refused(
        production().args(["serve", "parser", "--listen", "[::]:0"]),
        &["parser.listen (ECHO_PARSER_LISTEN)"],
    );
    // An http issuer or public URL elsewhere than loopback.
    refused(
        production().args([
            "serve",
            "identity",
            "--listen",
            "127.0.0.1:0",
            "--issuer",
            "http://id.example.com",
        ]),
        &["issuer (ECHO_ISSUER)", "http://id.example.com", "https"],
    );
    refused(
        production().args([
            "serve",
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "http://echo.example.com",
        ]),
        &["gateway.public_url (ECHO_GATEWAY_PUBLIC_URL)"],
    );
    // The master key in the data directory, by default or by its file.
    let in_data = write(dir.path(), "master.key", MASTER_KEY);
    std::fs::set_permissions(&in_data, std::fs::Permissions::from_mode(0o600)).unwrap();
    for master in [None, Some(&in_data)] {
        let mut cmd = production();
        cmd.env_remove("ECHO_MASTER_KEY")
            .args(["serve", "identity", "--listen", "127.0.0.1:0"]);
        if let Some(path) = master {
            cmd.env("ECHO_MASTER_KEY_FILE", path);
        }
        refused(
            &mut cmd,
            &[
                "master_key_file (ECHO_MASTER_KEY_FILE)",
                "inside the data directory",
                "ECHO_MASTER_KEY_IN_DATA_DIR",
            ],
        );
    }
    // The file's `mode` and the variable say production too; `config
    // check` refuses the same.
    let file = write(
        dir.path(),
        "echo.toml",
        "mode = \"production\"\n[gateway]\nlisten = \"0.0.0.0:8080\"\n",
    );
    let mut by_file = bare(dir.path());
    by_file
        .arg("--config")
        .arg(&file)
        .args(["config", "check"])
        .env("ECHO_MASTER_KEY", MASTER_KEY);
    refused(&mut by_file, &["gateway.listen (ECHO_GATEWAY_LISTEN)"]);
    // The gateway's own certificate (its section's) is TLS on its listener.
    let with_cert = write(
        dir.path(),
        "echo-tls.toml",
        "mode = \"production\"\n[gateway]\nlisten = \"0.0.0.0:8080\"\n\
         tls_cert = \"/etc/echo/gateway.pem\"\ntls_key = \"/etc/echo/gateway-key.pem\"\n",
    );
    let out = bare(dir.path())
        .arg("--config")
        .arg(&with_cert)
        .args(["config", "check"])
        .env("ECHO_MASTER_KEY", MASTER_KEY)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("[gateway]\ntls_cert = \"/etc/echo/gateway.pem\"\n"),
        "{stdout}"
    );
    let mut by_var = bare(dir.path());
    by_var
        .args(["serve", "audit", "--listen", "0.0.0.0:0"])
        .env("ECHO_MODE", "production");
    refused(&mut by_var, &["audit.listen (ECHO_AUDIT_LISTEN)"]);
}

#[tokio::test]
async fn production_mode_starts_when_opted_in_and_keeps_the_bootstrap_password_off_stdout() {
    let dir = echo_testkit::data_dir();
    // The master key in the data directory, accepted explicitly.
    let mut identity = bare(dir.path());
    identity
        .args([
            "--mode",
            "production",
            "serve",
            "identity",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("ECHO_MASTER_KEY_IN_DATA_DIR", "true");
    drop(start(identity, 1));
    assert!(dir.path().join("master.key").exists());

    let dir = echo_testkit::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let master = write(keys.path(), "master.key", MASTER_KEY);
    let mut up = up_on_free_ports(dir.path());
    up.args(["--mode", "production", "--mfa-required-roles", ""])
        .env_remove("ECHO_CONFIG")
        .env_remove("ECHO_MASTER_KEY")
        .env("ECHO_MASTER_KEY_FILE", &master);
    let server = start_up(up);
    let path = dir.path().join("bootstrap-admin.password");
    let printed = format!(
        "created bootstrap admin: username admin, password in {}",
        path.display()
    );
    assert!(
        server.stdout_lines.iter().any(|l| l.starts_with(&printed)),
        "{:?}",
        server.stdout_lines
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(password.len() >= 20);
    assert!(
        server.stdout_lines.iter().all(|l| !l.contains(&password)),
        "the password is not printed"
    );
    // It is the admin's password.
    let gateway = server.up.clone().unwrap();
    let (status, _) = Hop::default()
        .sign_in_through_gateway(&server, &gateway, "admin", &password)
        .await;
    assert_eq!(status, 303);
}
