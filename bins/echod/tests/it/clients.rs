//! `echod client rotate-secret` and `echod client add --jwks-file`, against
//! a running server.

use std::time::Duration;

use echo_crypto::{Algorithm, SigningKey};

use crate::{SECRET, add_svc_a, client_credentials, echod, run_with_stdin, start};

/// The secret a command printed after "store it now): ".
fn printed_secret(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.split("store it now): ").nth(1))
        .unwrap_or_else(|| panic!("no secret in {}", String::from_utf8_lossy(stdout)))
        .to_owned()
}

/// `echod serve identity` over `dir`, on a free port.
fn serve_identity(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = echod(dir);
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    cmd
}

#[tokio::test]
async fn rotate_secret_overlaps_then_only_the_new_secret_works() {
    let dir = echo_testkit::data_dir();
    let server = start(serve_identity(dir.path()), 1);
    add_svc_a(echod(dir.path()));
    assert_eq!(
        client_credentials(&server.addr, "svc-a", SECRET)
            .await
            .status(),
        200
    );

    let out = echod(dir.path())
        .args(["client", "rotate-secret", "svc-a", "--overlap", "5s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = printed_secret(&out.stdout);
    assert_eq!(new.len(), 43, "256-bit generated secret");
    for secret in [SECRET, new.as_str()] {
        let status = client_credentials(&server.addr, "svc-a", secret)
            .await
            .status();
        assert_eq!(status, 200, "both secrets work during the overlap");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        client_credentials(&server.addr, "svc-a", SECRET)
            .await
            .status(),
        401,
        "the old secret ends with the overlap"
    );
    assert_eq!(
        client_credentials(&server.addr, "svc-a", &new)
            .await
            .status(),
        200
    );
}

#[test]
fn rotate_secret_refuses_what_it_cannot_rotate() {
    let dir = echo_testkit::data_dir();
    let mut public = echod(dir.path());
    public.args([
        "client",
        "add",
        "spa",
        "--public",
        "--redirect-uri",
        "https://app.test/cb",
    ]);
    assert!(public.output().unwrap().status.success());
    let cases: [(&[&str], &str); 3] = [
        (&["client", "rotate-secret", "nobody"], "does not exist"),
        (&["client", "rotate-secret", "spa"], "no secret to rotate"),
        (
            &["client", "rotate-secret", "spa", "--overlap", "soon"],
            "invalid value 'soon'",
        ),
    ];
    for (args, expected) in cases {
        let out = echod(dir.path()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn client_registered_with_a_jwks_file_authenticates_with_private_key_jwt() {
    let dir = echo_testkit::data_dir();
    let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
    let jwks = dir.path().join("client.jwks");
    let public = serde_json::json!({"keys": [key.public_jwk()]});
    std::fs::write(&jwks, public.to_string()).unwrap();
    let mut add = echod(dir.path());
    add.args(["client", "add", "jwt-svc", "--grant", "client_credentials"])
        .args(["--audience", "audit", "--jwks-file"])
        .arg(&jwks);
    let out = run_with_stdin(add, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = echod(dir.path()).args(["client", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("private_key_jwt"));

    // A file holding a private key is refused.
    let mut private = serde_json::to_value(key.public_jwk()).unwrap();
    private["d"] = "c2VjcmV0".into();
    let leaked = dir.path().join("leaked.jwk");
    std::fs::write(&leaked, private.to_string()).unwrap();
    let out = echod(dir.path())
        .args(["client", "add", "bad", "--grant", "client_credentials"])
        .args(["--audience", "audit", "--jwks-file"])
        .arg(&leaked)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private members"));

    let server = start(serve_identity(dir.path()), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let assertion = key
        .sign(
            "JWT",
            &serde_json::json!({
                "iss": "jwt-svc",
                "sub": "jwt-svc",
                "aud": format!("http://{}/token", server.addr),
                "iat": now,
                "exp": now + 60,
                "jti": "one",
            }),
        )
        .unwrap();
    let send = || {
        reqwest::Client::new()
            .post(format!("http://{}/token", server.addr))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ])
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(send().await.unwrap().status(), 401, "a replayed assertion");
}

/// `POST /token` (client credentials) as svc-a with `secret`, the request
/// naming `forwarded` in `X-Forwarded-For`: the status.
async fn token_from(addr: &str, secret: &str, forwarded: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/token"))
        .basic_auth("svc-a", Some(secret))
        .header("x-forwarded-for", forwarded)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Issue 14 §4: `--trusted-proxies` (env `ECHO_TRUSTED_PROXIES`) makes
/// identity count its per-address limits by the client a trusted proxy
/// forwards: one forwarded address guessing a secret does not lock out
/// another behind the same proxy. Without the flag the proxy's address
/// counts for everyone behind it.
#[tokio::test]
async fn identity_behind_a_trusted_proxy_limits_the_forwarded_client() {
    for trusted in [true, false] {
        let dir = echo_testkit::data_dir();
        let mut cmd = serve_identity(dir.path());
        if trusted {
            cmd.env("ECHO_TRUSTED_PROXIES", "127.0.0.1, ::1");
        } else {
            cmd.env_remove("ECHO_TRUSTED_PROXIES");
        }
        let server = start(cmd, 1);
        add_svc_a(echod(dir.path()));
        let mut limited = false;
        for _ in 0..61 {
            match token_from(&server.addr, "wrong-secret", "198.51.100.1").await {
                429 => {
                    limited = true;
                    break;
                }
                status => assert_eq!(status, 401),
            }
        }
        assert!(limited, "guessing was never rate limited");
        let other = token_from(&server.addr, SECRET, "198.51.100.2").await;
        let expected = if trusted { 200 } else { 429 };
        assert_eq!(other, expected, "trusted proxy: {trusted}");
    }
}

#[test]
fn a_bad_trusted_proxies_list_stops_the_start() {
    let dir = echo_testkit::data_dir();
    for command in [&["serve", "identity"][..], &["up"][..]] {
        let out = echod(dir.path())
            .args(command)
            .args(["--trusted-proxies", "10.0.0.0/33"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("trusted-proxies"), "{stderr}");
    }
}

/// Tokens of svc-a for `audience`: the status.
async fn token_for(addr: &str, audience: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/token"))
        .basic_auth("svc-a", Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("audience", audience)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Issue 17: `client update` adds and removes what a client may ask for,
/// checked as at `client add`; `client delete` removes it, and a running
/// server refuses it.
#[tokio::test]
async fn client_update_changes_a_registration_and_delete_removes_it() {
    let dir = echo_testkit::data_dir();
    let server = start(serve_identity(dir.path()), 1);
    add_svc_a(echod(dir.path()));
    assert_eq!(token_for(&server.addr, "docs").await, 400);

    let out = echod(dir.path())
        .args(["client", "update", "svc-a", "--add-audience", "docs"])
        .args(["--remove-audience", "audit", "--add-scope", "docs.read"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = |field: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(shown("audiences "), "docs", "{stdout}");
    assert_eq!(shown("scopes "), "docs.read", "{stdout}");
    // The server's registration cache holds a client for at most 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(token_for(&server.addr, "docs").await, 200);
    assert_eq!(token_for(&server.addr, "audit").await, 400);

    let cases: [(&[&str], &str); 4] = [
        (
            &["client", "update", "nobody", "--add-scope", "x"],
            "no client \"nobody\"",
        ),
        (
            &[
                "client",
                "update",
                "svc-a",
                "--remove-grant",
                "client_credentials",
            ],
            "at least one grant",
        ),
        (
            &[
                "client",
                "update",
                "svc-a",
                "--add-redirect-uri",
                "javascript:alert(1)",
            ],
            "malformed redirect URI",
        ),
        (
            &[
                "client",
                "update",
                "svc-a",
                "--add-grant",
                "authorization_code",
            ],
            "needs at least one --redirect-uri",
        ),
    ];
    for (args, expected) in cases {
        let out = echod(dir.path()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    let out = echod(dir.path())
        .args(["client", "delete", "svc-a"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        client_credentials(&server.addr, "svc-a", SECRET)
            .await
            .status(),
        401,
        "a deleted client is refused once the cache let it go"
    );
    let list = echod(dir.path()).args(["client", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("svc-a"));
    let again = echod(dir.path())
        .args(["client", "delete", "svc-a"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no client \"svc-a\""));
}

/// An identity served from `dir`, with `ops` registered for its admin API
/// (`echod client add` on the database), and an empty data directory for
/// the commands that go through the API: they need no database.
pub(crate) struct AdminApiServer {
    pub server: crate::Server,
    pub url: String,
    secret_file: std::path::PathBuf,
    pub elsewhere: echo_testkit::TempDir,
    /// The server's own data directory.
    pub dir: echo_testkit::TempDir,
}

impl AdminApiServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`Self::start`], `serve identity` taking `args` too.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = echo_testkit::data_dir();
        let mut cmd = serve_identity(dir.path());
        cmd.args(args);
        let server = start(cmd, 1);
        let out = echod(dir.path())
            .args(["client", "add", "ops", "--generate-secret"])
            .args(["--grant", "client_credentials", "--audience", "identity"])
            .args(["--scope", "echo.admin"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let elsewhere = echo_testkit::data_dir();
        let secret_file = elsewhere.path().join("ops.secret");
        std::fs::write(&secret_file, printed_secret(&out.stdout)).unwrap();
        let url = format!("http://{}", server.addr);
        Self {
            server,
            url,
            secret_file,
            elsewhere,
            dir,
        }
    }

    /// `echod <args> --server URL` as `ops`, from the empty directory.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = echod(self.elsewhere.path());
        cmd.args(args)
            .args(["--server", &self.url])
            .env("ECHO_ADMIN_CLIENT_ID", "ops")
            .env("ECHO_ADMIN_CLIENT_SECRET_FILE", &self.secret_file)
            .env_remove("ECHO_ADMIN_CLIENT_SECRET");
        cmd
    }

    /// Runs [`Self::command`]; stdout, or a panic with stderr.
    pub fn run(&self, args: &[&str], stdin: &str) -> String {
        let out = run_with_stdin(self.command(args), stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs [`Self::command`] expecting failure; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = run_with_stdin(self.command(args), "");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Issue 17: every `echod client` command through `--server`, as a client
/// registered for the admin API, with no database at hand; and what is
/// refused: no credentials, a secret on the command line, wrong ones.
#[tokio::test]
async fn every_client_command_works_through_the_admin_api() {
    let api = AdminApiServer::start();
    let added = api.run(
        &[
            "client",
            "add",
            "app",
            "--generate-secret",
            "--grant",
            "client_credentials",
            "--audience",
            "audit",
        ],
        "",
    );
    let secret = printed_secret(added.as_bytes());
    assert_eq!(
        client_credentials(&api.server.addr, "app", &secret)
            .await
            .status(),
        200
    );
    let listed = api.run(&["client", "list"], "");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("app ") && l.contains("confidential")),
        "{listed}"
    );
    assert!(listed.contains("ops "), "{listed}");

    let updated = api.run(
        &[
            "client",
            "update",
            "app",
            "--add-audience",
            "docs",
            "--remove-audience",
            "audit",
        ],
        "",
    );
    assert!(
        updated
            .lines()
            .any(|l| l.starts_with("audiences") && l.ends_with(" docs")),
        "{updated}"
    );
    let refused = api.fails(&[
        "client",
        "update",
        "app",
        "--remove-grant",
        "client_credentials",
    ]);
    assert!(refused.contains("at least one grant"), "{refused}");

    let rotated = api.run(&["client", "rotate-secret", "app", "--overlap", "0s"], "");
    let new_secret = printed_secret(rotated.as_bytes());
    assert_eq!(
        client_credentials(&api.server.addr, "app", &new_secret)
            .await
            .status(),
        200
    );
    api.run(&["client", "delete", "app"], "");
    assert_eq!(
        client_credentials(&api.server.addr, "app", &new_secret)
            .await
            .status(),
        401,
        "deleted through the API: refused at once"
    );
    assert!(
        api.fails(&["client", "delete", "app"])
            .contains("no client \"app\"")
    );
    // A secret of the operator's own, from standard input, never echoed.
    let piped = api.run(
        &[
            "client",
            "add",
            "piped",
            "--secret-stdin",
            "--grant",
            "client_credentials",
            "--audience",
            "audit",
        ],
        &format!("{SECRET}\n"),
    );
    assert!(!piped.contains(SECRET), "{piped}");
    assert_eq!(
        client_credentials(&api.server.addr, "piped", SECRET)
            .await
            .status(),
        200
    );
    let short = run_with_stdin(
        api.command(&["client", "add", "short", "--secret-stdin"]),
        "too-short\n",
    );
    assert!(!short.status.success());
    let error = String::from_utf8_lossy(&short.stderr);
    assert!(error.contains("client secret too short"), "{error}");

    let mut anonymous = api.command(&["client", "list"]);
    anonymous.env_remove("ECHO_ADMIN_CLIENT_ID");
    let out = anonymous.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ECHO_ADMIN_CLIENT_ID"));
    let mut wrong = api.command(&["client", "list"]);
    wrong.env_remove("ECHO_ADMIN_CLIENT_SECRET_FILE").env(
        "ECHO_ADMIN_CLIENT_SECRET",
        "not-the-secret-0123456789abcdefghijklmn",
    );
    let out = wrong.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot get an admin token"));
    // A client not registered for the API gets no token for it.
    let mut svc = api.command(&["client", "list"]);
    svc.env("ECHO_ADMIN_CLIENT_ID", "app");
    assert!(!svc.output().unwrap().status.success());
}
