//! `echod keys list|rotate|retire|revoke`, against a running server.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::{SECRET, add_svc_a, client_credentials, echod, start};

fn keys(dir: &std::path::Path, args: &[&str]) -> Output {
    echod(dir).arg("keys").args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `keys list` as (kid, alg, audience, state) rows.
fn listed(dir: &std::path::Path) -> Vec<[String; 4]> {
    let text = stdout(&keys(dir, &["list"]));
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for column in [
        "KID",
        "ALG",
        "AUDIENCE",
        "STATE",
        "CREATED",
        "ACTIVATED",
        "RETIRED",
    ] {
        assert!(header.contains(column), "{header}");
    }
    lines
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            [cols[0], cols[1], cols[2], cols[3]].map(str::to_owned)
        })
        .collect()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header = echo_crypto::secret::b64url_decode(header).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn published(addr: &str) -> Vec<String> {
    let jwks: serde_json::Value = reqwest::get(format!("http://{addr}/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn keys_commands_work_while_the_server_runs() {
    let dir = echo_testkit::data_dir();
    let mut cmd = echod(dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let server = start(cmd, 1);
    add_svc_a(echod(dir.path()));

    let first = listed(dir.path());
    assert_eq!(first.len(), 2, "{first:?}");
    let eddsa = first.iter().find(|k| k[1] == "EdDSA").unwrap()[0].clone();
    assert!(
        first.iter().all(|k| k[2] == "*" && k[3] == "active"),
        "{first:?}"
    );

    // The active general key cannot be retired; the error says what to do.
    let out = keys(dir.path(), &["retire", &eddsa]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("echod keys rotate --alg EdDSA"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rotated = stdout(&keys(
        dir.path(),
        &["rotate", "--alg", "EdDSA", "--key-publish-delay", "1h"],
    ));
    let next = rotated
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("{rotated}"))
        .to_owned();
    assert!(next.starts_with("eddsa-"), "{rotated}");
    let scoped = stdout(&keys(
        dir.path(),
        &["rotate", "--alg", "ES256", "--audience", "audit"],
    ));
    let scoped = scoped.split_whitespace().nth(2).unwrap().to_owned();
    let rows = listed(dir.path());
    let row = |kid: &str| rows.iter().find(|k| k[0] == kid).unwrap().clone();
    assert_eq!(row(&next)[3], "next");
    assert_eq!(
        row(&scoped)[1..],
        ["ES256", "audit", "next"].map(str::to_owned)
    );
    assert!(stdout(&keys(dir.path(), &["retire", &scoped])).contains("published until"));
    let rows = listed(dir.path());
    assert_eq!(rows.iter().find(|k| k[0] == scoped).unwrap()[3], "retired");

    // Revoking the signing key: the waiting successor takes over at once,
    // and the running server follows within its reload interval (10 s).
    let revoked = stdout(&keys(dir.path(), &["revoke", &eddsa]));
    assert!(
        revoked.contains(&format!("key {next} (EdDSA) signs from now")),
        "{revoked}"
    );
    let started = Instant::now();
    while published(&server.addr).await.contains(&eddsa) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "server never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(published(&server.addr).await.contains(&next));
    let response = client_credentials(&server.addr, "svc-a", SECRET).await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(kid_of(body["access_token"].as_str().unwrap()), next);
    let rows = listed(dir.path());
    assert_eq!(rows.iter().find(|k| k[0] == eddsa).unwrap()[3], "revoked");
}

#[test]
fn bad_key_commands_are_clear_errors_and_nonzero_exits() {
    let dir = echo_testkit::data_dir();
    let cases: [(&[&str], &str); 6] = [
        (&["retire", "nope"], "no signing key \"nope\""),
        (&["revoke", "nope"], "no signing key \"nope\""),
        (&["rotate", "--audience", "a b"], "invalid audience"),
        (&["rotate", "--alg", "HS256"], "invalid value 'HS256'"),
        (
            &["rotate"],
            "no algorithm has an active key: name one with --alg",
        ),
        (&["retire"], "required"),
    ];
    for (args, expected) in cases {
        let out = keys(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // A key created by rotate can be revoked, once.
    let out = stdout(&keys(dir.path(), &["rotate", "--alg", "ES256"]));
    let kid = out.split_whitespace().nth(2).unwrap().to_owned();
    assert!(stdout(&keys(dir.path(), &["revoke", &kid])).contains("revoked"));
    let again = keys(dir.path(), &["revoke", &kid]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
}
