//! Black-box tests of the `echod` binary: the command-line interface users
//! script against, exit codes, the `ready` line, and admin commands on a
//! running server's database.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use echo_testkit::PgTestDb;

mod architecture;
mod audit;
mod browser;
mod clients;
mod config;
mod docs;
mod docs_replicas;
mod edge;
mod gateway;
mod keys;
mod mail;
mod ops;
mod packaging;
mod parser;
mod replicas;
mod tls;
mod tls_backends;
mod topology;
mod traces;
mod users;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

pub fn echod(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echod"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("ECHO_DATABASE_URL")
        .env_remove("ECHO_MASTER_KEY")
        .env_remove("ECHO_NATS_URL")
        .env_remove("ECHO_QUEUE_URL")
        .env_remove("ECHO_DOCS_DATABASE_URL")
        .env_remove("ECHO_DOCS_BLOB_URL")
        .env_remove("ECHO_DOCS_SEARCH")
        .env_remove("ECHO_LLM_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("ECHO_CA_FILE")
        .env("ECHO_LOG", "warn");
    cmd
}

pub fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    /// The first service's address (identity).
    addr: String,
    /// Every `ready` address, in the order printed.
    ready: Vec<String>,
    stdout_lines: Vec<String>,
    /// `echod up`'s last line: `up <gateway URL>`.
    up: Option<String>,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `echod up` with every service on a free port.
pub fn up_on_free_ports(data_dir: &Path) -> Command {
    let mut cmd = echod(data_dir);
    cmd.args([
        "up",
        "--listen",
        "127.0.0.1:0",
        "--audit-listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
        "--docs-listen",
        "127.0.0.1:0",
        "--parser-listen",
        "127.0.0.1:0",
    ]);
    cmd
}

/// Starts `echod <args>` and waits for `services` lines `ready <addr>`.
pub fn start(cmd: Command, services: usize) -> Server {
    start_until(cmd, services, false, Stdio::null())
}

/// Starts `echod up …` and waits for its five `ready` lines (identity,
/// audit, gateway, docs, parser) and the `up <gateway URL>` line after
/// them.
pub fn start_up(cmd: Command) -> Server {
    start_until(cmd, 5, true, Stdio::null())
}

/// [`start`], its logs (stderr) going to `logs`.
pub fn start_logging(cmd: Command, services: usize, logs: std::fs::File) -> Server {
    start_until(cmd, services, false, Stdio::from(logs))
}

/// [`start_up`], its logs (stderr) going to `logs`.
pub fn start_up_logging(cmd: Command, logs: std::fs::File) -> Server {
    start_until(cmd, 5, true, Stdio::from(logs))
}

fn start_until(mut cmd: Command, services: usize, up_line: bool, logs: Stdio) -> Server {
    let mut child = cmd.stdout(Stdio::piped()).stderr(logs).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout_lines = Vec::new();
    let mut ready = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout_lines.push(line.clone());
        if let Some(addr) = line.strip_prefix("ready ") {
            ready.push(addr.to_owned());
        }
        let up = line.strip_prefix("up ").map(str::to_owned);
        if ready.len() == services && (!up_line || up.is_some()) {
            return Server {
                child,
                addr: ready[0].clone(),
                ready,
                stdout_lines,
                up,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server exited before printing ready: {stdout_lines:?}");
}

/// Why a request got no answer: reqwest's words with their causes, and
/// `timed out: ` first when the client gave up waiting.
pub fn unanswered(e: reqwest::Error) -> String {
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        why.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if e.is_timeout() {
        why.insert_str(0, "timed out: ");
    }
    why
}

/// A client that never follows redirects, carrying `cookies` by hand.
pub struct Hop {
    pub http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Default for Hop {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }
}

impl Hop {
    /// A browser-like client trusting the CA in `ca` beside the system's.
    pub fn trusting(ca: &Path) -> Self {
        Self {
            http: echo_tls::ClientTls::new(
                &echo_crypto::TrustedRoots::load(Some(ca)).unwrap(),
                None,
            )
            .unwrap()
            .http_client(std::time::Duration::from_secs(60)),
            cookies: HashMap::new(),
        }
    }

    /// Sends `request` with the cookies so far; keeps those it sets.
    pub async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> (reqwest::StatusCode, String, String) {
        self.try_send(request).await.unwrap()
    }

    /// [`send`](Self::send), or why the request got no answer.
    pub async fn try_send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String, String), String> {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let response = request
            .header("cookie", cookie.join("; "))
            .send()
            .await
            .map_err(unanswered)?;
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.into(), value.into());
        }
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.text().await.map_err(unanswered)?;
        Ok((status, location, body))
    }

    /// Signs in as a browser does through the gateway at `gateway` of
    /// `server`: its `/login`, identity's login form, back to its
    /// `/callback`. Answers the callback's status and where it sent the
    /// browser.
    pub async fn sign_in_through_gateway(
        &mut self,
        server: &Server,
        gateway: &str,
        username: &str,
        password: &str,
    ) -> (reqwest::StatusCode, String) {
        let (status, callback, body) = self
            .log_in_from_gateway(server, gateway, username, password)
            .await;
        assert!(
            callback.starts_with(&format!("{gateway}/callback?")),
            "{status} {callback} {body}"
        );
        let (status, landed, _) = self.send(self.http.get(&callback)).await;
        (status, landed)
    }

    /// The first half of [`sign_in_through_gateway`](Self::sign_in_through_gateway):
    /// the gateway's `/login`, identity's login form filled in and posted.
    /// Answers identity's answer (status, location, body).
    pub async fn log_in_from_gateway(
        &mut self,
        server: &Server,
        gateway: &str,
        username: &str,
        password: &str,
    ) -> (reqwest::StatusCode, String, String) {
        // Identity is served as the gateway is, http or https.
        let scheme = gateway.split("://").next().unwrap();
        let identity = format!("{scheme}://{}", server.addr);
        let (_, authorize, _) = self.send(self.http.get(format!("{gateway}/login"))).await;
        assert!(authorize.starts_with(&format!("{identity}/authorize?")));
        self.log_in_at_identity(&identity, &authorize, username, password)
            .await
    }

    /// Follows `authorize` (a URL of the identity at `identity`) to its
    /// login form and submits it: identity's answer (status, where it
    /// sends the browser, body).
    pub async fn log_in_at_identity(
        &mut self,
        identity: &str,
        authorize: &str,
        username: &str,
        password: &str,
    ) -> (reqwest::StatusCode, String, String) {
        self.try_log_in_at_identity(identity, authorize, username, password)
            .await
            .unwrap()
    }

    /// [`log_in_at_identity`](Self::log_in_at_identity), or why there was
    /// no form to submit or no answer.
    pub async fn try_log_in_at_identity(
        &mut self,
        identity: &str,
        authorize: &str,
        username: &str,
        password: &str,
    ) -> Result<(reqwest::StatusCode, String, String), String> {
        let (status, _, form) = self.try_send(self.http.get(authorize)).await?;
        if status != 200 {
            return Err(format!("{status} {form}"));
        }
        let csrf = form
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| format!("no csrf field in the login form: {form}"))?
            .to_owned();
        let mut fields: Vec<(String, String)> = url::Url::parse(authorize)
            .map_err(|e| e.to_string())?
            .query_pairs()
            .into_owned()
            .collect();
        fields.extend([
            ("csrf".into(), csrf),
            ("username".into(), username.into()),
            ("password".into(), password.into()),
        ]);
        let login = self.http.post(format!("{identity}/login")).form(&fields);
        self.try_send(login).await
    }
}

