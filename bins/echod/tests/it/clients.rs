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

#[tokio::test]
async fn rotate_secret_overlaps_then_only_the_new_secret_works() {
    let dir = echo_testkit::data_dir();
    let mut cmd = echod(dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let server = start(cmd, 1);
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

    let mut cmd = echod(dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let server = start(cmd, 1);
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
        let mut cmd = echod(dir.path());
        cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
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