/// Registers `svc-a` (secret [`SECRET`], client credentials for the
/// `audit` audience) with `cmd`, an `echod` command for the data directory.
pub fn add_svc_a(mut cmd: Command) {
    cmd.args([
        "client",
        "add",
        "svc-a",
        "--secret-stdin",
        "--grant",
        "client_credentials",
        "--audience",
        "audit",
    ]);
    let out = run_with_stdin(cmd, &format!("{SECRET}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub async fn client_credentials(addr: &str, client: &str, secret: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{addr}/token"))
        .basic_auth(client, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn serve_prints_ready_and_admin_commands_work_while_it_runs() {
    let dir = echo_testkit::data_dir();
    let mut cmd = echod(dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let server = start(cmd, 1);
    assert!(server.addr.starts_with("127.0.0.1:"));

    let discovery: serde_json::Value = reqwest::get(format!(
        "http://{}/.well-known/openid-configuration",
        server.addr
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        discovery["issuer"],
        format!("http://{}", server.addr),
        "issuer defaults to the listen address"
    );

    add_svc_a(echod(dir.path()));

    let response = client_credentials(&server.addr, "svc-a", SECRET).await;
    assert_eq!(
        response.status(),
        200,
        "a client added by the CLI works at once on the running server"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");

    let list = echod(dir.path()).args(["client", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("svc-a") && listing.contains("audit"),
        "{listing}"
    );
    assert!(!listing.contains(SECRET), "the secret is never listed");

    let key_mode = std::fs::metadata(dir.path().join("master.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
}

#[test]
fn bad_admin_input_is_a_clear_error_and_a_nonzero_exit() {
    let dir = echo_testkit::data_dir();
    let mut ok = echod(dir.path());
    ok.args([
        "client",
        "add",
        "web",
        "--generate-secret",
        "--redirect-uri",
        "https://app.test/cb",
    ]);
    let out = ok.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let secret = printed
        .lines()
        .find_map(|l| l.split("store it now): ").nth(1))
        .unwrap();
    assert_eq!(secret.len(), 43, "256-bit generated secret");

    let cases: [(&[&str], &str, &str); 6] = [
        (
            &[
                "client",
                "add",
                "identity",
                "--generate-secret",
                "--grant",
                "client_credentials",
            ],
            "",
            "client id \"identity\" is reserved",
        ),
        (
            &["client", "add", "x", "--public", "--grant", "password"],
            "",
            "invalid value 'password'",
        ),
        (
            &[
                "client",
                "add",
                "x",
                "--public",
                "--redirect-uri",
                "not a uri",
            ],
            "",
            "malformed redirect URI",
        ),
        (
            &[
                "client",
                "add",
                "web",
                "--generate-secret",
                "--redirect-uri",
                "https://app.test/cb",
            ],
            "",
            "client web already exists",
        ),
        (
            &[
                "client",
                "add",
                "y",
                "--secret-stdin",
                "--grant",
                "client_credentials",
            ],
            "short\n",
            "client secret too short",
        ),
        (&["client", "add", "z"], "", "required"),
    ];
    for (args, stdin, expected) in cases {
        let mut cmd = echod(dir.path());
        cmd.args(args);
        let out = run_with_stdin(cmd, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    let mut user = echod(dir.path());
    user.args([
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--role",
        "auditor",
    ]);
    assert!(
        run_with_stdin(user, "correct horse battery\n")
            .status
            .success()
    );
    let mut dup = echod(dir.path());
    dup.args(["user", "add", "alice", "--password-stdin"]);
    let out = run_with_stdin(dup, "another password\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user alice already exists"));
    let mut short = echod(dir.path());
    short.args(["user", "add", "bob", "--password-stdin"]);
    assert!(!run_with_stdin(short, "short\n").status.success());
    let list = echod(dir.path()).args(["user", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("alice") && listing.contains("auditor") && !listing.contains("bob"),
        "{listing}"
    );
}

#[tokio::test]
async fn up_bootstraps_an_admin_once() {
    let dir = echo_testkit::data_dir();
    let first = { start_up(up_on_free_ports(dir.path())) };
    let banner = first.stdout_lines.join("\n");
    let password = banner
        .split("password ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no bootstrap password in {banner:?}"))
        .to_owned();
    assert!(password.len() >= 32);
    drop(first);

    let second = { start_up(up_on_free_ports(dir.path())) };
    assert!(
        !second.stdout_lines.join("\n").contains("password"),
        "the password is printed only once"
    );
    let list = echod(dir.path()).args(["user", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("admin"));
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_at_start() {
    let dir = echo_testkit::data_dir();
    drop(start(
        {
            let mut cmd = echod(dir.path());
            cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
            cmd
        },
        1,
    ));
    let out = echod(dir.path())
        .args(["serve", "identity", "--listen", "127.0.0.1:0"])
        .env(
            "ECHO_MASTER_KEY",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open signing key"));
}

#[tokio::test]
async fn postgres_backend_serves_when_echo_database_url_is_set() {
    let db = PgTestDb::create("postgres_backend_serves_when_echo_database_url_is_set").await;
    let dir = echo_testkit::data_dir();
    let mut add = echod(dir.path());
    add.env("ECHO_DATABASE_URL", &db.url);
    add_svc_a(add);
    {
        let mut cmd = echod(dir.path());
        cmd.env("ECHO_DATABASE_URL", &db.url).args([
            "serve",
            "identity",
            "--listen",
            "127.0.0.1:0",
        ]);
        let server = start(cmd, 1);
        assert_eq!(
            client_credentials(&server.addr, "svc-a", SECRET)
                .await
                .status(),
            200
        );
    }
    assert!(
        !dir.path().join("echo.db").exists(),
        "no SQLite file when PostgreSQL is configured"
    );
    db.drop_db().await;
}
